//! The ASGI HTTP connection in Rust: each accepted socket is an `AsgiConn` whose
//! `on_readable` / `on_writable` methods are the callbacks the worker's event loop calls
//! (`loop.add_reader` / `add_writer`, no asyncio Protocol). It reads into its own buffer,
//! parses heads with headrace's parsers, builds the scope dict, and starts each request as an
//! asyncio Task running `headrace._asgi.run(app, scope, channel)`. The channel (`AsgiChannel`)
//! gives the app `receive` and `send`: both return an awaitable that is already finished
//! (`Ready`) when the body is buffered or the socket took the bytes, and an asyncio Future
//! only when the app must wait (no body yet, or the socket is full: backpressure). A response
//! is written in one `sendmsg` (head and first body together).

use super::file::{self, FileOut, Pump};
use super::{ctx, EndRecord, Parsed};
use crate::http::target::percent_decode;
use crate::http::ChunkedDecoder;
use crate::sys::fd;
use pyo3::exceptions::{PyException, PyRuntimeError, PyStopIteration, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bytes read from a socket at a time.
const READ_SIZE: usize = 65536;
/// Bytes read at a time while a request body streams in.
const BODY_READ_SIZE: usize = 256 * 1024;
/// Unconsumed bytes (body or pipelined requests) above which a connection stops being read
/// until the app takes them.
const PAUSE_ABOVE: usize = 1 << 20;
/// How long an idle router link stays open once the worker stops (as the WSGI front).
const LINK_IDLE_ON_STOP: Duration = Duration::from_secs(2);

thread_local! {
    /// One read buffer for every connection of this (single-threaded) loop.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SIZE]);
}

/// What every connection of the worker shares: the loop's methods, the app, the stop state.
struct Shared {
    add_reader: Py<PyAny>,
    remove_reader: Py<PyAny>,
    add_writer: Py<PyAny>,
    remove_writer: Py<PyAny>,
    create_future: Py<PyAny>,
    create_task: Py<PyAny>,
    app: Py<PyAny>,
    /// `asyncio.CancelledError`: a cancelled request ends without a 500.
    cancelled: Py<PyAny>,
    /// `traceback.format_exception`, for the log line of an app that raised.
    format_exception: Py<PyAny>,
    /// The Python `Server`: `check_done()` and `upgrade(fd, listener, head, leftover)`.
    server: Py<PyAny>,
    /// `ClientDisconnected`, the `OSError` subclass raised by a send after the client left.
    disconnected: Py<PyAny>,
    /// A scope with every key in place (`asgi` is one dict shared by every scope): each request's scope starts as a copy of it, which
    /// costs one allocation instead of a dict growing key by key.
    template: Py<PyDict>,
    /// The finished awaitable with no value, returned by every `send` that did not wait.
    done: Py<PyAny>,
    /// The lifespan state; each scope gets a shallow copy.
    state: RefCell<Py<PyDict>>,
    listeners: Vec<ListenerInfo>,
    conns: RefCell<HashMap<RawFd, Py<AsgiConn>>>,
    stopping: Cell<bool>,
    stop_since: Cell<Option<Instant>>,
    /// A WebSocket handler is installed: upgrade requests are handed to it.
    websocket: Cell<bool>,
    keepalive: Duration,
    socket_timeout: Duration,
    /// `--limit-concurrency` (0: none).
    limit: usize,
    /// Requests running, oldest first, for the harakiri clock and `--limit-concurrency`.
    running: RefCell<Vec<Running>>,
    next_id: Cell<u64>,
    log_requests: bool,
    limits: crate::http::Limits,
}

struct ListenerInfo {
    uwsgi: bool,
    link: bool,
    /// The scope's `server`.
    server: Py<PyAny>,
}

struct Running {
    id: u64,
    start_ms: u64,
    method: Vec<u8>,
    uri: Vec<u8>,
    /// The request's asyncio Task, for `--harakiri` (none when it ended inside an eager start).
    task: Option<Py<PyAny>>,
    /// `--harakiri` cancelled it already.
    cancelled: bool,
}

impl Shared {
    fn check_done(&self, py: Python<'_>) {
        if self.stopping.get() && self.conns.borrow().is_empty() {
            if let Err(e) = self.server.call_method0(py, intern!(py, "check_done")) {
                e.print(py);
            }
        }
    }

    fn call<'py, A: pyo3::call::PyCallArgs<'py>>(py: Python<'py>, f: &Py<PyAny>, args: A) {
        if let Err(e) = f.call1(py, args) {
            e.print(py);
        }
    }
}

/// The worker's connections, created once by `headrace._asgi.Server`.
#[pyclass(unsendable, module = "headrace._headrace", name = "AsgiHub")]
pub struct AsgiHub {
    shared: Rc<Shared>,
}

#[pymethods]
impl AsgiHub {
    /// `listeners`: `[(uwsgi, link, server)]` in the listener order `adopt` uses.
    #[new]
    #[allow(
        clippy::too_many_arguments,
        reason = "built once per worker from the Python Server"
    )]
    fn new(
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        app: Py<PyAny>,
        server: Py<PyAny>,
        disconnected: Py<PyAny>,
        listeners: Vec<(bool, bool, Py<PyAny>)>,
        opts: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        let c = ctx()?;
        let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            opts.get_item(k)?
                .ok_or_else(|| PyRuntimeError::new_err(format!("missing ASGI option {k}")))
        };
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.5")?;
        let m = |name: &str| -> PyResult<Py<PyAny>> { Ok(event_loop.getattr(name)?.unbind()) };
        Ok(Self {
            shared: Rc::new(Shared {
                add_reader: m("add_reader")?,
                remove_reader: m("remove_reader")?,
                add_writer: m("add_writer")?,
                remove_writer: m("remove_writer")?,
                create_future: m("create_future")?,
                create_task: m("create_task")?,
                app,
                cancelled: py.import("asyncio")?.getattr("CancelledError")?.unbind(),
                format_exception: py
                    .import("traceback")?
                    .getattr("format_exception")?
                    .unbind(),
                server,
                disconnected,
                template: scope_template(py, &asgi)?.unbind(),
                done: Py::new(py, Ready { value: None })?.into_any(),
                state: RefCell::new(PyDict::new(py).unbind()),
                listeners: listeners
                    .into_iter()
                    .map(|(uwsgi, link, server)| ListenerInfo {
                        uwsgi,
                        link,
                        server,
                    })
                    .collect(),
                conns: RefCell::new(HashMap::new()),
                stopping: Cell::new(false),
                stop_since: Cell::new(None),
                websocket: Cell::new(false),
                keepalive: Duration::from_secs_f64(get("keepalive")?.extract()?),
                socket_timeout: Duration::from_secs_f64(get("socket_timeout")?.extract()?),
                limit: get("limit_concurrency")?.extract()?,
                running: RefCell::new(Vec::new()),
                next_id: Cell::new(0),
                log_requests: c.settings.log_requests,
                limits: c.settings.limits,
            }),
        })
    }

    /// The lifespan state every request's scope copies.
    fn set_state(&self, py: Python<'_>, state: Bound<'_, PyDict>) {
        *self.shared.state.borrow_mut() = state.unbind();
        let _ = py;
    }

    /// Hand `Upgrade: websocket` requests to `Server.upgrade` (the WebSocket module is there).
    fn set_websocket(&self, on: bool) {
        self.shared.websocket.set(on);
    }

    /// Take over an accepted socket `fd` (ownership passes here) from listener `index`;
    /// `client` is the scope's `client` (`None` on unix sockets).
    fn adopt(&self, py: Python<'_>, fd: RawFd, index: usize, client: Py<PyAny>) -> PyResult<()> {
        let owned = fd::own(fd);
        let sh = &self.shared;
        let link = sh.listeners.get(index).is_some_and(|l| l.link);
        let uwsgi = sh.listeners.get(index).is_some_and(|l| l.uwsgi);
        let remote = client
            .bind(py)
            .get_item(0)
            .ok()
            .and_then(|a| a.extract::<String>().ok())
            .unwrap_or_default();
        let conn = Py::new(
            py,
            AsgiConn {
                fd: Some(owned),
                raw: fd,
                shared: Rc::clone(sh),
                listener: index,
                uwsgi,
                link,
                client,
                remote,
                buf: Vec::new(),
                start: 0,
                out: Vec::new(),
                drained: None,
                reading: true,
                writer_on: false,
                closed: false,
                last_active: Instant::now(),
                head_started: None,
                req: None,
                on_read: None,
                on_write: None,
                after_flush: AfterFlush::Nothing,
                file: None,
            },
        )?;
        let b = conn.bind(py);
        let on_read = b.getattr(intern!(py, "on_readable"))?.unbind();
        let on_write = b.getattr(intern!(py, "on_writable"))?.unbind();
        sh.add_reader.call1(py, (fd, on_read.clone_ref(py)))?;
        {
            let mut c = b.borrow_mut();
            c.on_read = Some(on_read);
            c.on_write = Some(on_write);
        }
        sh.conns.borrow_mut().insert(fd, conn.clone_ref(py));
        // The request may already be there (a router link or a quick client).
        AsgiConn::readable(b);
        Ok(())
    }

    /// Stop: no new requests; idle connections close (router links stay, they carry the
    /// requests the router already queued here).
    fn stop(&self, py: Python<'_>) {
        let sh = &self.shared;
        sh.stopping.set(true);
        sh.stop_since.set(Some(Instant::now()));
        let conns: Vec<Py<AsgiConn>> = sh
            .conns
            .borrow()
            .values()
            .map(|c| c.clone_ref(py))
            .collect();
        for c in conns {
            if let Ok(mut c) = c.bind(py).try_borrow_mut() {
                // A static file still going out finishes first (the connection then closes).
                if c.req.is_none() && !c.link && c.file.is_none() {
                    c.close(py);
                }
            }
        }
    }

    /// Once a second: timeouts (head, stalled body or response, keep-alive, links on stop).
    fn sweep(&self, py: Python<'_>) {
        let now = Instant::now();
        let conns: Vec<Py<AsgiConn>> = self
            .shared
            .conns
            .borrow()
            .values()
            .map(|c| c.clone_ref(py))
            .collect();
        for c in conns {
            if let Ok(mut c) = c.bind(py).try_borrow_mut() {
                c.sweep(py, now);
            }
        }
    }

    /// Connections open now.
    fn connections(&self) -> usize {
        self.shared.conns.borrow().len()
    }

    /// Requests running now.
    fn running(&self) -> usize {
        self.shared.running.borrow().len()
    }

    /// `--harakiri`: the requests running for `limit` seconds or more that were not cancelled
    /// yet, now marked cancelled, as `[(task, method, uri, seconds)]`; the caller logs where
    /// each task is and cancels it (`_asgi.Server.harakiri`). The request then ends as a
    /// cancelled one, with a 504 when nothing was written yet (`AsgiConn::finish`).
    fn harakiri<'py>(&self, py: Python<'py>, limit: f64) -> Vec<Overdue<'py>> {
        let now = super::now_ms();
        let limit_ms = Duration::from_secs_f64(limit.max(0.0)).as_millis();
        let limit_ms = u64::try_from(limit_ms).unwrap_or(u64::MAX);
        let mut due = Vec::new();
        for r in self.shared.running.borrow_mut().iter_mut() {
            if r.cancelled || now.saturating_sub(r.start_ms) < limit_ms {
                continue;
            }
            let Some(task) = &r.task else { continue };
            r.cancelled = true;
            due.push((
                task.clone_ref(py),
                PyBytes::new(py, &r.method),
                PyBytes::new(py, &r.uri),
                now.saturating_sub(r.start_ms) / 1000,
            ));
        }
        due
    }

    /// The oldest HTTP request running, `(start_ms, method, uri)`: where the harakiri clock
    /// goes back to when a WebSocket session ends.
    fn oldest<'py>(
        &self,
        py: Python<'py>,
    ) -> Option<(u64, Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
        self.shared.running.borrow().first().map(|o| {
            (
                o.start_ms,
                PyBytes::new(py, &o.method),
                PyBytes::new(py, &o.uri),
            )
        })
    }
}

