-- The gateway: rate limits on keys, teams and agents; request logs.

-- NULL: not set here (a key falls back to its team, then to the operator's default).
ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0);
ALTER TABLE api_keys ADD COLUMN rate_limit_per_day integer CHECK (rate_limit_per_day > 0);
ALTER TABLE teams ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0);
ALTER TABLE teams ADD COLUMN rate_limit_per_day integer CHECK (rate_limit_per_day > 0);
-- Per agent: requests aimed at the agent, whatever the key. NULL: no agent limit.
ALTER TABLE agents ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute > 0);
ALTER TABLE agents ADD COLUMN rate_limit_per_day integer CHECK (rate_limit_per_day > 0);

CREATE TABLE request_logs (
    id           uuid PRIMARY KEY,
    team_id      uuid REFERENCES teams (id),
    key_id       uuid,
    agent_id     uuid,
    method       text NOT NULL,
    path         text NOT NULL,
    status       integer NOT NULL,
    latency_ms   double precision NOT NULL,
    request_id   text NOT NULL,
    ip           text,
    user_agent   text,
    -- The request body up to a cap, with secrets redacted.
    body         text,
    created_at   timestamptz NOT NULL
);

CREATE INDEX request_logs_team_idx ON request_logs (team_id, id DESC);
CREATE INDEX request_logs_created_idx ON request_logs (created_at);
