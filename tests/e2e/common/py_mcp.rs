//! A real third-party MCP server for the tests: `tests/e2e/fixtures/mcp_server.py`, built on
//! the PyPI `mcp` package (installed by scripts/ensure-tools), serving five tools over
//! Streamable HTTP (`/mcp`) and the legacy SSE transport (`/sse`), checking a token.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::procs::free_addr;

/// The tools the fixture serves, in its order (two per `tools/list` page).
pub const TOOLS: [&str; 5] = ["add", "echo", "shout", "fail", "weather"];

/// The running Python server, killed on drop.
pub struct PyMcp {
    child: Child,
    pub port: u16,
    pub token: String,
}

impl PyMcp {
    /// Checks `Authorization: Bearer <token>`.
    pub fn start(token: &str) -> Self {
        Self::launch(token, None)
    }

    /// Checks `<header>: <token>` instead.
    pub fn start_with_header(token: &str, header: &str) -> Self {
        Self::launch(token, Some(header))
    }

    fn launch(token: &str, header: Option<&str>) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/fixtures/mcp_server.py"
        );
        let port = free_addr().port();
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", &port.to_string(), "--token", token])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(h) = header {
            cmd.args(["--header-name", h]);
        }
        let mut child = cmd
            .spawn()
            .expect("python3 runs (scripts/ensure-tools installs the `mcp` package)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == "READY" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("the Python MCP server did not start (is the PyPI `mcp` 2.x package installed? run scripts/ensure-tools)");
        }
        Self {
            child,
            port,
            token: token.to_owned(),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// How many `tools/list` and `tools/call` requests it has answered.
    pub async fn stats(&self) -> (u64, u64) {
        let v = self.raw_stats().await;
        (
            v["list_tools"].as_u64().unwrap(),
            v["call_tool"].as_u64().unwrap(),
        )
    }

    /// The `MCP-Protocol-Version` headers clients sent (Streamable HTTP, after initialize).
    pub async fn protocol_versions(&self) -> Vec<String> {
        serde_json::from_value(self.raw_stats().await["protocol_versions"].clone()).unwrap()
    }

    async fn raw_stats(&self) -> Value {
        reqwest::get(self.url("/stats"))
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON")
    }
}

impl Drop for PyMcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