/// A request `--harakiri` cancels: `(task, method, uri, seconds running)`.
type Overdue<'py> = (Py<PyAny>, Bound<'py, PyBytes>, Bound<'py, PyBytes>, u64);

/// What to do once the pending output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterFlush {
    Nothing,
    /// Start the next (pipelined or keep-alive) request.
    Next,
    /// Half-close and close: the response was the last on this connection.
    Close,
}

/// How much request body is still to come.
enum Body {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// One request's state, owned by its connection.
#[allow(
    clippy::struct_excessive_bools,
    reason = "the independent facts of one HTTP exchange, as the ASGI spec names them"
)]
struct Req {
    id: u64,
    method: String,
    target: Vec<u8>,
    version: String,
    head_only: bool,
    body: Body,
    /// Body bytes read straight into a `bytes` object (see `read_body_direct`), handed to the
    /// app before anything in the connection's buffer.
    direct: Option<Py<PyBytes>>,
    body_sent_final: bool,
    keep_alive: bool,
    close_after: bool,
    expect_continue: bool,
    continue_sent: bool,
    /// A `receive()` waiting for body bytes or the disconnect.
    waiter: Option<Py<PyAny>>,
    gone: bool,
    started: bool,
    complete: bool,
    status: u16,
    /// The `headers` of `http.response.start`, written with the first body.
    headers: Option<Py<PyAny>>,
    chunked_out: bool,
    head_bytes: usize,
    body_bytes: u64,
    header_count: usize,
    request_headers: usize,
    exception: bool,
    write_error: bool,
    t0: Instant,
    start_micros: u64,
    /// Host, User-Agent, Referer for the log line.
    log: Option<(String, String, String)>,
    content_length: u64,
    /// The client's address from a uwsgi packet (a router link, nginx), for the log line;
    /// `None`: the connection's peer.
    remote: Option<String>,
}

impl Req {
    fn body_done(&self) -> bool {
        matches!(self.body, Body::Done)
    }
}

/// Work for after the connection's borrow ends (it calls into Python code that may call back).
enum Action {
    /// Start the request task: `(scope, channel)`.
    Start(Py<PyDict>, Py<AsgiChannel>),
    /// Hand the connection to the WebSocket module: `(fd, listener, head tuple, leftover)`.
    Upgrade(RawFd, usize, Py<PyTuple>, Py<PyBytes>),
}

/// One client connection (or router link) on the event loop.
#[pyclass(unsendable, module = "headrace._headrace", name = "AsgiConn")]
#[allow(
    clippy::struct_excessive_bools,
    reason = "reader, writer and close states are independent"
)]
pub struct AsgiConn {
    fd: Option<OwnedFd>,
    raw: RawFd,
    shared: Rc<Shared>,
    listener: usize,
    uwsgi: bool,
    link: bool,
    client: Py<PyAny>,
    remote: String,
    /// Read bytes; `[start..]` not consumed yet.
    buf: Vec<u8>,
    start: usize,
    /// Bytes the socket did not take yet.
    out: Vec<u8>,
    /// A `send()` waiting for `out` to drain.
    drained: Option<Py<PyAny>>,
    reading: bool,
    writer_on: bool,
    closed: bool,
    last_active: Instant,
    head_started: Option<Instant>,
    req: Option<Req>,
    on_read: Option<Py<PyAny>>,
    on_write: Option<Py<PyAny>>,
    after_flush: AfterFlush,
    /// A file to send once `out` is written (`http.response.pathsend`, a static hit).
    file: Option<FileOut>,
}

fn perform(py: Python<'_>, sh: &Shared, action: Option<Action>) {
    match action {
        None => {}
        Some(Action::Start(scope, chan)) => {
            let c = chan.bind(py);
            let called = c
                .getattr(intern!(py, "receive"))
                .and_then(|receive| Ok((receive, c.getattr(intern!(py, "send"))?)))
                .and_then(|(receive, send)| sh.app.call1(py, (scope, receive, send)));
            match called {
                Ok(coro) => {
                    let fd = chan.borrow(py).conn.borrow(py).raw;
                    let slot = ctx().map_or(0, |c| c.slot);
                    let started = Py::new(
                        py,
                        RequestCoro {
                            coro: Some(coro),
                            chan: chan.clone_ref(py),
                            current: Some(crate::offload::core::Current::new(slot, 0, fd)),
                        },
                    )
                    .and_then(|task_coro| sh.create_task.call1(py, (task_coro,)));
                    match started {
                        Ok(task) => {
                            let id = chan.borrow(py).id;
                            // The request was pushed last (`begin`): found at once from the back.
                            if let Some(r) = sh
                                .running
                                .borrow_mut()
                                .iter_mut()
                                .rev()
                                .find(|r| r.id == id)
                            {
                                r.task = Some(task);
                            }
                        }
                        Err(e) => e.print(py),
                    }
                }
                // The app raised before it had a coroutine to give (a plain callable).
                Err(e) => RequestCoro::end_with(py, sh, &chan, &e),
            }
        }
        Some(Action::Upgrade(fd, listener, head, leftover)) => {
            if let Err(e) =
                sh.server
                    .call_method1(py, intern!(py, "upgrade"), (fd, listener, head, leftover))
            {
                e.print(py);
                fd::close_raw(fd);
            }
        }
    }
}

#[pymethods]
impl AsgiConn {
    /// The loop's reader callback.
    fn on_readable(slf: &Bound<'_, Self>) {
        Self::readable(slf);
    }

    /// The loop's writer callback: flush what the socket did not take.
    fn on_writable(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let sh = Rc::clone(&slf.borrow().shared);
        let action = {
            let mut c = slf.borrow_mut();
            c.flush(py, slf.as_unbound())
        };
        perform(py, &sh, action);
    }
}

