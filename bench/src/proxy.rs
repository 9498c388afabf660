//! Counting TCP proxies between agentq and its stores, so the bench can say exactly what one
//! process sends per run without changing agentq: a Postgres proxy that reads the frontend
//! protocol (statements executed, by SQL text; transactions; round trips; pool pings) and a
//! Redis proxy that reads RESP (commands, by name and key pattern). Bytes are forwarded
//! unchanged, except that the Postgres proxy answers `SSLRequest` with `N` itself (it must
//! see plain text; agentq's default `sslmode=prefer` then continues without TLS).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Which protocol a proxy reads.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Protocol {
    Postgres,
    Redis,
}

/// What passed through a proxy so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    /// Statements (Postgres: every Execute and every simple Query) or commands (Redis).
    pub(crate) total: u64,
    /// `total` by label: normalised SQL text, or `command key-pattern`.
    pub(crate) by_label: HashMap<String, u64>,
    /// Postgres: transactions begun (`BEGIN` sent).
    pub(crate) transactions: u64,
    /// Postgres: round trips (Sync messages, and simple Queries other than `BEGIN`, which
    /// sqlx sends along with the next message).
    pub(crate) round_trips: u64,
    /// Postgres: Syncs with nothing before them: sqlx's pings when a connection is taken
    /// from the pool (`test_before_acquire`, on by default) and when it is given back (always,
    /// in sqlx 0.8).
    pub(crate) pings: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.total += other.total;
        self.transactions += other.transactions;
        self.round_trips += other.round_trips;
        self.pings += other.pings;
        for (k, v) in &other.by_label {
            *self.by_label.entry(k.clone()).or_default() += v;
        }
    }

    /// What was counted since `earlier`.
    pub(crate) fn since(&self, earlier: &Tally) -> Tally {
        let by_label = self
            .by_label
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.by_label.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        Tally {
            total: self.total - earlier.total,
            by_label,
            transactions: self.transactions - earlier.transactions,
            round_trips: self.round_trips - earlier.round_trips,
            pings: self.pings - earlier.pings,
        }
    }

    /// The `n` most frequent labels, most frequent first.
    pub(crate) fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> =
            self.by_label.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }
}

