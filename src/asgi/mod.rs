//! ASGI 3 (HTTP and lifespan) on the worker model: one asyncio event loop per worker process,
//! in its main thread, instead of the WSGI serving threads. The loop, the lifespan and the
//! WebSocket sessions live in `headrace._asgi` (Python), which starts each request's asyncio
//! Task on a Rust coroutine (`coro.rs`); this module gives it what headrace already has in Rust:
//! the HTTP and uwsgi-protocol parsers with their limits and error responses (`parse`), the
//! chunked-body decoder, and the worker's bookkeeping (scoreboard counters, harakiri clock,
//! request log line, max-requests / reload-on-rss / lifetime recycling). See DESIGN.md, "ASGI".
//!
//! The HTTP connections are Rust too: `hub.rs` (the worker's connections, `AsgiHub`), `conn.rs`
//! (one connection, `AsgiConn`), `request.rs` and `response.rs` (a request's two sides),
//! `file.rs` (files sent after a head), `channel.rs` (the app's `receive` / `send`) and
//! `coro.rs` (the request coroutine and the finished awaitable). `ws.rs` is the WebSocket codec.

mod channel;
mod conn;
mod coro;
mod file;
mod hub;
mod request;
mod response;

use crate::http::parse::{parse_head, Framing};
use crate::http::{ChunkedDecoder, HttpError};
use crate::scoreboard::{Outcome, Scoreboard};
use crate::worker::recycle::Recycle;
use crate::worker::Listener;
use crate::wsgi::Settings;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

mod ws;

/// What the Python loop's callbacks reach: this worker's identity and bookkeeping, owned so
/// that it can live in a static (the worker process never returns from serving).
pub struct Ctx {
    /// 1-based worker id.
    pub id: usize,
    /// Scoreboard slot.
    pub slot: usize,
    /// This process's pid.
    pub pid: i32,
    /// The master's pid when the worker started (a change means it is gone).
    pub master: i32,
    /// An owned mapping of the scoreboard.
    pub scoreboard: Scoreboard,
    /// When this worker retires by itself.
    pub recycle: Recycle,
    /// Limits, timeouts, logging.
    pub settings: Settings,
    /// Write end of the stop pipe: a retirement wakes the loop through it.
    pub stop_write: RawFd,
    /// Requests running in the loop now.
    pub inflight: AtomicUsize,
    /// `--static-map` and friends: served before the app in direct mode (not on router links:
    /// the router serves them itself).
    pub static_files: crate::static_files::StaticConfig,
}

static CTX: OnceLock<Ctx> = OnceLock::new();

pub(crate) fn ctx() -> PyResult<&'static Ctx> {
    CTX.get()
        .ok_or_else(|| PyRuntimeError::new_err("not an ASGI worker"))
}

/// Requests one ASGI worker takes from the `--http` router at once when nothing caps it: the
/// loop could take more, but past this many a request is better queued (and the queue seen)
/// than added to a loop that is already far behind. Granian's default backpressure is of the
/// same order (its backlog, 1024, per worker).
pub const ROUTER_CAPACITY: u32 = 1000;

/// `--harakiri` in an ASGI worker: the worker cancels an overdue request's task itself (its
/// other requests go on); the master kills the worker only when the request is still running
/// this much later (the task ignored the cancellation, or the loop is blocked).
pub const HARAKIRI_CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// How many requests the router may hand this worker at once: `--limit-concurrency` when set
/// (the router then queues what the worker would answer 503), else [`ROUTER_CAPACITY`].
#[must_use]
pub fn router_capacity(config: &crate::config::Config) -> u32 {
    match config.asgi.limit_concurrency {
        0 => ROUTER_CAPACITY,
        n => u32::try_from(n).unwrap_or(u32::MAX),
    }
}

