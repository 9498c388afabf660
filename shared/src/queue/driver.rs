//! The two background tasks behind a `StreamBackend`, and the state they share with the
//! backend and its ack layer.
//!
//! - The fetcher keeps at most `max_in_flight` entries owned by this worker (buffered plus
//!   running): it waits for a free slot, fetches as many entries as there are free slots
//!   (`XREADGROUP ... BLOCK`, so a new job is picked up as soon as it is added), decodes them
//!   and hands them to the worker through a channel. Undecodable payloads are dead-lettered.
//!   Redis errors are retried with backoff until `give_up_after`, then reported to the worker.
//! - The keeper acknowledges finished entries in batches (whatever finished since its last
//!   round trip) and, every `renew_every`, renews the claim on every entry still owned, in
//!   one script call.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::task::Task;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::{error, info, warn};

use super::backend::{StreamBackendError, StreamBackendOptions};
use super::consumer::{Consumer, Delivery, DeliveryInfo};

/// Acks sent in one round trip at most.
const ACK_BATCH: usize = 500;
/// First and longest pause between retries of a failing fetch.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
// At most 1 s: after a Redis restart the first reads may still fail while connections are
// re-established, and each failure must not cost a long pause (the fault suite measured 8 s
// to recover with 5 s).
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the fetcher hands the worker.
pub(crate) type Fetched<J> = Result<Task<J>, StreamBackendError>;

/// Whether this worker can currently reach Redis, for `/readyz` and logs.
#[derive(Clone, Debug, Default)]
pub struct QueueHealth {
    failing_since: Arc<Mutex<Option<Instant>>>,
}

impl QueueHealth {
    /// True unless the last Redis round trip of the fetcher failed.
    pub fn is_healthy(&self) -> bool {
        self.failing_for().is_none()
    }

    /// How long Redis has been failing without a success in between.
    pub fn failing_for(&self) -> Option<Duration> {
        let since = *self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        since.map(|t| t.elapsed())
    }

    fn succeeded(&self) {
        let mut since = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        if since.take().is_some() {
            info!("queue reachable again");
        }
    }

    /// Records a failure; returns how long Redis has been failing.
    fn failed(&self) -> Duration {
        let mut since = self.failing_since.lock().unwrap_or_else(|p| p.into_inner());
        since.get_or_insert_with(Instant::now).elapsed()
    }
}

pub(crate) enum KeeperMsg {
    Ack(String),
    /// Flush the acks received so far, then stop and answer.
    Close(oneshot::Sender<()>),
}

/// State shared by the backend, its ack layer and the background tasks.
pub(crate) struct Shared {
    pub(crate) consumer: Consumer,
    pub(crate) options: StreamBackendOptions,
    /// One permit per entry this worker may own; taken by the fetcher, given back by `finish`.
    slots: Semaphore,
    /// Entries owned and not finished (buffered or running): the ones to renew.
    in_flight: Mutex<HashSet<String>>,
    keeper: mpsc::UnboundedSender<KeeperMsg>,
    pub(crate) health: QueueHealth,
}

impl Shared {
    pub(crate) fn new(
        consumer: Consumer,
        options: StreamBackendOptions,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<KeeperMsg>) {
        let (keeper, keeper_rx) = mpsc::unbounded_channel();
        let shared = Self {
            consumer,
            slots: Semaphore::new(options.max_in_flight),
            options,
            in_flight: Mutex::new(HashSet::new()),
            keeper,
            health: QueueHealth::default(),
        };
        (Arc::new(shared), keeper_rx)
    }

    /// The entry is no longer run by this worker: queue its ack (when `ack`) and free its slot.
    /// Without an ack the entry stays pending and is redelivered after `min_idle`.
    pub(crate) fn finish(&self, id: &str, ack: bool) {
        self.lock_in_flight().remove(id);
        if ack && self.keeper.send(KeeperMsg::Ack(id.to_owned())).is_err() {
            warn!(entry_id = id, "ack keeper gone; entry will be redelivered");
        }
        self.slots.add_permits(1);
    }

