//! The WebSocket codec (`crate::ws`) for the ASGI loop (`headrace._asgi_ws`): the handshake
//! check, the 101 / denial responses, and one [`AsgiWs`] per open connection that turns the
//! bytes read into events and the app's messages into bytes to write. No I/O here: the Python
//! side owns the socket on its event loop. See DESIGN.md, "ASGI WebSockets".

use super::ctx;
use crate::http::Version;
use crate::ws::{self, close, handshake, Connection, DeflateConfig, Event, Message, State};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use std::sync::atomic::Ordering;

fn version_of(v: &str) -> Version {
    if v == "1.1" {
        Version::Http11
    } else {
        Version::Http10
    }
}

/// Check an Upgrade request (`method`, `http_version` as in the scope, the lowercased
/// headers): an [`AsgiUpgrade`] for a valid one, else `(status, response bytes, reason)` to
/// write before closing (400, or 426 for another `Sec-WebSocket-Version`).
#[pyfunction]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the request's headers, converted once from Python"
)]
fn _ws_check(
    py: Python<'_>,
    method: &str,
    http_version: &str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
) -> PyResult<Py<PyAny>> {
    let pairs = headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
    match handshake::check(method.as_bytes(), version_of(http_version), pairs) {
        Ok(upgrade) => Ok(Py::new(py, AsgiUpgrade { upgrade })?.into_any()),
        Err(e) => Ok((e.status(), PyBytes::new(py, &e.response()), e.to_string())
            .into_pyobject(py)?
            .into_any()
            .unbind()),
    }
}

/// A whole denial response (`websocket.http.response`, or 403 for a close before accept).
#[pyfunction]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the app's headers, converted once from Python"
)]
fn _ws_deny<'py>(
    py: Python<'py>,
    status: u16,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: &[u8],
) -> Bound<'py, PyBytes> {
    let pairs: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    PyBytes::new(py, &handshake::deny(status, &pairs, body))
}

/// The 403 for an app that closed before accepting.
#[pyfunction]
fn _ws_forbidden(py: Python<'_>) -> Bound<'_, PyBytes> {
    PyBytes::new(py, &handshake::forbidden())
}

/// The code open WebSockets get when this worker stops: 1012 (service restart) when the master
/// had already taken the worker out of service (a reload or a cheaper retirement clears its
/// scoreboard slot's `ready` before SIGTERM), else 1001 (going away: shutdown, max-requests).
/// Called before the stop path clears `ready` itself.
#[pyfunction]
fn _ws_going_code() -> PyResult<u16> {
    let c = ctx()?;
    let ready = c.scoreboard.slot(c.slot).ready.load(Ordering::Acquire);
    Ok(if ready == 0 {
        close::SERVICE_RESTART
    } else {
        close::GOING_AWAY
    })
}

/// A WebSocket session begins (the handshake was read): counted in flight like a request
/// (busy counter), but without the harakiri clock, which a long-lived socket must not trip. It
/// ends with `_asgi_end`, which counts it as a request; `--max-requests` is checked when an
/// HTTP request starts (a WebSocket that retired its own worker would be closed at once).
#[pyfunction]
fn _ws_begin() -> PyResult<()> {
    let c = ctx()?;
    if c.inflight.fetch_add(1, Ordering::Relaxed) == 0 {
        c.scoreboard
            .slot(c.slot)
            .busy
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// A valid Upgrade request waiting for the app's `websocket.accept`.
#[pyclass(unsendable)]
struct AsgiUpgrade {
    upgrade: handshake::Upgrade,
}

#[pymethods]
impl AsgiUpgrade {
    /// The subprotocols the client offered, in its order.
    #[getter]
    fn subprotocols(&self) -> Vec<String> {
        self.upgrade.subprotocols.clone()
    }

    /// The app accepts: `(101 head, AsgiWs)`. A subprotocol or header that would break the
    /// response raises `ValueError`.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the app's headers, converted once from Python"
    )]
    fn accept<'py>(
        &self,
        py: Python<'py>,
        subprotocol: Option<&str>,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        max_size: usize,
    ) -> PyResult<(Bound<'py, PyBytes>, AsgiWs)> {
        let pairs: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let accepted = self
            .upgrade
            .accept(subprotocol, &pairs, &DeflateConfig::default())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let conn = accepted.connection(ws::Config {
            max_size,
            auto_pong: true,
        });
        Ok((
            PyBytes::new(py, &accepted.head),
            AsgiWs {
                conn,
                compressed: accepted.deflate.is_some(),
            },
        ))
    }
}

