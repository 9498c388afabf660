//! A lean HTTP/1.1 client, for calling `http` agents.
//!
//! Why not reqwest, which the worker uses for everything else: a run waiting on a slow agent
//! holds its request open, and a worker may hold 10,000 of them. Through reqwest each one cost
//! about 40 KB (heaptrack under `bench inflight`): hyper's 8 KB read buffer, its 8 KB header
//! buffer, a dispatch channel whose first block holds 32 request slots (9.5 KB), a spawned
//! connection task, and reqwest's redirect, retry and timeout layers. None of those sizes can be
//! set through reqwest, and hyper's own connection API keeps the channel and the header buffer.
//! Here a call in flight is its socket, a 1 KB read buffer and the future that drives them,
//! in the run's own task.
//!
//! What it does: one POST with a body, `Content-Length` framed; reads the status line and
//! headers with `httparse` (the parser hyper uses), then a body framed by `Content-Length`,
//! `Transfer-Encoding: chunked`, or the end of the connection, up to a size limit. https goes
//! through rustls with the webpki roots (what reqwest's `rustls-tls` used). Connections that
//! end an answer cleanly are kept for reuse (at most [`IDLE_PER_ORIGIN`] per origin and
//! [`IDLE_TOTAL`] in all, for [`IDLE_FOR`]); a kept connection is checked before reuse (the
//! server may have closed it), and one the request could not even be written to is replaced
//! by a fresh one, once. Redirects are not followed. What a server sends is bounded: the head
//! ([`MAX_HEAD`]), chunk lines, interim answers ([`MAX_INTERIM`]) and the body (the caller's
//! limit); memory follows the bytes that arrive, not the lengths announced. The destination
//! policy is the worker's: unless private networks are allowed, only public addresses are
//! connected to, checked on the resolved addresses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use url::{Host, Url};

use agentq_shared::net::is_public;

/// How long a connection may take to open (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per origin.
const IDLE_PER_ORIGIN: usize = 64;
/// Idle connections kept in all.
const IDLE_TOTAL: usize = 1024;
/// How long an idle connection is kept.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// What the read buffer starts with: enough for a usual answer's head.
const READ_CHUNK: usize = 1024;
/// Largest status line and headers read.
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 64;
/// Interim (1xx) answers accepted before the answer.
const MAX_INTERIM: usize = 8;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;
/// What a body buffer reserves up front at most, whatever length is announced.
const BODY_RESERVE: usize = 8 * 1024;

/// A byte stream to an origin: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A kept connection and since when it is idle.
type Idle = (Box<dyn Io>, Instant);

/// Where a connection goes: scheme, host and port.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The host resolved only to addresses the policy refuses.
    #[error("points at a private, loopback or link-local address")]
    Private,
    /// The answer's body is larger than the limit.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// Anything else: connecting, TLS, writing, reading, or an answer that is not HTTP/1.
    #[error("{0}")]
    Failed(String),
}

fn failed(what: &str, e: impl std::fmt::Display) -> WireError {
    WireError::Failed(format!("{what}: {e}"))
}

/// An answer: its status and its body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// The client: TLS settings, the address policy and the idle connections.
pub(crate) struct Wire {
    tls: tokio_rustls::TlsConnector,
    allow_private: bool,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
}

impl Wire {
    pub(crate) fn new(allow_private: bool) -> Result<Self, String> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            allow_private,
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// POSTs `body` to `url` with `headers` (besides Host and Content-Length) and reads the
    /// answer, refusing a body larger than `max_body`. Time limits other than the connect
    /// timeout are the caller's.
    pub(crate) async fn post(
        &self,
        url: &Url,
        headers: &[(&str, &str)],
        body: &[u8],
        max_body: usize,
    ) -> Result<Answer, WireError> {
        let origin = origin_of(url)?;
        let head = request_head(url, &origin, headers, body.len());
        if let Some(io) = self.take_idle(&origin) {
            match exchange(io, &head, body, max_body).await {
                Ok((answer, io)) => {
                    self.keep(origin, io);
                    return Ok(answer);
                }
                // Not a byte of it was written (the server closed the connection since the
                // check): a fresh connection may carry it.
                Err(Exchange::Unsent(_)) => {}
                Err(Exchange::Sent(e)) => return Err(e),
            }
        }
        let io = self.connect(&origin).await?;
        match exchange(io, &head, body, max_body).await {
            Ok((answer, io)) => {
                self.keep(origin, io);
                Ok(answer)
            }
            Err(Exchange::Unsent(e) | Exchange::Sent(e)) => Err(e),
        }
    }

