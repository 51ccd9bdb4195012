//! The datagram loggers: `logger = syslog[:IDENT[,FACILITY]]` (uWSGI's syslog plugin: one
//! RFC 3164 datagram per line to the local syslog socket /dev/log, as glibc's `syslog(3)`
//! writes it after `openlog(IDENT, 0, FACILITY)`, severity info) and
//! `logger = socket:ADDR[,PREFIX]` (uWSGI's logsocket plugin: each line, after PREFIX, as one
//! datagram to a unix socket path or to HOST:PORT over UDP). `req-logger` takes the same.
//!
//! Each process opens its own unbound datagram socket the first time it logs (a forked child
//! sees the pid change and opens a new one), so no descriptor has to survive the router's
//! descriptor cleanup, and a datagram is never split or interleaved with another process's.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Mutex;

/// The local syslog socket glibc's `syslog(3)` writes to.
pub const DEV_LOG: &str = "/dev/log";

/// Where a datagram logger sends its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A unix datagram socket at this path.
    Unix(PathBuf),
    /// UDP to HOST:PORT.
    Udp(String),
}

/// One datagram logger, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `syslog[:IDENT[,FACILITY]]`: `<PRI>` (facility * 8 + info), the date, `IDENT: `.
    Syslog {
        /// The tag (uWSGI's default: `uwsgi`).
        ident: String,
        /// facility * 8 + 6 (LOG_INFO).
        pri: u8,
        /// /dev/log, or another socket (tests).
        dest: Dest,
    },
    /// `socket:ADDR[,PREFIX]`.
    Socket {
        /// Where.
        dest: Dest,
        /// Sent before each line.
        prefix: String,
    },
}

/// syslog(3)'s facility names (uWSGI's table; `security` is `auth`), by number.
const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("security", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// LOG_INFO, the severity uWSGI's syslog logger writes with (on Linux).
const INFO: u8 = 6;

impl Target {
    /// Parse a logger's `NAME:ARGS` for the plugins here: `Ok(None)` when NAME is another
    /// logger. The error is the reason for the option's one-line message.
    ///
    /// # Errors
    /// A `socket` logger without an address.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Option<Self>, String> {
        match name {
            "syslog" => {
                let arg = arg.unwrap_or("");
                let (ident, facility) = arg.split_once(',').unwrap_or((arg, ""));
                // uWSGI: an unknown facility name leaves LOG_DAEMON.
                let facility = FACILITIES
                    .iter()
                    .find(|(n, _)| *n == facility)
                    .map_or(3, |(_, f)| *f);
                Ok(Some(Self::Syslog {
                    ident: if ident.is_empty() { "uwsgi" } else { ident }.to_owned(),
                    pri: facility * 8 + INFO,
                    dest: Dest::Unix(PathBuf::from(DEV_LOG)),
                }))
            }
            "socket" => {
                let arg = arg.unwrap_or("");
                let (addr, prefix) = arg.split_once(',').unwrap_or((arg, ""));
                if addr.is_empty() {
                    return Err(
                        "expected socket:ADDR[,PREFIX] (a unix socket path or HOST:PORT)"
                            .to_owned(),
                    );
                }
                // uWSGI: a colon makes it an inet address.
                let dest = if addr.contains(':') {
                    let hostport = match addr.strip_prefix(':') {
                        Some(port) => format!("127.0.0.1:{port}"),
                        None => addr.to_owned(),
                    };
                    Dest::Udp(hostport)
                } else {
                    Dest::Unix(PathBuf::from(addr))
                };
                Ok(Some(Self::Socket {
                    dest,
                    prefix: prefix.to_owned(),
                }))
            }
            _ => Ok(None),
        }
    }

    fn dest(&self) -> &Dest {
        match self {
            Self::Syslog { dest, .. } | Self::Socket { dest, .. } => dest,
        }
    }

    /// The datagram for one log line (`line` may end in a newline).
    #[must_use]
    pub fn datagram(&self, line: &[u8], now: i64) -> Vec<u8> {
        match self {
            Self::Syslog { ident, pri, .. } => {
                let text = line.strip_suffix(b"\n").unwrap_or(line);
                let mut d = format!(
                    "<{pri}>{} {ident}: ",
                    crate::sys::time::strftime("%b %e %H:%M:%S", now)
                )
                .into_bytes();
                d.extend_from_slice(text);
                d
            }
            Self::Socket { prefix, .. } => {
                let mut d = prefix.as_bytes().to_vec();
                d.extend_from_slice(line);
                d
            }
        }
    }
}

