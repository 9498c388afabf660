//! `StreamBackend`: the apalis 1.0 `Backend` over one queue consumer. apalis runs the
//! handlers (concurrency, timeouts, tracing, monitor, graceful shutdown); the queue keeps the
//! jobs. A handler is a plain `async fn(job: J, ...) -> Result<(), E>`; `Data<DeliveryInfo>`
//! (or `Attempt`, equal to the delivery count) tells it how often the entry was delivered.
//!
//! Polling: `poll_next` only reads a channel that the background fetcher fills, so an idle
//! worker sleeps until an entry arrives (no polling) and picks a new job up within
//! milliseconds of its `XADD`. `poll_close` (called by apalis once in-flight tasks have
//! finished) stops the fetcher, releases entries fetched but never started, and flushes acks.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::worker::context::WorkerContext;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::ack_layer::AckLayer;
use super::consumer::{Consumer, DeliveryInfo};
use super::driver::{self, Fetched, KeeperMsg, QueueHealth, Shared};
use super::QueueError;

/// How a `StreamBackend` fetches.
#[derive(Clone, Debug)]
pub struct StreamBackendOptions {
    /// Entries this worker owns at most (running plus fetched and waiting). Set it to the
    /// worker's concurrency: prefetch never exceeds it, and concurrency cannot either.
    pub max_in_flight: usize,
    /// Longest wait of one `XREADGROUP ... BLOCK` (capped at 10 s; 1 s without a dedicated
    /// connection). Shutdown may wait this long for the last fetch to return.
    pub block: Duration,
    /// When Redis has failed for this long without a success, the backend stream ends with
    /// an error so the worker process exits non-zero instead of idling.
    pub give_up_after: Duration,
}

impl Default for StreamBackendOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 8,
            block: Duration::from_secs(1),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// Why a `StreamBackend` stopped producing jobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamBackendError {
    /// Redis kept failing for longer than `give_up_after`.
    #[error("queue unreachable for {failing_for:?}: {source}")]
    Unavailable {
        /// Time since the first failure in a row.
        failing_for: Duration,
        /// The last failure.
        source: QueueError,
    },
    /// The backend was polled outside a Tokio runtime.
    #[error("stream backend needs a Tokio runtime")]
    NoRuntime,
    /// The fetcher task ended without reporting why (it panicked).
    #[error("queue fetcher stopped unexpectedly")]
    FetcherStopped,
}

/// apalis backend reading jobs of type `J` (JSON payloads) from one [`Consumer`].
pub struct StreamBackend<J> {
    shared: Arc<Shared>,
    rx: Option<mpsc::Receiver<Fetched<J>>>,
    tx: Option<mpsc::Sender<Fetched<J>>>,
    keeper_rx: Option<mpsc::UnboundedReceiver<KeeperMsg>>,
    stop: watch::Sender<bool>,
    fetcher: Option<JoinHandle<()>>,
    keeper: Option<JoinHandle<()>>,
    closing: Option<BoxFuture<'static, Result<(), StreamBackendError>>>,
    /// An error was already returned; the stream now ends.
    failed: bool,
    _job: PhantomData<fn() -> J>,
}

impl<J> std::fmt::Debug for StreamBackend<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamBackend")
            .field("consumer", &self.shared.consumer)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl<J> StreamBackend<J>
