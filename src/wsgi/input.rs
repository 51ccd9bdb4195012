//! `wsgi.input`: the request body, streamed from the socket on demand with the GIL released.
//! It never yields more than Content-Length, decodes chunked bodies, and raises instead of
//! returning a short body when the client goes away.

use crate::http::{ChunkedDecoder, Framing, HttpError, ReadBuf};
use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most body bytes read and discarded after the app returns, to keep the connection alive.
const DRAIN_LIMIT: u64 = 1 << 20;
/// Largest single socket read into the body buffer.
const READ_MAX: usize = 256 * 1024;

/// Why the body could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    /// The client closed the connection mid-body.
    #[error("client disconnected after {got} body bytes{}", expected.map(|e| format!(" of {e}")).unwrap_or_default())]
    Disconnected {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: Option<u64>,
    },
    /// No body bytes arrived for `--socket-timeout`.
    #[error("timed out reading the request body")]
    Timeout,
    /// The chunked framing was invalid or the body too large.
    #[error("{0}")]
    Protocol(HttpError),
    /// A socket error.
    #[error("error reading the request body: {0}")]
    Io(String),
}

impl From<BodyError> for PyErr {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Timeout => PyTimeoutError::new_err(e.to_string()),
            _ => PyOSError::new_err(e.to_string()),
        }
    }
}

enum State {
    Length {
        remaining: u64,
    },
    Chunked {
        decoder: ChunkedDecoder,
        decoded: Vec<u8>,
        pos: usize,
    },
    Done,
}

/// The body of one request and the connection's read buffer (which may also hold the next
/// pipelined request once the body is consumed).
pub struct Body {
    fd: RawFd,
    buf: ReadBuf,
    state: State,
    announced: Option<u64>,
    received: u64,
    /// Set while `Expect: 100-continue` is unanswered; shared with the response, which must
    /// close the connection if it goes out first (the client may or may not send the body).
    continue_pending: Option<Arc<AtomicBool>>,
    timeout: Duration,
    failed: Option<BodyError>,
}

impl Body {
    /// A body framed as `framing`, whose first bytes may already sit in `buf`.
    #[must_use]
    pub fn new(
        fd: RawFd,
        buf: ReadBuf,
        framing: Framing,
        limit: u64,
        continue_pending: Option<Arc<AtomicBool>>,
        timeout: Duration,
    ) -> Self {
        let (state, announced) = match framing {
            Framing::None => (State::Done, None),
            Framing::Length(n) => (State::Length { remaining: n }, Some(n)),
            Framing::Chunked => (
                State::Chunked {
                    decoder: ChunkedDecoder::new(limit),
                    decoded: Vec::new(),
                    pos: 0,
                },
                None,
            ),
        };
        Self {
            fd,
            buf,
            state,
            announced,
            received: 0,
            continue_pending,
            timeout,
            failed: None,
        }
    }

    /// Body bytes ready to hand out without touching the socket.
    fn available(&self) -> &[u8] {
        match &self.state {
            State::Length { remaining } => {
                let n = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                &self.buf.filled()[..n]
            }
            State::Chunked { decoded, pos, .. } => &decoded[*pos..],
            State::Done => &[],
        }
    }

