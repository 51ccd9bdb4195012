//! The master: parses the configuration, binds every socket, loads the app (unless
//! `--lazy-apps`), forks the workers and supervises them from a single-threaded poll loop over a
//! signalfd: respawn with backoff, harakiri, graceful and chain reloads, graceful stop. It never
//! calls the app.

mod aux;
mod bind;
mod cheaper;
mod control;
mod daemons;
mod reload;
mod spawn;
mod stats;
mod supervise;
mod systemd;
mod timers;
mod watch;

use crate::config::{Config, Request};
use crate::hooks::Phase;
use crate::scoreboard::Scoreboard;
use crate::sys::proc::{self, ForkResult, SignalFd};
use crate::worker::Listener;
use pyo3::prelude::*;
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
    /// Stopped by the cheaper (it is also `old`: its id may get a new worker at once).
    cheaped: bool,
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
    /// Spoolers, mules and attached daemons.
    aux: aux::Aux,
    /// Timers, cron and file monitors (uWSGI signals).
    timers: timers::Timers,
    /// Attached daemons.
    daemons: daemons::Daemons,
    /// Elastic workers: which ids the cheaper keeps stopped.
    elastic: cheaper::Elastic,
    /// Some worker of this master has taken requests (a failed ASGI lifespan startup stops
    /// the server only before that).
    ever_ready: bool,
    /// The master's exit code once it stops.
    exit_code: i32,
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
    crate::offload::core::set_is_a_reload(reloaded);
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
    if py.detach(|| config.hooks.run(Phase::Asap)).is_err() {
        return Ok(1);
    }
    let reexec = reload::ReExec::capture(py).map_err(|e| MasterError::Python(e.to_string()))?;
    let adopted = reload::Adopted::from_env();
    let inherited_daemons = daemons::take_inherited();
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
    crate::offload::init_master(py, config).map_err(MasterError::Python)?;
    let sup = &config.supervision;
    if py.detach(|| config.hooks.run(Phase::AsRoot)).is_err() {
        return Ok(1);
    }
    if sup.uid.is_some() || sup.gid.is_some() {
        proc::drop_privileges(sup.uid.as_deref(), sup.gid.as_deref())
            .map_err(MasterError::Privileges)?;
    }
    // uWSGI runs the as-user hooks after its privileges step, whether or not it dropped any.
    if py.detach(|| config.hooks.run(Phase::AsUser)).is_err() {
        return Ok(1);
    }
    let stats = crate::stats::Server::bind(&config.stats)?;
    let app = if config.lazy_apps {
        crate::log!("lazy-apps: the app is loaded in each worker after fork");
        None
    } else {
        if py.detach(|| config.hooks.run(Phase::PreApp)).is_err() {
            return Ok(1);
        }
        match crate::wsgi::load::load(py, config) {
            Ok(app) => {
                let kind = if crate::wsgi::load::is_asgi(py, app.bind(py), config) {
                    "ASGI"
                } else {
                    "WSGI"
                };
                crate::log!(
                    "{kind} app 0 (mountpoint='') ready in {} seconds (pid: {}, default app)",
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
    if app_loaded && py.detach(|| config.hooks.run(Phase::PostApp)).is_err() {
        return Ok(1);
    }
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
    crate::offload::set_scoreboard(&scoreboard);
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
        aux: aux::Aux::new(crate::offload::aux_specs(config)),
        timers: timers::Timers::default(),
        daemons: daemons::Daemons::new(config, &inherited_daemons),
        elastic: cheaper::Elastic::new(config),
        ever_ready: false,
        exit_code: 0,
    };
    if let Some(adopted) = adopted {
        master.adopt(adopted);
    }
    master.fill(py);
    // uWSGI runs these as its master loop starts, the workers spawned; a failure stops the
    // instance the way SIGINT does.
    if py.detach(|| config.hooks.run(Phase::MasterStart)).is_err() {
        proc::kill(proc::getpid(), libc::SIGINT);
    }
    // Attached daemons start after the workers, as in uWSGI.
    master.tick_daemons(py);
    master.notifier.notify(&format!(
        "READY=1\nSTATUS=serving with {} workers\nMAINPID={}",
        master.elastic.target(config.processes),
        proc::getpid()
    ));
    master.supervise(py);
    master.notifier.notify("STOPPING=1");
    if config.supervision.vacuum {
        master.vacuum();
    }
    crate::log!("goodbye to headrace.");
    Ok(master.exit_code)
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
    // Variables consumed by the master (systemd, re-exec: all read by now) are not the
    // app's business. Python copied the environment at startup, so removing them from the
    // process's environment did not remove them from `os.environ`.
    for k in [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        bind::REEXEC_FDS,
        reload::ENV_MODE,
        reload::ENV_OLD,
        reload::ENV_SCOREBOARD,
        daemons::ENV_RETIRING,
    ] {
        environ.call_method1("pop", (k, py.None()))?;
    }
    crate::wsgi::load::prepare_path(py, config)?;
    let version: String = sys.getattr("version")?.extract()?;
    crate::log!("Python version: {}", version.replace('\n', " "));
    Ok(())
}