/// A listening proxy; dropping it closes the listener and every proxied connection.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    tally: Arc<Mutex<Tally>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listens on a free local port and forwards every connection to `upstream`
    /// (`host:port`). For Redis, `prefix` is the key prefix, cut from key patterns.
    pub(crate) async fn start(
        protocol: Protocol,
        upstream: String,
        prefix: String,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let shared = Arc::clone(&tally);
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let tally = Arc::clone(&shared);
                let prefix = prefix.clone();
                connections.spawn(async move {
                    let _ = serve(protocol, client, &upstream, &tally, &prefix).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, tally, task })
    }

    /// What was counted so far.
    pub(crate) fn snapshot(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Proxies one connection until either side closes it.
async fn serve(
    protocol: Protocol,
    mut client: TcpStream,
    upstream: &str,
    tally: &Mutex<Tally>,
    prefix: &str,
) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    if let Protocol::Postgres = protocol {
        if !pg_startup(&mut client, &mut server).await? {
            return Ok(());
        }
    }
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let downstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pg = PgState::default();
    loop {
        let n = client_read.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut local = Tally::default();
        let consumed = match protocol {
            Protocol::Postgres => pg.parse(&buf, &mut local),
            Protocol::Redis => redis_parse(&buf, prefix, &mut local),
        };
        match protocol {
            // Only whole Postgres messages are forwarded (nothing is rewritten, but the
            // state must stay in step with what the server saw).
            Protocol::Postgres => server_write.write_all(&buf[..consumed]).await?,
            // Redis bytes can go on at once; the unparsed tail waits for its end.
            Protocol::Redis => server_write.write_all(&chunk[..n]).await?,
        }
        buf.drain(..consumed);
        if local.total > 0 || local.round_trips > 0 {
            tally.lock().unwrap_or_else(|e| e.into_inner()).add(&local);
        }
    }
    let _ = server_write.shutdown().await;
    let _ = downstream.await;
    Ok(())
}

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// The untyped start of a Postgres connection: answers SSL and GSS encryption requests with
/// `N`, then forwards the startup (or cancel) message. False when the client went away.
async fn pg_startup(client: &mut TcpStream, server: &mut TcpStream) -> std::io::Result<bool> {
    loop {
        let mut head = [0u8; 8];
        if client.read_exact(&mut head).await.is_err() {
            return Ok(false);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len == 8 && (code == SSL_REQUEST || code == GSSENC_REQUEST) {
            client.write_all(b"N").await?;
            continue;
        }
        let mut rest = vec![0u8; len.saturating_sub(8)];
        client.read_exact(&mut rest).await?;
        server.write_all(&head).await?;
        server.write_all(&rest).await?;
        return Ok(true);
    }
}

/// Per-connection Postgres state: prepared statements and portals, by name.
#[derive(Default)]
struct PgState {
    statements: HashMap<String, String>,
    portals: HashMap<String, String>,
    /// Messages since the last Sync (a Sync after none is a ping).
    since_sync: u64,
}

impl PgState {
    /// Counts every whole message in `buf`; returns how many bytes they take.
    fn parse(&mut self, buf: &[u8], tally: &mut Tally) -> usize {
        let mut at = 0;
        while buf.len() >= at + 5 {
            let kind = buf[at];
            let len =
                u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
            if len < 4 || buf.len() < at + 1 + len {
                break;
            }
            let body = &buf[at + 5..at + 1 + len];
            self.message(kind, body, tally);
            at += 1 + len;
        }
        at
    }

    fn message(&mut self, kind: u8, body: &[u8], tally: &mut Tally) {
        match kind {
            b'P' => {
                let (name, rest) = cstr(body);
                let (sql, _) = cstr(rest);
                self.statements.insert(name, sql);
            }
            b'B' => {
                let (portal, rest) = cstr(body);
                let (statement, _) = cstr(rest);
                let sql = self
                    .statements
                    .get(&statement)
                    .cloned()
                    .unwrap_or_else(|| "<unknown prepared statement>".to_owned());
                self.portals.insert(portal, sql);
            }
            b'E' => {
                let (portal, _) = cstr(body);
                let sql = self
                    .portals
                    .get(&portal)
                    .cloned()
                    .unwrap_or_else(|| "<unknown portal>".to_owned());
                count(tally, sql_label(&sql));
            }
            b'Q' => {
                let (sql, _) = cstr(body);
                let label = sql_label(&sql);
                if label.eq_ignore_ascii_case("BEGIN") {
                    tally.transactions += 1;
                } else {
                    tally.round_trips += 1;
                }
                count(tally, label);
                // A simple Query ends in ReadyForQuery like a Sync: a Sync right after it
                // carries nothing (sqlx's ping when the connection goes back to the pool).
                self.since_sync = 0;
                return;
            }
            b'S' => {
                tally.round_trips += 1;
                if self.since_sync == 0 {
                    tally.pings += 1;
                }
                self.since_sync = 0;
                return;
            }
            _ => {}
        }
        self.since_sync += 1;
    }
}

fn count(tally: &mut Tally, label: String) {
    tally.total += 1;
    *tally.by_label.entry(label).or_default() += 1;
}

/// A NUL-terminated string and what follows it.
fn cstr(b: &[u8]) -> (String, &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (String::from_utf8_lossy(&b[..i]).into_owned(), &b[i + 1..]),
        None => (String::from_utf8_lossy(b).into_owned(), &[]),
    }
}

/// SQL with whitespace collapsed, cut to a readable length.
fn sql_label(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    cut(&one_line, 90)
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Counts every whole RESP command in `buf`; returns how many bytes they take.
fn redis_parse(buf: &[u8], prefix: &str, tally: &mut Tally) -> usize {
    let mut at = 0;
    while at < buf.len() {
        match resp_command(&buf[at..]) {
            Some((used, args)) => {
                count(tally, redis_label(&args, prefix));
                at += used;
            }
            None => break,
        }
    }
    at
}

/// One command (`*N` array of bulk strings, or an inline line): bytes used and arguments.
fn resp_command(b: &[u8]) -> Option<(usize, Vec<&[u8]>)> {
    let (first, mut at) = line(b, 0)?;
    if first.first() != Some(&b'*') {
        let args = first
            .split(|c| *c == b' ')
            .filter(|a| !a.is_empty())
            .collect();
        return Some((at, args));
    }
    let n: usize = std::str::from_utf8(&first[1..]).ok()?.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let (head, next) = line(b, at)?;
        if head.first() != Some(&b'$') {
            return None;
        }
        let len: usize = std::str::from_utf8(&head[1..]).ok()?.parse().ok()?;
        if b.len() < next + len + 2 {
            return None;
        }
        args.push(&b[next..next + len]);
        at = next + len + 2;
    }
    Some((at, args))
}

/// The line starting at `from` (without CRLF) and where the next one starts.
fn line(b: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(from..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], from + end + 2))
}

/// Commands whose second word names what they do, as INFO commandstats shows them.
const WITH_SUBCOMMAND: &[&str] = &[
    "xgroup", "xinfo", "client", "script", "config", "object", "memory", "function", "command",
    "cluster", "pubsub",
];