    fn consume(&mut self, n: usize) {
        self.received += n as u64;
        match &mut self.state {
            State::Length { remaining } => {
                self.buf.consume(n);
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = State::Done;
                }
            }
            State::Chunked {
                decoded,
                pos,
                decoder,
            } => {
                *pos += n;
                if *pos == decoded.len() {
                    decoded.clear();
                    *pos = 0;
                    if decoder.is_done() {
                        self.state = State::Done;
                    }
                }
            }
            State::Done => {}
        }
    }

    /// Make more body bytes available. Blocks on the socket: call with the GIL released.
    /// `Ok(false)` means the body is complete.
    fn fill(&mut self) -> Result<bool, BodyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.fill_inner();
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn fill_inner(&mut self) -> Result<bool, BodyError> {
        if let Some(flag) = self.continue_pending.take() {
            flag.store(false, Ordering::Relaxed);
            crate::wsgi::response::send_all_blocking(
                self.fd,
                &[b"HTTP/1.1 100 Continue\r\n\r\n"],
                self.timeout,
            )
            .map_err(|e| BodyError::Io(e.to_string()))?;
        }
        loop {
            match &mut self.state {
                State::Done => return Ok(false),
                State::Length { .. } => {
                    if !self.available().is_empty() {
                        return Ok(true);
                    }
                }
                State::Chunked {
                    decoder,
                    decoded,
                    pos,
                } => {
                    // Decode what is buffered before reading more.
                    while !self.buf.is_empty() && !decoder.is_done() {
                        let input = self.buf.filled();
                        let (used, data) = decoder.step(input).map_err(BodyError::Protocol)?;
                        decoded.extend_from_slice(&input[data]);
                        self.buf.consume(used);
                    }
                    if *pos < decoded.len() {
                        return Ok(true);
                    }
                    if decoder.is_done() {
                        self.state = State::Done;
                        return Ok(false);
                    }
                }
            }
            self.read_socket()?;
        }
    }

    fn read_socket(&mut self) -> Result<(), BodyError> {
        loop {
            match self.buf.read_from(self.fd, self.buf.len() + READ_MAX) {
                Ok(0) => {
                    return Err(BodyError::Disconnected {
                        got: self.received,
                        expected: self.announced,
                    })
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match crate::sys::fd::wait_ready(self.fd, false, self.timeout) {
                        Ok(true) => {}
                        Ok(false) => return Err(BodyError::Timeout),
                        Err(e) => return Err(BodyError::Io(e.to_string())),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(match e.kind() {
                        std::io::ErrorKind::ConnectionReset => BodyError::Disconnected {
                            got: self.received,
                            expected: self.announced,
                        },
                        _ => BodyError::Io(e.to_string()),
                    })
                }
            }
        }
    }

    /// Read up to `limit` bytes (`None` = all). Blocks: call with the GIL released.
    pub fn read(&mut self, limit: Option<usize>) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        loop {
            let want = limit.map_or(usize::MAX, |l| l - out.len());
            if want == 0 {
                break;
            }
            let avail = self.available();
            if avail.is_empty() {
                if !self.fill()? {
                    break;
                }
                continue;
            }
            let n = avail.len().min(want);
            // read(n) blocks until n bytes or the end, like a file: apps commonly call
            // read(CONTENT_LENGTH) once and trust the result.
            out.extend_from_slice(&avail[..n]);
            self.consume(n);
        }
        Ok(out)
    }

    /// Read one line (through `\n`), at most `limit` bytes. Blocks.
    pub fn readline(&mut self, limit: Option<usize>) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        loop {
            let want = limit.map_or(usize::MAX, |l| l - out.len());
            if want == 0 {
                break;
            }
            let avail = self.available();
            if avail.is_empty() {
                if !self.fill()? {
                    break;
                }
                continue;
            }
            let scan = &avail[..avail.len().min(want)];
            if let Some(nl) = memchr::memchr(b'\n', scan) {
                out.extend_from_slice(&scan[..=nl]);
                self.consume(nl + 1);
                break;
            }
            let n = scan.len();
            out.extend_from_slice(scan);
            self.consume(n);
        }
        Ok(out)
    }

    /// Why reading the body failed, if it did.
    #[must_use]
    pub fn failure(&self) -> Option<&BodyError> {
        self.failed.as_ref()
    }

    /// The whole body has been read: finishing needs no socket I/O.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// After the app: read and discard what it left of the body, and return the buffer for the
    /// next request — or `None` when the connection cannot be reused (body too large to drain,
    /// a 100-continue never answered, or a read error). Blocks.
    #[must_use]
    pub fn finish(mut self) -> Option<ReadBuf> {
        if matches!(self.state, State::Done) {
            return Some(self.buf);
        }
        if self.continue_pending.is_some() || self.failed.is_some() {
            return None;
        }
        let mut drained = 0u64;
        loop {
            let n = self.available().len();
            if n > 0 {
                drained += n as u64;
                if drained > DRAIN_LIMIT {
                    return None;
                }
                self.consume(n);
                continue;
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Some(self.buf),
                Err(_) => return None,
            }
        }
    }
}

/// The `wsgi.input` object.
#[pyclass(module = "headrace")]
pub struct Input {
    body: Option<Body>,
}

impl Input {
    /// Wrap a body.
    #[must_use]
    pub fn new(body: Body) -> Self {
        Self { body: Some(body) }
    }

    /// Take the body back when the request is over; later reads see an empty stream.
    pub fn take(&mut self) -> Option<Body> {
        self.body.take()
    }

