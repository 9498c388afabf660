-- Rows written with every run drop their foreign keys to teams and agents (as run_steps and
-- usage_records did in 20261201000600_hot_path_indexes.sql). pg_stat_statements over a
-- steady 2,000 runs/s showed each check as a query of its own per row, and the KEY SHARE
-- lock each takes made multixacts of the rows every concurrent create (the team's) and every
-- start and finish batch (the agent's, whose slot counter they update) touch: the check on
-- runs.agent_id cost 40 us a run, more than the run's share of its start statement.
--
-- What keeps the columns right without them:
-- - runs are inserted by one statement only (create.rs `insert_runs`), which takes team and
--   agent from a join with the live agent of that team; no code deletes an agent or a team
--   (agents are soft-deleted, their runs stay).
-- - audit_logs rows are written with the team of the authenticated key or of the row acted on.
-- The keys that guard rows written from user input (agents, keys, endpoints, hooks) stay.
ALTER TABLE runs DROP CONSTRAINT runs_agent_id_fkey;
ALTER TABLE runs DROP CONSTRAINT runs_team_id_fkey;
ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_team_id_fkey;
