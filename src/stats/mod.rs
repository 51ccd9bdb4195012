//! Stats and metrics: what the master shows of itself and its workers. A [`Snapshot`] is read
//! out of the scoreboard and the master's own books ([`View`]), then written as uWSGI's stats
//! JSON (`json`, for `--stats` and uwsgitop) or as Prometheus text (`prometheus`, for
//! `/metrics`). `server` serves both from the master's poll loop without ever blocking it.

mod json;
mod prometheus;
mod server;

pub use server::{Document, Server, StatsError};

use crate::config::{Config, SocketKind};
use crate::scoreboard::{Counters, HistogramValues, Scoreboard};
use crate::worker::Listener;
use std::sync::atomic::Ordering;

/// What the master remembers of one worker id across its processes (uWSGI keeps these per
/// worker id, so a respawned worker's `requests` go on counting).
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Counters of the id's processes that have exited.
    pub retired: Counters,
    /// Processes spawned for the id (uWSGI's `respawn_count` counts the first spawn too).
    pub spawns: u64,
    /// Harakiri kills.
    pub harakiri: u64,
}

/// One live process of a worker id, as the master tracks it.
#[derive(Debug, Clone, Copy)]
pub struct Live {
    /// Its pid.
    pub pid: i32,
    /// Its scoreboard slot (`None`: adopted from a previous image without its scoreboard).
    pub slot: Option<usize>,
    /// Unix seconds of its spawn.
    pub spawned: u64,
    /// The generation a reload is replacing.
    pub old: bool,
}

/// One worker id: its history and its live processes.
#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    /// 1-based id.
    pub id: usize,
    /// Its books.
    pub history: History,
    /// Its live processes (the current one and, during a reload, the one being replaced).
    pub live: Vec<Live>,
    /// The cheaper keeps it stopped (`--cheaper`, `--idle`).
    pub cheap: bool,
}

/// Everything the master hands the stats.
pub struct View<'a> {
    /// The configuration.
    pub config: &'a Config,
    /// The shared counters.
    pub scoreboard: &'a Scoreboard,
    /// The master's sockets.
    pub listeners: &'a [Listener],
    /// One entry per worker id, in id order.
    pub workers: Vec<WorkerView>,
    /// Seconds the app took to load in the master (0 with `--lazy-apps`).
    pub app_startup: u64,
}

/// One listening socket in the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketStats {
    /// Its address.
    pub name: String,
    /// `http` or `uwsgi`.
    pub proto: &'static str,
    /// Connections waiting in its accept queue.
    pub queue: u64,
    /// Its backlog.
    pub max_queue: u64,
}

/// One serving thread in the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreStats {
    /// Index in its worker.
    pub id: usize,
    /// Requests served by this thread of the current process.
    pub requests: u64,
    /// Failed response writes.
    pub write_errors: u64,
    /// Failed body reads.
    pub read_errors: u64,
    /// The running request: start (unix ms) and `METHOD URI`.
    pub current: Option<(u64, String)>,
}

/// One worker id in the stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    /// 1-based id.
    pub id: usize,
    /// Pid of its current process (0: none, a respawn is pending).
    pub pid: i32,
    /// Its current process takes requests.
    pub accepting: bool,
    /// Counters over every process the id has had.
    pub counters: Counters,
    /// Requests of the current process (uWSGI's `delta_requests`, what `--max-requests` counts).
    pub delta_requests: u64,
    /// Harakiri kills.
    pub harakiri_count: u64,
    /// Processes spawned for the id.
    pub respawn_count: u64,
    /// Unix seconds of the current process's spawn.
    pub last_spawn: u64,
    /// uWSGI's average response time, µs.
    pub avg_rt: u64,
    /// Resident and virtual memory of the current process, bytes.
    pub rss: u64,
    /// Virtual memory size, bytes.
    pub vsz: u64,
    /// Its threads.
    pub cores: Vec<CoreStats>,
    /// Stopped by the cheaper (uWSGI's status `cheap`).
    pub cheap: bool,
    /// Requests running in it now: its busy threads (WSGI), or the requests and WebSockets on
    /// its event loop (ASGI).
    pub in_flight: u64,
}

impl WorkerStats {
    /// Some thread is running a request.
    #[must_use]
    pub fn busy(&self) -> bool {
        self.cores.iter().any(|c| c.current.is_some())
    }
}

