//! The master: parses the configuration, binds every socket, loads the app (unless
//! `--lazy-apps`), forks the workers and supervises them from a single-threaded poll loop over a
//! signalfd. It never calls the app.

mod bind;

use crate::config::{Config, ConfigError, Request};
use crate::scoreboard::Scoreboard;
use crate::sys::proc::{self, ExitStatus, ForkResult, SignalFd};
use crate::worker::{self, Listener};
use pyo3::prelude::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long in-flight requests may take to finish on a graceful stop (uWSGI's
/// `--worker-reload-mercy` default).
const STOP_MERCY: Duration = Duration::from_secs(60);
/// How long an immediate stop waits before SIGKILL.
const KILL_MERCY: Duration = Duration::from_secs(3);
/// A worker that dies sooner than this after its spawn counts as failing to start.
const EARLY_DEATH: Duration = Duration::from_secs(1);
/// Longest wait between respawns of a worker that keeps failing to start.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the master could not start.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// A socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file (log, pid) could not be written.
    #[error("cannot open {what} {path}: {source}")]
    File {
        /// Which option.
        what: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// fork, signals, shared memory.
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
    /// Other OS errors at startup.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Python-level setup failed.
    #[error("{0}")]
    Python(String),
}

/// The console script's body: parse, serve, return the exit code (2 for a bad configuration,
/// 1 for an app that cannot be loaded).
#[must_use]
pub fn main(py: Python<'_>, argv: &[String]) -> i32 {
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let config = match Config::load(argv, &env) {
        Ok(Request::Serve(c)) => *c,
        Ok(Request::Print(text)) => {
            let _ = crate::sys::fd::write_all(1, text.as_bytes());
            return 0;
        }
        Err(e) => {
            report_config_error(&e);
            return 2;
        }
    };
    match run(py, &config) {
        Ok(code) => code,
        Err(e) => {
            crate::log!("headrace: {e}");
            1
        }
    }
}

fn report_config_error(e: &ConfigError) {
    crate::log!("headrace: {e}");
}

struct Slot {
    pid: i32,
    spawned_at: Instant,
    respawn_at: Option<Instant>,
    early_deaths: u32,
}

struct Master<'a> {
    config: &'a Config,
    listeners: Vec<Listener>,
    scoreboard: Scoreboard,
    app: Option<Py<PyAny>>,
    slots: Vec<Slot>,
    signals: SignalFd,
    stopping: Option<(Instant, bool)>,
}

fn run(py: Python<'_>, config: &Config) -> Result<i32, MasterError> {
    if let Some(path) = &config.logto {
        redirect_output(path)?;
    }
    let started = Instant::now();
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    crate::log!(
        "*** Starting headrace {} on [{}] ***",
        env!("CARGO_PKG_VERSION"),
        crate::sys::time::ctime(now_secs)
    );
    for w in &config.warnings {
        crate::log!("headrace: warning: {w}");
    }
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).map_err(|source| MasterError::File {
            what: "--chdir",
            path: dir.display().to_string(),
            source,
        })?;
    }
    prepare_python(py, config).map_err(|e| MasterError::Python(e.to_string()))?;
    let listeners = bind::bind_all(config)?;
    let app = if config.lazy_apps {
        crate::log!("lazy-apps: the app is loaded in each worker after fork");
        None
    } else {
        match crate::wsgi::load::load(py, config) {
            Ok(app) => {
                crate::log!(
                    "WSGI app 0 (mountpoint='') ready in {} seconds (pid: {}, default app)",
                    started.elapsed().as_secs(),
                    proc::getpid()
                );
                Some(app)
            }
            Err(err) => {
                err.print(py);
                crate::log!(
                    "headrace: failed to load the app; --need-app is on: exiting with code 1"
                );
                return Ok(1);
            }
        }
    };
    let scoreboard = Scoreboard::new(config.processes)?;
    if let Some(path) = &config.pidfile {
        std::fs::write(path, format!("{}\n", proc::getpid())).map_err(|source| {
            MasterError::File {
                what: "--pidfile",
                path: path.display().to_string(),
                source,
            }
        })?;
    }
    let signals = SignalFd::new()?;
    crate::log!("spawned headrace master process (pid: {})", proc::getpid());
    let mut master = Master {
        config,
        listeners,
        scoreboard,
        app,
        slots: Vec::new(),
        signals,
        stopping: None,
    };
    for id in 1..=config.processes {
        master.slots.push(Slot {
            pid: 0,
            spawned_at: Instant::now(),
            respawn_at: None,
            early_deaths: 0,
        });
        master.spawn(py, id)?;
    }
    master.supervise(py);
    crate::log!("goodbye to headrace.");
    Ok(0)
}

/// `--logto`: both stdout and stderr of every process append to the file.
fn redirect_output(path: &std::path::Path) -> Result<(), MasterError> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| MasterError::File {
            what: "--logto",
            path: path.display().to_string(),
            source,
        })?;
    crate::sys::fd::dup2(file.as_raw_fd(), 1)?;
    crate::sys::fd::dup2(file.as_raw_fd(), 2)?;
    Ok(())
}

/// Line-buffer the app's stdout (so prints appear at once, in order with the request lines),
/// set `--env` variables through `os.environ`, and put the app's directories on `sys.path`.
fn prepare_python(py: Python<'_>, config: &Config) -> PyResult<()> {
    let sys = py.import("sys")?;
    for name in ["stdout", "stderr"] {
        let stream = sys.getattr(name)?;
        if stream.hasattr("reconfigure")? {
            let kwargs = pyo3::types::PyDict::new(py);
            kwargs.set_item("line_buffering", true)?;
            stream.call_method("reconfigure", (), Some(&kwargs))?;
        }
    }
    let environ = py.import("os")?.getattr("environ")?;
    for (k, v) in &config.env {
        environ.set_item(k, v)?;
    }
    crate::wsgi::load::prepare_path(py, config)?;
    let version: String = sys.getattr("version")?.extract()?;
    crate::log!("Python version: {}", version.replace('\n', " "));
    Ok(())
}

