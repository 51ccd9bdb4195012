//! Static files in direct mode (`--http-socket`, `--socket`): a request that names a file under
//! a `static-map` is answered from the file before the app is called, the whole file work
//! (lookup, open, head and sendfile) with the GIL released.

use super::conn::Conn;
use crate::http::Framing;
use crate::static_files::{self, Request};
use crate::wsgi::Head;
use pyo3::Python;
use std::time::Instant;

/// Who serves, for the scoreboard and the log line.
pub struct Ctx<'a> {
    /// The worker.
    pub w: &'a super::Worker<'a>,
    /// The serving thread.
    pub core: usize,
}

/// The static-file view of a request head; `None` when it cannot be a static request (it has a
/// body, or it came over the router's link: the router has already looked).
fn request<'a>(conn: &'a Conn, head: &Head) -> Option<Request<'a>> {
    let buf = conn.buf.filled();
    let mut r = Request::default();
    match head {
        Head::Http(h) => {
            if h.framing != Framing::None {
                return None;
            }
            r.method = &buf[h.method.clone()];
            r.uri = &buf[h.target.clone()];
            r.path = crate::http::target::split_target(r.uri).0;
            for (k, v) in &h.headers {
                r.header(&buf[k.clone()], &buf[v.clone()]);
            }
        }
        Head::Uwsgi(p) => {
            if conn.link || p.content_length > 0 {
                return None;
            }
            for (k, v) in &p.vars {
                r.cgi_var(&buf[k.clone()], &buf[v.clone()]);
            }
        }
    }
    Some(r)
}

/// Serve `head` from a static file if it names one. `None`: not static, the app answers.
/// `Some(keep)`: answered; `keep` says whether the connection may carry another request (the
/// head's bytes are consumed from the buffer).
pub fn try_serve(py: Python<'_>, ctx: &Ctx<'_>, conn: &mut Conn, head: &Head) -> Option<bool> {
    let cfg = &ctx.w.config.static_files;
    if cfg.is_empty() {
        return None;
    }
    let start = Instant::now();
    let (http11, keep) = match head {
        Head::Http(h) => (
            h.version == crate::http::Version::Http11,
            h.keep_alive && !ctx.w.stopping(),
        ),
        // nginx's uwsgi_pass: one request per connection, HTTP/1.0 framing (as the app's
        // responses on this front).
        Head::Uwsgi(_) => (false, false),
    };
    let timeout = ctx.w.config.socket_timeout;
    let fd = conn.raw();
    let (len, result) = {
        let req = request(conn, head)?;
        let (found, reply, sent) = py.detach(|| {
            let found = static_files::lookup(cfg, &req)?;
            let reply = static_files::reply(&found, &req, http11, !keep);
            let sent = static_files::send::send_blocking(fd, &found, &reply, timeout);
            Some((found, reply, sent))
        })?;
        drop(found);
        log(ctx, conn, head, &reply, start, sent.as_ref().ok().copied());
        (head_len(head), sent)
    };
    conn.buf.consume(len);
    Some(result.is_ok() && keep)
}

fn head_len(head: &Head) -> usize {
    match head {
        Head::Http(h) => h.len,
        Head::Uwsgi(p) => p.len,
    }
}

/// The scoreboard counts and, unless logging is off, uWSGI's request line.
fn log(
    ctx: &Ctx<'_>,
    conn: &Conn,
    head: &Head,
    reply: &static_files::Reply,
    start: Instant,
    sent: Option<u64>,
) {
    let w = ctx.w;
    let elapsed = start.elapsed();
    let outcome = crate::scoreboard::Outcome {
        status: reply.status,
        tx: reply.head.len() as u64 + sent.unwrap_or(0),
        elapsed_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        exception: false,
        write_error: sent.is_none(),
        read_error: false,
    };
    let counts = w.scoreboard.record(w.slot, ctx.core, &outcome);
    crate::offload::core::count_request(&outcome);
    if w.config.disable_logging {
        return;
    }
    let buf = conn.buf.filled();
    let (method, uri, protocol, vars) = match head {
        Head::Http(h) => (
            &buf[h.method.clone()],
            &buf[h.target.clone()],
            h.version.as_str().to_owned(),
            h.headers.len(),
        ),
        Head::Uwsgi(p) => {
            let var = |i: Option<usize>| i.map_or(&b""[..], |i| &buf[p.vars[i].1.clone()]);
            (
                var(p.method),
                var(p.uri),
                String::from_utf8_lossy(var(p.protocol)).into_owned(),
                p.vars.len(),
            )
        }
    };
    let logging = crate::log::requests();
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let body_bytes = sent.unwrap_or(0);
    if !logging.wants(reply.status, body_bytes, micros / 1000) {
        return;
    }
    let start_micros = crate::log::started_micros_ago(micros);
    let headers = reply.head.split(|b| *b == b'\n').count().saturating_sub(3);
    let line = logging.render(&crate::log::RequestLog {
        pid: w.pid,
        wid: w.id,
        worker_requests: counts.0,
        total_requests: counts.1,
        remote_addr: &conn.peer.addr,
        remote_user: "",
        host: "",
        user_agent: "",
        referer: "",
        content_length: 0,
        request_vars: &[],
        logvars: &[],
        vars,
        vars_bytes: head_len(head),
        start_micros,
        method,
        uri,
        body_bytes,
        micros,
        protocol: &protocol,
        status: reply.status,
        headers,
        head_bytes: reply.head.len(),
        core: ctx.core,
        memory: (0, 0),
        write_error: sent.is_none(),
        read_error: false,
    });
    crate::log::request(&line);
}