/// A process's socket for one target.
enum Sock {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

/// A target with the socket of the process that last used it.
pub struct Sender {
    target: Target,
    sock: Mutex<Option<(i32, Sock)>>,
}

impl Sender {
    /// A sender for `target`; no socket is opened yet.
    #[must_use]
    pub fn new(target: Target) -> Self {
        Self {
            target,
            sock: Mutex::new(None),
        }
    }

    /// Send one line; a line that cannot be sent is dropped (the log has nowhere to say so).
    pub fn send(&self, line: &[u8]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let datagram = self.target.datagram(line, now);
        let pid = crate::sys::proc::getpid();
        let Ok(mut guard) = self.sock.lock() else {
            return;
        };
        if guard.as_ref().is_none_or(|(p, _)| *p != pid) {
            *guard = open(self.target.dest()).ok().map(|s| (pid, s));
        }
        if let Some((_, s)) = guard.as_ref() {
            let _ = match (s, self.target.dest()) {
                (Sock::Unix(u), Dest::Unix(path)) => u.send_to(&datagram, path),
                (Sock::Udp(u), Dest::Udp(addr)) => u.send_to(&datagram, addr.as_str()),
                _ => Ok(0),
            };
        }
    }
}

fn open(dest: &Dest) -> std::io::Result<Sock> {
    match dest {
        Dest::Unix(_) => UnixDatagram::unbound().map(Sock::Unix),
        Dest::Udp(addr) => {
            let v6 = addr.starts_with('[');
            UdpSocket::bind(if v6 { "[::]:0" } else { "0.0.0.0:0" }).map(Sock::Udp)
        }
    }
}

/// Whether a unix datagram socket listens at `path` (for the syslog fallback at startup).
#[must_use]
pub fn reachable(path: &std::path::Path) -> bool {
    UnixDatagram::unbound().is_ok_and(|s| s.connect(path).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uwsgi_logger_args() {
        let syslog = |a| Target::parse("syslog", a).unwrap();
        assert_eq!(
            syslog(None),
            Some(Target::Syslog {
                ident: "uwsgi".into(),
                pri: 30,
                dest: Dest::Unix(DEV_LOG.into())
            })
        );
        assert!(
            matches!(syslog(Some("app,local3")), Some(Target::Syslog { ref ident, pri: 158, .. }) if ident == "app")
        );
        assert!(matches!(
            syslog(Some("app,nosuch")),
            Some(Target::Syslog { pri: 30, .. })
        ));
        assert_eq!(
            Target::parse("socket", Some("127.0.0.1:514,pfx ")).unwrap(),
            Some(Target::Socket {
                dest: Dest::Udp("127.0.0.1:514".into()),
                prefix: "pfx ".into()
            })
        );
        assert_eq!(
            Target::parse("socket", Some("/run/log.sock")).unwrap(),
            Some(Target::Socket {
                dest: Dest::Unix("/run/log.sock".into()),
                prefix: String::new()
            })
        );
        assert!(Target::parse("socket", None).is_err());
        assert_eq!(Target::parse("file", Some("x")).unwrap(), None);
    }

    #[test]
    fn syslog_datagram_is_glibc_shaped() {
        let t = Target::parse("syslog", Some("uwsgi")).unwrap().unwrap();
        let d = String::from_utf8(t.datagram(b"hello world\n", 0)).unwrap();
        // "<30>Jan  1 00:00:00 uwsgi: hello world" in UTC; the date is local time.
        let re =
            regex::Regex::new(r"^<30>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d uwsgi: hello world$")
                .unwrap();
        assert!(re.is_match(&d), "{d:?}");
    }

    #[test]
    fn sends_datagrams_to_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("hr-net-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        assert!(reachable(&path));
        let s = Sender::new(Target::Socket {
            dest: Dest::Unix(path.clone()),
            prefix: "[x] ".into(),
        });
        s.send(b"one\n");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"[x] one\n");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!reachable(&path));
    }
}
