//! The logger: the only code that prints. Each line goes out in one `write(2)` on stderr (which
//! `--logto` points at a file), so lines from many processes and threads never interleave.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// Write one line (a newline is added) to the log, after the `--log-date` prefix (uWSGI's
/// `uwsgi_log`; request lines are written with [`raw`] and carry no prefix, as in uWSGI).
pub fn line(text: &str) {
    let mut buf = String::with_capacity(text.len() + 1);
    if let Some(Some(date)) = DATE.get() {
        buf.push_str(&date_prefix(date));
    }
    buf.push_str(text);
    buf.push('\n');
    raw(buf.as_bytes());
}

/// `Tue Dec  1 09:00:00 2026 - ` or the strftime format's expansion and ` - `.
fn date_prefix(d: &DatePrefix) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let mut s = match d {
        DatePrefix::Ctime => crate::sys::time::ctime(now),
        DatePrefix::Strftime(f) => crate::sys::time::strftime(f, now),
    };
    s.push_str(" - ");
    s
}

/// Write bytes that already end in a newline (through the `--log-encoder` chain).
pub fn raw(bytes: &[u8]) {
    match ENCODERS.get() {
        Some((chain, _)) if !chain.is_empty() => write_log(&encoder::apply(chain, bytes)),
        _ => write_log(bytes),
    }
}

fn write_log(bytes: &[u8]) {
    if let Some((main, _)) = NET.get().filter(|(main, _)| !main.is_empty()) {
        // With a logger, lines go to it instead of stderr, as uWSGI's log pipe does.
        for s in main {
            s.send(bytes);
        }
        return;
    }
    let watched = FILE.get().and_then(Option::as_ref);
    if let Some(w) = watched {
        w.before_write();
    }
    // A log that cannot be written has nowhere to report the failure.
    let _ = crate::sys::fd::write_all(2, bytes);
    if let Some(w) = watched {
        w.after_write();
    }
}

/// Write a request line: to the `--req-logger` file (through `--log-req-encoder`) when there
/// is one, else to the log (through `--log-encoder`, as uWSGI's single log pipe does).
pub fn request(bytes: &[u8]) {
    match REQ_FILE.get().and_then(Option::as_ref) {
        Some(fd) => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(fd);
            let _ = match ENCODERS.get() {
                Some((_, chain)) if !chain.is_empty() => {
                    crate::sys::fd::write_all(fd, &encoder::apply(chain, bytes))
                }
                _ => crate::sys::fd::write_all(fd, bytes),
            };
        }
        None => match NET.get().filter(|(_, req)| !req.is_empty()) {
            Some((_, req)) => {
                let encoded = match ENCODERS.get() {
                    Some((_, chain)) if !chain.is_empty() => encoder::apply(chain, bytes),
                    _ => bytes.to_vec(),
                };
                for s in req {
                    s.send(&encoded);
                }
            }
            None => raw(bytes),
        },
    }
}

/// Log a formatted line: `log!("spawned headrace worker {} (pid: {})", id, pid)`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log::line(&format!($($arg)*))
    };
}

pub mod encoder;
pub mod file;
pub mod format;
pub mod net;

/// Request logging settings, fixed at startup (uWSGI's `logging_options`).
#[derive(Debug, Clone, Default)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent uWSGI switches, one field each"
)]
pub struct RequestLogging {
    /// `--log-format`, compiled; `None` writes uWSGI's default line.
    pub format: Option<format::Format>,
    /// Log every request (off with `--disable-logging`).
    pub enabled: bool,
    /// `--log-4xx`, `--log-5xx`, `--log-zero`: log these even when disabled.
    pub log_4xx: bool,
    /// See `log_4xx`.
    pub log_5xx: bool,
    /// See `log_4xx`.
    pub log_zero: bool,
    /// `--log-slow MS`: log requests that took at least this long (0 = off).
    pub slow_ms: u64,
    /// `--log-big BYTES`: log responses with at least this many body bytes (0 = off).
    pub big: u64,
    /// `--log-x-forwarded-for`: the address is the X-Forwarded-For header when present.
    pub x_forwarded_for: bool,
    /// `--log-micros`: the default line gives microseconds.
    pub micros: bool,
    /// `--memory-report`: the default line starts with the worker's memory.
    pub memory_report: bool,
}

