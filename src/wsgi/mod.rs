//! The WSGI bridge: environ, `wsgi.input`, `start_response`, response iteration. Everything
//! from "a request head has been parsed" to "the response is written" lives here, shared by
//! every front (direct HTTP now, the uwsgi protocol later).

pub mod environ;
pub mod file_wrapper;
pub mod input;
pub mod load;
pub mod progress;
pub mod response;

use crate::http::{Framing, Limits, ReadBuf, RequestHead, Version};
use crate::uwsgi_proto::Packet;
use environ::{EnvironBuilder, Peer, VarStats};
use file_wrapper::FileWrapper;
use input::{Body, Input};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use response::{ResponseState, StartResponse};
use std::ops::Range;
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Register the Python-visible classes.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Input>()?;
    m.add_class::<StartResponse>()?;
    m.add_class::<FileWrapper>()?;
    Ok(())
}

/// A loaded app with what a worker needs to call it.
pub struct App {
    callable: Py<PyAny>,
    environ: EnvironBuilder,
    format_exception: Py<PyAny>,
}

/// Per-worker serving settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Head and body limits.
    pub limits: Limits,
    /// Read/write stall timeout.
    pub timeout: Duration,
    /// Requests may be logged (every one, or those `--log-4xx` and the like select).
    pub log_requests: bool,
    /// The worker's id, 1-based (`%(wid)`).
    pub worker_id: usize,
}

impl Settings {
    /// The settings of worker `id`.
    #[must_use]
    pub fn for_worker(config: &crate::config::Config, id: usize) -> Self {
        Self {
            limits: Limits {
                head: config.buffer_size,
                body: config.limit_post,
            },
            timeout: config.socket_timeout,
            log_requests: crate::log::requests().any(),
            worker_id: id,
        }
    }
}

/// Who serves: for the log line and the scoreboard.
pub struct Server<'a> {
    /// Worker pid.
    pub pid: i32,
    /// The worker's scoreboard slot.
    pub slot: usize,
    /// Thread index ("core").
    pub core: usize,
    /// Shared counters.
    pub scoreboard: &'a crate::scoreboard::Scoreboard,
    /// Called when the app has returned, before the response is written (the worker decides
    /// there whether this response is its last, e.g. for --reload-on-rss).
    pub after_app: Option<&'a dyn Fn()>,
    /// The worker's stop flag: once it is set, responses say `Connection: close` and the
    /// connection ends after them. `None` for connections that stay open through a stop.
    pub stopping: Option<&'static std::sync::atomic::AtomicBool>,
}

impl App {
    /// Wrap a loaded callable; builds the environ templates.
    pub fn new(
        py: Python<'_>,
        callable: Py<PyAny>,
        constants: &environ::Constants<'_>,
    ) -> PyResult<Self> {
        let extra = PyDict::new(py);
        extra.set_item("wsgi.errors", py.import("sys")?.getattr("stderr")?)?;
        extra.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        Ok(Self {
            callable,
            environ: EnvironBuilder::new(py, constants, &extra)?,
            format_exception: py
                .import("traceback")?
                .getattr("format_exception")?
                .unbind(),
        })
    }

    /// Format an exception with its traceback, as Python prints it.
    pub fn format_error(&self, py: Python<'_>, err: &PyErr) -> String {
        let args = (err.get_type(py), err.value(py), err.traceback(py));
        match self.format_exception.bind(py).call1(args) {
            Ok(lines) => lines
                .try_iter()
                .map(|it| {
                    it.filter_map(|l| l.ok().map(|l| l.to_string()))
                        .collect::<String>()
                })
                .unwrap_or_default(),
            Err(_) => format!("{err}\n"),
        }
    }
}

/// A parsed request head from either front.
pub enum Head {
    /// An HTTP/1.x request head (`--http-socket`).
    Http(RequestHead),
    /// A uwsgi packet (`--socket`, nginx, the router).
    Uwsgi(Packet),
}

/// What serving needs to know of a head, whichever front it came from.
struct Shape {
    method: Range<usize>,
    uri: Range<usize>,
    protocol: Range<usize>,
    version: Version,
    keep_alive: bool,
    is_head: bool,
    framing: Framing,
    expect_continue: bool,
    len: usize,
    /// REMOTE_ADDR as the log shows it (the packet's, behind a proxy).
    remote: Option<Range<usize>>,
}

