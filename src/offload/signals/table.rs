//! uWSGI's signal table, in shared memory: one row of 256 entries for the master and one per
//! worker id (uWSGI's `signal_table[wid * 256 + sig]`), so that a registration made after fork
//! (`--lazy-apps`, or in a request) is seen by the master, which routes the signal. An entry
//! holds who registered it and its target; the handler itself is a Python object and lives in
//! the registering process (`headrace._uwsgi.signals`).

use crate::sys::shm::Region;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Signals 0..=255.
pub const SIGNALS: usize = 256;
/// The longest target (uWSGI's `receiver` is 64 bytes with the NUL).
pub const TARGET_MAX: usize = 63;

/// One signal of one row. `state` is 0 while free; odd while being written; even and non-zero
/// once registered (a seqlock: a reader retries when it changed under it).
#[repr(C)]
pub struct Entry {
    state: AtomicU32,
    wid: AtomicU32,
    target: [AtomicU8; TARGET_MAX + 1],
}

/// Counters shared by every process.
#[repr(C)]
pub struct Header {
    /// Timers, rb timers, crons and file monitors added so far (uWSGI allows 64 of each).
    pub sources: [AtomicU32; 4],
    /// Signals delivered to a channel (uWSGI's `routed_signals`).
    pub routed: AtomicU64,
    /// Signals that could not be delivered (`unrouted_signals`).
    pub unrouted: AtomicU64,
}

/// A registration as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The worker id that registered it (0: the master).
    pub wid: usize,
    /// Its target, as given.
    pub target: String,
}

/// Why a registration was refused (the message is uWSGI's log line where it has one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The target is longer than 63 bytes.
    #[error("[uwsgi-signal] invalid target (longer than {TARGET_MAX} bytes): {0}")]
    TargetTooLong(String),
    /// The master registers a signal only once.
    #[error("[uwsgi-signal] you cannot re-register a signal as the master !!!")]
    MasterTwice,
    /// A worker id beyond the table.
    #[error("[uwsgi-signal] worker {0} has no row in the signal table")]
    NoRow(usize),
}

/// The table: `rows` rows (the master's, then one per worker id).
pub struct Table {
    region: Region,
    rows: usize,
}

impl Table {
    /// A fresh table for the master and `workers` worker ids.
    pub fn create(workers: usize) -> std::io::Result<Self> {
        let rows = workers + 1;
        let len = std::mem::size_of::<Header>() + std::mem::size_of::<Entry>() * SIGNALS * rows;
        let region = Region::create("headrace-signals", len)?;
        let t = Self { region, rows };
        if t.header().is_none() || t.entries().is_none() {
            return Err(std::io::Error::other(
                "the signal table does not fit its region",
            ));
        }
        Ok(t)
    }

    /// The shared counters.
    #[must_use]
    pub fn header(&self) -> Option<&Header> {
        self.region.slice::<Header>(0, 1)?.first()
    }

    fn entries(&self) -> Option<&[Entry]> {
        self.region
            .slice::<Entry>(std::mem::size_of::<Header>(), SIGNALS * self.rows)
    }

    fn entry(&self, row: usize, sig: u8) -> Option<&Entry> {
        if row >= self.rows {
            return None;
        }
        self.entries()?.get(row * SIGNALS + usize::from(sig))
    }

    /// Worker ids with a row (1..=this).
    #[must_use]
    pub fn workers(&self) -> usize {
        self.rows - 1
    }

    /// Register `sig` in `row` (0: the master, else the worker id) for `target`.
    pub fn register(&self, row: usize, sig: u8, target: &str) -> Result<(), RegisterError> {
        if target.len() > TARGET_MAX {
            return Err(RegisterError::TargetTooLong(target.to_owned()));
        }
        let e = self.entry(row, sig).ok_or(RegisterError::NoRow(row))?;
        // Take the entry: from even (free or registered) to odd (being written).
        let mut cur = e.state.load(Ordering::Acquire);
        loop {
            if cur % 2 == 0 && cur != 0 && row == 0 {
                return Err(RegisterError::MasterTwice);
            }
            if cur % 2 == 1 {
                std::thread::yield_now();
                cur = e.state.load(Ordering::Acquire);
                continue;
            }
            match e
                .state
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let bytes = target.as_bytes();
        for (i, b) in e.target.iter().enumerate() {
            b.store(bytes.get(i).copied().unwrap_or(0), Ordering::Relaxed);
        }
        e.wid
            .store(u32::try_from(row).unwrap_or(u32::MAX), Ordering::Relaxed);
        // Odd + 1 is even and non-zero: registered.
        e.state.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The registration of `sig` in `row`, if any.
    #[must_use]
    pub fn lookup(&self, row: usize, sig: u8) -> Option<Registration> {
        let e = self.entry(row, sig)?;
        loop {
            let before = e.state.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before % 2 == 1 {
                std::thread::yield_now();
                continue;
            }
            let bytes: Vec<u8> = e
                .target
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .take_while(|&b| b != 0)
                .collect();
            let wid = e.wid.load(Ordering::Relaxed) as usize;
            if e.state.load(Ordering::Acquire) == before {
                return Some(Registration {
                    wid,
                    target: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
        }
    }

    /// Forget every registration of `row` (a new process for that worker id starts with none
    /// of its predecessor's handlers).
    pub fn clear_row(&self, row: usize) {
        for sig in 0..=u8::MAX {
            if let Some(e) = self.entry(row, sig) {
                e.state.store(0, Ordering::Release);
            }
        }
    }

    /// Whether `sig` is registered in `row`.
    #[must_use]
    pub fn registered(&self, row: usize, sig: u8) -> bool {
        self.entry(row, sig)
            .is_some_and(|e| e.state.load(Ordering::Acquire) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_per_row() {
        let t = Table::create(2).unwrap();
        assert_eq!(t.lookup(0, 7), None);
        t.register(0, 7, "workers").unwrap();
        assert_eq!(
            t.lookup(0, 7),
            Some(Registration {
                wid: 0,
                target: "workers".to_owned()
            })
        );
        assert_eq!(t.register(0, 7, ""), Err(RegisterError::MasterTwice));
        // A worker may register again (its app reloads, or it changes its mind).
        t.register(2, 7, "mule1").unwrap();
        t.register(2, 7, "").unwrap();
        assert_eq!(t.lookup(2, 7).unwrap().target, "");
        assert_eq!(t.lookup(2, 7).unwrap().wid, 2);
        assert!(!t.registered(1, 7));
        assert_eq!(t.register(3, 7, ""), Err(RegisterError::NoRow(3)));
        let long = "x".repeat(64);
        assert!(matches!(
            t.register(1, 0, &long),
            Err(RegisterError::TargetTooLong(_))
        ));
        t.register(1, 255, &"y".repeat(63)).unwrap();
        assert_eq!(t.lookup(1, 255).unwrap().target.len(), 63);
        t.clear_row(1);
        assert!(!t.registered(1, 255));
        assert!(t.registered(2, 7));
    }
}
