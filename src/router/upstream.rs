//! Relaying one request to a worker over its private unix socket and the response back to the
//! client. Connections to workers are pooled; the worker frames its response as HTTP/1.1
//! (Content-Length or chunked), so the router knows where it ends without the worker closing.

use super::client::{read_some, Body, ReqInfo};
use super::Router;
use crate::http::{ChunkedDecoder, ReadBuf, Version};
use std::io::Read;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest response head accepted from a worker.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Why a request could not be relayed.
pub enum ForwardError {
    /// The worker never saw the request: offer it to another.
    Retry,
    /// The worker failed before the response head (it died): 502.
    BadGateway(String),
    /// No response head within `--socket-timeout`: 504.
    Timeout,
    /// The worker failed mid-body: the client connection is cut.
    Cut,
    /// The client went away.
    ClientGone,
}

fn connect(router: &Router, slot: usize) -> std::io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    let name = super::socket_name(router.nonce, slot);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    // A unix-socket connect completes at once (or is refused); the worker has a free thread, so
    // its backlog is not full.
    let s = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    s.set_nonblocking(true)?;
    UnixStream::from_std(s)
}

/// A pooled connection the worker closed while it sat idle reads as EOF (or an error) now.
fn still_open(conn: &UnixStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(conn.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn send(conn: &mut UnixStream, packet: &[u8], body: &Body) -> std::io::Result<()> {
    conn.write_all(packet).await?;
    match body {
        Body::Memory(v) => conn.write_all(v).await?,
        Body::File(f, len) => {
            let mut f = f.try_clone()?;
            let mut left = *len;
            let mut chunk = vec![0u8; 64 * 1024];
            while left > 0 {
                let n = f.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                conn.write_all(&chunk[..n]).await?;
                left = left.saturating_sub(n as u64);
            }
        }
    }
    Ok(())
}

/// The parts of the worker's response head the relay needs.
struct Head {
    len: usize,
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    /// The client connection may carry another request after this response.
    keep: bool,
    /// The head to send the client.
    out: Vec<u8>,
}

fn parse_head(buf: &[u8], info: &ReqInfo, client_keep: bool) -> Result<Option<Head>, String> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head from the worker: {e}")),
    };
    let status = resp.code.unwrap_or(502);
    let mut head = Head {
        len,
        status,
        content_length: None,
        chunked: false,
        close: false,
        keep: false,
        out: Vec::with_capacity(len + 32),
    };
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let no_body = info.is_head || crate::http::response::status_has_no_body(status);
    let dechunk = head.chunked && info.version == Version::Http10 && !no_body;
    let framed = no_body || head.content_length.is_some() || (head.chunked && !dechunk);
    let keep = client_keep && framed;
    head.keep = keep;
    // Status line and headers as the worker wrote them, but hop-by-hop headers are the router's.
    let line_end = buf.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
    head.out.extend_from_slice(&buf[..line_end]);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"keep-alive")
            || (dechunk && name.eq_ignore_ascii_case(b"transfer-encoding"))
        {
            continue;
        }
        head.out.extend_from_slice(name);
        head.out.extend_from_slice(b": ");
        head.out.extend_from_slice(h.value);
        head.out.extend_from_slice(b"\r\n");
    }
    if !keep {
        head.out.extend_from_slice(b"Connection: close\r\n");
    } else if info.version == Version::Http10 {
        head.out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    head.out.extend_from_slice(b"\r\n");
    Ok(Some(head))
}

