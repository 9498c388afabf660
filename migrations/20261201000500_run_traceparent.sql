-- OpenTelemetry: a run keeps the W3C `traceparent` of its trigger's span, so every later
-- execution of it (after an approval, a lost lease, a release) continues the same trace, and
-- an event keeps the `traceparent` of what it reports, so its webhook deliveries join that
-- trace too. NULL when traces are off. (agentq_emit gets an overload taking it; see
-- shared/sql/functions.sql.)
ALTER TABLE runs ADD COLUMN traceparent text;
ALTER TABLE events ADD COLUMN traceparent text;