    fn take_idle(&self, origin: &Origin) -> Option<Box<dyn Io>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(origin)?;
        let mut found = None;
        while let Some((mut io, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR && still_open(&mut io) {
                found = Some(io);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(origin);
        }
        found
    }

    fn keep(&self, origin: Origin, io: Option<Box<dyn Io>>) {
        let Some(io) = io else { return };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut total: usize = idle.values().map(Vec::len).sum();
        if total >= IDLE_TOTAL {
            // Full: close what has expired, whatever its origin.
            idle.retain(|_, list| {
                list.retain(|(_, since)| since.elapsed() < IDLE_FOR);
                !list.is_empty()
            });
            total = idle.values().map(Vec::len).sum();
        }
        if total >= IDLE_TOTAL {
            return;
        }
        let list = idle.entry(origin).or_default();
        list.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        if list.len() < IDLE_PER_ORIGIN {
            list.push((io, Instant::now()));
        }
    }

    /// Idle connections kept, in all.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// Opens a connection: resolves, applies the address policy, connects (TLS for https).
    async fn connect(&self, origin: &Origin) -> Result<Box<dyn Io>, WireError> {
        let open = async {
            let addrs = self.resolve(origin).await?;
            let mut last = None;
            let mut tcp = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        tcp = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let tcp = match (tcp, last) {
                (Some(s), _) => s,
                (None, Some(e)) => return Err(failed("connecting failed", e)),
                (None, None) => return Err(WireError::Failed("the host has no address".into())),
            };
            let _ = tcp.set_nodelay(true);
            if !origin.tls {
                return Ok(Box::new(tcp) as Box<dyn Io>);
            }
            let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|e| failed("bad TLS server name", e))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| failed("TLS handshake failed", e))?;
            Ok(Box::new(tls) as Box<dyn Io>)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, Box::pin(open))
            .await
            .map_err(|_| {
                WireError::Failed(format!("connecting timed out after {CONNECT_TIMEOUT:?}"))
            })?
    }

    async fn resolve(&self, origin: &Origin) -> Result<Vec<SocketAddr>, WireError> {
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, origin.port)],
            Err(_) => tokio::net::lookup_host((host, origin.port))
                .await
                .map_err(|e| failed("resolving the host failed", e))?
                .collect(),
        };
        if self.allow_private {
            return Ok(addrs);
        }
        let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
        if public.is_empty() {
            return Err(WireError::Private);
        }
        Ok(public)
    }
}

/// Whether a kept connection can carry another request: the server has neither closed it nor
/// sent anything unasked. One poll that must find nothing to read, into a one-byte buffer.
fn still_open(io: &mut Box<dyn Io>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(io)
        .poll_read(&mut cx, &mut buf)
        .is_pending()
}

fn origin_of(url: &Url) -> Result<Origin, WireError> {
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(WireError::Failed(format!("unsupported scheme {other}"))),
    };
    let host = match url.host() {
        Some(Host::Domain(d)) => d.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(WireError::Failed("the URL names no host".into())),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    Ok(Origin { tls, host, port })
}

