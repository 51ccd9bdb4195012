//! The shared-memory scoreboard: one cache-line-aligned slot of atomics per worker process and
//! one per serving thread ("core"), plus totals. Workers write their own slots; the master
//! reads them (harakiri, status, the request a dead worker was serving, the stats server). No
//! locks: counters are relaxed atomics, each written by the process that owns the slot.

use crate::sys::shm::Region;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Bytes of the current request line kept per core (for harakiri and crash logs).
pub const REQUEST_BYTES: usize = 200;

/// Upper bounds (microseconds) of the request duration and queue wait histogram buckets; one
/// more bucket counts everything above the last bound (`+Inf`).
pub const BUCKETS_US: [u64; 14] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000,
];

/// Status classes counted per worker: index 0 is a response that never got a status (the
/// client left first), 1..=5 are 1xx..5xx.
pub const STATUS_CLASSES: usize = 6;

/// A histogram in shared memory: per-bucket counts (not cumulative) and the sum in µs.
#[derive(Default)]
#[repr(C)]
pub struct Histogram {
    /// Observations per bucket of [`BUCKETS_US`], the last one for `+Inf`.
    pub buckets: [AtomicU64; BUCKETS_US.len() + 1],
    /// Sum of the observations, in microseconds.
    pub sum_us: AtomicU64,
}

impl Histogram {
    /// Count one observation.
    pub fn observe(&self, us: u64) {
        let i = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// A copy of the counts.
    #[must_use]
    pub fn read(&self) -> HistogramValues {
        HistogramValues {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's values, read out of shared memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramValues {
    /// Per-bucket counts, the last one for `+Inf`.
    pub buckets: [u64; BUCKETS_US.len() + 1],
    /// Sum in microseconds.
    pub sum_us: u64,
}

impl HistogramValues {
    /// Observations in all.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Add another histogram's values (a retired worker's to its successors').
    pub fn add(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }
}

/// One worker process's slot (atomics only: it is `Shareable`, see `sys::shm`).
#[derive(Default)]
#[repr(C, align(64))]
pub struct Slot {
    /// The worker's pid (0 when the slot is free).
    pub pid: AtomicI32,
    /// Threads currently running the app.
    pub busy: AtomicU32,
    /// Requests this worker process has served.
    pub requests: AtomicU64,
    /// Set by the worker once its app is loaded and it is about to accept; cleared when it
    /// stops taking work (the router then sends it nothing more).
    pub ready: AtomicU32,
    /// How the router may use the worker, stored before `ready`: 0 for a threaded (WSGI)
    /// worker, which takes one request per serving thread on one pooled link per thread; N for
    /// an event-loop (ASGI) worker, which takes up to N requests at once, each on its own link.
    /// It fills what was padding after `ready`, and all-zero (an older image's worker) means
    /// threaded, so the layout version stays.
    pub concurrency: AtomicU32,
    /// The nonce of the master image that spawned it, which names its router link
    /// (`router::socket_name`); a re-exec'd image's router reaches adopted workers by it.
    pub link_nonce: AtomicU64,
    /// Requests whose app call raised (uWSGI's `exceptions`).
    pub exceptions: AtomicU64,
    /// Response bytes sent, head and body (uWSGI's `tx`).
    pub tx: AtomicU64,
    /// Time spent in requests, µs (uWSGI's `running_time`).
    pub running_us: AtomicU64,
    /// uWSGI's `avg_rt`: `(avg + last) / 2` after each request, µs.
    pub avg_rt_us: AtomicU64,
    /// Requests by status class (see [`STATUS_CLASSES`]).
    pub classes: [AtomicU64; STATUS_CLASSES],
    /// Request durations.
    pub duration: Histogram,
    /// Requests an ASGI worker's loop is running now, WebSockets included (a WSGI worker
    /// leaves it 0: its threads' `Core::current` say the same).
    pub in_flight: AtomicU32,
    /// Set by an ASGI worker whose lifespan startup failed, just before it exits.
    pub startup_failed: AtomicU32,
}

/// What one finished request adds to the counters.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The response status (0: none was sent).
    pub status: u16,
    /// Bytes sent, head and body.
    pub tx: u64,
    /// From the complete head to the end of the response, µs.
    pub elapsed_us: u64,
    /// The app raised.
    pub exception: bool,
    /// Writing the response failed (the client left).
    pub write_error: bool,
    /// Reading the body failed.
    pub read_error: bool,
}

/// A worker's counters, read out of its slot (or summed over the workers an id has had).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests served.
    pub requests: u64,
    /// Requests whose app call raised.
    pub exceptions: u64,
    /// Bytes sent.
    pub tx: u64,
    /// Time in requests, µs.
    pub running_us: u64,
    /// Requests by status class.
    pub classes: [u64; STATUS_CLASSES],
    /// Request durations.
    pub duration: HistogramValues,
}

impl Counters {
    /// Add another worker's counters.
    pub fn add(&mut self, o: &Self) {
        self.requests += o.requests;
        self.exceptions += o.exceptions;
        self.tx += o.tx;
        self.running_us += o.running_us;
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
        self.duration.add(&o.duration);
    }
}

impl Slot {
    /// A copy of its counters.
    #[must_use]
    pub fn counters(&self) -> Counters {
        Counters {
            requests: self.requests.load(Ordering::Relaxed),
            exceptions: self.exceptions.load(Ordering::Relaxed),
            tx: self.tx.load(Ordering::Relaxed),
            running_us: self.running_us.load(Ordering::Relaxed),
            classes: std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed)),
            duration: self.duration.read(),
        }
    }
}

