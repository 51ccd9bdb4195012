//! One client connection to the router: read and check each request with the same rules as
//! the workers (`crate::http`), buffer its body (spilling large ones to a temporary file), turn
//! it into a uwsgi packet and dispatch it.

use super::request::{Body, Job, Peer, Queued, Refusal, Reply, ReqInfo, Stage};
use super::Router;
use crate::http::parse::parse_head;
use crate::http::target::{app_header_fields, app_headers, cgi_key, percent_decode, split_target};
use crate::http::{ChunkedDecoder, Framing, HttpError, Limits, ReadBuf, RequestHead, Version};
use crate::uwsgi_proto;
use std::cell::Cell;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

/// Bodies larger than this spill to a temporary file unless `--post-buffering` says otherwise.
const DEFAULT_SPILL: usize = 1 << 20;

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
    /// The spill file could not be created or written.
    Spill(std::io::Error),
    /// No byte of the body for `--socket-timeout` (408, logged as such: the head did come).
    Stalled,
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
    let mut buf = ReadBuf::with_capacity(8192);
    // The first request head is owed within --socket-timeout of the accept.
    let mut deadline = Instant::now() + cfg.socket_timeout;
    loop {
        let Some(head) = read_head(&router, &mut stream, &mut buf, &peer, &mut deadline).await
        else {
            return;
        };
        // From here until the response is out, this connection holds a request in flight: a
        // graceful stop waits for it (idle keep-alive connections are simply closed).
        let _active = Active::new(&router);
        let info = ReqInfo {
            version: head.version,
            keep_alive: head.keep_alive && !router.stopping.get(),
            is_head: head.is_head,
        };
        let hit = super::static_hit::serve(
            &cfg.static_files,
            &mut stream,
            buf.filled(),
            &head,
            info.keep_alive,
            cfg.socket_timeout,
        )
        .await;
        if let super::static_hit::Outcome::Served(keep) = hit {
            buf.consume(head.len);
            if !keep {
                return;
            }
            deadline = next_deadline(cfg, &buf);
            continue;
        }
        let mut packet = Vec::with_capacity(head.len + 256);
        uwsgi_proto::begin_packet(&mut packet);
        add_vars(&mut packet, buf.filled(), &head, &peer);
        if head.framing == Framing::None && is_websocket(buf.filled(), &head) {
            buf.consume(head.len);
            // The connection becomes a tunnel to one worker and ends with it.
            if uwsgi_proto::finish_packet(&mut packet, 0).is_some() {
                super::tunnel::run(&router, packet, &mut stream, &mut buf, info).await;
            }
            return;
        }
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
            Err(BodyError::Stalled) => {
                let why = "request body stalled for more than --socket-timeout";
                reject_because(&mut stream, &HttpError::Timeout, why, &peer).await;
                return;
            }
            Err(BodyError::Spill(e)) => {
                crate::log!("headrace router: 503 Service Unavailable: cannot buffer a request body on disk: {e}");
                let resp = plain(
                    503,
                    info.version,
                    "Retry-After: 1\r\n",
                    "503 Service Unavailable: the server cannot buffer the request body",
                    true,
                );
                let _ = stream.write_all(&resp).await;
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
        if !exchange(&router, packet, body, &mut stream, &mut buf, info).await {
            return;
        }
        deadline = next_deadline(cfg, &buf);
    }
}

/// When the next request head is owed after a response: an idle connection gets
/// --http-keepalive, one that already holds part of a request --socket-timeout.
fn next_deadline(cfg: &crate::config::Config, buf: &ReadBuf) -> Instant {
    Instant::now()
        + if buf.is_empty() {
            cfg.keepalive_timeout
        } else {
            cfg.socket_timeout
        }
}