/// Serve `app` (an ASGI 3 callable) on `listeners` until the worker stops; returns the exit
/// code (0, or the failed-app code when lifespan startup failed).
pub fn serve(
    py: Python<'_>,
    ctx: Ctx,
    app: Py<PyAny>,
    listeners: &[(&Listener, bool)],
    stop_fd: RawFd,
    config: &crate::config::Config,
) -> PyResult<i32> {
    if config.threads > 1 {
        crate::log!(
            "headrace: worker {} serves an ASGI app on one event loop: --threads {} is not used",
            ctx.id,
            config.threads
        );
    }
    // What the `--http` router may hand this loop at once (see `Slot::concurrency`); stored
    // before `_asgi_ready` sets `ready`, which the router reads it after.
    ctx.scoreboard
        .slot(ctx.slot)
        .concurrency
        .store(router_capacity(config), Ordering::Relaxed);
    if CTX.set(ctx).is_err() {
        return Err(PyRuntimeError::new_err("ASGI serving started twice"));
    }
    let socks = PyList::empty(py);
    for (l, link) in listeners {
        let kind = match l.kind {
            crate::config::SocketKind::Uwsgi => "uwsgi",
            _ => "http",
        };
        let port: Option<u16> = l.server_port.parse().ok();
        socks.append((
            l.fd.as_raw_fd(),
            kind,
            l.server_name.as_str(),
            port,
            l.unix_path.as_ref().map(|p| p.display().to_string()),
            *link,
        ))?;
    }
    let opts = PyDict::new(py);
    opts.set_item("lifespan", config.asgi.lifespan.as_str())?;
    opts.set_item("loop", config.asgi.event_loop.as_str())?;
    opts.set_item("keepalive", config.keepalive_timeout.as_secs_f64())?;
    opts.set_item("socket_timeout", config.socket_timeout.as_secs_f64())?;
    opts.set_item("worker_id", CTX.get().map_or(0, |c| c.id))?;
    opts.set_item("ws_max_size", config.asgi.ws_max_size)?;
    opts.set_item(
        "ws_ping_interval",
        config.asgi.ws_ping_interval.as_secs_f64(),
    )?;
    opts.set_item("limit_concurrency", config.asgi.limit_concurrency)?;
    opts.set_item(
        "harakiri",
        config.supervision.harakiri.map_or(0.0, |d| d.as_secs_f64()),
    )?;
    // Streamed bodies allocate and free buffers of a few hundred KiB per chunk.
    crate::sys::proc::keep_freed_heap(16 << 20);
    let module = py.import("headrace._asgi")?;
    module
        .call_method1("serve", (app, socks, stop_fd, opts))?
        .extract()
}

/// Parse the next request head at the start of `buf`. `None`: more bytes are needed. An error
/// is `(-1, status, response bytes, reason)`; a head is `(len, method, target, http_version,
/// headers, (body_kind (0 none, 1 length, 2 chunked), content_length, keep_alive,
/// expect_continue), (client, server, scheme, root_path))`, the last four `None` unless the
/// head came in a uwsgi packet. (The connection code parses with `parse` directly; this form is
/// what a handed-off connection, e.g. a WebSocket upgrade, receives.)
#[pyfunction]
fn _asgi_parse(py: Python<'_>, buf: &[u8], uwsgi: bool) -> PyResult<Option<Py<PyTuple>>> {
    let limits = ctx()?.settings.limits;
    match parse(py, buf, uwsgi, limits, false) {
        Ok(None) => Ok(None),
        Ok(Some(h)) => h.into_tuple(py).map(Some),
        Err(e) => Ok(Some(
            (
                -1i64,
                e.status(),
                PyBytes::new(py, &e.response()),
                e.to_string(),
            )
                .into_pyobject(py)?
                .unbind(),
        )),
    }
}

/// A request head as the ASGI connection uses it.
pub(crate) struct Parsed<'py> {
    /// Bytes of the head (HTTP) or packet header and vars (uwsgi).
    pub len: usize,
    pub method: String,
    pub target: Vec<u8>,
    /// `1.1`, `1.0` (the HTTP version without `HTTP/`).
    pub version: String,
    /// `[(name, value)]`, names lowercased, as the scope wants them.
    pub headers: Bound<'py, PyList>,
    pub header_count: usize,
    /// 0 none, 1 content-length, 2 chunked.
    pub body_kind: u8,
    pub content_length: u64,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// From a uwsgi packet: `(addr, port)` of the client, `(name, port)` of the server.
    pub client: Option<Bound<'py, PyAny>>,
    pub server: Option<Bound<'py, PyAny>>,
    pub scheme: Option<String>,
    pub root_path: String,
    /// `Upgrade: websocket` was asked for.
    pub websocket: bool,
    /// Host, User-Agent and Referer for the request log (filled only when asked).
    pub log: Option<(String, String, String)>,
}