impl Head {
    fn shape(&self, buf: &[u8]) -> Shape {
        match self {
            Self::Http(h) => Shape {
                method: h.method.clone(),
                uri: h.target.clone(),
                protocol: 0..0,
                version: h.version,
                keep_alive: h.keep_alive,
                is_head: h.is_head,
                framing: h.framing,
                expect_continue: h.expect_continue,
                len: h.len,
                remote: None,
            },
            Self::Uwsgi(p) => {
                let var = |i: Option<usize>| i.map_or(0..0, |i| p.vars[i].1.clone());
                let method = var(p.method);
                let remote = p
                    .vars
                    .iter()
                    .find(|(k, _)| &buf[k.clone()] == b"REMOTE_ADDR")
                    .map(|(_, v)| v.clone());
                Shape {
                    is_head: &buf[method.clone()] == b"HEAD",
                    method,
                    uri: var(p.uri),
                    protocol: var(p.protocol),
                    // Without the router's keep-alive variable (nginx), the response is framed
                    // as HTTP/1.0: no chunked coding, the end of the body is the close.
                    version: if p.keep_alive {
                        Version::Http11
                    } else {
                        Version::Http10
                    },
                    keep_alive: p.keep_alive,
                    framing: if p.content_length > 0 {
                        Framing::Length(p.content_length)
                    } else {
                        Framing::None
                    },
                    expect_continue: false,
                    len: p.len,
                    remote,
                }
            }
        }
    }
}

/// One request to serve: the connection's socket and buffer, whose front holds the head.
pub struct Exchange<'a> {
    /// The client socket (nonblocking).
    pub fd: RawFd,
    /// Who the client is.
    pub peer: &'a Peer,
    /// The read buffer; the head is its first bytes.
    pub buf: ReadBuf,
    /// The parsed head.
    pub head: Head,
}

/// What happened to a request, for the log line.
struct Summary {
    status: u16,
    body_bytes: u64,
    head_bytes: usize,
    headers: usize,
    /// The app raised (or broke the protocol), for the stats.
    exception: bool,
    /// Writing the response failed.
    write_error: bool,
    /// The client broke the request body.
    read_error: bool,
}

/// Serve one request. Returns the buffer (holding any pipelined bytes) when the connection may
/// carry another request, `None` when it must close.
#[must_use]
#[allow(
    clippy::too_many_lines,
    reason = "one request from head to log line, in the order it happens"
)]
pub fn serve(
    py: Python<'_>,
    app: &App,
    settings: &Settings,
    server: &Server<'_>,
    ex: Exchange<'_>,
) -> Option<ReadBuf> {
    let start = Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start_micros = u64::try_from(wall.as_micros()).unwrap_or(u64::MAX);
    let start_ms = u64::try_from(wall.as_millis()).unwrap_or(u64::MAX);
    let Exchange {
        fd,
        peer,
        mut buf,
        head,
    } = ex;
    let slot = server.scoreboard.slot(server.slot);
    let core = server.scoreboard.core(server.slot, server.core);
    let shape = head.shape(buf.filled());
    let method = &buf.filled()[shape.method.clone()];
    let uri = &buf.filled()[shape.uri.clone()];
    core.begin(start_ms, method, uri);
    let log_fields = (settings.log_requests && !not_logged(uri)).then(|| LogFields {
        method: method.to_vec(),
        uri: uri.to_vec(),
        protocol: match &head {
            Head::Http(h) => h.version.as_str().as_bytes().to_vec(),
            Head::Uwsgi(_) => buf.filled()[shape.protocol.clone()].to_vec(),
        },
        remote: shape.remote.as_ref().map_or_else(
            || peer.addr.clone(),
            |r| String::from_utf8_lossy(&buf.filled()[r.clone()]).into_owned(),
        ),
    });
    let mut response = ResponseState::new(
        fd,
        shape.version,
        shape.keep_alive,
        shape.is_head,
        settings.timeout,
        server.stopping,
    );

    let built = match &head {
        Head::Http(h) => app.environ.build(py, buf.filled(), h, peer),
        Head::Uwsgi(p) => app.environ.build_uwsgi(py, buf.filled(), p, peer),
    };
    buf.consume(shape.len);
    let body = Body::new(
        fd,
        buf,
        shape.framing,
        settings.limits.body,
        shape.expect_continue,
        settings.timeout,
    );
    response.body_progress = body.progress();
    let (environ, stats) = match built {
        Ok(v) => v,
        Err(err) => {
            crate::log!(
                "headrace: cannot build the environ: {}",
                app.format_error(py, &err)
            );
            let _ = response.send_500(py);
            core.end();
            return None;
        }
    };

    // The variables the line needs are read before the app can change the environ.
    let request_vars = log_fields
        .as_ref()
        .map(|_| RequestVars::read(&environ, crate::log::requests().needs_request_vars()));
    slot.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::offload::core::begin_request(server.slot, server.core, fd);
    // `route*` rules may answer in the app's place or change its headers (uWSGI's routing).
    let routed = crate::routing::route(&environ, app.callable.bind(py));
    let callable = routed.as_ref().unwrap_or_else(|| app.callable.bind(py));
    let (summary, body) = call_app(py, (app, callable), &environ, body, response, peer, server);
    slot.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    core.end();

    let next = body.and_then(|b| {
        if b.is_complete() {
            b.finish()
        } else {
            py.detach(|| b.finish())
        }
    });
    let outcome = crate::scoreboard::Outcome {
        status: summary.status,
        tx: summary.body_bytes + summary.head_bytes as u64,
        elapsed_us: u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        exception: summary.exception,
        write_error: summary.write_error,
        read_error: summary.read_error,
    };
    let counts = server.scoreboard.record(server.slot, server.core, &outcome);
    let logvars = crate::offload::core::end_request(&outcome);
    if let Some(fields) = log_fields {
        log_request(
            server,
            settings.worker_id,
            counts,
            &fields,
            (request_vars.as_ref(), &logvars),
            &stats,
            (start, start_micros),
            &summary,
        );
    }
    next
}

