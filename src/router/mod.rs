//! The `--http` router: a process forked by the master, with a single-threaded async runtime
//! started after the fork. It terminates client connections (the same HTTP rules as the workers,
//! from `crate::http`), buffers each request completely, and hands it to the least busy worker
//! with a free thread over that worker's private unix socket, in the uwsgi protocol. When every
//! worker is busy, requests wait in one FIFO queue that is bounded (`--max-queue`), timed
//! (`--queue-timeout`, 503 + Retry-After) and reported (the `saturated` log line). No Python.

mod client;
mod upstream;

use crate::config::{Config, SocketKind};
use crate::scoreboard::Scoreboard;
use crate::worker::Listener;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

/// How often the router re-reads the scoreboard and checks its queue.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two `saturated` log lines.
const SATURATION_LOG_EVERY: Duration = Duration::from_secs(5);
/// How long a request must have waited before the router calls it saturation.
const SATURATION_MIN_WAIT: Duration = Duration::from_millis(500);
/// Idle connections kept per worker.
const POOL_PER_WORKER: usize = 64;

/// The abstract unix socket name a worker in scoreboard slot `slot` listens on for the router.
/// The nonce is drawn by each master image, so that workers of an image being replaced and
/// their successors never collide.
#[must_use]
pub fn socket_name(nonce: u64, slot: usize) -> String {
    format!("headrace-{nonce:016x}-{slot}")
}

/// One worker as the router sees it.
#[derive(Default)]
struct Backend {
    pid: i32,
    /// A pid that failed us (refused or died mid-request); never picked again.
    dead_pid: i32,
    ready: bool,
    in_flight: usize,
    idle: Vec<UnixStream>,
}

/// A request waiting for a worker.
struct Waiter {
    since: Instant,
    tx: oneshot::Sender<usize>,
}

/// Why a request got no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-queue` requests already wait.
    QueueFull,
    /// It waited `--queue-timeout`.
    QueueTimeout,
    /// The router is stopping.
    Stopping,
}

/// The router's shared state (single-threaded: `Rc` and `RefCell`).
pub struct Router {
    config: Config,
    scoreboard: Arc<Scoreboard>,
    nonce: u64,
    backends: RefCell<Vec<Backend>>,
    queue: RefCell<VecDeque<Waiter>>,
    stopping: Cell<bool>,
    active: Cell<usize>,
    last_saturation_log: Cell<Option<Instant>>,
    /// Requests answered 503 since the last saturation report.
    refused: Cell<u64>,
}

impl Router {
    fn new(config: Config, scoreboard: Arc<Scoreboard>, nonce: u64) -> Self {
        let n = scoreboard.capacity();
        Self {
            config,
            scoreboard,
            nonce,
            backends: RefCell::new((0..n).map(|_| Backend::default()).collect()),
            queue: RefCell::new(VecDeque::new()),
            stopping: Cell::new(false),
            active: Cell::new(0),
            last_saturation_log: Cell::new(None),
            refused: Cell::new(0),
        }
    }

    /// Re-read which workers exist and are ready.
    fn refresh(&self) {
        let mut backends = self.backends.borrow_mut();
        for (i, b) in backends.iter_mut().enumerate() {
            let slot = self.scoreboard.slot(i);
            let pid = slot.pid.load(Ordering::Relaxed);
            if pid != b.pid {
                // A new worker in this slot: the old one's connections are dead.
                b.pid = pid;
                b.idle.clear();
                b.in_flight = 0;
            }
            b.ready = pid != 0 && pid != b.dead_pid && slot.ready.load(Ordering::Acquire) == 1;
            if !b.ready {
                b.idle.clear();
            }
        }
    }

