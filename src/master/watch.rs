//! What the master watches on its timer: stuck requests (harakiri), touched files, a saturated
//! server, and the status report on SIGUSR1.

use super::{mtime, unix_now_ms, Master, Proc, TRACEBACK_GRACE};
use crate::sys::proc;
use pyo3::prelude::*;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Master<'_> {
    /// SIGUSR1: one line per worker.
    pub(super) fn log_status(&self) {
        let now = unix_now_ms();
        crate::log!("*** headrace status: {} workers ***", self.procs.len());
        let mut procs: Vec<&Proc> = self.procs.iter().collect();
        procs.sort_by_key(|p| (p.id, p.old));
        for p in procs {
            let mut line = format!("worker {} (pid: {})", p.id, p.pid);
            let Some(slot) = p.slot else {
                line.push_str(" finishing after reload");
                crate::log!("{line}");
                continue;
            };
            let running: Vec<String> = self
                .scoreboard
                .cores(slot)
                .iter()
                .enumerate()
                .filter_map(|(core, c)| {
                    c.current().map(|(start, req)| {
                        format!(
                            "core {core}: {req} for {:.1}s",
                            Duration::from_millis(now.saturating_sub(start)).as_secs_f64()
                        )
                    })
                })
                .collect();
            let served = self.scoreboard.slot(slot).requests.load(Ordering::Relaxed);
            if running.is_empty() {
                let _ = write!(line, " idle, {served} requests served");
            } else {
                let _ = write!(
                    line,
                    " busy {}/{}, {served} requests served; {}",
                    running.len(),
                    self.config.threads,
                    running.join("; ")
                );
            }
            if p.old {
                line.push_str(" (being replaced)");
            }
            crate::log!("{line}");
        }
    }

    /// The requests a worker was running, from its scoreboard slot.
    pub(super) fn running_requests(&self, slot: Option<usize>) -> Vec<String> {
        slot.map(|s| {
            self.scoreboard
                .cores(s)
                .iter()
                .filter_map(|c| c.current().map(|(_, r)| r))
                .collect()
        })
        .unwrap_or_default()
    }

    /// `--harakiri`: a request older than the limit gets its worker's traceback dumped
    /// (SIGUSR2, faulthandler), then SIGTERM grace if configured, then SIGKILL.
    pub(super) fn harakiri(&mut self) {
        let Some(limit) = self.config.supervision.harakiri else {
            return;
        };
        let grace = self.config.supervision.harakiri_grace;
        let now_ms = unix_now_ms();
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let asgi_grace_ms =
            u64::try_from(crate::asgi::HARAKIRI_CANCEL_GRACE.as_millis()).unwrap_or(u64::MAX);
        for p in &mut self.procs {
            let Some(slot) = p.slot else { continue };
            if p.harakiri.is_some() {
                continue;
            }
            // An event-loop (ASGI) worker cancels the overdue request itself, which ends it
            // unless the task ignores the cancellation or the loop is blocked: then, a grace
            // later, the worker goes as any other.
            let limit_ms = if self
                .scoreboard
                .slot(slot)
                .concurrency
                .load(Ordering::Relaxed)
                > 0
            {
                limit_ms.saturating_add(asgi_grace_ms)
            } else {
                limit_ms
            };
            let stuck = self
                .scoreboard
                .cores(slot)
                .iter()
                .filter_map(crate::scoreboard::Core::current)
                .find(|(start, _)| now_ms.saturating_sub(*start) >= limit_ms);
            if let Some((start, request)) = stuck {
                let secs = now_ms.saturating_sub(start) / 1000;
                crate::log!(
                    "HARAKIRI: worker {} (pid {}) stuck {secs}s on {request}, killing",
                    p.id,
                    p.pid
                );
                proc::kill(p.pid, libc::SIGUSR2);
                if let Some(h) = self.history.get_mut(p.id) {
                    h.harakiri += 1;
                }
                let now = Instant::now();
                let term_at = now + TRACEBACK_GRACE;
                let kill_at = term_at + grace;
                p.harakiri = Some((term_at, kill_at, false));
            }
        }
    }

    pub(super) fn check_touch(&mut self, py: Python<'_>) {
        // --touch-mules-reload: only the mules restart.
        if crate::offload::mules::touched() {
            self.restart_aux(|s| matches!(s.kind, crate::offload::AuxKind::Mule(_)));
        }
        let mut trigger = None;
        for t in &mut self.touch {
            let now = mtime(&t.path);
            if now != t.mtime {
                t.mtime = now;
                crate::log!(
                    "{} was touched: {} reload",
                    t.path.display(),
                    if t.chain { "chain" } else { "graceful" }
                );
                trigger = Some(t.chain);
            }
        }
        if let Some(chain) = trigger {
            self.begin_reload(py, chain);
        }
    }

    /// Direct and uwsgi-socket modes: when every worker thread is busy and connections wait in
    /// the kernel's accept queue, say so (the router reports its own queue). The wait is
    /// bounded by how long every worker has been busy: the latest start among their requests.
    pub(super) fn check_saturation(&mut self) {
        let now_ms = unix_now_ms();
        let mut workers = 0;
        let mut all_busy_since = 0u64;
        for slot in self.procs.iter().filter_map(|p| p.slot) {
            workers += 1;
            let starts: Vec<u64> = self
                .scoreboard
                .cores(slot)
                .iter()
                .filter_map(|c| c.current().map(|(t, _)| t))
                .collect();
            if starts.len() < self.config.threads {
                return;
            }
            all_busy_since = all_busy_since.max(starts.into_iter().max().unwrap_or(now_ms));
        }
        if workers == 0
            || self
                .last_saturation_log
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        let queued: u32 = self
            .listeners
            .iter()
            .filter(|l| l.kind != crate::config::SocketKind::Router)
            .filter_map(|l| {
                crate::sys::fd::accept_queue_len(std::os::fd::AsRawFd::as_raw_fd(&l.fd))
            })
            .sum();
        if queued == 0 {
            return;
        }
        self.last_saturation_log = Some(Instant::now());
        crate::log!(
            "*** headrace saturated: {workers}/{workers} workers busy{}, {queued} requests queued (oldest <= {:.1} s) ***",
            self.growth_note(),
            Duration::from_millis(now_ms.saturating_sub(all_busy_since)).as_secs_f64()
        );
    }
}