/// Read the worker's response head (the request was sent on `conn`).
async fn read_head(
    router: &Router,
    slot: usize,
    conn: &mut UnixStream,
    rbuf: &mut ReadBuf,
    info: &ReqInfo,
    reused: bool,
) -> Result<Head, ForwardError> {
    let timeout = router.config.socket_timeout;
    let pid = router.pid_of(slot);
    loop {
        match parse_head(rbuf.filled(), info, info.keep_alive) {
            Ok(Some(h)) => return Ok(h),
            Ok(None) if rbuf.len() >= MAX_RESPONSE_HEAD => {
                return Err(ForwardError::BadGateway(
                    "response head too large".to_owned(),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(ForwardError::BadGateway(e)),
        }
        match tokio::time::timeout(timeout, read_some(conn, rbuf, MAX_RESPONSE_HEAD + 1)).await {
            Err(_) => return Err(ForwardError::Timeout),
            Ok(Ok(0)) => {
                router.mark_gone(slot);
                return Err(ForwardError::BadGateway(format!(
                    "worker (pid {pid}) closed the connection before answering"
                )));
            }
            Ok(Err(e))
                if reused && rbuf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                return Err(ForwardError::Retry)
            }
            Ok(Err(e)) => {
                router.mark_gone(slot);
                return Err(ForwardError::BadGateway(format!("worker (pid {pid}): {e}")));
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// Send the request to worker `slot` and relay the response. `Ok(keep)`: whether the client
/// connection may carry another request.
pub async fn forward<S: AsyncWrite + Unpin>(
    router: &Rc<Router>,
    slot: usize,
    packet: &[u8],
    body: &Body,
    client: &mut S,
    info: &ReqInfo,
) -> Result<bool, ForwardError> {
    // Whatever happens from here, the slot is freed once (when `lease` is dropped).
    let lease = Lease {
        router: router.clone(),
        slot,
    };
    let pid = router.pid_of(slot);
    let pooled = std::iter::from_fn(|| router.take_idle(slot)).find(still_open);
    let (mut conn, reused) = match pooled {
        Some(c) => (c, true),
        None => {
            if let Ok(c) = connect(router, slot) {
                (c, false)
            } else {
                router.mark_gone(slot);
                return Err(ForwardError::Retry);
            }
        }
    };
    if let Err(e) = send(&mut conn, packet, body).await {
        // A worker that stopped between our check and our write never read the request.
        return Err(
            if reused || e.kind() == std::io::ErrorKind::ConnectionRefused {
                ForwardError::Retry
            } else {
                ForwardError::BadGateway(format!("cannot send the request to the worker: {e}"))
            },
        );
    }
    let timeout = router.config.socket_timeout;
    let mut rbuf = ReadBuf::with_capacity(16 * 1024);
    let head = read_head(router, slot, &mut conn, &mut rbuf, info, reused).await?;
    let client_keep = head.keep;
    let status = head.status;
    rbuf.consume(head.len);
    let no_body = info.is_head || crate::http::response::status_has_no_body(status);
    // The common case: the whole response is already here (a small body with a length). The
    // worker is free at once, and the client gets it in one write.
    let whole = head
        .content_length
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| no_body || n <= rbuf.len());
    if no_body || whole.is_some() {
        let mut out = head.out;
        if !no_body {
            let n = whole.unwrap_or(0);
            out.extend_from_slice(&rbuf.filled()[..n]);
            rbuf.consume(n);
        }
        if !head.close && rbuf.is_empty() {
            router.put_idle(slot, conn, pid);
        }
        drop(lease);
        client
            .write_all(&out)
            .await
            .map_err(|_| ForwardError::ClientGone)?;
        return Ok(client_keep);
    }
    client
        .write_all(&head.out)
        .await
        .map_err(|_| ForwardError::ClientGone)?;
    let framing = if let Some(n) = head.content_length {
        Framing::Length(n)
    } else if head.chunked {
        Framing::Chunked {
            raw: info.version == Version::Http11,
        }
    } else {
        Framing::UntilClose
    };
    // The worker's body is read as fast as the worker writes it, into a bounded queue that the
    // client drains at its own pace: a slow reader holds router memory (up to RELAY_QUEUE
    // chunks), not a worker thread. The worker is released when its response is read.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let queue = Rc::new(Queued::default());
    let tx = Relay {
        tx,
        queue: queue.clone(),
    };
    let reader = tokio::task::spawn_local(async move {
        let done = pump(&mut conn, &mut rbuf, framing, &tx, timeout).await;
        if done && framing != Framing::UntilClose && !head.close && rbuf.is_empty() {
            lease.router.put_idle(lease.slot, conn, pid);
        }
        drop(lease);
        done
    });
    while let Some(chunk) = rx.recv().await {
        if client.write_all(&chunk).await.is_err() {
            // Closing the queue stops the reader (waking it if it waits for room); its lease
            // frees the worker.
            drop(rx);
            queue.room.notify_one();
            return Err(ForwardError::ClientGone);
        }
        queue.bytes.set(queue.bytes.get() - chunk.len());
        queue.room.notify_one();
    }
    match reader.await {
        Ok(true) if framing != Framing::UntilClose => Ok(client_keep),
        Ok(true) => Ok(false),
        _ => Err(ForwardError::Cut),
    }
}

/// Frees the worker slot when the relay of its response ends, however it ends.
pub struct Lease {
    router: Rc<Router>,
    slot: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.router.release(self.slot);
    }
}

/// Most response bytes queued between a worker and a slow client; past it the worker waits.
const RELAY_QUEUE_BYTES: usize = 64 << 20;

/// Bytes queued for the client, and a wake-up when the client took some.
#[derive(Default)]
struct Queued {
    bytes: std::cell::Cell<usize>,
    room: tokio::sync::Notify,
}

/// The reader's end of the relay queue.
struct Relay {
    tx: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    queue: Rc<Queued>,
}

impl Relay {
    /// Queue a chunk for the client, waiting while the queue is full. `false`: the client is
    /// gone.
    async fn send(&self, chunk: Vec<u8>) -> bool {
        while self.queue.bytes.get() >= RELAY_QUEUE_BYTES {
            if self.tx.is_closed() {
                return false;
            }
            self.queue.room.notified().await;
        }
        self.queue.bytes.set(self.queue.bytes.get() + chunk.len());
        self.tx.send(chunk).is_ok()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    /// Chunked; `raw`: pass the framing through (HTTP/1.1 client), else decode (HTTP/1.0).
    Chunked {
        raw: bool,
    },
    UntilClose,
}

async fn more(conn: &mut UnixStream, rbuf: &mut ReadBuf, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, read_some(conn, rbuf, 256 * 1024)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Read the response body from the worker and queue it for the client. `true`: the body
/// ended where its framing said (or at the close, for `UntilClose`).
async fn pump(
    conn: &mut UnixStream,
    rbuf: &mut ReadBuf,
    framing: Framing,
    tx: &Relay,
    timeout: Duration,
) -> bool {
    match framing {
        Framing::Length(n) => {
            let mut left = n;
            while left > 0 {
                if rbuf.is_empty() && !more(conn, rbuf, timeout).await {
                    return false;
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(rbuf.len());
                if !tx.send(rbuf.filled()[..take].to_vec()).await {
                    return false;
                }
                rbuf.consume(take);
                left -= take as u64;
            }
            true
        }
        Framing::Chunked { raw } => {
            let mut decoder = ChunkedDecoder::new(0);
            while !decoder.is_done() {
                if rbuf.is_empty() && !more(conn, rbuf, timeout).await {
                    return false;
                }
                let input = rbuf.filled();
                let Ok((used, data)) = decoder.step(input) else {
                    return false;
                };
                let out = if raw { &input[..used] } else { &input[data] };
                if !out.is_empty() && !tx.send(out.to_vec()).await {
                    return false;
                }
                rbuf.consume(used);
            }
            true
        }
        Framing::UntilClose => loop {
            if !rbuf.is_empty() {
                let n = rbuf.len();
                if !tx.send(rbuf.filled().to_vec()).await {
                    return false;
                }
                rbuf.consume(n);
            }
            match tokio::time::timeout(timeout, read_some(conn, rbuf, 256 * 1024)).await {
                Ok(Ok(0)) => return true,
                Ok(Ok(_)) => {}
                _ => return false,
            }
        },
    }
}
