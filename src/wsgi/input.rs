//! `wsgi.input`: the request body, streamed from the socket on demand with the GIL released.
//! It never yields more than Content-Length, decodes chunked bodies, and raises instead of
//! returning a short body when the client goes away.

use super::progress::{BodyProgress, DRAIN_LIMIT};
use crate::http::{ChunkedDecoder, Framing, HttpError, ReadBuf};
use pyo3::exceptions::{PyOSError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of an unread chunked body read away after a keep-alive response.
const CHUNKED_DRAIN_LIMIT: u64 = 64 << 20;
/// Largest single socket read into the body buffer.
const READ_MAX: usize = 256 * 1024;
/// Most bytes `read()` allocates before they arrive. Content-Length is only the client's word:
/// a client announcing gigabytes and sending a few bytes must not make the worker allocate
/// gigabytes. Bodies up to this size (or already buffered) are read straight into the bytes
/// object returned; larger ones into a buffer that doubles as the bytes arrive.
const EAGER_ALLOC: usize = 1 << 20;

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
    /// `Expect: 100-continue` is still to be answered (on the first read).
    send_continue: bool,
    /// Shared with the response (see [`BodyProgress`]).
    progress: Option<Arc<BodyProgress>>,
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
        expect_continue: bool,
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
            send_continue: expect_continue,
            progress: (framing != Framing::None).then(|| {
                Arc::new(BodyProgress {
                    continue_pending: AtomicBool::new(expect_continue),
                    // A chunked body's size is unknown: assume it small until draining it
                    // shows otherwise (see `drain_arrived`).
                    unread: AtomicU64::new(announced.unwrap_or(0)),
                })
            }),
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

    /// The shared progress, for the response.
    #[must_use]
    pub fn progress(&self) -> Option<Arc<BodyProgress>> {
        self.progress.clone()
    }

    fn consume(&mut self, n: usize) {
        self.received += n as u64;
        if let (Some(p), Some(total)) = (&self.progress, self.announced) {
            p.unread
                .store(total.saturating_sub(self.received), Ordering::Relaxed);
        }
        match &mut self.state {
            State::Length { remaining } => {
                self.buf.consume(n);
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = State::Done;
                    if let Some(p) = &self.progress {
                        p.unread.store(0, Ordering::Relaxed);
                    }
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
                        if let Some(p) = &self.progress {
                            p.unread.store(0, Ordering::Relaxed);
                        }
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

    /// `Expect: 100-continue`: the first read tells the client to send its body.
    fn answer_continue(&mut self) -> Result<(), BodyError> {
        if std::mem::take(&mut self.send_continue) {
            if let Some(p) = &self.progress {
                p.continue_pending.store(false, Ordering::Relaxed);
            }
            crate::sys::fd::send_all_blocking(
                self.fd,
                &[b"HTTP/1.1 100 Continue\r\n\r\n"],
                self.timeout,
            )
            .map_err(|e| BodyError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// The bytes left of a Content-Length body (`None` for chunked or no body).
    #[must_use]
    pub fn remaining_length(&self) -> Option<u64> {
        match self.state {
            State::Length { remaining } => Some(remaining),
            State::Done => Some(0),
            State::Chunked { .. } => None,
        }
    }

    /// Content-Length bodies: fill `dst` exactly (`dst.len()` at most the bytes remaining),
    /// straight from the socket once the buffered bytes are used, so a large body is copied
    /// once instead of through the connection buffer. Blocks: call with the GIL released.
    pub fn read_exact_into(&mut self, dst: &mut [u8]) -> Result<(), BodyError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.read_exact_inner(dst);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn read_exact_inner(&mut self, dst: &mut [u8]) -> Result<(), BodyError> {
        self.answer_continue()?;
        let avail = self.available();
        let mut pos = avail.len().min(dst.len());
        dst[..pos].copy_from_slice(&avail[..pos]);
        self.consume(pos);
        while pos < dst.len() {
            match crate::sys::fd::read(self.fd, &mut dst[pos..]) {
                Ok(0) => {
                    return Err(BodyError::Disconnected {
                        got: self.received,
                        expected: self.announced,
                    })
                }
                Ok(k) => {
                    pos += k;
                    self.account(k);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match crate::sys::fd::wait_ready(self.fd, false, self.timeout) {
                        Ok(true) => {}
                        Ok(false) => return Err(BodyError::Timeout),
                        Err(e) => return Err(BodyError::Io(e.to_string())),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(BodyError::Disconnected {
                        got: self.received,
                        expected: self.announced,
                    })
                }
                Err(e) => return Err(BodyError::Io(e.to_string())),
            }
        }
        Ok(())
    }

    /// Content-Length bodies: read exactly `n` bytes (at most the bytes remaining) into a
    /// buffer that grows as they arrive, so that memory follows what the client sent, not what
    /// it announced. Blocks: call with the GIL released.
    pub fn read_exact_growing(&mut self, n: usize) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        while out.len() < n {
            let have = out.len();
            let next = n.min(have.saturating_mul(2).max(EAGER_ALLOC));
            out.resize(next, 0);
            self.read_exact_into(&mut out[have..])?;
        }
        Ok(out)
    }

    /// How many bytes `read(n)` may allocate before they arrive: the bytes already buffered,
    /// or [`EAGER_ALLOC`] if more.
    #[must_use]
    pub fn eager_limit(&self) -> usize {
        self.available().len().max(EAGER_ALLOC)
    }

    /// Count `n` Content-Length body bytes read past the buffer.
    fn account(&mut self, n: usize) {
        self.received += n as u64;
        if let (Some(p), Some(total)) = (&self.progress, self.announced) {
            p.unread
                .store(total.saturating_sub(self.received), Ordering::Relaxed);
        }
        if let State::Length { remaining } = &mut self.state {
            *remaining = remaining.saturating_sub(n as u64);
            if *remaining == 0 {
                self.state = State::Done;
            }
        }
    }

    fn fill_inner(&mut self) -> Result<bool, BodyError> {
        self.answer_continue()?;
        loop {
            self.decode_buffered()?;
            match &self.state {
                State::Done => return Ok(false),
                _ if !self.available().is_empty() => return Ok(true),
                _ => {}
            }
            self.read_socket()?;
        }
    }

    /// Chunked bodies: decode what is buffered; mark the body done when the last chunk and
    /// trailers are through and everything decoded was handed out.
    fn decode_buffered(&mut self) -> Result<(), BodyError> {
        if let State::Chunked {
            decoder,
            decoded,
            pos,
        } = &mut self.state
        {
            while !self.buf.is_empty() && !decoder.is_done() {
                let input = self.buf.filled();
                let (used, data) = decoder.step(input).map_err(BodyError::Protocol)?;
                decoded.extend_from_slice(&input[data]);
                self.buf.consume(used);
            }
            if decoder.is_done() && *pos == decoded.len() {
                self.state = State::Done;
                if let Some(p) = &self.progress {
                    p.unread.store(0, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// After the app returned without reading all of its body: read away what has already
    /// arrived (never waiting, at most [`DRAIN_LIMIT`]), so that the response can tell whether
    /// the connection stays usable. Errors are left for [`Body::finish`] to find.
    pub fn drain_arrived(&mut self) {
        if self.send_continue || self.failed.is_some() {
            return;
        }
        let mut drained = 0u64;
        loop {
            if self.decode_buffered().is_err() {
                return;
            }
            let n = self.available().len();
            if n > 0 {
                drained += n as u64;
                if drained > DRAIN_LIMIT {
                    if let Some(p) = &self.progress {
                        p.unread.store(u64::MAX, Ordering::Relaxed);
                    }
                    return;
                }
                self.consume(n);
                continue;
            }
            if matches!(self.state, State::Done) {
                return;
            }
            if !matches!(self.buf.read_from(self.fd, self.buf.len() + READ_MAX), Ok(n) if n > 0) {
                return;
            }
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
        if self.send_continue || self.failed.is_some() {
            return None;
        }
        // A Content-Length body larger than DRAIN_LIMIT made the response say Connection:
        // close already. A chunked body's size shows only now; the response promised
        // keep-alive, so it is read to its end, within a far larger bound.
        let limit = if matches!(self.state, State::Chunked { .. }) {
            CHUNKED_DRAIN_LIMIT
        } else {
            DRAIN_LIMIT
        };
        let mut drained = 0u64;
        loop {
            let n = self.available().len();
            if n > 0 {
                drained += n as u64;
                if drained > limit {
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

    /// The body, while the request runs.
    pub fn body_mut(&mut self) -> Option<&mut Body> {
        self.body.as_mut()
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
        if let Some(body) = self.body.as_mut() {
            if let Some(left) = body.remaining_length() {
                let n = usize::try_from(left).unwrap_or(usize::MAX);
                let n = limit.map_or(n, |l| l.min(n));
                // A Content-Length body of a sane size is read straight into the bytes object
                // returned; a larger one into a buffer that grows as the bytes arrive (the
                // announced length may be a lie), copied once at the end.
                if n <= body.eager_limit() {
                    return PyBytes::new_with(py, n, |dst| {
                        py.detach(|| body.read_exact_into(dst)).map_err(PyErr::from)
                    });
                }
                let data = py.detach(|| body.read_exact_growing(n))?;
                return Ok(PyBytes::new(py, &data));
            }
        }
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
        let body = Body::new(
            a.as_raw_fd(),
            buf,
            framing,
            0,
            false,
            Duration::from_secs(2),
        );
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
    fn growing_read_follows_the_bytes_that_arrive() {
        // A client announcing far more than it sends: the buffer stays near what arrived.
        let (mut body, _a, _b) = body_over_socket(b"abc", b"defgh", Framing::Length(1 << 40), true);
        let n = usize::try_from(body.remaining_length().unwrap()).unwrap();
        assert!(n > body.eager_limit());
        let err = body.read_exact_growing(n).unwrap_err();
        assert!(
            matches!(
                err,
                BodyError::Disconnected {
                    got: 8,
                    expected: Some(1_099_511_627_776)
                }
            ),
            "{err:?}"
        );
        // A body larger than the first allocation is read whole, across the growth steps.
        let data: Vec<u8> = (0..EAGER_ALLOC * 3 + 5)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let len = data.len() as u64;
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let writer = std::thread::spawn(move || {
            let mut b = b;
            b.write_all(&data).unwrap();
            data
        });
        let mut body = Body::new(
            a.as_raw_fd(),
            ReadBuf::with_capacity(64),
            Framing::Length(len),
            0,
            false,
            Duration::from_secs(5),
        );
        let got = body
            .read_exact_growing(usize::try_from(len).unwrap())
            .unwrap();
        assert_eq!(got, writer.join().unwrap());
        assert!(body.is_complete());
    }

    #[test]
    fn unread_body_is_drained() {
        let (body, _a, _b) = body_over_socket(b"ab", b"cdefGET /", Framing::Length(6), false);
        assert_eq!(body.finish().unwrap().filled(), b"GET /");
    }
}
