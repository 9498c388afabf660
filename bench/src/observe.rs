//! Where the time goes during a phase: CPU seconds by component (from /proc), and what the
//! bench database's backends are doing (sampled from `pg_stat_activity`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{PgConnection, Row};

use crate::load::round;
use crate::stack::Stack;

/// Linux reports process CPU time in clock ticks of USER_HZ, 100 on every mainstream build.
const TICKS_PER_S: f64 = 100.0;

/// CPU seconds used so far, by component, and by the whole machine.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cpu {
    by_group: BTreeMap<String, f64>,
    machine_busy: f64,
    machine_total: f64,
    at: Option<Instant>,
}

/// CPU used between two [`Cpu`] readings.
#[derive(Clone, Debug, Default)]
pub(crate) struct CpuUse {
    /// Seconds of CPU by component: api, workers, postgres, redis, bench, other.
    pub(crate) by_group: BTreeMap<String, f64>,
    /// Wall seconds between the readings.
    pub(crate) seconds: f64,
    /// Share of all cores that was busy.
    pub(crate) machine_busy: f64,
    pub(crate) cores: usize,
}

impl Cpu {
    /// Reads the counters now. agentq processes are found through the stack, Postgres and
    /// Redis by process name (every Postgres backend counts, whatever its database).
    pub(crate) fn read(stack: &Stack) -> Self {
        let mut by_group = BTreeMap::new();
        for (role, pid) in stack.pids() {
            let group = if role.starts_with("api") {
                "api"
            } else if role.starts_with("worker") {
                "workers"
            } else {
                "agentq other"
            };
            *by_group.entry(group.to_owned()).or_default() += process_cpu(pid).unwrap_or(0.0);
        }
        *by_group.entry("bench".to_owned()).or_default() +=
            process_cpu(std::process::id()).unwrap_or(0.0);
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                let group = match comm.trim() {
                    "postgres" => "postgres",
                    "redis-server" => "redis",
                    _ => continue,
                };
                *by_group.entry(group.to_owned()).or_default() += process_cpu(pid).unwrap_or(0.0);
            }
        }
        let (machine_busy, machine_total) = machine_cpu().unwrap_or((0.0, 0.0));
        Self {
            by_group,
            machine_busy,
            machine_total,
            at: Some(Instant::now()),
        }
    }

    /// What was used since `earlier`; "other" is machine time no component accounts for
    /// (other programs, the kernel, processes that ended in between).
    pub(crate) fn since(&self, earlier: &Cpu) -> CpuUse {
        let mut by_group: BTreeMap<String, f64> = self
            .by_group
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    (v - earlier.by_group.get(k).copied().unwrap_or(0.0)).max(0.0),
                )
            })
            .collect();
        let busy = self.machine_busy - earlier.machine_busy;
        let total = self.machine_total - earlier.machine_total;
        let ours: f64 = by_group.values().sum();
        by_group.insert("other".to_owned(), (busy - ours).max(0.0));
        let seconds = match (self.at, earlier.at) {
            (Some(a), Some(b)) => a.duration_since(b).as_secs_f64(),
            _ => 0.0,
        };
        CpuUse {
            by_group,
            seconds,
            machine_busy: if total > 0.0 { busy / total } else { 0.0 },
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl CpuUse {
    /// `api 1.2 s, workers ...` and the machine's busy share.
    pub(crate) fn line(&self, per: f64, per_label: &str) -> String {
        let order = [
            "api",
            "workers",
            "postgres",
            "redis",
            "bench",
            "agentq other",
            "other",
        ];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|k| self.by_group.get(*k).map(|v| (k, v)))
            .filter(|(k, v)| **v > 0.0 || **k != "agentq other")
            .map(|(k, v)| format!("{k} {:.2}", v / per))
            .collect();
        format!(
            "CPU s {per_label}: {}; machine {:.0}% busy over {:.1} s ({} cores)",
            parts.join(", "),
            self.machine_busy * 100.0,
            self.seconds,
            self.cores
        )
    }

    pub(crate) fn to_json(&self) -> Value {
        let by: serde_json::Map<String, Value> = self
            .by_group
            .iter()
            .map(|(k, v)| (k.clone(), json!(round(*v, 3))))
            .collect();
        json!({
            "cpu_seconds": by,
            "wall_seconds": round(self.seconds, 3),
            "machine_busy": round(self.machine_busy, 3),
            "cores": self.cores,
        })
    }
}

