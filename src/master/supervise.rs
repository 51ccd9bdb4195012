//! The master's loop: signals, the control channel, stats clients, reaping, deadlines, and
//! the periodic checks; and how the server stops.

use super::{Master, KILL_MERCY};
use crate::sys::proc;
use pyo3::prelude::*;
use std::time::{Duration, Instant};

impl Master<'_> {
    pub(super) fn supervise(&mut self, py: Python<'_>) {
        let mut last_touch_check = Instant::now();
        loop {
            let fd = self.signals.raw();
            let busy = self.stopping.is_some()
                || self.reload.is_some()
                || !self.pending.is_empty()
                || self.aux.busy()
                || self
                    .procs
                    .iter()
                    .any(|p| p.harakiri.is_some() || p.stop_deadline.is_some());
            let wait_ms = if busy {
                50
            } else if super::cheaper::Elastic::on(self.config) {
                100
            } else if self.config.supervision.harakiri.is_some() {
                250
            } else {
                1000
            };
            let mut fds = vec![proc::PollFd {
                fd,
                write: false,
                ready: false,
            }];
            fds.push(proc::PollFd {
                fd: crate::offload::control::rx_fd(),
                write: false,
                ready: false,
            });
            self.stats.poll_fds(&mut fds);
            self.timers.poll_fds(&mut fds);
            let wait_ms = self.stats.wait_ms(wait_ms);
            let wait_ms = self.timers.wait_ms(wait_ms);
            py.detach(|| proc::poll_many(&mut fds, wait_ms));
            while let Some(sig) = self.signals.next() {
                self.on_signal(py, sig);
            }
            if fds[1].ready {
                for msg in crate::offload::control::receive() {
                    self.on_control(py, &msg);
                }
            }
            if fds.len() > 2 {
                self.serve_stats(&fds[2..]);
            }
            self.reap();
            self.enforce_deadlines();
            self.enforce_aux_deadlines();
            if let Some((deadline, _)) = self.stopping {
                self.stop_daemons(deadline);
                if self.procs.is_empty() && self.aux.procs.is_empty() && self.daemons_stopped() {
                    return;
                }
                if Instant::now() >= deadline {
                    for p in &self.procs {
                        crate::log!(
                            "{} (pid: {}) did not stop in time: SIGKILL",
                            p.name(),
                            p.pid
                        );
                        proc::kill(p.pid, libc::SIGKILL);
                    }
                    for p in &self.aux.procs {
                        crate::log!(
                            "{} (pid: {}) did not stop in time: SIGKILL",
                            self.aux.specs[p.index].name,
                            p.pid
                        );
                        proc::kill(p.pid, libc::SIGKILL);
                    }
                    self.stopping = Some((Instant::now() + KILL_MERCY, false));
                }
                continue;
            }
            self.harakiri();
            if !self.ever_ready {
                self.any_worker_ready();
            }
            if last_touch_check.elapsed() >= Duration::from_secs(1) {
                last_touch_check = Instant::now();
                self.check_touch(py);
                self.check_saturation();
            }
            self.advance_reload(py);
            self.tick_elastic();
            self.fill(py);
            self.fill_aux(py);
            self.tick_timers(py);
            self.tick_daemons(py);
        }
    }

    pub(super) fn on_signal(&mut self, py: Python<'_>, sig: i32) {
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM if self.stopping.is_none() => {
                let mercy = self.config.supervision.reload_mercy;
                crate::log!(
                    "SIGTERM received: graceful shutdown, waiting up to {}s for requests in flight",
                    mercy.as_secs()
                );
                self.signal_all(libc::SIGTERM);
                self.stopping = Some((Instant::now() + mercy, true));
            }
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                crate::log!("{} received: stopping now", proc::signal_name(sig));
                self.signal_all(libc::SIGINT);
                self.stopping = Some((Instant::now() + KILL_MERCY, false));
            }
            libc::SIGHUP => {
                let chain = self.config.supervision.chain_reload;
                crate::log!(
                    "SIGHUP received: {} reload",
                    if chain { "chain" } else { "graceful" }
                );
                self.begin_reload(py, chain);
            }
            libc::SIGUSR1 => self.log_status(),
            other => crate::log!("{} received: ignored", proc::signal_name(other)),
        }
    }

    pub(super) fn signal_all(&mut self, sig: i32) {
        for p in &self.procs {
            proc::kill(p.pid, sig);
        }
        self.signal_aux(sig);
    }

    /// SIGKILL workers that outlived their stop or harakiri deadlines.
    pub(super) fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        let mercy = self.config.supervision.reload_mercy.as_secs();
        for p in &mut self.procs {
            if let Some((term_at, kill_at, term_sent)) = &mut p.harakiri {
                if !*term_sent && now >= *term_at && *term_at < *kill_at {
                    proc::kill(p.pid, libc::SIGTERM);
                    *term_sent = true;
                }
                if now >= *kill_at {
                    proc::kill(p.pid, libc::SIGKILL);
                }
            }
            if p.stop_deadline.is_some_and(|d| now >= d) {
                crate::log!(
                    "{} (pid: {}) did not finish within --worker-reload-mercy {mercy}s: SIGKILL",
                    p.name(),
                    p.pid
                );
                proc::kill(p.pid, libc::SIGKILL);
                p.stop_deadline = None;
            }
        }
    }

    /// `--vacuum`: remove what we created on disk.
    pub(super) fn vacuum(&self) {
        if let Some(p) = &self.config.pidfile {
            let _ = std::fs::remove_file(p);
        }
        for l in &self.listeners {
            if let Some(p) = &l.unix_path {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
