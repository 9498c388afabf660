-- Concurrency slots per agent without polling. A run that finds its agent at
-- max_concurrent_runs is parked; the run that frees a slot unparks the oldest parked run,
-- which the worker enqueues. Start and finish lock the agent row, and as plpgsql functions
-- each statement sees what committed before it, so a park and a finish cannot miss each
-- other. One round trip each.

ALTER TABLE runs ADD COLUMN parked boolean NOT NULL DEFAULT false;
CREATE INDEX runs_parked_idx ON runs (agent_id, id) WHERE parked;

-- queued → running, within the agent's limit. Outcome: started | held | busy | gone.
CREATE FUNCTION agentq_start_run(p_run uuid)
RETURNS TABLE (o_outcome text, o_attempts integer, o_deadline timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_agent uuid;
    v_status text;
    v_max integer;
    v_seconds integer;
    v_running bigint;
BEGIN
    SELECT r.agent_id INTO v_agent FROM runs r WHERE r.id = p_run AND r.status = 'queued' AND NOT r.held;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone'::text, 0, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT a.status, a.max_concurrent_runs, a.max_run_seconds INTO v_status, v_max, v_seconds
    FROM agents a WHERE a.id = v_agent FOR UPDATE;
    IF v_status = 'paused' THEN
        UPDATE runs SET held = true, parked = false WHERE id = p_run AND status = 'queued';
        RETURN QUERY SELECT 'held'::text, 0, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT count(*) INTO v_running FROM runs WHERE agent_id = v_agent AND status = 'running';
    IF v_running >= v_max THEN
        UPDATE runs SET parked = true WHERE id = p_run AND status = 'queued' AND NOT held;
        RETURN QUERY SELECT 'busy'::text, 0, NULL::timestamptz;
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE runs SET status = 'running', parked = false, attempts = runs.attempts + 1,
           started_at = coalesce(runs.started_at, now()), heartbeat_at = now(),
           deadline_at = now() + make_interval(secs => v_seconds)
    WHERE runs.id = p_run AND runs.status = 'queued' AND NOT runs.held
    RETURNING 'started'::text, runs.attempts, runs.deadline_at;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'gone'::text, 0, NULL::timestamptz;
    END IF;
END $$;

-- Frees the agent slot a run held: unparks the agent's oldest parked run, if any.
CREATE FUNCTION agentq_unpark_next(p_agent uuid) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    v_next uuid;
BEGIN
    UPDATE runs SET parked = false, queued_at = now()
    WHERE id = (SELECT id FROM runs WHERE agent_id = p_agent AND parked AND status = 'queued'
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING id INTO v_next;
    RETURN v_next;
END $$;

-- running → a final state under the caller's lease (attempt), with its usage record.
-- Returns whether it applied, and the run to enqueue next for the freed slot.
CREATE FUNCTION agentq_finish_run(p_run uuid, p_attempt integer, p_status text, p_output text, p_error text)
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
    RETURN QUERY SELECT true, agentq_unpark_next(v_agent);
END $$;
