//! The awaitables the worker's event loop runs for ASGI requests, in Rust: `AsgiRequest`
//! ([`RequestCoro`]), the coroutine of each request's asyncio Task, `AsgiReady` ([`Ready`]), an
//! awaitable that is already finished, and the helpers for asyncio Futures.

use super::channel::AsgiChannel;
use super::hub::Shared;
use pyo3::exceptions::{PyException, PyRuntimeError, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;
use std::cell::RefCell;
use std::rc::Rc;

/// One request's coroutine, the one its asyncio Task runs: it drives the app's coroutine and,
/// when that ends, the Rust side's end of the request (a 500 and the traceback when the app
/// raised before answering, the log line, the next request on the connection). A Python
/// `async def` wrapper did this before; this costs no frame per request. It quacks as a
/// coroutine (`send`, `throw`, `close`, `__await__`), which is what `asyncio.Task` asks of it.
#[pyclass(unsendable, module = "headrace._headrace", name = "AsgiRequest")]
pub struct RequestCoro {
    /// The app's coroutine; `None` once it ended.
    pub(super) coro: Option<Py<PyAny>>,
    pub(super) chan: Py<AsgiChannel>,
    /// What the `uwsgi` module's request calls see (`set_logvar`, `connection_fd`, ...): the
    /// thread's while this request's task runs a step, so concurrent requests keep theirs.
    pub(super) current: Option<crate::offload::core::Current>,
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
        let step = step(py, coro.bind(py), value, exc);
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
    pub(super) fn end_with(py: Python<'_>, sh: &Shared, chan: &Py<AsgiChannel>, err: &PyErr) {
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
        let exc = thrown(py, typ, val, tb)?;
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

/// One step of coroutine `coro`: send it `value`, or throw `exc` into it. What it yielded, or
/// `None` once it returned.
fn step(
    py: Python<'_>,
    coro: &Bound<'_, PyAny>,
    value: &Bound<'_, PyAny>,
    exc: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Py<PyAny>>> {
    match exc {
        None => crate::sys::py::coro_send(coro, value),
        Some(e) => match coro.call_method1(intern!(py, "throw"), (e,)) {
            Ok(y) => Ok(Some(y.unbind())),
            Err(err) if err.is_instance_of::<PyStopIteration>(py) => Ok(None),
            Err(err) => Err(err),
        },
    }
}

/// The exception a coroutine's `throw(exc)` (the form asyncio uses) or legacy
/// `throw(type, value, tb)` throws.
fn thrown<'py>(
    py: Python<'py>,
    typ: &Bound<'py, PyAny>,
    val: Option<&Bound<'py, PyAny>>,
    tb: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let exc = match val {
        Some(v) if !v.is_none() => v.clone(),
        _ if typ.is_instance_of::<pyo3::types::PyType>() => typ.call0()?,
        _ => typ.clone(),
    };
    if let Some(tb) = tb.filter(|t| !t.is_none()) {
        exc.setattr(intern!(py, "__traceback__"), tb)?;
    }
    Ok(exc)
}

/// A WebSocket session's coroutine (`headrace._asgi_ws.Session.run`), wrapped so that the
/// `uwsgi` module's request calls (`set_logvar`, `get_logvar`, `connection_fd`,
/// `set_user_harakiri`) see the session as their request while its task runs a step, as an
/// HTTP request's [`RequestCoro`] does. Its state is the thread's again for the session's log
/// line (`finish`). Every method takes `&self` (the fields are cells): `finish` may be called
/// from inside a step, while `send` runs.
#[pyclass(unsendable, module = "headrace._headrace", name = "AsgiSession")]
pub struct SessionCoro {
    coro: RefCell<Option<Py<PyAny>>>,
    current: RefCell<Option<crate::offload::core::Current>>,
    /// The session's id among the loop's requests (what its user harakiri is filed under).
    #[pyo3(get)]
    id: u64,
}

impl SessionCoro {
    pub(super) fn new(coro: Py<PyAny>, slot: usize, fd: std::os::fd::RawFd, id: u64) -> Self {
        Self {
            coro: RefCell::new(Some(coro)),
            current: RefCell::new(Some(crate::offload::core::Current::for_task(slot, fd, id))),
            id,
        }
    }

    fn resume(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let Some(coro) = self.coro.borrow().as_ref().map(|c| c.clone_ref(py)) else {
            return Err(PyRuntimeError::new_err(
                "cannot reuse already awaited coroutine",
            ));
        };
        let cur = self.current.borrow_mut().take();
        crate::offload::core::enter(cur);
        let step = step(py, coro.bind(py), value, exc);
        // `None` when the session's log line was written inside this step (it took the state).
        *self.current.borrow_mut() = crate::offload::core::leave();
        if !matches!(step, Ok(Some(_))) {
            *self.coro.borrow_mut() = None;
        }
        step
    }
}

#[pymethods]
impl SessionCoro {
    fn send(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        self.resume(py, value, None)?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }

    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        &self,
        py: Python<'_>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let exc = thrown(py, typ, val, tb)?;
        self.resume(py, &py.None().into_bound(py), Some(&exc))?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let coro = self.coro.borrow_mut().take();
        if let Some(coro) = coro {
            coro.call_method0(py, intern!(py, "close"))?;
        }
        Ok(())
    }

    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.resume(py, &py.None().into_bound(py), None)
    }

    #[getter]
    fn cr_await(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.coro.borrow().as_ref().map(|c| c.clone_ref(py))
    }

    #[getter]
    fn cr_frame(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let coro = self.coro.borrow().as_ref().map(|c| c.clone_ref(py));
        coro.and_then(|c| c.getattr(py, intern!(py, "cr_frame")).ok())
            .filter(|f| !f.is_none(py))
    }

    /// The session is over: its `uwsgi` state becomes the thread's, for the log line
    /// (`_asgi_end` takes it). Nothing when a step of this session's task is the caller (the
    /// state is the thread's already).
    fn finish(&self) {
        let cur = self.current.borrow_mut().take();
        if let Some(cur) = cur {
            crate::offload::core::enter(Some(cur));
        }
    }
}

/// An awaitable that is already finished: `await` returns its value without suspending.
#[pyclass(module = "headrace._headrace", name = "AsgiReady")]
pub struct Ready {
    pub(super) value: Option<Py<PyAny>>,
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

/// `value` as an awaitable that is already finished.
pub(super) fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready { value: Some(value) })?.into_any())
}

/// Whether the asyncio Future `fut` is done (a failing call counts as done).
pub(super) fn is_done(py: Python<'_>, fut: &Bound<'_, PyAny>) -> bool {
    fut.call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

/// Resolve `fut` with `value` unless it is done already (cancelled with its task).
pub(super) fn set_result(py: Python<'_>, fut: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) {
    if !is_done(py, fut) {
        if let Err(e) = fut.call_method1(intern!(py, "set_result"), (value,)) {
            e.print(py);
        }
    }
}

/// Add the awaitable classes to `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Ready>()?;
    m.add_class::<RequestCoro>()?;
    m.add_class::<SessionCoro>()?;
    Ok(())
}
