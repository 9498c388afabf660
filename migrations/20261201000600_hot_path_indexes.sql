-- The run lifecycle's hot path, lighter for Postgres.
--
-- 1. The lookups of parked and held runs get partial indexes whose predicates are exactly
--    their queries' (unpark in shared/src/runs/lifecycle/end.rs, release_held in cancel.rs,
--    lost_runs in recover.rs). With only `WHERE parked`, a table without statistics yet (a
--    fresh burst) led the planner to runs_agent_status_idx for a finish batch's unpark: it
--    walked every queued run of the agent to find none parked, 31 ms per finish batch with a
--    50,000-run backlog. With the exact predicate the partial index is the only sensible plan.
DROP INDEX runs_parked_idx;
CREATE INDEX runs_parked_idx ON runs (agent_id, id) WHERE parked AND status = 'queued' AND NOT held;
DROP INDEX runs_held_idx;
CREATE INDEX runs_held_idx ON runs (agent_id, id) WHERE held AND status = 'queued';

-- 2. Idempotency keys are unique per team where there is one: most runs have none, and a
--    NULL key still cost an entry in the unique index on the insert and on each of the run's
--    (non-HOT) status updates. create.rs's ON CONFLICT names the index's predicate.
ALTER TABLE runs DROP CONSTRAINT runs_team_idempotency_key;
CREATE UNIQUE INDEX runs_team_idempotency_key ON runs (team_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- 3. History rows written with every run drop the foreign keys on the team and agent they
--    copy from their run. Those columns are filled from the run's row in the statement that
--    writes them (run_steps also keeps its key to runs, whose row has both keys), so the
--    checks proved nothing new; but each was a query per row plus a KEY SHARE lock on the
--    agent's row, which the slot counter updates in every start and finish batch, so under
--    load they turned that row's locks into multixacts. Two steps and a usage row per run
--    made four checks against that one row.
ALTER TABLE run_steps DROP CONSTRAINT run_steps_team_id_fkey;
ALTER TABLE run_steps DROP CONSTRAINT run_steps_agent_id_fkey;
ALTER TABLE usage_records DROP CONSTRAINT usage_records_team_id_fkey;
ALTER TABLE usage_records DROP CONSTRAINT usage_records_agent_id_fkey;
