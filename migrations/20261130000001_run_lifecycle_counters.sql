-- The run lifecycle moves into one Rust module (shared/src/runs/lifecycle) whose hot
-- transitions work in batches. What it needs from the schema:
-- * per-agent slot counters (agents.running_runs) instead of counting running runs under a
--   lock on the agent row for every start and finish;
-- * per-run counters, so that ending a run needs no count over its steps;
-- * no PL/pgSQL for starting and finishing: those functions are dropped. The functions that
--   stay (agentq_uuid_v7, agentq_run_json, agentq_emit) are defined once, in
--   shared/sql/functions.sql, which `agentq migrate` applies after the migrations.

ALTER TABLE agents ADD COLUMN running_runs integer NOT NULL DEFAULT 0;
UPDATE agents a SET running_runs = (SELECT count(*) FROM runs r WHERE r.agent_id = a.id AND r.status = 'running');

ALTER TABLE runs
    ADD COLUMN tool_calls integer NOT NULL DEFAULT 0,
    ADD COLUMN input_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN output_tokens bigint NOT NULL DEFAULT 0;
UPDATE runs r SET tool_calls = s.n
FROM (SELECT run_id, count(*)::int AS n FROM run_steps WHERE kind = 'tool_call' GROUP BY run_id) s
WHERE r.id = s.run_id AND r.status IN ('queued', 'running', 'waiting_approval');

DROP FUNCTION agentq_start_run(uuid);
DROP FUNCTION agentq_finish_run(uuid, integer, text, text, text);
DROP FUNCTION agentq_unpark_next(uuid);
DROP FUNCTION agentq_notify_run_end(uuid);
DROP FUNCTION agentq_run_json(uuid);

-- With counters instead of a count under a lock, a large limit costs nothing: allow up to a
-- million runs of one agent at once.
ALTER TABLE agents DROP CONSTRAINT agents_max_concurrent_runs_check;
ALTER TABLE agents ADD CONSTRAINT agents_max_concurrent_runs_check CHECK (max_concurrent_runs BETWEEN 1 AND 1000000);

-- Running runs were counted per agent under a lock; the counters replace that, and every
-- start and finish no longer has to maintain this index.
DROP INDEX runs_agent_running_idx;
-- Room on each page for the new versions of rows that steps and heartbeats update, so those
-- updates stay HOT (no index writes).
ALTER TABLE runs SET (fillfactor = 80);
