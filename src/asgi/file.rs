//! Files sent by an ASGI connection with `sendfile(2)` after a response head: the
//! `http.response.pathsend` extension (the app names a file instead of sending its bytes) and
//! `--static-map` hits in direct mode (the worker answers before the app, as a WSGI worker does,
//! with the shared `crate::static_files` lookup and reply). The connection owns one [`FileOut`]
//! at a time: the `AsgiConn` methods at the end of this file queue it (`send_path`,
//! `serve_static`) and pump it from the connection's writer callback (`pump_file`), so a full
//! socket is waited for like any other queued output (backpressure), never by blocking the loop.

use super::channel::client_gone;
use super::conn::{Action, AfterFlush, AsgiConn, PAUSE_ABOVE};
use super::{ctx, Parsed};
use crate::static_files::{self, Found, Reply, StaticConfig};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes sent per writer callback at most: a fast client of a large file must not keep the
/// loop from its other connections (the writer callback comes back at once while the socket
/// stays writable).
const PUMP_BUDGET: u64 = 4 << 20;

/// The largest count given to one `sendfile(2)` (Linux sends at most about 2 GiB per call).
const SENDFILE_MAX: u64 = 1 << 30;

/// What one [`FileOut::pump`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pump {
    /// The whole range is sent.
    Done,
    /// The socket is full or this call's budget is spent: call again when it is writable.
    More,
    /// The connection is unusable.
    Failed,
    /// The file ended before the announced length: the response cannot be completed.
    Short,
}

/// A file range queued after a response head.
pub(super) struct FileOut {
    file: File,
    offset: i64,
    left: u64,
    /// Written once the file is sent: the last chunk of a chunked response.
    pub tail: &'static [u8],
    /// File bytes sent so far.
    pub sent: u64,
    /// A static hit: its log line, written once the file is done or abandoned.
    pub log: Option<StaticLog>,
}

impl FileOut {
    pub fn new(file: File, offset: u64, len: u64) -> Self {
        Self {
            file,
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            left: len,
            tail: b"",
            sent: 0,
            log: None,
        }
    }

    /// Send what `sock` (nonblocking) takes now, up to [`PUMP_BUDGET`] bytes.
    pub fn pump(&mut self, sock: RawFd) -> Pump {
        let mut budget = PUMP_BUDGET;
        while self.left > 0 {
            if budget == 0 {
                return Pump::More;
            }
            let want = usize::try_from(self.left.min(SENDFILE_MAX).min(budget)).unwrap_or(1 << 20);
            match crate::sys::fd::sendfile(sock, self.file.as_raw_fd(), &mut self.offset, want) {
                Ok(0) => return Pump::Short,
                Ok(n) => {
                    self.left -= n as u64;
                    self.sent += n as u64;
                    budget = budget.saturating_sub(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pump::More,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Pump::Failed,
            }
        }
        Pump::Done
    }
}

/// Open the file an `http.response.pathsend` names: a regular file, opened without blocking
/// (a FIFO's open would wait for a writer). A relative path is taken from the worker's current
/// directory, where the app that stat'ed it found it (Starlette's `FileResponse("x.txt")` sends
/// the path as given). Returns the file and its size.
pub(super) fn open_path(path: &Path) -> io::Result<(File, u64)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta.len()))
}

/// The value of the first `Content-Length` in a response head (status line, headers, blank
/// line), if one is there and is a number.
pub(super) fn declared_length(head: &[u8]) -> Option<u64> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let (name, value) = line.split_at(line.iter().position(|&b| b == b':')?);
        if !name.trim_ascii().eq_ignore_ascii_case(b"content-length") {
            return None;
        }
        std::str::from_utf8(value[1..].trim_ascii())
            .ok()?
            .parse()
            .ok()
    })
}

/// `scope["extensions"]` of an HTTP request: what this server does beyond the base spec.
pub(super) fn extensions(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(pyo3::intern!(py, "http.response.pathsend"), PyDict::new(py))?;
    Ok(d)
}

