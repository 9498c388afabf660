-- Tenants, their API keys, and the append-only audit log.

CREATE TABLE teams (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    team_id       uuid NOT NULL REFERENCES teams (id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- First characters of the key, for people to recognise it; never enough to use it.
    prefix        text NOT NULL,
    -- SHA-256 of the whole key. The key itself is never stored.
    key_hash      bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    scopes        text[] NOT NULL,
    -- Empty means every agent of the team.
    agent_ids     uuid[] NOT NULL DEFAULT '{}',
    created_by    uuid REFERENCES api_keys (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

CREATE INDEX api_keys_team_id_idx ON api_keys (team_id, id DESC);

-- Revocation cannot be undone, whoever runs the UPDATE.
CREATE FUNCTION api_keys_revocation_is_final() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'api key % is revoked; revocation is final', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER api_keys_revocation_is_final
    BEFORE UPDATE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_revocation_is_final();

CREATE TABLE audit_logs (
    id           uuid PRIMARY KEY,
    team_id      uuid NOT NULL REFERENCES teams (id),
    -- 'api_key' (actor_key_id set), 'cli' or 'system'.
    actor_type   text NOT NULL,
    actor_key_id uuid,
    action       text NOT NULL,
    target_type  text,
    target_id    text,
    request_id   text,
    ip           text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_logs_team_id_idx ON audit_logs (team_id, id DESC);

-- The audit log is append-only: the database itself refuses changes.
CREATE FUNCTION audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_logs_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();

CREATE TRIGGER audit_logs_no_truncate
    BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();
