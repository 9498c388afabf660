//! A throwaway agentq stack for one benchmark run: a fresh Postgres database, a Redis key
//! prefix of its own, the real `agentq` binary run for admin commands (`migrate`, `teams`,
//! `keys`) and spawned as long-lived processes (`api`, and `worker` or `scheduler` for later
//! scenarios). [`Stack::shutdown`] kills the processes, drops the database and deletes the
//! Redis keys; scenarios never clean up themselves.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use reqwest::Url;
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// How long a spawned `agentq api` may take to answer /healthz.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests per minute and per day of keys without a limit of their own, in every spawned
/// `agentq api`: high enough that no benchmark is refused (the default, 6000 a minute, is
/// reached in seconds).
pub(crate) const BENCH_RATE_LIMIT: &str = "1000000000";
/// How long a killed process may take to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the `agentq` binary is looked for: next to this program (`<target>/release/`, which
/// follows CARGO_TARGET_DIR when cargo built both), then `$CARGO_TARGET_DIR/release/agentq`.
fn binary_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("agentq"));
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        out.push(PathBuf::from(dir).join("release").join("agentq"));
    }
    out.push(PathBuf::from("target/release/agentq"));
    out
}

/// Where the `agentq` binary should be (the first place looked at).
pub(crate) fn expected_binary_path() -> PathBuf {
    binary_candidates()
        .into_iter()
        .next()
        .unwrap_or_else(|| PathBuf::from("target/release/agentq"))
}

/// The `agentq` binary, if it has been built.
pub(crate) fn agentq_binary() -> Option<PathBuf> {
    binary_candidates().into_iter().find(|p| p.is_file())
}

/// A long-lived agentq process and the file its output goes to.
struct Process {
    role: String,
    child: Child,
    log: PathBuf,
    /// Killed on purpose by [`Stack::stop`].
    stopped: bool,
}

/// The database, Redis prefix and processes of one benchmark run.
pub(crate) struct Stack {
    binary: PathBuf,
    admin_url: String,
    db_name: String,
    database_url: String,
    redis_url: String,
    redis_prefix: String,
    processes: Vec<Process>,
}

