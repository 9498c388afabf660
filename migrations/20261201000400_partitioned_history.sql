-- Tables that grow with traffic are partitioned by time, so that retention drops whole
-- partitions instead of deleting rows one by one.
--
-- The partition key is a UUIDv7 that each table already has (run_id for run_steps, id for
-- the others): its first 48 bits are the creation time in milliseconds, so a range of keys
-- is a range of time, and the primary keys and ON CONFLICT targets stay as they were (the
-- key is already in them). Partitions are weekly, [Monday 00:00 UTC, next Monday), named
-- `<table>_pYYYYMMDD`; the scheduler creates them ahead (agentq_ensure_partitions) and
-- retention detaches and drops them. Rows whose key is no UUIDv7 of a sane time (older
-- than two years, or a year ahead) land in `<table>_pre` / `<table>_post` so none is lost.
-- No DEFAULT partition: it would forbid DETACH … CONCURRENTLY.
--
-- Also here, for batched deletes of old runs and deliveries: indexes on the columns that
-- reference runs and events, and usage_records no longer reference runs (usage outlives
-- the runs it counts).

-- The smallest UUIDv7 of a time: the lower bound of that time's keys.
CREATE FUNCTION agentq_uuid_v7_floor(p_at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(
        substring(int8send(floor(extract(epoch FROM p_at) * 1000)::bigint) FROM 3)
            || '\x00000000000000000000'::bytea,
        'hex')::uuid
$$;

-- The creation time of a UUIDv7.
CREATE FUNCTION agentq_uuid_v7_time(p_id uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_timestamp(
        ('x' || lpad(substring(replace(p_id::text, '-', '') FROM 1 FOR 12), 16, '0'))::bit(64)::bigint
            / 1000.0)
$$;

-- Creates the weekly partitions of `p_table` covering [p_from, p_to); returns how many were
-- new. Idempotent and safe with two schedulers (an advisory lock per table); a week that
-- overlaps an existing partition (such as `_post`) is left out.
CREATE FUNCTION agentq_ensure_partitions(p_table text, p_from timestamptz, p_to timestamptz)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_week timestamptz := date_trunc('week', p_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_name text;
    v_made integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('agentq_partitions'), hashtext(p_table));
    WHILE v_week < p_to LOOP
        v_name := p_table || '_p' || to_char(v_week AT TIME ZONE 'UTC', 'YYYYMMDD');
        IF to_regclass(v_name) IS NULL THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    v_name, p_table, agentq_uuid_v7_floor(v_week),
                    agentq_uuid_v7_floor(v_week + interval '7 days'));
                v_made := v_made + 1;
            EXCEPTION WHEN invalid_object_definition THEN
                NULL; -- overlaps `_pre`/`_post`: those rows stay there
            END;
        END IF;
        v_week := v_week + interval '7 days';
    END LOOP;
    RETURN v_made;
END $$;

-- Moves `p_table`'s rows (now in `p_table`_old) into the partitioned `p_table`: weekly
-- partitions from the oldest row's week (at most two years back) to five weeks ahead,
-- `_pre` for anything older than two years, `_post` for keys a year or more ahead.
CREATE FUNCTION agentq_partition_existing(p_table text, p_key text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_min timestamptz;
    v_max timestamptz;
    v_floor timestamptz;
    v_start timestamptz;
    v_end timestamptz;
BEGIN
    EXECUTE format('SELECT agentq_uuid_v7_time((SELECT %1$I FROM %2$I ORDER BY %1$I LIMIT 1)),
        agentq_uuid_v7_time((SELECT %1$I FROM %2$I ORDER BY %1$I DESC LIMIT 1))',
        p_key, p_table || '_old') INTO v_min, v_max;
    v_floor := date_trunc('week', (now() - interval '2 years') AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    v_start := greatest(v_floor, least(now(), coalesce(v_min, now())));
    v_end := greatest(now() + interval '5 weeks',
        least(coalesce(v_max, now()), now() + interval '1 year') + interval '7 days');
    v_end := date_trunc('week', v_end AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (MINVALUE) TO (%L)',
        p_table || '_pre', p_table, agentq_uuid_v7_floor(v_floor));
    PERFORM agentq_ensure_partitions(p_table, v_start, v_end);
    IF v_max >= v_end THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (MAXVALUE)',
            p_table || '_post', p_table, agentq_uuid_v7_floor(v_end));
    END IF;
    EXECUTE format('INSERT INTO %I SELECT * FROM %I', p_table, p_table || '_old');
    EXECUTE format('DROP TABLE %I', p_table || '_old');
END $$;

-- run_steps, by run: a run's steps share its partition, and go when it goes. Step ids stay
-- unique by construction (UUIDv7), no longer by a constraint (one would have to include
-- run_id).
ALTER TABLE run_steps RENAME TO run_steps_old;
ALTER TABLE run_steps_old RENAME CONSTRAINT run_steps_pkey TO run_steps_old_pkey;
ALTER INDEX run_steps_agent_idx RENAME TO run_steps_old_agent_idx;
CREATE TABLE run_steps (LIKE run_steps_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (run_id);
SELECT agentq_partition_existing('run_steps', 'run_id');
ALTER TABLE run_steps ADD PRIMARY KEY (run_id, seq);
ALTER TABLE run_steps ADD FOREIGN KEY (run_id) REFERENCES runs (id);
ALTER TABLE run_steps ADD FOREIGN KEY (team_id) REFERENCES teams (id);
ALTER TABLE run_steps ADD FOREIGN KEY (agent_id) REFERENCES agents (id);
CREATE INDEX run_steps_agent_idx ON run_steps (agent_id, id DESC);

-- request_logs, by id. Retention drops partitions, so the index on created_at that the
-- row-by-row delete used is gone.
ALTER TABLE request_logs RENAME TO request_logs_old;
ALTER TABLE request_logs_old RENAME CONSTRAINT request_logs_pkey TO request_logs_old_pkey;
ALTER INDEX request_logs_team_idx RENAME TO request_logs_old_team_idx;
DROP INDEX request_logs_created_idx;
CREATE TABLE request_logs (LIKE request_logs_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (id);
SELECT agentq_partition_existing('request_logs', 'id');
ALTER TABLE request_logs ADD PRIMARY KEY (id);
ALTER TABLE request_logs ADD FOREIGN KEY (team_id) REFERENCES teams (id);
CREATE INDEX request_logs_team_idx ON request_logs (team_id, id DESC);

-- webhook_attempts, by id (the attempt's time; a delivery's attempts follow its creation).
ALTER TABLE webhook_attempts RENAME TO webhook_attempts_old;
ALTER TABLE webhook_attempts_old RENAME CONSTRAINT webhook_attempts_pkey TO webhook_attempts_old_pkey;
ALTER INDEX webhook_attempts_delivery_idx RENAME TO webhook_attempts_old_delivery_idx;
CREATE TABLE webhook_attempts (LIKE webhook_attempts_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (id);
SELECT agentq_partition_existing('webhook_attempts', 'id');
ALTER TABLE webhook_attempts ADD PRIMARY KEY (id);
ALTER TABLE webhook_attempts ADD FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries (id);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);

-- audit_logs, by id; still append-only row by row. Only retention, when the operator sets
-- AGENTQ_AUDIT_RETENTION_DAYS, drops whole partitions.
ALTER TABLE audit_logs RENAME TO audit_logs_old;
ALTER TABLE audit_logs_old RENAME CONSTRAINT audit_logs_pkey TO audit_logs_old_pkey;
ALTER INDEX audit_logs_team_id_idx RENAME TO audit_logs_old_team_id_idx;
DROP TRIGGER audit_logs_no_update_delete ON audit_logs_old;
DROP TRIGGER audit_logs_no_truncate ON audit_logs_old;
CREATE TABLE audit_logs (LIKE audit_logs_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (id);
SELECT agentq_partition_existing('audit_logs', 'id');
ALTER TABLE audit_logs ADD PRIMARY KEY (id);
ALTER TABLE audit_logs ADD FOREIGN KEY (team_id) REFERENCES teams (id);
CREATE INDEX audit_logs_team_id_idx ON audit_logs (team_id, id DESC);
CREATE TRIGGER audit_logs_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate
    BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();

DROP FUNCTION agentq_partition_existing(text, text);

-- Deleting a batch of runs or events checks the rows that reference them: by index.
CREATE INDEX notifications_run_idx ON notifications (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX notifications_approval_idx ON notifications (approval_id) WHERE approval_id IS NOT NULL;
CREATE INDEX inbound_events_run_idx ON inbound_events (run_id) WHERE run_id IS NOT NULL;
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);
ALTER TABLE usage_records DROP CONSTRAINT usage_records_run_id_fkey;

-- A filtered list of an agent's runs (by status) reads only its page.
CREATE INDEX runs_agent_status_idx ON runs (agent_id, status, id DESC);
