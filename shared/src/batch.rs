//! Group commit: many concurrent callers, one statement. A [`Batcher`] runs a few *lanes*
//! (each one a task that holds at most one database connection while it executes); a caller
//! hands in its request and awaits its own answer. A lane takes the first waiting request,
//! then everything else already waiting (up to `max_batch`), and executes them together.
//! Nothing ever waits for a timer: an idle system executes a lone request at once, and under
//! load requests pile up while the lanes are busy committing, so batches grow exactly when
//! round trips are scarce. No caller waits longer than the commit in progress plus its own.
//!
//! The hot transitions of the run lifecycle (create, start, step, heartbeat, finish) all go
//! through one of these, so the number of Postgres transactions per run falls with load.

use std::future::Future;
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, oneshot, Mutex};

/// How long a lane of [`Batcher::spawn_held`] keeps its connection without a batch.
pub const HOLD_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a batched call got no answer of its own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    /// The batch's statement failed; the error is shared by every request in it.
    #[error("database: {0}")]
    Db(Arc<sqlx::Error>),
    /// The batcher stopped (the process is shutting down).
    #[error("batcher stopped")]
    Closed,
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Db(Arc::new(e))
    }
}

type Pending<Req, Resp> = (Req, oneshot::Sender<Result<Resp, BatchError>>);

/// Coalesces concurrent requests into batches executed by `lanes` tasks.
pub struct Batcher<Req, Resp> {
    tx: mpsc::UnboundedSender<Pending<Req, Resp>>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Resp> std::fmt::Debug for Batcher<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts `lanes` tasks that execute batches of at most `max_batch` requests with `exec`,
    /// which answers one result per request, in order. The tasks end when every handle on
    /// the batcher is dropped.
    pub fn spawn<F, Fut>(name: &'static str, lanes: usize, max_batch: usize, exec: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>, BatchError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Pending<Req, Resp>>();
        let rx = Arc::new(Mutex::new(rx));
        let exec = Arc::new(exec);
        for _ in 0..lanes.max(1) {
            let rx = rx.clone();
            let exec = exec.clone();
            tokio::spawn(async move {
                while let Some(batch) = take_batch(&rx, max_batch.max(1)).await {
                    let (reqs, answers): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
                    metrics::histogram!("agentq_batch_size", "batch" => name)
                        .record(reqs.len() as f64);
                    let result = exec(reqs).await;
                    answer(name, answers, result);
                }
            });
        }
        Self { tx }
    }

    /// [`Batcher::spawn`] for batches that run on a Postgres connection: each lane keeps the
    /// connection it used while batches keep coming, and gives it back to `pool` after
    /// [`HOLD_IDLE`] without one, or after a batch that failed (it may be broken). sqlx
    /// checks every connection given back to its pool with a round trip (a Sync, whatever
    /// `test_before_acquire` says); a lane under load gives back none. `exec` answers the
    /// connection too: `None` when it must not be kept.
    pub fn spawn_held<F, Fut>(
        name: &'static str,
        lanes: usize,
        max_batch: usize,
        pool: PgPool,
        exec: F,
    ) -> Self
    where
        F: Fn(PoolConnection<Postgres>, Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<
                Output = (
                    Option<PoolConnection<Postgres>>,
                    Result<Vec<Resp>, BatchError>,
                ),
            > + Send
            + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Pending<Req, Resp>>();
        let rx = Arc::new(Mutex::new(rx));
        let exec = Arc::new(exec);
        for _ in 0..lanes.max(1) {
            let (rx, exec, pool) = (rx.clone(), exec.clone(), pool.clone());
            tokio::spawn(async move {
                let mut held: Option<PoolConnection<Postgres>> = None;
                loop {
                    let next = if held.is_some() {
                        match tokio::time::timeout(HOLD_IDLE, take_batch(&rx, max_batch.max(1)))
                            .await
                        {
                            Ok(next) => next,
                            Err(_) => {
                                held = None; // idle: back to the pool
                                continue;
                            }
                        }
                    } else {
                        take_batch(&rx, max_batch.max(1)).await
                    };
                    let Some(batch) = next else { break };
                    let (reqs, answers): (Vec<Req>, Vec<_>) = batch.into_iter().unzip();
                    metrics::histogram!("agentq_batch_size", "batch" => name)
                        .record(reqs.len() as f64);
                    let conn = match held.take() {
                        Some(c) => c,
                        None => match pool.acquire().await {
                            Ok(c) => c,
                            Err(e) => {
                                answer(name, answers, Err(e.into()));
                                continue;
                            }
                        },
                    };
                    let (conn, result) = exec(conn, reqs).await;
                    if result.is_ok() {
                        held = conn;
                    }
                    answer(name, answers, result);
                }
            });
        }
        Self { tx }
    }

    /// Submits one request and waits for its answer.
    pub async fn call(&self, req: Req) -> Result<Resp, BatchError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((req, tx)).map_err(|_| BatchError::Closed)?;
        rx.await.map_err(|_| BatchError::Closed)?
    }

    /// Submits one request without waiting for its answer.
    pub fn submit(&self, req: Req) {
        let (tx, _rx) = oneshot::channel();
        let _ = self.tx.send((req, tx));
    }
}

/// Hands each caller its result (or the batch's error).
fn answer<Resp>(
    name: &'static str,
    answers: Vec<oneshot::Sender<Result<Resp, BatchError>>>,
    result: Result<Vec<Resp>, BatchError>,
) {
    let n = answers.len();
    match result {
        Ok(resps) if resps.len() == n => {
            for (answer, resp) in answers.into_iter().zip(resps) {
                let _ = answer.send(Ok(resp));
            }
        }
        Ok(resps) => {
            tracing::error!(
                batch = name,
                expected = n,
                got = resps.len(),
                "batch answered the wrong number of results"
            );
            for answer in answers {
                let _ = answer.send(Err(BatchError::Closed));
            }
        }
        Err(e) => {
            tracing::warn!(batch = name, size = n, error = %e, "batch failed");
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}

/// The first waiting request (waiting for one if none), plus whatever else is already there.
async fn take_batch<T>(rx: &Mutex<mpsc::UnboundedReceiver<T>>, max: usize) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = Vec::with_capacity(16);
    batch.push(first);
    while batch.len() < max {
        match rx.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_get_their_own_answers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let b: Batcher<u32, u32> = Batcher::spawn("test", 1, 1000, move |reqs: Vec<u32>| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(reqs.into_iter().map(|r| r * 2).collect())
            }
        });
        let handles: Vec<_> = (0..200u32)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { (i, b.call(i).await.unwrap()) })
            })
            .collect();
        for h in handles {
            let (i, answer) = h.await.unwrap();
            assert_eq!(answer, i * 2);
        }
        let batches = calls.load(Ordering::SeqCst);
        assert!(batches < 200, "200 concurrent calls took {batches} batches");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_call_in_it() {
        let b: Batcher<u32, u32> = Batcher::spawn("test", 2, 10, |_reqs: Vec<u32>| async {
            Err(BatchError::Db(Arc::new(sqlx::Error::PoolTimedOut)))
        });
        assert!(matches!(b.call(1).await, Err(BatchError::Db(_))));
    }

    #[tokio::test]
    async fn a_lone_call_is_not_delayed() {
        let b: Batcher<u32, u32> =
            Batcher::spawn("test", 1, 10, |reqs: Vec<u32>| async move { Ok(reqs) });
        let t = std::time::Instant::now();
        assert_eq!(b.call(7).await.unwrap(), 7);
        assert!(t.elapsed() < std::time::Duration::from_millis(50));
    }
}