/// The request side of a log line, copied before the buffer is handed to the body.
struct LogFields {
    method: Vec<u8>,
    uri: Vec<u8>,
    protocol: Vec<u8>,
    remote: String,
}

/// The request variables a log format reads, copied from the environ before the app runs
/// (uWSGI reads them from the request's own variables, which the app cannot change).
#[derive(Default)]
struct RequestVars {
    user: String,
    host: String,
    user_agent: String,
    referer: String,
    forwarded_for: Option<String>,
    content_length: u64,
    vars: Vec<Option<String>>,
}

impl RequestVars {
    /// REMOTE_USER (the default line shows it, as uWSGI's does behind nginx's auth), and the
    /// rest only when `full`.
    fn read(environ: &Bound<'_, PyDict>, full: bool) -> Self {
        let get = |k: &str| -> Option<String> {
            // CGI variables only: `wsgi.*` keys are not request variables in uWSGI.
            if k.contains('.') {
                return None;
            }
            environ
                .get_item(k)
                .ok()
                .flatten()
                .and_then(|v| v.extract::<String>().ok())
        };
        if !full {
            return Self {
                user: get("REMOTE_USER").unwrap_or_default(),
                ..Self::default()
            };
        }
        let names = crate::log::requests()
            .format
            .as_ref()
            .map_or(&[][..], |f| f.request_vars.as_slice());
        Self {
            user: get("REMOTE_USER").unwrap_or_default(),
            host: get("HTTP_HOST").unwrap_or_default(),
            user_agent: get("HTTP_USER_AGENT").unwrap_or_default(),
            referer: get("HTTP_REFERER").unwrap_or_default(),
            forwarded_for: get("HTTP_X_FORWARDED_FOR"),
            content_length: get("CONTENT_LENGTH")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            vars: names.iter().map(|n| get(n)).collect(),
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the pieces of one log line, gathered at different points of the request"
)]
fn log_request(
    server: &Server<'_>,
    wid: usize,
    (mine, all): (u64, u64),
    r: &LogFields,
    (vars, logvars): (Option<&RequestVars>, &[crate::offload::core::Logvar]),
    stats: &VarStats,
    (start, start_micros): (Instant, u64),
    s: &Summary,
) {
    let logging = crate::log::requests();
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    if !logging.wants(s.status, s.body_bytes, micros / 1000) {
        return;
    }
    let protocol = String::from_utf8_lossy(&r.protocol);
    let empty = RequestVars::default();
    let v = vars.unwrap_or(&empty);
    let remote_addr = match &v.forwarded_for {
        Some(xff) if logging.x_forwarded_for => xff.as_str(),
        _ => r.remote.as_str(),
    };
    let memory = if logging.needs_memory() {
        crate::sys::proc::memory("/proc/self/statm")
    } else {
        (0, 0)
    };
    let line = logging.render(&crate::log::RequestLog {
        pid: server.pid,
        wid,
        worker_requests: mine,
        total_requests: all,
        remote_addr,
        remote_user: &v.user,
        host: &v.host,
        user_agent: &v.user_agent,
        referer: &v.referer,
        content_length: v.content_length,
        request_vars: &v.vars,
        logvars,
        vars: stats.count,
        vars_bytes: stats.bytes,
        start_micros,
        method: &r.method,
        uri: &r.uri,
        body_bytes: s.body_bytes,
        micros,
        protocol: &protocol,
        status: s.status,
        headers: s.headers,
        head_bytes: s.head_bytes,
        core: server.core,
        memory,
        write_error: s.write_error,
        read_error: s.read_error,
    });
    crate::log::request(&line);
}

/// Call the app and write its response. Returns the summary and the body (to drain), or no
/// body when the connection must close.
fn call_app(
    py: Python<'_>,
    (app, callable): (&App, &Bound<'_, PyAny>),
    environ: &Bound<'_, PyDict>,
    body: Body,
    state: ResponseState,
    peer: &Peer,
    server: &Server<'_>,
) -> (Summary, Option<Body>) {
    let fd = state.fd();
    let Ok(input) = Bound::new(py, Input::new(body)) else {
        return (summary_of(&state), None);
    };
    let Ok(sr) = Bound::new(py, StartResponse { state }) else {
        return (
            Summary {
                status: 500,
                body_bytes: 0,
                head_bytes: 0,
                headers: 0,
                exception: true,
                write_error: false,
                read_error: false,
            },
            None,
        );
    };
    let _ = environ.set_item(app.environ.keys().wsgi_input.bind(py), &input);
    let result = callable.call1((environ, &sr));
    let outcome = match result {
        Ok(iterable) => {
            if let Some(hook) = server.after_app {
                hook();
            }
            let r = write_result(py, &sr, &iterable, &input);
            // PEP 3333: close() is called whatever happened, client gone included.
            let closed = close_result(&iterable);
            r.and(closed)
        }
        Err(e) => Err(e),
    };
    // The app has returned, but a thread it started may still be inside wsgi.input or
    // write(), blocked on the socket with the GIL released.
    let taken = input.try_borrow_mut().map(|mut i| i.take());
    let input_busy = taken.is_err();
    let body = taken.unwrap_or_default();
    if input_busy {
        crate::log!(
            "headrace: the app returned while another thread of the app still used wsgi.input: \
             the connection closes after the response"
        );
    }
    let (summary, body) = match sr.try_borrow_mut() {
        Ok(mut guard) => {
            let st = &mut guard.state;
            if input_busy {
                st.force_close();
            }
            let r = respond(py, app, st, body, outcome, peer);
            st.over = true;
            r
        }
        Err(_) => (cut_response(py, &sr, fd), None),
    };
    if input_busy {
        // The reader must let go of the body before the connection's descriptor is closed
        // (and its number reused): cutting the connection ends its read at once.
        crate::sys::fd::shutdown(fd);
        if let Some(mut i) = reclaim(py, &input) {
            drop(i.take());
        }
    }
    (summary, body)
}

/// Longest wait for a thread of the app to let go of wsgi.input or start_response once its
/// connection is cut (its blocked read or send then fails at once).
const RECLAIM_WAIT: Duration = Duration::from_secs(1);

/// Borrow `cell` once the thread of the app holding it lets go, waiting with the GIL released
/// (that thread needs the GIL to return), at most [`RECLAIM_WAIT`].
fn reclaim<'py, T: pyo3::PyClass<Frozen = pyo3::pyclass::boolean_struct::False>>(
    py: Python<'py>,
    cell: &Bound<'py, T>,
) -> Option<PyRefMut<'py, T>> {
    let deadline = Instant::now() + RECLAIM_WAIT;
    loop {
        if let Ok(guard) = cell.try_borrow_mut() {
            return Some(guard);
        }
        if Instant::now() >= deadline {
            crate::log!(
                "headrace: a thread of the app kept a request object for {} s after its \
                 connection was cut",
                RECLAIM_WAIT.as_secs()
            );
            return None;
        }
        py.detach(|| std::thread::sleep(Duration::from_millis(1)));
    }
}

