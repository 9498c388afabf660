//! End-to-end tests: the real API (in-process via `App::build`, or the real binary when a
//! test needs several processes) against real Postgres and Redis, spoken to over HTTP.

mod common;

mod agent_hosts;
mod agents;
mod api_keys;
mod approvals;
mod audit_logs;
mod chaos;
mod cli;
mod cluster;
mod console;
mod credentials;
mod errors;
mod gateway;
mod health;
mod hostile_clients;
mod http_runtime;
mod inbound;
mod key_privileges;
mod lifecycle;
mod llm;
mod llm_approvals;
mod llm_conversations;
mod logs;
mod mcp_agents;
mod mcp_integrations;
mod mcp_platform;
mod mcp_servers;
mod metrics;
mod openapi;
mod quotas;
mod resilience;
mod retention;
mod runs;
mod schedules;
mod secrets_at_rest;
mod slow_clients;
mod streaming;
mod traces;
mod webhooks;
