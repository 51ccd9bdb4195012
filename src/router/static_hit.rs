//! Static files in router mode (`--http`): the router answers a request that names a file under
//! a `static-map` itself, before a uwsgi packet is built; every file-system call (lookup, open,
//! reads) runs on tokio's blocking pool, never on the router's one thread.

use crate::http::{RequestHead, Version};
use crate::static_files::{self, Request, StaticConfig};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes read from the file per trip to the blocking pool.
const CHUNK: u64 = 256 * 1024;

/// A body up to this size is read with the lookup, in the same trip to the blocking pool, and
/// written with the head in one write.
const SMALL: u64 = 64 * 1024;

/// What happened to a request.
pub enum Outcome {
    /// Not a static request, or no such file: dispatch it to a worker.
    Miss,
    /// Answered; `true` when the connection is still usable.
    Served(bool),
}

/// The router's static config, shared with the blocking pool (one config per router process).
fn shared(cfg: &StaticConfig) -> Arc<StaticConfig> {
    static SHARED: OnceLock<Arc<StaticConfig>> = OnceLock::new();
    SHARED.get_or_init(|| Arc::new(cfg.clone())).clone()
}

fn request<'a>(buf: &'a [u8], head: &RequestHead) -> Request<'a> {
    let uri = &buf[head.target.clone()];
    let mut r = Request {
        method: &buf[head.method.clone()],
        path: crate::http::target::split_target(uri).0,
        uri,
        ..Request::default()
    };
    for (k, v) in &head.headers {
        r.header(&buf[k.clone()], &buf[v.clone()]);
    }
    r
}

/// Write all of `data`, giving up after `timeout` per write (at most one chunk): a client that
/// takes that long for one chunk is treated as gone.
async fn write<S: AsyncWrite + Unpin>(s: &mut S, data: &[u8], timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, s.write_all(data)).await,
        Ok(Ok(()))
    )
}

/// Serve `head` (whose bytes start `buf`) from a static file if it names one. `keep_alive`:
/// the connection may stay open after the response.
pub async fn serve<S: AsyncWrite + Unpin>(
    cfg: &StaticConfig,
    stream: &mut S,
    buf: &[u8],
    head: &RequestHead,
    keep_alive: bool,
    timeout: Duration,
) -> Outcome {
    if cfg.is_empty() || head.framing != crate::http::Framing::None {
        return Outcome::Miss;
    }
    // Cheap checks on the runtime thread first, so other requests never visit the pool.
    let method = &buf[head.method.clone()];
    if method != b"GET" && method != b"HEAD" {
        return Outcome::Miss;
    }
    let cfg = shared(cfg);
    let bytes = buf[..head.len].to_vec();
    let h = head.clone();
    let http11 = head.version == Version::Http11;
    let found = tokio::task::spawn_blocking(move || {
        let req = request(&bytes, &h);
        let found = static_files::lookup(&cfg, &req)?;
        let mut reply = static_files::reply(&found, &req, http11, !keep_alive);
        if reply.len <= SMALL {
            // Head and body in one buffer; a file that shrank sends nothing (closed below).
            let (len, at) = (reply.head.len(), reply.offset);
            reply
                .head
                .resize(len + usize::try_from(reply.len).unwrap_or(0), 0);
            let filled = found.file.read_exact_at(&mut reply.head[len..], at).is_ok();
            (reply.offset, reply.len) = (0, 0);
            return Some((found, reply, filled));
        }
        Some((found, reply, true))
    })
    .await;
    let Ok(Some((found, reply, filled))) = found else {
        return Outcome::Miss;
    };
    if !filled || !write(stream, &reply.head, timeout).await {
        return Outcome::Served(false);
    }
    let file = Arc::new(found.file);
    let (mut at, end) = (reply.offset, reply.offset + reply.len);
    while at < end {
        let want = usize::try_from((end - at).min(CHUNK)).unwrap_or(64 * 1024);
        let f = file.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            let mut data = vec![0; want];
            let n = f.read_at(&mut data, at)?;
            data.truncate(n);
            Ok::<_, std::io::Error>(data)
        })
        .await;
        // A read error or a file that shrank: the announced length cannot be met.
        let Ok(Ok(data)) = chunk else {
            return Outcome::Served(false);
        };
        if data.is_empty() {
            return Outcome::Served(false);
        }
        at += data.len() as u64;
        if !write(stream, &data, timeout).await {
            return Outcome::Served(false);
        }
    }
    Outcome::Served(keep_alive)
}
