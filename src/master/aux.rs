//! Auxiliary processes: spoolers and mules (see `crate::offload`). The
//! master forks each one its [`AuxSpec`] describes, respawns it when it dies (with the same
//! backoff as workers), restarts the ones that go with the workers on reload, and stops them
//! all with the server. They have no scoreboard slot and serve no requests.

use super::{Master, EARLY_DEATH, MAX_BACKOFF};
use crate::offload::{self, AuxKind, AuxSpec, Role};
use crate::sys::proc::{self, ExitStatus, ForkResult};
use pyo3::prelude::*;
use std::time::{Duration, Instant};

/// One live auxiliary process.
pub struct AuxProc {
    /// Index of its spec in `Master::aux`.
    pub index: usize,
    pub pid: i32,
    spawned_at: Instant,
    /// Being replaced (reload) or stopped: not counted as the live one.
    pub old: bool,
    /// Told to stop; SIGKILL after this.
    stop_deadline: Option<Instant>,
}

/// The master's view of its auxiliary processes.
#[derive(Default)]
pub struct Aux {
    /// What to run.
    pub specs: Vec<AuxSpec>,
    /// What runs.
    pub procs: Vec<AuxProc>,
    /// Indexes waiting to be (re)spawned, and when.
    pending: Vec<(usize, Instant)>,
    /// Early deaths in a row, per index.
    early_deaths: Vec<u32>,
}

impl Aux {
    /// The auxiliary processes of `specs`, none started yet.
    #[must_use]
    pub fn new(specs: Vec<AuxSpec>) -> Self {
        let n = specs.len();
        Self {
            specs,
            procs: Vec::new(),
            pending: Vec::new(),
            early_deaths: vec![0; n],
        }
    }

    /// The live (not replaced) process of spec `index`.
    #[must_use]
    pub fn live_pid(&self, index: usize) -> Option<i32> {
        self.procs
            .iter()
            .find(|p| p.index == index && !p.old)
            .map(|p| p.pid)
    }

    /// Any process waits for a deadline or a respawn (the master then ticks faster).
    #[must_use]
    pub fn busy(&self) -> bool {
        !self.pending.is_empty() || self.procs.iter().any(|p| p.stop_deadline.is_some())
    }
}

fn role_of(kind: &AuxKind) -> Role {
    match kind {
        AuxKind::Spooler(i, n) => Role::Spooler(*i, *n),
        AuxKind::Mule(id) => Role::Mule(*id),
    }
}

