//! Graceful and chain reloads. With `--lazy-apps` (or when the master holds no app) new workers
//! load the code themselves, so a reload just replaces the workers. Otherwise the master re-execs
//! itself (same pid, same listening sockets, handed over by fd number) so that the new image
//! loads the new code; it adopts the old workers, waits for its own to be ready, then tells the
//! old ones to finish their requests and exit.

use super::{Master, Proc};
use crate::scoreboard::Scoreboard;
use crate::sys::proc;
use pyo3::prelude::*;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) const ENV_MODE: &str = "HEADRACE_REEXEC";
pub(super) const ENV_OLD: &str = "HEADRACE_OLD_WORKERS";
pub(super) const ENV_SCOREBOARD: &str = "HEADRACE_SCOREBOARD";
/// Longest wait for new workers to report ready before the old ones are told to stop anyway.
const READY_WAIT: Duration = Duration::from_secs(60);

/// This image was started by a reload's re-exec (the hand-over variables are set).
#[must_use]
pub fn is_reexec() -> bool {
    std::env::var_os(ENV_MODE).is_some()
}

/// A reload in progress.
pub enum Reload {
    /// New workers for every id at once; the old ones stop when all new ones are ready.
    All {
        /// When the reload began.
        started: Instant,
        /// The old workers were told to stop.
        signalled: bool,
    },
    /// One id at a time: (old pid, new pid, old told to stop).
    Chain(Option<(i32, i32, bool)>),
}

impl Reload {
    /// A chain reload (no more than processes+1 workers at any moment).
    #[must_use]
    pub fn is_chain(&self) -> bool {
        matches!(self, Self::Chain(_))
    }
}

/// What exec needs to start the master again exactly as it was started.
pub struct ReExec {
    executable: String,
    argv: Vec<String>,
    cwd: std::path::PathBuf,
}

impl ReExec {
    /// Capture the interpreter and its original argv (before `--chdir` changes the directory
    /// relative paths in argv refer to).
    pub fn capture(py: Python<'_>) -> PyResult<Self> {
        let sys = py.import("sys")?;
        let executable: String = sys.getattr("executable")?.extract()?;
        let argv: Vec<String> = match sys.getattr("orig_argv") {
            Ok(a) => a.extract()?,
            // Python < 3.10: the interpreter followed by the script's argv.
            Err(_) => std::iter::once(executable.clone())
                .chain(sys.getattr("argv")?.extract::<Vec<String>>()?)
                .collect(),
        };
        Ok(Self {
            executable,
            argv,
            cwd: std::env::current_dir().unwrap_or_default(),
        })
    }
}

/// Workers of the previous image, handed over across a re-exec.
pub struct Adopted {
    chain: bool,
    /// (id, pid, scoreboard slot); id 0 is the previous image's router.
    workers: Vec<(usize, i32, Option<usize>)>,
    /// The previous image's scoreboard, which its workers and router keep using.
    pub scoreboard: Option<crate::sys::shm::Region>,
}

impl Adopted {
    /// Read (and clear) the hand-over variables.
    #[must_use]
    pub fn from_env() -> Option<Self> {
        let mode = std::env::var(ENV_MODE).ok()?;
        let old = std::env::var(ENV_OLD).unwrap_or_default();
        let board = std::env::var(ENV_SCOREBOARD).ok();
        std::env::remove_var(ENV_MODE);
        std::env::remove_var(ENV_OLD);
        std::env::remove_var(ENV_SCOREBOARD);
        let workers = old
            .split(',')
            .filter_map(|w| {
                let mut parts = w.split(':');
                let id = parts.next()?.parse().ok()?;
                let pid = parts.next()?.parse().ok()?;
                Some((id, pid, parts.next().and_then(|s| s.parse().ok())))
            })
            .collect();
        let scoreboard = board.and_then(|b| b.parse::<i32>().ok()).and_then(|raw| {
            #[allow(
                unsafe_code,
                reason = "taking ownership of the fd the previous image handed over"
            )]
            // SAFETY: the previous image cleared CLOEXEC on its scoreboard memfd and named it in
            // HEADRACE_SCOREBOARD, which is read (and removed) once, here, at startup: nothing
            // else in this process owns that fd number.
            let region = unsafe { crate::sys::shm::Region::adopt(raw) };
            region
                .map_err(|e| crate::log!("reload: cannot map the previous scoreboard: {e}"))
                .ok()
        });
        Some(Self {
            chain: mode == "chain",
            workers,
            scoreboard,
        })
    }

    /// The scoreboard could not be shared: the adopted workers are tracked by pid alone.
    pub fn forget_slots(&mut self) {
        for w in &mut self.workers {
            w.2 = None;
        }
    }
}

