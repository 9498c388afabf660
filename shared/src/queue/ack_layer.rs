//! The middleware a `StreamBackend` puts around the worker's service: it acks an entry when
//! its handler returns `Ok`, and leaves it pending (for redelivery after `min_idle`, with its
//! delivery count incremented) when the handler returns `Err`, panics or is dropped. Panics
//! are caught here too, so a panicking job never takes the worker down even without
//! apalis's `catch_panic()` layer.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};

use apalis_core::error::BoxDynError;
use apalis_core::layers::{Layer, Service};
use apalis_core::task::Task;
use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{error, warn};

use super::consumer::DeliveryInfo;
use super::driver::Shared;

/// The error a job's result becomes when its handler panicked.
#[derive(Debug, thiserror::Error)]
#[error("job panicked: {0}")]
pub struct JobPanicked(pub String);

/// Layer that settles each stream entry from its handler's outcome.
#[derive(Clone)]
pub struct AckLayer {
    shared: Arc<Shared>,
}

impl AckLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl std::fmt::Debug for AckLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Service made by [`AckLayer`].
#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for AckService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckService").finish_non_exhaustive()
    }
}

impl<S, J> Service<Task<J>> for AckService<S>
where
    S: Service<Task<J>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxDynError>,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<J>) -> Self::Future {
        let lease = task.data().get::<DeliveryInfo>().map(|info| Lease {
            shared: self.shared.clone(),
            info: Some(info.clone()),
        });
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(task)));
        async move {
            let outcome = match called {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            match outcome {
                Ok(Ok(res)) => {
                    if let Some(lease) = lease {
                        lease.settle(true);
                    }
                    Ok(res)
                }
                Ok(Err(e)) => {
                    let e: BoxDynError = e.into();
                    if let Some(info) = lease.as_ref().and_then(|l| l.info.as_ref()) {
                        warn!(
                            entry_id = %info.entry_id,
                            deliveries = info.deliveries,
                            error = %e,
                            "job failed; left pending for redelivery"
                        );
                    }
                    Err(e)
                }
                Err(panic) => {
                    let msg = panic_message(panic.as_ref());
                    if let Some(info) = lease.as_ref().and_then(|l| l.info.as_ref()) {
                        error!(
                            entry_id = %info.entry_id,
                            deliveries = info.deliveries,
                            panic = %msg,
                            "job panicked; left pending for redelivery"
                        );
                    }
                    Err(Box::new(JobPanicked(msg)) as BoxDynError)
                }
            }
        }
        .boxed()
    }
}

/// One entry owned by a running job; dropping it unsettled leaves the entry pending.
struct Lease {
    shared: Arc<Shared>,
    info: Option<DeliveryInfo>,
}

impl Lease {
    fn settle(mut self, ack: bool) {
        if let Some(info) = self.info.take() {
            self.shared.finish(&info.entry_id, ack);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(info) = self.info.take() {
            self.shared.finish(&info.entry_id, false);
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