/// Read the next request head. `None`: the connection ends (closed, timed out, rejected, or
/// the router stops while it is idle).
async fn read_head<S: AsyncRead + AsyncWrite + Unpin>(
    router: &Router,
    stream: &mut S,
    buf: &mut ReadBuf,
    peer: &Peer,
    deadline: &mut Instant,
) -> Option<RequestHead> {
    let cfg = &router.config;
    let limits = Limits {
        head: cfg.buffer_size,
        body: cfg.limit_post,
    };
    loop {
        if !buf.is_empty() {
            match parse_head(buf.filled(), limits) {
                Ok(Some(h)) => return Some(h),
                Ok(None) => {}
                Err(e) => {
                    reject(stream, &e, peer).await;
                    return None;
                }
            }
        }
        let idle = buf.is_empty();
        if idle && router.stopping.get() {
            // A stopping router closes connections between requests.
            return None;
        }
        let read = tokio::select! {
            r = tokio::time::timeout_at((*deadline).into(), read_some(stream, buf, limits.head)) => r,
            () = router.stop_notify.notified(), if idle => return None,
        };
        match read {
            Err(_) => {
                if !idle {
                    reject(stream, &HttpError::Timeout, peer).await;
                }
                return None;
            }
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(_)) => {
                if idle {
                    *deadline = Instant::now() + cfg.socket_timeout;
                }
            }
        }
    }
}

/// The request asks for a WebSocket (`Upgrade: websocket`): it is tunnelled to a worker
/// instead of being buffered and pooled (the worker checks the rest of the handshake).
fn is_websocket(buf: &[u8], head: &RequestHead) -> bool {
    crate::ws::handshake::is_upgrade(
        head.headers
            .iter()
            .map(|(n, v)| (&buf[n.clone()], &buf[v.clone()])),
    )
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
    // The same headers the workers' environ would have. A repeated header goes as repeated
    // variables, as nginx sends it: an ASGI scope keeps them apart, a WSGI environ joins them.
    for (name, value) in app_headers(buf, &head.headers) {
        if name.eq_ignore_ascii_case(b"content-type") {
            push(out, b"CONTENT_TYPE", &value);
        }
    }
    for (name, value) in app_header_fields(buf, &head.headers) {
        if name.eq_ignore_ascii_case(b"content-type")
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            // The router sends the body de-chunked with its own CONTENT_LENGTH.
        } else {
            push(out, cgi_key(name).as_bytes(), value);
        }
    }
}

async fn read_more<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut ReadBuf,
    timeout: Duration,
) -> Result<(), BodyError> {
    match tokio::time::timeout(timeout, read_some(s, buf, buf.len() + 256 * 1024)).await {
        Err(_) => Err(BodyError::Stalled),
        Ok(Ok(0) | Err(_)) => Err(BodyError::Gone),
        Ok(Ok(_)) => Ok(()),
    }
}

/// A body being collected: memory first, a temporary file past the spill size. File work runs
/// on tokio's blocking pool, never on the router's one thread.
struct Collector {
    mem: Vec<u8>,
    file: Option<Arc<std::fs::File>>,
    len: u64,
    spill: usize,
}

/// Run `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

impl Collector {
    async fn push(&mut self, data: &[u8]) -> Result<(), BodyError> {
        if self.file.is_none() && self.mem.len() + data.len() > self.spill {
            let f = Arc::new(blocking(temp_file).await.map_err(BodyError::Spill)?);
            self.file = Some(f);
            let held = std::mem::take(&mut self.mem);
            self.len = 0;
            self.write(held).await?;
        }
        if self.file.is_some() {
            self.write(data.to_vec()).await
        } else {
            self.mem.extend_from_slice(data);
            self.len += data.len() as u64;
            Ok(())
        }
    }

    async fn write(&mut self, data: Vec<u8>) -> Result<(), BodyError> {
        let Some(f) = self.file.clone() else {
            return Ok(());
        };
        let at = self.len;
        let n = data.len() as u64;
        blocking(move || f.write_all_at(&data, at))
            .await
            .map_err(BodyError::Spill)?;
        self.len += n;
        Ok(())
    }

