-- Agents, their runs, the steps a run produces, and usage per finished run.

CREATE TABLE agents (
    id                   uuid PRIMARY KEY,
    team_id              uuid NOT NULL REFERENCES teams (id),
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description          text,
    runtime              text NOT NULL CHECK (runtime IN ('scripted', 'http')),
    config               jsonb NOT NULL,
    -- Signs the requests made to an http agent (Standard Webhooks); shown once.
    signing_secret       text NOT NULL,
    schedule             text,
    timezone             text NOT NULL DEFAULT 'UTC',
    status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    max_concurrent_runs  integer NOT NULL CHECK (max_concurrent_runs BETWEEN 1 AND 10000),
    max_run_seconds      integer NOT NULL CHECK (max_run_seconds BETWEEN 1 AND 86400),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- Deleted agents stay as rows so their runs stay readable.
    deleted_at           timestamptz
);

CREATE INDEX agents_team_idx ON agents (team_id, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE runs (
    id                uuid PRIMARY KEY,
    team_id           uuid NOT NULL REFERENCES teams (id),
    agent_id          uuid NOT NULL REFERENCES agents (id),
    status            text NOT NULL DEFAULT 'queued' CHECK (status IN
                        ('queued', 'running', 'waiting_approval', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    -- A queued run of a paused agent waits here, out of the queue, until the agent resumes.
    held              boolean NOT NULL DEFAULT false,
    trigger_type      text NOT NULL CHECK (trigger_type IN ('api', 'signal', 'chat', 'webhook', 'schedule', 'mcp')),
    trigger           jsonb NOT NULL,
    input             jsonb NOT NULL DEFAULT 'null'::jsonb,
    output            text,
    error             text,
    -- Executions started (a worker taking over after a crash counts one more). Also the
    -- fencing token: a worker writes only while attempts is still the value it set.
    attempts          integer NOT NULL DEFAULT 0,
    -- Where a resumed execution continues: next scripted step, next step sequence.
    script_pos        integer NOT NULL DEFAULT 0,
    next_seq          integer NOT NULL DEFAULT 1,
    cancel_requested  boolean NOT NULL DEFAULT false,
    idempotency_key   text,
    request_hash      bytea,
    created_at        timestamptz NOT NULL DEFAULT now(),
    queued_at         timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    heartbeat_at      timestamptz,
    deadline_at       timestamptz,
    finished_at       timestamptz,
    usage             jsonb,
    CONSTRAINT runs_team_idempotency_key UNIQUE (team_id, idempotency_key)
);

CREATE INDEX runs_agent_idx ON runs (agent_id, id DESC);
CREATE INDEX runs_team_idx ON runs (team_id, id DESC);
CREATE INDEX runs_agent_running_idx ON runs (agent_id) WHERE status = 'running';
CREATE INDEX runs_unfinished_idx ON runs (queued_at) WHERE status IN ('queued', 'running');
CREATE INDEX runs_held_idx ON runs (agent_id, id) WHERE held;

CREATE TABLE run_steps (
    id            uuid NOT NULL UNIQUE,
    run_id        uuid NOT NULL REFERENCES runs (id),
    seq           integer NOT NULL,
    team_id       uuid NOT NULL REFERENCES teams (id),
    agent_id      uuid NOT NULL REFERENCES agents (id),
    -- input | message | tool_call | tool_result | error
    kind          text NOT NULL,
    -- user | assistant | tool | system
    role          text NOT NULL,
    content       text,
    tool_name     text,
    tool_call_id  text,
    arguments     jsonb,
    result        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX run_steps_agent_idx ON run_steps (agent_id, id DESC);

CREATE TABLE usage_records (
    run_id         uuid PRIMARY KEY REFERENCES runs (id),
    team_id        uuid NOT NULL REFERENCES teams (id),
    agent_id       uuid NOT NULL REFERENCES agents (id),
    status         text NOT NULL,
    duration_ms    bigint NOT NULL,
    steps          integer NOT NULL,
    tool_calls     integer NOT NULL,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX usage_records_team_idx ON usage_records (team_id, created_at);
