-- Starts and finishes serialise per agent on the agent row, but FOR UPDATE also blocked
-- every foreign-key check on it (each step insert takes FOR KEY SHARE on its agent).
-- FOR NO KEY UPDATE keeps starts and finishes serialised without blocking those.

CREATE OR REPLACE FUNCTION agentq_start_run(p_run uuid)
RETURNS TABLE (o_outcome text, o_attempts integer, o_deadline timestamptz, o_deliveries uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_agent uuid;
    v_team uuid;
    v_status text;
    v_max integer;
    v_seconds integer;
    v_running bigint;
    v_attempts integer;
    v_deadline timestamptz;
BEGIN
    SELECT r.agent_id, r.team_id INTO v_agent, v_team FROM runs r
    WHERE r.id = p_run AND r.status = 'queued' AND NOT r.held;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone'::text, 0, NULL::timestamptz, '{}'::uuid[];
        RETURN;
    END IF;
    SELECT a.status, a.max_concurrent_runs, a.max_run_seconds INTO v_status, v_max, v_seconds
    FROM agents a WHERE a.id = v_agent FOR NO KEY UPDATE;
    IF v_status = 'paused' THEN
        UPDATE runs SET held = true, parked = false WHERE id = p_run AND status = 'queued';
        RETURN QUERY SELECT 'held'::text, 0, NULL::timestamptz, '{}'::uuid[];
        RETURN;
    END IF;
    SELECT count(*) INTO v_running FROM runs WHERE agent_id = v_agent AND status = 'running';
    IF v_running >= v_max THEN
        UPDATE runs SET parked = true WHERE id = p_run AND status = 'queued' AND NOT held;
        RETURN QUERY SELECT 'busy'::text, 0, NULL::timestamptz, '{}'::uuid[];
        RETURN;
    END IF;
    UPDATE runs SET status = 'running', parked = false, attempts = runs.attempts + 1,
           started_at = coalesce(runs.started_at, now()), heartbeat_at = now(),
           deadline_at = now() + make_interval(secs => v_seconds)
    WHERE runs.id = p_run AND runs.status = 'queued' AND NOT runs.held
    RETURNING runs.attempts, runs.deadline_at INTO v_attempts, v_deadline;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone'::text, 0, NULL::timestamptz, '{}'::uuid[];
        RETURN;
    END IF;
    RETURN QUERY SELECT 'started'::text, v_attempts, v_deadline,
        agentq_emit(v_team, 'run.started', v_agent, agentq_run_json(p_run));
END $$;

CREATE OR REPLACE FUNCTION agentq_finish_run(p_run uuid, p_attempt integer, p_status text, p_output text, p_error text)
RETURNS TABLE (o_finished boolean, o_next uuid, o_deliveries uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_agent uuid;
    v_team uuid;
    v_done integer;
BEGIN
    SELECT r.agent_id, r.team_id INTO v_agent, v_team FROM runs r WHERE r.id = p_run;
    PERFORM 1 FROM agents WHERE id = v_agent FOR NO KEY UPDATE;
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
        RETURN QUERY SELECT false, NULL::uuid, '{}'::uuid[];
        RETURN;
    END IF;
    PERFORM agentq_notify_run_end(p_run);
    RETURN QUERY SELECT true, agentq_unpark_next(v_agent),
        agentq_emit(v_team, 'run.' || p_status, v_agent, agentq_run_json(p_run));
END $$;