/// The app returned while another of its threads was still in `write()`: that write races the
/// end of the response, so the connection is cut (which ends the write at once).
fn cut_response(py: Python<'_>, sr: &Bound<'_, StartResponse>, fd: RawFd) -> Summary {
    crate::log!(
        "headrace: the app returned while another thread of the app still used start_response \
         (a write() in progress): the connection is cut"
    );
    crate::sys::fd::shutdown(fd);
    match reclaim(py, sr) {
        Some(mut guard) => {
            guard.state.broken = true;
            guard.state.over = true;
            summary_of(&guard.state)
        }
        None => Summary {
            status: 0,
            body_bytes: 0,
            head_bytes: 0,
            headers: 0,
            exception: false,
            write_error: true,
            read_error: false,
        },
    }
}

/// Answer after the app: the client's error if it broke the body, a 500 if the app failed
/// before the head went out, else the end of the response.
fn respond(
    py: Python<'_>,
    app: &App,
    st: &mut ResponseState,
    body: Option<Body>,
    outcome: PyResult<()>,
    peer: &Peer,
) -> (Summary, Option<Body>) {
    if let Some(fault) = body.as_ref().and_then(Body::failure) {
        // The client broke the body: whatever the app made of that, the answer is the
        // client's error, and the connection cannot carry another request.
        client_fault(py, st, fault, peer);
        let summary = Summary {
            read_error: true,
            ..summary_of(st)
        };
        return (summary, None);
    }
    let error = match outcome {
        Ok(()) => st.error.clone().filter(|_| !st.headers_sent),
        Err(e) => {
            if st.broken {
                None // the client left; write errors are not app errors
            } else {
                Some(app.format_error(py, &e))
            }
        }
    };
    if let Some(text) = &error {
        crate::log!("headrace: exception in the app (500):\n{}", text.trim_end());
    }
    if st.broken {
        crate::log!(
            "headrace: client disconnected while the response was written ({} body bytes sent)",
            st.body_sent
        );
    } else if error.is_some() {
        if st.headers_sent {
            // Too late for a 500: cut the connection without the terminating chunk, so the
            // client can tell the body is incomplete.
            st.force_close();
        } else if st.send_500(py).is_err() {
            st.broken = true;
        }
    } else if st.finish(py).is_err() {
        st.broken = true;
    }
    let summary = Summary {
        exception: error.is_some(),
        ..summary_of(st)
    };
    let keep = st.keep_alive();
    (summary, body.filter(|_| keep))
}

