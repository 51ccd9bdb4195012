//! The shared-memory scoreboard: one cache-line-aligned slot of atomics per worker process and
//! one per serving thread ("core"), plus totals. Workers write their own slots; the master
//! reads them (harakiri, status, the request a dead worker was serving). No locks.

use crate::sys::shm::Region;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Bytes of the current request line kept per core (for harakiri and crash logs).
pub const REQUEST_BYTES: usize = 200;

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
    /// The nonce of the master image that spawned it, which names its router link
    /// (`router::socket_name`); a re-exec'd image's router reaches adopted workers by it.
    pub link_nonce: AtomicU64,
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
}

impl Default for Core {
    fn default() -> Self {
        Self {
            request_start_ms: AtomicU64::new(0),
            request_len: AtomicU32::new(0),
            request: std::array::from_fn(|_| AtomicU8::new(0)),
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
}

/// Marks a laid-out scoreboard ("headrace" in ASCII).
const MAGIC: u64 = 0x6865_6164_7261_6365;

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
    let slots = totals + slot;
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
        s.link_nonce.store(0, Ordering::Relaxed);
        for c in self.cores(i) {
            c.end();
        }
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
        let core = sb.core(1, 1);
        assert_eq!(core.current(), None);
        core.begin(42, b"GET", b"/slow?x=1");
        assert_eq!(core.current(), Some((42, "GET /slow?x=1".to_owned())));
        core.begin(43, b"GET", "x".repeat(500).as_bytes());
        assert_eq!(core.current().unwrap().1.len(), REQUEST_BYTES);
        sb.reset(1);
        assert_eq!(sb.core(1, 1).current(), None);
    }
}