/// The request's head; the body follows it in the same write.
fn request_head(url: &Url, origin: &Origin, headers: &[(&str, &str)], body_len: usize) -> String {
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let host = match (url.host(), url.port()) {
        (Some(Host::Ipv6(ip)), Some(p)) => format!("[{ip}]:{p}"),
        (Some(Host::Ipv6(ip)), None) => format!("[{ip}]"),
        (_, Some(p)) => format!("{}:{p}", origin.host),
        (_, None) => origin.host.clone(),
    };
    let mut head =
        format!("POST {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {body_len}\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// How an exchange failed: before a byte of the request was written (a fresh connection may
/// carry it), or after (the server may have acted on it).
enum Exchange {
    Unsent(WireError),
    Sent(WireError),
}

/// Sends the request and reads the answer; gives the connection back when it may be reused.
async fn exchange(
    mut io: Box<dyn Io>,
    head: &str,
    body: &[u8],
    max_body: usize,
) -> Result<(Answer, Option<Box<dyn Io>>), Exchange> {
    let total = head.len() + body.len();
    let mut request = Buf::chain(head.as_bytes(), body);
    if let Err(e) = io.write_all_buf(&mut request).await {
        let e = failed("sending the request failed", e);
        return Err(if request.remaining() == total {
            Exchange::Unsent(e)
        } else {
            Exchange::Sent(e)
        });
    }
    if let Err(e) = io.flush().await {
        return Err(Exchange::Sent(failed("sending the request failed", e)));
    }
    read_answer(Reader::new(io), max_body)
        .await
        .map_err(Exchange::Sent)
}

/// The parts of an answer's head that matter here.
struct Head {
    status: u16,
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// A number in `radix` made of digits only (no sign, no blanks), or None.
fn digits(s: &str, radix: u32) -> Option<usize> {
    if s.is_empty() || s.len() > 16 || !s.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    usize::from_str_radix(s, radix).ok()
}

/// Parses a complete head at the start of `buf`, or None when more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(failed("the answer is not HTTP/1", e)),
    };
    let status = resp.code.unwrap_or(0);
    let mut head = Head {
        status,
        len,
        content_length: None,
        chunked: false,
        close: resp.version == Some(0),
    };
    let mut framed_by_coding = false;
    for h in resp.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = digits(value, 10)
                .ok_or_else(|| WireError::Failed(format!("bad content-length {value:?}")))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(WireError::Failed("conflicting content-length".into()));
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Framed by the transfer coding: a length beside it is ignored (RFC 9112 6.3).
            framed_by_coding = true;
            head.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection")
            && value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
        {
            head.close = true;
        }
    }
    if framed_by_coding {
        // Both framings at once: the connection is not reused (RFC 9112 6.3).
        head.close |= head.content_length.is_some();
        head.content_length = None;
        // A coding other than chunked last: the body ends with the connection.
        head.close |= !head.chunked;
    }
    Ok(Some(head))
}

/// Whether `buf` holds an empty line, i.e. possibly a complete head.
fn has_blank_line(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

/// Reads the answer.
async fn read_answer(
    mut r: Reader,
    max_body: usize,
) -> Result<(Answer, Option<Box<dyn Io>>), WireError> {
    let mut interim = 0;
    // How many of the unread bytes were searched for the head's end already: a server
    // trickling its head costs a scan of the new bytes, not of the whole head, per read.
    let mut scanned: usize = 0;
    let head = loop {
        let from = scanned.saturating_sub(2);
        scanned = r.unread().len();
        if has_blank_line(&r.unread()[from..]) {
            if let Some(h) = parse_head(r.unread())? {
                r.consume(h.len);
                scanned = 0;
                if h.status == 101 {
                    return Err(WireError::Failed("the server switched protocols".into()));
                }
                if (100..200).contains(&h.status) {
                    // 100 Continue and kin come before the answer.
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(WireError::Failed("too many interim answers".into()));
                    }
                    continue;
                }
                break h;
            }
        }
        if r.unread().len() >= MAX_HEAD {
            return Err(WireError::Failed("the answer's head is too large".into()));
        }
        let nothing_yet = interim == 0 && r.unread().is_empty();
        if r.fill().await? == 0 {
            return Err(WireError::Failed(if nothing_yet {
                "the connection closed before an answer".into()
            } else {
                "the connection closed in the answer's head".into()
            }));
        }
    };
    r.shrink();
    let no_body = head.status == 204 || head.status == 304;
    let (body, reusable) = if no_body {
        (Vec::new(), !head.close)
    } else if head.chunked {
        (r.chunked(max_body).await?, !head.close)
    } else if let Some(n) = head.content_length {
        if n > max_body {
            return Err(WireError::TooLarge(max_body));
        }
        (r.exact(n).await?, !head.close)
    } else {
        (r.until_closed(max_body).await?, false)
    };
    let io = (reusable && r.unread().is_empty()).then(|| r.into_io());
    Ok((
        Answer {
            status: head.status,
            body,
        },
        io,
    ))
}

