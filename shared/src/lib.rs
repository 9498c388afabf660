//! What two or more agentq roles need: ids, scopes, API keys, config, Postgres and Redis
//! wiring, the audit log. It never depends on axum: the API, the worker, the scheduler and
//! the CLI all build on it.
#![warn(missing_docs)]

pub mod agents;
pub mod approvals;
pub mod audit;
pub mod batch;
pub mod config;
pub mod conversations;
pub mod credentials;
pub mod crypto;
pub mod db;
pub mod ids;
pub mod keys;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod pagination;
pub mod queue;
pub mod queues;
pub mod redis_conn;
pub mod runs;
pub mod schedule;
pub mod scopes;
pub mod signing;
pub mod teams;
pub mod telemetry;
pub mod text_enum;
pub mod webhooks;
