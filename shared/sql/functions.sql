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
-- PL/pgSQL, not SQL: a SQL function with a subquery is not inlined, and Postgres planned its
-- body again on every call (a run's create paid more for that plan than for the lookup);
-- PL/pgSQL keeps the plan for the session.
CREATE OR REPLACE FUNCTION agentq_wants(p_team uuid, p_type text, p_agent uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM webhook_endpoints e
        WHERE e.team_id = p_team AND e.enabled AND e.deleted_at IS NULL
          AND (cardinality(e.event_types) = 0 OR p_type = ANY(e.event_types))
          AND (cardinality(e.agent_ids) = 0 OR p_agent = ANY(e.agent_ids)));
END $$;

-- agentq_wants for a statement that cannot emit the event: false, or SQLSTATE AQ001 when an
-- endpoint takes it, which rolls the whole statement back. For trigger batches written by one
-- statement without a transaction (shared/src/runs/lifecycle/create.rs, which owns the
-- logic and retries a refused batch in a transaction that emits the events).
CREATE OR REPLACE FUNCTION agentq_refuse_wanted(p_team uuid, p_type text, p_agent uuid) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF agentq_wants(p_team, p_type, p_agent) THEN
        RAISE EXCEPTION 'an endpoint takes % events of this team', p_type USING ERRCODE = 'AQ001';
    END IF;
    RETURN false;
END $$;

-- The keys behind these secrets' hashes, with their teams' rate limits (the API's batched
-- key lookup, one call per request batch). A function only for its plan: Postgres plans a
-- statement with `= ANY($1)` for each call, because its generic plan (costed for ten
-- elements) never looks cheaper than a custom one for the one or two keys of a batch, and
-- that planning cost more than the lookup. Here the plan is made once per session.
CREATE OR REPLACE FUNCTION agentq_keys_by_hash(p_hashes bytea[])
RETURNS TABLE (key_hash bytea, id uuid, team_id uuid, name text, prefix text, scopes text[],
               agent_ids uuid[], created_by uuid, created_at timestamptz, expires_at timestamptz,
               last_used_at timestamptz, revoked_at timestamptz, rate_limit_per_minute integer,
               rate_limit_per_day integer, team_per_minute integer, team_per_day integer)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    SELECT k.key_hash, k.id, k.team_id, k.name, k.prefix, k.scopes, k.agent_ids, k.created_by,
           k.created_at, k.expires_at, k.last_used_at, k.revoked_at, k.rate_limit_per_minute,
           k.rate_limit_per_day, t.rate_limit_per_minute, t.rate_limit_per_day
    FROM api_keys k JOIN teams t ON t.id = k.team_id
    WHERE k.key_hash = ANY(p_hashes);
END $$;

-- Adds p_counts[i] started runs to agent p_agents[i]'s slot counter, under the agents' row
-- locks taken in id order (so batches never deadlock); the agents' rows as they now are. For
-- a start batch that started its runs first (shared/src/runs/lifecycle/start.rs): it checks
-- the counters against the limits and rolls back when one is over, so the locks are held
-- for this statement and the commit only. Generic plans as in agentq_keys_by_hash.
CREATE OR REPLACE FUNCTION agentq_take_slots(p_agents uuid[], p_counts integer[])
RETURNS SETOF agents
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM 1 FROM agents a WHERE a.id = ANY(p_agents) ORDER BY a.id FOR NO KEY UPDATE;
    RETURN QUERY
    UPDATE agents a SET running_runs = a.running_runs + f.n
    FROM unnest(p_agents, p_counts) AS f(id, n)
    WHERE a.id = f.id
    RETURNING a.*;
END $$;

-- Gives back p_counts[i] slots of agent p_agents[i] and unparks that many of its oldest
-- parked runs; the runs to enqueue. For shared/src/runs/lifecycle/end.rs (`release_slots`),
-- which owns the logic; here so that the three statements cost one round trip and plans made
-- once per session (each `= ANY` statement was planned on every call, as above).
--  1. The agents' rows are locked first, in id order, by a statement of their own: locked in
--     a CTE of the UPDATE, a row a concurrent batch had updated after the statement's snapshot
--     was re-checked by the UPDATE (EvalPlanQual), which queued behind a start batch waiting
--     for this very transaction: a deadlock, many times a second under a steady load.
--  2. The counters go down.
--  3. The unpark is a later statement, with a newer snapshot: it sees the parks that
--     committed while this transaction waited for the locks.
CREATE OR REPLACE FUNCTION agentq_release_slots(p_agents uuid[], p_counts integer[])
RETURNS TABLE (run_id uuid, traceparent text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM 1 FROM agents a WHERE a.id = ANY(p_agents) ORDER BY a.id FOR NO KEY UPDATE;
    UPDATE agents a SET running_runs = greatest(a.running_runs - f.n, 0)
    FROM unnest(p_agents, p_counts) AS f(id, n)
    WHERE a.id = f.id;
    RETURN QUERY SELECT * FROM agentq_unpark(p_agents, p_counts);
END $$;

-- Unparks up to p_counts[i] of agent p_agents[i]'s oldest parked runs; their jobs' ids and
-- traces. The caller holds the agents' row locks (agentq_release_slots, cancel.rs).
CREATE OR REPLACE FUNCTION agentq_unpark(p_agents uuid[], p_counts integer[])
RETURNS TABLE (run_id uuid, traceparent text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    UPDATE runs r SET parked = false, queued_at = now()
    WHERE r.id IN (
        SELECT p.id FROM unnest(p_agents, p_counts) AS f(agent_id, n),
             LATERAL (SELECT q.id FROM runs q
                      WHERE q.agent_id = f.agent_id AND q.parked AND q.status = 'queued' AND NOT q.held
                      ORDER BY q.id LIMIT greatest(f.n, 0) FOR UPDATE SKIP LOCKED) AS p)
    RETURNING r.id, r.traceparent;
END $$;

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
