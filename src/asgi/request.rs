//! A request on an ASGI connection, its request side: [`Req`], one request's state; `begin`,
//! which builds the scope (copied from the hub's template) and the app's channel; and the body
//! as the app's `receive()` gets it (`poll_receive`, `take_body`, and `wake` for a `receive()`
//! that waits).

use super::channel::AsgiChannel;
use super::conn::{Action, AsgiConn};
use super::coro::{is_done, set_result};
use super::file;
use super::hub::{Running, Shared};
use super::{ctx, Parsed};
use crate::http::target::percent_decode;
use crate::http::ChunkedDecoder;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How much request body is still to come.
pub(super) enum Body {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

/// One request's state, owned by its connection.
#[allow(
    clippy::struct_excessive_bools,
    reason = "the independent facts of one HTTP exchange, as the ASGI spec names them"
)]
pub(super) struct Req {
    pub(super) id: u64,
    pub(super) method: String,
    pub(super) target: Vec<u8>,
    pub(super) version: String,
    pub(super) head_only: bool,
    pub(super) body: Body,
    /// Body bytes read straight into a `bytes` object (see `read_body_direct`), handed to the
    /// app before anything in the connection's buffer.
    pub(super) direct: Option<Py<PyBytes>>,
    pub(super) body_sent_final: bool,
    pub(super) keep_alive: bool,
    pub(super) close_after: bool,
    pub(super) expect_continue: bool,
    pub(super) continue_sent: bool,
    /// A `receive()` waiting for body bytes or the disconnect.
    pub(super) waiter: Option<Py<PyAny>>,
    pub(super) gone: bool,
    pub(super) started: bool,
    pub(super) complete: bool,
    pub(super) status: u16,
    /// The `headers` of `http.response.start`, written with the first body.
    pub(super) headers: Option<Py<PyAny>>,
    pub(super) chunked_out: bool,
    pub(super) head_bytes: usize,
    pub(super) body_bytes: u64,
    pub(super) header_count: usize,
    pub(super) request_headers: usize,
    pub(super) exception: bool,
    pub(super) write_error: bool,
    pub(super) t0: Instant,
    pub(super) start_micros: u64,
    /// Host, User-Agent, Referer for the log line.
    pub(super) log: Option<(String, String, String)>,
    pub(super) content_length: u64,
    /// The client's address from a uwsgi packet (a router link, nginx), for the log line;
    /// `None`: the connection's peer.
    pub(super) remote: Option<String>,
}

impl Req {
    pub(super) fn body_done(&self) -> bool {
        matches!(self.body, Body::Done)
    }
}

/// The request's start and its body.
impl AsgiConn {
    pub(super) fn begin(
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
            user_limit: 0,
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

    /// A `receive()` is waiting: answer it if there is something to say now.
    pub(super) fn wake(&mut self, py: Python<'_>) {
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
    pub(super) fn poll_receive(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
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
}

/// The keys of an HTTP scope, in the order the spec lists them, with the constant values.
pub(super) fn scope_template<'py>(
    py: Python<'py>,
    asgi: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
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

/// The `http.disconnect` message.
pub(super) fn disconnect(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d.into_any().unbind())
}
