//! Keep-alive affinity in direct mode. A connection stays with the thread that accepted it,
//! so its next request waits if that thread is busy in a slow request, even while other
//! workers are idle. A watcher thread per worker (pure Rust, never the GIL) looks every
//! `TICK` for a thread that has been in the app longer than `AFTER` and has another
//! connection with a request waiting; if some worker (this one included) has a free thread,
//! the watcher passes that connection's socket to it with SCM_RIGHTS over the free worker's
//! hand-off socket, an abstract unix datagram socket that each of its threads watches like a
//! listener (EPOLLEXCLUSIVE).
//!
//! The busy thread cannot be asked (it is running Python), so the watcher acts on its behalf
//! under a small protocol: the thread publishes `IN_APP` and the slot it serves before calling
//! the app, and takes the word back with one swap afterwards. The watcher, holding the
//! thread's `handed` lock, sets `HANDED` with a compare-exchange that succeeds only while the
//! thread is still in the app; a thread that finds `HANDED` in its swap takes the lock (so it
//! waits for a hand-off in progress) and forgets the handed connections before it touches any
//! other. On the request path this costs one store and one swap, no syscall and no lock.

use super::Worker;
use crate::sys::fd::{self, Epoll, EpollEvent};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the watcher looks.
const TICK: Duration = Duration::from_millis(10);
/// How long a thread must have been in its current request before the connections waiting
/// behind it are handed to a free worker.
const AFTER_MS: u64 = 20;
/// Connections per thread whose state the watcher can see; a connection in a higher slot is
/// never handed off.
const SHARED_SLOTS: usize = 1024;
/// The thread is running the app; the low bits hold the slot of the connection it serves.
const IN_APP: u64 = 1 << 63;
/// The watcher handed off some of the thread's connections while it was in the app.
const HANDED: u64 = 1 << 62;
const SLOT_MASK: u64 = (1 << 32) - 1;

/// What the watcher may know of one connection slot of a thread.
struct SlotShare {
    /// The connection's socket (-1: no connection).
    fd: AtomicI32,
    /// Between requests with nothing buffered, on an HTTP listener: it may be handed off.
    idle: AtomicBool,
    /// The listener that accepted it.
    listener: AtomicU32,
}

/// The part of a serving thread the watcher sees.
pub struct ThreadShare {
    /// The thread's epoll (owned here so that it outlives the watcher's use of it).
    pub epoll: Epoll,
    state: AtomicU64,
    /// Slots the watcher handed off while the thread was in the app.
    handed: Mutex<Vec<usize>>,
    slots: Box<[SlotShare]>,
}