/// utime + stime of a process, in seconds.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) may hold spaces; fields after it are counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

/// Busy and total CPU seconds of the whole machine (all cores) from /proc/stat.
fn machine_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is already in user).
    let get = |i: usize| v.get(i).copied().unwrap_or(0.0);
    let idle = get(3) + get(4);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some((busy / TICKS_PER_S, (busy + idle) / TICKS_PER_S))
}

/// Samples `pg_stat_activity` for one database until stopped.
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, BTreeMap<String, u64>)>,
}

/// Backends of the database by what they were doing (state or wait event, and statement),
/// averaged over the samples.
#[derive(Clone, Debug, Default)]
pub(crate) struct Activity {
    pub(crate) samples: u64,
    /// Average number of backends in each state per sample.
    pub(crate) average: BTreeMap<String, f64>,
}

impl Sampler {
    /// Starts sampling every `every` over `conn` (a connection to another database).
    pub(crate) fn start(mut conn: PgConnection, db_name: String, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut samples = 0u64;
            let mut counts = BTreeMap::<String, u64>::new();
            while !flag.load(Ordering::Relaxed) {
                let rows = sqlx::query(
                    "SELECT CASE
                         WHEN state = 'active' AND wait_event IS NULL THEN 'on CPU'
                         WHEN state = 'active' THEN 'waiting ' || wait_event_type || ':' || wait_event
                         ELSE state END,
                         query
                     FROM pg_stat_activity
                     WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                       AND state IS DISTINCT FROM 'idle'",
                )
                .bind(&db_name)
                .fetch_all(&mut conn)
                .await;
                if let Ok(rows) = rows {
                    samples += 1;
                    for r in rows {
                        let state: String = r.try_get(0).unwrap_or_default();
                        let query: Option<String> = r.try_get(1).unwrap_or_default();
                        let label =
                            format!("{state} [{}]", short_sql(query.as_deref().unwrap_or("")));
                        *counts.entry(label).or_default() += 1;
                    }
                }
                tokio::time::sleep(every).await;
            }
            (samples, counts)
        });
        Self { stop, task }
    }

    pub(crate) async fn finish(self) -> Activity {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, counts) = self.task.await.unwrap_or_default();
        let average = counts
            .into_iter()
            .map(|(k, v)| (k, v as f64 / samples.max(1) as f64))
            .collect();
        Activity { samples, average }
    }
}

/// A statement in a few words: the agentq function it calls, or its first words.
fn short_sql(sql: &str) -> String {
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(i) = flat.find("agentq_") {
        let name: String = flat[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        return format!("{name}()");
    }
    let mut out: String = flat.chars().take(44).collect();
    if flat.chars().count() > 44 {
        out.push('…');
    }
    out
}

impl Activity {
    /// A title, then `count  state [statement]` lines, largest first (top 8).
    pub(crate) fn lines(&self) -> (String, Vec<String>) {
        let mut v: Vec<(&String, &f64)> = self.average.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        let rows = v
            .iter()
            .filter(|(_, n)| **n >= 0.01)
            .take(8)
            .map(|(k, n)| format!("{n:>8.2}  {k}"))
            .collect();
        (
            format!(
                "Postgres backends not idle, average count per sample ({} samples, top 8):",
                self.samples
            ),
            rows,
        )
    }

    /// The samples and the top 8 states, as JSON.
    pub(crate) fn to_json(&self) -> Value {
        let mut v: Vec<(&String, &f64)> = self.average.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        let top: Vec<Value> = v
            .iter()
            .take(8)
            .map(|(k, n)| json!({"state": k, "average_backends": round(**n, 3)}))
            .collect();
        json!({"samples": self.samples, "top": top})
    }
}
