//! Elastic workers: uWSGI's cheaper subsystem (`--cheaper`, `--cheaper-algo`), `--idle` and
//! `--cheap`.
//!
//! Worker ids run from 1 to `--processes`; an id is *cheap* while the cheaper keeps it
//! stopped, and `fill` spawns only the others. Every turn of the master's loop (100 ms while
//! anything here is on) the master looks at what waits — the router's queue with `--http`,
//! the kernel's accept queue otherwise — and at what its workers do, and asks the algorithm
//! how many workers to add (a positive number) or whether to stop one (a negative one). The
//! default algorithm, `queue`, acts on every turn; uWSGI's (`spare`, `spare2`, `backlog`,
//! `busyness`, `manual`) are evaluated once a second, as uWSGI's master does.
//!
//! A worker is stopped as on a reload: its slot stops being offered work (the router stops
//! choosing it), then SIGTERM; it finishes what it holds and exits, and is not respawned.

use super::{Master, ROUTER_ID};
use crate::config::cheaper::{Algo, CheaperConfig};
use crate::sys::proc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often uWSGI's algorithms are evaluated (uWSGI's `master_interval`).
const ALGO_INTERVAL: Duration = Duration::from_secs(1);

/// One worker as the algorithms see it.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// Its id.
    pub id: usize,
    /// Threads running a request.
    pub busy: usize,
    /// It takes requests (its app is loaded).
    pub ready: bool,
    /// When it was spawned.
    pub spawned_at: Instant,
    /// When it last ran a request (or was spawned).
    pub last_active: Instant,
    /// Time spent in requests, µs (uWSGI's `running_time`).
    pub running_us: u64,
    /// Resident memory, bytes (read only when an RSS limit is set).
    pub rss: u64,
}

/// What the algorithms see on one turn.
#[derive(Debug, Clone)]
pub struct Load {
    /// The running workers (not being stopped, not of a previous generation).
    pub workers: Vec<Seen>,
    /// Ids neither cheap nor running yet (spawning, or their app still loading).
    pub starting: usize,
    /// Cheap ids: how many more workers there may be.
    pub cheap: usize,
    /// Requests waiting for a worker.
    pub waiting: usize,
    /// Threads per worker.
    pub threads: usize,
}

impl Load {
    fn busy_workers(&self) -> usize {
        self.workers.iter().filter(|w| w.busy > 0).count()
    }

    fn free_threads(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.ready)
            .map(|w| self.threads.saturating_sub(w.busy))
            .sum()
    }
}

/// The state uWSGI's algorithms keep between evaluations.
#[derive(Debug, Default)]
struct AlgoState {
    /// spare: evaluations in a row with every worker busy.
    overload_count: u64,
    /// spare, spare2: evaluations since the last change while workers are idle.
    idle_count: u64,
    busyness: BusynessState,
}

#[derive(Debug, Default)]
struct BusynessState {
    /// Per id: running time at the last evaluation.
    last_running: Vec<u64>,
    /// Per id: evaluations it was seen busy since the last cycle.
    was_busy: Vec<u64>,
    /// Start of the current cycle.
    cycle_start: Option<Instant>,
    last_cheaped: Option<Instant>,
    next_cheap: Option<Instant>,
    multiplier: u64,
    /// 1: spawned last, 2: cheaped last.
    last_action: u8,
    tolerance: u64,
    emergency: usize,
    backlog_since: Option<Instant>,
}

/// The master's elastic state.
#[derive(Debug)]
pub struct Elastic {
    /// Per worker id (index 0 unused): kept stopped.
    cheap: Vec<bool>,
    /// Per worker id: (pid, requests at the last look, last activity).
    activity: Vec<(i32, u64, Instant)>,
    /// When uWSGI's algorithm last ran.
    last_eval: Option<Instant>,
    state: AlgoState,
    /// `--idle`: (requests at the last look, when that changed).
    idle_mark: (u64, Instant),
    /// `--idle`/`--cheap`: every worker is stopped until a connection arrives.
    asleep: bool,
    /// Ids the cheaper started, and when, until their worker takes requests (logged then, so
    /// the log shows how fast growth is).
    growing: Vec<(usize, Instant)>,
}