/// A connection with the bytes read from it and not yet used.
struct Reader {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    fn into_io(self) -> Box<dyn Io> {
        self.io
    }

    /// Reads more bytes; the number read (0 at the end of the connection).
    async fn fill(&mut self) -> Result<usize, WireError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK.max(self.buf.len()));
        }
        self.io
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| failed("reading the answer failed", e))
    }

    /// Gives back what a large head made the buffer grow to.
    fn shrink(&mut self) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.shrink_to(READ_CHUNK);
    }

    async fn fill_or_eof(&mut self, what: &str) -> Result<(), WireError> {
        if self.fill().await? == 0 {
            return Err(WireError::Failed(format!(
                "the connection closed in the answer's {what}"
            )));
        }
        Ok(())
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(n.min(BODY_RESERVE));
        self.append(&mut out, n).await?;
        Ok(out)
    }

    /// Appends the next `n` bytes to `out`.
    async fn append(&mut self, out: &mut Vec<u8>, n: usize) -> Result<(), WireError> {
        let end = out.len() + n;
        while out.len() < end {
            if self.unread().is_empty() {
                self.fill_or_eof("body").await?;
            }
            let take = self.unread().len().min(end - out.len());
            out.extend_from_slice(&self.unread()[..take]);
            self.consume(take);
        }
        Ok(())
    }

    async fn until_closed(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        loop {
            if self.unread().len() > max - out.len() {
                return Err(WireError::TooLarge(max));
            }
            out.extend_from_slice(self.unread());
            self.pos = self.buf.len();
            if self.fill().await? == 0 {
                return Ok(out);
            }
        }
    }

    /// One CRLF-ended line, without its CRLF.
    async fn line(&mut self) -> Result<String, WireError> {
        let mut scanned: usize = 0;
        loop {
            let from = scanned.saturating_sub(1);
            if let Some(i) = self.unread()[from..].windows(2).position(|w| w == b"\r\n") {
                let end = from + i;
                let line = String::from_utf8_lossy(&self.unread()[..end]).into_owned();
                self.consume(end + 2);
                return Ok(line);
            }
            scanned = self.unread().len();
            if scanned > MAX_LINE {
                return Err(WireError::Failed("a chunk line is too long".into()));
            }
            self.fill_or_eof("chunked body").await?;
        }
    }

    async fn chunked(&mut self, max: usize) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::new();
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = digits(size, 16)
                .ok_or_else(|| WireError::Failed(format!("bad chunk size {size:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(out);
            }
            if size > max - out.len() {
                return Err(WireError::TooLarge(max));
            }
            self.append(&mut out, size).await?;
            if !self.line().await?.is_empty() {
                return Err(WireError::Failed("a chunk does not end with CRLF".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// What the test server does after an answer.
    #[derive(Clone, Copy)]
    enum Then {
        KeepOpen,
        Close,
    }

    /// A server on a real socket that answers each request, on whatever connection, with the
    /// next of `answers` (raw bytes), then keeps the connection or closes it; it counts
    /// connections.
    async fn serve(answers: Vec<(&'static [u8], Then)>) -> (Url, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!(
            "http://{}/run?x=1",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let seen = conns.clone();
        tokio::spawn(async move {
            let answers = Arc::new(Mutex::new(answers.into_iter()));
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                seen.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut have = 0;
                    loop {
                        let n = s.read(&mut buf[have..]).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        have += n;
                        if buf[0] == 0x16 {
                            // A TLS ClientHello: answer in plain HTTP, as a plain server would.
                            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                            return;
                        }
                        let text = String::from_utf8_lossy(&buf[..have]).into_owned();
                        let Some(end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if have < end + 4 + len {
                            continue;
                        }
                        assert!(text.starts_with("POST /run?x=1 HTTP/1.1\r\nhost: 127.0.0.1:"));
                        have = 0;
                        let next = answers.lock().unwrap().next();
                        let Some((answer, then)) = next else { return };
                        s.write_all(answer).await.unwrap();
                        if let Then::Close = then {
                            return;
                        }
                    }
                });
            }
        });
        (url, conns)
    }

    use Then::{Close, KeepOpen};

    #[tokio::test]
    async fn reads_length_chunked_and_close_framed_answers_and_reuses_connections() {
        let (url, conns) = serve(vec![
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", KeepOpen),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n", KeepOpen),
            (b"HTTP/1.1 503 Busy\r\nconnection: close\r\n\r\nlater", Close),
        ])
        .await;
        let wire = Wire::new(true).unwrap();
        let a = wire
            .post(&url, &[("content-type", "application/json")], b"{}", 100)
            .await
            .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(wire.idle_count(), 1);
        let a = wire.post(&url, &[], b"{}", 100).await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, &b"abcde"[..]));
        let a = wire.post(&url, &[], b"{}", 100).await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (503, &b"later"[..]));
        // The three answers came over one kept connection, and `connection: close` (and a
        // body that ends with the connection) keeps nothing.
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert_eq!(wire.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_kept_connection_the_server_closed_is_not_reused() {
        let (url, conns) = serve(vec![
            (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na", Close),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", KeepOpen),
        ])
        .await;
        let wire = Wire::new(true).unwrap();
        let a = wire.post(&url, &[], b"{}", 100).await.unwrap();
        assert_eq!(a.body, b"a");
        // The server closed it without saying so: let the FIN arrive, then the next call
        // must find out before writing and use a fresh connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let a = wire.post(&url, &[], b"{}", 100).await.unwrap();
        assert_eq!(a.body, b"b");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_however_it_is_framed() {
        let (url, _) = serve(vec![
            (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world", KeepOpen),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n", Close),
            (b"HTTP/1.1 200 OK\r\n\r\nhello world", Close),
            // A chunk size that would wrap the running total around.
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nh\r\nffffffffffffffff\r\n", Close),
        ])
        .await;
        let wire = Wire::new(true).unwrap();
        for _ in 0..4 {
            let err = wire.post(&url, &[], b"", 10).await.err().unwrap();
            assert!(matches!(err, WireError::TooLarge(10)), "{err}");
        }
    }

    #[tokio::test]
    async fn malformed_answers_are_errors() {
        let (url, _) = serve(vec![
            (b"SSH-2.0-OpenSSH\r\n\r\n", Close),
            (b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello", Close),
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-1\r\n", Close),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Close),
            (b"HTTP/1.1 100 A\r\n\r\nHTTP/1.1 100 B\r\n\r\nHTTP/1.1 100 C\r\n\r\nHTTP/1.1 100 D\r\n\r\nHTTP/1.1 100 E\r\n\r\nHTTP/1.1 100 F\r\n\r\nHTTP/1.1 100 G\r\n\r\nHTTP/1.1 100 H\r\n\r\nHTTP/1.1 100 I\r\n\r\n", Close),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel", Close),
        ])
        .await;
        let wire = Wire::new(true).unwrap();
        for expected in [
            "not HTTP/1",
            "bad content-length",
            "bad chunk size",
            "switched protocols",
            "too many interim answers",
            "closed in the answer's body",
        ] {
            let err = wire.post(&url, &[], b"", 10).await.err().unwrap();
            assert!(err.to_string().contains(expected), "{expected}: {err}");
        }
    }

    #[tokio::test]
    async fn https_speaks_tls_first() {
        // A plain HTTP server on an https URL: the client must start a TLS handshake (which
        // that server cannot answer), not send the request in the clear.
        let (url, conns) = serve(vec![(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Close,
        )])
        .await;
        let url = Url::parse(&url.as_str().replacen("http://", "https://", 1)).unwrap();
        let err = Wire::new(true)
            .unwrap()
            .post(&url, &[], b"", 10)
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("TLS handshake failed"), "{err}");
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed() {
        let (url, conns) = serve(vec![(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Close,
        )])
        .await;
        let port = url.port().unwrap();
        let wire = Wire::new(false).unwrap();
        for host in [
            "127.0.0.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "localhost",
            "10.1.2.3",
        ] {
            let url = Url::parse(&format!("http://{host}:{port}/run")).unwrap();
            let err = wire.post(&url, &[], b"", 10).await.err().unwrap();
            assert!(matches!(err, WireError::Private), "{host}: {err}");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 0);
        let a = Wire::new(true)
            .unwrap()
            .post(&url, &[], b"", 10)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    }
}
