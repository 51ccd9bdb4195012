//! One client connection to the router: read and check each request with the same rules as
//! the workers (`crate::http`), buffer its body (spilling large ones to a temporary file), turn
//! it into a uwsgi packet and dispatch it.

use super::upstream::{self, ForwardError};
use super::{Refusal, Router};
use crate::http::parse::parse_head;
use crate::http::target::{app_headers, cgi_key, percent_decode, split_target};
use crate::http::{ChunkedDecoder, Framing, HttpError, Limits, ReadBuf, RequestHead, Version};
use crate::uwsgi_proto;
use std::io::{Seek, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bodies larger than this spill to a temporary file unless `--post-buffering` says otherwise.
const DEFAULT_SPILL: usize = 1 << 20;
/// How many times a request is offered to another worker when one refuses it.
const DISPATCH_ATTEMPTS: usize = 3;

/// Who is at the other end.
pub struct Peer {
    /// The client's address (`None` on a unix socket).
    pub addr: Option<SocketAddr>,
    /// REMOTE_ADDR and REMOTE_PORT as sent to the workers (formatted once per connection).
    pub remote: (String, String),
    /// SERVER_NAME and SERVER_PORT of the listening socket.
    pub server: Rc<(String, String)>,
}

/// A request body, complete.
pub enum Body {
    /// Held in memory.
    Memory(Vec<u8>),
    /// Spilled to an unlinked temporary file.
    File(std::fs::File, u64),
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Self::Memory(v) => v.len() as u64,
            Self::File(_, n) => *n,
        }
    }
}

/// What the response side needs to know about the request.
pub struct ReqInfo {
    /// The client's HTTP version.
    pub version: Version,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// HEAD: no response body.
    pub is_head: bool,
}

struct Active(Rc<Router>);

impl Active {
    fn new(r: &Rc<Router>) -> Self {
        r.active.set(r.active.get() + 1);
        Self(r.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
    }
}

enum BodyError {
    Http(HttpError),
    Gone,
}

/// Read once into `buf` (at most `max` bytes held).
pub async fn read_some<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut ReadBuf,
    max: usize,
) -> std::io::Result<usize> {
    let spare = buf.spare(16 * 1024, max);
    let n = s.read(spare).await?;
    buf.commit(n);
    Ok(n)
}

/// Serve one client connection until it closes.
pub async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    router: Rc<Router>,
    mut stream: S,
    peer: Peer,
) {
    let cfg = &router.config;
    let limits = Limits {
        head: cfg.buffer_size,
        body: cfg.limit_post,
    };
    let mut buf = ReadBuf::with_capacity(8192);
    // The first request head is owed within --socket-timeout of the accept.
    let mut deadline = Instant::now() + cfg.socket_timeout;
    loop {
        let head = loop {
            if !buf.is_empty() {
                match parse_head(buf.filled(), limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => {
                        reject(&mut stream, &e, &peer).await;
                        return;
                    }
                }
            }
            let idle = buf.is_empty();
            let read = tokio::time::timeout_at(
                deadline.into(),
                read_some(&mut stream, &mut buf, limits.head),
            )
            .await;
            match read {
                Err(_) => {
                    if !idle {
                        reject(&mut stream, &HttpError::Timeout, &peer).await;
                    }
                    return;
                }
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {
                    if idle {
                        deadline = Instant::now() + cfg.socket_timeout;
                    }
                }
            }
        };
        // From here until the response is out, this connection holds a request in flight: a
        // graceful stop waits for it (idle keep-alive connections are simply closed).
        let _active = Active::new(&router);
        let info = ReqInfo {
            version: head.version,
            keep_alive: head.keep_alive && !router.stopping.get(),
            is_head: head.is_head,
        };
        let mut packet = Vec::with_capacity(head.len + 256);
        uwsgi_proto::begin_packet(&mut packet);
        add_vars(&mut packet, buf.filled(), &head, &peer);
        buf.consume(head.len);
        if head.expect_continue
            && buf.is_empty()
            && stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let body = match read_body(&mut stream, &mut buf, head.framing, &router).await {
            Ok(b) => b,
            Err(BodyError::Http(e)) => {
                reject(&mut stream, &e, &peer).await;
                return;
            }
            Err(BodyError::Gone) => return,
        };
        if head.framing != Framing::None {
            uwsgi_proto::push_var(
                &mut packet,
                b"CONTENT_LENGTH",
                itoa::Buffer::new().format(body.len()).as_bytes(),
            );
        }
        uwsgi_proto::push_var(&mut packet, uwsgi_proto::KEEPALIVE_VAR, b"1");
        if uwsgi_proto::finish_packet(&mut packet, 0).is_none() {
            reject(
                &mut stream,
                &HttpError::HeadTooLarge(u16::MAX.into()),
                &peer,
            )
            .await;
            return;
        }
        if !dispatch(&router, &packet, &body, &mut stream, &info).await {
            return;
        }
        deadline = Instant::now()
            + if buf.is_empty() {
                cfg.keepalive_timeout
            } else {
                cfg.socket_timeout
            };
    }
}

