//! WebSockets through the router: a request with `Upgrade: websocket` is not buffered onto a
//! pooled link. It gets a dedicated connection to a ready worker's link socket, carrying the
//! request as a uwsgi packet without `HEADRACE_KEEPALIVE` (so a worker that does not switch
//! protocols answers and closes). The worker's answer head is relayed; after a 101 the router
//! splices bytes both ways until either side closes, otherwise it relays the answer until the
//! worker closes. Either way the client connection ends with the tunnel.

use super::request::{Refusal, Reply, ReqInfo};
use super::Router;
use crate::http::ReadBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest answer head accepted from a worker.
const MAX_HEAD: usize = 64 * 1024;
/// How often a tunnel that found no ready worker looks again.
const RETRY: Duration = Duration::from_millis(50);

/// Where the head of an HTTP answer ends (after its blank line), if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The status of an answer head (`HTTP/1.1 101 ...`).
fn status_of(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

impl Router {
    /// A dedicated connection to the least busy ready worker (thread 0's link socket), or
    /// `None` when no worker can take one now.
    fn tunnel_connect(&self) -> Option<UnixStream> {
        let mut backends = self.backends.borrow_mut();
        let mut order: Vec<usize> = (0..backends.len())
            .filter(|&i| backends[i].ready && backends[i].pid != backends[i].dead_pid)
            .collect();
        order.sort_by_key(|&i| backends[i].load());
        for i in order {
            let b = &mut backends[i];
            let name = super::link_name(&super::socket_name(b.nonce, i), 0);
            match crate::sys::unix::connect_abstract(name.as_bytes()) {
                Ok(fd) => {
                    let std = std::os::unix::net::UnixStream::from(fd);
                    if let Ok(s) = UnixStream::from_std(std) {
                        return Some(s);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    b.dead_pid = b.pid;
                    b.ready = false;
                    b.links.clear();
                }
            }
        }
        None
    }
}

/// Tunnel one WebSocket request (`packet`, with `buf` holding what the client sent after its
/// head) to a worker and back.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    router: &Rc<Router>,
    packet: Vec<u8>,
    client: &mut S,
    buf: &mut ReadBuf,
    info: ReqInfo,
) {
    let queued_at = Instant::now();
    let cfg = &router.config;
    let wait = cfg.router.queue_timeout.unwrap_or(cfg.socket_timeout);
    let mut worker = loop {
        if let Some(s) = router.tunnel_connect() {
            break s;
        }
        if router.stopping.get() || queued_at.elapsed() >= wait {
            let reply = Reply::Refused(Refusal::QueueTimeout);
            super::client::answer(router, reply, client, info, queued_at).await;
            return;
        }
        tokio::time::sleep(RETRY).await;
        router.refresh();
    };
    let waited = u64::try_from(queued_at.elapsed().as_micros()).unwrap_or(u64::MAX);
    router.scoreboard.queue().wait.observe(waited);
    let early = buf.filled().to_vec();
    buf.consume(early.len());
    if worker.write_all(&packet).await.is_err() || worker.write_all(&early).await.is_err() {
        let reply = Reply::BadGateway("the worker closed the WebSocket tunnel".to_owned());
        super::client::answer(router, reply, client, info, queued_at).await;
        return;
    }
    // The answer head, within --socket-timeout.
    let mut head = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + cfg.socket_timeout;
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        if head.len() > MAX_HEAD {
            let reply = Reply::BadGateway("WebSocket answer head too large".to_owned());
            super::client::answer(router, reply, client, info, queued_at).await;
            return;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, worker.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                let reply = Reply::BadGateway("the worker closed the WebSocket tunnel".to_owned());
                super::client::answer(router, reply, client, info, queued_at).await;
                return;
            }
            Err(_) => {
                super::client::answer(router, Reply::Timeout, client, info, queued_at).await;
                return;
            }
        }
    };
    if client.write_all(&head).await.is_err() {
        return;
    }
    if status_of(&head[..end]) == Some(101) {
        splice(client, &mut worker, cfg.socket_timeout).await;
    } else {
        // Any other answer: relayed until the worker closes (no keep-alive was asked).
        let _ = pump(&mut worker, &mut *client, cfg.socket_timeout).await;
    }
}

/// Copy `r` to `w` until `r` ends (then shut `w` down). A write that makes no progress for
/// `stall` fails: a peer that stops reading does not hold the tunnel forever. Reads have no
/// limit (an idle WebSocket is normal; `--ws-ping-interval` is the worker's liveness check).
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    r: R,
    w: W,
    stall: Duration,
) -> std::io::Result<()> {
    copy(r, w, stall).await.map_err(|(_, e)| e)
}

/// [`pump`], telling a failed write (`true`: `w`'s peer is gone) from a failed read.
async fn copy<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
    stall: Duration,
) -> Result<(), (bool, std::io::Error)> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = r.read(&mut buf).await.map_err(|e| (false, e))?;
        if n == 0 {
            return w.shutdown().await.map_err(|e| (true, e));
        }
        match tokio::time::timeout(stall, w.write_all(&buf[..n])).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err((true, e)),
            Err(_) => return Err((true, std::io::ErrorKind::TimedOut.into())),
        }
    }
}

/// Bytes both ways until either side closes; the other direction then gets `stall` to finish
/// (the closing handshake's last frames). A failed read from the client or a failed write to it
/// ends both. A failed write to the worker does not: a worker that fails the connection writes
/// its close frame and closes while the client is still sending, so writing to it fails (EPIPE)
/// while that close frame still waits in the socket to be relayed.
async fn splice<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    worker: &mut UnixStream,
    stall: Duration,
) {
    let (client_r, client_w) = tokio::io::split(client);
    let (worker_r, worker_w) = worker.split();
    let up = copy(client_r, worker_w, stall);
    let down = pump(worker_r, client_w, stall);
    tokio::pin!(up, down);
    let down = tokio::select! {
        r = &mut up => {
            if !matches!(r, Ok(()) | Err((true, _))) {
                return;
            }
            match tokio::time::timeout(stall, down).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
        r = &mut down => {
            if r.is_ok() {
                let _ = tokio::time::timeout(stall, up).await;
            }
            r
        }
    };
    if let Err(e) = down {
        if e.kind() == std::io::ErrorKind::TimedOut {
            // The worker may not see the stall itself: to it the tunnel just closes.
            crate::log!(
                "headrace router: WebSocket client stalled for more than --socket-timeout, closing"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_heads() {
        assert_eq!(
            head_end(b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81"),
            Some(36)
        );
        assert_eq!(head_end(b"HTTP/1.1 101 Switching Protocols\r\n"), None);
        assert_eq!(
            status_of(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Some(101)
        );
        assert_eq!(status_of(b"HTTP/1.0 403 Forbidden\r\n\r\n"), Some(403));
        assert_eq!(status_of(b"HTTP/2 200\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 1x1 ?\r\n"), None);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
    }

    #[test]
    fn pump_copies_to_the_end_and_gives_up_on_a_stalled_writer() {
        runtime().block_on(async {
            let (mut from, r) = tokio::io::duplex(64);
            let (w, mut to) = tokio::io::duplex(64);
            from.write_all(b"hello").await.unwrap();
            drop(from);
            pump(r, w, Duration::from_secs(5)).await.unwrap();
            let mut out = Vec::new();
            to.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, b"hello");
            // The far end never reads: the write times out.
            let (mut from, r) = tokio::io::duplex(1 << 16);
            let (w, _to) = tokio::io::duplex(16);
            from.write_all(&[0u8; 4096]).await.unwrap();
            let err = pump(r, w, Duration::from_millis(50)).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        });
    }
}