    fn finish(self) -> Body {
        match self.file {
            None => Body::Memory(self.mem),
            Some(f) => Body::File(f, self.len),
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
                c.push(&buf.filled()[..take]).await?;
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
                c.push(&input[data]).await?;
                buf.consume(used);
            }
        }
    }
    Ok(c.finish())
}

/// A complete plain-text response the router makes itself (503, 502, 504), in the client's
/// HTTP version (an HTTP/1.0 client that may keep the connection is told so).
pub fn plain(status: u16, version: Version, extra: &str, text: &str, close: bool) -> Vec<u8> {
    let keep10 = if !close && version == Version::Http10 {
        "Connection: keep-alive\r\n"
    } else {
        ""
    };
    crate::http::response::plain(
        status,
        version.as_str().as_bytes(),
        &format!("{extra}{keep10}"),
        &format!("{text}\n"),
        close,
    )
}

async fn reject<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, err: &HttpError, peer: &Peer) {
    reject_because(s, err, &err.to_string(), peer).await;
}

/// [`reject`], with the reason logged given by the caller.
async fn reject_because<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    err: &HttpError,
    why: &str,
    peer: &Peer,
) {
    let status = err.status();
    let who = peer
        .addr
        .map_or_else(|| "unix socket".to_owned(), |a| a.ip().to_string());
    crate::log!(
        "headrace router: {status} {} for {who}: {why}",
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

/// Hand the request to the router and relay the answer. Returns whether the client connection
/// stays open.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    router: &Rc<Router>,
    packet: Vec<u8>,
    body: Body,
    client: &mut S,
    buf: &mut ReadBuf,
    info: ReqInfo,
) -> bool {
    let queued_at = Instant::now();
    let (tx, mut rx) = oneshot::channel();
    let stage = Rc::new(Cell::new(Stage::Queued));
    router.submit(Job {
        packet,
        body: Rc::new(body),
        info,
        reply: tx,
        stage: stage.clone(),
        since: queued_at,
        attempts: 0,
    });
    let limit = router.config.buffer_size;
    let queue_deadline = router.config.router.queue_timeout.map(|t| queued_at + t);
    // Wait for the answer. Meanwhile the client may send its next request (kept in `buf`) or
    // go away: a request still queued is then dropped before any worker sees it.
    let reply = loop {
        let queued = stage.get() == Stage::Queued;
        tokio::select! {
            r = &mut rx => break r.unwrap_or_else(|_| Reply::BadGateway("the request was lost in the router".to_owned())),
            () = async {
                match queue_deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            }, if queued => {
                if stage.get() == Stage::Queued {
                    break Reply::Refused(Refusal::QueueTimeout);
                }
            },
            r = read_some(client, buf, limit), if buf.len() < limit => {
                if !matches!(r, Ok(n) if n > 0) {
                    // Dropping `rx` tells the queue (and a link relaying the response) that
                    // nobody waits for it.
                    return false;
                }
            },
        }
    };
    drop(rx);
    answer_watching(router, reply, client, Some(buf), info, queued_at).await
}

/// Send the client the answer to its request. Returns whether the connection stays open.
pub(super) async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    router: &Router,
    reply: Reply,
    client: &mut S,
    info: ReqInfo,
    queued_at: Instant,
) -> bool {
    answer_watching(router, reply, client, None, info, queued_at).await
}

/// Read the client into `buf` (never resolves without one).
async fn watch<S: AsyncRead + Unpin>(
    client: &mut S,
    buf: Option<&mut ReadBuf>,
    limit: usize,
) -> std::io::Result<usize> {
    match buf {
        Some(buf) => read_some(client, buf, limit).await,
        None => std::future::pending().await,
    }
}