impl RequestLogging {
    /// Whether any request may be logged (so the worker copies the fields it needs).
    #[must_use]
    pub fn any(&self) -> bool {
        self.enabled
            || self.log_4xx
            || self.log_5xx
            || self.log_zero
            || self.slow_ms > 0
            || self.big > 0
    }

    /// uWSGI's `log_request`: everything when enabled, else only what a condition selects.
    #[must_use]
    pub fn wants(&self, status: u16, body_bytes: u64, msecs: u64) -> bool {
        self.enabled
            || (self.log_zero && body_bytes == 0)
            || (self.slow_ms > 0 && msecs >= self.slow_ms)
            || (self.log_4xx && (400..=499).contains(&status))
            || (self.log_5xx && (500..=599).contains(&status))
            || (self.big > 0 && body_bytes >= self.big)
    }

    /// Whether lines need the worker's memory measured after each request.
    #[must_use]
    pub fn needs_memory(&self) -> bool {
        use format::Var::{Rss, RssM, Vsz, VszM};
        self.memory_report
            || self
                .format
                .as_ref()
                .is_some_and(|f| f.uses(&[Rss, Vsz, RssM, VszM]))
    }

    /// Whether lines need the request's headers (host, user agent, referer, user,
    /// X-Forwarded-For, Content-Length, `var.X`).
    #[must_use]
    pub fn needs_request_vars(&self) -> bool {
        use format::Var::{Cl, Host, Referer, Uagent, User};
        self.x_forwarded_for
            || self.format.as_ref().is_some_and(|f| {
                !f.request_vars.is_empty() || f.uses(&[Host, Uagent, Referer, User, Cl])
            })
    }

    /// Format one request's line.
    #[must_use]
    pub fn render(&self, r: &RequestLog<'_>) -> Vec<u8> {
        match &self.format {
            Some(f) => f.render(r),
            None => request_line(r, self.micros, self.memory_report).into_bytes(),
        }
    }
}

static REQUESTS: OnceLock<RequestLogging> = OnceLock::new();
static FILE: OnceLock<Option<file::Watched>> = OnceLock::new();
static REQ_FILE: OnceLock<Option<std::os::fd::OwnedFd>> = OnceLock::new();
static ENCODERS: OnceLock<(Vec<encoder::Encoder>, Vec<encoder::Encoder>)> = OnceLock::new();
static DATE: OnceLock<Option<DatePrefix>> = OnceLock::new();
/// `--logger` and `--req-logger` datagram loggers (syslog, socket).
static NET: OnceLock<(Vec<net::Sender>, Vec<net::Sender>)> = OnceLock::new();

/// `--log-date`: how non-request lines are prefixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatePrefix {
    /// ctime(3) without the newline.
    Ctime,
    /// A strftime(3) format.
    Strftime(String),
}

/// Set the logging options; called once by the master before any fork (later calls are
/// ignored, which keeps a re-exec'd image's first setting).
pub fn configure(requests: RequestLogging, date: Option<DatePrefix>) {
    let _ = REQUESTS.set(requests);
    let _ = DATE.set(date);
}

/// Build the logging options from the configuration and [`configure`] them; open the
/// `--req-logger` file. Called by the master after `--logto` took effect, before any fork.
///
/// # Errors
/// The `--req-logger` file cannot be opened.
pub fn configure_from(c: &crate::config::Config) -> std::io::Result<()> {
    let l = &c.log;
    if let Some(path) = &c.logto {
        let watch = l.max_size > 0 || l.reopen || !l.touch_reopen.is_empty();
        let _ = FILE.set(watch.then(|| file::Watched {
            path: path.clone(),
            max_size: l.max_size,
            backup: l.backupname.clone(),
        }));
    }
    let _ = ENCODERS.set((l.encoders.clone(), l.req_encoders.clone()));
    let _ = NET.set((net_senders(&l.net_loggers), net_senders(&l.net_req_loggers)));
    for (what, specs) in [
        ("log-encoder", &l.encoder_specs),
        ("log-req-encoder", &l.req_encoder_specs),
    ] {
        for spec in specs {
            crate::log!("[{what}] registered {spec}");
        }
    }
    if let Some(path) = &l.req_logger_file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let _ = REQ_FILE.set(Some(f.into()));
    }
    let ftime = l
        .format_strftime
        .then(|| l.date.clone().flatten())
        .flatten();
    configure(
        RequestLogging {
            format: l
                .format
                .as_deref()
                .map(|f| format::Format::compile(f, ftime)),
            enabled: !c.disable_logging,
            log_4xx: l.log_4xx,
            log_5xx: l.log_5xx,
            log_zero: l.log_zero,
            slow_ms: l.slow_ms,
            big: l.big,
            x_forwarded_for: l.x_forwarded_for,
            micros: l.micros,
            memory_report: l.memory_report,
        },
        l.date.as_ref().map(|d| {
            d.as_ref()
                .map_or(DatePrefix::Ctime, |f| DatePrefix::Strftime(f.clone()))
        }),
    );
    Ok(())
}

