//! When a worker retires by itself: `--max-requests`, `--reload-on-rss`,
//! `--max-worker-lifetime` (each respecting `--min-worker-lifetime`). The worker finishes the
//! request in hand (its response says `Connection: close`), stops accepting and exits 0; the
//! master replaces it at once.

use crate::config::Supervision;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One worker's recycling limits, with its own jitter drawn at spawn.
pub struct Recycle {
    max_requests: u64,
    max_rss: u64,
    lifetime: Option<Duration>,
    min_lifetime: Duration,
    started: Instant,
    announced: AtomicBool,
}

/// A cheap per-process random number for jitter (no need for a crypto source).
fn jitter(max: u64, salt: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mut x = nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) % (max + 1)
}

impl Recycle {
    /// Limits for a worker spawned now.
    #[must_use]
    pub fn new(s: &Supervision) -> Self {
        Self {
            max_requests: if s.max_requests > 0 {
                s.max_requests + jitter(s.max_requests_delta, 1)
            } else {
                0
            },
            max_rss: s.reload_on_rss,
            lifetime: s
                .max_lifetime
                .map(|l| l + Duration::from_secs(jitter(s.max_lifetime_delta.as_secs(), 2))),
            min_lifetime: s.min_lifetime,
            started: Instant::now(),
            announced: AtomicBool::new(false),
        }
    }

    fn old_enough(&self) -> bool {
        self.started.elapsed() >= self.min_lifetime
    }

    /// Before serving request number `n` (1-based) of this worker: if it is the last one,
    /// start retiring now so that its response already says `Connection: close`.
    #[must_use]
    pub fn before_request(&self, n: u64) -> Option<String> {
        (self.max_requests > 0 && n >= self.max_requests && self.old_enough())
            .then(|| format!("served {n} requests (--max-requests {})", self.max_requests))
    }

    /// `--reload-on-rss` is on: memory is checked after every app call, as uWSGI does, so the
    /// response that grew the worker is already its last.
    #[must_use]
    pub fn checks_memory(&self) -> bool {
        self.max_rss > 0
    }

    /// After the app returned: memory.
    #[must_use]
    pub fn after_app(&self) -> Option<String> {
        if !self.old_enough() {
            return None;
        }
        self.memory()
    }

    /// The periodic checks: age and memory.
    #[must_use]
    pub fn periodic(&self) -> Option<String> {
        if !self.old_enough() {
            return None;
        }
        if let Some(life) = self.lifetime {
            if self.started.elapsed() >= life {
                return Some(format!("lived {}s (--max-worker-lifetime)", life.as_secs()));
            }
        }
        self.memory()
    }

    fn memory(&self) -> Option<String> {
        if self.max_rss > 0 {
            if let Some(rss) = resident_bytes() {
                if rss > self.max_rss {
                    return Some(format!(
                        "resident memory {} MB > --reload-on-rss {} MB",
                        rss / (1024 * 1024),
                        self.max_rss / (1024 * 1024)
                    ));
                }
            }
        }
        None
    }

    /// Start retiring: log why, once. `true` the first time (the caller then stops the
    /// worker).
    pub fn retire(&self, id: usize, pid: i32, reason: &str) -> bool {
        let first = !self.announced.swap(true, Ordering::Relaxed);
        if first {
            crate::log!("worker {id} (pid: {pid}) recycling: {reason}");
        }
        first
    }
}

/// This process's resident set size, from /proc/self/statm.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_jitter() {
        let s = Supervision {
            max_requests: 10,
            max_requests_delta: 5,
            ..Supervision::default()
        };
        for _ in 0..50 {
            let r = Recycle::new(&s);
            assert!((10..=15).contains(&r.max_requests));
            assert!(r.before_request(9).is_none());
            assert!(r.before_request(15).is_some());
        }
        let off = Recycle::new(&Supervision::default());
        assert!(off.before_request(1_000_000).is_none() && off.periodic().is_none());
        let young = Recycle::new(&Supervision {
            max_requests: 1,
            min_lifetime: Duration::from_secs(3600),
            ..Supervision::default()
        });
        assert!(
            young.before_request(5).is_none(),
            "min lifetime holds recycling back"
        );
        assert!(resident_bytes().is_some_and(|b| b > 0));
    }
}