/// One serving thread's slot (atomics only: it is `Shareable`, see `sys::shm`).
#[repr(C, align(64))]
pub struct Core {
    /// Unix milliseconds when the running request started (0 = idle).
    pub request_start_ms: AtomicU64,
    /// Bytes used in `request`.
    pub request_len: AtomicU32,
    /// `METHOD URI` of the running request, truncated.
    pub request: [AtomicU8; REQUEST_BYTES],
    /// Requests this thread has served.
    pub requests: AtomicU64,
    /// Responses whose write failed.
    pub write_errors: AtomicU64,
    /// Requests whose body could not be read.
    pub read_errors: AtomicU64,
}

impl Default for Core {
    fn default() -> Self {
        Self {
            request_start_ms: AtomicU64::new(0),
            request_len: AtomicU32::new(0),
            request: std::array::from_fn(|_| AtomicU8::new(0)),
            requests: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
        }
    }
}

impl Core {
    /// Record that a request started.
    pub fn begin(&self, start_ms: u64, method: &[u8], uri: &[u8]) {
        let mut n = 0;
        for &b in method.iter().chain(b" ").chain(uri).take(REQUEST_BYTES) {
            self.request[n].store(b, Ordering::Relaxed);
            n += 1;
        }
        self.request_len
            .store(u32::try_from(n).unwrap_or(0), Ordering::Relaxed);
        self.request_start_ms
            .store(start_ms.max(1), Ordering::Release);
    }

    /// A request's clock is running.
    #[must_use]
    pub fn running(&self) -> bool {
        self.request_start_ms.load(Ordering::Relaxed) != 0
    }

    /// Record that the request ended.
    pub fn end(&self) {
        self.request_start_ms.store(0, Ordering::Release);
    }

    /// The running request's start and line, if any (best effort: read without a lock).
    #[must_use]
    pub fn current(&self) -> Option<(u64, String)> {
        let start = self.request_start_ms.load(Ordering::Acquire);
        if start == 0 {
            return None;
        }
        let len = usize::try_from(self.request_len.load(Ordering::Relaxed))
            .unwrap_or(0)
            .min(REQUEST_BYTES);
        let bytes: Vec<u8> = self.request[..len]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        Some((start, String::from_utf8_lossy(&bytes).into_owned()))
    }
}

/// The scoreboard's first cache line: what a re-exec'd master checks before it adopts a
/// scoreboard handed over by the previous image.
#[derive(Default)]
#[repr(C, align(64))]
pub struct Header {
    /// [`MAGIC`] once laid out.
    pub magic: AtomicU64,
    /// Worker slots.
    pub capacity: AtomicU64,
    /// Cores per worker slot.
    pub threads: AtomicU64,
    /// [`LAYOUT`] of the image that laid it out (0 in images from before the field existed).
    pub layout: AtomicU64,
}

/// Marks a laid-out scoreboard ("headrace" in ASCII).
const MAGIC: u64 = 0x6865_6164_7261_6365;

/// The version of the layout of every type in the scoreboard. Bump it whenever a field is
/// added, removed or moved, so that a re-exec'd image never adopts a scoreboard whose slots it
/// would misread. 2: stats counters, the router's queue area.
const LAYOUT: u64 = 2;

