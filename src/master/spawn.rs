//! Spawning and reaping: a worker or the router for each id, respawned with backoff when it
//! dies, and what a death lost.

use super::{Master, MasterError, Proc, EARLY_DEATH, MAX_BACKOFF, ROUTER_ID};
use crate::sys::proc::{self, ExitStatus, ForkResult};
use crate::worker;
use pyo3::prelude::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Master<'_> {
    pub(super) fn free_slot(&self) -> Option<usize> {
        (0..self.scoreboard.capacity()).find(|&i| !self.procs.iter().any(|p| p.slot == Some(i)))
    }

    /// Fork a worker with this id. Returns its pid.
    pub(super) fn spawn(&mut self, py: Python<'_>, id: usize) -> Result<i32, MasterError> {
        if id == ROUTER_ID {
            return self.spawn_router(py);
        }
        let slot = self
            .free_slot()
            .ok_or_else(|| MasterError::Python("no free scoreboard slot".to_owned()))?;
        self.scoreboard.reset(slot);
        self.scoreboard
            .slot(slot)
            .link_nonce
            .store(self.nonce, Ordering::Relaxed);
        crate::wsgi::load::flush_stdio(py);
        match proc::fork()? {
            ForkResult::Child => {
                // The stats listeners and clients are the master's: a worker holding them
                // would keep a client waiting for the close, and the port bound on re-exec.
                drop(std::mem::take(&mut self.stats));
                let router = self.has_router();
                // A worker serves every socket but the router's: close those in it.
                self.listeners
                    .retain(|l| l.kind != crate::config::SocketKind::Router);
                worker::run(
                    py,
                    (id, slot),
                    self.config,
                    &self.listeners,
                    &self.scoreboard,
                    self.app.as_ref(),
                    router
                        .then(|| crate::router::socket_name(self.nonce, slot))
                        .as_deref(),
                )
            }
            ForkResult::Parent(pid) => {
                self.procs.push(Proc {
                    id,
                    slot: Some(slot),
                    pid,
                    spawned_at: Instant::now(),
                    old: false,
                    stop_deadline: None,
                    harakiri: None,
                    cheaped: false,
                });
                self.history(id).spawns += 1;
                crate::log!(
                    "spawned headrace worker {id} (pid: {pid}, cores: {})",
                    self.config.threads
                );
                Ok(pid)
            }
        }
    }

    pub(super) fn has_router(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.kind == crate::config::SocketKind::Router)
    }

    /// Fork the `--http` router.
    pub(super) fn spawn_router(&mut self, py: Python<'_>) -> Result<i32, MasterError> {
        crate::wsgi::load::flush_stdio(py);
        match proc::fork()? {
            ForkResult::Child => {
                // The router serves only its own sockets: close the workers' listeners, and
                // every other descriptor the master holds (the app's files and sockets).
                self.listeners
                    .retain(|l| l.kind == crate::config::SocketKind::Router);
                let keep: Vec<std::os::fd::RawFd> = self
                    .listeners
                    .iter()
                    .map(|l| std::os::fd::AsRawFd::as_raw_fd(&l.fd))
                    .chain([self.scoreboard.raw_fd()])
                    .collect();
                #[expect(unsafe_code, reason = "closing inherited descriptors: see SAFETY")]
                // SAFETY: this child runs router::run, which never returns (it ends in
                // exit_now, running no destructors) and runs no Python: the descriptors closed
                // here (the interpreter's and the app's, the master's copy of the signalfd) are
                // never used or dropped in this process again.
                let closed = unsafe { proc::close_fds_except(&keep) };
                if let Err(e) = closed {
                    crate::log!(
                        "headrace: router cannot close the descriptors it does not need: {e}"
                    );
                }
                crate::router::run(
                    self.config.clone(),
                    &self.listeners,
                    self.scoreboard.clone(),
                )
            }
            ForkResult::Parent(pid) => {
                self.procs.push(Proc {
                    id: ROUTER_ID,
                    slot: None,
                    pid,
                    spawned_at: Instant::now(),
                    old: false,
                    stop_deadline: None,
                    harakiri: None,
                    cheaped: false,
                });
                crate::log!("spawned headrace http 1 (pid: {pid})");
                Ok(pid)
            }
        }
    }

    /// Make sure every id has a current worker (or a respawn scheduled), except while a chain
    /// reload replaces them one at a time. The router (id 0) is always kept.
    pub(super) fn fill(&mut self, py: Python<'_>) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let chain = self
            .reload
            .as_ref()
            .is_some_and(super::reload::Reload::is_chain);
        let first = if self.has_router() { ROUTER_ID } else { 1 };
        let last = if chain {
            ROUTER_ID
        } else {
            self.config.processes
        };
        for id in first..=last {
            if self.cheaped(id) {
                continue;
            }
            let alive = self.procs.iter().any(|p| p.id == id && !p.old);
            if !alive && !self.pending.iter().any(|(i, _)| *i == id) {
                self.pending.push((id, now));
            }
        }
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(i, _)| *i)
            .collect();
        self.pending.retain(|(_, t)| *t > now);
        for id in due {
            let respawn = self.respawning.get_mut(id).is_some_and(std::mem::take);
            match self.spawn(py, id) {
                Ok(pid) if respawn && id == ROUTER_ID => {
                    crate::log!("Respawned headrace http 1 (new pid: {pid})");
                }
                Ok(pid) if respawn => {
                    crate::log!("Respawned headrace worker {id} (new pid: {pid})");
                }
                Ok(_) => {}
                Err(e) => {
                    crate::log!("headrace: cannot spawn worker {id}: {e}");
                    self.pending.push((id, now + Duration::from_secs(1)));
                }
            }
        }
    }

    /// Some live worker takes requests now; remembered in `ever_ready`.
    pub(super) fn any_worker_ready(&mut self) -> bool {
        let ready = self.procs.iter().any(|p| {
            p.slot.is_some_and(|s| {
                self.scoreboard
                    .slot(s)
                    .ready
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 1
            })
        });
        self.ever_ready |= ready;
        ready
    }

    /// A worker's ASGI lifespan startup failed (the app's message is logged): before anything
    /// was ever served, retrying cannot help, so the server stops, as Gunicorn and Uvicorn do.
    /// Later (a respawn, a reload) the workers serving go on. `true`: stopping.
    fn startup_failure_stops(&mut self, name: &str, pid: i32) -> bool {
        if self.reload.is_some() || self.ever_ready || self.any_worker_ready() {
            return false;
        }
        crate::log!(
            "headrace: ASGI lifespan startup failed in {name} (pid: {pid}): no worker can \
             serve, stopping with exit code 1"
        );
        self.exit_code = 1;
        self.signal_all(libc::SIGINT);
        self.stopping = Some((Instant::now() + super::KILL_MERCY, false));
        true
    }

    pub(super) fn reap(&mut self) {
        while let Some((pid, status)) = proc::reap() {
            let Some(idx) = self.procs.iter().position(|p| p.pid == pid) else {
                if !self.reap_aux(pid, status) && !self.reap_daemon(pid, status) {
                    self.reap_cron(pid, status);
                }
                continue;
            };
            let p = self.procs.remove(idx);
            let lost = self.running_requests(p.slot);
            let startup_failed = p.slot.is_some_and(|s| {
                self.scoreboard
                    .slot(s)
                    .startup_failed
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 1
            });
            self.retire_counters(p.id, p.slot);
            if let Some(slot) = p.slot {
                self.scoreboard.reset(slot);
            }
            let how = match status {
                ExitStatus::Code(c) => format!("exit code {c}"),
                ExitStatus::Signal(s) => format!("killed by signal {s} ({})", proc::signal_name(s)),
            };
            if self.stopping.is_some() {
                crate::log!("{} (pid: {pid}) stopped ({how})", p.name());
                continue;
            }
            if p.cheaped {
                crate::log!("{} (pid: {pid}) stopped by the cheaper ({how})", p.name());
                continue;
            }
            if p.old {
                crate::log!(
                    "{} (pid: {pid}) of the previous generation finished ({how})",
                    p.name()
                );
                continue;
            }
            if p.id > self.config.processes {
                // An id the configuration no longer has (a reload lowered --processes).
                crate::log!("{} (pid: {pid}) exited ({how}); not replaced", p.name());
                continue;
            }
            if startup_failed && self.startup_failure_stops(&p.name(), pid) {
                continue;
            }
            if status == ExitStatus::Code(0) && p.stop_deadline.is_none() && p.harakiri.is_none() {
                // A worker that retired by itself (--max-requests and friends): replace it now.
                if let Some(d) = self.early_deaths.get_mut(p.id) {
                    *d = 0;
                }
                self.pending.push((p.id, Instant::now()));
                continue;
            }
            let lost_text = if lost.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} request(s) in flight lost ({})",
                    lost.len(),
                    lost.join(", ")
                )
            };
            crate::log!(
                "DAMN ! {} (pid: {pid}) died, {how}{lost_text} :( trying respawn ...",
                p.name()
            );
            let early = p.spawned_at.elapsed() < EARLY_DEATH && p.harakiri.is_none();
            let Some(deaths) = self.early_deaths.get_mut(p.id) else {
                continue;
            };
            if early {
                *deaths += 1;
            } else {
                *deaths = 0;
            }
            // The first early death is respawned at once; a second in a row starts the backoff.
            let delay = if *deaths <= 1 {
                Duration::ZERO
            } else {
                let d = Duration::from_millis(250u64 << (*deaths - 1).min(8)).min(MAX_BACKOFF);
                crate::log!(
                    "{} died {} time(s) within {}s of spawning: next respawn in {:.1}s",
                    p.name(),
                    *deaths,
                    EARLY_DEATH.as_secs(),
                    d.as_secs_f64()
                );
                d
            };
            self.pending.push((p.id, Instant::now() + delay));
            if let Some(r) = self.respawning.get_mut(p.id) {
                *r = true;
            }
        }
    }
}