impl AsgiConn {
    fn readable(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let sh = Rc::clone(&slf.borrow().shared);
        let action = {
            let mut c = slf.borrow_mut();
            if c.closed {
                return;
            }
            let got = if c.req.is_some() {
                // A body is streaming: read straight into the connection's buffer, in
                // large pieces (fewer receive messages and task wakeups per megabyte).
                c.compact();
                let raw = c.raw;
                match c.read_body_direct(py) {
                    Some(got) => got,
                    None => fd::read_append(raw, &mut c.buf, BODY_READ_SIZE),
                }
            } else {
                SCRATCH.with_borrow_mut(|scratch| {
                    fd::read(c.raw, scratch).inspect(|&n| c.append(&scratch[..n]))
                })
            };
            match got {
                Ok(0) => {
                    c.lost(py);
                    return;
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    return;
                }
                Err(_) => {
                    c.lost(py);
                    return;
                }
            }
            let now = Instant::now();
            c.last_active = now;
            if c.req.is_some() {
                c.wake(py);
                if c.buf.len() - c.start + c.direct_len(py) > PAUSE_ABOVE {
                    c.pause(py);
                }
                None
            } else {
                if c.head_started.is_none() {
                    c.head_started = Some(now);
                }
                c.process(py, slf.as_unbound())
            }
        };
        perform(py, &sh, action);
    }

    /// A `Content-Length` body with nothing of it buffered yet: read what the socket holds
    /// of it (`FIONREAD`, at most 1 MiB) straight into the `bytes` the app will receive, one
    /// copy fewer than through the buffer. `None`: take the buffered path.
    fn read_body_direct(&mut self, py: Python<'_>) -> Option<io::Result<usize>> {
        let r = self.req.as_ref()?;
        let Body::Length(left) = r.body else {
            return None;
        };
        if left == 0 || r.direct.is_some() || self.start != self.buf.len() {
            return None;
        }
        let avail = fd::bytes_readable(self.raw).ok().filter(|&n| n > 0)?;
        let n = avail
            .min(usize::try_from(left).unwrap_or(usize::MAX))
            .min(4 * BODY_READ_SIZE);
        Some(match crate::sys::py::read_bytes(py, self.raw, n) {
            Ok(Some(b)) => {
                let got = b.as_bytes().len();
                if let Some(r) = self.req.as_mut() {
                    r.direct = Some(b.unbind());
                }
                Ok(got)
            }
            Ok(None) => Ok(0),
            Err(e) => Err(e),
        })
    }

    /// Bytes waiting in `Req::direct`.
    fn direct_len(&self, py: Python<'_>) -> usize {
        self.req
            .as_ref()
            .and_then(|r| r.direct.as_ref())
            .map_or(0, |b| b.bind(py).as_bytes().len())
    }

    /// The worker stops and this is not a router link: the connection ends after its
    /// request (a link stays: the router still sends what it queued here).
    fn draining(&self) -> bool {
        self.shared.stopping.get() && !self.link
    }

