-- Credentials (team secrets such as model API keys) and MCP server configs, whose secrets
-- are encrypted by the application (AES-256-GCM, `nonce || ciphertext`) and never stored
-- in plain text. Agents may now use the `llm` runtime.

CREATE TABLE credentials (
    id            uuid PRIMARY KEY,
    team_id       uuid NOT NULL REFERENCES teams (id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description   text,
    -- The encrypted value; the API never returns it.
    value         bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

CREATE INDEX credentials_team_idx ON credentials (team_id, id DESC);

CREATE TABLE mcp_servers (
    id                uuid PRIMARY KEY,
    team_id           uuid NOT NULL REFERENCES teams (id),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    server_url        text NOT NULL,
    transport         text NOT NULL CHECK (transport IN ('streamable_http', 'sse')),
    auth_type         text NOT NULL CHECK (auth_type IN ('none', 'bearer', 'header')),
    -- The encrypted auth_config JSON ({"token"} | {"header_name", "value"} | {"credential_id"}).
    auth_config       bytea,
    -- Set when auth_config names a credential, so a credential in use is known.
    credential_id     uuid REFERENCES credentials (id),
    -- NULL: every tool the server lists.
    allowed_tools     text[],
    require_approval  jsonb NOT NULL DEFAULT '"never"',
    -- The last tools/list answer (filtered by nothing), and when it was fetched.
    tools_cache       jsonb,
    tools_cached_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((auth_type = 'none') = (auth_config IS NULL))
);

CREATE INDEX mcp_servers_team_idx ON mcp_servers (team_id, id DESC);

ALTER TABLE agents DROP CONSTRAINT agents_runtime_check;
ALTER TABLE agents ADD CONSTRAINT agents_runtime_check CHECK (runtime IN ('scripted', 'http', 'llm'));