impl Master<'_> {
    fn spawn(&mut self, py: Python<'_>, id: usize) -> Result<(), MasterError> {
        flush_python(py);
        match proc::fork()? {
            ForkResult::Child => worker::run(
                py,
                id,
                self.config,
                &self.listeners,
                &self.scoreboard,
                self.app.as_ref(),
            ),
            ForkResult::Parent(pid) => {
                let slot = &mut self.slots[id - 1];
                slot.pid = pid;
                slot.spawned_at = Instant::now();
                slot.respawn_at = None;
                crate::log!(
                    "spawned headrace worker {id} (pid: {pid}, cores: {})",
                    self.config.threads
                );
                Ok(())
            }
        }
    }

    fn supervise(&mut self, py: Python<'_>) {
        loop {
            let fd = self.signals.raw();
            let wait_ms =
                if self.stopping.is_some() || self.slots.iter().any(|s| s.respawn_at.is_some()) {
                    100
                } else {
                    1000
                };
            py.detach(|| proc::poll_readable(fd, wait_ms));
            while let Some(sig) = self.signals.next() {
                self.on_signal(sig);
            }
            self.reap();
            if let Some((deadline, _)) = self.stopping {
                if self.slots.iter().all(|s| s.pid == 0) {
                    return;
                }
                if Instant::now() >= deadline {
                    for (i, s) in self.slots.iter().enumerate() {
                        if s.pid > 0 {
                            crate::log!(
                                "worker {} (pid: {}) did not stop in time: SIGKILL",
                                i + 1,
                                s.pid
                            );
                            proc::kill(s.pid, libc::SIGKILL);
                        }
                    }
                    self.stopping = Some((Instant::now() + KILL_MERCY, false));
                }
                continue;
            }
            let now = Instant::now();
            for id in 1..=self.slots.len() {
                let due = self.slots[id - 1].respawn_at.is_some_and(|t| now >= t);
                if due {
                    if let Err(e) = self.spawn(py, id) {
                        crate::log!("headrace: cannot respawn worker {id}: {e}");
                        self.slots[id - 1].respawn_at = Some(now + Duration::from_secs(1));
                    } else {
                        crate::log!(
                            "Respawned headrace worker {id} (new pid: {})",
                            self.slots[id - 1].pid
                        );
                    }
                }
            }
        }
    }

    fn on_signal(&mut self, sig: i32) {
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM if self.stopping.is_none() => {
                crate::log!(
                    "SIGTERM received: graceful shutdown, waiting up to {}s for requests in flight",
                    STOP_MERCY.as_secs()
                );
                self.signal_workers(libc::SIGTERM);
                self.stopping = Some((Instant::now() + STOP_MERCY, true));
            }
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                crate::log!("{} received: stopping now", proc::signal_name(sig));
                self.signal_workers(libc::SIGINT);
                self.stopping = Some((Instant::now() + KILL_MERCY, false));
            }
            libc::SIGHUP => {
                crate::log!("SIGHUP received: graceful reload is not implemented yet; ignored");
            }
            other => {
                crate::log!("{} received: ignored", proc::signal_name(other));
            }
        }
    }

    fn signal_workers(&self, sig: i32) {
        for s in &self.slots {
            proc::kill(s.pid, sig);
        }
    }

    fn reap(&mut self) {
        while let Some((pid, status)) = proc::reap() {
            let Some(idx) = self.slots.iter().position(|s| s.pid == pid) else {
                continue;
            };
            let id = idx + 1;
            let slot_sb = self.scoreboard.worker(id);
            let in_flight = slot_sb.busy.swap(0, Ordering::Relaxed);
            slot_sb.pid.store(0, Ordering::Relaxed);
            let how = match status {
                ExitStatus::Code(c) => format!("exit code {c}"),
                ExitStatus::Signal(s) => format!("killed by signal {s} ({})", proc::signal_name(s)),
            };
            let slot = &mut self.slots[idx];
            let lived = slot.spawned_at.elapsed();
            slot.pid = 0;
            if self.stopping.is_some() {
                crate::log!("worker {id} (pid: {pid}) stopped ({how})");
                continue;
            }
            let lost = if in_flight > 0 {
                format!(", {in_flight} request(s) in flight lost")
            } else {
                String::new()
            };
            crate::log!("DAMN ! worker {id} (pid: {pid}) died, {how}{lost} :( trying respawn ...");
            if lived < EARLY_DEATH {
                slot.early_deaths += 1;
            } else {
                slot.early_deaths = 0;
            }
            let delay = if slot.early_deaths == 0 {
                Duration::ZERO
            } else {
                let d = Duration::from_millis(250 << slot.early_deaths.min(8)).min(MAX_BACKOFF);
                crate::log!(
                    "worker {id} died {} time(s) within {}s of spawning: next respawn in {:.1}s",
                    slot.early_deaths,
                    EARLY_DEATH.as_secs(),
                    d.as_secs_f64()
                );
                d
            };
            slot.respawn_at = Some(Instant::now() + delay);
        }
    }
}

fn flush_python(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(s) = sys.getattr(name) {
                let _ = s.call_method0("flush");
            }
        }
    }
}