/// The wait for a worker: the router's queue with `--http`, else the kernel's accept queues.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The figures come from the router.
    pub router: bool,
    /// Requests waiting.
    pub depth: u64,
    /// The oldest waiting request's wait, ms (without the router: an upper bound, the time
    /// since every worker thread became busy).
    pub oldest_wait_ms: u64,
    /// Requests answered 503 because no worker was free in time.
    pub shed: u64,
    /// Every worker busy and requests waiting.
    pub saturated: bool,
    /// Time requests waited in the router's queue.
    pub wait: HistogramValues,
}

/// Everything the stats show, read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The master's pid.
    pub pid: i32,
    /// Its uid and gid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// Its working directory.
    pub cwd: String,
    /// The largest accept queue among the sockets (uWSGI's `listen_queue` and `load`).
    pub listen_queue: u64,
    /// The sockets.
    pub sockets: Vec<SocketStats>,
    /// The workers, by id.
    pub workers: Vec<WorkerStats>,
    /// The queue figures.
    pub queue: QueueStats,
    /// `--chdir`, for the app entry.
    pub chdir: String,
    /// Seconds the app took to load.
    pub app_startup: u64,
    /// Now, unix ms.
    pub now_ms: u64,
}

fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// Resident and virtual size of a process, bytes (0, 0 when it is gone).
fn memory(pid: i32) -> (u64, u64) {
    if pid <= 0 {
        return (0, 0);
    }
    crate::sys::proc::memory(&format!("/proc/{pid}/statm"))
}

impl Snapshot {
    /// Read everything the stats show.
    #[must_use]
    pub fn read(view: &View<'_>) -> Self {
        let now_ms = unix_now_ms();
        let sb = view.scoreboard;
        let threads = sb.threads();
        let sockets: Vec<SocketStats> = view
            .listeners
            .iter()
            .map(|l| SocketStats {
                name: l.unix_path.as_ref().map_or_else(
                    || format!("{}:{}", l.server_name, l.server_port),
                    |p| p.display().to_string(),
                ),
                proto: if l.kind == SocketKind::Uwsgi {
                    "uwsgi"
                } else {
                    "http"
                },
                queue: u64::from(
                    crate::sys::fd::accept_queue_len(std::os::fd::AsRawFd::as_raw_fd(&l.fd))
                        .unwrap_or(0),
                ),
                max_queue: u64::try_from(view.config.listen).unwrap_or(0),
            })
            .collect();
        let listen_queue = sockets.iter().map(|s| s.queue).max().unwrap_or(0);
        let workers: Vec<WorkerStats> = view
            .workers
            .iter()
            .map(|w| worker_stats(sb, threads, w))
            .collect();
        let q = sb.queue();
        let router = view.listeners.iter().any(|l| l.kind == SocketKind::Router)
            && q.active.load(Ordering::Relaxed) == 1;
        let queue = if router {
            QueueStats {
                router,
                depth: q.depth.load(Ordering::Relaxed),
                oldest_wait_ms: q.oldest_wait_ms.load(Ordering::Relaxed),
                shed: q.shed.load(Ordering::Relaxed),
                saturated: q.saturated.load(Ordering::Relaxed) == 1,
                wait: q.wait.read(),
            }
        } else {
            // Direct: connections wait in the kernel. Every thread busy since the latest of
            // their starts bounds the oldest wait.
            let depth: u64 = sockets.iter().map(|s| s.queue).sum();
            let all_busy = !workers.is_empty()
                && workers
                    .iter()
                    .all(|w| w.pid != 0 && w.cores.iter().all(|c| c.current.is_some()));
            let busy_since = workers
                .iter()
                .flat_map(|w| w.cores.iter().filter_map(|c| c.current.as_ref()))
                .map(|(start, _)| *start)
                .max()
                .unwrap_or(now_ms);
            let saturated = all_busy && depth > 0;
            QueueStats {
                router: false,
                depth,
                oldest_wait_ms: if saturated {
                    now_ms.saturating_sub(busy_since)
                } else {
                    0
                },
                shed: 0,
                saturated,
                wait: HistogramValues::default(),
            }
        };
        Self {
            pid: crate::sys::proc::getpid(),
            uid: crate::sys::proc::ids().0,
            gid: crate::sys::proc::ids().1,
            cwd: std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            listen_queue,
            sockets,
            workers,
            queue,
            chdir: view
                .config
                .chdir
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            app_startup: view.app_startup,
            now_ms,
        }
    }

