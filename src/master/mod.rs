//! The master: parses the configuration, binds every socket, loads the app (unless
//! `--lazy-apps`), forks the workers and supervises them from a single-threaded poll loop over a
//! signalfd: respawn with backoff, harakiri, graceful and chain reloads, graceful stop. It never
//! calls the app.

mod bind;
mod reload;
mod stats;
mod systemd;

use crate::config::{Config, Request};
use crate::scoreboard::Scoreboard;
use crate::sys::proc::{self, ExitStatus, ForkResult, SignalFd};
use crate::worker::{self, Listener};
use pyo3::prelude::*;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

/// The id the router has among the master's children (workers are 1..=processes).
const ROUTER_ID: usize = 0;
/// How long an immediate stop waits before SIGKILL.
const KILL_MERCY: Duration = Duration::from_secs(3);
/// A worker that dies sooner than this after its spawn counts as failing to start.
const EARLY_DEATH: Duration = Duration::from_secs(1);
/// Longest wait between respawns of a worker that keeps failing to start.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Time given to faulthandler to write the stuck worker's traceback before the next signal.
const TRACEBACK_GRACE: Duration = Duration::from_millis(300);

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
    /// A file (log, pid) could not be written, or a directory entered.
    #[error("cannot open {what} {path}: {source}")]
    File {
        /// Which option.
        what: &'static str,
        /// The path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `--uid`/`--gid` could not be applied.
    #[error("cannot drop privileges (--uid/--gid): {0}")]
    Privileges(std::io::Error),
    /// fork, signals, shared memory.
    #[error(transparent)]
    Sys(#[from] crate::sys::SysError),
    /// Other OS errors at startup.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Python-level setup failed.
    #[error("{0}")]
    Python(String),
    /// The stats server could not be set up.
    #[error(transparent)]
    Stats(#[from] crate::stats::StatsError),
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
            crate::log!("headrace: {e}");
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

/// One live worker process.
struct Proc {
    /// 1-based id, shown in logs; a reload briefly has two processes per id.
    id: usize,
    /// Scoreboard slot (`None` for workers adopted from before a re-exec: their scoreboard
    /// belongs to the previous image).
    slot: Option<usize>,
    pid: i32,
    spawned_at: Instant,
    /// Belongs to the generation a reload is replacing.
    old: bool,
    /// Told to stop (SIGTERM); SIGKILL after this deadline.
    stop_deadline: Option<Instant>,
    /// Harakiri in progress: (SIGTERM at, SIGKILL at, SIGTERM sent).
    harakiri: Option<(Instant, Instant, bool)>,
}

impl Proc {
    /// How logs name it.
    fn name(&self) -> String {
        if self.id == ROUTER_ID {
            "http router".to_owned()
        } else {
            format!("worker {}", self.id)
        }
    }
}

/// A watched `--touch-reload` file.
struct Touch {
    path: std::path::PathBuf,
    mtime: Option<SystemTime>,
    chain: bool,
}

/// The master's state.
pub struct Master<'a> {
    config: &'a Config,
    listeners: Vec<Listener>,
    scoreboard: std::sync::Arc<Scoreboard>,
    app: Option<Py<PyAny>>,
    procs: Vec<Proc>,
    /// Ids waiting to be (re)spawned, and when.
    pending: Vec<(usize, Instant)>,
    /// Early deaths in a row per id (index 0 unused).
    early_deaths: Vec<u32>,
    /// Ids whose next spawn replaces a worker that died (logged as a respawn).
    respawning: Vec<bool>,
    signals: SignalFd,
    notifier: systemd::Notifier,
    /// Graceful (true) or immediate stop in progress, with the deadline for SIGKILL.
    stopping: Option<(Instant, bool)>,
    reload: Option<reload::Reload>,
    touch: Vec<Touch>,
    /// What exec needs for a reload of a preloaded app.
    reexec: reload::ReExec,
    /// Names this image's worker sockets for the router (see `router::socket_name`).
    nonce: u64,
    /// When the direct-mode saturation line was last logged.
    last_saturation_log: Option<Instant>,
    /// `--stats`, `--metrics`.
    stats: crate::stats::Server,
    /// Per worker id: what outlives its processes (counters, spawns, harakiri kills).
    history: Vec<crate::stats::History>,
    /// Seconds the app took to load in the master.
    app_startup: u64,
}

fn unix_now_secs() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

#[allow(
    clippy::too_many_lines,
    reason = "the startup sequence, in the order it happens"
)]
fn run(py: Python<'_>, config: &Config) -> Result<i32, MasterError> {
    // A re-exec'd master (a reload) is already detached, and must keep its pid.
    let reloaded = reload::is_reexec();
    if let Some((path, false)) = &config.daemonize {
        if !reloaded && daemonize(py, path)? {
            return Ok(0);
        }
    }
    if let Some(path) = &config.logto {
        redirect_output(path)?;
    }
    crate::log::configure_from(config).map_err(|source| MasterError::File {
        what: "--req-logger",
        path: config
            .log
            .req_logger_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        source,
    })?;
    let started = Instant::now();
    crate::log!(
        "*** Starting headrace {} on [{}] ***",
        env!("CARGO_PKG_VERSION"),
        crate::sys::time::ctime(unix_now_secs())
    );
    for w in &config.warnings {
        crate::log!("headrace: warning: {w}");
    }
    let reexec = reload::ReExec::capture(py).map_err(|e| MasterError::Python(e.to_string()))?;
    let adopted = reload::Adopted::from_env();
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir).map_err(|source| MasterError::File {
            what: "--chdir",
            path: dir.display().to_string(),
            source,
        })?;
    }
    let notifier = systemd::Notifier::from_env();
    // Sockets first: systemd's LISTEN_FDS must be read before the environment is tidied up.
    if let Some(mask) = config.umask {
        proc::set_umask(mask);
    }
    let listeners = bind::listeners(config)?;
    if listeners.is_empty() {
        // LISTEN_FDS was set, but for another process.
        crate::log!(
            "headrace: no socket to serve: give --http-socket ADDR, --http ADDR or --socket ADDR"
        );
        return Ok(2);
    }
    prepare_python(py, config).map_err(|e| MasterError::Python(e.to_string()))?;
    let sup = &config.supervision;
    if sup.uid.is_some() || sup.gid.is_some() {
        proc::drop_privileges(sup.uid.as_deref(), sup.gid.as_deref())
            .map_err(MasterError::Privileges)?;
    }
    let stats = crate::stats::Server::bind(&config.stats)?;
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
                if adopted.is_some() {
                    // A reload whose new code does not load: the old workers keep serving;
                    // workers spawned from now on load the app themselves (and retry).
                    crate::log!("headrace: reload failed: the app cannot be loaded; the old workers keep serving");
                    None
                } else {
                    crate::log!(
                        "headrace: failed to load the app; --need-app is on: exiting with code 1"
                    );
                    return Ok(1);
                }
            }
        }
    };
    let app_loaded = app.is_some();
    // Forking beside other threads is unsafe: an app that starts threads while it loads
    // cannot be preloaded (sys::proc::fork refuses; say so once and exit).
    proc::ensure_single_threaded()?;
    if let Some((path, true)) = &config.daemonize {
        if !reloaded && daemonize(py, path)? {
            return Ok(0);
        }
    }
    // A reload keeps up to twice the workers alive at once. After a re-exec the previous
    // image's scoreboard is kept when it has room, so that its workers stay visible (harakiri,
    // status) and both images' routers see every worker.
    let mut adopted = adopted;
    let capacity = config.processes * 2 + 1;
    let inherited = adopted.as_mut().and_then(|a| a.scoreboard.take());
    let scoreboard = match inherited.map(|r| Scoreboard::adopt(r, capacity, config.threads)) {
        Some(Ok(sb)) => sb,
        Some(Err(e)) => {
            crate::log!("reload: the previous scoreboard does not fit ({e}): a new one; the old workers finish unobserved");
            if let Some(a) = adopted.as_mut() {
                a.forget_slots();
            }
            Scoreboard::new(capacity, config.threads)?
        }
        None => Scoreboard::new(capacity, config.threads)?,
    };
    let scoreboard = std::sync::Arc::new(scoreboard);
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
    if let Some(title) = config.titles.master() {
        proc::set_title(&title);
    }
    let touch = sup
        .touch_reload
        .iter()
        .map(|p| (p, false))
        .chain(sup.touch_chain_reload.iter().map(|p| (p, true)))
        .map(|(p, chain)| Touch {
            path: p.clone(),
            mtime: mtime(p),
            chain,
        })
        .collect();
    let mut master = Master {
        config,
        listeners,
        scoreboard,
        app,
        procs: Vec::new(),
        pending: Vec::new(),
        early_deaths: vec![0; config.processes + 1],
        respawning: vec![false; config.processes + 1],
        signals,
        notifier,
        stopping: None,
        reload: None,
        touch,
        reexec,
        nonce: nonce(),
        last_saturation_log: None,
        stats,
        history: Vec::new(),
        app_startup: if app_loaded {
            started.elapsed().as_secs()
        } else {
            0
        },
    };
    if let Some(adopted) = adopted {
        master.adopt(adopted);
    }
    master.fill(py);
    master.notifier.notify(&format!(
        "READY=1\nSTATUS=serving with {} workers\nMAINPID={}",
        config.processes,
        proc::getpid()
    ));
    master.supervise(py);
    master.notifier.notify("STOPPING=1");
    if config.supervision.vacuum {
        master.vacuum();
    }
    crate::log!("goodbye to headrace.");
    Ok(0)
}