impl Stack {
    /// Creates a fresh database named `agentq_bench_<unix-ts>_<pid>`.
    pub(crate) async fn create(binary: PathBuf) -> anyhow::Result<Self> {
        let admin_url = env_or("BENCH_PG_URL", DEFAULT_PG_URL);
        let redis_url = env_or("BENCH_REDIS_URL", DEFAULT_REDIS_URL);
        let ts = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let db_name = format!("agentq_bench_{ts}_{}", std::process::id());
        let mut url = Url::parse(&admin_url).context("BENCH_PG_URL is not a URL")?;
        url.set_path(&format!("/{db_name}"));
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {admin_url}"))?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{db_name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {db_name}"))?;
        let _ = conn.close().await;
        Ok(Self {
            binary,
            admin_url,
            database_url: url.to_string(),
            redis_prefix: db_name.replace('_', "-"),
            db_name,
            redis_url,
            processes: Vec::new(),
        })
    }

    /// The database URL agentq uses (the throwaway database).
    pub(crate) fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The database's name.
    pub(crate) fn db_name(&self) -> &str {
        &self.db_name
    }

    /// The Postgres URL the stack was made from (a database every process may connect to).
    pub(crate) fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The Redis URL agentq uses.
    pub(crate) fn redis_url(&self) -> &str {
        &self.redis_url
    }

    /// The Redis key prefix of the stack; every key under `<prefix>:` is deleted at the end.
    pub(crate) fn redis_prefix(&self) -> &str {
        &self.redis_prefix
    }

    /// `agentq` with the stack's settings in its environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("AGENTQ_REDIS_PREFIX", &self.redis_prefix)
            .env("AGENTQ_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `agentq <args>` to its end and returns its stdout.
    pub(crate) async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(args)
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        if !out.status.success() {
            bail!(
                "agentq {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Migrates the database, creates team `bench` and a key with every scope; returns the key.
    pub(crate) async fn bootstrap_key(&self) -> anyhow::Result<String> {
        self.run(&["migrate"]).await?;
        self.run(&["teams", "create", "bench"]).await?;
        let out = self
            .run(&[
                "keys", "create", "--team", "bench", "--name", "bench", "--scopes", "all",
            ])
            .await?;
        out.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("agentq keys create printed no key"))
    }

    /// Spawns `agentq <args>` in the background; its stdout and stderr go to a log file.
    /// `env` is added to the stack's settings and overrides them (`DATABASE_URL`,
    /// `REDIS_URL`, `AGENTQ_REDIS_PREFIX`, `RUST_LOG`, ...).
    pub(crate) fn spawn(
        &mut self,
        role: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let n = self.processes.iter().filter(|p| p.role == role).count();
        let log = std::env::temp_dir().join(format!("{}-{role}{n}.log", self.db_name));
        let file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = self
            .command(args)
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.processes.push(Process {
            role: role.to_owned(),
            child,
            log,
            stopped: false,
        });
        Ok(())
    }

    /// Spawns `agentq api` on a free local port and waits until /healthz answers; returns
    /// the base URL (`http://127.0.0.1:<port>`).
    pub(crate) async fn spawn_api(&mut self) -> anyhow::Result<String> {
        self.spawn_api_with_env("api", &[]).await
    }

    /// [`Stack::spawn_api`] under another role name and with extra environment variables.
    pub(crate) async fn spawn_api_with_env(
        &mut self,
        role: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen = format!("127.0.0.1:{port}");
        // Rate limits stay enforced (their Redis cost is part of every request), with a
        // default limit no benchmark reaches; `env` may override it.
        let mut all: Vec<(&str, &str)> = vec![
            ("AGENTQ_DEFAULT_RATE_LIMIT_PER_MINUTE", BENCH_RATE_LIMIT),
            ("AGENTQ_DEFAULT_RATE_LIMIT_PER_DAY", BENCH_RATE_LIMIT),
        ];
        all.extend_from_slice(env);
        self.spawn(role, &["api", "--listen", &listen], &all)?;
        let base = format!("http://{listen}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(base);
                }
            }
            let process = self.processes.last_mut().expect("just spawned");
            if let Some(status) = process.child.try_wait()? {
                bail!(
                    "agentq api exited ({status}) before answering /healthz:\n{}",
                    tail(&process.log, 20)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "agentq api did not answer {base}/healthz within {READY_TIMEOUT:?}:\n{}",
                    tail(&process.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first spawned process that has exited, with the end of its log: a benchmark
    /// waiting on work must not wait for a process that is gone.
    pub(crate) fn exited(&mut self) -> Option<String> {
        for p in &mut self.processes {
            if p.stopped {
                continue;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(format!(
                    "agentq {} exited ({status}); end of {}:\n{}",
                    p.role,
                    p.log.display(),
                    tail(&p.log, 20)
                ));
            }
        }
        None
    }

    /// Kills the processes of one role (SIGKILL; meant for idle processes between phases).
    /// They stay listed, so their logs are still reported at shutdown.
    pub(crate) async fn stop(&mut self, role: &str) {
        for p in self.processes.iter_mut().filter(|p| p.role == role) {
            p.stopped = true;
            let _ = p.child.start_kill();
            let _ = tokio::time::timeout(KILL_TIMEOUT, p.child.wait()).await;
        }
    }

    /// Role and pid of every running process.
    pub(crate) fn pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .filter(|p| !p.stopped)
            .filter_map(|p| p.child.id().map(|id| (p.role.clone(), id)))
            .collect()
    }

    /// Role and log file of every process spawned so far.
    pub(crate) fn logs(&self) -> Vec<(String, PathBuf)> {
        self.processes
            .iter()
            .map(|p| (p.role.clone(), p.log.clone()))
            .collect()
    }

    /// Kills the processes, drops the database, deletes the Redis keys. Problems are
    /// reported on stderr, never returned: cleanup does as much as it can.
    pub(crate) async fn shutdown(mut self) {
        for mut p in std::mem::take(&mut self.processes) {
            let _ = p.child.start_kill();
            if tokio::time::timeout(KILL_TIMEOUT, p.child.wait())
                .await
                .is_err()
            {
                eprintln!("warning: agentq {} did not exit after SIGKILL", p.role);
            }
            match std::fs::metadata(&p.log) {
                Ok(m) if m.len() == 0 => {
                    let _ = std::fs::remove_file(&p.log);
                }
                Ok(_) => eprintln!("note: agentq {} logged to {}", p.role, p.log.display()),
                Err(_) => {}
            }
        }
        if let Err(e) = self.drop_database().await {
            eprintln!("warning: cannot drop database {}: {e:#}", self.db_name);
        }
        if let Err(e) = self.delete_redis_keys().await {
            eprintln!(
                "warning: cannot delete Redis keys {}:*: {e:#}",
                self.redis_prefix
            );
        }
    }

    async fn drop_database(&self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.db_name
        ))
        .execute(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Deletes every key under the stack's prefix (SCAN + DEL; other keys are untouched).
    async fn delete_redis_keys(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let pattern = format!("{}:*", self.redis_prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The last `n` lines of a log file, for error messages.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