    /// The least busy ready worker with a free thread.
    fn pick(&self) -> Option<usize> {
        let threads = self.config.threads;
        self.backends
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, b)| b.ready && b.in_flight < threads)
            .min_by_key(|(_, b)| b.in_flight)
            .map(|(i, _)| i)
    }

    /// Wait for a worker with a free thread, in FIFO order.
    async fn acquire(&self) -> Result<usize, Refusal> {
        if self.stopping.get() {
            return Err(Refusal::Stopping);
        }
        if self.queue.borrow().is_empty() {
            // No free worker known: the scoreboard may know one the last tick did not see
            // (a worker that just started, or was replaced).
            let pick = self.pick().or_else(|| {
                self.refresh();
                self.pick()
            });
            if let Some(i) = pick {
                self.backends.borrow_mut()[i].in_flight += 1;
                return Ok(i);
            }
        }
        let max = self.config.router.max_queue;
        if max > 0 && self.queue.borrow().len() >= max {
            return Err(Refusal::QueueFull);
        }
        let (tx, rx) = oneshot::channel();
        self.queue.borrow_mut().push_back(Waiter {
            since: Instant::now(),
            tx,
        });
        let got = match self.config.router.queue_timeout {
            Some(t) => tokio::time::timeout(t, rx)
                .await
                .map_err(|_| Refusal::QueueTimeout)?,
            None => rx.await,
        };
        got.map_err(|_| Refusal::Stopping)
    }

    /// A request is done with worker `i`.
    fn release(&self, i: usize) {
        {
            let mut backends = self.backends.borrow_mut();
            let b = &mut backends[i];
            b.in_flight = b.in_flight.saturating_sub(1);
        }
        self.dispatch_waiting();
    }

    /// Hand free workers to waiting requests, oldest first.
    fn dispatch_waiting(&self) {
        loop {
            if self.queue.borrow().is_empty() {
                return;
            }
            let Some(i) = self.pick() else { return };
            let Some(waiter) = self.queue.borrow_mut().pop_front() else {
                return;
            };
            self.backends.borrow_mut()[i].in_flight += 1;
            if waiter.tx.send(i).is_err() {
                // It gave up (queue timeout, client gone) before we got to it.
                self.backends.borrow_mut()[i].in_flight -= 1;
            }
        }
    }

    /// `*** headrace saturated: 5/5 workers busy, 15 requests queued (oldest 9.8 s) ***`, at
    /// most every few seconds while requests wait.
    fn log_saturation(&self) {
        let queue = self.queue.borrow();
        let Some(oldest) = queue.iter().find(|w| !w.tx.is_closed()) else {
            return;
        };
        let waiting = queue.iter().filter(|w| !w.tx.is_closed()).count();
        // A wait shorter than a tick is not news; after that, report every few seconds.
        if oldest.since.elapsed() < SATURATION_MIN_WAIT
            || self
                .last_saturation_log
                .get()
                .is_some_and(|t| t.elapsed() < SATURATION_LOG_EVERY)
        {
            return;
        }
        self.last_saturation_log.set(Some(Instant::now()));
        let backends = self.backends.borrow();
        let ready = backends.iter().filter(|b| b.ready).count();
        let busy = backends
            .iter()
            .filter(|b| b.ready && b.in_flight >= self.config.threads)
            .count();
        let refused = self.refused.replace(0);
        let refused = if refused > 0 {
            format!(", {refused} answered 503 since the last report")
        } else {
            String::new()
        };
        crate::log!(
            "*** headrace saturated: {busy}/{ready} workers busy, {waiting} requests queued (oldest {:.1} s){refused} ***",
            oldest.since.elapsed().as_secs_f64()
        );
    }

    /// A pooled connection to worker `i`, if one is idle.
    fn take_idle(&self, i: usize) -> Option<UnixStream> {
        self.backends.borrow_mut()[i].idle.pop()
    }

    /// Return a connection to worker `i`'s pool.
    fn put_idle(&self, i: usize, conn: UnixStream, pid: i32) {
        let mut backends = self.backends.borrow_mut();
        let b = &mut backends[i];
        if b.pid == pid && b.ready && b.idle.len() < POOL_PER_WORKER {
            b.idle.push(conn);
        }
    }

    /// The pid currently in slot `i` (to tell a replaced worker's connections apart).
    fn pid_of(&self, i: usize) -> i32 {
        self.backends.borrow()[i].pid
    }

    /// Forget worker `i` until the scoreboard says it is ready again (it refused us).
    fn mark_gone(&self, i: usize) {
        let mut backends = self.backends.borrow_mut();
        let b = &mut backends[i];
        b.ready = false;
        b.idle.clear();
        // Its scoreboard slot still says ready until the master reaps it: not this pid again.
        b.dead_pid = b.pid;
    }
}