/// A number that differs between master images (pid, time, address-space layout).
fn nonce() -> u64 {
    let t = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() ^ u64::from(d.subsec_nanos()) << 32);
    let stack = std::ptr::addr_of!(t) as u64;
    t ^ stack.rotate_left(17) ^ (u64::from(proc::getpid().unsigned_abs()) << 40)
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// `--daemonize FILE`: fork; the parent returns `true` and exits 0 at once, as uWSGI's does;
/// the child (the master from now on) starts a new session, reads nothing from the terminal and
/// appends all output to FILE. Called while the process has one thread.
fn daemonize(py: Python<'_>, path: &std::path::Path) -> Result<bool, MasterError> {
    crate::wsgi::load::flush_stdio(py);
    match proc::fork()? {
        ForkResult::Parent(_) => Ok(true),
        ForkResult::Child => {
            proc::setsid();
            let null = std::fs::File::open("/dev/null")?;
            crate::sys::fd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0)?;
            redirect_output(path)?;
            Ok(false)
        }
    }
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
    // Variables consumed by the master (systemd, re-exec) are not the app's business.
    for k in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
    ] {
        environ.call_method1("pop", (k, py.None()))?;
    }
    crate::wsgi::load::prepare_path(py, config)?;
    let version: String = sys.getattr("version")?.extract()?;
    crate::log!("Python version: {}", version.replace('\n', " "));
    Ok(())
}

