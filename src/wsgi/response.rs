//! `start_response`, the `write()` callable, and writing the response: head on the first
//! non-empty chunk, Content-Length when the length is known, chunked otherwise.

use crate::http::response::{date_header, status_has_no_body};
use crate::http::Version;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Hop-by-hop headers an app must not send (PEP 3333, RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
];

/// Send with the GIL held if the socket takes it all at once (the common case for small
/// responses), else release the GIL and wait.
pub fn send_all(py: Python<'_>, fd: RawFd, bufs: &[&[u8]], timeout: Duration) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let first = match crate::sys::fd::sendv(fd, bufs) {
        Ok(n) => n,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            0
        }
        Err(e) => return Err(e),
    };
    if first == total {
        return Ok(());
    }
    py.detach(|| crate::sys::fd::send_all_blocking_from(fd, bufs, first, timeout))
}

/// The state of one response.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent facts about one response"
)]
pub struct ResponseState {
    fd: RawFd,
    version: Version,
    client_keep_alive: bool,
    is_head: bool,
    timeout: Duration,
    /// Status code (0 until start_response).
    pub status: u16,
    status_line: Vec<u8>,
    headers: Vec<u8>,
    header_count: usize,
    app_length: Option<u64>,
    has_date: bool,
    started: bool,
    /// The head went out.
    pub headers_sent: bool,
    chunked: bool,
    close_after: bool,
    /// Body bytes written.
    pub body_sent: u64,
    /// Bytes of the head written.
    pub head_bytes: usize,
    /// Header lines written.
    pub sent_header_count: usize,
    /// A WSGI contract violation that must become a 500.
    pub error: Option<String>,
    /// The client went away while we wrote.
    pub broken: bool,
    /// The request is over: a thread of the app that kept `write` must not send on a socket
    /// that may already carry another request, or another client.
    pub over: bool,
    /// How far the app read the request body (see `BodyProgress`).
    pub body_progress: Option<std::sync::Arc<super::progress::BodyProgress>>,
    /// The worker's stop flag (see `Server::stopping`).
    stopping: Option<&'static AtomicBool>,
}

impl ResponseState {
    /// A response on `fd` to a request of this version.
    #[must_use]
    pub fn new(
        fd: RawFd,
        version: Version,
        keep_alive: bool,
        is_head: bool,
        timeout: Duration,
        stopping: Option<&'static AtomicBool>,
    ) -> Self {
        Self {
            fd,
            version,
            client_keep_alive: keep_alive,
            is_head,
            timeout,
            status: 0,
            status_line: Vec::new(),
            headers: Vec::new(),
            header_count: 0,
            app_length: None,
            has_date: false,
            started: false,
            headers_sent: false,
            chunked: false,
            close_after: false,
            body_sent: 0,
            head_bytes: 0,
            sent_header_count: 0,
            error: None,
            broken: false,
            over: false,
            body_progress: None,
            stopping,
        }
    }

    /// The client socket.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// start_response was called.
    #[must_use]
    pub fn started(&self) -> bool {
        self.started
    }