    /// Drop the consumed prefix when it is worth moving the rest.
    fn compact(&mut self) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 65536 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn append(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    fn pause(&mut self, py: Python<'_>) {
        if self.reading && !self.closed {
            self.reading = false;
            Shared::call(py, &self.shared.remove_reader, (self.raw,));
        }
    }

    fn resume(&mut self, py: Python<'_>) {
        if !self.reading && !self.closed {
            if let Some(cb) = &self.on_read {
                self.reading = true;
                Shared::call(py, &self.shared.add_reader, (self.raw, cb.clone_ref(py)));
            }
        }
    }

    /// Start the next request in the buffer, if its head is complete.
    fn process(&mut self, py: Python<'_>, me: &Py<Self>) -> Option<Action> {
        let sh = Rc::clone(&self.shared);
        loop {
            if self.closed || self.req.is_some() {
                return None;
            }
            if self.file.is_some() {
                // The file goes out before the next response: `flush` comes back here.
                return self.hold_while_file(py);
            }
            if self.pending().is_empty() {
                self.head_started = None;
                if sh.stopping.get() && !self.link {
                    self.close(py);
                }
                return None;
            }
            if sh.stopping.get() && !self.link {
                self.close(py);
                return None;
            }
            let parsed =
                match super::parse(py, self.pending(), self.uwsgi, sh.limits, sh.log_requests) {
                    Ok(Some(p)) => p,
                    Ok(None) => return None,
                    Err(e) => {
                        self.reject(py, e.status(), &e.response(), &e.to_string());
                        return None;
                    }
                };
            // A pooled router link (it says keep-alive) never carries an upgrade: the router
            // tunnels those over a connection of their own.
            if parsed.websocket && sh.websocket.get() && !(self.link && parsed.keep_alive) {
                return self.hand_off(py, parsed);
            }
            self.consume(parsed.len);
            self.head_started = None;
            self.resume(py);
            if let Some(go_on) = self.serve_static(py, &parsed) {
                if go_on {
                    continue;
                }
                return None;
            }
            if sh.limit > 0 && sh.running.borrow().len() >= sh.limit {
                if self.refuse(py, &parsed) {
                    // Kept alive: a pipelined request may already be buffered.
                    continue;
                }
                return None;
            }
            return match self.begin(py, &sh, parsed, me) {
                Ok(a) => Some(a),
                Err(e) => {
                    e.print(py);
                    self.close(py);
                    None
                }
            };
        }
    }

    /// An `Upgrade: websocket` request: the connection leaves this module.
    fn hand_off(&mut self, py: Python<'_>, parsed: Parsed<'_>) -> Option<Action> {
        let len = parsed.len;
        let head = match parsed.into_tuple(py) {
            Ok(t) => t,
            Err(e) => {
                e.print(py);
                self.close(py);
                return None;
            }
        };
        let leftover = PyBytes::new(py, &self.pending()[len..]).unbind();
        if self.reading {
            Shared::call(py, &self.shared.remove_reader, (self.raw,));
        }
        self.reading = false;
        self.closed = true;
        self.on_read = None;
        self.on_write = None;
        let fd = self.fd.take().map_or(self.raw, IntoRawFd::into_raw_fd);
        self.shared.conns.borrow_mut().remove(&self.raw);
        Some(Action::Upgrade(fd, self.listener, head, leftover))
    }

    /// `--limit-concurrency` reached: 503 with `Retry-After`, as uvicorn does. A request
    /// without a body on a persistent connection keeps it (`true`: go on reading); otherwise
    /// the connection closes once the answer is written (an unread body would be taken for
    /// the next request).
    fn refuse(&mut self, py: Python<'_>, parsed: &Parsed<'_>) -> bool {
        crate::log!(
            "headrace: worker {} 503 for {} {}: --limit-concurrency {} reached",
            ctx().map_or(0, |c| c.id),
            parsed.method,
            String::from_utf8_lossy(&parsed.target),
            self.shared.limit
        );
        let version = if parsed.version == "1.0" {
            &b"HTTP/1.0"[..]
        } else {
            &b"HTTP/1.1"[..]
        };
        let plain_uwsgi = self.uwsgi && !parsed.keep_alive;
        let keep = parsed.keep_alive && parsed.body_kind == 0 && !self.draining();
        let mut response = crate::http::response::plain(
            503,
            version,
            "Retry-After: 1\r\n",
            "503 Service Unavailable: too many requests\n",
            !keep && !plain_uwsgi,
        );
        if keep && parsed.version == "1.0" {
            // `plain` ends the head with the blank line: insert before it.
            let at = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(response.len(), |i| i + 2);
            response.splice(at..at, b"Connection: keep-alive\r\n".iter().copied());
        }
        if self.write(py, &[&response]).is_err() {
            return false;
        }
        if keep {
            self.last_active = Instant::now();
            if !self.out.is_empty() {
                self.after_flush = AfterFlush::Next;
                return false;
            }
            return true;
        }
        self.finish_connection(py);
        false
    }

    fn begin(
        &mut self,
        py: Python<'_>,
        sh: &Shared,
        p: Parsed<'_>,
        me: &Py<Self>,
    ) -> PyResult<Action> {
        let id = sh.next_id.get() + 1;
        sh.next_id.set(id);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let start_micros = u64::try_from(wall.as_micros()).unwrap_or(u64::MAX);
        let c = ctx()?;
        let last = super::begin(c, p.method.as_bytes(), &p.target);
        sh.running.borrow_mut().push(Running {
            id,
            start_ms: start_micros / 1000,
            method: p.method.as_bytes().to_vec(),
            uri: p.target.clone(),
            task: None,
            cancelled: false,
        });
        let keep_alive = p.keep_alive && !self.draining() && !last;
        let scope = self.scope(py, sh, &p)?;
        let remote = p
            .client
            .as_ref()
            .and_then(|c| c.get_item(0).ok())
            .and_then(|a| a.extract::<String>().ok());
        let body = match p.body_kind {
            1 => Body::Length(p.content_length),
            2 => Body::Chunked(Box::new(ChunkedDecoder::new(sh.limits.body))),
            _ => Body::Done,
        };
        self.req = Some(Req {
            id,
            head_only: p.method == "HEAD",
            method: p.method,
            target: p.target,
            version: p.version,
            body,
            direct: None,
            body_sent_final: false,
            keep_alive,
            close_after: !keep_alive,
            expect_continue: p.expect_continue,
            continue_sent: false,
            waiter: None,
            gone: false,
            started: false,
            complete: false,
            status: 0,
            headers: None,
            chunked_out: false,
            head_bytes: 0,
            body_bytes: 0,
            header_count: 0,
            request_headers: p.header_count,
            exception: false,
            write_error: false,
            t0: Instant::now(),
            start_micros,
            log: p.log,
            content_length: p.content_length,
            remote,
        });
        let chan = Py::new(
            py,
            AsgiChannel {
                conn: me.clone_ref(py),
                id,
            },
        )?;
        Ok(Action::Start(scope, chan))
    }

    fn scope(&self, py: Python<'_>, sh: &Shared, p: &Parsed<'_>) -> PyResult<Py<PyDict>> {
        let target = p.target.as_slice();
        let (mut path, query) = match target.iter().position(|&c| c == b'?') {
            Some(q) => (&target[..q], &target[q + 1..]),
            None => (target, &b""[..]),
        };
        if path.starts_with(b"http://") || path.starts_with(b"https://") {
            // absolute-form: the path starts after the authority.
            let after = path
                .windows(2)
                .position(|w| w == b"//")
                .map_or(0, |i| i + 2);
            path = match path[after..].iter().position(|&c| c == b'/') {
                Some(slash) => &path[after + slash..],
                None => b"/",
            };
        }
        let decoded = percent_decode(path);
        let path_str = match std::str::from_utf8(&decoded) {
            Ok(s) => PyString::new(py, s).into_any(),
            Err(_) => PyBytes::new(py, &decoded)
                .call_method1(intern!(py, "decode"), ("utf-8", "surrogateescape"))?,
        };
        let d = sh.template.bind(py).copy()?;
        let version = match p.version.as_str() {
            "1.1" => intern!(py, "1.1").clone(),
            "1.0" => intern!(py, "1.0").clone(),
            v => PyString::new(py, v),
        };
        d.set_item(intern!(py, "http_version"), version)?;
        d.set_item(intern!(py, "method"), method_str(py, &p.method))?;
        match &p.scheme {
            Some(s) => d.set_item(intern!(py, "scheme"), s)?,
            None => d.set_item(intern!(py, "scheme"), intern!(py, "http"))?,
        }
        d.set_item(intern!(py, "path"), path_str)?;
        d.set_item(intern!(py, "raw_path"), PyBytes::new(py, path))?;
        d.set_item(intern!(py, "query_string"), PyBytes::new(py, query))?;
        d.set_item(intern!(py, "root_path"), &p.root_path)?;
        d.set_item(intern!(py, "headers"), &p.headers)?;
        match &p.client {
            Some(c) => d.set_item(intern!(py, "client"), c)?,
            None => d.set_item(intern!(py, "client"), self.client.bind(py))?,
        }
        match &p.server {
            Some(s) => d.set_item(intern!(py, "server"), s)?,
            None => match sh.listeners.get(self.listener) {
                Some(l) => d.set_item(intern!(py, "server"), l.server.bind(py))?,
                None => d.set_item(intern!(py, "server"), py.None())?,
            },
        }
        d.set_item(intern!(py, "state"), sh.state.borrow().bind(py).copy()?)?;
        d.set_item(intern!(py, "extensions"), file::extensions(py)?)?;
        Ok(d.unbind())
    }

    fn reject(&mut self, py: Python<'_>, status: u16, response: &[u8], reason: &str) {
        let addr = if self.remote.is_empty() {
            "unix socket"
        } else {
            self.remote.as_str()
        };
        crate::log!(
            "headrace: {status} {} for {addr}: {reason}",
            reason_phrase(status)
        );
        if let Some(fd) = &self.fd {
            let _ = fd::send(fd.as_raw_fd(), response);
            fd::shutdown_write(fd.as_raw_fd());
        }
        self.close(py);
    }

    fn sweep(&mut self, py: Python<'_>, now: Instant) {
        let sh = Rc::clone(&self.shared);
        let idle = now.saturating_duration_since(self.last_active);
        if let Some(r) = &self.req {
            // A body or a response stalled past --socket-timeout ends the connection, as the
            // WSGI front's read and write timeouts do.
            let waiting = r.waiter.as_ref().is_some_and(|w| !is_done(py, w.bind(py)));
            let stalled =
                !self.out.is_empty() || self.file.is_some() || (waiting && !r.body_done());
            if stalled && idle > sh.socket_timeout {
                crate::log!(
                    "headrace: {} {}: client stalled for more than --socket-timeout, closing",
                    r.method,
                    String::from_utf8_lossy(&r.target)
                );
                self.out.clear();
                self.abandon_file();
                self.writer_off(py);
                self.lost(py);
            }
            return;
        }
        if self.file.is_some() {
            self.sweep_file(py, idle);
            return;
        }
        if let Some(t) = self.head_started {
            if now.saturating_duration_since(t) > sh.socket_timeout {
                self.reject(
                    py,
                    408,
                    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n\
                      Content-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n",
                    "request head not received within --socket-timeout",
                );
            }
        } else if sh.stopping.get() {
            let since = sh
                .stop_since
                .get()
                .map_or(self.last_active, |s| s.max(self.last_active));
            if now.saturating_duration_since(since) > LINK_IDLE_ON_STOP {
                self.close(py);
            }
        } else if idle > sh.keepalive {
            self.close(py);
        }
    }

    /// The client closed its side or the connection broke.
    fn lost(&mut self, py: Python<'_>) {
        if self.req.is_some() {
            if self.reading && !self.closed {
                Shared::call(py, &self.shared.remove_reader, (self.raw,));
            }
            self.reading = false;
            self.closed = true;
            if let Some(r) = self.req.as_mut() {
                r.gone = true;
            }
            self.wake(py);
            self.resolve_drained(py);
            // The socket closes when the request's task ends.
        } else {
            self.close(py);
        }
    }

    fn resolve_drained(&mut self, py: Python<'_>) {
        if let Some(f) = self.drained.take() {
            set_result(py, f.bind(py), py.None().bind(py));
        }
    }

    fn writer_off(&mut self, py: Python<'_>) {
        if self.writer_on {
            self.writer_on = false;
            Shared::call(py, &self.shared.remove_writer, (self.raw,));
        }
    }

    fn close(&mut self, py: Python<'_>) {
        let Some(fd) = self.fd.take() else {
            return;
        };
        if self.reading && !self.closed {
            Shared::call(py, &self.shared.remove_reader, (self.raw,));
        }
        self.writer_off(py);
        self.closed = true;
        self.reading = false;
        self.abandon_file();
        self.resolve_drained(py);
        drop(fd);
        self.on_read = None;
        self.on_write = None;
        let sh = Rc::clone(&self.shared);
        let me = sh.conns.borrow_mut().remove(&self.raw);
        drop(me);
        sh.check_done(py);
    }

    /// After the last response: half-close once the output is written, then close.
    fn finish_connection(&mut self, py: Python<'_>) {
        if self.out.is_empty() && self.file.is_none() {
            if let Some(fd) = &self.fd {
                fd::shutdown_write(fd.as_raw_fd());
            }
            self.close(py);
        } else {
            self.after_flush = AfterFlush::Close;
        }
    }

    /// Write `parts` now, queueing what the socket does not take. `Ok(true)`: all written;
    /// `Ok(false)`: some is queued (the writer callback sends it); `Err`: the client is gone.
    fn write(&mut self, py: Python<'_>, parts: &[&[u8]]) -> Result<bool, ()> {
        if self.closed {
            return Err(());
        }
        if !self.out.is_empty() {
            for p in parts {
                self.out.extend_from_slice(p);
            }
            return Ok(false);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 {
            return Ok(true);
        }
        let sent = match fd::sendv(self.raw, parts) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(_) => {
                self.lost(py);
                return Err(());
            }
        };
        if sent == total {
            return Ok(true);
        }
        let mut skip = sent;
        for p in parts {
            if skip >= p.len() {
                skip -= p.len();
                continue;
            }
            self.out.extend_from_slice(&p[skip..]);
            skip = 0;
        }
        self.writer_on_(py);
        Ok(false)
    }

    fn writer_on_(&mut self, py: Python<'_>) {
        if !self.writer_on {
            if let Some(cb) = &self.on_write {
                self.writer_on = true;
                Shared::call(py, &self.shared.add_writer, (self.raw, cb.clone_ref(py)));
            }
        }
    }

    fn flush(&mut self, py: Python<'_>, me: &Py<Self>) -> Option<Action> {
        if self.fd.is_none() {
            self.writer_off(py);
            return None;
        }
        if !self.out.is_empty() {
            match fd::send(self.raw, &self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                    self.last_active = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    return None;
                }
                Err(_) => {
                    self.out.clear();
                    self.writer_off(py);
                    self.after_flush = AfterFlush::Nothing;
                    if self.req.is_some() {
                        if let Some(r) = self.req.as_mut() {
                            r.write_error = true;
                        }
                        self.lost(py);
                    } else {
                        self.close(py);
                    }
                    return None;
                }
            }
        }
        if !self.out.is_empty() {
            return None;
        }
        if self.file.is_some() && self.pump_file(py) != Ok(true) {
            return None;
        }
        if self.out.capacity() > PAUSE_ABOVE {
            self.out = Vec::new();
        }
        self.writer_off(py);
        self.resolve_drained(py);
        match std::mem::replace(&mut self.after_flush, AfterFlush::Nothing) {
            AfterFlush::Nothing => None,
            AfterFlush::Close => {
                self.finish_connection(py);
                None
            }
            AfterFlush::Next => self.process(py, me),
        }
    }