fn ready(scoreboard: &Scoreboard, p: &Proc) -> bool {
    p.slot
        .is_some_and(|s| scoreboard.slot(s).ready.load(Ordering::Acquire) == 1)
}

impl Master<'_> {
    /// Start a reload (SIGHUP, --touch-reload).
    pub(super) fn begin_reload(&mut self, py: Python<'_>, chain: bool) {
        if self.reload.is_some() {
            crate::log!("headrace: a reload is already in progress; this one is ignored");
            return;
        }
        self.notifier.notify("RELOADING=1");
        // Spoolers and mules run the app's code too: they restart with the workers (after a
        // re-exec the new image starts its own; the old ones finish as unknown children).
        self.reload_aux();
        // Plain attached daemons restart with the reload, smart ones stay (as in uWSGI).
        self.reload_daemons();
        if self.app.is_some() {
            self.reexec(py, chain);
            return;
        }
        // The router stays: it follows the scoreboard to the new workers.
        for p in self.procs.iter_mut().filter(|p| p.id != super::ROUTER_ID) {
            p.old = true;
        }
        self.pending.retain(|(id, _)| *id == super::ROUTER_ID);
        self.reload = Some(if chain {
            Reload::Chain(None)
        } else {
            Reload::All {
                started: Instant::now(),
                signalled: false,
            }
        });
    }

    /// Replace this process's image with a fresh start of the same command line, handing over
    /// the listening sockets and the list of current workers. Returns only if exec failed.
    fn reexec(&mut self, py: Python<'_>, chain: bool) {
        let fds: Vec<String> = self
            .listeners
            .iter()
            .map(|l| {
                let raw = l.fd.as_raw_fd();
                if let Err(e) = proc::keep_on_exec(raw) {
                    crate::log!("headrace: cannot hand socket fd {raw} over: {e}");
                }
                format!("{raw}:{}", super::bind::kind_name(l.kind))
            })
            .collect();
        let old: Vec<String> = self
            .procs
            .iter()
            .map(|p| match p.slot {
                Some(slot) => format!("{}:{}:{slot}", p.id, p.pid),
                None => format!("{}:{}", p.id, p.pid),
            })
            .collect();
        let board = self.scoreboard.raw_fd();
        if let Err(e) = proc::keep_on_exec(board) {
            crate::log!("headrace: cannot hand the scoreboard over: {e}");
        } else {
            std::env::set_var(ENV_SCOREBOARD, board.to_string());
        }
        std::env::set_var(super::bind::REEXEC_FDS, fds.join(","));
        std::env::set_var(ENV_MODE, if chain { "chain" } else { "all" });
        std::env::set_var(ENV_OLD, old.join(","));
        self.hand_over_daemons();
        self.notifier.restore_env();
        let _ = std::env::set_current_dir(&self.reexec.cwd);
        crate::log!(
            "reloading: re-executing the master ({} workers handed over)",
            self.procs.len()
        );
        crate::wsgi::load::flush_stdio(py);
        let err = proc::exec(&self.reexec.executable, &self.reexec.argv);
        crate::log!(
            "headrace: reload failed: cannot exec {}: {err}",
            self.reexec.executable
        );
        for l in &self.listeners {
            proc::close_on_exec(l.fd.as_raw_fd());
        }
        proc::close_on_exec(board);
        std::env::remove_var(ENV_SCOREBOARD);
        if let Some(dir) = &self.config.chdir {
            let _ = std::env::set_current_dir(dir);
        }
    }

    /// Take over the previous image's workers.
    pub(super) fn adopt(&mut self, adopted: Adopted) {
        crate::log!(
            "reload: adopted {} workers of the previous master image",
            adopted.workers.len()
        );
        for (id, pid, slot) in adopted.workers {
            self.procs.push(Proc {
                id,
                slot,
                pid,
                spawned_at: Instant::now(),
                old: true,
                stop_deadline: None,
                harakiri: None,
                cheaped: false,
            });
        }
        self.reload = Some(if adopted.chain {
            Reload::Chain(None)
        } else {
            Reload::All {
                started: Instant::now(),
                signalled: false,
            }
        });
    }

    fn stop_old(&mut self, pid: i32) {
        let deadline = Instant::now() + self.config.supervision.reload_mercy;
        if let Some(p) = self.procs.iter_mut().find(|p| p.pid == pid) {
            // The router stops choosing it from its next look at the scoreboard, even before the
            // worker itself sees the signal.
            if let Some(slot) = p.slot.and_then(|s| self.scoreboard.get(s)) {
                slot.ready.store(0, Ordering::Release);
            }
            proc::kill(p.pid, libc::SIGTERM);
            p.stop_deadline = Some(deadline);
        }
    }

    fn reload_done(&mut self) {
        self.reload = None;
        crate::log!("reload complete: {} workers serving", self.procs.len());
        self.notifier.notify("READY=1\nSTATUS=reloaded");
    }

    /// Move a reload forward; called on every turn of the master's loop.
    pub(super) fn advance_reload(&mut self, py: Python<'_>) {
        // The previous image's router stops taking connections as soon as this image's router
        // exists (both accept on the same listening sockets); it finishes what it holds with
        // whichever workers the shared scoreboard shows ready, old or new.
        let router_id = super::ROUTER_ID;
        if self.procs.iter().any(|p| !p.old && p.id == router_id) {
            let old_routers: Vec<i32> = self
                .procs
                .iter()
                .filter(|p| p.old && p.id == router_id && p.stop_deadline.is_none())
                .map(|p| p.pid)
                .collect();
            for pid in old_routers {
                self.stop_old(pid);
            }
        }
        match self.reload {
            None => {}
            Some(Reload::All { started, signalled }) => {
                if !signalled {
                    let new: Vec<&Proc> = self
                        .procs
                        .iter()
                        .filter(|p| !p.old && p.id != router_id)
                        .collect();
                    let all_ready = new.len() >= self.elastic.target(self.config.processes)
                        && new.iter().all(|p| ready(&self.scoreboard, p));
                    if all_ready || started.elapsed() > READY_WAIT {
                        let old: Vec<i32> =
                            self.procs.iter().filter(|p| p.old).map(|p| p.pid).collect();
                        for pid in old {
                            self.stop_old(pid);
                        }
                        self.reload = Some(Reload::All {
                            started,
                            signalled: true,
                        });
                    }
                } else if !self.procs.iter().any(|p| p.old) {
                    self.reload_done();
                }
            }
            Some(Reload::Chain(None)) => {
                let next = self
                    .procs
                    .iter()
                    .filter(|p| p.old && p.stop_deadline.is_none() && p.id != router_id)
                    .min_by_key(|p| p.id)
                    .map(|p| (p.id, p.pid));
                match next {
                    None if self.procs.iter().any(|p| p.old) => {} // the last ones are finishing
                    None => self.reload_done(),
                    // A worker id beyond --processes (the new configuration has fewer): it
                    // stops without a successor.
                    Some((id, old_pid)) if id > self.config.processes => self.stop_old(old_pid),
                    Some((id, old_pid)) => match self.spawn(py, id) {
                        Ok(new_pid) => {
                            self.reload = Some(Reload::Chain(Some((old_pid, new_pid, false))));
                        }
                        Err(e) => {
                            crate::log!("headrace: chain reload cannot spawn worker {id}: {e}");
                        }
                    },
                }
            }
            Some(Reload::Chain(Some((old_pid, new_pid, stopped)))) => {
                let new = self.procs.iter().find(|p| p.pid == new_pid);
                let Some(new) = new else {
                    // The new worker died: keep the old ones serving and end the reload.
                    crate::log!("headrace: chain reload stopped: the new worker died; the old workers keep serving");
                    for p in &mut self.procs {
                        if p.stop_deadline.is_none() {
                            p.old = false;
                        }
                    }
                    self.reload = None;
                    return;
                };
                if !stopped {
                    if ready(&self.scoreboard, new) {
                        self.stop_old(old_pid);
                        self.reload = Some(Reload::Chain(Some((old_pid, new_pid, true))));
                    }
                } else if !self.procs.iter().any(|p| p.pid == old_pid) {
                    self.reload = Some(Reload::Chain(None));
                }
            }
        }
    }
}