    /// The connection may serve another request after this response.
    #[must_use]
    pub fn keep_alive(&self) -> bool {
        self.client_keep_alive
            && !self.close_after
            && !self.broken
            && !self.stopping.is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Make the connection close after this response (a body the app did not finish, an error
    /// after the head went out).
    pub fn force_close(&mut self) {
        self.close_after = true;
    }

    /// Record the status and headers of `start_response`.
    fn start(
        &mut self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        if let Some(exc) = exc_info {
            if self.headers_sent {
                // PEP 3333: too late to change the response; re-raise the app's exception.
                let value = exc.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
        } else if self.started {
            let msg = "start_response called a second time without exc_info";
            self.error = Some(msg.to_owned());
            return Err(PyRuntimeError::new_err(msg));
        }
        match self.parse(status, headers) {
            Ok(()) => {
                self.started = true;
                Ok(())
            }
            Err(e) => {
                self.error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn parse(&mut self, status: &Bound<'_, PyAny>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        let status = status
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("status must be a str like '200 OK'"))?
            .to_str()?;
        let b = status.as_bytes();
        let code_ok = b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ';
        if !code_ok || b.iter().any(|&c| c < 0x20 || c == 0x7f) {
            return Err(PyValueError::new_err(format!(
                "invalid status {status:?}: expected '200 OK'"
            )));
        }
        let code: u16 = status[..3].parse().unwrap_or(500);
        if code < 100 {
            return Err(PyValueError::new_err(format!(
                "invalid status code in {status:?}"
            )));
        }
        let mut line = Vec::with_capacity(b.len() + 11);
        line.extend_from_slice(self.version.as_str().as_bytes());
        line.push(b' ');
        latin1_into(status, &mut line)?;
        line.extend_from_slice(b"\r\n");

        let mut block = Vec::with_capacity(128);
        let mut count = 0;
        let mut length = None;
        let mut has_date = false;
        for item in headers.try_iter()? {
            let item = item?;
            let pair = item
                .cast::<PyTuple>()
                .map_err(|_| PyTypeError::new_err("each header must be a (name, value) tuple"))?;
            if pair.len() != 2 {
                return Err(PyTypeError::new_err(
                    "each header must be a (name, value) tuple",
                ));
            }
            let name_obj = pair.get_item(0)?;
            let value_obj = pair.get_item(1)?;
            let name = name_obj
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err("header names must be str"))?
                .to_str()?;
            let value = value_obj
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err(format!("value of header {name:?} must be str")))?
                .to_str()?;
            if name.is_empty() || !name.bytes().all(is_token) {
                return Err(PyValueError::new_err(format!(
                    "invalid header name {name:?}"
                )));
            }
            if value.chars().any(|c| (c < ' ' && c != '\t') || c == '\x7f') {
                return Err(PyValueError::new_err(format!(
                    "header {name:?} has a control character (CR, LF or NUL) in its value"
                )));
            }
            if HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                return Err(PyValueError::new_err(format!(
                    "hop-by-hop header {name:?} is not allowed from a WSGI app (PEP 3333)"
                )));
            }
            if name.eq_ignore_ascii_case("content-length") {
                let n = value.trim().parse::<u64>().map_err(|_| {
                    PyValueError::new_err(format!("invalid Content-Length {value:?}"))
                })?;
                length = Some(n);
            }
            has_date |= name.eq_ignore_ascii_case("date");
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(b": ");
            latin1_into(value, &mut block)?;
            block.extend_from_slice(b"\r\n");
            count += 1;
        }
        self.status = code;
        self.status_line = line;
        self.headers = block;
        self.header_count = count;
        self.app_length = length;
        self.has_date = has_date;
        Ok(())
    }

    /// Build the head; `known_len` is the body length when the server knows it.
    fn head(&mut self, known_len: Option<u64>) -> Vec<u8> {
        if self
            .body_progress
            .as_ref()
            .is_some_and(|p| p.blocks_reuse())
        {
            // A client never told to send its body may send it anyway, and a body too big to
            // read away after the response makes the next request unreachable: either way the
            // connection ends with this response, and says so.
            self.close_after = true;
        }
        let mut out = Vec::with_capacity(self.status_line.len() + self.headers.len() + 96);
        out.extend_from_slice(&self.status_line);
        out.extend_from_slice(&self.headers);
        let mut count = self.header_count;
        if self.app_length.is_none() && !status_has_no_body(self.status) {
            if let Some(n) = known_len {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
                count += 1;
            } else if self.is_head {
                // No body follows a HEAD response, so no framing is needed.
            } else if self.version == Version::Http11 {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
                self.chunked = true;
                count += 1;
            } else {
                // HTTP/1.0 without a length: the end of the body is the end of the connection.
                self.close_after = true;
            }
        }
        if !self.keep_alive() {
            out.extend_from_slice(b"Connection: close\r\n");
            count += 1;
        } else if self.version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
            count += 1;
        }
        if !self.has_date {
            date_header(&mut out);
            count += 1;
        }
        if let Some((lines, n)) = ADDED_HEADERS.get() {
            out.extend_from_slice(lines);
            count += n;
        }
        out.extend_from_slice(b"\r\n");
        self.headers_sent = true;
        self.head_bytes = out.len();
        self.sent_header_count = count;
        out
    }

    fn write(&mut self, py: Python<'_>, bufs: &[&[u8]]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "client disconnected",
            ));
        }
        let r = send_all(py, self.fd, bufs, self.timeout);
        if r.is_err() {
            self.broken = true;
        }
        r
    }

    /// Bytes of `data` that may go on the wire given the app's Content-Length.
    fn clamp<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        if let Some(limit) = self.app_length {
            let room = usize::try_from(limit.saturating_sub(self.body_sent)).unwrap_or(usize::MAX);
            if data.len() > room {
                self.close_after = true;
                return &data[..room];
            }
        }
        data
    }

    fn body_allowed(&self) -> bool {
        !self.is_head && !status_has_no_body(self.status)
    }

    /// Send one body chunk of a streamed response (headers first, if not yet sent). Empty
    /// chunks send nothing, so a generator can yield b"" before it knows its status.
    pub fn send_chunk(&mut self, py: Python<'_>, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let head = if self.headers_sent {
            Vec::new()
        } else {
            self.head(None)
        };
        let data = if self.body_allowed() {
            self.clamp(data)
        } else {
            &[][..]
        };
        self.body_sent += data.len() as u64;
        if self.chunked && !data.is_empty() {
            let (size, n) = crate::http::response::chunk_size_line(data.len());
            self.write(py, &[&head, &size[..n], data, b"\r\n"])
        } else if head.is_empty() && data.is_empty() {
            Ok(())
        } else {
            self.write(py, &[&head, data])
        }
    }

    /// Send a whole body whose parts are all known (a list or tuple): one head with
    /// Content-Length, then everything in as few system calls as possible.
    pub fn send_whole(&mut self, py: Python<'_>, parts: &[&[u8]]) -> io::Result<()> {
        let total: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let head = self.head(Some(total));
        let mut bufs: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        bufs.push(&head);
        if self.body_allowed() {
            for p in parts {
                let p = self.clamp(p);
                self.body_sent += p.len() as u64;
                bufs.push(p);
            }
        }
        for group in bufs.chunks(64) {
            self.write(py, group)?;
        }
        Ok(())
    }

    /// Send `count` bytes of `file` from `offset` with sendfile(2), GIL released.
    pub fn send_file(
        &mut self,
        py: Python<'_>,
        file: RawFd,
        offset: u64,
        count: u64,
    ) -> io::Result<()> {
        let head = self.head(Some(count));
        self.write(py, &[&head])?;
        if !self.body_allowed() {
            return Ok(());
        }
        let count = self.app_length.map_or(count, |l| l.min(count));
        let fd = self.fd;
        let timeout = self.timeout;
        let r = py.detach(|| {
            let mut off = i64::try_from(offset).unwrap_or(i64::MAX);
            let mut left = count;
            while left > 0 {
                let want = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
                match crate::sys::fd::sendfile(fd, file, &mut off, want) {
                    Ok(0) => return Ok(count - left), // the file shrank
                    Ok(n) => left -= n as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !crate::sys::fd::wait_ready(fd, true, timeout)? {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "client stopped reading",
                            ));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(count)
        });
        match r {
            Ok(sent) => {
                self.body_sent += sent;
                if sent < count {
                    self.close_after = true;
                }
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// End the response: the head if nothing was sent yet, the last chunk if chunked. A body
    /// shorter than the app's Content-Length leaves the connection unusable.
    pub fn finish(&mut self, py: Python<'_>) -> io::Result<()> {
        if !self.headers_sent {
            let head = self.head(Some(0));
            return self.write(py, &[&head]);
        }
        if self.chunked {
            self.write(py, &[b"0\r\n\r\n"])?;
        }
        if self.body_allowed() && self.app_length.is_some_and(|l| self.body_sent < l) {
            self.close_after = true;
        }
        Ok(())
    }

    /// Answer a protocol error found while the app read the body (400, 408, 413), in place of
    /// whatever the app would have said; the connection closes after it.
    pub fn send_protocol_error(
        &mut self,
        py: Python<'_>,
        err: &crate::http::HttpError,
    ) -> io::Result<()> {
        let bytes = err.response();
        self.status = err.status();
        self.headers_sent = true;
        self.head_bytes = bytes.len();
        self.sent_header_count = 4;
        self.close_after = true;
        let r = self.write(py, &[&bytes]);
        crate::sys::fd::close_gently(self.fd);
        r
    }

    /// Answer 500 (only possible while no head was sent); the response is complete after it.
    pub fn send_500(&mut self, py: Python<'_>) -> io::Result<()> {
        let body = b"Internal Server Error\n";
        self.status = 500;
        self.status_line.clear();
        self.status_line
            .extend_from_slice(self.version.as_str().as_bytes());
        self.status_line
            .extend_from_slice(b" 500 Internal Server Error\r\n");
        self.headers = b"Content-Type: text/plain\r\n".to_vec();
        self.header_count = 1;
        self.app_length = None;
        self.has_date = false;
        let head = self.head(Some(body.len() as u64));
        self.body_sent = body.len() as u64;
        self.write(py, &[&head, body])
    }
}

/// `--add-header` lines (each ending in CRLF) and their count, set once per worker.
static ADDED_HEADERS: std::sync::OnceLock<(Vec<u8>, usize)> = std::sync::OnceLock::new();

/// Add these `Name: value` lines to every response this process sends (`--add-header`).
pub fn set_added_headers(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    let _ = ADDED_HEADERS.set((bytes, lines.len()));
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Append a native string as Latin-1 bytes (PEP 3333), refusing code points above U+00FF.
fn latin1_into(s: &str, out: &mut Vec<u8>) -> PyResult<()> {
    if s.is_ascii() {
        out.extend_from_slice(s.as_bytes());
        return Ok(());
    }
    for c in s.chars() {
        let b = u8::try_from(u32::from(c)).map_err(|_| {
            PyValueError::new_err(format!("{s:?} is not Latin-1 (PEP 3333 native strings)"))
        })?;
        out.push(b);
    }
    Ok(())
}

/// The `start_response` callable handed to the app; its `write` method is the write callable.
#[pyclass(module = "headrace")]
pub struct StartResponse {
    /// The response.
    pub state: ResponseState,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__<'py>(
        slf: &Bound<'py, Self>,
        status: &Bound<'py, PyAny>,
        headers: &Bound<'py, PyAny>,
        exc_info: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        StartResponse::use_from_python(slf)?
            .state
            .start(status, headers, exc_info)?;
        slf.getattr("write")
    }

    /// PEP 3333's write(): send `data` now (headers first).
    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut this = StartResponse::use_from_python(slf)?;
        let state = &mut this.state;
        if state.over {
            return Err(PyRuntimeError::new_err(
                "write() called after the response ended",
            ));
        }
        if !state.started {
            return Err(PyRuntimeError::new_err(
                "write() called before start_response()",
            ));
        }
        let data = data
            .cast::<PyBytes>()
            .map_err(|_| PyTypeError::new_err("write() takes bytes"))?;
        state
            .send_chunk(slf.py(), data.as_bytes())
            .map_err(|e| PyOSError::new_err(format!("client disconnected: {e}")))
    }
}

impl StartResponse {
    /// The response, for a call from the app. Another thread of the app may be inside
    /// `write()`, waiting for the client with the GIL released: using it at the same time is
    /// the app's error, raised as a RuntimeError (a Rust borrow panic would abort the worker).
    pub fn use_from_python<'py>(slf: &Bound<'py, Self>) -> PyResult<PyRefMut<'py, Self>> {
        slf.try_borrow_mut()
            .map_err(|_| PyRuntimeError::new_err(IN_USE))
    }
}

/// The error for a `start_response` used by two threads of the app at once.
const IN_USE: &str = "start_response is in use by another thread of the app";