impl Elastic {
    /// The state for `processes` worker ids: the first `--cheaper-initial` run (all of them
    /// without `--cheaper`; none with `--cheap`).
    #[must_use]
    pub fn new(config: &crate::config::Config) -> Self {
        let n = config.processes;
        let e = &config.elastic;
        let running = if e.cheap {
            0
        } else {
            e.cheaper.as_ref().map_or(n, |c| c.initial)
        };
        let now = Instant::now();
        Self {
            cheap: (0..=n).map(|id| id > running).collect(),
            activity: vec![(0, 0, now); n + 1],
            last_eval: None,
            state: AlgoState::default(),
            idle_mark: (0, now),
            asleep: e.cheap,
            growing: Vec::new(),
        }
    }

    /// Worker `id` is kept stopped.
    #[must_use]
    pub fn is_cheap(&self, id: usize) -> bool {
        self.cheap.get(id).copied().unwrap_or(false)
    }

    /// How many workers should run now.
    #[must_use]
    pub fn target(&self, processes: usize) -> usize {
        (1..=processes).filter(|&id| !self.is_cheap(id)).count()
    }

    /// Anything elastic is on (the master then looks every 100 ms).
    #[must_use]
    pub fn on(config: &crate::config::Config) -> bool {
        let e = &config.elastic;
        e.cheaper.is_some() || e.idle.is_some() || e.cheap
    }
}

/// The number of workers to add (> 0) or stop (< 0) by headrace's `queue` algorithm: as many
/// as the waiting requests need, at once; one idle for `--cheaper-idle` seconds, the oldest,
/// when nothing waits.
fn queue_algo(c: &CheaperConfig, load: &Load, now: Instant) -> isize {
    let threads = load.threads.max(1);
    let short = load.waiting.saturating_sub(load.free_threads());
    if short > 0 {
        let want = short.div_ceil(threads).saturating_sub(load.starting);
        let want = want.min(c.step.unwrap_or(usize::MAX)).min(load.cheap);
        return isize::try_from(want).unwrap_or(isize::MAX);
    }
    let idle_for = Duration::from_secs(c.idle);
    let stoppable = load
        .workers
        .iter()
        .any(|w| w.busy == 0 && now.saturating_duration_since(w.last_active) >= idle_for);
    if load.waiting == 0 && load.workers.len() > c.count && stoppable {
        -1
    } else {
        0
    }
}

/// uWSGI's `spare` (core/master_utils.c `uwsgi_cheaper_algo_spare`).
fn spare_algo(c: &CheaperConfig, load: &Load, st: &mut AlgoState, can_spawn: bool) -> isize {
    let active = load.workers.len();
    let busy = load.busy_workers();
    if active > 0 && busy == active {
        st.overload_count += 1;
        st.idle_count = 0;
    } else {
        st.overload_count = st.overload_count.saturating_sub(1);
    }
    if can_spawn && st.overload_count >= c.overload {
        st.overload_count = 0;
        return step_of(c, load.cheap);
    }
    if st.overload_count == 0 {
        if active > busy && active - busy == 1 {
            return 0; // the stable state: one spare worker
        }
        st.idle_count += 1;
        if active > c.count && st.idle_count.is_multiple_of(c.overload) {
            return -1;
        }
    }
    0
}

/// uWSGI's `spare2`, with its defect fixed: without `--cheaper-step` it never spawned (the
/// step defaulted to 0); here the step defaults to 1.
fn spare2_algo(c: &CheaperConfig, load: &Load, st: &mut AlgoState, can_spawn: bool) -> isize {
    let idle = load.workers.len() - load.busy_workers();
    if idle < c.count {
        st.idle_count = 0;
        if !can_spawn {
            return 0;
        }
        let spawn = (c.count - idle).min(load.cheap).min(c.step.unwrap_or(1));
        return isize::try_from(spawn).unwrap_or(0);
    }
    if idle == c.count {
        st.idle_count = 0;
        return 0;
    }
    st.idle_count += 1;
    if st.idle_count < c.idle {
        return 0;
    }
    st.idle_count = 0;
    -1
}