impl Parsed<'_> {
    fn into_tuple(self, py: Python<'_>) -> PyResult<Py<PyTuple>> {
        let t = (
            self.len,
            self.method,
            PyBytes::new(py, &self.target),
            self.version,
            self.headers,
            (
                self.body_kind,
                self.content_length,
                self.keep_alive,
                self.expect_continue,
            ),
            (self.client, self.server, self.scheme, self.root_path),
        );
        Ok(t.into_pyobject(py)?.unbind())
    }
}

/// Parse the request head (HTTP) or packet (uwsgi) at the start of `buf`: `Ok(None)` means more
/// bytes are needed. `log`: also keep the fields the request log line shows.
pub(crate) fn parse<'py>(
    py: Python<'py>,
    buf: &[u8],
    uwsgi: bool,
    limits: crate::http::Limits,
    log: bool,
) -> Result<Option<Parsed<'py>>, HttpError> {
    if uwsgi {
        parse_uwsgi(py, buf, limits, log)
    } else {
        parse_http(py, buf, limits, log)
    }
}

fn latin1(v: &[u8]) -> String {
    v.iter().map(|&c| char::from(c)).collect()
}

fn parse_http<'py>(
    py: Python<'py>,
    buf: &[u8],
    limits: crate::http::Limits,
    log: bool,
) -> Result<Option<Parsed<'py>>, HttpError> {
    let Some(h) = parse_head(buf, limits)? else {
        return Ok(None);
    };
    let mut items: Vec<Bound<'py, PyAny>> = Vec::with_capacity(h.headers.len());
    let mut websocket = false;
    let mut fields = log.then(|| (String::new(), String::new(), String::new()));
    for (n, v) in &h.headers {
        let name = buf[n.clone()].to_ascii_lowercase();
        let value = &buf[v.clone()];
        if name == b"upgrade" && value.eq_ignore_ascii_case(b"websocket") {
            websocket = true;
        }
        if let Some((host, ua, referer)) = fields.as_mut() {
            match name.as_slice() {
                b"host" => *host = latin1(value),
                b"user-agent" => *ua = latin1(value),
                b"referer" => *referer = latin1(value),
                _ => {}
            }
        }
        let pair = PyTuple::new(py, [PyBytes::new(py, &name), PyBytes::new(py, value)])
            .map_err(|_| HttpError::BadRequest("header"))?;
        items.push(pair.into_any());
    }
    let headers = PyList::new(py, items).map_err(|_| HttpError::BadRequest("header"))?;
    let (body_kind, content_length) = match h.framing {
        Framing::None => (0, 0),
        Framing::Length(n) => (1, n),
        Framing::Chunked => (2, 0),
    };
    let version = match h.version {
        crate::http::parse::Version::Http10 => "1.0",
        crate::http::parse::Version::Http11 => "1.1",
    };
    Ok(Some(Parsed {
        len: h.len,
        method: String::from_utf8_lossy(&buf[h.method.clone()]).into_owned(),
        target: buf[h.target.clone()].to_vec(),
        version: version.to_owned(),
        header_count: h.headers.len(),
        headers,
        body_kind,
        content_length,
        keep_alive: h.keep_alive,
        expect_continue: h.expect_continue,
        client: None,
        server: None,
        scheme: None,
        root_path: String::new(),
        websocket,
        log: fields,
    }))
}