    fn with_body<T: Send>(
        &mut self,
        py: Python<'_>,
        empty: T,
        f: impl FnOnce(&mut Body) -> Result<T, BodyError> + Send,
    ) -> PyResult<T> {
        match self.body.as_mut() {
            None => Ok(empty),
            Some(body) => py.detach(|| f(body)).map_err(PyErr::from),
        }
    }
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    size.and_then(|s| usize::try_from(s).ok())
}

#[pymethods]
impl Input {
    /// `read(size=-1)`.
    #[pyo3(signature = (size=None))]
    fn read<'py>(&mut self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size);
        let data = self.with_body(py, Vec::new(), |b| b.read(limit))?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readline(size=-1)`.
    #[pyo3(signature = (size=None))]
    fn readline<'py>(
        &mut self,
        py: Python<'py>,
        size: Option<isize>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size);
        let data = self.with_body(py, Vec::new(), |b| b.readline(limit))?;
        Ok(PyBytes::new(py, &data))
    }

    /// `readlines(hint=-1)`.
    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(
        &mut self,
        py: Python<'py>,
        hint: Option<isize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with_body(py, Vec::new(), |b| b.readline(None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_body(py, Vec::new(), |b| b.readline(None))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }

    /// File-like objects say whether they are readable.
    #[staticmethod]
    fn readable() -> bool {
        true
    }

    /// Closing the input is the server's job; apps calling it are tolerated.
    #[staticmethod]
    fn close() {}

    fn __repr__(slf: PyRef<'_, Self>) -> String {
        drop(slf);
        "<headrace wsgi.input>".to_owned()
    }

    /// Reject seek with the io module's error, so libraries fall back to reading.
    #[staticmethod]
    #[pyo3(signature = (*_args))]
    fn seek(_args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<()> {
        Err(PyValueError::new_err("wsgi.input is not seekable"))
    }

    #[staticmethod]
    fn seekable() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn body_over_socket(
        prebuffered: &[u8],
        rest: &[u8],
        framing: Framing,
        close: bool,
    ) -> (Body, UnixStream, UnixStream) {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.write_all(rest).unwrap();
        if close {
            b.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let mut buf = ReadBuf::with_capacity(64);
        buf.extend(prebuffered);
        let body = Body::new(a.as_raw_fd(), buf, framing, 0, None, Duration::from_secs(2));
        (body, a, b)
    }

    #[test]
    fn length_never_reads_past_the_body() {
        let (mut body, _a, _b) = body_over_socket(b"hel", b"loNEXT", Framing::Length(5), false);
        assert_eq!(body.read(Some(2)).unwrap(), b"he");
        assert_eq!(body.read(None).unwrap(), b"llo");
        assert_eq!(body.read(None).unwrap(), b"");
        let buf = body.finish().unwrap();
        assert_eq!(buf.filled(), b"NEXT");
    }

    #[test]
    fn readline_and_chunked() {
        let (mut body, _a, _b) = body_over_socket(
            b"4\r\nab\nc\r\n",
            b"3\r\nd\ne\r\n0\r\n\r\nGET",
            Framing::Chunked,
            false,
        );
        assert_eq!(body.readline(None).unwrap(), b"ab\n");
        assert_eq!(body.readline(Some(1)).unwrap(), b"c");
        assert_eq!(body.readline(None).unwrap(), b"d\n");
        assert_eq!(body.read(None).unwrap(), b"e");
        assert_eq!(body.finish().unwrap().filled(), b"GET");
    }

    #[test]
    fn short_body_raises() {
        let (mut body, _a, _b) = body_over_socket(b"ab", b"c", Framing::Length(10), true);
        let err = body.read(None).unwrap_err();
        assert!(
            matches!(
                err,
                BodyError::Disconnected {
                    got: 3,
                    expected: Some(10)
                }
            ),
            "{err:?}"
        );
        assert!(body.read(None).is_err(), "the error sticks");
        let (mut body, _a, _b) = body_over_socket(b"", b"5\r\nab", Framing::Chunked, true);
        assert!(body.read(None).is_err());
        let (mut body, _a, _b) = body_over_socket(b"", b"zz\r\n", Framing::Chunked, true);
        assert!(matches!(body.read(None), Err(BodyError::Protocol(_))));
    }

    #[test]
    fn unread_body_is_drained() {
        let (body, _a, _b) = body_over_socket(b"ab", b"cdefGET /", Framing::Length(6), false);
        assert_eq!(body.finish().unwrap().filled(), b"GET /");
    }
}
