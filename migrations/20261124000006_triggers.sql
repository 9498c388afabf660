-- Triggers besides the API: inbound webhooks (a public URL per hook) and cron schedules.

ALTER TABLE agents ADD COLUMN next_run_at timestamptz;
CREATE INDEX agents_due_idx ON agents (next_run_at)
    WHERE schedule IS NOT NULL AND status = 'active' AND deleted_at IS NULL;

CREATE TABLE inbound_webhooks (
    id                 uuid PRIMARY KEY,
    team_id            uuid NOT NULL REFERENCES teams (id),
    agent_id           uuid NOT NULL REFERENCES agents (id),
    -- The unguessable part of the public URL /hooks/{token}.
    token              text NOT NULL UNIQUE,
    scheme             text NOT NULL CHECK (scheme IN ('standard', 'github', 'stripe', 'slack', 'shopify', 'hmac_sha256', 'none')),
    -- Encrypted (AES-GCM); never returned.
    secret             bytea,
    -- hmac_sha256 only: where the signature is and how it is written.
    header_name        text,
    signature_prefix   text,
    encoding           text CHECK (encoding IN ('hex', 'base64')),
    tolerance_seconds  integer NOT NULL DEFAULT 300,
    description        text,
    enabled            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz
);

CREATE INDEX inbound_webhooks_agent_idx ON inbound_webhooks (agent_id, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE inbound_events (
    id           uuid PRIMARY KEY,
    team_id      uuid NOT NULL REFERENCES teams (id),
    hook_id      uuid NOT NULL REFERENCES inbound_webhooks (id),
    agent_id     uuid NOT NULL REFERENCES agents (id),
    -- The provider's delivery id, when it sends one: a redelivery is recognised by it.
    delivery_id  text,
    headers      jsonb NOT NULL,
    body         jsonb NOT NULL,
    run_id       uuid REFERENCES runs (id),
    received_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inbound_events_delivery_unique UNIQUE (hook_id, delivery_id)
);

CREATE INDEX inbound_events_hook_idx ON inbound_events (hook_id, id DESC);