/// uWSGI's `backlog`: grow while more than `--cheaper-overload` requests wait, shrink while
/// fewer do.
fn backlog_algo(c: &CheaperConfig, load: &Load, can_spawn: bool) -> isize {
    let waiting = load.waiting as u64;
    if can_spawn && waiting > c.overload {
        return step_of(c, load.cheap);
    }
    if waiting < c.overload && load.workers.len() > c.count {
        return -1;
    }
    0
}

fn step_of(c: &CheaperConfig, cheap: usize) -> isize {
    isize::try_from(c.step.unwrap_or(1).min(cheap)).unwrap_or(0)
}

/// uWSGI's `busyness` (plugins/cheaper_busyness), with its defect fixed: a worker's busyness
/// is its time in requests divided by its threads, so a worker with 4 threads half busy is
/// 50 %, not 100 % (uWSGI added up the threads' time and capped it at 100 %).
#[allow(
    clippy::too_many_lines,
    reason = "uWSGI's algorithm, kept in one piece to compare with its source"
)]
fn busyness_algo(
    c: &CheaperConfig,
    load: &Load,
    st: &mut BusynessState,
    can_spawn: bool,
    now: Instant,
) -> isize {
    let b = &c.busyness;
    if st.multiplier == 0 {
        st.multiplier = b.multiplier.max(1);
    }
    let cycle = Duration::from_secs(c.overload);
    let max_id = load.workers.iter().map(|w| w.id).max().unwrap_or(0);
    if st.last_running.len() <= max_id {
        st.last_running.resize(max_id + 1, 0);
        st.was_busy.resize(max_id + 1, 0);
    }
    for w in &load.workers {
        st.was_busy[w.id] += u64::from(w.busy > 0);
    }
    let active = load.workers.len();
    let backlog = load.waiting as u64;
    let set_next_cheap = |st: &mut BusynessState| {
        let multi = if st.emergency > 0 {
            b.backlog_multiplier
        } else {
            st.multiplier
        };
        st.next_cheap = Some(now + cycle * u32::try_from(multi).unwrap_or(u32::MAX));
    };
    let emergency = |st: &mut BusynessState| -> isize {
        st.multiplier = b.multiplier.max(1);
        st.last_action = 1;
        let n = b.backlog_step.min(load.cheap);
        set_next_cheap(st);
        if n > 0 {
            st.emergency += n;
            crate::log!(
                "[busyness] {backlog} requests in listen queue, spawning {n} emergency worker(s) ({})!",
                st.emergency
            );
        } else {
            crate::log!("[busyness] {backlog} requests in listen queue but we are already started maximum number of workers");
        }
        isize::try_from(n).unwrap_or(0)
    };
    let start = *st.cycle_start.get_or_insert(now);
    if now.saturating_duration_since(start) >= cycle {
        st.cycle_start = Some(now);
        let threads = u64::try_from(load.threads.max(1)).unwrap_or(1);
        let t_us = u64::try_from(cycle.as_micros()).unwrap_or(u64::MAX).max(1);
        let mut total = 0u64;
        for w in &load.workers {
            let delta = w.running_us.saturating_sub(st.last_running[w.id]);
            let mut percent = (delta * 100 / t_us / threads).min(100);
            if delta == 0 && st.was_busy[w.id] > 0 {
                // Busy the whole cycle without finishing a request.
                percent = 100;
            }
            st.was_busy[w.id] = 0;
            total += percent;
            st.last_running[w.id] = w.running_us;
        }
        let avg = if active > 0 { total / active as u64 } else { 0 };
        if b.verbose {
            crate::log!(
                "[busyness] {}s average busyness of {active} worker(s) is at {avg}%",
                c.overload
            );
        }
        if avg > b.max {
            st.tolerance = 0;
            let n = if can_spawn {
                c.step.unwrap_or(1).min(load.cheap)
            } else {
                0
            };
            if n > 0 {
                st.last_action = 1;
                let too_soon = st.last_cheaped.is_some_and(|t| {
                    now.saturating_duration_since(t).as_secs() / c.overload <= st.multiplier
                });
                if too_soon {
                    st.multiplier += b.penalty;
                    crate::log!(
                        "[busyness] worker(s) respawned to fast, increasing cheaper multiplier to {} (+{})",
                        st.multiplier,
                        b.penalty
                    );
                } else if st.multiplier > b.multiplier {
                    st.multiplier -= 1;
                }
                set_next_cheap(st);
                crate::log!(
                    "[busyness] {}s average busyness is at {avg}%, will spawn {n} new worker(s)",
                    c.overload
                );
            } else {
                crate::log!(
                    "[busyness] {}s average busyness is at {avg}% but we already started maximum number of workers available with current limits ({active})",
                    c.overload
                );
            }
            return isize::try_from(n).unwrap_or(0);
        } else if can_spawn && backlog > b.backlog_alert && load.cheap > 0 {
            return emergency(st);
        } else if avg < b.min {
            if active <= 1 {
                return 0;
            }
            st.tolerance = 0;
            if active > c.count && st.next_cheap.is_none_or(|t| now >= t) {
                if st.last_action == 2 && st.multiplier > b.multiplier {
                    st.multiplier -= 1;
                }
                set_next_cheap(st);
                crate::log!(
                    "[busyness] {}s average busyness is at {avg}%, cheap one of {active} running workers",
                    c.overload
                );
                st.last_cheaped = Some(now);
                st.last_action = 2;
                st.emergency = st.emergency.saturating_sub(1);
                return -1;
            }
        } else {
            if active <= 1 {
                return 0;
            }
            st.emergency = st.emergency.saturating_sub(1);
            st.tolerance += 1;
            if st.tolerance >= 3 {
                set_next_cheap(st);
            } else if let Some(t) = st.next_cheap.as_mut() {
                *t += cycle;
            }
        }
        return 0;
    }
    if can_spawn && backlog > b.backlog_alert && load.cheap > 0 {
        return emergency(st);
    }
    if backlog > 0 {
        match st.backlog_since {
            Some(since)
                if can_spawn
                    && now.saturating_duration_since(since).as_secs() >= b.backlog_nonzero =>
            {
                crate::log!(
                    "[busyness] backlog was non-zero for {} second(s), spawning new worker(s)",
                    now.saturating_duration_since(since).as_secs()
                );
                st.backlog_since = Some(now);
                return emergency(st);
            }
            Some(_) => {}
            None => st.backlog_since = Some(now),
        }
    } else {
        st.backlog_since = None;
    }
    0
}