    pub(crate) fn close_keeper(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self.keeper.send(KeeperMsg::Close(tx));
        rx
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Fetches until `stop` turns true, Redis stays unreachable past `give_up_after`, or the
/// backend is dropped.
pub(crate) async fn run_fetcher<J>(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Fetched<J>>,
    mut stop: watch::Receiver<bool>,
) where
    J: DeserializeOwned + Send + 'static,
{
    let opts = shared.options.clone();
    let mut backoff = BACKOFF_MIN;
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            permit = shared.slots.acquire() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        permit.forget();
        let mut want = 1;
        while want < opts.max_in_flight {
            let Ok(p) = shared.slots.try_acquire() else {
                break;
            };
            p.forget();
            want += 1;
        }
        match shared.consumer.fetch(want, opts.block).await {
            Ok(deliveries) => {
                shared.health.succeeded();
                backoff = BACKOFF_MIN;
                shared.slots.add_permits(want - deliveries.len());
                for delivery in deliveries {
                    if !dispatch(&shared, &tx, delivery).await {
                        return;
                    }
                }
            }
            Err(e) => {
                shared.slots.add_permits(want);
                let failing_for = shared.health.failed();
                if failing_for >= opts.give_up_after {
                    error!(error = %e, ?failing_for, "queue unreachable for too long; giving up");
                    let err = StreamBackendError::Unavailable {
                        failing_for,
                        source: e,
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                warn!(error = %e, ?failing_for, retry_in = ?backoff, "queue fetch failed; retrying");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Decodes one delivery and sends it to the worker; false when the worker is gone.
async fn dispatch<J>(shared: &Shared, tx: &mpsc::Sender<Fetched<J>>, d: Delivery) -> bool
where
    J: DeserializeOwned + Send + 'static,
{
    let job = match serde_json::from_str::<J>(&d.payload) {
        Ok(job) => job,
        Err(e) => {
            warn!(entry_id = %d.id, error = %e, "undecodable job payload; dead-lettering");
            let reason = format!("undecodable payload: {e}");
            if let Err(e) = shared.consumer.dead_letter(&d, &reason).await {
                error!(entry_id = %d.id, error = %e, "dead-letter failed; entry stays pending");
            }
            shared.slots.add_permits(1);
            return true;
        }
    };
    shared.lock_in_flight().insert(d.id.clone());
    let info = DeliveryInfo {
        entry_id: d.id.clone(),
        deliveries: d.deliveries,
    };
    // The worker's lifecycle layer counts one attempt when the task starts, so a handler's
    // `Attempt` equals the delivery count.
    let attempt = usize::try_from(d.deliveries.saturating_sub(1)).unwrap_or(usize::MAX);
    let task = TaskBuilder::new(job)
        .task_id(TaskId::from_string(d.id.clone()))
        .attempt(attempt)
        .data(info)
        .build();
    if tx.send(Ok(task)).await.is_err() {
        // Backend dropped: leave the entry pending for reclaim.
        shared.finish(&d.id, false);
        return false;
    }
    true
}

/// Acks finished entries and renews owned ones until told to close.
pub(crate) async fn run_keeper(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<KeeperMsg>) {
    let mut unacked: Vec<String> = Vec::new();
    let mut tick = tokio::time::interval(shared.consumer.queue().config().renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let mut closing = None;
        tokio::select! {
            msg = rx.recv() => {
                // The backend holds a sender for as long as this task runs; None means it is gone.
                let Some(msg) = msg else { return };
                let mut next = Some(msg);
                while let Some(msg) = next.take() {
                    match msg {
                        KeeperMsg::Ack(id) => unacked.push(id),
                        KeeperMsg::Close(done) => {
                            closing = Some(done);
                            break;
                        }
                    }
                    if unacked.len() < ACK_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                flush_acks(&shared.consumer, &mut unacked).await;
            }
            _ = tick.tick() => {
                flush_acks(&shared.consumer, &mut unacked).await;
                renew(&shared, &unacked).await;
            }
        }
        if let Some(done) = closing {
            for _ in 0..3 {
                if unacked.is_empty() {
                    break;
                }
                tokio::time::sleep(BACKOFF_MIN).await;
                flush_acks(&shared.consumer, &mut unacked).await;
            }
            if !unacked.is_empty() {
                error!(
                    count = unacked.len(),
                    "acks lost at shutdown; entries will be redelivered"
                );
            }
            let _ = done.send(());
            return;
        }
    }
}

async fn flush_acks(consumer: &Consumer, unacked: &mut Vec<String>) {
    if unacked.is_empty() {
        return;
    }
    match consumer.ack(unacked).await {
        Ok(()) => unacked.clear(),
        Err(e) => warn!(error = %e, count = unacked.len(), "ack failed; retrying"),
    }
}

/// Renews every entry still owned: running or buffered, and finished but not yet acked.
async fn renew(shared: &Shared, unacked: &[String]) {
    let mut ids: Vec<String> = shared.lock_in_flight().iter().cloned().collect();
    ids.extend_from_slice(unacked);
    if ids.is_empty() {
        return;
    }
    if let Err(e) = shared.consumer.renew(&ids).await {
        warn!(error = %e, count = ids.len(), "claim renewal failed");
    }
}