/// The `--http` router's queue figures, written by the router (plain stores at each change or
/// tick) and read by the stats server.
#[derive(Default)]
#[repr(C, align(64))]
pub struct Queue {
    /// Set by a router once it runs (the figures below mean something).
    pub active: AtomicU32,
    /// Requests waiting for a worker.
    pub depth: AtomicU64,
    /// How long the oldest waiting request has waited, ms (updated every router tick).
    pub oldest_wait_ms: AtomicU64,
    /// Requests answered 503 because no worker was free in time (queue full or timed out).
    pub shed: AtomicU64,
    /// 1 while the router calls itself saturated (a request has waited over 0.5 s).
    pub saturated: AtomicU32,
    /// Time each request waited in the queue before it was handed to a worker.
    pub wait: Histogram,
}

/// All slots, in one shared memfd: header, totals, worker slots, cores. Slot indexes are handed
/// out by the master; a reload needs up to twice the configured workers at once, hence the
/// capacity. The memfd survives the master's re-exec, so one scoreboard serves every image.
pub struct Scoreboard {
    region: Region,
    capacity: usize,
    threads: usize,
}

/// Why a handed-over scoreboard cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScoreboardError {
    /// It was laid out by an image with another layout version.
    #[error("laid out with layout version {have}, not {want}")]
    Version {
        /// Its version.
        have: u64,
        /// Ours.
        want: u64,
    },
    /// It was laid out for another configuration.
    #[error(
        "laid out for {capacity} workers x {threads} threads, not {want_capacity} x {want_threads}"
    )]
    Layout {
        /// Its slots.
        capacity: usize,
        /// Its threads per slot.
        threads: usize,
        /// Slots needed now.
        want_capacity: usize,
        /// Threads needed now.
        want_threads: usize,
    },
}

fn offsets(capacity: usize, threads: usize) -> (usize, usize, usize, usize) {
    let header = std::mem::size_of::<Header>();
    let slot = std::mem::size_of::<Slot>();
    let totals = header;
    // The router's queue area follows the totals (see `Scoreboard::queue`).
    let slots = totals + slot + std::mem::size_of::<Queue>();
    let cores = slots + slot * capacity;
    let end = cores + std::mem::size_of::<Core>() * capacity * threads;
    (totals, slots, cores, end)
}

impl Scoreboard {
    /// Map a scoreboard for `capacity` worker processes of `threads` threads. Call before the
    /// first fork.
    pub fn new(capacity: usize, threads: usize) -> std::io::Result<Self> {
        let (.., end) = offsets(capacity, threads);
        let region = Region::create("headrace-scoreboard", end)?;
        let sb = Self {
            region,
            capacity,
            threads,
        };
        let h = sb.header();
        h.capacity.store(capacity as u64, Ordering::Relaxed);
        h.threads.store(threads as u64, Ordering::Relaxed);
        h.layout.store(LAYOUT, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(sb)
    }

    /// Use the scoreboard the previous master image handed over, if it has room for
    /// `capacity` workers of `threads` threads.
    pub fn adopt(region: Region, capacity: usize, threads: usize) -> Result<Self, ScoreboardError> {
        let bad = |c: usize, t: usize| ScoreboardError::Layout {
            capacity: c,
            threads: t,
            want_capacity: capacity,
            want_threads: threads,
        };
        let header = region
            .slice::<Header>(0, 1)
            .and_then(|h| h.first())
            .filter(|h| h.magic.load(Ordering::Acquire) == MAGIC)
            .ok_or_else(|| bad(0, 0))?;
        let layout = header.layout.load(Ordering::Relaxed);
        if layout != LAYOUT {
            return Err(ScoreboardError::Version {
                have: layout,
                want: LAYOUT,
            });
        }
        let have_cap = usize::try_from(header.capacity.load(Ordering::Relaxed)).unwrap_or(0);
        let have_threads = usize::try_from(header.threads.load(Ordering::Relaxed)).unwrap_or(0);
        let (.., end) = offsets(have_cap, have_threads);
        if have_cap < capacity || have_threads != threads || end > region.len() {
            return Err(bad(have_cap, have_threads));
        }
        Ok(Self {
            region,
            capacity: have_cap,
            threads,
        })
    }

    /// The memfd to hand over across a re-exec.
    #[must_use]
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.region.raw_fd()
    }