/// The senders of the datagram loggers. A syslog logger without a syslog socket (a
/// container without /dev/log) is left out with one warning line: its lines stay on stderr
/// and the server starts.
fn net_senders(targets: &[net::Target]) -> Vec<net::Sender> {
    let mut out = Vec::new();
    for t in targets {
        if let net::Target::Syslog {
            dest: net::Dest::Unix(path),
            ..
        } = t
        {
            if !net::reachable(path) {
                crate::log!(
                    "headrace: warning: logger syslog: no syslog socket at {} (is a syslog daemon running?): log lines stay on stderr",
                    path.display()
                );
                continue;
            }
        }
        out.push(net::Sender::new(t.clone()));
    }
    out
}

/// The wall-clock start, in Unix microseconds, of a request that has run for `micros` until
/// now: what the request log line shows as its start.
#[must_use]
pub fn started_micros_ago(micros: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    u64::try_from(now).unwrap_or(0).saturating_sub(micros)
}

/// The request logging options ([`configure`]d, or uWSGI's defaults).
#[must_use]
pub fn requests() -> &'static RequestLogging {
    static DEFAULT: OnceLock<RequestLogging> = OnceLock::new();
    REQUESTS.get().unwrap_or_else(|| {
        DEFAULT.get_or_init(|| RequestLogging {
            enabled: true,
            ..RequestLogging::default()
        })
    })
}

/// What one request's uWSGI-style log line needs.
#[derive(Debug, Default)]
pub struct RequestLog<'a> {
    /// Worker pid.
    pub pid: i32,
    /// Worker id (1-based).
    pub wid: usize,
    /// This worker's request count, including this one.
    pub worker_requests: u64,
    /// All workers' request count.
    pub total_requests: u64,
    /// Client address (empty for unix sockets).
    pub remote_addr: &'a str,
    /// REMOTE_USER, usually empty.
    pub remote_user: &'a str,
    /// HTTP_HOST.
    pub host: &'a str,
    /// HTTP_USER_AGENT.
    pub user_agent: &'a str,
    /// HTTP_REFERER.
    pub referer: &'a str,
    /// CONTENT_LENGTH as a number (0 when absent).
    pub content_length: u64,
    /// The values of the format's `%(var.X)`, in its order.
    pub request_vars: &'a [Option<String>],
    /// What the app set with `uwsgi.set_logvar` (`%(NAME)`), in order.
    pub logvars: &'a [crate::offload::core::Logvar],
    /// CGI variables in the environ, and their size as a uwsgi packet would count it.
    pub vars: usize,
    /// See `vars`.
    pub vars_bytes: usize,
    /// Request start, Unix microseconds.
    pub start_micros: u64,
    /// Method and request URI.
    pub method: &'a [u8],
    /// Request URI as received.
    pub uri: &'a [u8],
    /// Response body bytes sent.
    pub body_bytes: u64,
    /// Microseconds from start to end.
    pub micros: u64,
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
    /// The worker's resident and virtual size after the request, bytes (0 unless measured).
    pub memory: (u64, u64),
    /// Writing the response failed.
    pub write_error: bool,
    /// Reading the request body failed.
    pub read_error: bool,
}