impl Master<'_> {
    fn free_slot(&self) -> Option<usize> {
        (0..self.scoreboard.capacity()).find(|&i| !self.procs.iter().any(|p| p.slot == Some(i)))
    }

    /// Fork a worker with this id. Returns its pid.
    fn spawn(&mut self, py: Python<'_>, id: usize) -> Result<i32, MasterError> {
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

    fn has_router(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.kind == crate::config::SocketKind::Router)
    }

    /// Fork the `--http` router.
    fn spawn_router(&mut self, py: Python<'_>) -> Result<i32, MasterError> {
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
                });
                crate::log!("spawned headrace http 1 (pid: {pid})");
                Ok(pid)
            }
        }
    }

    /// Make sure every id has a current worker (or a respawn scheduled), except while a chain
    /// reload replaces them one at a time. The router (id 0) is always kept.
    fn fill(&mut self, py: Python<'_>) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let chain = self.reload.as_ref().is_some_and(reload::Reload::is_chain);
        let first = if self.has_router() { ROUTER_ID } else { 1 };
        let last = if chain {
            ROUTER_ID
        } else {
            self.config.processes
        };
        for id in first..=last {
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

    fn supervise(&mut self, py: Python<'_>) {
        let mut last_touch_check = Instant::now();
        loop {
            let fd = self.signals.raw();
            let busy = self.stopping.is_some()
                || self.reload.is_some()
                || !self.pending.is_empty()
                || self
                    .procs
                    .iter()
                    .any(|p| p.harakiri.is_some() || p.stop_deadline.is_some());
            let wait_ms = if busy {
                50
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
            self.stats.poll_fds(&mut fds);
            let wait_ms = self.stats.wait_ms(wait_ms);
            py.detach(|| proc::poll_many(&mut fds, wait_ms));
            while let Some(sig) = self.signals.next() {
                self.on_signal(py, sig);
            }
            if fds.len() > 1 {
                self.serve_stats(&fds[1..]);
            }
            self.reap();
            self.enforce_deadlines();
            if let Some((deadline, _)) = self.stopping {
                if self.procs.is_empty() {
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
                    self.stopping = Some((Instant::now() + KILL_MERCY, false));
                }
                continue;
            }
            self.harakiri();
            if last_touch_check.elapsed() >= Duration::from_secs(1) {
                last_touch_check = Instant::now();
                self.check_touch(py);
                self.check_saturation();
            }
            self.advance_reload(py);
            self.fill(py);
        }
    }

    fn on_signal(&mut self, py: Python<'_>, sig: i32) {
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

    fn signal_all(&self, sig: i32) {
        for p in &self.procs {
            proc::kill(p.pid, sig);
        }
    }

    /// SIGUSR1: one line per worker.
    fn log_status(&self) {
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
    fn running_requests(&self, slot: Option<usize>) -> Vec<String> {
        slot.map(|s| {
            self.scoreboard
                .cores(s)
                .iter()
                .filter_map(|c| c.current().map(|(_, r)| r))
                .collect()
        })
        .unwrap_or_default()
    }

    fn reap(&mut self) {
        while let Some((pid, status)) = proc::reap() {
            let Some(idx) = self.procs.iter().position(|p| p.pid == pid) else {
                continue;
            };
            let p = self.procs.remove(idx);
            let lost = self.running_requests(p.slot);
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

    /// SIGKILL workers that outlived their stop or harakiri deadlines.
    fn enforce_deadlines(&mut self) {
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

    /// `--harakiri`: a request older than the limit gets its worker's traceback dumped
    /// (SIGUSR2, faulthandler), then SIGTERM grace if configured, then SIGKILL.
    fn harakiri(&mut self) {
        let Some(limit) = self.config.supervision.harakiri else {
            return;
        };
        let grace = self.config.supervision.harakiri_grace;
        let now_ms = unix_now_ms();
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        for p in &mut self.procs {
            let Some(slot) = p.slot else { continue };
            if p.harakiri.is_some() {
                continue;
            }
            let stuck = self
                .scoreboard
                .cores(slot)
                .iter()
                .filter_map(super::scoreboard::Core::current)
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

    fn check_touch(&mut self, py: Python<'_>) {
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
    fn check_saturation(&mut self) {
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
            "*** headrace saturated: {workers}/{workers} workers busy, {queued} requests queued (oldest <= {:.1} s) ***",
            Duration::from_millis(now_ms.saturating_sub(all_busy_since)).as_secs_f64()
        );
    }

    /// `--vacuum`: remove what we created on disk.
    fn vacuum(&self) {
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
