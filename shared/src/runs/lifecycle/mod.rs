//! The run lifecycle, in one place: every change of a run's status is made here, by a
//! guarded UPDATE whose `WHERE status = ANY(...)` comes from the transition table in
//! [`status`] (so an illegal change matches no row and is refused, never applied).
//!
//! | transition | from → to | where |
//! |---|---|---|
//! | create | — → queued | [`create`] (group commit) |
//! | start | queued → running | [`start`] (batched, per-agent slot counters, counted after or first) |
//! | take over | running → running | [`start::take_over`] |
//! | step | running (steps, resume point) | [`write`] (batched) |
//! | wait | running → waiting_approval | [`wait::wait_for_approval`] |
//! | resume | waiting_approval → queued | [`wait::requeue`] |
//! | finish, time out | running → succeeded, failed, cancelled, timed_out | [`end`] (batched) |
//! | fail waiting | waiting_approval → failed | [`end`] |
//! | cancel | queued, waiting_approval → cancelled; running: flagged | [`cancel`] |
//! | hold, release | queued (held ↔ parked) | [`start`], [`cancel::release_held`] |
//!
//! Hot transitions take batches: a [`Lifecycle`] runs a [`crate::batch::Batcher`] per
//! transition, so concurrent runs of one process share their statements and transactions.
//! An agent's `max_concurrent_runs` is a counter on its row (`agents.running_runs`), changed
//! once per batch by the batch that starts or ends its runs: runs of one agent serialise only
//! per batch, never per run.

pub mod cancel;
pub mod create;
pub mod end;
pub mod recover;
pub mod start;
pub mod status;
pub mod wait;
pub mod write;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::batch::{BatchError, Batcher};
use crate::ids::RunId;
use crate::queues::Queues;
use crate::runs::doorbell::Doorbell;

pub use end::Ending;
pub use start::Start;
pub use status::RunStatus;
pub use write::{NewStep, StepWrite, Written};

/// A worker's hold on a running run: every write says `WHERE attempts = $attempt AND
/// status = 'running'`, so a worker that lost the run (another took over after it looked
/// dead) writes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The run.
    pub run: RunId,
    /// The fencing token: the run's `attempts` when this worker took it.
    pub attempt: i32,
    /// When the run must end.
    pub deadline: DateTime<Utc>,
}

/// Lanes (connections in use at once) per batched transition.
#[derive(Clone, Copy, Debug)]
pub struct Lanes {
    /// Starts.
    pub start: usize,
    /// Step writes.
    pub write: usize,
    /// Heartbeats.
    pub heartbeat: usize,
    /// Endings.
    pub end: usize,
}

impl Lanes {
    /// Lanes for a pool of `connections`, leaving room for the process's other queries.
    /// Starts and endings take one lane each: their transactions hold agents' slot counters
    /// until they commit, so for a busy agent one large batch beats two small ones queued
    /// on the same row lock.
    pub fn for_pool(connections: u32) -> Self {
        Self {
            start: 1,
            write: if connections >= 8 { 2 } else { 1 },
            heartbeat: 1,
            end: 1,
        }
    }
}

/// The batched hot transitions of one process; cheap to clone.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    pool: PgPool,
    queues: Queues,
    starts: Batcher<RunId, Start>,
    writes: Batcher<StepWrite, Written>,
    heartbeats: Batcher<Lease, Written>,
    ends: Batcher<Ending, bool>,
    doorbell: Doorbell,
}