fn client_fault(py: Python<'_>, st: &mut ResponseState, fault: &input::BodyError, peer: &Peer) {
    let who = if peer.addr.is_empty() {
        "unix socket"
    } else {
        peer.addr.as_str()
    };
    st.force_close();
    let err = match fault {
        input::BodyError::Protocol(e) => e.clone(),
        input::BodyError::Timeout => crate::http::HttpError::Timeout,
        input::BodyError::Disconnected { .. } | input::BodyError::Io(_) => {
            crate::log!("headrace: client {who} went away mid-body: {fault}");
            st.broken = true;
            return;
        }
    };
    crate::log!(
        "headrace: {} for {who} while the app read the body: {fault}",
        err.status()
    );
    if !st.headers_sent {
        let _ = st.send_protocol_error(py, &err);
    }
}

fn summary_of(st: &ResponseState) -> Summary {
    Summary {
        status: st.status,
        body_bytes: st.body_sent,
        head_bytes: st.head_bytes,
        headers: st.sent_header_count,
        exception: false,
        write_error: st.broken,
        read_error: false,
    }
}

fn not_started() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(
        "the app returned a body before calling start_response()",
    )
}

fn as_bytes<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "response body items must be bytes, not {}",
            item.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

fn io_err(e: &std::io::Error) -> PyErr {
    pyo3::exceptions::PyOSError::new_err(format!("client disconnected: {e}"))
}

