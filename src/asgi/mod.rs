//! ASGI 3 (HTTP and lifespan) on the worker model: one asyncio event loop per worker process,
//! in its main thread, instead of the WSGI serving threads. The loop and the per-request tasks
//! live in `headrace._asgi` (Python); this module gives it what headrace already has in Rust:
//! the HTTP and uwsgi-protocol parsers with their limits and error responses (`parse`), the
//! chunked-body decoder, and the worker's bookkeeping (scoreboard counters, harakiri clock,
//! request log line, max-requests / reload-on-rss / lifetime recycling). See DESIGN.md, "ASGI".

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
}

static CTX: OnceLock<Ctx> = OnceLock::new();

fn ctx() -> PyResult<&'static Ctx> {
    CTX.get()
        .ok_or_else(|| PyRuntimeError::new_err("not an ASGI worker"))
}

/// Requests one ASGI worker takes from the `--http` router at once when nothing caps it: the
/// loop could take more, but past this many a request is better queued (and the queue seen)
/// than added to a loop that is already far behind. Granian's default backpressure is of the
/// same order (its backlog, 1024, per worker).
pub const ROUTER_CAPACITY: u32 = 1000;

/// How many requests the router may hand this worker at once: [`ROUTER_CAPACITY`]
/// (`--limit-concurrency`, where it is set, caps it here).
#[must_use]
pub fn router_capacity(_config: &crate::config::Config) -> u32 {
    ROUTER_CAPACITY
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
    let module = py.import("headrace._asgi")?;
    module
        .call_method1("serve", (app, socks, stop_fd, opts))?
        .extract()
}