    /// A `receive()` is waiting: answer it if there is something to say now.
    fn wake(&mut self, py: Python<'_>) {
        let Some(w) = self.req.as_ref().and_then(|r| r.waiter.as_ref()) else {
            return;
        };
        let w = w.clone_ref(py);
        if is_done(py, w.bind(py)) {
            // Cancelled with its task: forget it (the body stays buffered).
            if let Some(r) = self.req.as_mut() {
                r.waiter = None;
            }
            return;
        }
        match self.poll_receive(py) {
            Ok(Some(msg)) => {
                if let Some(r) = self.req.as_mut() {
                    r.waiter = None;
                }
                set_result(py, w.bind(py), msg.bind(py));
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(r) = self.req.as_mut() {
                    r.waiter = None;
                }
                let _ = w.call_method1(py, intern!(py, "set_exception"), (e.into_value(py),));
            }
        }
    }

    /// The next `receive()` message if there is one now, else `None` (wait).
    fn poll_receive(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(r) = self.req.as_ref() else {
            return Ok(Some(disconnect(py)?));
        };
        if r.gone {
            return Ok(Some(disconnect(py)?));
        }
        if r.body_sent_final {
            if r.complete {
                // The response is sent: nothing more will come.
                return Ok(Some(disconnect(py)?));
            }
            return Ok(None);
        }
        match self.take_body(py) {
            Err(reason) => {
                crate::log!("headrace: bad request body: {reason}");
                if let Some(r) = self.req.as_mut() {
                    r.close_after = true;
                    r.gone = true;
                }
                return Ok(Some(disconnect(py)?));
            }
            Ok((data, done)) => {
                if !data.as_bytes().is_empty() || done {
                    if let Some(r) = self.req.as_mut() {
                        r.body_sent_final = done;
                    }
                    self.resume(py);
                    let d = PyDict::new(py);
                    d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
                    d.set_item(intern!(py, "body"), data)?;
                    d.set_item(intern!(py, "more_body"), !done)?;
                    return Ok(Some(d.into_any().unbind()));
                }
            }
        }
        let send_continue = self
            .req
            .as_ref()
            .is_some_and(|r| r.expect_continue && !r.continue_sent && r.head_bytes == 0);
        if send_continue {
            if let Some(r) = self.req.as_mut() {
                r.continue_sent = true;
            }
            let _ = self.write(py, &[b"HTTP/1.1 100 Continue\r\n\r\n"]);
        }
        if self.closed {
            if let Some(r) = self.req.as_mut() {
                r.gone = true;
            }
            return Ok(Some(disconnect(py)?));
        }
        self.resume(py);
        Ok(None)
    }

