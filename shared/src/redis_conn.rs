//! Redis wiring: a self-reconnecting connection to one server or to a Redis Cluster, and key
//! naming. Every key starts with the configured prefix and wraps its group in a hash tag
//! (`prefix:{runs}:stream`), so one group's keys share a cluster slot and every multi-key
//! command and Lua script stays legal on Redis Cluster. Groups are chosen so load spreads over
//! slots: one per queue shard, one per run for watch marks, one per rate-limited subject.
//!
//! `REDIS_URL` forms: `redis://`, `rediss://`, `unix://` (one server, or a proxy), and
//! `redis+cluster://[user:pass@]h1:p1[,h2:p2,...][/?query]`: a cluster, found from any one
//! reachable node (master or replica) of the list. (`rediss+cluster://` is parsed too, but
//! like `rediss://` it needs the redis crate's TLS feature, which this build leaves out.)

use std::time::Duration;

use futures::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};

/// Builds key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// `prefix:{group}:name`.
    pub fn key(&self, group: &str, name: &str) -> String {
        format!("{}:{{{group}}}:{name}", self.prefix)
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Where `REDIS_URL` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`redis://`, `rediss://`, `unix://`).
    Single(String),
    /// A cluster: one `redis://`/`rediss://` URL per seed node.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Parses a `REDIS_URL`; the error says what is wrong without echoing the URL (it may
    /// hold a password).
    pub fn parse(url: &str) -> Result<Self, RedisError> {
        let invalid = |what: &'static str| RedisError::from((ErrorKind::InvalidClientConfig, what));
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss", rest)
        } else {
            redis::Client::open(url)?;
            return Ok(Self::Single(url.to_owned()));
        };
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (hosts, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            if host.is_empty() {
                return Err(invalid("empty node in redis+cluster:// URL"));
            }
            let node = match userinfo {
                Some(u) => format!("{scheme}://{u}@{host}{tail}"),
                None => format!("{scheme}://{host}{tail}"),
            };
            redis::Client::open(node.as_str())?;
            nodes.push(node);
        }
        Ok(Self::Cluster(nodes))
    }

    /// The node URLs to try, in order (one for a single server).
    pub fn nodes(&self) -> Vec<String> {
        match self {
            Self::Single(url) => vec![url.clone()],
            Self::Cluster(nodes) => nodes.clone(),
        }
    }
}

/// A multiplexed, self-reconnecting connection to one server or to a cluster (commands
/// routed by slot, MOVED/ASK followed, topology refreshed after a failover). Cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConn::Single",
            Self::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// True on a cluster: a pipeline must then keep to one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// Runs commands whose keys may lie in different slots, ignoring their replies: one
    /// pipeline on a single server, concurrent single commands on a cluster (a cluster
    /// pipeline must keep to one slot). The first error is returned.
    pub async fn exec_spread(&self, cmds: Vec<Cmd>) -> redis::RedisResult<()> {
        if cmds.is_empty() {
            return Ok(());
        }
        match self {
            Self::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd).ignore();
                }
                pipe.query_async(&mut c.clone()).await
            }
            Self::Cluster(c) => {
                let results = join_all(cmds.into_iter().map(|cmd| {
                    let mut c = c.clone();
                    async move { cmd.query_async::<Value>(&mut c).await }
                }))
                .await;
                results.into_iter().try_for_each(|r| r.map(|_| ()))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects with timeouts and automatic reconnection with backoff; a dropped connection is
/// re-established on the next command rather than failing the process.
pub async fn connect(url: &str) -> Result<RedisConn, RedisError> {
    connect_with(url, Duration::from_secs(5)).await
}

/// Like [`connect`], with its own response timeout (blocking reads need a longer one).
pub async fn connect_with(url: &str, response_timeout: Duration) -> Result<RedisConn, RedisError> {
    match RedisTarget::parse(url)? {
        RedisTarget::Single(url) => {
            let client = redis::Client::open(url.as_str())?;
            Ok(RedisConn::Single(
                ConnectionManager::new_with_config(client, manager_config(response_timeout))
                    .await?,
            ))
        }
        RedisTarget::Cluster(nodes) => {
            let client = cluster_client(&nodes, response_timeout)?;
            Ok(RedisConn::Cluster(client.get_async_connection().await?))
        }
    }
}

/// Like [`connect_with`], but connects on the first command instead of now.
pub fn connect_lazy(url: &str, response_timeout: Duration) -> Result<RedisConn, RedisError> {
    match RedisTarget::parse(url)? {
        RedisTarget::Single(url) => {
            let client = redis::Client::open(url.as_str())?;
            Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
                client,
                manager_config(response_timeout),
            )?))
        }
        RedisTarget::Cluster(nodes) => {
            let client = cluster_client(&nodes, response_timeout)?;
            let config = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(Duration::from_secs(2))
                .set_response_timeout(response_timeout);
            Ok(RedisConn::Cluster(
                client.get_pending_async_connection_with_config(config),
            ))
        }
    }
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(1000))
}

