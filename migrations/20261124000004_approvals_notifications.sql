-- Human-in-the-loop: an agent's approval policy, approvals, and notifications.

-- Time-ordered ids made in the database (ids made in Rust are UUIDv7 too), so lists
-- ordered by id stay newest first.
CREATE FUNCTION agentq_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- {"tools": "all" | "none" | [name | {"name", "arguments": {field: glob}}], "timeout_seconds",
--  "on_reject": "fail" | "continue", "on_expire": "fail" | "continue"}
ALTER TABLE agents ADD COLUMN approval jsonb;

CREATE TABLE approvals (
    id            uuid PRIMARY KEY,
    team_id       uuid NOT NULL REFERENCES teams (id),
    agent_id      uuid NOT NULL REFERENCES agents (id),
    run_id        uuid NOT NULL REFERENCES runs (id),
    status        text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    tool          text NOT NULL,
    arguments     jsonb NOT NULL,
    -- The tool's result, recorded once the call is allowed to happen.
    result        jsonb,
    tool_call_id  text NOT NULL,
    -- The runtime position of the tool call, and the step that shows it.
    position      integer NOT NULL,
    step_seq      integer NOT NULL,
    on_reject     text NOT NULL CHECK (on_reject IN ('fail', 'continue')),
    on_expire     text NOT NULL CHECK (on_expire IN ('fail', 'continue')),
    expires_at    timestamptz NOT NULL,
    decided_by    uuid REFERENCES api_keys (id),
    decided_at    timestamptz,
    comment       text,
    -- Set when the worker has recorded the decision's tool result in the run.
    applied_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX approvals_team_idx ON approvals (team_id, id DESC);
CREATE INDEX approvals_run_idx ON approvals (run_id);
CREATE INDEX approvals_pending_expiry_idx ON approvals (expires_at) WHERE status = 'pending';
-- A run waits on one approval at a time.
CREATE UNIQUE INDEX approvals_one_pending_per_run ON approvals (run_id) WHERE status = 'pending';

CREATE TABLE notifications (
    id           uuid PRIMARY KEY,
    team_id      uuid NOT NULL REFERENCES teams (id),
    agent_id     uuid REFERENCES agents (id),
    run_id       uuid REFERENCES runs (id),
    approval_id  uuid REFERENCES approvals (id),
    -- approval.requested | run.failed | run.timed_out
    kind         text NOT NULL,
    title        text NOT NULL,
    body         text NOT NULL,
    read_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notifications_team_idx ON notifications (team_id, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (team_id, id DESC) WHERE read_at IS NULL;

-- Runs that fail or time out while a worker holds them notify the team, in the same
-- statement that ends them.
CREATE OR REPLACE FUNCTION agentq_finish_run(p_run uuid, p_attempt integer, p_status text, p_output text, p_error text)
RETURNS TABLE (o_finished boolean, o_next uuid)
LANGUAGE plpgsql AS $$
DECLARE
    v_agent uuid;
    v_done integer;
BEGIN
    SELECT r.agent_id INTO v_agent FROM runs r WHERE r.id = p_run;
    PERFORM 1 FROM agents WHERE id = v_agent FOR UPDATE;
    WITH counts AS (
        SELECT count(*)::int AS steps, count(*) FILTER (WHERE kind = 'tool_call')::int AS tool_calls
        FROM run_steps WHERE run_id = p_run
    ), r AS (
        UPDATE runs SET status = p_status, finished_at = now(), output = coalesce(p_output, runs.output),
               error = p_error, cancel_requested = false,
               usage = jsonb_build_object(
                   'duration_ms', (extract(epoch FROM now() - runs.started_at) * 1000)::bigint,
                   'steps', (SELECT steps FROM counts), 'tool_calls', (SELECT tool_calls FROM counts),
                   'input_tokens', 0, 'output_tokens', 0)
        WHERE runs.id = p_run AND runs.attempts = p_attempt AND runs.status = 'running'
        RETURNING runs.id, runs.team_id, runs.agent_id, runs.usage
    )
    INSERT INTO usage_records (run_id, team_id, agent_id, status, duration_ms, steps, tool_calls)
    SELECT r.id, r.team_id, r.agent_id, p_status, (r.usage->>'duration_ms')::bigint,
           (r.usage->>'steps')::int, (r.usage->>'tool_calls')::int
    FROM r;
    GET DIAGNOSTICS v_done = ROW_COUNT;
    IF v_done = 0 THEN
        RETURN QUERY SELECT false, NULL::uuid;
        RETURN;
    END IF;
    PERFORM agentq_notify_run_end(p_run);
    RETURN QUERY SELECT true, agentq_unpark_next(v_agent);
END $$;

-- A notification for a run that ended failed or timed out; nothing for other endings.
CREATE FUNCTION agentq_notify_run_end(p_run uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notifications (id, team_id, agent_id, run_id, kind, title, body)
    SELECT agentq_uuid_v7(), r.team_id, r.agent_id, r.id, 'run.' || r.status,
           CASE r.status WHEN 'failed' THEN 'Run failed' ELSE 'Run timed out' END,
           a.name || ': ' || coalesce(r.error, r.status)
    FROM runs r JOIN agents a ON a.id = r.agent_id
    WHERE r.id = p_run AND r.status IN ('failed', 'timed_out');
END $$;
