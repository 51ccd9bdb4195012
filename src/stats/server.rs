//! The stats listeners, served from the master's poll loop. Every socket is nonblocking and
//! every client has a deadline: a client that connects and never sends its HTTP request, or
//! never reads the answer, is dropped when its time is up, and the master's loop never waits
//! on one (uWSGI's stats server blocks its master for up to `--socket-timeout` instead).

use crate::config::{ListenAddr, StatsConfig};
use crate::sys::proc::PollFd;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// Longest a client may take to send its HTTP request head.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a client may take to read the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest HTTP request head read (the rest is ignored: only the path matters).
const MAX_HEAD: usize = 8192;
/// Most clients served at once; more are closed as soon as they are accepted.
const MAX_CLIENTS: usize = 32;
/// Most connections accepted per listener per wake-up, so a flood cannot hold the loop.
const ACCEPT_BURST: usize = 64;

/// Why a stats listener cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The address could not be bound.
    #[error("cannot bind --{option} {addr}: {source}")]
    Bind {
        /// `stats` or `metrics`.
        option: &'static str,
        /// The address.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--stats` without `--stats-http`: the JSON, then close (uWSGI's raw protocol).
    Raw,
    /// `--stats --stats-http`: HTTP; `/metrics` is Prometheus text, any other path the JSON.
    Http,
    /// `--metrics`: HTTP, Prometheus text on any path.
    Metrics,
}

/// What a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// The stats JSON.
    Json,
    /// Prometheus text.
    Metrics,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Self::Tcp(s) => s.as_raw_fd(),
            Self::Unix(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }
}

enum State {
    /// Reading an HTTP request head.
    Reading(Vec<u8>),
    /// Writing the answer from this offset.
    Writing(Vec<u8>, usize),
}

struct Client {
    stream: Stream,
    kind: Kind,
    state: State,
    deadline: Instant,
}

/// The stats and metrics listeners and their clients (none when neither option is given).
#[derive(Default)]
pub struct Server {
    listeners: Vec<(Listener, Kind)>,
    clients: Vec<Client>,
    minified: bool,
    /// Clients dropped for being too slow, not yet logged.
    dropped: u64,
}

fn bind(addr: &ListenAddr) -> io::Result<Listener> {
    let l = match addr {
        ListenAddr::Tcp(a) => Listener::Tcp(TcpListener::bind(a)?),
        ListenAddr::Unix(p) => {
            let text = p.to_string_lossy();
            if let Some(name) = text.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                Listener::Unix(UnixListener::bind_addr(&a)?)
            } else {
                // A socket file left by a previous run (or by this master before a re-exec).
                if std::fs::symlink_metadata(p)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(p);
                }
                Listener::Unix(UnixListener::bind(p)?)
            }
        }
    };
    match &l {
        Listener::Tcp(t) => t.set_nonblocking(true)?,
        Listener::Unix(u) => u.set_nonblocking(true)?,
    }
    Ok(l)
}

impl Server {
    /// Bind what the configuration asks for (close-on-exec: a re-exec'd master binds again).
    pub fn bind(config: &StatsConfig) -> Result<Self, StatsError> {
        let mut listeners = Vec::new();
        let wanted = [
            (
                config.addr.as_ref(),
                "stats",
                if config.http { Kind::Http } else { Kind::Raw },
            ),
            (config.metrics.as_ref(), "metrics", Kind::Metrics),
        ];
        for (addr, option, kind) in wanted {
            let Some(addr) = addr else { continue };
            let l = bind(addr).map_err(|source| StatsError::Bind {
                option,
                addr: addr.to_string(),
                source,
            })?;
            crate::log!(
                "{} server enabled on {addr}",
                if kind == Kind::Metrics {
                    "metrics"
                } else {
                    "stats"
                }
            );
            listeners.push((l, kind));
        }
        Ok(Self {
            listeners,
            clients: Vec::new(),
            minified: config.minified,
            dropped: 0,
        })
    }

    /// The JSON is written without whitespace.
    #[must_use]
    pub fn minified(&self) -> bool {
        self.minified
    }

    /// The descriptors to wait on: the listeners, then each client for what it waits for.
    pub fn poll_fds(&self, out: &mut Vec<PollFd>) {
        for (l, _) in &self.listeners {
            let fd = match l {
                Listener::Tcp(t) => t.as_raw_fd(),
                Listener::Unix(u) => u.as_raw_fd(),
            };
            out.push(PollFd {
                fd,
                write: false,
                ready: false,
            });
        }
        for c in &self.clients {
            out.push(PollFd {
                fd: c.stream.fd(),
                write: matches!(c.state, State::Writing(..)),
                ready: false,
            });
        }
    }

    /// How long the master may sleep: `max_ms`, or less when a client's deadline is nearer.
    #[must_use]
    pub fn wait_ms(&self, max_ms: i32) -> i32 {
        let now = Instant::now();
        self.clients
            .iter()
            .map(|c| {
                i32::try_from(c.deadline.saturating_duration_since(now).as_millis() + 1)
                    .unwrap_or(i32::MAX)
            })
            .fold(max_ms, i32::min)
    }