/// The CGI variables of a request: what the environ builder would make of the head, for the
/// worker to use as they are.
fn add_vars(out: &mut Vec<u8>, buf: &[u8], head: &RequestHead, peer: &Peer) {
    let method = &buf[head.method.clone()];
    let target = &buf[head.target.clone()];
    let (path, query) = split_target(target);
    let push = |out: &mut Vec<u8>, k: &[u8], v: &[u8]| uwsgi_proto::push_var(out, k, v);
    push(out, b"REQUEST_METHOD", method);
    push(out, b"REQUEST_URI", target);
    push(out, b"PATH_INFO", &percent_decode(path));
    push(out, b"QUERY_STRING", query);
    push(out, b"SERVER_PROTOCOL", head.version.as_str().as_bytes());
    push(out, b"SCRIPT_NAME", b"");
    push(out, b"SERVER_NAME", peer.server.0.as_bytes());
    push(out, b"SERVER_PORT", peer.server.1.as_bytes());
    push(out, b"REMOTE_ADDR", peer.remote.0.as_bytes());
    push(out, b"REMOTE_PORT", peer.remote.1.as_bytes());
    // The same headers the workers' environ would have.
    for (name, value) in app_headers(buf, &head.headers) {
        if name.eq_ignore_ascii_case(b"content-type") {
            push(out, b"CONTENT_TYPE", &value);
        } else if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            // The router sends the body de-chunked with its own CONTENT_LENGTH.
        } else {
            push(out, cgi_key(name).as_bytes(), &value);
        }
    }
}

async fn read_more<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut ReadBuf,
    timeout: Duration,
) -> Result<(), BodyError> {
    match tokio::time::timeout(timeout, read_some(s, buf, buf.len() + 256 * 1024)).await {
        Err(_) => Err(BodyError::Http(HttpError::Timeout)),
        Ok(Ok(0) | Err(_)) => Err(BodyError::Gone),
        Ok(Ok(_)) => Ok(()),
    }
}

/// A body being collected: memory first, a temporary file past the spill size.
struct Collector {
    mem: Vec<u8>,
    file: Option<std::fs::File>,
    len: u64,
    spill: usize,
}

impl Collector {
    fn push(&mut self, data: &[u8]) -> Result<(), BodyError> {
        self.len += data.len() as u64;
        if self.file.is_none() && self.mem.len() + data.len() > self.spill {
            let mut f = temp_file()
                .map_err(|_| BodyError::Http(HttpError::BodyTooLarge(self.spill as u64)))?;
            f.write_all(&self.mem).map_err(|_| BodyError::Gone)?;
            self.mem = Vec::new();
            self.file = Some(f);
        }
        if let Some(f) = &mut self.file {
            f.write_all(data)
                .map_err(|_| BodyError::Http(HttpError::BodyTooLarge(self.len)))
        } else {
            self.mem.extend_from_slice(data);
            Ok(())
        }
    }

    fn finish(self) -> Result<Body, BodyError> {
        match self.file {
            None => Ok(Body::Memory(self.mem)),
            Some(mut f) => {
                f.rewind().map_err(|_| BodyError::Gone)?;
                Ok(Body::File(f, self.len))
            }
        }
    }
}

