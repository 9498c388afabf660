//! The suite's own Redis and Postgres, so a fault never touches a shared instance: a private
//! `redis-server` on a free port (AOF on, in a temp dir) and a throwaway Postgres cluster
//! (`initdb` + `pg_ctl` in a temp dir, on a free port). Both can be stopped and started again.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

use crate::common::procs::free_addr;

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "agentq-chaos-{kind}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// A `redis-server` of the suite's own.
pub(super) struct PrivateRedis {
    pub(super) port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(super) async fn start() -> Self {
        let mut redis = Self {
            port: free_addr().port(),
            dir: temp_dir("redis"),
            child: None,
        };
        redis.spawn().await;
        redis
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is on PATH");
        self.child = Some(child);
        let url = format!("redis://127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if let Ok(client) = redis::Client::open(url.as_str()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("private redis-server did not start on {}", self.port);
    }

    /// Stops Redis: SIGTERM lets it flush the AOF, SIGKILL does not.
    async fn stop(&mut self, graceful: bool) {
        if let Some(mut child) = self.child.take() {
            if graceful {
                signal(child.id(), "-TERM").await;
                let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            }
            let _ = child.kill().await;
        }
    }

    /// Down for `down`, then up again with its data (the AOF in the same dir).
    pub(super) async fn restart_with_data(&mut self, down: Duration) {
        self.stop(true).await;
        tokio::time::sleep(down).await;
        self.spawn().await;
    }

    /// Killed, down for `down`, then up again empty (its dir wiped): queued jobs are lost.
    pub(super) async fn restart_empty(&mut self, down: Duration) {
        self.stop(false).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("recreate the redis dir");
        tokio::time::sleep(down).await;
        self.spawn().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn signal(pid: Option<u32>, sig: &str) {
    if let Some(pid) = pid {
        let _ = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .await;
    }
}

/// The programs the suite needs and cannot find.
pub(super) fn missing_programs() -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = ["initdb", "pg_ctl", "postgres"]
        .into_iter()
        .filter(|p| find_pg_program(p).is_none())
        .collect();
    if on_path("redis-server").is_none() {
        missing.push("redis-server");
    }
    missing
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn pg_program(name: &str) -> PathBuf {
    find_pg_program(name)
        .unwrap_or_else(|| panic!("{name} not found on PATH or under /usr/lib/postgresql/*/bin"))
}

/// A Postgres program: on PATH, else under Debian's `/usr/lib/postgresql/<version>/bin`
/// (what scripts/ensure-services installs), newest version first.
fn find_pg_program(name: &str) -> Option<PathBuf> {
    if let Some(p) = on_path(name) {
        return Some(p);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    versions.sort_by_key(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command running a Postgres program. initdb refuses to run as root (and postgres will
/// not start as root), so as root it runs as the `postgres` user, in a dir that user owns.
fn pg_command(name: &str) -> Command {
    let program = pg_program(name);
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

async fn must(cmd: &mut Command, what: &str) {
    let out = cmd.output().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway Postgres cluster of the suite's own.
pub(super) struct PrivatePostgres {
    pub(super) port: u16,
    dir: PathBuf,
}

/// Enough for every agentq process here plus the suite, few enough to exhaust quickly.
pub(super) const MAX_CONNECTIONS: u32 = 60;

impl PrivatePostgres {
    pub(super) async fn start() -> Self {
        let dir = temp_dir("pg");
        if is_root() {
            must(
                Command::new("chown").arg("-R").arg("postgres").arg(&dir),
                "chown the cluster dir to postgres",
            )
            .await;
        }
        must(
            pg_command("initdb")
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
                .arg("--no-sync"),
            "initdb",
        )
        .await;
        let pg = Self {
            port: free_addr().port(),
            dir,
        };
        pg.up().await;
        pg
    }

    pub(super) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    async fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={MAX_CONNECTIONS} \
             -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        must(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
            "pg_ctl start",
        )
        .await;
    }

    async fn down(data: &Path) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .await;
    }

    /// Stopped like a crash (`-m immediate`: recovery from WAL at start), down for `down`.
    pub(super) async fn restart(&self, down: Duration) {
        Self::down(&self.data()).await;
        tokio::time::sleep(down).await;
        self.up().await;
    }

    /// Takes every free connection (as another client would) and holds them for `hold`.
    pub(super) async fn exhaust(&self, hold: Duration) -> usize {
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let connect = PgConnection::connect(&self.url("postgres"));
            match tokio::time::timeout(Duration::from_secs(2), connect).await {
                Ok(Ok(c)) => held.push(c),
                _ => break,
            }
        }
        let n = held.len();
        tokio::time::sleep(hold).await;
        for c in held {
            let _ = c.close().await;
        }
        n
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let dir = self.dir.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(Self::down(&data));
            }
            let _ = std::fs::remove_dir_all(dir);
        })
        .join();
    }
}