    fn header(&self) -> &Header {
        &self
            .region
            .slice::<Header>(0, 1)
            .expect("the header fits: checked at mapping")[0]
    }

    fn slots(&self) -> &[Slot] {
        let (_, slots, ..) = offsets(self.capacity, self.threads);
        self.region
            .slice(slots, self.capacity)
            .expect("slots fit: the layout was checked when mapped")
    }

    fn all_cores(&self) -> &[Core] {
        let (.., cores, _) = offsets(self.capacity, self.threads);
        self.region
            .slice(cores, self.capacity * self.threads)
            .expect("cores fit: the layout was checked when mapped")
    }

    fn totals(&self) -> &Slot {
        let (totals, ..) = offsets(self.capacity, self.threads);
        &self
            .region
            .slice::<Slot>(totals, 1)
            .expect("totals fit: the layout was checked when mapped")[0]
    }

    /// The router's queue figures.
    #[must_use]
    pub fn queue(&self) -> &Queue {
        let (totals, ..) = offsets(self.capacity, self.threads);
        &self
            .region
            .slice::<Queue>(totals + std::mem::size_of::<Slot>(), 1)
            .expect("the queue area fits: the layout was checked when mapped")[0]
    }

    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Serving threads per slot.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Another mapping of the same scoreboard: an owned handle for code that must outlive a
    /// borrow (the ASGI serving glue, called back from Python).
    ///
    /// # Errors
    /// The memfd cannot be mapped again.
    pub fn duplicate(&self) -> std::io::Result<Self> {
        Ok(Self {
            region: self.region.duplicate()?,
            capacity: self.capacity,
            threads: self.threads,
        })
    }

