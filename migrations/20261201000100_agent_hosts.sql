-- Agents on their own host: a slug per agent ({slug}.AGENTQ_AGENT_DOMAIN) and custom
-- domains verified by a DNS TXT record.

ALTER TABLE agents ADD COLUMN slug text;

-- Existing agents get a slug from their name; same-named agents after the first get the
-- tail of their id (random in a UUIDv7), so every row keeps a unique slug.
WITH base AS (
    SELECT id, deleted_at,
           coalesce(nullif(trim(BOTH '-' FROM left(regexp_replace(lower(name), '[^a-z0-9]+', '-', 'g'), 40)), ''), 'agent') AS b
    FROM agents
), ranked AS (
    SELECT id, b, row_number() OVER (PARTITION BY b ORDER BY (deleted_at IS NOT NULL), id) AS n
    FROM base
)
UPDATE agents a
SET slug = CASE WHEN r.n = 1 THEN r.b ELSE r.b || '-' || right(replace(a.id::text, '-', ''), 8) END
FROM ranked r
WHERE a.id = r.id;

ALTER TABLE agents ALTER COLUMN slug SET NOT NULL;
ALTER TABLE agents ADD CONSTRAINT agents_slug_dns_label
    CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$');
-- A host name label is unique across the platform; a deleted agent frees its slug.
CREATE UNIQUE INDEX agents_slug_live ON agents (slug) WHERE deleted_at IS NULL;

CREATE TABLE agent_domains (
    domain text PRIMARY KEY CHECK (domain = lower(domain) AND length(domain) <= 253),
    team_id uuid NOT NULL REFERENCES teams (id),
    agent_id uuid NOT NULL REFERENCES agents (id),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'verified')),
    -- Proves control of the domain once published as TXT _agentq.{domain}; not a secret.
    verification_token text NOT NULL,
    verified_at timestamptz,
    last_checked_at timestamptz,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX agent_domains_agent ON agent_domains (agent_id, created_at);
CREATE INDEX agent_domains_pending ON agent_domains (last_checked_at NULLS FIRST) WHERE status = 'pending';