/// Format uWSGI's default request log line, e.g.
/// `[pid: 8|app: 0|req: 1/1] 127.0.0.1 () {32 vars in 405 bytes} [Thu Apr 11 05:04:21 2024] GET
/// /?param=x => generated 4 bytes in 10005 msecs (HTTP/1.1 200) 1 headers in 45 bytes (1 switches
/// on core 0)`. Log parsers in the wild depend on every field, so keep the shape exactly.
/// `micros` is `--log-micros`; `memory` is `--memory-report` (uWSGI 2.0's prefix).
#[must_use]
pub fn request_line(r: &RequestLog<'_>, micros: bool, memory: bool) -> String {
    let mut s = String::with_capacity(256 + r.uri.len());
    if memory {
        let (rss, vsz) = r.memory;
        let _ = write!(
            s,
            "{{address space usage: {vsz} bytes/{}MB}} {{rss usage: {rss} bytes/{}MB}} ",
            vsz / 1024 / 1024,
            rss / 1024 / 1024
        );
    }
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
        crate::sys::time::ctime(i64::try_from(r.start_micros / 1_000_000).unwrap_or(0))
    );
    s.push_str(&String::from_utf8_lossy(r.method));
    s.push(' ');
    s.push_str(&String::from_utf8_lossy(r.uri));
    let (time, unit) = if micros {
        (r.micros, "micros")
    } else {
        (r.micros / 1000, "msecs")
    };
    let _ = writeln!(
        s,
        " => generated {} bytes in {time} {unit} ({} {}) {} headers in {} bytes (1 switches on core {})",
        r.body_bytes, r.protocol, r.status, r.headers, r.head_bytes, r.core
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_select_like_uwsgi_log_request() {
        let off = RequestLogging::default();
        let on = RequestLogging {
            enabled: true,
            ..RequestLogging::default()
        };
        let c = |f: fn(&mut RequestLogging)| {
            let mut l = RequestLogging::default();
            f(&mut l);
            l
        };
        let four = c(|l| l.log_4xx = true);
        let five = c(|l| l.log_5xx = true);
        let zero = c(|l| l.log_zero = true);
        let slow = c(|l| l.slow_ms = 100);
        let big = c(|l| l.big = 1000);
        // (options, status, body bytes, msecs, logged)
        for (l, status, bytes, ms, want) in [
            (&on, 200, 5, 1, true),
            (&off, 500, 0, 10_000, false),
            (&four, 404, 5, 1, true),
            (&four, 399, 5, 1, false),
            (&four, 500, 5, 1, false),
            (&five, 599, 5, 1, true),
            (&five, 600, 5, 1, false),
            (&zero, 200, 0, 1, true),
            (&zero, 200, 1, 1, false),
            (&slow, 200, 5, 100, true),
            (&slow, 200, 5, 99, false),
            (&big, 200, 1000, 1, true),
            (&big, 200, 999, 1, false),
        ] {
            assert_eq!(
                l.wants(status, bytes, ms),
                want,
                "{l:?} {status} {bytes} {ms}"
            );
        }
        assert!(!off.any() && four.any() && slow.any() && on.any());
    }

    #[test]
    fn micros_and_memory_report_in_the_default_line() {
        let r = RequestLog {
            pid: 8,
            uri: b"/",
            method: b"GET",
            protocol: "HTTP/1.1",
            micros: 12_345,
            memory: (3 << 20, 10 << 20),
            status: 200,
            ..RequestLog::default()
        };
        let plain = request_line(&r, false, false);
        assert!(plain.contains(" => generated 0 bytes in 12 msecs (HTTP/1.1 200) "));
        assert!(request_line(&r, true, false).contains(" in 12345 micros (HTTP/1.1 200) "));
        let mem = request_line(&r, false, true);
        assert_eq!(
            mem.strip_suffix(&plain),
            Some("{address space usage: 10485760 bytes/10MB} {rss usage: 3145728 bytes/3MB} ")
        );
    }

    #[test]
    fn request_line_has_uwsgi_shape() {
        let line = request_line(
            &RequestLog {
                pid: 8,
                worker_requests: 1,
                total_requests: 3,
                remote_addr: "127.0.0.1",
                remote_user: "",
                vars: 32,
                vars_bytes: 405,
                start_micros: 0,
                method: b"GET",
                uri: b"/?param=Request_0",
                body_bytes: 4,
                micros: 10_005_123,
                protocol: "HTTP/1.1",
                status: 200,
                headers: 1,
                head_bytes: 45,
                core: 0,
                ..RequestLog::default()
            },
            false,
            false,
        );
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
