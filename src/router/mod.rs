//! The `--http` router: a process forked by the master, with a single-threaded async runtime
//! started after the fork. It terminates client connections (the same HTTP rules as the workers,
//! from `crate::http`), buffers each request completely, and hands it to the least busy worker
//! thread over a pooled link to that worker's private unix socket, in the uwsgi protocol. When
//! every worker thread is busy, requests wait in one FIFO queue that is bounded (`--max-queue`),
//! timed (`--queue-timeout`, 503 + Retry-After) and reported (the `saturated` log line). No
//! Python.
//!
//! Workers are found in the shared scoreboard (pid, `ready`, and the nonce naming their link),
//! which survives the master's re-exec: any router sees every worker of every image, and stops
//! choosing a worker as soon as its slot stops saying `ready`.

mod client;
mod link;
mod request;
mod static_hit;
mod tunnel;

use crate::config::{Config, SocketKind};
use crate::scoreboard::Scoreboard;
use crate::worker::Listener;
use link::{LinkHandle, LinkState};
use request::{Job, Refusal, Reply};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the router re-reads the scoreboard and checks its queue.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two `saturated` log lines.
const SATURATION_LOG_EVERY: Duration = Duration::from_secs(5);
/// How long a request must have waited before the router calls it saturation.
const SATURATION_MIN_WAIT: Duration = Duration::from_millis(500);
/// How many workers a request is offered to when each fails before it could be processed.
const DISPATCH_ATTEMPTS: u8 = 3;
/// A worker thread is given more than one request at once only while it answers in less than
/// this per request: a batch then costs the requests behind it at most about this long.
const PIPELINE_BUDGET: Duration = Duration::from_millis(1);
/// Most requests given to one worker thread at once.
const MAX_PIPELINE: usize = 16;
/// Weight of the newest sample in a worker's service-time average.
const EWMA_WEIGHT: f64 = 0.2;

/// The abstract unix socket name a worker in scoreboard slot `slot` listens on for the router.
/// The nonce is drawn by each master image, so that workers of an image being replaced and
/// their successors never collide; the scoreboard records it per slot.
#[must_use]
pub fn socket_name(nonce: u64, slot: usize) -> String {
    format!("headrace-{nonce:016x}-{slot}")
}

/// The name of the link socket of thread `core` of a worker whose base name is `base`.
#[must_use]
pub fn link_name(base: &str, core: usize) -> String {
    format!("{base}-{core}")
}

/// One worker as the router sees it.
#[derive(Default)]
struct Backend {
    pid: i32,
    /// Names its link socket.
    nonce: u64,
    /// A pid that failed us (refused or died mid-request); never picked again.
    dead_pid: i32,
    ready: bool,
    /// Its slot's `concurrency`: 0 for a threaded worker, else how many requests its event
    /// loop takes at once, one per link.
    concurrency: usize,
    links: Vec<LinkHandle>,
    /// Average time the worker spends per request (`None` until it answered one).
    service: Option<Duration>,
}

impl Backend {
    fn load(&self) -> usize {
        self.links.iter().map(|l| l.state.in_flight.get()).sum()
    }

    /// An event-loop (ASGI) worker: any number of links, one request on each at a time.
    fn multiplexed(&self) -> bool {
        self.concurrency > 0
    }

    /// How many requests it takes at once: one per serving thread, or its loop's concurrency.
    fn capacity(&self, threads: usize) -> usize {
        if self.multiplexed() {
            self.concurrency
        } else {
            threads
        }
    }

    /// Which of its link sockets a new link connects to, if it may have another link: a
    /// threaded worker's thread that has none (one link per thread) and is not still running
    /// a request whose link the router closed (`running`: a timed-out or cut response; the
    /// thread is free again once its app returns and its write fails); for an event loop, any
    /// of its sockets while it holds fewer links than its concurrency (they all reach the one
    /// loop: taking them in turn spreads the connects over their backlogs).
    fn next_link(&self, threads: usize, running: impl Fn(usize) -> bool) -> Option<usize> {
        if self.multiplexed() {
            (self.links.len() < self.concurrency).then(|| self.links.len() % threads.max(1))
        } else {
            (0..threads).find(|c| !self.links.iter().any(|l| l.core == *c) && !running(*c))
        }
    }