/// `command[|subcommand] key-pattern`: the first argument under our prefix becomes the key,
/// without the prefix and with ids replaced by `*`.
fn redis_label(args: &[&[u8]], prefix: &str) -> String {
    let Some(first) = args.first() else {
        return "<empty>".to_owned();
    };
    let mut label = String::from_utf8_lossy(first).to_ascii_lowercase();
    if WITH_SUBCOMMAND.contains(&label.as_str()) {
        if let Some(sub) = args.get(1) {
            label.push('|');
            label.push_str(&String::from_utf8_lossy(sub).to_ascii_lowercase());
        }
    }
    let key = args.iter().skip(1).find_map(|a| {
        let s = String::from_utf8_lossy(a);
        s.strip_prefix(prefix)
            .map(|rest| mask_ids(rest.trim_start_matches(':')))
    });
    if let Some(key) = key {
        label.push(' ');
        label.push_str(&key);
    }
    label
}

/// Replaces UUIDs (with or without dashes) by `*`, and numbers of 5 digits or more (time
/// windows) by `#`.
fn mask_ids(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let dashed = b.len() >= i + 36
            && b[i..i + 36].iter().enumerate().all(|(j, c)| {
                if matches!(j, 8 | 13 | 18 | 23) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        if dashed {
            out.push('*');
            i += 36;
            continue;
        }
        let plain = b.len() >= i + 32 && b[i..i + 32].iter().all(u8::is_ascii_hexdigit);
        if plain {
            out.push('*');
            i += 32;
            continue;
        }
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits >= 5 && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            // Time windows and other counters.
            out.push('#');
            i += digits;
            continue;
        }
        let ch = s[i..].chars().next().unwrap_or('?');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn postgres_statements_transactions_and_pings() {
        let mut wire = Vec::new();
        wire.extend(msg(b'S', b""));
        wire.extend(msg(b'Q', b"BEGIN\0"));
        wire.extend(msg(b'P', b"s1\0SELECT  1\n FROM x\0\0\0"));
        wire.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
        wire.extend(msg(b'E', b"\0\0\0\0\0"));
        wire.extend(msg(b'S', b""));
        wire.extend(msg(b'Q', b"COMMIT\0"));
        wire.extend(msg(b'S', b""));
        let partial = msg(b'E', b"\0\0\0\0\0");
        wire.extend(&partial[..3]);
        let mut state = PgState::default();
        let mut t = Tally::default();
        let used = state.parse(&wire, &mut t);
        assert_eq!(used, wire.len() - 3);
        assert_eq!(t.total, 3);
        assert_eq!(t.transactions, 1);
        assert_eq!(t.pings, 2);
        assert_eq!(t.round_trips, 4);
        assert_eq!(t.by_label["SELECT 1 FROM x"], 1);
        assert_eq!(t.by_label["COMMIT"], 1);
    }

    #[test]
    fn redis_commands_with_key_patterns() {
        let prefix = "bench-1";
        let wire = b"*3\r\n$4\r\nXADD\r\n$21\r\nbench-1:{runs}:stream\r\n$1\r\n*\r\n\
*3\r\n$7\r\nPUBLISH\r\n$57\r\nbench-1:{runs}:steps:0193a0c4-1b2c-7d3e-8f40-123456789abc\r\n$1\r\n1\r\n\
*2\r\n$6\r\nXGROUP\r\n$6\r\nCREATE\r\n*1\r\n$4\r\nPI";
        let mut t = Tally::default();
        let used = redis_parse(wire, prefix, &mut t);
        assert_eq!(t.total, 3);
        assert_eq!(t.by_label["xadd {runs}:stream"], 1);
        assert_eq!(t.by_label["publish {runs}:steps:*"], 1);
        assert_eq!(t.by_label["xgroup|create"], 1);
        assert_eq!(&wire[used..], b"*1\r\n$4\r\nPI");
        assert_eq!(
            mask_ids("{ratelimit}:key:0193a0c4-1b2c-7d3e-8f40-123456789abc:m:29591234"),
            "{ratelimit}:key:*:m:#"
        );
    }

    #[test]
    fn tally_difference_and_top() {
        let mut a = Tally::default();
        count(&mut a, "x".into());
        let mut b = a.clone();
        count(&mut b, "x".into());
        count(&mut b, "y".into());
        count(&mut b, "y".into());
        let d = b.since(&a);
        assert_eq!(d.total, 3);
        assert_eq!(d.top(1), vec![("y".to_owned(), 2)]);
    }
}