/// Run the router in a freshly forked child; never returns.
pub fn run(config: Config, listeners: &[Listener], scoreboard: Arc<Scoreboard>, nonce: u64) -> ! {
    let pid = crate::sys::proc::getpid();
    let Ok((stop_read, stop_write)) = crate::sys::fd::pipe() else {
        crate::log!("headrace: router (pid: {pid}) cannot create its stop pipe");
        crate::sys::proc::exit_now(1);
    };
    crate::sys::proc::worker_signals(stop_write.as_raw_fd());
    let mut sockets = Vec::new();
    for l in listeners.iter().filter(|l| l.kind == SocketKind::Router) {
        match l.fd.try_clone() {
            Ok(fd) => sockets.push((
                fd,
                l.unix_path.is_some(),
                l.server_name.clone(),
                l.server_port.clone(),
            )),
            Err(e) => crate::log!("headrace: router cannot use {}: {e}", l.desc),
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            crate::log!("headrace: router cannot start its runtime: {e}");
            crate::sys::proc::exit_now(1);
        }
    };
    let router = Rc::new(Router::new(config, scoreboard, nonce));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(router, sockets, stop_read));
    drop(stop_write);
    crate::sys::proc::exit_now(0);
}

type Socket = (std::os::fd::OwnedFd, bool, String, String);

async fn serve(router: Rc<Router>, sockets: Vec<Socket>, stop: std::os::fd::OwnedFd) {
    router.refresh();
    let mut accepting = Vec::new();
    for (fd, unix, name, port) in sockets {
        let r = router.clone();
        let server = Rc::new((name, port));
        if unix {
            let std_l = std::os::unix::net::UnixListener::from(fd);
            match tokio::net::UnixListener::from_std(std_l) {
                Ok(l) => {
                    accepting.push(tokio::task::spawn_local(async move {
                        loop {
                            let Ok((s, _)) = l.accept().await else {
                                continue;
                            };
                            let peer = client::Peer {
                                addr: None,
                                remote: (String::new(), String::new()),
                                server: server.clone(),
                            };
                            tokio::task::spawn_local(client::handle(r.clone(), s, peer));
                        }
                    }));
                }
                Err(e) => crate::log!("headrace: router cannot listen: {e}"),
            }
        } else {
            let std_l = std::net::TcpListener::from(fd);
            match tokio::net::TcpListener::from_std(std_l) {
                Ok(l) => {
                    accepting.push(tokio::task::spawn_local(async move {
                        loop {
                            let Ok((s, addr)) = l.accept().await else {
                                continue;
                            };
                            let _ = s.set_nodelay(true);
                            let peer = client::Peer {
                                addr: Some(addr),
                                remote: (
                                    addr.ip().to_canonical().to_string(),
                                    addr.port().to_string(),
                                ),
                                server: server.clone(),
                            };
                            tokio::task::spawn_local(client::handle(r.clone(), s, peer));
                        }
                    }));
                }
                Err(e) => crate::log!("headrace: router cannot listen: {e}"),
            }
        }
    }
    let stop = match tokio::net::unix::pipe::Receiver::from_owned_fd(stop) {
        Ok(s) => s,
        Err(e) => {
            crate::log!("headrace: router cannot watch its stop pipe: {e}");
            return;
        }
    };
    let master = crate::sys::proc::getppid();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.readable() => break,
            _ = tick.tick() => {
                router.refresh();
                router.dispatch_waiting();
                router.log_saturation();
                if crate::sys::proc::getppid() != master {
                    break;
                }
            }
        }
    }
    // Graceful stop: no new connections (they stay in the listen queue for the next router);
    // requests in flight finish, up to the reload mercy.
    for task in accepting {
        task.abort();
    }
    router.stopping.set(true);
    let deadline = Instant::now() + router.config.supervision.reload_mercy;
    while router.active.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        router.refresh();
        router.dispatch_waiting();
    }
}
