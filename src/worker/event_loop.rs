//! One serving thread's loop: epoll over the shared listening sockets (EPOLLEXCLUSIVE) and this
//! thread's own connections. The app is called in-line when a request head is complete; the
//! GIL is released only around waits.

use super::conn::Conn;
use super::handoff::ThreadShare;
use super::Worker;
use crate::http::parse::parse_head;
use crate::http::HttpError;
use crate::sys::fd::{self, Epoll};
use crate::wsgi::environ::Peer;
use crate::wsgi::{Exchange, Head, Server};
use pyo3::prelude::*;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const STOP_TOKEN: u64 = u64::MAX;
/// The hand-off socket (connections passed by other workers).
const HANDOFF_TOKEN: u64 = u64::MAX - 1;
/// Tokens below this are listener indexes; at and above, connection slots.
pub const CONN_BASE: u64 = 1 << 32;
/// How often idle connections are checked against their timeouts.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long a router link may sit idle once the stop began. The router closes the idle links
/// of a worker that is not `ready` within its 100 ms tick, so a link idle this long belongs to
/// a stuck router.
const LINK_IDLE_ON_STOP: Duration = Duration::from_secs(2);
/// How often (ms) a stopping thread checks its remaining links.
const DRAIN_TICK_MS: i32 = 100;

struct Thread<'w, 'a> {
    w: &'w Worker<'a>,
    epoll: &'w Epoll,
    /// What the hand-off watcher sees of this thread (kept up to date only with a hand-off
    /// socket).
    share: &'w ThreadShare,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    core: usize,
    /// When this thread began stopping (`None`: still serving).
    draining: Option<Instant>,
}

/// Run thread `core` of worker `w` until the worker is told to stop and this thread's last
/// connection has ended.
pub fn run(py: Python<'_>, w: &Worker<'_>, core: usize) {
    let Some(share) = w.threads.get(core) else {
        return;
    };
    let epoll = &share.epoll;
    for (i, l) in w.listeners.iter().enumerate() {
        // Of the router's links, each thread watches its own only.
        if w.is_link(i) && w.links.get(core) != Some(&i) {
            continue;
        }
        if let Err(e) = epoll.add(l.fd.as_raw_fd(), i as u64, true) {
            crate::log!(
                "headrace: worker {} cannot watch listening socket {i}: {e}",
                w.id
            );
            return;
        }
    }
    if let Err(e) = epoll.add(w.stop_fd, STOP_TOKEN, false) {
        crate::log!("headrace: worker {} cannot watch its stop pipe: {e}", w.id);
        return;
    }
    if let Some(h) = &w.handoff {
        if let Err(e) = epoll.add(h.inbox.as_raw_fd(), HANDOFF_TOKEN, true) {
            crate::log!(
                "headrace: worker {} cannot watch its hand-off socket: {e}",
                w.id
            );
            return;
        }
    }
    let mut t = Thread {
        w,
        epoll,
        share,
        conns: Vec::new(),
        free: Vec::new(),
        core,
        draining: None,
    };
    t.serve_forever(py);
}