impl ThreadShare {
    /// A share around a new epoll.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
            state: AtomicU64::new(0),
            handed: Mutex::new(Vec::new()),
            slots: (0..SHARED_SLOTS)
                .map(|_| SlotShare {
                    fd: AtomicI32::new(-1),
                    idle: AtomicBool::new(false),
                    listener: AtomicU32::new(0),
                })
                .collect(),
        })
    }

    /// A connection from listener `listener` now lives in `slot` (or none, with fd -1);
    /// `idle`: it may be handed off.
    pub fn set_conn(&self, slot: usize, fd: RawFd, listener: usize, idle: bool) {
        if let Some(s) = self.slots.get(slot) {
            s.idle.store(idle, Ordering::Relaxed);
            s.fd.store(fd, Ordering::Relaxed);
            s.listener.store(
                u32::try_from(listener).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// Whether the connection in `slot` may be handed off now.
    pub fn set_idle(&self, slot: usize, idle: bool) {
        if let Some(s) = self.slots.get(slot) {
            s.idle.store(idle, Ordering::Relaxed);
        }
    }

    /// The thread is about to call the app for the connection in `slot`.
    pub fn enter_app(&self, slot: usize) {
        self.state
            .store(IN_APP | (slot as u64 & SLOT_MASK), Ordering::Release);
    }

    /// The app returned: the slots handed off meanwhile (usually none). Waits for a hand-off
    /// in progress to finish.
    pub fn leave_app(&self) -> Vec<usize> {
        if self.state.swap(0, Ordering::AcqRel) & HANDED == 0 {
            return Vec::new();
        }
        match self.handed.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }
}

/// A worker's hand-off socket and what it needs to reach the others'.
pub struct Handoff {
    /// Where other workers send connections to this one.
    pub inbox: OwnedFd,
    /// Sends connections to other workers.
    outbox: OwnedFd,
    /// Names this server's hand-off sockets (the inode of a listening socket, shared by every
    /// worker of this master and unique on this host while it lives).
    tag: u64,
}

/// The abstract name of worker `pid`'s hand-off socket.
fn name(tag: u64, pid: i32) -> String {
    format!("headrace-handoff-{tag:x}-{pid}")
}

impl Handoff {
    /// Bind this worker's hand-off socket; `listener` is one of the shared listening sockets.
    pub fn bind(listener: &OwnedFd, pid: i32) -> std::io::Result<Self> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let tag = std::fs::File::from(listener.try_clone()?).metadata()?.ino();
        let addr = SocketAddr::from_abstract_name(name(tag, pid).as_bytes())?;
        let inbox = UnixDatagram::bind_addr(&addr)?;
        inbox.set_nonblocking(true)?;
        let inbox: OwnedFd = inbox.into();
        // The kernel then tells us who sent each connection: only this server's workers count.
        fd::setsockopt_int(inbox.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)?;
        let outbox: OwnedFd = UnixDatagram::unbound()?.into();
        Ok(Self { inbox, outbox, tag })
    }

    /// Pass `conn` (accepted on listener `listener`) to worker `pid`.
    fn send(&self, pid: i32, conn: RawFd, listener: u32) -> std::io::Result<()> {
        let idx = listener.to_le_bytes();
        fd::send_fd(
            self.outbox.as_raw_fd(),
            name(self.tag, pid).as_bytes(),
            conn,
            &idx,
        )
    }

    /// Take one connection another worker passed us: its socket and listener index.
    /// `Ok(None)`: what came was not a connection from a worker of this server (dropped);
    /// `Err(WouldBlock)`: nothing was waiting.
    pub fn receive(&self, w: &Worker<'_>) -> std::io::Result<Option<(OwnedFd, usize)>> {
        let mut data = [0u8; 4];
        let got = fd::recv_fd(self.inbox.as_raw_fd(), &mut data)?;
        let ours = got.sender.is_some_and(|pid| {
            pid > 0
                && (0..w.scoreboard.capacity())
                    .any(|i| w.scoreboard.slot(i).pid.load(Ordering::Relaxed) == pid)
        });
        let idx = usize::try_from(u32::from_le_bytes(data)).unwrap_or(usize::MAX);
        let http = w
            .listeners
            .get(idx)
            .is_some_and(|l| l.kind == crate::config::SocketKind::Http);
        match got.fd {
            Some(sock) if ours && got.len == data.len() && http && !w.is_link(idx) => {
                Ok(Some((sock, idx)))
            }
            _ => {
                crate::log!(
                    "headrace: worker {} (pid: {}) dropped a hand-off datagram from pid {:?}",
                    w.id,
                    w.pid,
                    got.sender
                );
                Ok(None)
            }
        }
    }
}

/// A worker that has a free thread, preferring the least busy: (pid, free threads).
fn free_workers(w: &Worker<'_>) -> Vec<(i32, u32)> {
    let threads = u32::try_from(w.config.threads).unwrap_or(u32::MAX);
    let mut out: Vec<(i32, u32)> = (0..w.scoreboard.capacity())
        .filter_map(|i| {
            let s = w.scoreboard.slot(i);
            let pid = s.pid.load(Ordering::Relaxed);
            let busy = s.busy.load(Ordering::Relaxed);
            (pid > 0 && s.ready.load(Ordering::Acquire) == 1 && busy < threads)
                .then(|| (pid, threads - busy))
        })
        .collect();
    out.sort_by_key(|&(_, free)| std::cmp::Reverse(free));
    out
}

/// The watcher's loop: runs until the worker stops.
pub fn watch(w: &Worker<'_>, h: &Handoff) {
    let mut events = fd::empty_events(64);
    while !w.stopping() {
        std::thread::sleep(TICK);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        for (core, share) in w.threads.iter().enumerate() {
            let state = share.state.load(Ordering::Acquire);
            if state & IN_APP == 0 {
                continue;
            }
            let started = w
                .scoreboard
                .core(w.slot, core)
                .request_start_ms
                .load(Ordering::Relaxed);
            if started == 0 || now_ms.saturating_sub(started) < AFTER_MS {
                continue;
            }
            hand_off_waiting(w, h, share, state, &mut events);
        }
    }
}

/// Hand the connections with a request waiting behind `share`'s thread (seen in `state`, in
/// the app) to free workers.
fn hand_off_waiting(
    w: &Worker<'_>,
    h: &Handoff,
    share: &ThreadShare,
    state: u64,
    events: &mut [EpollEvent],
) {
    // The thread is not waiting on its epoll, so this sees what would wake it; level-triggered
    // events stay for the thread to see later.
    let Ok(n) = share.epoll.wait(events, 0) else {
        return;
    };
    let serving = usize::try_from(state & SLOT_MASK).unwrap_or(usize::MAX);
    let closing = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR).cast_unsigned();
    // Listener tokens are below CONN_BASE; the stop and hand-off tokens, at the top of the
    // range, fall outside SHARED_SLOTS.
    let waiting: Vec<usize> = events[..n]
        .iter()
        .filter(|ev| ev.u64 >= super::event_loop::CONN_BASE && ev.events & closing == 0)
        .filter_map(|ev| usize::try_from(ev.u64 - super::event_loop::CONN_BASE).ok())
        .filter(|&s| s != serving && s < SHARED_SLOTS)
        .collect();
    if waiting.is_empty() {
        return;
    }
    let mut targets = free_workers(w);
    if targets.is_empty() {
        return;
    }
    let Ok(mut handed) = share.handed.lock() else {
        return;
    };
    // Only while the thread is still in this same request: from here until the lock is
    // released, a thread that leaves the app waits for us before it touches a connection.
    if share
        .state
        .compare_exchange(state, state | HANDED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    for slot in waiting {
        let s = &share.slots[slot];
        let conn = s.fd.load(Ordering::Relaxed);
        if conn < 0 || !s.idle.load(Ordering::Relaxed) {
            continue;
        }
        let Some(target) = targets.iter_mut().find(|t| t.1 > 0) else {
            break;
        };
        let listener = s.listener.load(Ordering::Relaxed);
        if h.send(target.0, conn, listener).is_err() {
            // The target is gone or stopping (its socket is shut): try another next tick.
            target.1 = 0;
            continue;
        }
        target.1 -= 1;
        share.epoll.delete(conn);
        s.idle.store(false, Ordering::Relaxed);
        s.fd.store(-1, Ordering::Relaxed);
        handed.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    #[test]
    fn a_descriptor_crosses_with_its_sender() {
        let name = format!("headrace-test-handoff-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let inbox = UnixDatagram::bind_addr(&addr).unwrap();
        inbox.set_nonblocking(true).unwrap();
        fd::setsockopt_int(inbox.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1).unwrap();
        let outbox = UnixDatagram::unbound().unwrap();
        let (r, w) = fd::pipe().unwrap();
        let mut data = [0u8; 4];
        let empty = fd::recv_fd(inbox.as_raw_fd(), &mut data);
        assert!(empty.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock));
        fd::send_fd(
            outbox.as_raw_fd(),
            name.as_bytes(),
            w.as_raw_fd(),
            &7u32.to_le_bytes(),
        )
        .unwrap();
        drop(w);
        let got = fd::recv_fd(inbox.as_raw_fd(), &mut data).unwrap();
        assert_eq!((got.len, u32::from_le_bytes(data)), (4, 7));
        assert_eq!(got.sender, Some(crate::sys::proc::getpid()));
        // The received descriptor is the pipe's write end: what goes in comes out.
        let sent = got.fd.unwrap();
        fd::write_all(sent.as_raw_fd(), b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(fd::read(r.as_raw_fd(), &mut one).unwrap(), 1);
        // A name nobody bound: refused, and the caller keeps its descriptor.
        let missing = fd::send_fd(
            outbox.as_raw_fd(),
            b"headrace-test-nobody",
            r.as_raw_fd(),
            &[],
        );
        assert!(missing.is_err());
    }

    #[test]
    fn a_thread_learns_what_was_handed_while_it_was_in_the_app() {
        let share = ThreadShare::new().unwrap();
        share.enter_app(3);
        assert!(
            share.leave_app().is_empty(),
            "nothing handed: nothing to forget"
        );
        share.enter_app(3);
        let state = share.state.load(Ordering::Acquire);
        assert_eq!(state, IN_APP | 3);
        {
            let mut handed = share.handed.lock().unwrap();
            share
                .state
                .compare_exchange(state, state | HANDED, Ordering::AcqRel, Ordering::Acquire)
                .unwrap();
            handed.push(5);
        }
        assert_eq!(share.leave_app(), vec![5]);
        // Once the thread left the app, the watcher's compare-exchange fails.
        let late = share.state.compare_exchange(
            state,
            state | HANDED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        assert!(late.is_err());
    }
}