/// What the request log line of a static hit shows (the WSGI worker's line for the same hit).
pub(super) struct StaticLog {
    pub start: Instant,
    pub status: u16,
    pub head_bytes: usize,
    pub headers: usize,
    pub method: Vec<u8>,
    pub uri: Vec<u8>,
    pub protocol: String,
    pub vars: usize,
    pub vars_bytes: usize,
    pub remote: String,
}

/// The static file `p` names, with its reply (`http11`: the status line's version; `close`:
/// the connection ends after it), or `None`: not a static request, the app answers. The
/// lookup's few file-system calls (stat, open) run on the loop: a page-cache lookup, as the
/// open of a pathsend is.
pub(super) fn lookup(
    cfg: &StaticConfig,
    p: &Parsed<'_>,
    http11: bool,
    close: bool,
) -> Option<(Found, Reply)> {
    if p.method != "GET" && p.method != "HEAD" {
        return None;
    }
    // The scope's header pairs (bytes, lowercased names) are what the head carried; the
    // static request borrows their bytes.
    let pairs: Vec<(Bound<'_, PyBytes>, Bound<'_, PyBytes>)> = p
        .headers
        .iter()
        .filter_map(|item| {
            let t = item.cast_into::<PyTuple>().ok()?;
            let name = t.get_item(0).ok()?.cast_into::<PyBytes>().ok()?;
            let value = t.get_item(1).ok()?.cast_into::<PyBytes>().ok()?;
            Some((name, value))
        })
        .collect();
    let mut req = static_files::Request {
        method: p.method.as_bytes(),
        uri: &p.target,
        path: crate::http::target::split_target(&p.target).0,
        ..static_files::Request::default()
    };
    for (name, value) in &pairs {
        req.header(name.as_bytes(), value.as_bytes());
    }
    let found = static_files::lookup(cfg, &req)?;
    let reply = static_files::reply(&found, &req, http11, close);
    Some((found, reply))
}

/// The scoreboard counts and, unless logging is off, the request line of a static hit; `sent`
/// is `None` when the connection failed.
pub(super) fn log_static(l: &StaticLog, sent: Option<u64>) {
    let Ok(c) = ctx() else {
        return;
    };
    let elapsed = l.start.elapsed();
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let body_bytes = sent.unwrap_or(0);
    let outcome = crate::scoreboard::Outcome {
        status: l.status,
        tx: l.head_bytes as u64 + body_bytes,
        elapsed_us: micros,
        exception: false,
        write_error: sent.is_none(),
        read_error: false,
    };
    let (mine, all) = c.scoreboard.record(c.slot, 0, &outcome);
    crate::offload::core::count_request(&outcome);
    let logging = crate::log::requests();
    if !c.settings.log_requests || !logging.wants(l.status, body_bytes, micros / 1000) {
        return;
    }
    let start_micros = crate::log::started_micros_ago(micros);
    let line = logging.render(&crate::log::RequestLog {
        pid: c.pid,
        wid: c.id,
        worker_requests: mine,
        total_requests: all,
        remote_addr: &l.remote,
        remote_user: "",
        host: "",
        user_agent: "",
        referer: "",
        content_length: 0,
        request_vars: &[],
        logvars: &[],
        vars: l.vars,
        vars_bytes: l.vars_bytes,
        start_micros,
        method: &l.method,
        uri: &l.uri,
        body_bytes,
        micros,
        protocol: &l.protocol,
        status: l.status,
        headers: l.headers,
        head_bytes: l.head_bytes,
        core: 0,
        memory: (0, 0),
        write_error: sent.is_none(),
        read_error: false,
    });
    crate::log::request(&line);
}

