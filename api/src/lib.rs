//! The agentq HTTP API (`agentq api`). [`App::build`] binds the listener and connects the
//! stores; [`App::run_until_stopped`] serves until the shutdown future resolves. `main` and
//! the tests use the very same builder.
#![warn(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub mod auth;
pub mod config;
pub mod context;
pub mod error;
pub mod extract;
pub mod hub;
pub mod openapi;
pub mod state;

mod agents;
mod approvals;
mod audit_logs;
pub mod console;
mod conversations;
mod credentials;
mod health;
mod hosts;
mod inbound;
mod keys;
mod limits;
mod mcp;
mod mcp_servers;
mod notifications;
pub mod ratelimit;
pub mod request_logs;
mod runs;
mod serve;
mod triggers;
mod usage;
mod webhooks;

use agentq_shared::crypto::Keyring;
use agentq_shared::queue::QueueError;
use agentq_shared::queues::Queues;
use agentq_shared::redis_conn::{self, Keys};
use agentq_shared::runs::create::Creator;
pub use config::ApiConfig;
use error::ApiError;
use hub::Hub;
use state::{AppState, LastUsed};

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Postgres refused or was unreachable.
    #[error("cannot connect to Postgres (DATABASE_URL): {0}")]
    Database(#[from] sqlx::Error),
    /// Redis refused or was unreachable.
    #[error("cannot connect to Redis (REDIS_URL): {0}")]
    Redis(#[from] redis::RedisError),
    /// The queue settings are unusable.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A built, not yet serving, API.
pub struct App {
    listener: TcpListener,
    state: AppState,
}

impl App {
    /// Connects to Postgres and Redis and binds the listener.
    pub async fn build(config: ApiConfig) -> Result<Self, StartError> {
        // Install the recorder before the first request records anything.
        agentq_shared::telemetry::metrics_handle();
        let db = agentq_shared::db::connect_with(
            &config.store.database_url,
            config.store.db_max_connections,
            config.db_acquire_timeout,
        )
        .await?;
        agentq_shared::metrics::watch_pool("api", &db);
        let redis = redis_conn::connect(&config.store.redis_url).await?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let mut config = config;
        if config.public_url.is_none() {
            // Hook URLs are never built from a request's Host header, which the client picks.
            let base = format!(
                "http://{}",
                listener.local_addr().map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source
                })?
            );
            tracing::warn!(%base, "AGENTQ_PUBLIC_URL is not set: inbound webhook URLs use the listen address");
            config.public_url = Some(base);
        }
        let keys = Keys::new(config.store.redis_prefix.clone());
        let queues = Queues::new(redis.clone(), &keys)?;
        let keyring = Keyring::load(&db, config.master_key).await?;
        let sealed = agentq_shared::agents::seal_signing_secrets(&db, &keyring).await?;
        if sealed > 0 {
            tracing::info!(
                sealed,
                "encrypted agents' signing secrets stored in plain text"
            );
        }
        let creator = Creator::new(
            db.clone(),
            queues.clone(),
            (config.store.db_max_connections as usize / 3).max(1),
        );
        let key_lookup = crate::state::KeyLookup::new(db.clone(), 2);
        let state = AppState::new(crate::state::Shared {
            creator,
            key_lookup,
            hub: Arc::new(Hub::new(redis.clone(), keys.clone())),
            db,
            redis,
            keys,
            queues,
            keyring,
            stopping: Arc::new(tokio::sync::watch::channel(false).0),
            config: Arc::new(config),
            last_used: Arc::new(LastUsed::default()),
            agent_limits: Arc::default(),
            request_logs: None,
            hosts: Arc::default(),
        });
        Ok(Self { listener, state })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener always has a local address")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and writes the
    /// pending key uses.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let flusher = tokio::spawn(
            state
                .last_used
                .clone()
                .run(state.db.clone(), state.config.last_used_flush),
        );
        let marks = tokio::spawn(state.hub.clone().renew_marks());
        let doorbells = tokio::spawn(
            state
                .hub
                .clone()
                .listen(state.config.store.redis_url.clone(), state.keys.clone()),
        );
        // Open event streams end when shutdown starts, so draining does not wait on them.
        let stopping = state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stopping.send(true);
        };
        tracing::info!(addr = %self.local_addr(), "api listening");
        let mut serving = self.state.to_shared();
        let writer = if serving.config.request_logs {
            let (logger, writer) = request_logs::RequestLogger::start(serving.db.clone());
            serving.request_logs = Some(logger);
            Some(writer)
        } else {
            None
        };
        drop(self.state);
        let serving = AppState::new(serving);
        let header_read_timeout = serving.config.header_read_timeout;
        let app = router(serving);
        let result = serve::serve(self.listener, app, header_read_timeout, shutdown).await;
        flusher.abort();
        doorbells.abort();
        marks.abort();
        state.last_used.flush(&state.db).await;
        // Every logger was dropped with the router: the writer flushes what is left and ends.
        if let Some(writer) = writer {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer).await;
        }
        result
    }
}

/// Every route, with the layers that give each response its request id and envelope. The
/// routes and the OpenAPI document come from one declaration (see [`openapi`]).
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let routes = openapi::router(state.config.inbound_body_limit)
        .merge(mcp::routes(state.clone()))
        .merge(console::routes())
        .fallback(|| async { ApiError::from_status(axum::http::StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::request_context,
        ))
        .with_state(state.clone());
    // Agent hosts are mapped to agent paths before routing (see `hosts`).
    hosts::in_front(state, routes)
}