    /// How long a request may have run and still look like this worker's usual fast one.
    fn usual(&self) -> Duration {
        self.service.map_or(Duration::ZERO, |s| {
            (s * 4 + Duration::from_micros(100)).min(PIPELINE_BUDGET)
        })
    }

    /// How many requests one of its threads may hold at once.
    fn depth(&self) -> usize {
        match self.service {
            Some(s) if s < PIPELINE_BUDGET => {
                let per = s.as_nanos().max(1);
                usize::try_from(PIPELINE_BUDGET.as_nanos() / per)
                    .unwrap_or(MAX_PIPELINE)
                    .clamp(1, MAX_PIPELINE)
            }
            _ => 1,
        }
    }
}

/// The router's shared state (single-threaded: `Rc` and `RefCell`).
pub struct Router {
    config: Config,
    scoreboard: Arc<Scoreboard>,
    backends: RefCell<Vec<Backend>>,
    queue: RefCell<VecDeque<Job>>,
    stopping: Cell<bool>,
    /// Wakes idle client connections when the router stops (they close at once).
    stop_notify: tokio::sync::Notify,
    /// Requests between a complete head and the end of their response.
    active: Cell<usize>,
    last_saturation_log: Cell<Option<Instant>>,
    /// Requests answered 503 since the last saturation report.
    refused: Cell<u64>,
}

impl Router {
    fn new(config: Config, scoreboard: Arc<Scoreboard>) -> Self {
        let n = scoreboard.capacity();
        scoreboard.queue().active.store(1, Ordering::Relaxed);
        Self {
            config,
            scoreboard,
            backends: RefCell::new((0..n).map(|_| Backend::default()).collect()),
            queue: RefCell::new(VecDeque::new()),
            stopping: Cell::new(false),
            stop_notify: tokio::sync::Notify::new(),
            active: Cell::new(0),
            last_saturation_log: Cell::new(None),
            refused: Cell::new(0),
        }
    }

    /// Re-read which workers exist and are ready. A worker that is no longer ready keeps the
    /// requests it holds, but gets no new ones: its links are let go, and each closes once
    /// its last response is relayed.
    fn refresh(&self) {
        let mut backends = self.backends.borrow_mut();
        for (i, b) in backends.iter_mut().enumerate() {
            let Some(slot) = self.scoreboard.get(i) else {
                continue;
            };
            let pid = slot.pid.load(Ordering::Acquire);
            if pid != b.pid {
                // Another worker in this slot (or none): nothing of the old one applies.
                *b = Backend {
                    pid,
                    nonce: slot.link_nonce.load(Ordering::Relaxed),
                    ..Backend::default()
                };
            }
            b.ready = pid != 0 && pid != b.dead_pid && slot.ready.load(Ordering::Acquire) == 1;
            if b.ready {
                b.concurrency =
                    usize::try_from(slot.concurrency.load(Ordering::Relaxed)).unwrap_or(0);
            }
            if b.ready {
                b.links.retain(|l| !l.state.closing.get());
            } else {
                b.links.clear();
            }
        }
    }

