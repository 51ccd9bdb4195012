//! The logger: the only code that prints. Each line goes out in one `write(2)` on stderr (which
//! `--logto` points at a file), so lines from many processes and threads never interleave.

use std::fmt::Write as _;

/// Write one line (a newline is added) to the log.
pub fn line(text: &str) {
    let mut buf = String::with_capacity(text.len() + 1);
    buf.push_str(text);
    buf.push('\n');
    raw(buf.as_bytes());
}

/// Write bytes that already end in a newline.
pub fn raw(bytes: &[u8]) {
    // A log that cannot be written has nowhere to report the failure.
    let _ = crate::sys::fd::write_all(2, bytes);
}

/// Log a formatted line: `log!("spawned headrace worker {} (pid: {})", id, pid)`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(&format!($($arg)*))
    };
}

/// What one request's uWSGI-style log line needs.
pub struct RequestLog<'a> {
    /// Worker pid.
    pub pid: i32,
    /// This worker's request count, including this one.
    pub worker_requests: u64,
    /// All workers' request count.
    pub total_requests: u64,
    /// Client address (empty for unix sockets).
    pub remote_addr: &'a str,
    /// REMOTE_USER, usually empty.
    pub remote_user: &'a str,
    /// CGI variables in the environ, and their size as a uwsgi packet would count it.
    pub vars: usize,
    /// See `vars`.
    pub vars_bytes: usize,
    /// Request start, Unix seconds.
    pub start_secs: i64,
    /// Method and request URI.
    pub method: &'a [u8],
    /// Request URI as received.
    pub uri: &'a [u8],
    /// Response body bytes sent.
    pub body_bytes: u64,
    /// Milliseconds from start to end.
    pub msecs: u128,
    /// `HTTP/1.1`.
    pub protocol: &'a str,
    /// Status code.
    pub status: u16,
    /// Response header count and head size.
    pub headers: usize,
    /// See `headers`.
    pub head_bytes: usize,
    /// The serving thread ("core" in uWSGI).
    pub core: usize,
}

/// Format uWSGI's default request log line, e.g.
/// `[pid: 8|app: 0|req: 1/1] 127.0.0.1 () {32 vars in 405 bytes} [Thu Apr 11 05:04:21 2024] GET
/// /?param=x => generated 4 bytes in 10005 msecs (HTTP/1.1 200) 1 headers in 45 bytes (1 switches
/// on core 0)`. Log parsers in the wild depend on every field, so keep the shape exactly.
#[must_use]
pub fn request_line(r: &RequestLog<'_>) -> String {
    let mut s = String::with_capacity(256 + r.uri.len());
    let _ = write!(
        s,
        "[pid: {}|app: 0|req: {}/{}] {} ({}) {{{} vars in {} bytes}} [{}] ",
        r.pid,
        r.worker_requests,
        r.total_requests,
        r.remote_addr,
        r.remote_user,
        r.vars,
        r.vars_bytes,
        crate::sys::time::ctime(r.start_secs)
    );
    s.push_str(&String::from_utf8_lossy(r.method));
    s.push(' ');
    s.push_str(&String::from_utf8_lossy(r.uri));
    let _ = writeln!(
        s,
        " => generated {} bytes in {} msecs ({} {}) {} headers in {} bytes (1 switches on core {})",
        r.body_bytes, r.msecs, r.protocol, r.status, r.headers, r.head_bytes, r.core
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_has_uwsgi_shape() {
        let line = request_line(&RequestLog {
            pid: 8,
            worker_requests: 1,
            total_requests: 3,
            remote_addr: "127.0.0.1",
            remote_user: "",
            vars: 32,
            vars_bytes: 405,
            start_secs: 0,
            method: b"GET",
            uri: b"/?param=Request_0",
            body_bytes: 4,
            msecs: 10005,
            protocol: "HTTP/1.1",
            status: 200,
            headers: 1,
            head_bytes: 45,
            core: 0,
        });
        let (head, tail) = line.split_once(" [").unwrap();
        assert_eq!(
            head,
            "[pid: 8|app: 0|req: 1/3] 127.0.0.1 () {32 vars in 405 bytes}"
        );
        let date = &tail[..24];
        assert_eq!(date.len(), 24);
        assert!(tail[24..].starts_with("] GET /?param=Request_0 => generated 4 bytes in 10005 msecs (HTTP/1.1 200) 1 headers in 45 bytes (1 switches on core 0)\n"));
    }
}