where
    J: DeserializeOwned + Send + 'static,
{
    /// A backend for `consumer`; background tasks start on the worker's first poll.
    pub fn new(consumer: Consumer, options: StreamBackendOptions) -> Self {
        let options = StreamBackendOptions {
            max_in_flight: options.max_in_flight.max(1),
            ..options
        };
        let (shared, keeper_rx) = Shared::new(consumer, options);
        let (tx, rx) = mpsc::channel(shared.options.max_in_flight);
        let (stop, _) = watch::channel(false);
        Self {
            shared,
            rx: Some(rx),
            tx: Some(tx),
            keeper_rx: Some(keeper_rx),
            stop,
            fetcher: None,
            keeper: None,
            closing: None,
            failed: false,
            _job: PhantomData,
        }
    }

    /// Redis reachability as this backend sees it, for `/readyz`.
    pub fn health(&self) -> QueueHealth {
        self.shared.health.clone()
    }

    fn start(&mut self) -> Result<(), StreamBackendError> {
        let (Some(tx), Some(keeper_rx)) = (self.tx.take(), self.keeper_rx.take()) else {
            return Ok(());
        };
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| StreamBackendError::NoRuntime)?;
        let fetcher = driver::run_fetcher(self.shared.clone(), tx, self.stop.subscribe());
        self.fetcher = Some(runtime.spawn(fetcher));
        self.keeper = Some(runtime.spawn(driver::run_keeper(self.shared.clone(), keeper_rx)));
        info!(consumer = %self.shared.consumer.name(), "stream backend started");
        Ok(())
    }

    fn close_future(&mut self) -> BoxFuture<'static, Result<(), StreamBackendError>> {
        let _ = self.stop.send(true);
        let shared = self.shared.clone();
        let fetcher = self.fetcher.take();
        let keeper = self.keeper.take();
        let rx = self.rx.take();
        async move {
            if let Some(fetcher) = fetcher {
                let _ = fetcher.await;
            }
            release_unstarted(&shared, rx).await;
            if let Some(keeper) = keeper {
                let _ = shared.close_keeper().await;
                let _ = keeper.await;
            }
            info!(consumer = %shared.consumer.name(), "stream backend closed");
            Ok(())
        }
        .boxed()
    }
}

/// Hands back entries fetched but never given to a handler, so another worker takes them
/// on its next reclaim instead of after `min_idle`.
async fn release_unstarted<J>(shared: &Shared, rx: Option<mpsc::Receiver<Fetched<J>>>) {
    let ids = drain_ids(rx);
    if ids.is_empty() {
        return;
    }
    for id in &ids {
        shared.finish(id, false);
    }
    match shared.consumer.release(&ids).await {
        Ok(()) => info!(count = ids.len(), "released unstarted entries"),
        Err(e) => warn!(error = %e, count = ids.len(), "release failed; entries wait for min_idle"),
    }
}

fn drain_ids<J>(rx: Option<mpsc::Receiver<Fetched<J>>>) -> Vec<String> {
    let Some(mut rx) = rx else { return Vec::new() };
    rx.close();
    let mut ids = Vec::new();
    while let Ok(item) = rx.try_recv() {
        if let Some(info) = item
            .ok()
            .as_ref()
            .and_then(|t| t.data().get::<DeliveryInfo>())
        {
            ids.push(info.entry_id.clone());
        }
    }
    ids
}

impl<J> Drop for StreamBackend<J> {
    fn drop(&mut self) {
        // Dropped without a graceful close (worker failed, or the process is going down):
        // stop the tasks, let the keeper flush what it has, hand back unstarted entries.
        let _ = self.stop.send(true);
        if self.keeper.take().is_some() {
            drop(self.shared.close_keeper());
        }
        let ids = drain_ids(self.rx.take());
        if ids.is_empty() {
            return;
        }
        for id in &ids {
            self.shared.finish(id, false);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let consumer = self.shared.consumer.clone();
            runtime.spawn(async move { consumer.release(&ids).await });
        }
    }
}

impl<J> Backend for StreamBackend<J>
where
    J: DeserializeOwned + Send + 'static,
{
    type Task = Task<J>;
    type Error = StreamBackendError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(self.start())
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        if let Err(e) = self.start() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(task))) => Poll::Ready(Some(Ok(task))),
            Poll::Ready(Some(Err(e))) => {
                self.failed = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) if self.failed => Poll::Ready(None),
            Poll::Ready(None) => {
                self.failed = true;
                Poll::Ready(Some(Err(StreamBackendError::FetcherStopped)))
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.closing.is_none() {
            self.closing = Some(self.close_future());
        }
        let Some(fut) = self.closing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let done = fut.poll_unpin(cx);
        if done.is_ready() {
            // A finished future must not be polled again.
            self.closing = Some(futures::future::ready(Ok(())).boxed());
        }
        done
    }
}

impl<J> BackendConfig for StreamBackend<J> {
    type Args = J;
    type Id = String;
    type Kind = Ephemeral;
    type Config = StreamBackendOptions;
    type Layer = AckLayer;

    fn config(&self) -> &Self::Config {
        &self.shared.options
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        AckLayer::new(self.shared.clone())
    }
}