    /// Give a job to a worker: an idle thread of the least busy worker, else, for a job that
    /// has waited in the queue (`pipeline`), a thread that is serving fast requests, within its
    /// pipeline depth. The job comes back when no worker can take it now.
    ///
    /// Only queued jobs are pipelined, and only behind a request that has run no longer than
    /// the worker's usual time: a lone request never commits itself to a busy thread that may
    /// be in a slow request, and a queue forms (and is seen) before any batching starts.
    fn place(self: &Rc<Self>, mut job: Job, pipeline: bool) -> Result<(), Job> {
        let threads = self.config.threads;
        // Workers that cannot take a link just now (a full backlog, no thread free): the next
        // least busy one is tried.
        let mut full: Vec<usize> = Vec::new();
        loop {
            let mut backends = self.backends.borrow_mut();
            let free = backends
                .iter()
                .enumerate()
                .filter(|(i, b)| b.ready && b.load() < b.capacity(threads) && !full.contains(i))
                .min_by_key(|(_, b)| b.load())
                .map(|(i, _)| i);
            let target = if let Some(i) = free {
                let b = &mut backends[i];
                let idle = b
                    .links
                    .iter()
                    .position(|l| l.state.in_flight.get() == 0 && !l.state.closing.get());
                // A thread of the worker that has no link yet (an event loop: a new link).
                let unlinked = b.next_link(threads, |c| self.scoreboard.core(i, c).running());
                match (idle, unlinked) {
                    (Some(l), _) => Some((i, l)),
                    (None, Some(core)) => {
                        match link::open(self, i, b.pid, b.nonce, core) {
                            Ok(handle) => {
                                b.links.push(handle);
                                Some((i, b.links.len() - 1))
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                // Its backlog is full: it is busier than it says. Another
                                // worker may take the job now.
                                full.push(i);
                                continue;
                            }
                            Err(_) => {
                                // Gone, or going: not this pid again.
                                b.dead_pid = b.pid;
                                b.ready = false;
                                b.links.clear();
                                continue;
                            }
                        }
                    }
                    (None, None) => {
                        // Free by its count, but no thread of it can take a link now (one still
                        // runs a request whose link was closed): the next worker is tried.
                        full.push(i);
                        continue;
                    }
                }
            } else {
                None
            };
            let target = target.or_else(|| {
                if !pipeline {
                    return None;
                }
                backends
                    .iter()
                    .enumerate()
                    // An event loop is never pipelined: it runs each link's request at once.
                    .filter(|(_, b)| b.ready && !b.multiplexed())
                    .flat_map(|(i, b)| {
                        let depth = b.depth();
                        let usual = b.usual();
                        b.links.iter().enumerate().filter_map(move |(l, h)| {
                            let st = &h.state;
                            let n = st.in_flight.get();
                            let young = st.oldest.get().is_none_or(|t| t.elapsed() < usual);
                            (n < depth && young && !st.closing.get()).then_some((n, i, l))
                        })
                    })
                    .min()
                    .map(|(_, i, l)| (i, l))
            });
            let Some((i, l)) = target else {
                return Err(job);
            };
            let handle = &backends[i].links[l];
            if job.attempts == 0 {
                // The stats' queue wait: from a complete request to its worker (a retry's
                // second wait is not counted again).
                let waited = u64::try_from(job.since.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.scoreboard.queue().wait.observe(waited);
            }
            let state: Rc<LinkState> = handle.state.clone();
            if state.in_flight.get() == 0 {
                state.oldest.set(Some(Instant::now()));
            }
            state.in_flight.set(state.in_flight.get() + 1);
            match handle.tx.send(job) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // The link's task ended: forget the link and try again.
                    job = e.0;
                    state.in_flight.set(0);
                    state.closing.set(true);
                    backends[i].links.remove(l);
                }
            }
        }
    }

    /// A new request: to a worker at once, or to the back of the queue.
    fn submit(self: &Rc<Self>, job: Job) {
        let job = if self.queue.borrow().is_empty() {
            match self.place(job, false) {
                Ok(()) => return,
                Err(job) => {
                    // The scoreboard may know a worker the last tick did not (one that just
                    // started, or was replaced).
                    self.refresh();
                    match self.place(job, false) {
                        Ok(()) => return,
                        Err(job) => job,
                    }
                }
            }
        } else {
            job
        };
        let max = self.config.router.max_queue;
        if max > 0 && self.queue.borrow().len() >= max {
            let _ = job.reply.send(Reply::Refused(Refusal::QueueFull));
            return;
        }
        self.queue.borrow_mut().push_back(job);
        self.publish_depth();
    }

    /// The stats' queue depth (a plain store: read by the master's stats server).
    fn publish_depth(&self) {
        let depth = self.queue.borrow().len() as u64;
        self.scoreboard
            .queue()
            .depth
            .store(depth, Ordering::Relaxed);
    }

    /// Every tick: the stats' queue figures (depth without abandoned requests, oldest wait,
    /// saturation as the `saturated` log line means it).
    fn publish_queue(&self) {
        let queue = self.queue.borrow();
        let mut waiting = queue.iter().filter(|j| !j.abandoned());
        let oldest = waiting.next().map_or(Duration::ZERO, |j| j.since.elapsed());
        let depth = if oldest.is_zero() {
            0
        } else {
            1 + waiting.count()
        };
        let q = self.scoreboard.queue();
        q.depth.store(depth as u64, Ordering::Relaxed);
        q.oldest_wait_ms.store(
            u64::try_from(oldest.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        q.saturated
            .store(u32::from(oldest >= SATURATION_MIN_WAIT), Ordering::Relaxed);
    }

    /// Jobs a failed link had not started go back to the front of the queue, in their order.
    /// `counted`: the link's worker failed them (each job is offered to at most
    /// `DISPATCH_ATTEMPTS` workers); not so for jobs that waited behind a response that a
    /// live worker cut (its app failed mid-response): the worker is fine, and each such cut
    /// consumes the cut request, so the retries end.
    fn retry(self: &Rc<Self>, jobs: Vec<Job>, counted: bool) {
        if jobs.is_empty() {
            return;
        }
        {
            let mut queue = self.queue.borrow_mut();
            for mut job in jobs.into_iter().rev() {
                job.attempts += u8::from(counted);
                job.stage.set(request::Stage::Queued);
                if job.attempts >= DISPATCH_ATTEMPTS {
                    let _ = job.reply.send(Reply::Refused(Refusal::NoWorker));
                } else {
                    queue.push_front(job);
                }
            }
        }
        self.refresh();
        self.dispatch_waiting();
    }

    /// Hand free workers to waiting requests, oldest first; requests whose client went away
    /// are dropped unseen by any worker.
    fn dispatch_waiting(self: &Rc<Self>) {
        loop {
            let Some(job) = self.queue.borrow_mut().pop_front() else {
                self.publish_depth();
                return;
            };
            if job.abandoned() {
                continue;
            }
            if let Err(job) = self.place(job, true) {
                self.queue.borrow_mut().push_front(job);
                self.publish_depth();
                return;
            }
        }
    }

    /// A worker answered a request in `took` (its share of the worker's time).
    fn served(&self, slot: usize, pid: i32, took: Duration) {
        let mut backends = self.backends.borrow_mut();
        let Some(b) = backends.get_mut(slot).filter(|b| b.pid == pid) else {
            return;
        };
        b.service = Some(match b.service {
            None => took,
            Some(avg) => avg.mul_f64(1.0 - EWMA_WEIGHT) + took.mul_f64(EWMA_WEIGHT),
        });
    }

    /// The worker `pid` in scoreboard slot `slot` is still there to serve: its slot still names
    /// it and says ready, and its process is neither gone nor exiting. A link it closed is then
    /// its own doing (an app that failed mid-response), not its death.
    fn worker_serving(&self, slot: usize, pid: i32) -> bool {
        self.scoreboard.get(slot).is_some_and(|s| {
            s.pid.load(Ordering::Acquire) == pid && s.ready.load(Ordering::Acquire) == 1
        }) && crate::sys::proc::serving(pid)
    }

    /// A link's task ended. `failed`: the worker broke it with requests pending and its
    /// process is gone or going: no more requests for that pid. (A live worker that was slow,
    /// went silent mid-response or answered garbage keeps its place: its link is closed, and
    /// its thread gets a new one once it is idle; see [`Backend::next_link`].)
    fn link_ended(&self, slot: usize, pid: i32, state: &Rc<LinkState>, failed: bool) {
        let mut backends = self.backends.borrow_mut();
        let Some(b) = backends.get_mut(slot).filter(|b| b.pid == pid) else {
            return;
        };
        b.links.retain(|l| !Rc::ptr_eq(&l.state, state));
        if failed {
            b.dead_pid = pid;
            b.ready = false;
            b.links.clear();
        }
    }

    /// `*** headrace saturated: 5/5 workers busy, 15 requests queued (oldest 9.8 s) ***`, at
    /// most every few seconds while requests wait.
    fn log_saturation(&self) {
        let queue = self.queue.borrow();
        let Some(oldest) = queue.iter().find(|j| !j.abandoned()) else {
            return;
        };
        let waiting = queue.iter().filter(|j| !j.abandoned()).count();
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
            .filter(|b| b.ready && b.load() >= b.capacity(self.config.threads))
            .count();
        // With elastic workers: whether the master may still start more.
        let growth = match self.config.elastic.cheaper {
            None => "",
            Some(_) if ready >= self.config.processes => ", max reached",
            Some(_) => ", growing",
        };
        let refused = self.refused.replace(0);
        let refused = if refused > 0 {
            format!(", {refused} answered 503 since the last report")
        } else {
            String::new()
        };
        crate::log!(
            "*** headrace saturated: {busy}/{ready} workers busy{growth}, {waiting} requests queued (oldest {:.1} s){refused} ***",
            oldest.since.elapsed().as_secs_f64()
        );
    }
}

/// Run the router in a freshly forked child; never returns.
pub fn run(config: Config, listeners: &[Listener], scoreboard: Arc<Scoreboard>) -> ! {
    let pid = crate::sys::proc::getpid();
    if let Err(e) = crate::sys::proc::batch_scheduling() {
        crate::log!("headrace: router cannot use SCHED_BATCH: {e}");
    }
    crate::offload::set_role(crate::offload::Role::Router);
    match config.titles.child("headrace http 1") {
        Some(title) => crate::sys::proc::set_title(&title),
        None => crate::sys::proc::restore_title(),
    }
    let Ok((stop_read, stop_write)) = crate::sys::fd::pipe() else {
        crate::log!("headrace: router (pid: {pid}) cannot create its stop pipe");
        crate::sys::proc::exit_now(1);
    };
    crate::sys::proc::worker_signals(stop_write.as_raw_fd());
    let mut sockets = Vec::new();
    for l in listeners.iter().filter(|l| l.kind == SocketKind::Router) {
        match l.fd.try_clone() {
            Ok(fd) => sockets.push(Socket {
                fd,
                unix: l.unix_path.is_some(),
                server: Rc::new((l.server_name.clone(), l.server_port.clone())),
            }),
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
    let router = Rc::new(Router::new(config, scoreboard));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(router, sockets, stop_read));
    drop(stop_write);
    crate::sys::proc::exit_now(0);
}

/// A listening socket of the router's.
struct Socket {
    fd: OwnedFd,
    unix: bool,
    /// SERVER_NAME and SERVER_PORT for requests on it.
    server: Rc<(String, String)>,
}

enum Acceptor {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Accept connections on one socket for as long as the router runs. Errors such as EMFILE
/// leave the connection in the kernel's queue: back off instead of spinning on a socket that
/// stays readable, and say so at most once a second.
async fn accept_loop(router: Rc<Router>, acceptor: Acceptor, server: Rc<(String, String)>) {
    let mut last_complaint: Option<Instant> = None;
    loop {
        let accepted = match &acceptor {
            Acceptor::Tcp(l) => l.accept().await.map(|(s, addr)| {
                let _ = s.set_nodelay(true);
                let peer = request::Peer {
                    addr: Some(addr),
                    remote: (
                        addr.ip().to_canonical().to_string(),
                        addr.port().to_string(),
                    ),
                    server: server.clone(),
                };
                tokio::task::spawn_local(client::handle(router.clone(), s, peer));
            }),
            Acceptor::Unix(l) => l.accept().await.map(|(s, _)| {
                let peer = request::Peer {
                    addr: None,
                    remote: (String::new(), String::new()),
                    server: server.clone(),
                };
                tokio::task::spawn_local(client::handle(router.clone(), s, peer));
            }),
        };
        if let Err(e) = accepted {
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::Interrupted
            ) {
                continue;
            }
            if last_complaint.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                crate::log!("headrace router: accept failed: {e} (retrying)");
                last_complaint = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(router: Rc<Router>, sockets: Vec<Socket>, stop: OwnedFd) {
    router.refresh();
    let mut accepting = Vec::new();
    for s in sockets {
        let acceptor = if s.unix {
            tokio::net::UnixListener::from_std(std::os::unix::net::UnixListener::from(s.fd))
                .map(Acceptor::Unix)
        } else {
            tokio::net::TcpListener::from_std(std::net::TcpListener::from(s.fd)).map(Acceptor::Tcp)
        };
        match acceptor {
            Ok(a) => accepting.push(tokio::task::spawn_local(accept_loop(
                router.clone(),
                a,
                s.server,
            ))),
            Err(e) => crate::log!("headrace: router cannot listen: {e}"),
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
                router.publish_queue();
                if crate::sys::proc::getppid() != master {
                    break;
                }
            }
        }
    }
    // Graceful stop: no new connections (they stay in the listen queue for the next router);
    // idle keep-alive connections close; requests in flight or queued finish, up to the
    // reload mercy, on whichever workers the scoreboard shows ready.
    for task in accepting {
        task.abort();
    }
    router.stopping.set(true);
    router.stop_notify.notify_waiters();
    let deadline = Instant::now() + router.config.supervision.reload_mercy;
    while router.active.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        router.refresh();
        router.dispatch_waiting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend of `concurrency` holding links with these jobs in flight (on cores 0, 1, ...).
    fn backend(concurrency: usize, in_flight: &[usize]) -> Backend {
        let links = in_flight
            .iter()
            .enumerate()
            .map(|(core, &n)| {
                let state = Rc::new(LinkState::default());
                state.in_flight.set(n);
                LinkHandle {
                    core,
                    tx: tokio::sync::mpsc::unbounded_channel().0,
                    state,
                }
            })
            .collect();
        Backend {
            pid: 1,
            ready: true,
            concurrency,
            links,
            ..Backend::default()
        }
    }

    #[test]
    fn threaded_workers_take_one_request_per_thread_on_one_link_each() {
        let threads = 4;
        for (in_flight, capacity, next) in [
            (&[][..], 4, Some(0)),
            (&[1, 0][..], 4, Some(2)),
            (&[1, 1, 1, 1][..], 4, None),
        ] {
            let b = backend(0, in_flight);
            assert!(!b.multiplexed());
            assert_eq!(b.capacity(threads), capacity);
            assert_eq!(b.next_link(threads, |_| false), next, "{in_flight:?}");
        }
        // A thread still running a request whose link was closed gets no new link until its
        // app returns; a free one does.
        let b = backend(0, &[]);
        assert_eq!(b.next_link(threads, |c| c < 2), Some(2));
        assert_eq!(b.next_link(1, |c| c == 0), None);
    }

    #[test]
    fn event_loop_workers_take_their_concurrency_one_request_per_link() {
        // `--threads 2`: two link sockets, both reaching the one loop, used in turn.
        let threads = 2;
        for (concurrency, in_flight, next) in [
            (1000, &[][..], Some(0)),
            (1000, &[1][..], Some(1)),
            (1000, &[1, 1, 1][..], Some(1)),
            (3, &[1, 1, 1][..], None),
        ] {
            let b = backend(concurrency, in_flight);
            assert!(b.multiplexed());
            assert_eq!(b.capacity(threads), concurrency);
            assert_eq!(
                b.next_link(threads, |_| false),
                next,
                "{concurrency} {in_flight:?}"
            );
        }
        // With one thread every link goes to the one socket; a busy loop is free below its
        // concurrency, whatever `--threads` says.
        let b = backend(1000, &[1, 1, 1]);
        assert_eq!(b.next_link(1, |_| false), Some(0));
        assert!(b.load() < b.capacity(1));
    }
}
