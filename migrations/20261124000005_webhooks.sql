-- Outgoing webhooks: endpoints, events (a transactional outbox), deliveries and attempts.

-- The master key's fallback when AGENTQ_MASTER_KEY is not set (see shared/src/crypto.rs).
CREATE TABLE keyring (
    id   integer PRIMARY KEY CHECK (id = 1),
    key  bytea NOT NULL CHECK (length(key) = 32)
);

CREATE TABLE webhook_endpoints (
    id                     uuid PRIMARY KEY,
    team_id                uuid NOT NULL REFERENCES teams (id),
    url                    text NOT NULL,
    description            text,
    -- Empty: every event type. Likewise for agents.
    event_types            text[] NOT NULL DEFAULT '{}',
    agent_ids              uuid[] NOT NULL DEFAULT '{}',
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text,
    disabled_at            timestamptz,
    -- Encrypted (AES-GCM); during a rotation's grace period both secrets sign.
    secret                 bytea NOT NULL,
    previous_secret        bytea,
    previous_secret_until  timestamptz,
    -- Set at the first failure of a streak, cleared by a success.
    failing_since          timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    deleted_at             timestamptz
);

CREATE INDEX webhook_endpoints_team_idx ON webhook_endpoints (team_id, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE events (
    id          uuid PRIMARY KEY,
    team_id     uuid NOT NULL REFERENCES teams (id),
    type        text NOT NULL,
    agent_id    uuid,
    -- {"type", "timestamp", "data"}: the exact body sent.
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    team_id          uuid NOT NULL REFERENCES teams (id),
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id),
    event_id         uuid NOT NULL REFERENCES events (id),
    event_type       text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id DESC);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id             uuid PRIMARY KEY,
    delivery_id    uuid NOT NULL REFERENCES webhook_deliveries (id),
    attempt        integer NOT NULL,
    started_at     timestamptz NOT NULL,
    status_code    integer,
    latency_ms     integer NOT NULL,
    -- Capped at about 20 KB.
    response_body  text,
    error          text
);

CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);

-- A run as the API shows it, for event payloads written in SQL.
CREATE FUNCTION agentq_run_json(p_run uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id, 'agent_id', r.agent_id, 'status', r.status, 'trigger', r.trigger, 'input', r.input,
        'output', r.output, 'error', r.error, 'attempts', r.attempts, 'cancel_requested', r.cancel_requested,
        'created_at', r.created_at, 'started_at', r.started_at, 'finished_at', r.finished_at, 'usage', r.usage)
    FROM runs r WHERE r.id = p_run
$$;

-- Records an event and one pending delivery per enabled endpoint subscribed to it (by type
-- and agent); returns the deliveries to enqueue. Without subscribers it writes nothing.
CREATE FUNCTION agentq_emit(p_team uuid, p_type text, p_agent uuid, p_data jsonb) RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    v_event uuid;
    v_ids uuid[];
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM webhook_endpoints e
        WHERE e.team_id = p_team AND e.enabled AND e.deleted_at IS NULL
          AND (cardinality(e.event_types) = 0 OR p_type = ANY(e.event_types))
          AND (cardinality(e.agent_ids) = 0 OR p_agent = ANY(e.agent_ids))
    ) THEN
        RETURN '{}'::uuid[];
    END IF;
    v_event := agentq_uuid_v7();
    INSERT INTO events (id, team_id, type, agent_id, payload)
    VALUES (v_event, p_team, p_type, p_agent, jsonb_build_object(
        'type', p_type,
        'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', p_data));
    WITH d AS (
        INSERT INTO webhook_deliveries (id, team_id, endpoint_id, event_id, event_type, next_attempt_at)
        SELECT agentq_uuid_v7(), p_team, e.id, v_event, p_type, now()
        FROM webhook_endpoints e
        WHERE e.team_id = p_team AND e.enabled AND e.deleted_at IS NULL
          AND (cardinality(e.event_types) = 0 OR p_type = ANY(e.event_types))
          AND (cardinality(e.agent_ids) = 0 OR p_agent = ANY(e.agent_ids))
        RETURNING id
    )
    SELECT coalesce(array_agg(id), '{}'::uuid[]) INTO v_ids FROM d;
    RETURN v_ids;
END $$;

-- Start and finish now emit run.started and run.<final status>, returning the deliveries.
DROP FUNCTION agentq_start_run(uuid);
CREATE FUNCTION agentq_start_run(p_run uuid)
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
    FROM agents a WHERE a.id = v_agent FOR UPDATE;
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

DROP FUNCTION agentq_finish_run(uuid, integer, text, text, text);
CREATE FUNCTION agentq_finish_run(p_run uuid, p_attempt integer, p_status text, p_output text, p_error text)
RETURNS TABLE (o_finished boolean, o_next uuid, o_deliveries uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_agent uuid;
    v_team uuid;
    v_done integer;
BEGIN
    SELECT r.agent_id, r.team_id INTO v_agent, v_team FROM runs r WHERE r.id = p_run;
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
        RETURN QUERY SELECT false, NULL::uuid, '{}'::uuid[];
        RETURN;
    END IF;
    PERFORM agentq_notify_run_end(p_run);
    RETURN QUERY SELECT true, agentq_unpark_next(v_agent),
        agentq_emit(v_team, 'run.' || p_status, v_agent, agentq_run_json(p_run));
END $$;