/// An unlinked temporary file for a spilled body.
fn temp_file() -> std::io::Result<std::fs::File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "headrace-body-{}-{}",
        crate::sys::proc::getpid(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

async fn read_body<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut ReadBuf,
    framing: Framing,
    router: &Router,
) -> Result<Body, BodyError> {
    let cfg = &router.config;
    let spill = if cfg.router.post_buffering == 0 {
        DEFAULT_SPILL
    } else {
        cfg.router.post_buffering
    };
    let mut c = Collector {
        mem: Vec::new(),
        file: None,
        len: 0,
        spill,
    };
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            let mut left = n;
            while left > 0 {
                if buf.is_empty() {
                    read_more(s, buf, cfg.socket_timeout).await?;
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                c.push(&buf.filled()[..take])?;
                buf.consume(take);
                left -= take as u64;
            }
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new(cfg.limit_post);
            while !decoder.is_done() {
                if buf.is_empty() {
                    read_more(s, buf, cfg.socket_timeout).await?;
                }
                let input = buf.filled();
                let (used, data) = decoder.step(input).map_err(BodyError::Http)?;
                c.push(&input[data])?;
                buf.consume(used);
            }
        }
    }
    c.finish()
}

/// A complete response the router makes itself (errors, 503s).
pub fn simple_response(status: u16, extra: &str, text: &str, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + text.len());
    crate::http::response::status_line(&mut out, b"HTTP/1.1", status);
    out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(text.len() + 1).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra.as_bytes());
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    crate::http::response::date_header(&mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

async fn reject<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, err: &HttpError, peer: &Peer) {
    let status = err.status();
    let who = peer
        .addr
        .map_or_else(|| "unix socket".to_owned(), |a| a.ip().to_string());
    crate::log!(
        "headrace router: {status} {} for {who}: {err}",
        crate::http::response::reason(status)
    );
    let _ = s.write_all(&err.response()).await;
    let _ = s.shutdown().await;
    // Read away what the client already sent, briefly, so the close is not a reset.
    let mut scratch = vec![0u8; 16 * 1024];
    for _ in 0..4 {
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
}

/// Find a worker for the request and relay its response. Returns whether the client
/// connection stays open.
async fn dispatch<S: AsyncWrite + Unpin>(
    router: &Rc<Router>,
    packet: &[u8],
    body: &Body,
    client: &mut S,
    info: &ReqInfo,
) -> bool {
    let waited = Instant::now();
    for _ in 0..DISPATCH_ATTEMPTS {
        let slot = match router.acquire().await {
            Ok(s) => s,
            Err(refusal) => {
                router.refused.set(router.refused.get() + 1);
                let retry = router
                    .config
                    .router
                    .queue_timeout
                    .map_or(1, |t| t.as_secs().max(1));
                let why = match refusal {
                    Refusal::QueueFull => format!(
                        "all workers busy and {} requests already queued (--max-queue)",
                        router.config.router.max_queue
                    ),
                    Refusal::QueueTimeout => format!(
                        "all workers busy for {:.1} s (--queue-timeout)",
                        waited.elapsed().as_secs_f64()
                    ),
                    Refusal::Stopping => "the server is stopping".to_owned(),
                };
                let resp = simple_response(
                    503,
                    &format!("Retry-After: {retry}\r\n"),
                    &format!("503 Service Unavailable: {why}"),
                    !info.keep_alive,
                );
                return client.write_all(&resp).await.is_ok() && info.keep_alive;
            }
        };
        // `forward` frees the slot itself, as soon as the worker's response is read.
        let result = upstream::forward(router, slot, packet, body, client, info).await;
        match result {
            Ok(keep) => return keep,
            Err(ForwardError::Retry) => {}
            Err(ForwardError::BadGateway(why)) => {
                crate::log!("headrace router: 502 Bad Gateway: {why}");
                let resp = simple_response(
                    502,
                    "",
                    "502 Bad Gateway: the worker died while serving the request",
                    !info.keep_alive,
                );
                return client.write_all(&resp).await.is_ok() && info.keep_alive;
            }
            Err(ForwardError::Timeout) => {
                crate::log!(
                    "headrace router: 504 Gateway Timeout: no response within --socket-timeout"
                );
                let resp = simple_response(504, "", "504 Gateway Timeout", true);
                let _ = client.write_all(&resp).await;
                return false;
            }
            Err(ForwardError::Cut | ForwardError::ClientGone) => return false,
        }
    }
    let resp = simple_response(
        502,
        "",
        "502 Bad Gateway: no worker accepted the request",
        !info.keep_alive,
    );
    client.write_all(&resp).await.is_ok() && info.keep_alive
}