/// [`answer`]; with `buf`, the client is read while a streamed response waits for the worker
/// (see below).
async fn answer_watching<S: AsyncRead + AsyncWrite + Unpin>(
    router: &Router,
    reply: Reply,
    client: &mut S,
    mut buf: Option<&mut ReadBuf>,
    info: ReqInfo,
    queued_at: Instant,
) -> bool {
    let keep_alive = info.keep_alive;
    match reply {
        Reply::Whole(bytes, keep) => client.write_all(&bytes).await.is_ok() && keep,
        Reply::Stream {
            head,
            keep,
            mut chunks,
            queued,
        } => {
            if client.write_all(&head).await.is_err() {
                gone(&queued);
                return false;
            }
            let limit = router.config.buffer_size;
            loop {
                // While the worker has nothing to send, the client is watched as while the
                // request waited: its next request is kept in `buf`, and its leaving drops
                // `chunks`, which tells the link to cut the worker's response short.
                let room = buf.as_ref().is_some_and(|b| b.len() < limit);
                let chunk = tokio::select! {
                    c = chunks.recv() => c,
                    r = watch(client, buf.as_deref_mut(), limit), if room => {
                        if matches!(r, Ok(n) if n > 0) {
                            continue;
                        }
                        drop(chunks);
                        gone(&queued);
                        return false;
                    },
                };
                let Some(chunk) = chunk else {
                    break;
                };
                if client.write_all(&chunk).await.is_err() {
                    drop(chunks);
                    gone(&queued);
                    return false;
                }
                queued
                    .bytes
                    .set(queued.bytes.get().saturating_sub(chunk.len()));
                queued.room.notify_one();
            }
            keep && queued.complete.get()
        }
        Reply::Refused(refusal) => {
            router.refused.set(router.refused.get() + 1);
            let retry = router
                .config
                .router
                .queue_timeout
                .map_or(1, |t| t.as_secs().max(1));
            let (status, why) = match refusal {
                Refusal::QueueFull => (
                    503,
                    format!(
                        "all workers busy and {} requests already queued (--max-queue)",
                        router.config.router.max_queue
                    ),
                ),
                Refusal::QueueTimeout => (
                    503,
                    format!(
                        "all workers busy for {:.1} s (--queue-timeout)",
                        queued_at.elapsed().as_secs_f64()
                    ),
                ),
                Refusal::NoWorker => (502, "no worker accepted the request".to_owned()),
            };
            let extra = if status == 503 {
                // The stats' shed requests.
                router
                    .scoreboard
                    .queue()
                    .shed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("Retry-After: {retry}\r\n")
            } else {
                crate::log!("headrace router: 502 Bad Gateway: {why}");
                String::new()
            };
            let text = format!("{status} {}: {why}", crate::http::response::reason(status));
            let resp = plain(status, info.version, &extra, &text, !keep_alive);
            client.write_all(&resp).await.is_ok() && keep_alive
        }
        Reply::BadGateway(why) => {
            crate::log!("headrace router: 502 Bad Gateway: {why}");
            let resp = plain(
                502,
                info.version,
                "",
                "502 Bad Gateway: the worker died while serving the request",
                !keep_alive,
            );
            client.write_all(&resp).await.is_ok() && keep_alive
        }
        Reply::Timeout => {
            let resp = plain(504, info.version, "", "504 Gateway Timeout", true);
            let _ = client.write_all(&resp).await;
            false
        }
    }
}

/// The client stopped reading a streamed response: wake the link if it waits for room, so it
/// sees the closed channel and drops the rest of the body.
fn gone(queued: &Queued) {
    queued.room.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> RequestHead {
        let limits = Limits {
            head: 65536,
            body: 0,
        };
        parse_head(raw, limits).unwrap().unwrap()
    }

    #[test]
    fn websocket_upgrades_are_recognised() {
        let ws =
            b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n";
        assert!(is_websocket(ws, &head(ws)));
        let listed = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: foo, websocket\r\n\r\n";
        assert!(is_websocket(listed, &head(listed)));
        let h2c = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n";
        assert!(!is_websocket(h2c, &head(h2c)));
        let plain = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(!is_websocket(plain, &head(plain)));
    }
}