impl Lifecycle {
    /// Starts the batchers on `pool`; after a commit, they enqueue what follows (freed slots'
    /// runs, webhook deliveries) on `queues` and ring doorbells of watched runs.
    pub fn new(pool: PgPool, queues: Queues, doorbell: Doorbell, lanes: Lanes) -> Self {
        let starts = {
            let queues = queues.clone();
            let crowded = std::sync::Arc::new(start::Crowded::new(start::CROWDED_FOR));
            Batcher::spawn_held(
                "start",
                lanes.start,
                1024,
                pool.clone(),
                move |mut conn, ids: Vec<RunId>| {
                    let (queues, crowded) = (queues.clone(), crowded.clone());
                    async move {
                        let r = start::start_batch(&mut conn, &queues, &crowded, ids).await;
                        (Some(conn), r)
                    }
                },
            )
        };
        let writes = {
            let bell = doorbell.clone();
            Batcher::spawn_held(
                "write",
                lanes.write,
                512,
                pool.clone(),
                move |mut conn, w: Vec<StepWrite>| {
                    let bell = bell.clone();
                    async move {
                        let written = write::write_batch(&mut conn, &w).await;
                        if let Ok(written) = &written {
                            for (w, r) in w.iter().zip(written) {
                                if matches!(r, Written::Ok { .. }) && !w.steps.is_empty() {
                                    bell.ring(w.lease.run);
                                }
                            }
                        }
                        (Some(conn), written)
                    }
                },
            )
        };
        let heartbeats = {
            Batcher::spawn_held(
                "heartbeat",
                lanes.heartbeat,
                2048,
                pool.clone(),
                |mut conn, l: Vec<Lease>| async move {
                    let r = write::heartbeat_batch(&mut conn, &l).await;
                    (Some(conn), r)
                },
            )
        };
        let ends = {
            let (queues, bell) = (queues.clone(), doorbell.clone());
            Batcher::spawn_held(
                "end",
                lanes.end,
                1024,
                pool.clone(),
                move |mut conn, e: Vec<Ending>| {
                    let (queues, bell) = (queues.clone(), bell.clone());
                    async move {
                        let ended = end::finish_batch(&mut conn, &queues, &e).await;
                        if let Ok(ended) = &ended {
                            for (e, applied) in e.iter().zip(ended) {
                                if *applied {
                                    bell.ring(e.run);
                                }
                            }
                        }
                        (Some(conn), ended)
                    }
                },
            )
        };
        Self {
            pool,
            queues,
            starts,
            writes,
            heartbeats,
            ends,
            doorbell,
        }
    }

    /// queued → running (or held, parked, gone), in the next start batch.
    pub async fn start(&self, run: RunId) -> Result<Start, BatchError> {
        self.starts.call(run).await
    }

    /// Appends steps and moves the resume point under the lease, in the next write batch.
    pub async fn write(&self, w: StepWrite) -> Result<Written, BatchError> {
        self.writes.call(w).await
    }

    /// Shows life; answers whether a cancel was requested, or that the lease is gone.
    pub async fn heartbeat(&self, lease: Lease) -> Result<Written, BatchError> {
        self.heartbeats.call(lease).await
    }

    /// running → a final state, with usage, events and the freed slot handed on; false when
    /// the lease was lost (nothing changed).
    pub async fn finish(&self, ending: Ending) -> Result<bool, BatchError> {
        self.ends.call(ending).await
    }

    /// The pool the lifecycle writes with.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The queues it enqueues on.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// The doorbell it rings.
    pub fn doorbell(&self) -> &Doorbell {
        &self.doorbell
    }
}

/// Keys seen lately (for a fixed time): an in-process memory that only picks which way a batch
/// is written, never whether it is right (start batches of agents found full, trigger batches
/// of teams found with a `run.queued` subscriber).
#[derive(Debug)]
pub(crate) struct Recently<K> {
    seen: std::sync::Mutex<std::collections::HashMap<K, std::time::Instant>>,
    lasts: std::time::Duration,
}

impl<K: std::hash::Hash + Eq + Copy> Recently<K> {
    /// Remembers each key for `lasts` after it was marked.
    pub(crate) fn new(lasts: std::time::Duration) -> Self {
        Self {
            seen: Default::default(),
            lasts,
        }
    }

    /// Whether any of `keys` was marked less than `lasts` ago.
    pub(crate) fn any(&self, keys: &[K]) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        !seen.is_empty()
            && keys
                .iter()
                .any(|k| seen.get(k).is_some_and(|t| t.elapsed() < self.lasts))
    }

    /// Marks `keys` as seen now.
    pub(crate) fn mark(&self, keys: impl IntoIterator<Item = K>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 4096 {
            seen.retain(|_, t| t.elapsed() < self.lasts);
        }
        let now = std::time::Instant::now();
        for k in keys {
            seen.insert(k, now);
        }
    }
}
