//! The worker's hub for the Rust ASGI connections: [`Shared`], what every connection of the
//! worker shares (the event loop's methods, the app, the scope template, the stop state, the
//! running requests), and the `AsgiHub` class the Python `Server` drives: `adopt` an accepted
//! socket, `stop`, the once-a-second `sweep`, and the `--harakiri` clock (`harakiri`, `oldest`).

use super::conn::{AfterFlush, AsgiConn};
use super::coro::{Ready, SessionCoro};
use super::ctx;
use super::request::scope_template;
use crate::sys::fd;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What every connection of the worker shares: the loop's methods, the app, the stop state.
pub(super) struct Shared {
    pub(super) add_reader: Py<PyAny>,
    pub(super) remove_reader: Py<PyAny>,
    pub(super) add_writer: Py<PyAny>,
    pub(super) remove_writer: Py<PyAny>,
    pub(super) create_future: Py<PyAny>,
    pub(super) create_task: Py<PyAny>,
    pub(super) app: Py<PyAny>,
    /// `asyncio.CancelledError`: a cancelled request ends without a 500.
    pub(super) cancelled: Py<PyAny>,
    /// `traceback.format_exception`, for the log line of an app that raised.
    pub(super) format_exception: Py<PyAny>,
    /// The Python `Server`: `check_done()` and `upgrade(fd, listener, head, leftover)`.
    pub(super) server: Py<PyAny>,
    /// `ClientDisconnected`, the `OSError` subclass raised by a send after the client left.
    pub(super) disconnected: Py<PyAny>,
    /// A scope with every key in place (`asgi` is one dict shared by every scope): each request's scope starts as a copy of it, which
    /// costs one allocation instead of a dict growing key by key.
    pub(super) template: Py<PyDict>,
    /// The finished awaitable with no value, returned by every `send` that did not wait.
    pub(super) done: Py<PyAny>,
    /// The lifespan state; each scope gets a shallow copy.
    pub(super) state: RefCell<Py<PyDict>>,
    pub(super) listeners: Vec<ListenerInfo>,
    pub(super) conns: RefCell<HashMap<RawFd, Py<AsgiConn>>>,
    pub(super) stopping: Cell<bool>,
    pub(super) stop_since: Cell<Option<Instant>>,
    /// A WebSocket handler is installed: upgrade requests are handed to it.
    pub(super) websocket: Cell<bool>,
    pub(super) keepalive: Duration,
    pub(super) socket_timeout: Duration,
    /// `--limit-concurrency` (0: none).
    pub(super) limit: usize,
    /// Requests running, oldest first, for the harakiri clock and `--limit-concurrency`.
    pub(super) running: RefCell<Vec<Running>>,
    pub(super) next_id: Cell<u64>,
    /// `uwsgi.set_user_harakiri` deadlines past due that no HTTP request claimed: WebSocket
    /// sessions', `(id, seconds)`, until `overdue_sessions` takes them.
    pub(super) sessions_due: RefCell<Vec<(u64, u64)>>,
    pub(super) log_requests: bool,
    pub(super) limits: crate::http::Limits,
}

pub(super) struct ListenerInfo {
    pub(super) uwsgi: bool,
    pub(super) link: bool,
    /// The scope's `server`.
    pub(super) server: Py<PyAny>,
}

pub(super) struct Running {
    pub(super) id: u64,
    pub(super) start_ms: u64,
    pub(super) method: Vec<u8>,
    pub(super) uri: Vec<u8>,
    /// The request's asyncio Task, for `--harakiri` (none when it ended inside an eager start).
    pub(super) task: Option<Py<PyAny>>,
    /// `--harakiri` or its own `uwsgi.set_user_harakiri` cancelled it already.
    pub(super) cancelled: bool,
    /// The seconds it gave `uwsgi.set_user_harakiri`, when that is what cancelled it.
    pub(super) user_limit: u64,
}

impl Shared {
    pub(super) fn check_done(&self, py: Python<'_>) {
        if self.stopping.get() && self.conns.borrow().is_empty() {
            if let Err(e) = self.server.call_method0(py, intern!(py, "check_done")) {
                e.print(py);
            }
        }
    }

    pub(super) fn call<'py, A: pyo3::call::PyCallArgs<'py>>(
        py: Python<'py>,
        f: &Py<PyAny>,
        args: A,
    ) {
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
                sessions_due: RefCell::new(Vec::new()),
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

    /// `--harakiri` (`limit` > 0) and `uwsgi.set_user_harakiri`: the requests running for
    /// `limit` seconds or more, or past their own limit, that were not cancelled yet, now
    /// marked cancelled, as `[(task, method, uri, seconds, user limit or 0)]`; the caller logs where
    /// each task is and cancels it (`_asgi.Server.harakiri`). The request then ends as a
    /// cancelled one, with a 504 when nothing was written yet (`AsgiConn::finish`).
    fn harakiri<'py>(&self, py: Python<'py>, limit: f64) -> Vec<Overdue<'py>> {
        let now = super::now_ms();
        let limit_ms = Duration::from_secs_f64(limit.max(0.0)).as_millis();
        let limit_ms = u64::try_from(limit_ms).unwrap_or(u64::MAX);
        let mine = crate::offload::core::overdue_tasks();
        let mut due = Vec::new();
        let mut running = self.shared.running.borrow_mut();
        self.shared.sessions_due.borrow_mut().extend(
            mine.iter()
                .filter(|(id, _)| !running.iter().any(|r| r.id == *id)),
        );
        for r in running.iter_mut() {
            let user = mine.iter().find(|(id, _)| *id == r.id).map(|&(_, s)| s);
            let over = limit > 0.0 && now.saturating_sub(r.start_ms) >= limit_ms;
            if r.cancelled || !(over || user.is_some()) {
                continue;
            }
            let Some(task) = &r.task else { continue };
            r.cancelled = true;
            r.user_limit = if over { 0 } else { user.unwrap_or(0) };
            due.push((
                task.clone_ref(py),
                PyBytes::new(py, &r.method),
                PyBytes::new(py, &r.uri),
                now.saturating_sub(r.start_ms) / 1000,
                r.user_limit,
            ));
        }
        due
    }

    /// The WebSocket sessions past their own `uwsgi.set_user_harakiri`, `[(id, seconds)]`
    /// (each once): the caller cancels their tasks.
    fn overdue_sessions(&self) -> Vec<(u64, u64)> {
        std::mem::take(&mut *self.shared.sessions_due.borrow_mut())
    }

    /// WebSocket session `coro` on connection `fd`, wrapped so that the `uwsgi` request calls
    /// see it as their request (see [`SessionCoro`]).
    fn session(&self, coro: Py<PyAny>, fd: RawFd) -> SessionCoro {
        let id = self.shared.next_id.get() + 1;
        self.shared.next_id.set(id);
        SessionCoro::new(coro, ctx().map_or(0, |c| c.slot), fd, id)
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
type Overdue<'py> = (
    Py<PyAny>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    u64,
    u64,
);

/// Add the hub class to `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AsgiHub>()?;
    Ok(())
}
