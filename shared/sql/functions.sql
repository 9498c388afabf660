-- The SQL functions agentq relies on, each defined once, here. `agentq migrate` applies this
-- file after the migrations, every time (CREATE OR REPLACE, in one transaction under an
-- advisory lock, so several processes may migrate at once). Change a function here, never in
-- a migration; a migration only drops a function that is gone. (Migrations before
-- 20261130000001 predate this file and created the first versions.)

-- Time-ordered ids made in the database (ids made in Rust are UUIDv7 too), so lists ordered
-- by id stay newest first.
CREATE OR REPLACE FUNCTION agentq_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- Whether an enabled endpoint of the team takes events of this type about this agent: the
-- test agentq_emit makes, for statements that decide in the same round trip whether to emit.
CREATE OR REPLACE FUNCTION agentq_wants(p_team uuid, p_type text, p_agent uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM webhook_endpoints e
        WHERE e.team_id = p_team AND e.enabled AND e.deleted_at IS NULL
          AND (cardinality(e.event_types) = 0 OR p_type = ANY(e.event_types))
          AND (cardinality(e.agent_ids) = 0 OR p_agent = ANY(e.agent_ids)))
$$;

-- Records an event and one pending delivery per enabled endpoint subscribed to it (by type
-- and agent); returns the deliveries to enqueue. Without subscribers it writes nothing.
-- `p_traceparent` is the W3C trace context the event's deliveries join (NULL: none).
CREATE OR REPLACE FUNCTION agentq_emit(p_team uuid, p_type text, p_agent uuid, p_data jsonb, p_traceparent text)
RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    v_event uuid;
    v_ids uuid[];
BEGIN
    IF NOT agentq_wants(p_team, p_type, p_agent) THEN
        RETURN '{}'::uuid[];
    END IF;
    v_event := agentq_uuid_v7();
    INSERT INTO events (id, team_id, type, agent_id, payload, traceparent)
    VALUES (v_event, p_team, p_type, p_agent, jsonb_build_object(
        'type', p_type,
        'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', p_data), p_traceparent);
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

-- The same without a trace context (the signature older callers use).
CREATE OR REPLACE FUNCTION agentq_emit(p_team uuid, p_type text, p_agent uuid, p_data jsonb) RETURNS uuid[]
LANGUAGE sql AS $$
    SELECT agentq_emit(p_team, p_type, p_agent, p_data, NULL::text)
$$;