/// Parse the next request head at the start of `buf`. `None`: more bytes are needed. An error
/// is `(-1, status, response bytes, reason)`; a head is `(len, method, target, http_version,
/// headers, (body_kind (0 none, 1 length, 2 chunked), content_length, keep_alive,
/// expect_continue), (client, server, scheme, root_path))`, the last four `None` unless the
/// head came in a uwsgi packet.
#[pyfunction]
fn _asgi_parse(py: Python<'_>, buf: &[u8], uwsgi: bool) -> PyResult<Option<Py<PyTuple>>> {
    let limits = ctx()?.settings.limits;
    let parsed = if uwsgi {
        parse_uwsgi(py, buf, limits)
    } else {
        parse_http(py, buf, limits)
    };
    match parsed {
        Ok(v) => Ok(v),
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

fn parse_http(
    py: Python<'_>,
    buf: &[u8],
    limits: crate::http::Limits,
) -> Result<Option<Py<PyTuple>>, HttpError> {
    let Some(h) = parse_head(buf, limits)? else {
        return Ok(None);
    };
    let headers = PyList::empty(py);
    for (n, v) in &h.headers {
        let name = buf[n.clone()].to_ascii_lowercase();
        let _ = headers.append((PyBytes::new(py, &name), PyBytes::new(py, &buf[v.clone()])));
    }
    let (kind, len) = match h.framing {
        Framing::None => (0, 0),
        Framing::Length(n) => (1, n),
        Framing::Chunked => (2, 0),
    };
    let version = match h.version {
        crate::http::parse::Version::Http10 => "1.0",
        crate::http::parse::Version::Http11 => "1.1",
    };
    let method = String::from_utf8_lossy(&buf[h.method.clone()]).into_owned();
    let none = py.None();
    let t = (
        h.len,
        method,
        PyBytes::new(py, &buf[h.target.clone()]),
        version,
        headers,
        (kind, len, h.keep_alive, h.expect_continue),
        (
            none.clone_ref(py),
            none.clone_ref(py),
            none.clone_ref(py),
            none,
        ),
    );
    Ok(t.into_pyobject(py).ok().map(Bound::unbind))
}

fn parse_uwsgi(
    py: Python<'_>,
    buf: &[u8],
    limits: crate::http::Limits,
) -> Result<Option<Py<PyTuple>>, HttpError> {
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
    let client = var(b"REMOTE_ADDR").map(|a| (text(a), port(var(b"REMOTE_PORT")).unwrap_or(0)));
    let server = var(b"SERVER_NAME").map(|n| (text(n), port(var(b"SERVER_PORT"))));
    let scheme = match (var(b"UWSGI_SCHEME"), var(b"HTTPS")) {
        (Some(s), _) => text(s),
        (None, Some(v)) if v.eq_ignore_ascii_case(b"on") || v == b"1" => "https".to_owned(),
        _ => "http".to_owned(),
    };
    let (kind, len) = if p.content_length > 0 {
        (1, p.content_length)
    } else {
        (0, 0)
    };
    let t = (
        p.len,
        method,
        PyBytes::new(py, &target),
        version,
        headers,
        (kind, len, p.keep_alive, false),
        (
            client,
            server,
            scheme,
            var(b"SCRIPT_NAME").map_or_else(String::new, text),
        ),
    );
    Ok(t.into_pyobject(py).ok().map(Bound::unbind))
}

fn now_ms() -> u64 {
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
    let c = ctx()?;
    let slot = c.scoreboard.slot(c.slot);
    if c.inflight.fetch_add(1, Ordering::Relaxed) == 0 {
        slot.busy.fetch_add(1, Ordering::Relaxed);
    }
    // The clock follows the oldest running HTTP request; open WebSockets (in flight too) do
    // not hold it.
    let core = c.scoreboard.core(c.slot, 0);
    if !core.running() {
        core.begin(now_ms(), method, uri);
    }
    let next = slot.requests.load(Ordering::Relaxed) + 1;
    Ok(match c.recycle.before_request(next) {
        Some(reason) => {
            retire(c, &reason);
            true
        }
        None => false,
    })
}

fn retire(c: &Ctx, reason: &str) {
    if c.recycle.retire(c.id, c.pid, reason) {
        let _ = crate::sys::fd::write_all(c.stop_write, &[1]);
    }
}

/// A request ended. `record` is `((status, head_bytes, body_bytes, response_headers,
/// request_headers, elapsed_us, start_micros), (exception, write_error, read_error), (method,
/// uri, protocol, remote), (host, user_agent, referer, content_length))`; `oldest` the `(start_ms, method, uri)` of the oldest
/// request still running, for the harakiri clock.
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
    let c = ctx()?;
    let (
        (status, head_bytes, body_bytes, headers, vars, elapsed_us, start_micros),
        (exception, write_error, read_error),
        (method, uri, protocol, remote),
        (host, user_agent, referer, content_length),
    ) = record;
    let slot = c.scoreboard.slot(c.slot);
    let core = c.scoreboard.core(c.slot, 0);
    if c.inflight.fetch_sub(1, Ordering::Relaxed) <= 1 {
        c.inflight.store(0, Ordering::Relaxed);
        core.end();
        slot.busy.fetch_sub(1, Ordering::Relaxed);
    } else if let Some((start, m, u)) = &oldest {
        core.begin(*start, m, u);
    } else {
        // Only WebSockets remain: no harakiri clock.
        core.end();
    }
    let outcome = Outcome {
        status,
        tx: body_bytes + head_bytes as u64,
        elapsed_us,
        exception,
        write_error,
        read_error,
    };
    let (mine, all) = c.scoreboard.record(c.slot, 0, &outcome);
    let logvars = crate::offload::core::end_request(&outcome);
    let logging = crate::log::requests();
    if c.settings.log_requests && logging.wants(status, body_bytes, elapsed_us / 1000) {
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
            remote_addr: &remote,
            remote_user: "",
            host: &host,
            user_agent: &user_agent,
            referer: &referer,
            content_length,
            request_vars: &[],
            logvars: &logvars,
            vars,
            vars_bytes: 0,
            start_micros,
            method: &method,
            uri: &uri,
            body_bytes,
            micros: elapsed_us,
            protocol: &protocol,
            status,
            headers,
            head_bytes,
            core: 0,
            memory,
            write_error,
            read_error,
        });
        crate::log::request(&line);
    }
    if let Some(reason) = c.recycle.after_app() {
        retire(c, &reason);
    }
    Ok(())
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
    ws::register(m)
}