    /// Body bytes already buffered (copied once, from the connection's buffer straight into
    /// the `bytes` the app receives), and whether the body is complete.
    fn take_body<'py>(&mut self, py: Python<'py>) -> Result<(Bound<'py, PyBytes>, bool), String> {
        let start = self.start;
        let avail = self.buf.len() - start;
        let Some(r) = self.req.as_mut() else {
            return Ok((PyBytes::new(py, b""), true));
        };
        if let (Some(b), Body::Length(left)) = (r.direct.take(), &mut r.body) {
            let b = b.into_bound(py);
            *left -= b.as_bytes().len() as u64;
            let done = *left == 0;
            if done {
                r.body = Body::Done;
            }
            return Ok((b, done));
        }
        let (data, used, done) = match &mut r.body {
            Body::Done => return Ok((PyBytes::new(py, b""), true)),
            Body::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(avail);
                *left -= n as u64;
                (PyBytes::new(py, &self.buf[start..start + n]), n, *left == 0)
            }
            Body::Chunked(dec) => {
                let input = &self.buf[start..];
                let mut at = 0;
                let mut out = Vec::new();
                while at < input.len() && !dec.is_done() {
                    let (n, range) = dec.step(&input[at..]).map_err(|e| e.to_string())?;
                    out.extend_from_slice(&input[at + range.start..at + range.end]);
                    if n == 0 {
                        break;
                    }
                    at += n;
                }
                let done = dec.is_done();
                (PyBytes::new(py, &out), at, done)
            }
        };
        if done {
            r.body = Body::Done;
        }
        self.consume(used);
        Ok((data, done))
    }

    /// The response head for the first body message.
    fn build_head(&mut self, py: Python<'_>, first_len: usize, more: bool) -> PyResult<Vec<u8>> {
        let stopping = self.draining();
        let uwsgi = self.uwsgi;
        let Some(r) = self.req.as_mut() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/");
        out.extend_from_slice(r.version.as_bytes());
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason_phrase(r.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut has_length = false;
        let mut chunked = false;
        let mut count = 0;
        if let Some(headers) = r.headers.take() {
            for item in headers.bind(py).try_iter()? {
                let item = item?;
                let name = item.get_item(0)?;
                let value = item.get_item(1)?;
                let name = bytes_of(&name)?;
                let value = bytes_of(&value)?;
                if name.eq_ignore_ascii_case(b"content-length") {
                    has_length = true;
                } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                    if contains_ci(&value, b"chunked") {
                        chunked = true;
                    }
                } else if name.eq_ignore_ascii_case(b"connection") && contains_ci(&value, b"close")
                {
                    r.close_after = true;
                }
                out.extend_from_slice(&name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(&value);
                out.extend_from_slice(b"\r\n");
                count += 1;
            }
        }
        let no_body = r.status < 200 || r.status == 204 || r.status == 304;
        // A uwsgi-protocol peer other than headrace's router (nginx's uwsgi_pass) reads the
        // body until the connection closes and does not decode chunks.
        let plain_uwsgi = uwsgi && !r.keep_alive;
        if !has_length && !chunked && !no_body {
            if !more {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(itoa::Buffer::new().format(first_len).as_bytes());
                out.extend_from_slice(b"\r\n");
                count += 1;
            } else if r.version == "1.1" && !plain_uwsgi {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                r.chunked_out = true;
                count += 1;
            } else {
                r.close_after = true;
            }
        }
        if chunked {
            r.chunked_out = true;
        }
        if stopping {
            r.close_after = true;
        }
        if r.close_after && !plain_uwsgi {
            out.extend_from_slice(b"connection: close\r\n");
            count += 1;
        } else if r.version == "1.0" {
            out.extend_from_slice(b"connection: keep-alive\r\n");
            count += 1;
        }
        out.extend_from_slice(b"\r\n");
        r.header_count = count;
        Ok(out)
    }

    /// `http.response.body` (after the start): returns whether the bytes are all written.
    fn send_body(&mut self, py: Python<'_>, body: &[u8], more: bool) -> PyResult<Result<bool, ()>> {
        let head = if self.req.as_ref().is_some_and(|r| r.head_bytes == 0) {
            let h = self.build_head(py, body.len(), more)?;
            if let Some(r) = self.req.as_mut() {
                r.head_bytes = h.len();
            }
            h
        } else {
            Vec::new()
        };
        let Some(r) = self.req.as_mut() else {
            return Ok(Err(()));
        };
        let mut size_line = [0u8; 18];
        let mut size_len = 0;
        let mut parts: [&[u8]; 5] = [&head, b"", b"", b"", b""];
        if !r.head_only {
            if r.chunked_out {
                if !body.is_empty() {
                    let (line, n) = crate::http::response::chunk_size_line(body.len());
                    size_line = line;
                    size_len = n;
                }
            } else {
                parts[1] = body;
            }
            r.body_bytes += body.len() as u64;
        }
        let chunked = !r.head_only && r.chunked_out;
        if !more {
            r.complete = true;
        }
        if chunked {
            if !body.is_empty() {
                parts[1] = &size_line[..size_len];
                parts[2] = body;
                parts[3] = b"\r\n";
            }
            if !more {
                parts[4] = b"0\r\n\r\n";
            }
        }
        let written = self.write(py, &parts);
        if !more {
            self.wake(py);
        }
        if written.is_err() {
            if let Some(r) = self.req.as_mut() {
                r.write_error = true;
                r.gone = true;
            }
        }
        Ok(written)
    }

    /// The app failed before writing anything: a plain 500.
    fn error_500(&mut self, py: Python<'_>) {
        self.error_response(py, 500, b"Internal Server Error\n");
    }

    /// Answer the request with `status` and a plain-text `body` (nothing was written yet).
    fn error_response(&mut self, py: Python<'_>, status: u16, body: &[u8]) {
        if let Some(r) = self.req.as_mut() {
            r.started = true;
            r.status = status;
            let headers = PyList::empty(py);
            let _ = headers.append((
                PyBytes::new(py, b"content-type"),
                PyBytes::new(py, b"text/plain"),
            ));
            r.headers = Some(headers.into_any().unbind());
        }
        if let Err(e) = self.send_body(py, body, false) {
            e.print(py);
        }
    }

    /// The request's task ended (`tb`: the app raised; `cancelled`: the task was cancelled).
    fn finish(
        &mut self,
        py: Python<'_>,
        id: u64,
        tb: Option<&str>,
        cancelled: bool,
        me: &Py<Self>,
    ) -> Option<Action> {
        if self.req.as_ref().is_none_or(|r| r.id != id) {
            return None;
        }
        let (gone, head_bytes, started, complete) = match &self.req {
            Some(r) => (r.gone, r.head_bytes, r.started, r.complete),
            None => return None,
        };
        if let Some(tb) = tb {
            if let Some(r) = self.req.as_mut() {
                r.exception = true;
                crate::log!(
                    "headrace: exception in ASGI app for {} {}:\n{}",
                    r.method,
                    String::from_utf8_lossy(&r.target),
                    tb.trim_end()
                );
            }
            if head_bytes == 0 && !gone {
                // Nothing was written yet (a start without a body counts as nothing).
                self.error_500(py);
            } else if let Some(r) = self.req.as_mut() {
                r.close_after = true;
            }
        } else if cancelled {
            let harakiri = self
                .shared
                .running
                .borrow()
                .iter()
                .any(|r| r.id == id && r.cancelled);
            if harakiri && head_bytes == 0 && !gone {
                // Cancelled by --harakiri before it answered: say so.
                self.error_response(
                    py,
                    504,
                    b"Gateway Timeout: the request ran longer than --harakiri\n",
                );
            }
            if let Some(r) = self.req.as_mut() {
                r.close_after = true;
            }
        } else if !started && !gone {
            crate::log!("headrace: the ASGI app returned without a response");
            self.error_500(py);
        } else if !complete {
            if let Some(r) = self.req.as_mut() {
                r.close_after = true;
            }
        }
        let r = self.req.take()?;
        self.record(&r);
        if let Some(w) = &r.waiter {
            if !is_done(py, w.bind(py)) {
                let _ = w.call_method0(py, intern!(py, "cancel"));
            }
        }
        if self.closed || r.gone {
            self.close(py);
            return None;
        }
        if r.close_after || !r.body_done() {
            // A body the app did not read would be taken for the next request.
            self.finish_connection(py);
            return None;
        }
        self.last_active = Instant::now();
        if self.pending().is_empty() && self.buf.capacity() > READ_SIZE {
            // A large body passed through: an idle connection keeps no large buffer.
            self.buf = Vec::new();
            self.start = 0;
        }
        self.resume(py);
        if self.out.is_empty() && self.file.is_none() {
            self.process(py, me)
        } else {
            self.after_flush = AfterFlush::Next;
            None
        }
    }

    /// The request's bookkeeping: counters, harakiri clock, log line, recycling.
    fn record(&self, r: &Req) {
        let Ok(c) = ctx() else {
            return;
        };
        let sh = &self.shared;
        // Held to the end of this function: `end` calls no Python code.
        let mut running = sh.running.borrow_mut();
        if let Some(at) = running.iter().position(|x| x.id == r.id) {
            running.remove(at);
        }
        let oldest = running
            .first()
            .map(|o| (o.start_ms, o.method.as_slice(), o.uri.as_slice()));
        let other;
        let protocol = match r.version.as_str() {
            "1.1" => "HTTP/1.1",
            "1.0" => "HTTP/1.0",
            v => {
                other = format!("HTTP/{v}");
                other.as_str()
            }
        };
        let (host, ua, referer) = r.log.as_ref().map_or(("", "", ""), |(h, u, f)| {
            (h.as_str(), u.as_str(), f.as_str())
        });
        let rec = EndRecord {
            status: if r.status == 0 { 500 } else { r.status },
            head_bytes: r.head_bytes,
            body_bytes: r.body_bytes,
            headers: r.header_count,
            vars: r.request_headers,
            elapsed_us: u64::try_from(r.t0.elapsed().as_micros()).unwrap_or(u64::MAX),
            start_micros: r.start_micros,
            exception: r.exception,
            write_error: r.write_error,
            read_error: r.gone && !r.complete,
            method: r.method.as_bytes(),
            uri: &r.target,
            protocol,
            remote: r.remote.as_deref().unwrap_or(&self.remote),
            host,
            user_agent: ua,
            referer,
            content_length: r.content_length,
        };
        super::end(c, &rec, oldest);
    }
}

/// Files sent after a head: `http.response.pathsend` and `--static-map` hits (see `file.rs`).
impl AsgiConn {
    /// `http.response.pathsend`: the head (with the file's size as `Content-Length` unless the
    /// app gave a length), then the file with `sendfile(2)`, `Content-Length` bytes of it. A
    /// path that cannot be sent raises in the app's `send`: nothing is written yet, so an app
    /// that lets it propagate gets the usual 500.
    fn send_path(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
    ) -> PyResult<Result<bool, ()>> {
        let Some(r) = self.req.as_ref() else {
            return Ok(Err(()));
        };
        if !r.started {
            return Err(PyRuntimeError::new_err(
                "http.response.pathsend before http.response.start",
            ));
        }
        if r.complete || r.head_bytes > 0 {
            return Err(PyRuntimeError::new_err(
                "http.response.pathsend after the response body began",
            ));
        }
        let path: std::path::PathBuf = message
            .get_item(intern!(py, "path"))?
            .extract()
            .map_err(|_| PyTypeError::new_err("http.response.pathsend needs a str \"path\""))?;
        let (f, size) = file::open_path(&path).map_err(|e| {
            PyRuntimeError::new_err(format!(
                "http.response.pathsend: cannot send {}: {e}",
                path.display()
            ))
        })?;
        let mut head = self.build_head(py, usize::try_from(size).unwrap_or(usize::MAX), false)?;
        let Some(r) = self.req.as_mut() else {
            return Ok(Err(()));
        };
        r.head_bytes = head.len();
        r.complete = true;
        let no_body = r.head_only || r.status < 200 || r.status == 204 || r.status == 304;
        // An app's Content-Length larger than the file cannot be met: the send fails at the
        // file's end and the connection is lost, as a failed body write.
        let len = file::declared_length(&head).unwrap_or(size);
        let mut queued = None;
        if !no_body {
            let mut out = FileOut::new(f, 0, len);
            if r.chunked_out {
                // The app asked for chunked framing: the file is one chunk.
                if len > 0 {
                    let (line, n) = crate::http::response::chunk_size_line(
                        usize::try_from(len).unwrap_or(usize::MAX),
                    );
                    head.extend_from_slice(&line[..n]);
                    out.tail = b"\r\n0\r\n\r\n";
                } else {
                    head.extend_from_slice(b"0\r\n\r\n");
                }
            }
            queued = Some(out);
        }
        let written = self.write(py, &[&head]);
        self.wake(py);
        if written.is_err() {
            if let Some(r) = self.req.as_mut() {
                r.write_error = true;
                r.gone = true;
            }
            return Ok(Err(()));
        }
        let Some(out) = queued else {
            return Ok(written);
        };
        self.file = Some(out);
        if self.out.is_empty() {
            return Ok(self.pump_file(py));
        }
        Ok(Ok(false))
    }

    /// What `send` returns after writing: the shared finished awaitable when everything went
    /// out, else the Future resolved when the output drains; `written` as `write` says.
    fn awaitable(&mut self, py: Python<'_>, written: Result<bool, ()>) -> PyResult<Py<PyAny>> {
        match written {
            Ok(true) => Ok(self.shared.done.clone_ref(py)),
            Ok(false) => {
                if let Some(f) = &self.drained {
                    return Ok(f.clone_ref(py));
                }
                let f = self.shared.create_future.call0(py)?;
                self.drained = Some(f.clone_ref(py));
                Ok(f)
            }
            Err(()) => Err(client_gone(py, &self.shared.disconnected)),
        }
    }