    /// uWSGI's stats JSON.
    #[must_use]
    pub fn json(&self, minified: bool) -> String {
        json::render(self, minified)
    }

    /// Prometheus text exposition format.
    #[must_use]
    pub fn prometheus(&self) -> String {
        prometheus::render(self)
    }
}

fn worker_stats(sb: &Scoreboard, threads: usize, w: &WorkerView) -> WorkerStats {
    let mut counters = w.history.retired;
    for l in &w.live {
        if let Some(s) = l.slot.and_then(|s| sb.get(s)) {
            counters.add(&s.counters());
        }
    }
    let current = w.live.iter().find(|l| !l.old).copied();
    let slot = current
        .and_then(|l| l.slot)
        .filter(|&s| sb.get(s).is_some());
    let pid = current.map_or(0, |l| l.pid);
    let (rss, vsz) = memory(pid);
    let cores: Vec<CoreStats> = (0..threads)
        .map(|c| {
            let core = slot.map(|s| sb.core(s, c));
            CoreStats {
                id: c,
                requests: core.map_or(0, |k| k.requests.load(Ordering::Relaxed)),
                write_errors: core.map_or(0, |k| k.write_errors.load(Ordering::Relaxed)),
                read_errors: core.map_or(0, |k| k.read_errors.load(Ordering::Relaxed)),
                current: core.and_then(crate::scoreboard::Core::current),
            }
        })
        .collect();
    let s = slot.map(|s| sb.slot(s));
    WorkerStats {
        id: w.id,
        pid,
        accepting: s.is_some_and(|s| s.ready.load(Ordering::Relaxed) == 1),
        counters,
        delta_requests: s.map_or(0, |s| s.requests.load(Ordering::Relaxed)),
        harakiri_count: w.history.harakiri,
        respawn_count: w.history.spawns,
        last_spawn: current.map_or(0, |l| l.spawned),
        avg_rt: s.map_or(0, |s| s.avg_rt_us.load(Ordering::Relaxed)),
        rss,
        vsz,
        in_flight: u64::from(s.map_or(0, |s| s.in_flight.load(Ordering::Relaxed)))
            .max(u64::try_from(cores.iter().filter(|c| c.current.is_some()).count()).unwrap_or(0)),
        cores,
        cheap: w.cheap && pid == 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A snapshot of two workers of two threads, one of them busy, behind a router.
    pub(crate) fn sample() -> Snapshot {
        let mut counters = Counters {
            requests: 7,
            exceptions: 1,
            tx: 700,
            running_us: 21_000,
            classes: [0, 0, 5, 1, 0, 1],
            ..Counters::default()
        };
        counters.duration.buckets[2] = 6;
        counters.duration.buckets[14] = 1;
        counters.duration.sum_us = 40_020_000;
        let core = |id, current: Option<(u64, String)>| CoreStats {
            id,
            requests: 3,
            write_errors: 0,
            read_errors: 0,
            current,
        };
        let worker = |id, pid, current: Option<(u64, String)>| WorkerStats {
            id,
            pid,
            in_flight: u64::from(current.is_some()),
            accepting: true,
            counters,
            delta_requests: 7,
            harakiri_count: 0,
            respawn_count: 1,
            last_spawn: 1_700_000_000,
            avg_rt: 3000,
            rss: 10 << 20,
            vsz: 100 << 20,
            cores: vec![core(0, current), core(1, None)],
            cheap: false,
        };
        let mut wait = HistogramValues::default();
        wait.buckets[0] = 4;
        wait.sum_us = 1200;
        Snapshot {
            pid: 100,
            uid: 0,
            gid: 0,
            cwd: "/srv/\"app\"".to_owned(),
            listen_queue: 0,
            sockets: vec![SocketStats {
                name: "127.0.0.1:8000".to_owned(),
                proto: "http",
                queue: 0,
                max_queue: 1024,
            }],
            workers: vec![
                worker(
                    1,
                    101,
                    Some((1_700_000_009_500, "GET /slow?x=1".to_owned())),
                ),
                worker(2, 102, None),
            ],
            queue: QueueStats {
                router: true,
                depth: 2,
                oldest_wait_ms: 1500,
                shed: 3,
                saturated: true,
                wait,
            },
            chdir: String::new(),
            app_startup: 0,
            now_ms: 1_700_000_010_000,
        }
    }
}
