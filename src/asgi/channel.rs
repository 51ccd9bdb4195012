//! The app's side of one request: `AsgiChannel`, whose bound `receive` and `send` are what the
//! ASGI app is called with. Both return an awaitable that is already finished (`AsgiReady`)
//! when the body is buffered or the socket took the bytes, and an asyncio Future only when the
//! app must wait (no body yet, or the socket is full: backpressure).

use super::conn::{perform, AsgiConn};
use super::coro::ready;
use super::request::disconnect;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::rc::Rc;

/// What the app's `receive` and `send` act on: one request of one connection.
#[pyclass(unsendable, module = "headrace._headrace", name = "AsgiChannel")]
pub struct AsgiChannel {
    pub(super) conn: Py<AsgiConn>,
    pub(super) id: u64,
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
    /// The request's task ended: finish the request on its connection, then do what follows.
    pub(super) fn end(&self, py: Python<'_>, tb: Option<&str>, cancelled: bool) {
        let conn = self.conn.bind(py);
        let sh = Rc::clone(&conn.borrow().shared);
        let action = {
            let mut c = conn.borrow_mut();
            c.finish(py, self.id, tb, cancelled, &self.conn)
        };
        perform(py, &sh, action);
    }
}

/// The `ClientDisconnected` error a `send` raises once the client has left.
pub(super) fn client_gone(py: Python<'_>, exc: &Py<PyAny>) -> PyErr {
    match exc.call1(py, ("the client went away",)) {
        Ok(v) => PyErr::from_value(v.into_bound(py)),
        Err(e) => e,
    }
}

/// `message[key]`, `None` when the key is missing (a dict or any other mapping).
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
pub(super) fn bytes_of<'a>(v: &'a Bound<'_, PyAny>) -> PyResult<std::borrow::Cow<'a, [u8]>> {
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(std::borrow::Cow::Borrowed(b.as_bytes()));
    }
    v.extract::<Vec<u8>>()
        .map(std::borrow::Cow::Owned)
        .map_err(|_| PyTypeError::new_err("ASGI headers and bodies must be bytes"))
}

/// Add the channel class to `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AsgiChannel>()?;
    Ok(())
}