    /// Slot `i`.
    #[must_use]
    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots()[i]
    }

    /// Slot `i`, or `None` past the capacity (ids from another image).
    #[must_use]
    pub fn get(&self, i: usize) -> Option<&Slot> {
        self.slots().get(i)
    }

    /// Core `core` of slot `i`.
    #[must_use]
    pub fn core(&self, i: usize, core: usize) -> &Core {
        &self.all_cores()[i * self.threads + core]
    }

    /// The cores of slot `i`.
    #[must_use]
    pub fn cores(&self, i: usize) -> &[Core] {
        &self.all_cores()[i * self.threads..(i + 1) * self.threads]
    }

    /// Reset slot `i` for a new worker.
    pub fn reset(&self, i: usize) {
        let s = self.slot(i);
        s.pid.store(0, Ordering::Relaxed);
        s.busy.store(0, Ordering::Relaxed);
        s.requests.store(0, Ordering::Relaxed);
        s.ready.store(0, Ordering::Relaxed);
        s.concurrency.store(0, Ordering::Relaxed);
        s.in_flight.store(0, Ordering::Relaxed);
        s.startup_failed.store(0, Ordering::Relaxed);
        s.link_nonce.store(0, Ordering::Relaxed);
        s.exceptions.store(0, Ordering::Relaxed);
        s.tx.store(0, Ordering::Relaxed);
        s.running_us.store(0, Ordering::Relaxed);
        s.avg_rt_us.store(0, Ordering::Relaxed);
        for c in &s.classes {
            c.store(0, Ordering::Relaxed);
        }
        for b in &s.duration.buckets {
            b.store(0, Ordering::Relaxed);
        }
        s.duration.sum_us.store(0, Ordering::Relaxed);
        for c in self.cores(i) {
            c.end();
            c.requests.store(0, Ordering::Relaxed);
            c.write_errors.store(0, Ordering::Relaxed);
            c.read_errors.store(0, Ordering::Relaxed);
        }
    }

    /// Count a finished request of slot `i`, thread `core`, with what the stats show of it;
    /// returns (this worker's count, all workers' count) for the log line.
    #[must_use]
    pub fn record(&self, i: usize, core: usize, o: &Outcome) -> (u64, u64) {
        let s = self.slot(i);
        if o.exception {
            s.exceptions.fetch_add(1, Ordering::Relaxed);
        }
        s.tx.fetch_add(o.tx, Ordering::Relaxed);
        s.running_us.fetch_add(o.elapsed_us, Ordering::Relaxed);
        // uWSGI's running average (racy between threads, as in uWSGI: a plain store).
        let avg = s.avg_rt_us.load(Ordering::Relaxed);
        s.avg_rt_us
            .store(u64::midpoint(avg, o.elapsed_us), Ordering::Relaxed);
        let class = match o.status {
            100..=599 => usize::from(o.status / 100),
            _ => 0,
        };
        s.classes[class].fetch_add(1, Ordering::Relaxed);
        s.duration.observe(o.elapsed_us);
        if let Some(c) = self.cores(i).get(core) {
            c.requests.fetch_add(1, Ordering::Relaxed);
            if o.write_error {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
            }
            if o.read_error {
                c.read_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count_request(i)
    }

    /// Count a finished request; returns (this worker's count, all workers' count).
    #[must_use]
    pub fn count_request(&self, i: usize) -> (u64, u64) {
        let mine = self.slot(i).requests.fetch_add(1, Ordering::Relaxed) + 1;
        let all = self.totals().requests.fetch_add(1, Ordering::Relaxed) + 1;
        (mine, all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_requests() {
        let sb = Scoreboard::new(2, 2).unwrap();
        assert_eq!(sb.count_request(0), (1, 1));
        assert_eq!(sb.count_request(1), (1, 2));
        assert_eq!(sb.count_request(0), (2, 3));
        assert_eq!(std::mem::align_of::<Slot>(), 64);
        // `concurrency` took padding: the layout of every other field is what it was.
        assert_eq!(std::mem::size_of::<Slot>(), 256);
        assert_eq!(std::mem::offset_of!(Slot, concurrency), 20);
        assert_eq!(std::mem::offset_of!(Slot, link_nonce), 24);
        let core = sb.core(1, 1);
        assert_eq!(core.current(), None);
        core.begin(42, b"GET", b"/slow?x=1");
        assert_eq!(core.current(), Some((42, "GET /slow?x=1".to_owned())));
        core.begin(43, b"GET", "x".repeat(500).as_bytes());
        assert_eq!(core.current().unwrap().1.len(), REQUEST_BYTES);
        sb.reset(1);
        assert_eq!(sb.core(1, 1).current(), None);
    }

    #[test]
    fn record_counts_classes_and_buckets() {
        let sb = Scoreboard::new(2, 2).unwrap();
        let ok = Outcome {
            status: 200,
            tx: 100,
            elapsed_us: 3_000,
            exception: false,
            write_error: false,
            read_error: false,
        };
        let _ = sb.record(1, 1, &ok);
        let _ = sb.record(
            1,
            0,
            &Outcome {
                status: 500,
                elapsed_us: 40_000_000,
                exception: true,
                write_error: true,
                ..ok
            },
        );
        let _ = sb.record(1, 0, &Outcome { status: 0, ..ok });
        let c = sb.slot(1).counters();
        assert_eq!(c.requests, 3);
        assert_eq!(c.exceptions, 1);
        assert_eq!(c.tx, 300);
        assert_eq!(c.classes, [1, 0, 1, 0, 0, 1]);
        assert_eq!(c.duration.count(), 3);
        assert_eq!(c.duration.buckets[2], 2, "3 ms falls in the <= 5 ms bucket");
        assert_eq!(c.duration.buckets[BUCKETS_US.len()], 1, "40 s is +Inf");
        assert_eq!(c.duration.sum_us, 40_006_000);
        assert_eq!(sb.core(1, 0).requests.load(Ordering::Relaxed), 2);
        assert_eq!(sb.core(1, 0).write_errors.load(Ordering::Relaxed), 1);
        assert_eq!(sb.slot(0).counters(), Counters::default());
        sb.queue().depth.store(3, Ordering::Relaxed);
        sb.reset(1);
        assert_eq!(sb.slot(1).counters(), Counters::default());
        assert_eq!(sb.core(1, 0).requests.load(Ordering::Relaxed), 0);
        assert_eq!(sb.queue().depth.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn adopt_checks_the_layout_version() {
        let sb = Scoreboard::new(3, 2).unwrap();
        let dup = sb.region.duplicate().unwrap();
        let again = Scoreboard::adopt(dup, 3, 2).expect("same layout");
        assert_eq!(again.capacity(), 3);
        sb.header().layout.store(1, Ordering::Relaxed);
        let dup = sb.region.duplicate().unwrap();
        assert!(matches!(
            Scoreboard::adopt(dup, 3, 2),
            Err(ScoreboardError::Version {
                have: 1,
                want: LAYOUT
            })
        ));
    }
}