/// Files sent after a head: `http.response.pathsend` and `--static-map` hits.
impl AsgiConn {
    /// `http.response.pathsend`: the head (with the file's size as `Content-Length` unless the
    /// app gave a length), then the file with `sendfile(2)`, `Content-Length` bytes of it. A
    /// path that cannot be sent raises in the app's `send`: nothing is written yet, so an app
    /// that lets it propagate gets the usual 500.
    pub(super) fn send_path(
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
        let (f, size) = open_path(&path).map_err(|e| {
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
        let len = declared_length(&head).unwrap_or(size);
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
    pub(super) fn awaitable(
        &mut self,
        py: Python<'_>,
        written: Result<bool, ()>,
    ) -> PyResult<Py<PyAny>> {
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
    pub(super) fn pump_file(&mut self, py: Python<'_>) -> Result<bool, ()> {
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
                    log_static(l, Some(f.sent));
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
    pub(super) fn abandon_file(&mut self) {
        if let Some(f) = self.file.take() {
            if let Some(l) = &f.log {
                log_static(l, None);
            }
        }
    }

    /// A static file is being sent (no request runs): the client gets `--socket-timeout` per
    /// stall, as for any response.
    pub(super) fn sweep_file(&mut self, py: Python<'_>, idle: Duration) {
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
    pub(super) fn hold_while_file(&mut self, py: Python<'_>) -> Option<Action> {
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
    pub(super) fn serve_static(&mut self, py: Python<'_>, p: &Parsed<'_>) -> Option<bool> {
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
        let (found, reply) = lookup(&c.static_files, p, http11, !keep)?;
        let remote = p
            .client
            .as_ref()
            .and_then(|c| c.get_item(0).ok())
            .and_then(|a| a.extract::<String>().ok())
            .unwrap_or_else(|| self.remote.clone());
        let mut out = FileOut::new(found.file, reply.offset, reply.len);
        out.log = Some(StaticLog {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn declared_lengths() {
        for (head, want) in [
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n"[..],
                Some(12),
            ),
            (
                b"HTTP/1.1 200 OK\r\nX: 1\r\nContent-Length:7\r\n\r\n",
                Some(7),
            ),
            (b"HTTP/1.1 200 OK\r\nx-content-length: 5\r\n\r\n", None),
            (b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n", None),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                None,
            ),
            (b"HTTP/1.1 200 content-length: 3\r\n\r\n", None),
        ] {
            assert_eq!(
                declared_length(head),
                want,
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    fn temp_file(name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("headrace-file-{}-{name}", std::process::id()));
        std::fs::File::create(&p).unwrap().write_all(data).unwrap();
        p
    }

    #[test]
    fn open_path_takes_regular_files_only() {
        let p = temp_file("open", b"hello");
        let (_, len) = open_path(&p).unwrap();
        assert_eq!(len, 5);
        assert!(open_path(&std::env::temp_dir()).is_err(), "a directory");
        assert_eq!(
            open_path(Path::new("/nonexistent/headrace"))
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        std::fs::remove_file(p).unwrap();
    }

    /// A range larger than the socket buffer: `More` until the reader drains it, then `Done`,
    /// and the reader gets exactly the range.
    #[test]
    fn pump_waits_for_a_full_socket_and_sends_the_range() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let p = temp_file("pump", &data);
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let (file, _) = open_path(&p).unwrap();
        let mut out = FileOut::new(file, 10, data.len() as u64 - 20);
        let mut got = Vec::new();
        let mut buf = vec![0; 1 << 16];
        let mut rounds = 0;
        loop {
            match out.pump(a.as_raw_fd()) {
                Pump::Done => break,
                Pump::More => {}
                Pump::Failed | Pump::Short => panic!("pump failed"),
            }
            rounds += 1;
            let n = b.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert!(rounds > 1, "the socket never filled");
        drop(a);
        b.read_to_end(&mut got).unwrap();
        assert_eq!(got, &data[10..data.len() - 10]);
        assert_eq!(out.sent, data.len() as u64 - 20);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn pump_fails_when_the_file_is_short() {
        let p = temp_file("short", b"abc");
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let (file, _) = open_path(&p).unwrap();
        let mut out = FileOut::new(file, 0, 10);
        assert_eq!(out.pump(a.as_raw_fd()), Pump::Short);
        assert_eq!(out.sent, 3);
        std::fs::remove_file(p).unwrap();
    }
}
