//! Files sent by an ASGI connection with `sendfile(2)` after a response head: the
//! `http.response.pathsend` extension (the app names a file instead of sending its bytes) and
//! `--static-map` hits in direct mode (the worker answers before the app, as a WSGI worker does,
//! with the shared `crate::static_files` lookup and reply). The connection (`conn.rs`) owns one
//! [`FileOut`] at a time and pumps it from its writer callback, so a full socket is waited for
//! like any other queued output (backpressure), never by blocking the loop.

use super::{ctx, Parsed};
use crate::static_files::{self, Found, Reply, StaticConfig};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

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