/// A cluster client over the seed nodes. Retries (MOVED, ASK, TRYAGAIN, a failing node while
/// a replica is promoted) back off from 50 ms to 1 s, about 5 s in all, like a reconnect.
fn cluster_client(
    nodes: &[String],
    response_timeout: Duration,
) -> Result<ClusterClient, RedisError> {
    ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(response_timeout)
        .retries(8)
        .min_retry_wait(50)
        .max_retry_wait(1_000)
        .build()
}

/// Opens a pub/sub connection to the server, or on a cluster to the first reachable node:
/// classic `PUBLISH` is broadcast to every node of a cluster, so one node hears all. The
/// URL's nodes are tried first, then the nodes `conn` (the process's cluster connection)
/// knows now, so a subscriber follows a failover even when the URL names one node.
pub async fn pubsub(url: &str, conn: &RedisConn) -> Result<redis::aio::PubSub, RedisError> {
    let target = RedisTarget::parse(url)?;
    let mut nodes = target.nodes();
    if let (RedisTarget::Cluster(seeds), RedisConn::Cluster(c)) = (&target, conn) {
        for node in known_nodes(&seeds[0], c).await {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
    }
    let mut last = None;
    for node in nodes {
        let opened = async {
            let client = redis::Client::open(node.as_str())?;
            client.get_async_pubsub().await
        };
        match tokio::time::timeout(Duration::from_secs(2), opened).await {
            Ok(Ok(p)) => return Ok(p),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(RedisError::from((
                    ErrorKind::Io,
                    "pub/sub connect timed out",
                )))
            }
        }
    }
    Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no node"))))
}

/// The URLs (scheme, credentials and options of `seed`) of every node in `CLUSTER SLOTS`.
async fn known_nodes(seed: &str, conn: &ClusterConnection) -> Vec<String> {
    let mut conn = conn.clone();
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let slots = cmd.query_async::<Value>(&mut conn);
    let Ok(Ok(Value::Array(ranges))) = tokio::time::timeout(Duration::from_secs(2), slots).await
    else {
        return Vec::new();
    };
    let Ok(base) = url::Url::parse(seed) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        // [start, end, [host, port, id, ...] (master), replicas...]
        for node in parts.into_iter().skip(2) {
            let Value::Array(node) = node else { continue };
            let host = match node.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = node.get(1) else {
                continue;
            };
            let mut u = base.clone();
            if host.is_empty() || u.set_host(Some(&host)).is_err() {
                continue;
            }
            if u.set_port(u16::try_from(*port).ok()).is_err() {
                continue;
            }
            let u = u.to_string();
            if !out.contains(&u) {
                out.push(u);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use redis::cluster_routing::Slot;

    use super::*;
    use crate::ids::RunId;
    use crate::queue::{Queue, QueueConfig};
    use crate::runs::doorbell;

    fn slot(key: &str) -> Slot {
        Slot::for_key(key)
    }

    #[tokio::test]
    async fn each_queue_shards_lua_keys_share_one_slot_and_shards_spread() {
        let conn = connect_lazy("redis://127.0.0.1:1", Duration::from_secs(1)).unwrap();
        let keys = Keys::new("agentq");
        for name in ["runs", "deliveries"] {
            let q = Queue::new(
                conn.clone(),
                &keys,
                QueueConfig {
                    shards: 8,
                    ..QueueConfig::new(name)
                },
            )
            .unwrap();
            let mut slots = HashSet::new();
            for s in &q.inner().shards {
                // ENQUEUE_AFTER, PROMOTE_DUE, RECLAIM, CLAIM_OWN and the dead-letter MULTI
                // touch these three keys of one shard together.
                assert_eq!(slot(&s.stream), slot(&s.delayed), "{}", s.stream);
                assert_eq!(slot(&s.stream), slot(&s.dead), "{}", s.stream);
                slots.insert(slot(&s.stream));
            }
            assert_eq!(slots.len(), 8, "{name}: one slot per shard");
        }
    }

    #[test]
    fn watch_marks_and_run_channels_are_hashed_per_run() {
        let keys = Keys::new("agentq");
        let runs: Vec<RunId> = (0..200).map(|_| RunId::new()).collect();
        let slots: HashSet<Slot> = runs
            .iter()
            .map(|r| slot(&doorbell::watch_key(&keys, *r)))
            .collect();
        assert!(
            slots.len() > 150,
            "watch marks spread: {} slots",
            slots.len()
        );
        // The streaming hub finds the run in a channel name, the token channel too.
        let r = runs[0];
        assert_eq!(doorbell::run_of(&doorbell::channel(&keys, r)), Some(r));
        assert_eq!(
            doorbell::run_of_tokens(&doorbell::token_channel(&keys, r)),
            Some(r)
        );
    }

    #[test]
    fn parses_single_and_cluster_urls() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379".into())
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://a:1,b:2").unwrap(),
            RedisTarget::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://u:p@a:1,b:2/?protocol=3").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://u:p@a:1/?protocol=3".into(),
                "redis://u:p@b:2/?protocol=3".into()
            ])
        );
        assert!(RedisTarget::parse("redis+cluster://a:1,,b:2").is_err());
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(RedisTarget::parse("http://x").is_err());
    }
}