impl Thread<'_, '_> {
    fn serve_forever(&mut self, py: Python<'_>) {
        let mut events = fd::empty_events(64);
        let mut last_sweep = Instant::now();
        let master = crate::sys::proc::getppid();
        loop {
            let epoll = &self.epoll;
            let timeout = if self.draining.is_some() {
                DRAIN_TICK_MS
            } else {
                1000
            };
            let n = py.detach(|| epoll.wait(&mut events, timeout)).unwrap_or(0);
            let mut stop = false;
            // A listening socket seen readable in this batch: after each request served, the
            // thread (free again) takes one more connection from it, so a burst of new
            // connections is not left waiting behind full rounds over the open ones. One at a
            // time, and only when free, so that no thread hoards connections that an idle one
            // could serve.
            let mut listening: Option<usize> = None;
            for ev in &events[..n] {
                let token = ev.u64;
                if token == STOP_TOKEN {
                    stop = true;
                } else if token == HANDOFF_TOKEN {
                    self.receive(py);
                } else if token < CONN_BASE {
                    let idx = usize::try_from(token).unwrap_or(0);
                    if self.accept(py, idx) {
                        listening = Some(idx);
                    }
                } else {
                    let slot = usize::try_from(token - CONN_BASE).unwrap_or(usize::MAX);
                    if !self.on_readable(py, slot) {
                        self.close(slot);
                    }
                    if let Some(idx) = listening {
                        if !self.accept(py, idx) {
                            listening = None;
                        }
                    }
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep(py);
                if self.draining.is_none() {
                    if let Some(reason) = self.w.recycle.periodic() {
                        self.w.retire(&reason);
                    }
                    // PR_SET_PDEATHSIG covers a dying master; this covers a master that was
                    // replaced before the signal was armed.
                    if crate::sys::proc::getppid() != master {
                        stop = true;
                    }
                }
            }
            if self.draining.is_none() && (stop || self.w.stopping()) {
                self.begin_drain(py);
            }
            if let Some(since) = self.draining {
                self.close_stale(since);
                if self.conns.iter().all(Option::is_none) {
                    return;
                }
            }
        }
    }

    /// The worker is stopping: stop accepting, end the connections that are between requests,
    /// and keep only the router's links, which may carry requests the router already sent.
    fn begin_drain(&mut self, py: Python<'_>) {
        let w = self.w;
        w.stop();
        self.draining = Some(Instant::now());
        // The router stops sending requests here.
        w.scoreboard.slot(w.slot).ready.store(0, Ordering::Release);
        for l in &w.listeners {
            self.epoll.delete(l.fd.as_raw_fd());
        }
        // The pipe stays readable: watching it would wake this thread in a loop.
        self.epoll.delete(w.stop_fd);
        if let Some(h) = &w.handoff {
            self.epoll.delete(h.inbox.as_raw_fd());
        }
        // This thread is between requests, so every other connection is idle or holds at most
        // part of a request: they close now, as uWSGI's do.
        for slot in 0..self.conns.len() {
            if self.conns[slot].as_ref().is_some_and(|c| !c.link) {
                self.close(slot);
            }
        }
        if let Some(&idx) = w.links.get(self.core) {
            // This thread's link: refuse new connects first (the router gets ECONNREFUSED and
            // offers the request to another worker), then take every connection already
            // queued, so that none is reset unread when the worker exits. The socket itself is
            // closed at exit; after the shutdown nothing can queue on it.
            fd::shutdown(w.listeners[idx].fd.as_raw_fd());
            while self.take(py, idx) {}
        }
        if let Some(h) = &w.handoff {
            if w.claim_handoff_drain() {
                // The same for connections other workers handed us: senders now get EPIPE
                // and keep theirs; those already sent get their waiting request answered.
                fd::shutdown(h.inbox.as_raw_fd());
                while self.receive(py) {}
            }
        }
    }

    /// While stopping: close connections idle for `LINK_IDLE_ON_STOP`, counted from the later
    /// of the stop and their last activity.
    fn close_stale(&mut self, since: Instant) {
        let now = Instant::now();
        for slot in 0..self.conns.len() {
            let stale = self.conns[slot]
                .as_ref()
                .is_some_and(|c| now.duration_since(c.last_active.max(since)) > LINK_IDLE_ON_STOP);
            if stale {
                self.close(slot);
            }
        }
    }

    /// Accept one connection and serve what it already sent, unless the worker is stopping.
    /// `false`: nothing was taken.
    fn accept(&mut self, py: Python<'_>, idx: usize) -> bool {
        // A stopping worker takes no new work; its router link is drained by `begin_drain`.
        if self.w.stopping() {
            return false;
        }
        self.take(py, idx)
    }

    /// Accept one connection from listener `idx` and serve what it already sent. `false`:
    /// nothing was waiting.
    fn take(&mut self, py: Python<'_>, idx: usize) -> bool {
        let Some(listener) = self.w.listeners.get(idx) else {
            return false;
        };
        let (sock, addr) = match fd::accept(listener.fd.as_raw_fd()) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                // EMFILE and friends: the connection stays queued; back off briefly rather
                // than spin on a listening socket that stays readable.
                crate::log!("headrace: worker {} accept failed: {e}", self.w.id);
                py.detach(|| std::thread::sleep(Duration::from_millis(10)));
                return false;
            }
        };
        if listener.unix_path.is_none() {
            fd::set_nodelay(sock.as_raw_fd());
        }
        self.adopt(py, sock, addr, idx)
    }

    /// Take one connection another worker handed us. `false`: nothing was waiting.
    fn receive(&mut self, py: Python<'_>) -> bool {
        let Some(h) = &self.w.handoff else {
            return false;
        };
        match h.receive(self.w) {
            Ok(Some((sock, idx))) => {
                let tcp = self
                    .w
                    .listeners
                    .get(idx)
                    .is_some_and(|l| l.unix_path.is_none());
                let (sock, addr) = if tcp {
                    let s = std::net::TcpStream::from(sock);
                    let addr = s.peer_addr().ok();
                    (OwnedFd::from(s), addr)
                } else {
                    (sock, None)
                };
                self.adopt(py, sock, addr, idx)
            }
            Ok(None) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                crate::log!(
                    "headrace: worker {} hand-off receive failed: {e}",
                    self.w.id
                );
                false
            }
        }
    }

    /// Serve a connection from listener `idx` from now on, starting with what it already sent.
    fn adopt(
        &mut self,
        py: Python<'_>,
        sock: OwnedFd,
        addr: Option<std::net::SocketAddr>,
        idx: usize,
    ) -> bool {
        let Some(listener) = self.w.listeners.get(idx) else {
            return false;
        };
        let peer = match addr {
            Some(a) => Peer {
                listener: idx,
                addr: a.ip().to_canonical().to_string(),
                port: a.port().to_string(),
            },
            None => Peer {
                listener: idx,
                addr: String::new(),
                port: String::new(),
            },
        };
        let raw = sock.as_raw_fd();
        let slot = if let Some(s) = self.free.pop() {
            s
        } else {
            self.conns.push(None);
            self.conns.len() - 1
        };
        if self.epoll.add(raw, CONN_BASE + slot as u64, false).is_err() {
            self.free.push(slot);
            return true;
        }
        let mut conn = Conn::new(sock, peer);
        conn.uwsgi = listener.kind == crate::config::SocketKind::Uwsgi;
        conn.link = self.w.is_link(idx);
        self.conns[slot] = Some(conn);
        if self.w.handoff.is_some() {
            // Nothing is buffered yet: an HTTP connection may move until a request arrives.
            let movable = listener.kind == crate::config::SocketKind::Http && !self.w.is_link(idx);
            self.share.set_conn(slot, raw, idx, movable);
        }
        // With TCP_DEFER_ACCEPT the request is usually already here.
        if !self.on_readable(py, slot) {
            self.close(slot);
        }
        true
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
            self.epoll.delete(conn.raw());
            self.free.push(slot);
            if self.w.handoff.is_some() {
                self.share.set_conn(slot, -1, 0, false);
            }
        }
    }

    /// Forget the connections the watcher handed to another worker while this thread was in
    /// the app: that worker serves them now. Only this copy of each socket closes, so the
    /// client sees nothing; the watcher already took them out of this thread's epoll.
    fn forget(&mut self, handed: Vec<usize>) {
        for slot in handed {
            if self.conns.get_mut(slot).and_then(Option::take).is_some() {
                self.free.push(slot);
            }
        }
    }

    /// Read what arrived and serve every complete request in the buffer. `false`: close.
    fn on_readable(&mut self, py: Python<'_>, slot: usize) -> bool {
        let limit = self.w.settings.limits.head;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return true;
        };
        match conn.buf.read_from(conn.raw(), limit) {
            Ok(0) => return false,
            Ok(_) => {
                conn.last_active = Instant::now();
                if conn.head_started.is_none() {
                    conn.head_started = Some(conn.last_active);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return true
            }
            Err(_) => return false,
        }
        self.process(py, slot)
    }

    fn process(&mut self, py: Python<'_>, slot: usize) -> bool {
        let w = self.w;
        let rss_check = || {
            if let Some(reason) = w.recycle.after_app() {
                w.retire(&reason);
            }
        };
        let handing = w.handoff.is_some();
        let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
            return false;
        };
        let server = Server {
            pid: w.pid,
            slot: w.slot,
            core: self.core,
            scoreboard: w.scoreboard,
            after_app: w.recycle.checks_memory().then_some(&rss_check as &dyn Fn()),
            // A router link outlives the stop: the router may have pipelined more requests.
            stopping: (!conn.link).then(Worker::stop_flag),
        };
        loop {
            let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return false;
            };
            if conn.buf.is_empty() {
                conn.head_started = None;
                if handing {
                    // Between requests with nothing buffered: the watcher may move it.
                    self.share.set_idle(slot, !conn.uwsgi && !conn.link);
                }
                return true;
            }
            let head = match parse(conn, w.settings.limits) {
                Ok(Some(h)) => h,
                Ok(None) => {
                    if handing {
                        self.share.set_idle(slot, false);
                    }
                    return true;
                }
                Err(e) => {
                    reject(py, conn, &e);
                    return false;
                }
            };
            let next = w.scoreboard.slot(w.slot).requests.load(Ordering::Relaxed) + 1;
            if let Some(reason) = w.recycle.before_request(next) {
                w.retire(&reason);
            }
            let ctx = super::static_hit::Ctx { w, core: self.core };
            if let Some(keep) = super::static_hit::try_serve(py, &ctx, conn, &head) {
                conn.last_active = Instant::now();
                conn.head_started = (!conn.buf.is_empty()).then_some(conn.last_active);
                if !keep {
                    return false;
                }
                continue;
            }
            let buf = std::mem::take(&mut conn.buf);
            let ex = Exchange {
                fd: conn.raw(),
                peer: &conn.peer,
                buf,
                head,
            };
            if handing {
                self.share.enter_app(slot);
            }
            let outcome = crate::wsgi::serve(py, &w.app, &w.settings, &server, ex);
            let handed = if handing {
                self.share.leave_app()
            } else {
                Vec::new()
            };
            let Some(mut buf) = outcome else {
                self.forget(handed);
                return false;
            };
            buf.shrink(super::conn::INITIAL_BUFFER * 4);
            conn.buf = buf;
            conn.last_active = Instant::now();
            conn.head_started = (!conn.buf.is_empty()).then_some(conn.last_active);
            let end = !conn.link && w.stopping();
            if !handed.is_empty() {
                self.forget(handed);
            }
            if end {
                return false;
            }
        }
    }

    /// Close connections idle past --http-keepalive; answer 408 to heads that took longer
    /// than --socket-timeout.
    fn sweep(&mut self, py: Python<'_>) {
        let now = Instant::now();
        let keepalive = self.w.config.keepalive_timeout;
        let head_timeout = self.w.config.socket_timeout;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            let expired = match conn.head_started {
                Some(t) if now.duration_since(t) > head_timeout => {
                    reject(py, conn, &HttpError::Timeout);
                    true
                }
                Some(_) => false,
                None => now.duration_since(conn.last_active) > keepalive,
            };
            if expired {
                self.close(slot);
            }
        }
    }
}

