//! Relaying one request to a worker over its private unix socket and the response back to the
//! client. Connections to workers are pooled; the worker frames its response as HTTP/1.1
//! (Content-Length or chunked), so the router knows where it ends without the worker closing.

use super::client::{read_some, Body, ReqInfo};
use super::Router;
use crate::http::{ChunkedDecoder, ReadBuf, Version};
use std::io::Read;
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

/// Send the request to worker `slot` and relay the response. `Ok(keep)`: whether the client
/// connection may carry another request.
pub async fn forward<S: AsyncWrite + Unpin>(
    router: &Router,
    slot: usize,
    packet: &[u8],
    body: &Body,
    client: &mut S,
    info: &ReqInfo,
) -> Result<bool, ForwardError> {
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
    let head = loop {
        match parse_head(rbuf.filled(), info, info.keep_alive) {
            Ok(Some(h)) => break h,
            Ok(None) if rbuf.len() >= MAX_RESPONSE_HEAD => {
                return Err(ForwardError::BadGateway(
                    "response head too large".to_owned(),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(ForwardError::BadGateway(e)),
        }
        match tokio::time::timeout(
            timeout,
            read_some(&mut conn, &mut rbuf, MAX_RESPONSE_HEAD + 1),
        )
        .await
        {
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
    };
    let client_keep = head.keep;
    let status = head.status;
    client
        .write_all(&head.out)
        .await
        .map_err(|_| ForwardError::ClientGone)?;
    rbuf.consume(head.len);
    let no_body = info.is_head || crate::http::response::status_has_no_body(status);
    let complete = if no_body {
        true
    } else if let Some(n) = head.content_length {
        relay_length(&mut conn, &mut rbuf, client, n, timeout).await?
    } else if head.chunked {
        relay_chunked(
            &mut conn,
            &mut rbuf,
            client,
            info.version == Version::Http11,
            timeout,
        )
        .await?
    } else {
        relay_to_eof(&mut conn, &mut rbuf, client, timeout).await?;
        false
    };
    if complete && !head.close && rbuf.is_empty() {
        router.put_idle(slot, conn, pid);
    }
    Ok(client_keep)
}

async fn more(
    conn: &mut UnixStream,
    rbuf: &mut ReadBuf,
    timeout: Duration,
) -> Result<(), ForwardError> {
    match tokio::time::timeout(timeout, read_some(conn, rbuf, 256 * 1024)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        _ => Err(ForwardError::Cut),
    }
}

async fn relay_length<S: AsyncWrite + Unpin>(
    conn: &mut UnixStream,
    rbuf: &mut ReadBuf,
    client: &mut S,
    n: u64,
    timeout: Duration,
) -> Result<bool, ForwardError> {
    let mut left = n;
    while left > 0 {
        if rbuf.is_empty() {
            more(conn, rbuf, timeout).await?;
        }
        let take = usize::try_from(left).unwrap_or(usize::MAX).min(rbuf.len());
        client
            .write_all(&rbuf.filled()[..take])
            .await
            .map_err(|_| ForwardError::ClientGone)?;
        rbuf.consume(take);
        left -= take as u64;
    }
    Ok(true)
}

/// Relay a chunked body: raw to an HTTP/1.1 client (the decoder only finds the end), decoded
/// to an HTTP/1.0 one.
async fn relay_chunked<S: AsyncWrite + Unpin>(
    conn: &mut UnixStream,
    rbuf: &mut ReadBuf,
    client: &mut S,
    raw: bool,
    timeout: Duration,
) -> Result<bool, ForwardError> {
    let mut decoder = ChunkedDecoder::new(0);
    while !decoder.is_done() {
        if rbuf.is_empty() {
            more(conn, rbuf, timeout).await?;
        }
        let input = rbuf.filled();
        let (used, data) = decoder.step(input).map_err(|_| ForwardError::Cut)?;
        let out = if raw { &input[..used] } else { &input[data] };
        client
            .write_all(out)
            .await
            .map_err(|_| ForwardError::ClientGone)?;
        rbuf.consume(used);
    }
    Ok(true)
}

async fn relay_to_eof<S: AsyncWrite + Unpin>(
    conn: &mut UnixStream,
    rbuf: &mut ReadBuf,
    client: &mut S,
    timeout: Duration,
) -> Result<(), ForwardError> {
    loop {
        if !rbuf.is_empty() {
            client
                .write_all(rbuf.filled())
                .await
                .map_err(|_| ForwardError::ClientGone)?;
            let n = rbuf.len();
            rbuf.consume(n);
        }
        match tokio::time::timeout(timeout, read_some(conn, rbuf, 256 * 1024)).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            _ => return Err(ForwardError::Cut),
        }
    }
}
