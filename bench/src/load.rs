//! The load generators and their statistics: closed loop (N tasks sharing one HTTP client
//! send requests back to back, for a fixed time or a fixed count) and open loop (requests
//! sent at a fixed rate whatever the answers); every latency is recorded, and a [`Summary`]
//! (requests, errors, req/s, p50/p90/p99/max) is computed, printed as a table row and as JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder};
use serde_json::{json, Value};

/// Builds one request; called once per request by every task.
pub(crate) type MakeRequest = Arc<dyn Fn(&Client) -> RequestBuilder + Send + Sync>;

/// The HTTP client every load phase uses: keep-alive, no Nagle, a generous timeout.
pub(crate) fn client(concurrency: usize) -> reqwest::Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()
}

/// What one task saw.
#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// Sends requests from `concurrency` tasks until `duration` has passed; every request that
/// started before the deadline is waited for and counted.
pub(crate) async fn run(
    client: &Client,
    concurrency: usize,
    duration: Duration,
    make: &MakeRequest,
) -> Summary {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let make = Arc::clone(make);
            tokio::spawn(async move {
                let mut out = TaskResult::default();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let failure = send(make(&client)).await;
                    out.latencies_us.push(t.elapsed().as_micros() as u64);
                    if let Some(why) = failure {
                        out.errors += 1;
                        out.first_error.get_or_insert(why);
                    }
                }
                out
            })
        })
        .collect();
    collect(tasks, started).await
}

/// Sends exactly `total` requests from `concurrency` tasks, back to back.
pub(crate) async fn run_count(
    client: &Client,
    concurrency: usize,
    total: u64,
    make: &MakeRequest,
) -> Summary {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let make = Arc::clone(make);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut out = TaskResult::default();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let failure = send(make(&client)).await;
                    out.latencies_us.push(t.elapsed().as_micros() as u64);
                    if let Some(why) = failure {
                        out.errors += 1;
                        out.first_error.get_or_insert(why);
                    }
                }
                out
            })
        })
        .collect();
    collect(tasks, started).await
}

/// Open loop: sends `rate` requests per second for `duration`, each at its scheduled time
/// whether or not earlier ones were answered. Latency is counted from the scheduled time, so
/// a sender that falls behind shows up in the figures instead of hiding (no coordinated
/// omission).
pub(crate) async fn open_loop(
    client: &Client,
    rate: f64,
    duration: Duration,
    make: &MakeRequest,
) -> Summary {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let started = Instant::now();
    let tokio_start = tokio::time::Instant::from_std(started);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(tokio_start + offset).await;
        let request = make(client);
        let due = started + offset;
        tasks.push(tokio::spawn(async move {
            let failure = send(request).await;
            let mut out = TaskResult::default();
            out.latencies_us.push(due.elapsed().as_micros() as u64);
            if let Some(why) = failure {
                out.errors = 1;
                out.first_error = Some(why);
            }
            out
        }));
    }
    collect(tasks, started).await
}

/// Waits for every task and sums up what they saw.
async fn collect(tasks: Vec<tokio::task::JoinHandle<TaskResult>>, started: Instant) -> Summary {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for result in futures::future::join_all(tasks).await {
        match result {
            Ok(r) => {
                latencies.extend(r.latencies_us);
                errors += r.errors;
                first_error = first_error.or(r.first_error);
            }
            Err(e) => {
                errors += 1;
                first_error = first_error.or(Some(format!("load task failed: {e}")));
            }
        }
    }
    Summary::new(latencies, errors, first_error, started.elapsed())
}

/// Sends one request and reads its body; `Some(reason)` if it failed.
async fn send(request: RequestBuilder) -> Option<String> {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status.is_success() => None,
                Ok(body) => Some(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )),
                Err(e) => Some(format!("reading body: {e}")),
            }
        }
        Err(e) => Some(format!("transport: {e}")),
    }
}

/// The figures of one load phase. Latencies are in milliseconds.
#[derive(Clone, Debug)]
pub(crate) struct Summary {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// The first failure seen, to tell why there were errors.
    pub(crate) first_error: Option<String>,
}

impl Summary {
    fn new(
        mut latencies_us: Vec<u64>,
        errors: u64,
        first_error: Option<String>,
        elapsed: Duration,
    ) -> Self {
        latencies_us.sort_unstable();
        let requests = latencies_us.len() as u64;
        let seconds = elapsed.as_secs_f64();
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            requests,
            errors,
            seconds,
            rps: if seconds > 0.0 {
                requests as f64 / seconds
            } else {
                0.0
            },
            p50_ms: ms(percentile(&latencies_us, 50.0)),
            p90_ms: ms(percentile(&latencies_us, 90.0)),
            p99_ms: ms(percentile(&latencies_us, 99.0)),
            max_ms: ms(latencies_us.last().copied().unwrap_or(0)),
            first_error,
        }
    }

    /// The header line matching [`Summary::row`].
    pub(crate) fn header(label_width: usize) -> String {
        format!(
            "{:<label_width$} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8}",
            "endpoint", "requests", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )
    }

    /// One table row.
    pub(crate) fn row(&self, label: &str, label_width: usize) -> String {
        format!(
            "{label:<label_width$} {:>9} {:>7} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            self.requests,
            self.errors,
            self.rps,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms
        )
    }

    /// The figures as a JSON object (latencies rounded to microseconds).
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p90_ms": round(self.p90_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "max_ms": round(self.max_ms, 3),
        })
    }
}

/// p50/p90/p99/max of values measured elsewhere (e.g. from Postgres timestamps), in ms.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Spread {
    pub(crate) count: usize,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// The spread of `values` (any order; NaNs are dropped).
    pub(crate) fn of(mut values: Vec<f64>) -> Self {
        values.retain(|v| !v.is_nan());
        values.sort_unstable_by(f64::total_cmp);
        let pick = |p: f64| {
            if values.is_empty() {
                return 0.0;
            }
            let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Self {
            count: values.len(),
            p50: pick(50.0),
            p90: pick(90.0),
            p99: pick(99.0),
            max: values.last().copied().unwrap_or(0.0),
        }
    }

    /// As JSON, rounded to microseconds.
    pub(crate) fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": round(self.p50, 3),
            "p90_ms": round(self.p90, 3),
            "p99_ms": round(self.p99, 3),
            "max_ms": round(self.max, 3),
        })
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds to `digits` decimals.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn spread_of_unsorted_values() {
        let s = Spread::of((1..=100).rev().map(f64::from).collect());
        assert_eq!(s.count, 100);
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        assert_eq!(Spread::of(Vec::new()).p99, 0.0);
    }

    #[test]
    fn summary_counts_and_rates() {
        let s = Summary::new(
            vec![3000, 1000, 2000, 4000],
            1,
            None,
            Duration::from_secs(2),
        );
        assert_eq!(s.requests, 4);
        assert_eq!(s.errors, 1);
        assert_eq!(s.rps, 2.0);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.max_ms, 4.0);
    }
}
