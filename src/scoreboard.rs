//! The shared-memory scoreboard: one cache-line-aligned slot of atomics per worker process and
//! one per serving thread ("core"), plus totals. Workers write their own slots; the master
//! reads them (harakiri, status, the request a dead worker was serving). No locks.

use crate::sys::shm::SharedArray;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Bytes of the current request line kept per core (for harakiri and crash logs).
pub const REQUEST_BYTES: usize = 200;

/// One worker process's slot.
#[derive(Default)]
#[repr(C, align(64))]
pub struct Slot {
    /// The worker's pid (0 when the slot is free).
    pub pid: AtomicI32,
    /// Threads currently running the app.
    pub busy: AtomicU32,
    /// Requests this worker process has served.
    pub requests: AtomicU64,
    /// Set by the worker once its app is loaded and it is about to accept.
    pub ready: AtomicU32,
}

/// One serving thread's slot.
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

/// All slots. Slot indexes are handed out by the master; a reload needs up to twice the
/// configured workers at once, hence the capacity.
pub struct Scoreboard {
    slots: SharedArray<Slot>,
    cores: SharedArray<Core>,
    totals: SharedArray<Slot>,
    threads: usize,
}

impl Scoreboard {
    /// Map a scoreboard for `capacity` worker processes of `threads` threads. Call before the
    /// first fork.
    pub fn new(capacity: usize, threads: usize) -> std::io::Result<Self> {
        Ok(Self {
            slots: SharedArray::new(capacity)?,
            cores: SharedArray::new(capacity * threads)?,
            totals: SharedArray::new(1)?,
            threads,
        })
    }

    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.slots.as_slice().len()
    }

    /// Slot `i`.
    #[must_use]
    pub fn slot(&self, i: usize) -> &Slot {
        &self.slots.as_slice()[i]
    }

    /// Core `core` of slot `i`.
    #[must_use]
    pub fn core(&self, i: usize, core: usize) -> &Core {
        &self.cores.as_slice()[i * self.threads + core]
    }

    /// The cores of slot `i`.
    #[must_use]
    pub fn cores(&self, i: usize) -> &[Core] {
        &self.cores.as_slice()[i * self.threads..(i + 1) * self.threads]
    }

    /// Reset slot `i` for a new worker.
    pub fn reset(&self, i: usize) {
        let s = self.slot(i);
        s.pid.store(0, Ordering::Relaxed);
        s.busy.store(0, Ordering::Relaxed);
        s.requests.store(0, Ordering::Relaxed);
        s.ready.store(0, Ordering::Relaxed);
        for c in self.cores(i) {
            c.end();
        }
    }

    /// Count a finished request; returns (this worker's count, all workers' count).
    #[must_use]
    pub fn count_request(&self, i: usize) -> (u64, u64) {
        let mine = self.slot(i).requests.fetch_add(1, Ordering::Relaxed) + 1;
        let all = self.totals.as_slice()[0]
            .requests
            .fetch_add(1, Ordering::Relaxed)
            + 1;
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