/// A listening socket has a connection to accept.
fn readable_now(fd: std::os::fd::RawFd) -> bool {
    let mut fds = [proc::PollFd {
        fd,
        write: false,
        ready: false,
    }];
    proc::poll_many(&mut fds, 0);
    fds[0].ready
}

impl Master<'_> {
    /// Requests waiting for a worker: the router's queue, or the kernel's accept queues.
    fn waiting(&self) -> usize {
        if self.has_router() {
            let depth = self.scoreboard.queue().depth.load(Ordering::Relaxed);
            return usize::try_from(depth).unwrap_or(usize::MAX);
        }
        self.listeners
            .iter()
            .filter(|l| l.kind != crate::config::SocketKind::Router)
            .filter_map(|l| {
                crate::sys::fd::accept_queue_len(std::os::fd::AsRawFd::as_raw_fd(&l.fd))
            })
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .sum()
    }

    /// The running workers, and their activity brought up to date.
    fn look(&mut self, now: Instant, with_rss: bool) -> Load {
        let processes = self.config.processes;
        let mut workers = Vec::new();
        let mut starting = 0;
        for id in 1..=processes {
            if self.elastic.is_cheap(id) {
                continue;
            }
            let p = self
                .procs
                .iter()
                .find(|p| p.id == id && !p.old && p.stop_deadline.is_none());
            let slot = p.and_then(|p| p.slot.map(|s| (p, s)));
            let Some((p, s)) = slot else {
                starting += 1;
                continue;
            };
            let slot = self.scoreboard.slot(s);
            let busy = usize::try_from(slot.busy.load(Ordering::Relaxed)).unwrap_or(0);
            let requests = slot.requests.load(Ordering::Relaxed);
            let ready = slot.ready.load(Ordering::Relaxed) == 1;
            let act = &mut self.elastic.activity[id];
            if act.0 != p.pid || act.1 != requests || busy > 0 {
                *act = (p.pid, requests, now);
            }
            if !ready {
                starting += 1;
                continue;
            }
            if let Some(i) = self.elastic.growing.iter().position(|g| g.0 == id) {
                let (_, asked) = self.elastic.growing.swap_remove(i);
                crate::log!(
                    "cheaper: worker {id} (pid: {}) takes requests {} ms after it was asked for",
                    p.pid,
                    now.saturating_duration_since(asked).as_millis()
                );
            }
            workers.push(Seen {
                id,
                busy,
                ready,
                spawned_at: p.spawned_at,
                last_active: act.2,
                running_us: slot.running_us.load(Ordering::Relaxed),
                rss: if with_rss {
                    crate::sys::proc::memory(&format!("/proc/{}/statm", p.pid)).0
                } else {
                    0
                },
            });
        }
        let cheap = (1..=processes)
            .filter(|&id| self.elastic.is_cheap(id))
            .count();
        Load {
            workers,
            starting,
            cheap,
            waiting: self.waiting(),
            threads: self.config.threads,
        }
    }

    /// Every turn of the master's loop: grow, shrink, sleep or wake.
    pub(super) fn tick_elastic(&mut self) {
        if !Elastic::on(self.config) || self.stopping.is_some() || self.reload.is_some() {
            return;
        }
        let now = Instant::now();
        if self.elastic.asleep {
            self.maybe_wake();
            return;
        }
        let rss_limit = self
            .config
            .elastic
            .cheaper
            .as_ref()
            .is_some_and(|c| c.rss_soft > 0);
        let load = self.look(now, rss_limit);
        if self.check_idle(&load, now) {
            return;
        }
        let Some(c) = self.config.elastic.cheaper.clone() else {
            return;
        };
        let mut can_spawn = true;
        let mut forced = None;
        if c.rss_soft > 0 {
            let total: u64 = load.workers.iter().map(|w| w.rss).sum();
            if c.rss_hard > 0 && load.workers.len() > 1 && total >= c.rss_hard {
                crate::log!(
                    "cheaper hard rss memory limit exceeded, cheap one of {} workers",
                    load.workers.len()
                );
                forced = Some(-1);
            } else if total >= c.rss_soft {
                can_spawn = false;
            }
        }
        let delta = if let Some(d) = forced {
            d
        } else if c.algo == Algo::Queue {
            if can_spawn {
                queue_algo(&c, &load, now)
            } else {
                queue_algo(&c, &load, now).min(0)
            }
        } else {
            if self
                .elastic
                .last_eval
                .is_some_and(|t| now.duration_since(t) < ALGO_INTERVAL)
            {
                return;
            }
            self.elastic.last_eval = Some(now);
            let st = &mut self.elastic.state;
            match c.algo {
                Algo::Spare => spare_algo(&c, &load, st, can_spawn),
                Algo::Spare2 => spare2_algo(&c, &load, st, can_spawn),
                Algo::Backlog => backlog_algo(&c, &load, can_spawn),
                Algo::Busyness => busyness_algo(&c, &load, &mut st.busyness, can_spawn, now),
                Algo::Queue | Algo::Manual => 0,
            }
        };
        if delta > 0 {
            self.grow(delta.unsigned_abs(), &load, c.algo);
        } else if delta < 0 && load.workers.len() > 1 {
            self.cheap_one(&load, now, &c);
        }
    }

    /// Let `n` more worker ids run (the lowest cheap ones); `fill` spawns them.
    fn grow(&mut self, n: usize, load: &Load, algo: Algo) {
        let ids: Vec<usize> = (1..=self.config.processes)
            .filter(|&id| self.elastic.is_cheap(id))
            .take(n)
            .collect();
        if ids.is_empty() {
            return;
        }
        let now = Instant::now();
        for &id in &ids {
            self.elastic.cheap[id] = false;
            self.elastic.growing.push((id, now));
        }
        let running = load.workers.len() + load.starting;
        crate::log!(
            "cheaper ({}): {} request(s) waiting, {} of {} workers busy: starting {} more ({} of {})",
            algo.name(),
            load.waiting,
            load.busy_workers(),
            load.workers.len(),
            ids.len(),
            running + ids.len(),
            self.config.processes
        );
    }

    /// Stop the oldest idle worker (uWSGI stops the oldest one that is not busy).
    fn cheap_one(&mut self, load: &Load, now: Instant, c: &CheaperConfig) {
        let idle_for = Duration::from_secs(c.idle);
        let victim = load
            .workers
            .iter()
            .filter(|w| w.busy == 0)
            .filter(|w| {
                c.algo != Algo::Queue || now.saturating_duration_since(w.last_active) >= idle_for
            })
            .min_by_key(|w| w.spawned_at)
            .copied();
        let Some(w) = victim else {
            return;
        };
        let left = load.workers.len() + load.starting - 1;
        self.stop_cheaped(w.id);
        crate::log!(
            "cheaper ({}): worker {} idle for {:.0}s: stopping it ({left} of {} workers left)",
            c.algo.name(),
            w.id,
            now.saturating_duration_since(w.last_active).as_secs_f64(),
            self.config.processes
        );
    }

    /// Mark `id` cheap and stop its worker gracefully, as a reload stops an old one.
    fn stop_cheaped(&mut self, id: usize) {
        self.elastic.cheap[id] = true;
        self.elastic.growing.retain(|g| g.0 != id);
        self.pending.retain(|(i, _)| *i != id);
        let deadline = Instant::now() + self.config.supervision.reload_mercy;
        for p in self.procs.iter_mut().filter(|p| p.id == id && !p.old) {
            if let Some(slot) = p.slot.and_then(|s| self.scoreboard.get(s)) {
                slot.ready.store(0, Ordering::Release);
            }
            proc::kill(p.pid, libc::SIGTERM);
            p.stop_deadline = Some(deadline);
            p.old = true;
            p.cheaped = true;
        }
    }

    /// `--idle`: after that long without a request, stop every worker (or, with
    /// `--die-on-idle`, the server). Returns whether it acted.
    fn check_idle(&mut self, load: &Load, now: Instant) -> bool {
        let Some(idle) = self.config.elastic.idle else {
            return false;
        };
        let requests: u64 = self.elastic.activity.iter().map(|a| a.1).sum();
        if load.busy_workers() > 0 || load.waiting > 0 || requests != self.elastic.idle_mark.0 {
            self.elastic.idle_mark = (requests, now);
            return false;
        }
        if now.saturating_duration_since(self.elastic.idle_mark.1) <= idle {
            return false;
        }
        crate::log!(
            "workers have been inactive for more than {} seconds",
            idle.as_secs()
        );
        if self.config.elastic.die_on_idle {
            crate::log!("die-on-idle: stopping the server");
            self.signal_all(libc::SIGTERM);
            self.stopping = Some((now + self.config.supervision.reload_mercy, true));
            return true;
        }
        for id in 1..=self.config.processes {
            self.stop_cheaped(id);
        }
        self.elastic.asleep = true;
        crate::log!("cheap mode enabled: waiting for socket connection...");
        true
    }

    /// Asleep (`--idle`, `--cheap`): a connection (or a request queued in the router) starts
    /// `--cheaper` workers (all of them without it).
    fn maybe_wake(&mut self) {
        let waiting = self.waiting() > 0
            || self
                .listeners
                .iter()
                .filter(|l| l.kind != crate::config::SocketKind::Router)
                .any(|l| readable_now(std::os::fd::AsRawFd::as_raw_fd(&l.fd)));
        if !waiting {
            return;
        }
        let n = self
            .config
            .elastic
            .cheaper
            .as_ref()
            .map_or(self.config.processes, |c| c.count);
        for id in 1..=n {
            self.elastic.cheap[id] = false;
        }
        self.elastic.asleep = false;
        self.elastic.idle_mark = (
            self.elastic.activity.iter().map(|a| a.1).sum(),
            Instant::now(),
        );
        crate::log!("cheap mode disabled: a connection arrived, starting {n} worker(s)");
    }

    /// For the saturation line: ", growing" while cheap ids remain, ", max reached" once
    /// every id runs (empty without elasticity).
    pub(super) fn growth_note(&self) -> &'static str {
        if self.config.elastic.cheaper.is_none() {
            ""
        } else if self.elastic.target(self.config.processes) < self.config.processes {
            ", growing"
        } else {
            ", max reached"
        }
    }

    /// Whether the cheaper keeps worker `id` stopped (`fill` does not spawn it).
    pub(super) fn cheaped(&self, id: usize) -> bool {
        id != ROUTER_ID && self.elastic.is_cheap(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cheaper::Busyness;

    fn config(algo: Algo) -> CheaperConfig {
        CheaperConfig {
            count: 2,
            initial: 2,
            step: None,
            overload: 3,
            algo,
            idle: 10,
            busyness: Busyness {
                max: 50,
                min: 25,
                multiplier: 10,
                penalty: 2,
                verbose: false,
                backlog_alert: 33,
                backlog_multiplier: 3,
                backlog_step: 1,
                backlog_nonzero: 60,
            },
            rss_soft: 0,
            rss_hard: 0,
        }
    }

    fn load(busy: &[usize], waiting: usize, cheap: usize, now: Instant) -> Load {
        Load {
            workers: busy
                .iter()
                .enumerate()
                .map(|(i, &b)| Seen {
                    id: i + 1,
                    busy: b,
                    ready: true,
                    spawned_at: now,
                    last_active: now,
                    running_us: 0,
                    rss: 0,
                })
                .collect(),
            starting: 0,
            cheap,
            waiting,
            threads: 1,
        }
    }

    #[test]
    fn queue_grows_by_what_waits_at_once() {
        let now = Instant::now();
        let c = config(Algo::Queue);
        // The seed burst: 2 workers busy, 18 waiting, 8 more allowed.
        assert_eq!(queue_algo(&c, &load(&[1, 1], 18, 8, now), now), 8);
        assert_eq!(queue_algo(&c, &load(&[1, 1], 3, 8, now), now), 3);
        // Workers already starting count.
        let mut l = load(&[1, 1], 3, 8, now);
        l.starting = 2;
        assert_eq!(queue_algo(&c, &l, now), 1);
        // A free thread takes one of them.
        assert_eq!(queue_algo(&c, &load(&[1, 0], 3, 8, now), now), 2);
        // --cheaper-step bounds it.
        let mut stepped = config(Algo::Queue);
        stepped.step = Some(2);
        assert_eq!(queue_algo(&stepped, &load(&[1, 1], 18, 8, now), now), 2);
        // Threads: 4 waiting need one worker of 4 threads.
        let mut l = load(&[4, 4], 4, 8, now);
        l.threads = 4;
        assert_eq!(queue_algo(&c, &l, now), 1);
    }

    #[test]
    fn queue_stops_only_workers_idle_long_enough_never_below_cheaper() {
        let now = Instant::now();
        let c = config(Algo::Queue);
        let mut l = load(&[0, 0, 0], 0, 7, now);
        assert_eq!(queue_algo(&c, &l, now), 0, "idle for 0 s");
        let later = now + Duration::from_secs(11);
        assert_eq!(queue_algo(&c, &l, later), -1);
        l.workers.pop();
        assert_eq!(queue_algo(&c, &l, later), 0, "at --cheaper");
        let busy = load(&[1, 1, 1], 0, 7, now);
        assert_eq!(queue_algo(&c, &busy, later), 0, "all busy");
    }

    #[test]
    fn spare_grows_after_overload_and_shrinks_slowly() {
        let now = Instant::now();
        let c = config(Algo::Spare);
        let mut st = AlgoState::default();
        let all_busy = load(&[1, 1], 5, 8, now);
        assert_eq!(spare_algo(&c, &all_busy, &mut st, true), 0);
        assert_eq!(spare_algo(&c, &all_busy, &mut st, true), 0);
        assert_eq!(
            spare_algo(&c, &all_busy, &mut st, true),
            1,
            "3 s overloaded"
        );
        let idle = load(&[0, 0, 0, 0], 0, 6, now);
        let results: Vec<isize> = (0..6)
            .map(|_| spare_algo(&c, &idle, &mut st, true))
            .collect();
        assert_eq!(results, [0, 0, -1, 0, 0, -1]);
    }

    #[test]
    fn spare2_spawns_without_a_step() {
        let now = Instant::now();
        let c = config(Algo::Spare2);
        let mut st = AlgoState::default();
        // uWSGI returned 0 here without --cheaper-step.
        assert_eq!(spare2_algo(&c, &load(&[1, 1], 0, 8, now), &mut st, true), 1);
        assert_eq!(
            spare2_algo(&c, &load(&[1, 1, 0, 0], 0, 6, now), &mut st, true),
            0
        );
        let idle = load(&[0, 0, 0, 0], 0, 6, now);
        let r: Vec<isize> = (0..10)
            .map(|_| spare2_algo(&c, &idle, &mut st, true))
            .collect();
        assert_eq!(
            r.iter().filter(|&&d| d == -1).count(),
            1,
            "one stop per --cheaper-idle evaluations"
        );
    }

    #[test]
    fn backlog_follows_the_queue() {
        let now = Instant::now();
        let c = config(Algo::Backlog);
        assert_eq!(backlog_algo(&c, &load(&[1, 1], 10, 8, now), true), 1);
        assert_eq!(backlog_algo(&c, &load(&[1, 1], 10, 8, now), false), 0);
        assert_eq!(backlog_algo(&c, &load(&[1, 1], 3, 8, now), true), 0);
        assert_eq!(backlog_algo(&c, &load(&[0, 0, 0], 0, 7, now), true), -1);
        assert_eq!(backlog_algo(&c, &load(&[0, 0], 0, 8, now), true), 0);
    }

    #[test]
    fn busyness_divides_by_threads() {
        let start = Instant::now();
        let mut c = config(Algo::Busyness);
        c.overload = 1;
        let mut st = BusynessState::default();
        let mut l = load(&[0, 0], 0, 8, start);
        l.threads = 4;
        assert_eq!(busyness_algo(&c, &l, &mut st, true, start), 0);
        // Two 4-thread workers each ran 1.6 s of requests in 1 s: 40 % busy, not 100 %.
        for w in &mut l.workers {
            w.running_us = 1_600_000;
        }
        let t = start + Duration::from_secs(1);
        assert_eq!(busyness_algo(&c, &l, &mut st, true, t), 0);
        // 3.6 s each: 90 %: grow.
        for w in &mut l.workers {
            w.running_us += 3_600_000;
        }
        let t = t + Duration::from_secs(1);
        assert_eq!(busyness_algo(&c, &l, &mut st, true, t), 1);
    }

    #[test]
    fn busyness_emergency_on_a_long_backlog() {
        let now = Instant::now();
        let c = config(Algo::Busyness);
        let mut st = BusynessState::default();
        assert_eq!(
            busyness_algo(&c, &load(&[1, 1], 40, 8, now), &mut st, true, now),
            1
        );
    }
}