/// Parse the next request head from the connection's buffer, in its protocol.
fn parse(conn: &Conn, limits: crate::http::Limits) -> Result<Option<Head>, HttpError> {
    if !conn.uwsgi {
        return Ok(parse_head(conn.buf.filled(), limits)?.map(Head::Http));
    }
    let Some(packet) = crate::uwsgi_proto::parse(conn.buf.filled(), limits.head)? else {
        return Ok(None);
    };
    if limits.body > 0 && packet.content_length > limits.body {
        return Err(HttpError::BodyTooLarge(limits.body));
    }
    Ok(Some(Head::Uwsgi(packet)))
}

/// Answer a protocol error and end the connection cleanly: the response, a write shutdown,
/// then whatever the client already sent is read away so the close does not turn into a reset
/// that could destroy the response before the client reads it. The send may wait (up to 100 ms)
/// for a client that does not read, so it runs without the GIL: the worker's other threads keep
/// running Python meanwhile.
fn reject(py: Python<'_>, conn: &mut Conn, err: &HttpError) {
    let status = err.status();
    let addr = if conn.peer.addr.is_empty() {
        "unix socket"
    } else {
        conn.peer.addr.as_str()
    };
    crate::log!(
        "headrace: {status} {} for {addr}: {err}",
        crate::http::response::reason(status)
    );
    let fd = conn.raw();
    let response = err.response();
    py.detach(|| {
        let _ = crate::sys::fd::send_all_blocking(fd, &[&response], Duration::from_millis(100));
        crate::sys::fd::close_gently(fd);
    });
}