#[allow(
    clippy::too_many_lines,
    reason = "one packet's variables mapped to the scope in order"
)]
fn parse_uwsgi<'py>(
    py: Python<'py>,
    buf: &[u8],
    limits: crate::http::Limits,
    log: bool,
) -> Result<Option<Parsed<'py>>, HttpError> {
    let Some(p) = crate::uwsgi_proto::parse(buf, limits.head)? else {
        return Ok(None);
    };
    if limits.body > 0 && p.content_length > limits.body {
        return Err(HttpError::BodyTooLarge(limits.body));
    }
    let var = |k: &[u8]| -> Option<&[u8]> {
        p.vars
            .iter()
            .find(|(kr, _)| &buf[kr.clone()] == k)
            .map(|(_, vr)| &buf[vr.clone()])
    };
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let headers = PyList::empty(py);
    let mut websocket = false;
    for (kr, vr) in &p.vars {
        let k = &buf[kr.clone()];
        let name = if let Some(rest) = k.strip_prefix(b"HTTP_") {
            rest.iter()
                .map(|&c| {
                    if c == b'_' {
                        b'-'
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect::<Vec<u8>>()
        } else if k == b"CONTENT_TYPE" || k == b"CONTENT_LENGTH" {
            if buf[vr.clone()].is_empty() {
                continue;
            }
            k.iter()
                .map(|&c| {
                    if c == b'_' {
                        b'-'
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect()
        } else {
            continue;
        };
        if name == b"upgrade" && buf[vr.clone()].eq_ignore_ascii_case(b"websocket") {
            websocket = true;
        }
        let _ = headers.append((PyBytes::new(py, &name), PyBytes::new(py, &buf[vr.clone()])));
    }
    let method = var(b"REQUEST_METHOD").map_or_else(|| "GET".to_owned(), text);
    let target = match var(b"REQUEST_URI") {
        Some(u) if !u.is_empty() => u.to_vec(),
        _ => {
            let mut t = var(b"PATH_INFO").unwrap_or(b"/").to_vec();
            if let Some(q) = var(b"QUERY_STRING").filter(|q| !q.is_empty()) {
                t.push(b'?');
                t.extend_from_slice(q);
            }
            t
        }
    };
    let version = var(b"SERVER_PROTOCOL")
        .and_then(|v| v.strip_prefix(b"HTTP/"))
        .map_or_else(|| "1.1".to_owned(), text);
    let port = |v: Option<&[u8]>| v.and_then(|v| text(v).parse::<u16>().ok());
    let client = match var(b"REMOTE_ADDR") {
        Some(a) => Some(
            (text(a), port(var(b"REMOTE_PORT")).unwrap_or(0))
                .into_pyobject(py)
                .map_err(|_| HttpError::BadRequest("REMOTE_ADDR"))?
                .into_any(),
        ),
        None => None,
    };
    let server = match var(b"SERVER_NAME") {
        Some(n) => Some(
            (text(n), port(var(b"SERVER_PORT")))
                .into_pyobject(py)
                .map_err(|_| HttpError::BadRequest("SERVER_NAME"))?
                .into_any(),
        ),
        None => None,
    };
    let scheme = match (var(b"UWSGI_SCHEME"), var(b"HTTPS")) {
        (Some(s), _) => text(s),
        (None, Some(v)) if v.eq_ignore_ascii_case(b"on") || v == b"1" => "https".to_owned(),
        _ => "http".to_owned(),
    };
    let (body_kind, content_length) = if p.content_length > 0 {
        (1, p.content_length)
    } else {
        (0, 0)
    };
    let log = log.then(|| {
        (
            var(b"HTTP_HOST").map(latin1).unwrap_or_default(),
            var(b"HTTP_USER_AGENT").map(latin1).unwrap_or_default(),
            var(b"HTTP_REFERER").map(latin1).unwrap_or_default(),
        )
    });
    Ok(Some(Parsed {
        len: p.len,
        method,
        target,
        version,
        header_count: headers.len(),
        headers,
        body_kind,
        content_length,
        keep_alive: p.keep_alive,
        expect_continue: false,
        client,
        server,
        scheme: Some(scheme),
        root_path: var(b"SCRIPT_NAME").map_or_else(String::new, text),
        websocket,
        log,
    }))
}

pub(crate) fn now_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(wall.as_millis()).unwrap_or(u64::MAX)
}

/// A request begins: busy counters and the harakiri clock (which follows the oldest running
/// request). `True`: this is the worker's last request (max-requests); the loop stops taking
/// new ones.
#[pyfunction]
fn _asgi_begin(method: &[u8], uri: &[u8]) -> PyResult<bool> {
    Ok(begin(ctx()?, method, uri))
}

/// See `_asgi_begin`.
pub(crate) fn begin(c: &Ctx, method: &[u8], uri: &[u8]) -> bool {
    let slot = c.scoreboard.slot(c.slot);
    let before = c.inflight.fetch_add(1, Ordering::Relaxed);
    if before == 0 {
        slot.busy.fetch_add(1, Ordering::Relaxed);
    }
    slot.in_flight.store(
        u32::try_from(before + 1).unwrap_or(u32::MAX),
        Ordering::Relaxed,
    );
    // The clock follows the oldest running HTTP request; open WebSockets (in flight too) do
    // not hold it.
    let core = c.scoreboard.core(c.slot, 0);
    if !core.running() {
        core.begin(now_ms(), method, uri);
    }
    let next = slot.requests.load(Ordering::Relaxed) + 1;
    match c.recycle.before_request(next) {
        Some(reason) => {
            retire(c, &reason);
            true
        }
        None => false,
    }
}

fn retire(c: &Ctx, reason: &str) {
    if c.recycle.retire(c.id, c.pid, reason) {
        let _ = crate::sys::fd::write_all(c.stop_write, &[1]);
    }
}

/// What one request's end records: counters, then the request log line.
pub(crate) struct EndRecord<'a> {
    pub status: u16,
    pub head_bytes: usize,
    pub body_bytes: u64,
    /// Response headers sent.
    pub headers: usize,
    /// Request headers received.
    pub vars: usize,
    pub elapsed_us: u64,
    pub start_micros: u64,
    pub exception: bool,
    pub write_error: bool,
    pub read_error: bool,
    pub method: &'a [u8],
    pub uri: &'a [u8],
    pub protocol: &'a str,
    pub remote: &'a str,
    pub host: &'a str,
    pub user_agent: &'a str,
    pub referer: &'a str,
    pub content_length: u64,
}

/// A request ended. `record` is `((status, head_bytes, body_bytes, response_headers,
/// request_headers, elapsed_us, start_micros), (exception, write_error, read_error), (method,
/// uri, protocol, remote), (host, user_agent, referer, content_length))`; `oldest` the
/// `(start_ms, method, uri)` of the oldest request still running, for the harakiri clock.
#[pyfunction]
#[allow(
    clippy::type_complexity,
    clippy::needless_pass_by_value,
    reason = "the fields of one log line, as one tuple from Python"
)]
fn _asgi_end(
    record: (
        (u16, usize, u64, usize, usize, u64, u64),
        (bool, bool, bool),
        (Vec<u8>, Vec<u8>, String, String),
        (String, String, String, u64),
    ),
    oldest: Option<(u64, Vec<u8>, Vec<u8>)>,
) -> PyResult<()> {
    let (
        (status, head_bytes, body_bytes, headers, vars, elapsed_us, start_micros),
        (exception, write_error, read_error),
        (method, uri, protocol, remote),
        (host, user_agent, referer, content_length),
    ) = record;
    let r = EndRecord {
        status,
        head_bytes,
        body_bytes,
        headers,
        vars,
        elapsed_us,
        start_micros,
        exception,
        write_error,
        read_error,
        method: &method,
        uri: &uri,
        protocol: &protocol,
        remote: &remote,
        host: &host,
        user_agent: &user_agent,
        referer: &referer,
        content_length,
    };
    end(
        ctx()?,
        &r,
        oldest
            .as_ref()
            .map(|(s, m, u)| (*s, m.as_slice(), u.as_slice())),
    );
    Ok(())
}

/// See `_asgi_end`.
pub(crate) fn end(c: &Ctx, r: &EndRecord<'_>, oldest: Option<(u64, &[u8], &[u8])>) {
    let slot = c.scoreboard.slot(c.slot);
    let core = c.scoreboard.core(c.slot, 0);
    let before = c.inflight.fetch_sub(1, Ordering::Relaxed);
    slot.in_flight.store(
        u32::try_from(before.saturating_sub(1)).unwrap_or(u32::MAX),
        Ordering::Relaxed,
    );
    if before <= 1 {
        c.inflight.store(0, Ordering::Relaxed);
        core.end();
        slot.busy.fetch_sub(1, Ordering::Relaxed);
    } else if let Some((start, m, u)) = oldest {
        core.begin(start, m, u);
    } else {
        // Only WebSockets remain: no harakiri clock.
        core.end();
    }
    let outcome = Outcome {
        status: r.status,
        tx: r.body_bytes + r.head_bytes as u64,
        elapsed_us: r.elapsed_us,
        exception: r.exception,
        write_error: r.write_error,
        read_error: r.read_error,
    };
    let (mine, all) = c.scoreboard.record(c.slot, 0, &outcome);
    let logvars = crate::offload::core::end_request(&outcome);
    let logging = crate::log::requests();
    if c.settings.log_requests && logging.wants(r.status, r.body_bytes, r.elapsed_us / 1000) {
        let memory = if logging.needs_memory() {
            crate::sys::proc::memory("/proc/self/statm")
        } else {
            (0, 0)
        };
        let line = logging.render(&crate::log::RequestLog {
            pid: c.pid,
            wid: c.id,
            worker_requests: mine,
            total_requests: all,
            remote_addr: r.remote,
            remote_user: "",
            host: r.host,
            user_agent: r.user_agent,
            referer: r.referer,
            content_length: r.content_length,
            request_vars: &[],
            logvars: &logvars,
            vars: r.vars,
            vars_bytes: 0,
            start_micros: r.start_micros,
            method: r.method,
            uri: r.uri,
            body_bytes: r.body_bytes,
            micros: r.elapsed_us,
            protocol: r.protocol,
            status: r.status,
            headers: r.headers,
            head_bytes: r.head_bytes,
            core: 0,
            memory,
            write_error: r.write_error,
            read_error: r.read_error,
        });
        crate::log::request(&line);
    }
    if let Some(reason) = c.recycle.after_app() {
        retire(c, &reason);
    }
}

/// Once a second: lifetime and memory recycling, and a master that went away. `True`: stop.
#[pyfunction]
fn _asgi_periodic() -> PyResult<bool> {
    let c = ctx()?;
    if let Some(reason) = c.recycle.periodic() {
        retire(c, &reason);
    }
    Ok(crate::sys::proc::getppid() != c.master)
}

/// The worker takes requests (`True`, after lifespan startup) or no longer does (stopping):
/// the router and the master's reload read this.
#[pyfunction]
fn _asgi_ready(ready: bool) -> PyResult<()> {
    let c = ctx()?;
    c.scoreboard
        .slot(c.slot)
        .ready
        .store(u32::from(ready), Ordering::Release);
    Ok(())
}

/// Write a line to headrace's log.
#[pyfunction]
fn _asgi_log(line: &str) {
    crate::log!("{line}");
}

/// A chunked request body being decoded (`Transfer-Encoding: chunked`), with `--limit-post`.
#[pyclass(unsendable)]
struct AsgiChunked {
    decoder: ChunkedDecoder,
}

#[pymethods]
impl AsgiChunked {
    #[new]
    fn new() -> PyResult<Self> {
        Ok(Self {
            decoder: ChunkedDecoder::new(ctx()?.settings.limits.body),
        })
    }

    /// Decode what `data` holds: `(consumed, body bytes, done)`. Malformed framing or a body
    /// over the limit raises `ValueError(status, reason)`.
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        data: &[u8],
    ) -> PyResult<(usize, Bound<'py, PyBytes>, bool)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < data.len() && !self.decoder.is_done() {
            let (n, r) = self
                .decoder
                .step(&data[at..])
                .map_err(|e| PyValueError::new_err((e.status(), e.to_string())))?;
            out.extend_from_slice(&data[at + r.start..at + r.end]);
            if n == 0 {
                break;
            }
            at += n;
        }
        Ok((at, PyBytes::new(py, &out), self.decoder.is_done()))
    }
}

/// Add the functions the Python loop calls to `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_asgi_parse, m)?)?;
    m.add_function(wrap_pyfunction!(_asgi_begin, m)?)?;
    m.add_function(wrap_pyfunction!(_asgi_end, m)?)?;
    m.add_function(wrap_pyfunction!(_asgi_periodic, m)?)?;
    m.add_function(wrap_pyfunction!(_asgi_ready, m)?)?;
    m.add_function(wrap_pyfunction!(_asgi_log, m)?)?;
    m.add_class::<AsgiChunked>()?;
    hub::register(m)?;
    conn::register(m)?;
    channel::register(m)?;
    coro::register(m)?;
    ws::register(m)
}