    /// Send the queued file, then its tail. `Ok(true)`: all written; `Ok(false)`: the writer
    /// callback goes on; `Err`: the connection failed (or the file was shorter than announced)
    /// and is lost.
    fn pump_file(&mut self, py: Python<'_>) -> Result<bool, ()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(true);
        };
        let before = f.sent;
        let pumped = f.pump(self.raw);
        let delta = f.sent - before;
        if delta > 0 {
            self.last_active = Instant::now();
            if let Some(r) = self.req.as_mut() {
                r.body_bytes += delta;
            }
        }
        match pumped {
            Pump::More => {
                self.writer_on_(py);
                Ok(false)
            }
            Pump::Done => {
                let Some(f) = self.file.take() else {
                    return Ok(true);
                };
                if let Some(l) = &f.log {
                    file::log_static(l, Some(f.sent));
                }
                if f.tail.is_empty() {
                    Ok(true)
                } else {
                    self.write(py, &[f.tail])
                }
            }
            Pump::Failed | Pump::Short => {
                if pumped == Pump::Short {
                    let static_hit = self.file.as_ref().and_then(|f| f.log.as_ref());
                    let (method, target) = match (&self.req, static_hit) {
                        (Some(r), _) => (r.method.as_bytes(), r.target.as_slice()),
                        (None, Some(l)) => (l.method.as_slice(), l.uri.as_slice()),
                        (None, None) => (&b""[..], &b""[..]),
                    };
                    crate::log!(
                        "headrace: {} {}: the file ended before the response's length, closing",
                        String::from_utf8_lossy(method),
                        String::from_utf8_lossy(target)
                    );
                }
                self.abandon_file();
                self.writer_off(py);
                if let Some(r) = self.req.as_mut() {
                    r.write_error = true;
                }
                self.lost(py);
                Err(())
            }
        }
    }

    /// The connection ends with a file still queued: a static hit is logged as a write error.
    fn abandon_file(&mut self) {
        if let Some(f) = self.file.take() {
            if let Some(l) = &f.log {
                file::log_static(l, None);
            }
        }
    }

    /// A static file is being sent (no request runs): the client gets `--socket-timeout` per
    /// stall, as for any response.
    fn sweep_file(&mut self, py: Python<'_>, idle: Duration) {
        if idle > self.shared.socket_timeout {
            crate::log!(
                "headrace: static file to {}: client stalled for more than --socket-timeout, closing",
                if self.remote.is_empty() { "unix socket" } else { self.remote.as_str() }
            );
            self.close(py);
        }
    }

    /// A file is still going out: the next request waits for it (`flush` calls `process`
    /// again); reading pauses if the client sends much more meanwhile.
    fn hold_while_file(&mut self, py: Python<'_>) -> Option<Action> {
        if self.pending().len() > PAUSE_ABOVE {
            self.pause(py);
        }
        None
    }

    /// A GET or HEAD naming a `--static-map` file is answered from it before the app, as a WSGI
    /// worker does in direct mode: the same lookup, reply (304, Range, gzip, Expires) and log
    /// line. Not on a router link (the router serves static files itself) nor for a request
    /// with a body. `None`: not static, the app answers; `Some(true)`: answered and written, go
    /// on with the next request; `Some(false)`: answered, the rest goes out from the writer
    /// callback (or the connection ended).
    fn serve_static(&mut self, py: Python<'_>, p: &Parsed<'_>) -> Option<bool> {
        let c = ctx().ok()?;
        if c.static_files.is_empty() || self.link || p.body_kind != 0 {
            return None;
        }
        // nginx's uwsgi_pass: one request per connection, HTTP/1.0 framing (as WSGI answers).
        let (http11, keep) = if self.uwsgi {
            (false, false)
        } else {
            (p.version == "1.1", p.keep_alive && !self.draining())
        };
        let start = Instant::now();
        let (found, reply) = file::lookup(&c.static_files, p, http11, !keep)?;
        let remote = p
            .client
            .as_ref()
            .and_then(|c| c.get_item(0).ok())
            .and_then(|a| a.extract::<String>().ok())
            .unwrap_or_else(|| self.remote.clone());
        let mut out = FileOut::new(found.file, reply.offset, reply.len);
        out.log = Some(file::StaticLog {
            start,
            status: reply.status,
            head_bytes: reply.head.len(),
            headers: reply.head.split(|b| *b == b'\n').count().saturating_sub(3),
            method: p.method.as_bytes().to_vec(),
            uri: p.target.clone(),
            protocol: format!("HTTP/{}", p.version),
            vars: p.header_count,
            vars_bytes: p.len,
            remote,
        });
        self.last_active = start;
        if self.write(py, &[&reply.head]).is_err() {
            // `write` found the connection gone and closed it.
            self.file = Some(out);
            self.abandon_file();
            return Some(false);
        }
        self.file = Some(out);
        let done = if self.out.is_empty() {
            match self.pump_file(py) {
                Ok(done) => done,
                Err(()) => return Some(false),
            }
        } else {
            false
        };
        if done && keep {
            return Some(true);
        }
        if done {
            self.finish_connection(py);
        } else {
            self.after_flush = if keep {
                AfterFlush::Next
            } else {
                AfterFlush::Close
            };
        }
        Some(false)
    }
}

/// What the app's `receive` and `send` act on: one request of one connection.
#[pyclass(unsendable, module = "headrace._headrace", name = "AsgiChannel")]
pub struct AsgiChannel {
    conn: Py<AsgiConn>,
    id: u64,
}

#[pymethods]
impl AsgiChannel {
    /// ASGI `receive()`: the buffered body at once, else a Future.
    fn receive(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let conn = self.conn.bind(py);
        let mut c = conn.borrow_mut();
        if c.req.as_ref().is_none_or(|r| r.id != self.id) {
            return ready(py, disconnect(py)?);
        }
        if let Some(msg) = c.poll_receive(py)? {
            return ready(py, msg);
        }
        let fut = c.shared.create_future.call0(py)?;
        if let Some(r) = c.req.as_mut() {
            r.waiter = Some(fut.clone_ref(py));
        }
        Ok(fut)
    }

