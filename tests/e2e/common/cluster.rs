//! A real Redis Cluster for tests: three masters and three replicas (`redis-server
//! --cluster-enabled yes` on free ports in a temp dir, joined with `redis-cli --cluster
//! create`), killed and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

/// Why a cluster cannot be started here (`redis-server` or `redis-cli` missing), if so.
pub fn unavailable() -> Option<String> {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

impl RedisCluster {
    /// Starts 3 masters + 3 replicas; `node_timeout` is `cluster-node-timeout` (how long a
    /// master may be unreachable before its replica takes over).
    pub fn start(node_timeout: Duration) -> Self {
        let dir = std::env::temp_dir().join(format!("agentq-cluster-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            ports: Vec::new(),
            children: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            // Free ports are bound and released, so another test may take one first: a node
            // that does not come up is started again on other ports.
            let mut started = None;
            for _ in 0..5 {
                let (port, mut child) = cluster.spawn_node(node_timeout);
                // Ours, not another test's node on a reused port: it reports our directory.
                let dir = cluster.dir.to_string_lossy().into_owned();
                if cluster.answers(port, "CONFIG GET dir", &dir, Duration::from_secs(5))
                    && matches!(child.try_wait(), Ok(None))
                {
                    started = Some((port, child));
                    break;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            let (port, child) = started.expect("a cluster node starts within 5 tries");
            cluster.ports.push(port);
            cluster.children.push(Some(child));
        }
        let ports = cluster.ports.clone();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for port in &ports {
            cluster.wait_for(
                *port,
                "CLUSTER INFO",
                "cluster_state:ok",
                Duration::from_secs(20),
            );
        }
        cluster
    }

    /// Starts one node on a free port (and a free cluster bus port); it may fail to bind.
    fn spawn_node(&self, node_timeout: Duration) -> (u16, Child) {
        let port = super::procs::free_addr().port();
        // The cluster bus port defaults to port + 10000, which may be taken or out of range.
        let bus = super::procs::free_addr().port();
        let conf = self.dir.join(format!("nodes-{port}.conf"));
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--cluster-port", &bus.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", conf.to_str().unwrap()])
            .args([
                "--cluster-node-timeout",
                &node_timeout.as_millis().to_string(),
            ])
            // A replica always tries to take over, however long its master was silent.
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        (port, child)
    }

    /// Whether `redis-cli -p PORT ARGS` prints `want` within `timeout`.
    fn answers(&self, port: u16, args: &str, want: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.cli(port, args).contains(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// `redis+cluster://` naming one node (the rest are found from it).
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.ports[0])
    }

    /// Runs `redis-cli -p PORT ARGS`; its stdout.
    pub fn cli(&self, port: u16, args: &str) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args.split_whitespace())
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, port: u16, args: &str, want: &str, timeout: Duration) {
        assert!(
            self.answers(port, args, want, timeout),
            "node {port}: no {want:?} from {args} within {timeout:?}"
        );
    }

    /// Ports of the nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.ports
            .iter()
            .copied()
            .filter(|p| self.is_alive(*p) && self.cli(*p, "ROLE").starts_with("master"))
            .collect()
    }

    fn is_alive(&self, port: u16) -> bool {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        self.children[i].is_some()
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).unwrap();
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub fn wait_ok(&self, timeout: Duration) {
        for (i, port) in self.ports.iter().enumerate() {
            if self.children[i].is_some() {
                self.wait_for(*port, "CLUSTER INFO", "cluster_state:ok", timeout);
            }
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
