//! The ASGI HTTP connection in Rust: each accepted socket is an `AsgiConn` whose
//! `on_readable` / `on_writable` methods are the callbacks the worker's event loop calls
//! (`loop.add_reader` / `add_writer`, no asyncio Protocol). This file is its state machine:
//! reading into its own buffer, parsing heads with headrace's parsers, starting each request as
//! an asyncio Task, writing with backpressure (a response goes out in one `sendmsg`, head and
//! first body together), timeouts and closing. `AsgiConn`'s other methods are in `request.rs`
//! (the scope, the body for `receive`), `response.rs` (head, body, the request's end) and
//! `file.rs` (`http.response.pathsend`, static files).

use super::channel::AsgiChannel;
use super::coro::{is_done, set_result, RequestCoro};
use super::ctx;
use super::file::FileOut;
use super::hub::Shared;
use super::request::{Body, Req};
use super::response::reason_phrase;
use super::Parsed;
use crate::sys::fd;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Bytes read from a socket at a time.
pub(super) const READ_SIZE: usize = 65536;
/// Bytes read at a time while a request body streams in.
const BODY_READ_SIZE: usize = 256 * 1024;
/// Unconsumed bytes (body or pipelined requests) above which a connection stops being read
/// until the app takes them.
pub(super) const PAUSE_ABOVE: usize = 1 << 20;
/// How long an idle router link stays open once the worker stops (as the WSGI front).
const LINK_IDLE_ON_STOP: Duration = Duration::from_secs(2);

thread_local! {
    /// One read buffer for every connection of this (single-threaded) loop.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SIZE]);
}

/// What to do once the pending output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFlush {
    Nothing,
    /// Start the next (pipelined or keep-alive) request.
    Next,
    /// Half-close and close: the response was the last on this connection.
    Close,
}

/// Work for after the connection's borrow ends (it calls into Python code that may call back).
pub(super) enum Action {
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
    pub(super) fd: Option<OwnedFd>,
    pub(super) raw: RawFd,
    pub(super) shared: Rc<Shared>,
    pub(super) listener: usize,
    pub(super) uwsgi: bool,
    pub(super) link: bool,
    pub(super) client: Py<PyAny>,
    pub(super) remote: String,
    /// Read bytes; `[start..]` not consumed yet.
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    /// Bytes the socket did not take yet.
    pub(super) out: Vec<u8>,
    /// A `send()` waiting for `out` to drain.
    pub(super) drained: Option<Py<PyAny>>,
    pub(super) reading: bool,
    pub(super) writer_on: bool,
    pub(super) closed: bool,
    pub(super) last_active: Instant,
    pub(super) head_started: Option<Instant>,
    pub(super) req: Option<Req>,
    pub(super) on_read: Option<Py<PyAny>>,
    pub(super) on_write: Option<Py<PyAny>>,
    pub(super) after_flush: AfterFlush,
    /// A file to send once `out` is written (`http.response.pathsend`, a static hit).
    pub(super) file: Option<FileOut>,
}

/// Do `action` once the connection's borrow has ended: start the request's Task (the app's
/// coroutine inside a [`RequestCoro`]) or hand the socket to the WebSocket module.
pub(super) fn perform(py: Python<'_>, sh: &Shared, action: Option<Action>) {
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
                    let (fd, id) = {
                        let c = chan.borrow(py);
                        let fd = c.conn.borrow(py).raw;
                        (fd, c.id)
                    };
                    let slot = ctx().map_or(0, |c| c.slot);
                    let started = Py::new(
                        py,
                        RequestCoro {
                            coro: Some(coro),
                            chan: chan.clone_ref(py),
                            current: Some(crate::offload::core::Current::for_task(slot, fd, id)),
                        },
                    )
                    .and_then(|task_coro| sh.create_task.call1(py, (task_coro,)));
                    match started {
                        Ok(task) => {
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
    pub(super) fn readable(slf: &Bound<'_, Self>) {
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
    pub(super) fn draining(&self) -> bool {
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

    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    pub(super) fn pause(&mut self, py: Python<'_>) {
        if self.reading && !self.closed {
            self.reading = false;
            Shared::call(py, &self.shared.remove_reader, (self.raw,));
        }
    }

    pub(super) fn resume(&mut self, py: Python<'_>) {
        if !self.reading && !self.closed {
            if let Some(cb) = &self.on_read {
                self.reading = true;
                Shared::call(py, &self.shared.add_reader, (self.raw, cb.clone_ref(py)));
            }
        }
    }

    /// Start the next request in the buffer, if its head is complete.
    pub(super) fn process(&mut self, py: Python<'_>, me: &Py<Self>) -> Option<Action> {
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

    pub(super) fn sweep(&mut self, py: Python<'_>, now: Instant) {
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
    pub(super) fn lost(&mut self, py: Python<'_>) {
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

    pub(super) fn writer_off(&mut self, py: Python<'_>) {
        if self.writer_on {
            self.writer_on = false;
            Shared::call(py, &self.shared.remove_writer, (self.raw,));
        }
    }

    pub(super) fn close(&mut self, py: Python<'_>) {
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
    pub(super) fn finish_connection(&mut self, py: Python<'_>) {
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
    pub(super) fn write(&mut self, py: Python<'_>, parts: &[&[u8]]) -> Result<bool, ()> {
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

    pub(super) fn writer_on_(&mut self, py: Python<'_>) {
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
}

/// Add the connection class to `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AsgiConn>()?;
    Ok(())
}