/// One open WebSocket connection (after the 101).
#[pyclass(unsendable)]
struct AsgiWs {
    conn: Connection,
    compressed: bool,
}

fn refused(e: &ws::WsError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

#[pymethods]
impl AsgiWs {
    /// permessage-deflate was agreed.
    #[getter]
    fn compressed(&self) -> bool {
        self.compressed
    }

    /// Feed bytes read from the socket.
    fn receive(&mut self, data: &[u8]) {
        self.conn.receive(data);
    }

    /// The socket went away without a close handshake (1006).
    fn connection_lost(&mut self) {
        self.conn.connection_lost();
    }

    /// The next event, oldest first, or `None`: `(0, str | bytes)` a message, `(1, payload)` a
    /// pong, `(2, code, reason)` the close handshake ended or the connection was lost, `(3,
    /// code, reason)` the peer broke the protocol (our close frame with `code` is queued).
    /// Pings are answered by the codec and not reported.
    fn next_event(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyTuple>>> {
        loop {
            let Some(event) = self.conn.next_event() else {
                return Ok(None);
            };
            let t = match event {
                Event::Message(Message::Text(t)) => {
                    (0, PyString::new(py, &t).into_any()).into_pyobject(py)?
                }
                Event::Message(Message::Binary(b)) => {
                    (0, PyBytes::new(py, &b).into_any()).into_pyobject(py)?
                }
                Event::Pong(p) => (1, PyBytes::new(py, &p)).into_pyobject(py)?,
                Event::Close { code, reason } => (2, code, reason).into_pyobject(py)?,
                Event::Error(e) => (3, e.close_code(), e.to_string()).into_pyobject(py)?,
                Event::Ping(_) => continue,
            };
            return Ok(Some(t.unbind()));
        }
    }

    /// Queue a text message; after the close handshake began, `RuntimeError`.
    fn send_text(&mut self, text: &str) -> PyResult<()> {
        self.conn.send_text(text).map_err(|e| refused(&e))
    }

    /// Queue a binary message.
    fn send_binary(&mut self, data: &[u8]) -> PyResult<()> {
        self.conn.send_binary(data).map_err(|e| refused(&e))
    }

    /// Queue a ping.
    fn ping(&mut self, payload: &[u8]) -> PyResult<()> {
        self.conn.ping(payload).map_err(|e| refused(&e))
    }

    /// Start the close handshake with `code` (1005: an empty close frame). A code that may not
    /// go on the wire raises `ValueError`; a second close `RuntimeError`.
    fn close(&mut self, code: u16, reason: &str) -> PyResult<()> {
        match self.conn.close(code, reason) {
            Ok(()) => Ok(()),
            Err(ws::WsError::InvalidArgument(what)) => {
                Err(PyValueError::new_err(format!("invalid {what}: {code}")))
            }
            Err(e) => Err(refused(&e)),
        }
    }

    /// 0 open, 1 closing (our close sent), 2 closed (flush the output, then close the socket).
    fn state(&self) -> u8 {
        match self.conn.state() {
            State::Open => 0,
            State::Closing => 1,
            State::Closed => 2,
        }
    }

    /// The code of the close frame we sent, if any.
    fn sent_close(&self) -> Option<u16> {
        self.conn.sent_close()
    }

    /// Take all output waiting to be written.
    fn take_output<'py>(&mut self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        if self.conn.output().is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &self.conn.take_output()))
        }
    }
}

/// Add the WebSocket glue to `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_ws_check, m)?)?;
    m.add_function(wrap_pyfunction!(_ws_deny, m)?)?;
    m.add_function(wrap_pyfunction!(_ws_forbidden, m)?)?;
    m.add_function(wrap_pyfunction!(_ws_going_code, m)?)?;
    m.add_function(wrap_pyfunction!(_ws_begin, m)?)?;
    m.add_class::<AsgiUpgrade>()?;
    m.add_class::<AsgiWs>()?;
    Ok(())
}