    /// ASGI `send(message)`: finished at once when the socket took the bytes, else a Future
    /// resolved when it drains.
    fn send(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let conn = self.conn.bind(py);
        let mut c = conn.borrow_mut();
        let closed = c.closed;
        let exc = c.shared.disconnected.clone_ref(py);
        let disconnected = || client_gone(py, &exc);
        let Some(r) = c.req.as_mut().filter(|r| r.id == self.id) else {
            return Err(disconnected());
        };
        if r.gone || closed {
            r.gone = true;
            return Err(disconnected());
        }
        let kind_obj = message.get_item(intern!(py, "type"))?;
        let kind = kind_obj.cast::<PyString>()?.to_str()?;
        if kind == "http.response.start" {
            if r.started {
                return Err(PyRuntimeError::new_err("http.response.start sent twice"));
            }
            r.started = true;
            r.status = message.get_item(intern!(py, "status"))?.extract()?;
            r.headers = get(message, intern!(py, "headers"))?.map(Bound::unbind);
            return Ok(c.shared.done.clone_ref(py));
        }
        if kind == "http.response.pathsend" {
            let written = c.send_path(py, message)?;
            return c.awaitable(py, written);
        }
        if kind != "http.response.body" {
            return Err(PyRuntimeError::new_err(format!(
                "unexpected ASGI message {kind:?}"
            )));
        }
        if !r.started {
            return Err(PyRuntimeError::new_err(
                "http.response.body before http.response.start",
            ));
        }
        if r.complete {
            return Err(PyRuntimeError::new_err(
                "http.response.body after the response ended",
            ));
        }
        let body = get(message, intern!(py, "body"))?;
        let more = match get(message, intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        let written = match &body {
            Some(b) if !b.is_none() => {
                let data = bytes_of(b)?;
                c.send_body(py, &data, more)?
            }
            _ => c.send_body(py, b"", more)?,
        };
        match written {
            Ok(true) => Ok(c.shared.done.clone_ref(py)),
            Ok(false) => {
                if let Some(f) = &c.drained {
                    return Ok(f.clone_ref(py));
                }
                let f = c.shared.create_future.call0(py)?;
                c.drained = Some(f.clone_ref(py));
                Ok(f)
            }
            Err(()) => Err(disconnected()),
        }
    }

    /// The request's task ended: `tb` is the traceback when the app raised, `cancelled` when
    /// the task was cancelled.
    #[pyo3(signature = (tb=None, cancelled=false))]
    fn finish(&self, py: Python<'_>, tb: Option<&str>, cancelled: bool) {
        self.end(py, tb, cancelled);
    }
}

impl AsgiChannel {
    fn end(&self, py: Python<'_>, tb: Option<&str>, cancelled: bool) {
        let conn = self.conn.bind(py);
        let sh = Rc::clone(&conn.borrow().shared);
        let action = {
            let mut c = conn.borrow_mut();
            c.finish(py, self.id, tb, cancelled, &self.conn)
        };
        perform(py, &sh, action);
    }
}

/// One request's coroutine, the one its asyncio Task runs: it drives the app's coroutine and,
/// when that ends, the Rust side's end of the request (a 500 and the traceback when the app
/// raised before answering, the log line, the next request on the connection). A Python
/// `async def` wrapper did this before; this costs no frame per request. It quacks as a
/// coroutine (`send`, `throw`, `close`, `__await__`), which is what `asyncio.Task` asks of it.
#[pyclass(unsendable, module = "headrace._headrace", name = "AsgiRequest")]
pub struct RequestCoro {
    /// The app's coroutine; `None` once it ended.
    coro: Option<Py<PyAny>>,
    chan: Py<AsgiChannel>,
    /// What the `uwsgi` module's request calls see (`set_logvar`, `connection_fd`, ...): the
    /// thread's while this request's task runs a step, so concurrent requests keep theirs.
    current: Option<crate::offload::core::Current>,
}

impl RequestCoro {
    /// Resume the app's coroutine with `value`, or throw `exc` into it: what it yielded, or
    /// `None` once the request is over.
    fn resume(
        &mut self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let Some(coro) = self.coro.as_ref().map(|c| c.clone_ref(py)) else {
            return Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            ));
        };
        crate::offload::core::enter(self.current.take());
        let step = match exc {
            None => crate::sys::py::coro_send(coro.bind(py), value),
            Some(e) => match coro.call_method1(py, intern!(py, "throw"), (e,)) {
                Ok(y) => Ok(Some(y)),
                Err(err) if err.is_instance_of::<PyStopIteration>(py) => Ok(None),
                Err(err) => Err(err),
            },
        };
        if let Ok(Some(yielded)) = step {
            self.current = crate::offload::core::leave();
            return Ok(Some(yielded));
        }
        // The request ends with its `uwsgi` state still the thread's: its log line takes the
        // logvars (`offload::core::end_request`).
        let ended = self.end_step(py, step);
        drop(crate::offload::core::leave());
        ended
    }

    fn end_step(
        &mut self,
        py: Python<'_>,
        step: PyResult<Option<Py<PyAny>>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        match step {
            Ok(Some(yielded)) => Ok(Some(yielded)),
            Ok(None) => {
                self.coro = None;
                self.chan.borrow(py).end(py, None, false);
                Ok(None)
            }
            Err(err) => {
                self.coro = None;
                let sh = Rc::clone(&self.chan.borrow(py).conn.bind(py).borrow().shared);
                let base = !err.is_instance_of::<PyException>(py)
                    && !err.is_instance(py, sh.cancelled.bind(py));
                Self::end_with(py, &sh, &self.chan, &err);
                if base {
                    // KeyboardInterrupt, SystemExit: the request is over, the error goes on.
                    return Err(err);
                }
                Ok(None)
            }
        }
    }

    /// The app raised `err`: an `Exception` is a 500 with its traceback logged, anything else
    /// (a cancelled task) ends the request without one.
    fn end_with(py: Python<'_>, sh: &Shared, chan: &Py<AsgiChannel>, err: &PyErr) {
        if err.is_instance_of::<PyException>(py) {
            let tb = sh
                .format_exception
                .call1(py, (err.get_type(py), err.value(py), err.traceback(py)))
                .and_then(|lines| {
                    let joined =
                        PyString::new(py, "").call_method1(intern!(py, "join"), (lines,))?;
                    joined.extract::<String>()
                })
                .unwrap_or_else(|e| format!("{err} (and formatting its traceback failed: {e})"));
            chan.borrow(py).end(py, Some(&tb), false);
        } else {
            chan.borrow(py).end(py, None, true);
        }
    }
}

#[pymethods]
impl RequestCoro {
    fn send(&mut self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.resume(py, value, None)?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        &mut self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        // `throw(exc)` (the form asyncio uses) or the legacy `throw(type, value, tb)`.
        let exc = match val {
            Some(v) if !v.is_none() => v.clone(),
            _ if typ.is_instance_of::<pyo3::types::PyType>() => typ.call0()?,
            _ => typ.clone(),
        };
        if let Some(tb) = tb.filter(|t| !t.is_none()) {
            exc.setattr(intern!(py, "__traceback__"), tb)?;
        }
        self.resume(py, &py.None().into_bound(py), Some(&exc))?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }

    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        if let Some(coro) = self.coro.take() {
            coro.call_method0(py, intern!(py, "close"))?;
            crate::offload::core::enter(self.current.take());
            self.chan.borrow(py).end(py, None, true);
            drop(crate::offload::core::leave());
        }
        Ok(())
    }

    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// What `asyncio.Task` calls on each step (`PyIter_Send(coro, None)` takes `tp_iternext`
    /// when there is one): the end is a NULL return without an exception, so no
    /// `StopIteration` is built per request.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.resume(py, &py.None().into_bound(py), None)
    }

    /// The app's coroutine (for tracebacks and debuggers: `task.get_coro().cr_await`…).
    #[getter]
    fn cr_await(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.coro.as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn cr_frame(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.coro
            .as_ref()
            .and_then(|c| c.getattr(py, intern!(py, "cr_frame")).ok())
            .filter(|f| !f.is_none(py))
    }

    #[getter]
    fn __qualname__(&self, py: Python<'_>) -> Py<PyAny> {
        self.coro
            .as_ref()
            .and_then(|c| c.getattr(py, intern!(py, "__qualname__")).ok())
            .unwrap_or_else(|| PyString::new(py, "AsgiRequest").into_any().unbind())
    }
}

/// An awaitable that is already finished: `await` returns its value without suspending.
#[pyclass(module = "headrace._headrace", name = "AsgiReady")]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.value.take() {
            None => Ok(None),
            Some(v) if v.is_none(py) => Ok(None),
            Some(v) => Err(PyStopIteration::new_err((v,))),
        }
    }
}

fn client_gone(py: Python<'_>, exc: &Py<PyAny>) -> PyErr {
    match exc.call1(py, ("the client went away",)) {
        Ok(v) => PyErr::from_value(v.into_bound(py)),
        Err(e) => e,
    }
}

/// The keys of an HTTP scope, in the order the spec lists them, with the constant values.
fn scope_template<'py>(py: Python<'py>, asgi: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http"))?;
    d.set_item(intern!(py, "asgi"), asgi)?;
    for k in [
        intern!(py, "http_version"),
        intern!(py, "method"),
        intern!(py, "scheme"),
        intern!(py, "path"),
        intern!(py, "raw_path"),
        intern!(py, "query_string"),
        intern!(py, "root_path"),
        intern!(py, "headers"),
        intern!(py, "client"),
        intern!(py, "server"),
        intern!(py, "state"),
        intern!(py, "extensions"),
    ] {
        d.set_item(k, py.None())?;
    }
    Ok(d)
}

/// The scope's `method`: the common ones from interned strings kept by PyO3 (no lookup in the
/// interpreter's intern table per request).
fn method_str<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    match method {
        "GET" => intern!(py, "GET").clone(),
        "POST" => intern!(py, "POST").clone(),
        "HEAD" => intern!(py, "HEAD").clone(),
        "PUT" => intern!(py, "PUT").clone(),
        "DELETE" => intern!(py, "DELETE").clone(),
        "PATCH" => intern!(py, "PATCH").clone(),
        "OPTIONS" => intern!(py, "OPTIONS").clone(),
        other => PyString::intern(py, other),
    }
}

fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready { value: Some(value) })?.into_any())
}

fn disconnect(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d.into_any().unbind())
}

fn get<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(d) = message.cast::<PyDict>() {
        return d.get_item(key);
    }
    match message.get_item(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(message.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The bytes of a `bytes`, `bytearray` or `memoryview` (borrowed when it is `bytes`).
fn bytes_of<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(std::borrow::Cow::Borrowed(b.as_bytes()));
    }
    v.extract::<Vec<u8>>()
        .map(std::borrow::Cow::Owned)
        .map_err(|_| PyTypeError::new_err("ASGI headers and bodies must be bytes"))
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn is_done(py: Python<'_>, fut: &Bound<'_, PyAny>) -> bool {
    fut.call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

fn set_result(py: Python<'_>, fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) {
    if !is_done(py, fut) {
        if let Err(e) = fut.call_method1(intern!(py, "set_result"), (value,)) {
            e.print(py);
        }
    }
}

/// Reason phrases for the statuses apps commonly send.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Add the connection classes to `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AsgiHub>()?;
    m.add_class::<AsgiConn>()?;
    m.add_class::<AsgiChannel>()?;
    m.add_class::<Ready>()?;
    m.add_class::<RequestCoro>()?;
    Ok(())
}
