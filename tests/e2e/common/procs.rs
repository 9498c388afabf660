//! The real `agentq` binary as child processes, for multi-process tests.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_agentq")
}

/// Runs `agentq ARGS` to completion with these environment variables.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("AGENTQ_LOG_FORMAT", "text").env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("agentq runs")
}

/// A free local port for a child to listen on. It comes from 20000-32767, below Linux's
/// ephemeral range (32768-60999), so no outgoing connection (the tests run many at once) can
/// take it as its local end before the child binds; a port is handed out once per process,
/// and only when a bind on it succeeds.
pub fn free_addr() -> SocketAddr {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        // RandomState is seeded afresh each time: a random number without a crate.
        let random = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
        let port = 20000 + (random % 12768) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            handed_out.insert(port);
            return l.local_addr().unwrap();
        }
    }
}

/// A long-running `agentq` child, killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
    pub addr: Option<SocketAddr>,
}

impl Proc {
    /// Starts `agentq ARGS` with the store environment of a test.
    pub fn start(args: &[&str], db_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("DATABASE_URL", db_url)
            .env("REDIS_URL", super::redis_url())
            .env("AGENTQ_REDIS_PREFIX", prefix)
            .env("AGENTQ_LOG_FORMAT", "text")
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG")
                    .map(|_| "info".to_owned())
                    .unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            });
        for (k, v) in extra {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("spawn agentq"),
            addr: None,
        }
    }

    /// Starts `agentq api` on a free port and waits until /healthz answers.
    pub async fn api(db_url: &str, prefix: &str, extra: &[(&str, &str)]) -> Self {
        let addr = free_addr();
        let listen = addr.to_string();
        let mut p = Self::start(&["api", "--listen", &listen], db_url, prefix, extra);
        p.addr = Some(addr);
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await {
                if r.status().is_success() {
                    return p;
                }
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("agentq api exited early: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("agentq api did not become healthy on {addr}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr.expect("an api process"), path)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; the exit code if it came.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