/// Write the app's result: lists and tuples at once with a Content-Length, real files with
/// sendfile, anything else chunk by chunk as the app produces it.
fn write_result(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    iterable: &Bound<'_, PyAny>,
    input: &Bound<'_, Input>,
) -> PyResult<()> {
    // A list, tuple or file is the whole response: the app is done with its input. A body it
    // left unread but that has already arrived is read away now, so that the head can keep the
    // connection alive, and say so truthfully. (A generator may still read its input; that
    // body is drained after the response.)
    let complete = iterable.is_instance_of::<PyList>()
        || iterable.is_instance_of::<PyTuple>()
        || iterable.is_instance_of::<FileWrapper>();
    if complete {
        // (A thread of the app still reading the body holds it: then it is not drained, and
        // the connection closes after the response.)
        if let Ok(mut input) = input.try_borrow_mut() {
            if let Some(body) = input.body_mut() {
                if !body.is_complete() {
                    body.drain_arrived();
                }
            }
        }
    }
    if let Ok(list) = iterable.cast::<PyList>() {
        let items: Vec<Bound<'_, PyAny>> = list.iter().collect();
        return write_known(py, sr, &items);
    }
    if let Ok(tuple) = iterable.cast::<PyTuple>() {
        let items: Vec<Bound<'_, PyAny>> = tuple.iter().collect();
        return write_known(py, sr, &items);
    }
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        if let Some((fd, offset, count)) = wrapper.get().sendable(py) {
            let mut g = StartResponse::use_from_python(sr)?;
            if !g.state.started() {
                return Err(not_started());
            }
            if g.state.error.is_some() {
                return Ok(());
            }
            return g
                .state
                .send_file(py, fd, offset, count)
                .map_err(|e| io_err(&e));
        }
    }
    for item in iterable.try_iter()? {
        let item = item?;
        let bytes = as_bytes(&item)?;
        let mut g = StartResponse::use_from_python(sr)?;
        if !g.state.started() {
            return Err(not_started());
        }
        if g.state.error.is_some() {
            return Ok(());
        }
        g.state
            .send_chunk(py, bytes.as_bytes())
            .map_err(|e| io_err(&e))?;
    }
    Ok(())
}

fn write_known(
    py: Python<'_>,
    sr: &Bound<'_, StartResponse>,
    items: &[Bound<'_, PyAny>],
) -> PyResult<()> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(items.len());
    for item in items {
        parts.push(as_bytes(item)?.as_bytes());
    }
    let mut g = StartResponse::use_from_python(sr)?;
    if !g.state.started() {
        return Err(not_started());
    }
    if g.state.error.is_some() {
        return Ok(());
    }
    if g.state.headers_sent {
        // The app already used write(): the rest is streamed the same way.
        for p in parts {
            g.state.send_chunk(py, p).map_err(|e| io_err(&e))?;
        }
        return Ok(());
    }
    g.state.send_whole(py, &parts).map_err(|e| io_err(&e))
}

fn close_result(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    if iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>() {
        return Ok(());
    }
    match iterable.getattr(pyo3::intern!(iterable.py(), "close")) {
        Ok(close) => close.call0().map(drop),
        Err(_) => Ok(()),
    }
}

/// `route = REGEXP donotlog:` / `route-uri = ...`, compiled once per worker: (matches
/// REQUEST_URI rather than PATH_INFO, pattern).
static DONOTLOG: std::sync::OnceLock<Vec<(bool, regex::Regex)>> = std::sync::OnceLock::new();

/// Set the `donotlog:` routes of this worker (patterns were checked when the config was read).
pub fn set_donotlog(routes: &[(bool, String)]) {
    let compiled = routes
        .iter()
        .filter_map(|(uri, re)| regex::Regex::new(re).ok().map(|r| (*uri, r)))
        .collect::<Vec<_>>();
    if !compiled.is_empty() {
        let _ = DONOTLOG.set(compiled);
    }
}

/// A `donotlog:` route matches this request (`uri` as sent): it gets no request line.
fn not_logged(uri: &[u8]) -> bool {
    let Some(routes) = DONOTLOG.get() else {
        return false;
    };
    let (path, _) = crate::http::target::split_target(uri);
    let path = crate::http::target::percent_decode(path);
    let path = String::from_utf8_lossy(&path);
    let uri = String::from_utf8_lossy(uri);
    routes
        .iter()
        .any(|(whole, re)| re.is_match(if *whole { &uri } else { &path }))
}