    /// Serve what `poll_fds` found ready (`ready` is in the same order). `render` makes a
    /// document when a client needs one.
    pub fn serve(&mut self, ready: &[PollFd], render: &mut dyn FnMut(Document) -> Vec<u8>) {
        let (lready, cready) = ready.split_at(self.listeners.len().min(ready.len()));
        // Clients first (their indexes match `ready`), then new ones.
        let mut keep = Vec::with_capacity(self.clients.len());
        for (i, mut c) in std::mem::take(&mut self.clients).into_iter().enumerate() {
            let is_ready = cready.get(i).is_some_and(|p| p.ready);
            if is_ready && !advance(&mut c, render) {
                continue;
            }
            if Instant::now() >= c.deadline {
                self.dropped += 1;
                continue;
            }
            keep.push(c);
        }
        self.clients = keep;
        for (idx, (l, kind)) in self.listeners.iter().enumerate() {
            if !lready.get(idx).is_some_and(|p| p.ready) {
                continue;
            }
            for _ in 0..ACCEPT_BURST {
                let stream = match l {
                    Listener::Tcp(t) => t.accept().map(|(s, _)| Stream::Tcp(s)),
                    Listener::Unix(u) => u.accept().map(|(s, _)| Stream::Unix(s)),
                };
                let Ok(stream) = stream else { break };
                let nonblocking = match &stream {
                    Stream::Tcp(s) => s.set_nonblocking(true),
                    Stream::Unix(s) => s.set_nonblocking(true),
                };
                if nonblocking.is_err() || self.clients.len() >= MAX_CLIENTS {
                    self.dropped += 1;
                    continue; // dropping it closes it
                }
                let mut c = Client {
                    stream,
                    kind: *kind,
                    state: State::Reading(Vec::new()),
                    deadline: Instant::now() + READ_TIMEOUT,
                };
                if *kind == Kind::Raw {
                    c.state = State::Writing(render(Document::Json), 0);
                    c.deadline = Instant::now() + WRITE_TIMEOUT;
                }
                // Try at once: the answer usually fits in the socket buffer.
                if advance(&mut c, render) {
                    self.clients.push(c);
                }
            }
        }
        if self.dropped > 0 {
            crate::log!(
                "stats: dropped {} client(s) that did not send a request or read the answer within {} s (or too many at once)",
                self.dropped,
                READ_TIMEOUT.as_secs()
            );
            self.dropped = 0;
        }
    }
}

/// Move a client on as far as its socket allows. `false`: it is done (answered or gone).
fn advance(c: &mut Client, render: &mut dyn FnMut(Document) -> Vec<u8>) -> bool {
    if let State::Reading(head) = &mut c.state {
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    head.extend_from_slice(&buf[..n]);
                    if head_complete(head) || head.len() >= MAX_HEAD {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        let doc = match (c.kind, request_path(head)) {
            (Kind::Metrics, _) => Document::Metrics,
            (_, Some(p)) if p == "/metrics" => Document::Metrics,
            _ => Document::Json,
        };
        c.state = State::Writing(http_response(doc, &render(doc)), 0);
        c.deadline = Instant::now() + WRITE_TIMEOUT;
    }
    let State::Writing(out, pos) = &mut c.state else {
        return false;
    };
    while *pos < out.len() {
        match c.stream.write(&out[*pos..]) {
            Ok(0) => return false,
            Ok(n) => *pos += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    false
}

fn head_complete(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The path of `GET /path?query HTTP/1.1`, without the query.
fn request_path(head: &[u8]) -> Option<String> {
    let line = head.split(|&b| b == b'\n').next()?;
    let target = line.split(|&b| b == b' ').nth(1)?;
    let path = target.split(|&b| b == b'?').next()?;
    Some(String::from_utf8_lossy(path).into_owned())
}

/// uWSGI's `--stats-http` head (HTTP/1.0, close, CORS open), with a length.
fn http_response(doc: Document, body: &[u8]) -> Vec<u8> {
    let ctype = match doc {
        Document::Json => "application/json",
        Document::Metrics => "text/plain; version=0.0.4; charset=utf-8",
    };
    let mut out = format!(
        "HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"GET /metrics HTTP/1.1\r\n\r\n", Some("/metrics")),
            (b"GET /metrics?x=1 HTTP/1.0\r\n", Some("/metrics")),
            (b"GET / HTTP/1.1\r\n", Some("/")),
            (b"GARBAGE", None),
            (b"", None),
        ];
        for (head, want) in cases {
            assert_eq!(request_path(head).as_deref(), *want, "{head:?}");
        }
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.0\n\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }

    #[test]
    fn slow_clients_are_dropped_and_others_served() {
        let dir = std::env::temp_dir().join(format!("headrace-stats-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let mut server = Server::bind(&StatsConfig {
            addr: Some(ListenAddr::Unix(path.clone())),
            http: true,
            ..StatsConfig::default()
        })
        .unwrap();
        let mut render = |d: Document| match d {
            Document::Json => b"{}".to_vec(),
            Document::Metrics => b"m 1\n".to_vec(),
        };
        // One client sends nothing; another asks for /metrics.
        let _silent = UnixStream::connect(&path).unwrap();
        let mut asks = UnixStream::connect(&path).unwrap();
        asks.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut round = |server: &mut Server| {
            let mut fds = Vec::new();
            server.poll_fds(&mut fds);
            crate::sys::proc::poll_many(&mut fds, 100);
            server.serve(&fds, &mut render);
        };
        for _ in 0..5 {
            round(&mut server);
        }
        let mut answer = String::new();
        asks.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nm 1\n"), "{answer}");
        assert_eq!(server.clients.len(), 1, "the silent client waits");
        server.clients[0].deadline = Instant::now();
        round(&mut server);
        assert!(server.clients.is_empty(), "the silent client is dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
