//! A TCP proxy between agentq and its Redis that can add latency: every chunk from agentq is
//! held for a random time between `min` and `max` before it is passed on (a delay line, so
//! pipelined commands stay pipelined). It connects to Redis afresh per connection, so it
//! outlives Redis restarts; a connection whose Redis side closes is closed too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub(super) struct DelayProxy {
    pub(super) addr: SocketAddr,
    /// (min << 32) | max, in milliseconds; 0 is no delay.
    range: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub(super) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let range = Arc::new(AtomicU64::new(0));
        let shared = range.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let range = shared.clone();
                tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        pipe(inbound, outbound, range).await;
                    }
                });
            }
        });
        Self { addr, range, task }
    }

    /// From now on, each chunk to Redis waits `min..=max`.
    pub(super) fn set_delay(&self, min: Duration, max: Duration) {
        let (lo, hi) = (min.as_millis() as u64, max.as_millis() as u64);
        self.range.store((lo << 32) | hi, Ordering::Relaxed);
    }

    pub(super) fn clear_delay(&self) {
        self.range.store(0, Ordering::Relaxed);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pick(range: u64) -> Duration {
    let (lo, hi) = (range >> 32, range & 0xffff_ffff);
    if hi == 0 {
        return Duration::ZERO;
    }
    let spread = hi.saturating_sub(lo) + 1;
    let noise =
        std::hash::BuildHasher::build_hasher(&std::collections::hash_map::RandomState::new());
    let noise = std::hash::Hasher::finish(&noise);
    Duration::from_millis(lo + noise % spread)
}

async fn pipe(inbound: TcpStream, outbound: TcpStream, range: Arc<AtomicU64>) {
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = outbound.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read_client = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match in_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = Instant::now() + pick(range.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let to_redis = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if out_w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let from_redis = async move {
        let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
    };
    // Whichever side ends first ends the connection.
    tokio::select! {
        _ = async { tokio::join!(read_client, to_redis) } => {}
        _ = from_redis => {}
    }
}
