//! The shared-memory scoreboard: one cache-line-aligned slot of atomics per worker, plus a slot
//! of totals. Workers write their own slot; the master reads. No locks.

use crate::sys::shm::SharedArray;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// One worker's slot.
#[derive(Default)]
#[repr(C, align(64))]
pub struct Slot {
    /// The worker's pid (0 when the slot is free).
    pub pid: AtomicI32,
    /// Threads currently running the app.
    pub busy: AtomicU32,
    /// Requests this worker process has served.
    pub requests: AtomicU64,
    /// Unix milliseconds when the oldest running request started (0 = idle).
    pub request_start_ms: AtomicU64,
}

/// All slots. Index 0 holds totals; worker `id` (1-based) uses index `id`.
pub struct Scoreboard {
    slots: SharedArray<Slot>,
}

impl Scoreboard {
    /// Map a scoreboard for `workers` workers. Call before the first fork.
    pub fn new(workers: usize) -> std::io::Result<Self> {
        Ok(Self {
            slots: SharedArray::new(workers + 1)?,
        })
    }

    /// Worker `id`'s slot (1-based).
    #[must_use]
    pub fn worker(&self, id: usize) -> &Slot {
        &self.slots.as_slice()[id]
    }

    /// Count a finished request; returns (this worker's count, all workers' count).
    #[must_use]
    pub fn count_request(&self, id: usize) -> (u64, u64) {
        let mine = self.worker(id).requests.fetch_add(1, Ordering::Relaxed) + 1;
        let all = self.slots.as_slice()[0]
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
    fn counts_are_per_worker_and_total() {
        let sb = Scoreboard::new(2).unwrap();
        assert_eq!(sb.count_request(1), (1, 1));
        assert_eq!(sb.count_request(2), (1, 2));
        assert_eq!(sb.count_request(1), (2, 3));
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }
}