impl Master<'_> {
    /// Start (or schedule) every auxiliary process that is not running.
    pub(super) fn fill_aux(&mut self, py: Python<'_>) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        for index in 0..self.aux.specs.len() {
            let alive = self.aux.live_pid(index).is_some();
            if !alive && !self.aux.pending.iter().any(|(i, _)| *i == index) {
                self.aux.pending.push((index, now));
            }
        }
        let due: Vec<usize> = self
            .aux
            .pending
            .iter()
            .filter(|(_, t)| *t <= now)
            .map(|(i, _)| *i)
            .collect();
        self.aux.pending.retain(|(_, t)| *t > now);
        for index in due {
            if let Err(e) = self.spawn_aux(py, index) {
                crate::log!("headrace: cannot spawn {}: {e}", self.aux.specs[index].name);
                self.aux.pending.push((index, now + Duration::from_secs(1)));
            }
        }
    }

    fn spawn_aux(&mut self, py: Python<'_>, index: usize) -> Result<i32, super::MasterError> {
        let spec = self.aux.specs[index].clone();
        crate::wsgi::load::flush_stdio(py);
        match proc::fork()? {
            ForkResult::Child => {
                offload::set_role(role_of(&spec.kind));
                // The stats clients and the listening sockets are the master's and the
                // workers': an auxiliary process holding them would keep them open.
                drop(std::mem::take(&mut self.stats));
                self.listeners.clear();
                if let Some(title) = self.config.titles.child(&format!("headrace {}", spec.name)) {
                    proc::set_title(&title);
                }
                offload::run_aux(py, &spec, self.config)
            }
            ForkResult::Parent(pid) => {
                self.aux.procs.push(AuxProc {
                    index,
                    pid,
                    spawned_at: Instant::now(),
                    old: false,
                    stop_deadline: None,
                });
                crate::log!("spawned headrace {} (pid: {pid})", spec.name);
                Ok(pid)
            }
        }
    }

    /// A child exited: if it was an auxiliary process, log it and schedule its successor.
    /// Returns whether it was one.
    pub(super) fn reap_aux(&mut self, pid: i32, status: ExitStatus) -> bool {
        let Some(idx) = self.aux.procs.iter().position(|p| p.pid == pid) else {
            return false;
        };
        let p = self.aux.procs.remove(idx);
        let name = self.aux.specs[p.index].name.clone();
        let how = match status {
            ExitStatus::Code(c) => format!("exit code {c}"),
            ExitStatus::Signal(s) => format!("killed by signal {s} ({})", proc::signal_name(s)),
        };
        if self.stopping.is_some() || p.old {
            crate::log!("{name} (pid: {pid}) stopped ({how})");
            return true;
        }
        if status == ExitStatus::Code(0) {
            // Retired by itself (--spooler-max-tasks and friends): replace it now.
            self.aux.early_deaths[p.index] = 0;
            crate::log!("{name} (pid: {pid}) exited ({how}): respawning");
            self.aux.pending.push((p.index, Instant::now()));
            return true;
        }
        crate::log!("DAMN ! {name} (pid: {pid}) died, {how} :( trying respawn ...");
        let deaths = &mut self.aux.early_deaths[p.index];
        if p.spawned_at.elapsed() < EARLY_DEATH {
            *deaths += 1;
        } else {
            *deaths = 0;
        }
        let delay = if *deaths <= 1 {
            Duration::ZERO
        } else {
            let d = Duration::from_millis(250u64 << (*deaths - 1).min(8)).min(MAX_BACKOFF);
            crate::log!(
                "{name} died {} time(s) within {}s of spawning: next respawn in {:.1}s",
                *deaths,
                EARLY_DEATH.as_secs(),
                d.as_secs_f64()
            );
            d
        };
        self.aux.pending.push((p.index, Instant::now() + delay));
        true
    }

    /// Tell the auxiliary processes `which` selects to stop gracefully (SIGTERM, then SIGKILL
    /// after their mercy); their successors start at once (fill_aux).
    pub(super) fn restart_aux(&mut self, which: impl Fn(&AuxSpec) -> bool) {
        let now = Instant::now();
        for p in &mut self.aux.procs {
            let spec = &self.aux.specs[p.index];
            if p.old || !which(spec) {
                continue;
            }
            p.old = true;
            p.stop_deadline = Some(now + spec.stop_mercy);
            proc::kill(p.pid, libc::SIGTERM);
        }
    }

    /// On reload: restart the spoolers and mules.
    pub(super) fn reload_aux(&mut self) {
        self.restart_aux(|s| s.reload_with_workers);
    }

    /// Send `sig` to every auxiliary process (server stop). On a graceful stop (SIGTERM) each
    /// gets its own mercy (`--mule-reload-mercy`, ...) before SIGKILL, as uWSGI gives it,
    /// rather than the workers'.
    pub(super) fn signal_aux(&mut self, sig: i32) {
        let now = Instant::now();
        for p in &mut self.aux.procs {
            proc::kill(p.pid, sig);
            if sig == libc::SIGTERM && p.stop_deadline.is_none() {
                p.stop_deadline = Some(now + self.aux.specs[p.index].stop_mercy);
            }
        }
    }

    /// SIGKILL auxiliary processes that outlived their stop deadline.
    pub(super) fn enforce_aux_deadlines(&mut self) {
        let now = Instant::now();
        for p in &mut self.aux.procs {
            if p.stop_deadline.is_some_and(|d| now >= d) {
                crate::log!(
                    "{} (pid: {}) did not stop in time: SIGKILL",
                    self.aux.specs[p.index].name,
                    p.pid
                );
                proc::kill(p.pid, libc::SIGKILL);
                p.stop_deadline = None;
            }
        }
    }
}
