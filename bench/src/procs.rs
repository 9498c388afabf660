//! What an agentq process holds: its memory (VmRSS / VmHWM from /proc/<pid>/status) and its
//! Postgres connections. agentq sets no `application_name`, so a backend of
//! `pg_stat_activity` is tied to a process by its client port: the local port of a TCP
//! socket to the Postgres port that the process has open (/proc/<pid>/fd → socket inode →
//! /proc/net/tcp{,6}). The remote port matters: the same ephemeral port may be in use at
//! once towards other destinations (e.g. a worker's HTTP connections).

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use sqlx::{PgConnection, Row};

/// Resident and peak resident memory of a process, in kB.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Memory {
    pub(crate) rss_kb: u64,
    pub(crate) hwm_kb: u64,
}

impl Memory {
    pub(crate) fn read(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    /// From the text of /proc/<pid>/status.
    fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        };
        Some(Self {
            rss_kb: field("VmRSS:")?,
            hwm_kb: field("VmHWM:").unwrap_or(0),
        })
    }
}

/// Backends of one database, by the agentq process that holds them.
pub(crate) struct Connections {
    /// `role#pid` → (backends, of them not idle).
    pub(crate) by_process: BTreeMap<String, (u64, u64)>,
    /// Backends no spawned process owns (the bench's own, other clients), by application_name.
    pub(crate) others: BTreeMap<String, u64>,
}

/// Reads `pg_stat_activity` for `db_name` over `admin` and attributes each client backend to
/// one of `pids` (role, pid) by its client port; `pg_port` is the server's port.
pub(crate) async fn pg_connections(
    admin: &mut PgConnection,
    db_name: &str,
    pg_port: u16,
    pids: &[(String, u32)],
) -> anyhow::Result<Connections> {
    let rows = sqlx::query(
        "SELECT client_port, coalesce(application_name, ''), coalesce(state, '')
         FROM pg_stat_activity
         WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .bind(db_name)
    .fetch_all(&mut *admin)
    .await
    .context("reading pg_stat_activity")?;
    let owner = port_owners(pids, pg_port);
    let mut out = Connections {
        by_process: pids
            .iter()
            .map(|(role, pid)| (format!("{role}#{pid}"), (0, 0)))
            .collect(),
        others: BTreeMap::new(),
    };
    for r in rows {
        let port: Option<i32> = r.try_get(0)?;
        let app: String = r.try_get(1)?;
        let state: String = r.try_get(2)?;
        let key = port.and_then(|p| owner.get(&(p as u16)));
        match key {
            Some(k) => {
                let e = out.by_process.entry(k.clone()).or_default();
                e.0 += 1;
                if state != "idle" {
                    e.1 += 1;
                }
            }
            None => {
                let label = if app.is_empty() { "(no name)" } else { &app };
                *out.others.entry(label.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(out)
}

/// Local TCP port of a connection to `pg_port` → `role#pid` of the process holding it.
fn port_owners(pids: &[(String, u32)], pg_port: u16) -> HashMap<u16, String> {
    let ports = local_ports_by_inode(pg_port);
    let mut out = HashMap::new();
    for (role, pid) in pids {
        for inode in socket_inodes(*pid) {
            if let Some(port) = ports.get(&inode) {
                out.insert(*port, format!("{role}#{pid}"));
            }
        }
    }
    out
}

/// Socket inodes a process has open.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let s = l.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Socket inode → local port of the sockets connected to `remote_port`, from /proc/net/tcp
/// and tcp6.
fn local_ports_by_inode(remote_port: u16) -> HashMap<u64, u16> {
    let mut out = HashMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        out.extend(parse_net_tcp(&text, remote_port));
    }
    out
}

/// The rows of a /proc/net/tcp table whose remote port is `remote_port`, as
/// (socket inode, local port).
fn parse_net_tcp(text: &str, remote_port: u16) -> Vec<(u64, u16)> {
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
            if port_of(remote)? != remote_port {
                return None;
            }
            Some((inode.parse().ok()?, port_of(local)?))
        })
        .collect()
}

/// AGENTQ_DB_MAX_CONNECTIONS as the spawned processes see it (they inherit the bench's
/// environment), or agentq's default, 10.
pub(crate) fn db_budget() -> u64 {
    std::env::var("AGENTQ_DB_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(10)
}

/// `nproc`, total memory and CPU model of this machine, for the report.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores (nproc), {mem_gib:.1} GiB memory, {model}")
}

/// The command that reproduces this run: `cargo run --release -p bench -- <args>`.
pub(crate) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -p bench -- {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_fields_are_read_from_proc_status() {
        let m = Memory::parse("Name:\tagentq\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n").unwrap();
        assert_eq!(m.rss_kb, 102_400);
        assert_eq!(m.hwm_kb, 204_800);
        assert!(Memory::parse("Name:\tkthreadd\n").is_none());
    }

    #[test]
    fn only_sockets_towards_the_port_are_kept() {
        // 127.0.0.1:40000 -> 127.0.0.1:5432 (0x1538), and the same local port towards 8080.
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 111 1 0 20 4 30 10 -1
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 20 4 30 10 -1
   2: 0100007F:1538 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 333 1 0 20 4 30 10 -1
";
        assert_eq!(parse_net_tcp(text, 5432), vec![(111, 40_000)]);
    }
}
