//! The spooler: tasks enqueued with `uwsgi.spool` (in any process) and run by the spooler
//! processes, on disk (uWSGI's directory format, made durable) or on Redis. The format of a
//! task and the interface every backend implements are in [`backend`]; the directory in
//! [`disk`].
//!
//! A spooler process leases one task at a time, calls the app's `uwsgi.spooler` callable (or
//! the `uwsgidecorators` dispatch) with the task's variables, and acts on what it returns as
//! uWSGI does (`SPOOL_OK` done, `SPOOL_RETRY` again, `SPOOL_IGNORE` dropped), except that a
//! failing task (an exception, `SPOOL_RETRY`, a harakiri) is retried at most
//! `--spooler-max-retries` times with a growing delay, then moved to the dead letters with its
//! traceback.

pub mod backend;
pub mod disk;
pub mod redis;

use super::{AuxKind, AuxSpec};
use crate::config::offload::OffloadConfig;
use crate::config::{Config, ConfigError};
use crate::sys::shm::Region;
use backend::{Backend, Lease, SpoolError, Task};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// uWSGI's return values of a spooler function.
const SPOOL_OK: i64 = -2;
const SPOOL_RETRY: i64 = -1;
const SPOOL_IGNORE: i64 = 0;
/// The longest wait between two attempts of a failing task.
const MAX_BACKOFF_SECS: u64 = 300;

/// One spooler process's figures, in shared memory (uWSGI's `struct uwsgi_spooler` fields the
/// stats show, and what `uwsgi.spooler_pids()` reads in any process).
#[repr(C, align(64))]
#[derive(Default)]
pub struct SpoolerSlot {
    /// Its pid (0: not started yet).
    pub pid: AtomicU64,
    /// Tasks run by the current process.
    pub tasks: AtomicU64,
    /// Times a process was started for this slot.
    pub started: AtomicU64,
    /// 1 while a task runs.
    pub running: AtomicU64,
    /// `uwsgi.set_spooler_frequency` (seconds; 0: `--spooler-frequency`).
    pub frequency: AtomicU64,
    /// The `--touch-spoolers-reload` files' last seen state (0: not read yet).
    pub touched: AtomicU64,
}

static SHARED: OnceLock<Region> = OnceLock::new();
/// The spoolers' names: canonical directories, or Redis URLs as given.
static NAMES: OnceLock<Vec<String>> = OnceLock::new();
/// This process's queues for enqueuing, opened on first use, one per spooler.
type Queue = Mutex<Option<Box<dyn Backend>>>;
static QUEUES: OnceLock<Vec<Queue>> = OnceLock::new();

fn is_redis(target: &str) -> bool {
    target.starts_with("redis://") || target.starts_with("rediss://")
}

/// Check the `--spooler` values, when the configuration is read: a directory is created if
/// missing (as uWSGI does) and must be writable; a Redis URL must be one.
pub fn validate(o: &OffloadConfig) -> Result<(), ConfigError> {
    for g in &o.spooler.spoolers {
        let v = g.value.trim();
        if is_redis(v) {
            redis::check_url(v).map_err(|why| g.invalid("spooler", &why))?;
            continue;
        }
        if v.is_empty() {
            return Err(g.invalid("spooler", "expected a directory or a redis:// URL"));
        }
        let dir = Path::new(v);
        if !dir.is_dir() {
            std::fs::create_dir_all(dir)
                .map_err(|e| g.invalid("spooler", &format!("cannot create the directory: {e}")))?;
        }
        let probe = dir.join(format!(".headrace_probe_{}", std::process::id()));
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| g.invalid("spooler", &format!("the directory is not writable: {e}")))?;
    }
    Ok(())
}

fn slots() -> &'static [SpoolerSlot] {
    SHARED
        .get()
        .and_then(|r| r.slice::<SpoolerSlot>(0, r.len() / std::mem::size_of::<SpoolerSlot>()))
        .unwrap_or(&[])
}

fn names() -> &'static [String] {
    NAMES.get().map_or(&[], Vec::as_slice)
}

fn processes(config: &Config) -> usize {
    config.offload.spooler.processes.max(1)
}

/// The state of the `--touch-spoolers-reload` files, as one number (1 + their mtimes' sum).
fn touch_state(files: &[PathBuf]) -> u64 {
    files.iter().fold(1u64, |acc, p| {
        let t = std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(0));
        acc.wrapping_add(t)
    })
}

/// In the master, before the app is loaded (and before any fork): the spoolers' names and
/// their shared figures.
pub fn init_master(_py: Python<'_>, config: &Config) -> Result<(), String> {
    let sc = &config.offload.spooler;
    let names: Vec<String> = sc
        .spoolers
        .iter()
        .map(|g| {
            let v = g.value.trim();
            if is_redis(v) {
                v.to_owned()
            } else {
                std::fs::canonicalize(v).map_or_else(|_| v.to_owned(), |p| p.display().to_string())
            }
        })
        .collect();
    let count = names.len() * processes(config);
    let _ = QUEUES.set(names.iter().map(|_| Mutex::new(None)).collect());
    let _ = NAMES.set(names);
    if count > 0 {
        let region = Region::create(
            "headrace-spoolers",
            count * std::mem::size_of::<SpoolerSlot>(),
        )
        .map_err(|e| format!("cannot create the spoolers' shared memory: {e}"))?;
        let _ = SHARED.set(region);
        let touched = touch_state(&sc.touch_reload);
        for s in slots() {
            s.touched.store(touched, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// In every forked child that runs Python, after its role is set.
pub fn after_fork(_py: Python<'_>) {}

/// One auxiliary process per spooler directory (or queue) and `--spooler-processes`, named as
/// uWSGI's log names them ("spooler /path").
#[must_use]
pub fn aux_specs(config: &Config) -> Vec<AuxSpec> {
    let n = processes(config);
    let mut out = Vec::new();
    let sc = &config.offload.spooler;
    for (i, g) in sc.spoolers.iter().enumerate().take(sc.external_from) {
        let name = names().get(i).cloned().unwrap_or_else(|| g.value.clone());
        for p in 0..n {
            out.push(AuxSpec {
                kind: AuxKind::Spooler(i, p),
                name: format!("spooler {name}"),
                reload_with_workers: true,
                // A graceful stop lets the running task finish; a task longer than the
                // harakiri (or a minute) is killed and run again later.
                stop_mercy: if config.offload.spooler.harakiri.is_zero() {
                    Duration::from_secs(60)
                } else {
                    config.offload.spooler.harakiri + Duration::from_secs(1)
                },
            });
        }
    }
    out
}

fn open_backend(target: &str, frequency: Duration) -> Result<Box<dyn Backend>, SpoolError> {
    if is_redis(target) {
        redis::open(target)
    } else {
        Ok(Box::new(disk::DiskQueue::open(
            Path::new(target),
            frequency,
        )?))
    }
}

fn frequency() -> Duration {
    super::context().map_or(Duration::from_secs(30), |c| {
        c.config.offload.spooler.frequency
    })
}

/// Enqueue `task` on the spooler its `spooler` variable names (the first one without), in
/// this process. Returns the task's name.
fn enqueue(task: &Task) -> Result<String, String> {
    let names = names();
    if names.is_empty() {
        return Err("no spooler available".to_owned());
    }
    let index = match task.get(b"spooler").filter(|v| !v.is_empty()) {
        Some(want) => names
            .iter()
            .position(|n| n.as_bytes() == want)
            .ok_or_else(|| {
                format!(
                    "unable to find spooler \"{}\"",
                    String::from_utf8_lossy(want)
                )
            })?,
        None => 0,
    };
    let queues = QUEUES.get().ok_or("no spooler available")?;
    let mut q = queues[index]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if q.is_none() {
        *q = Some(open_backend(&names[index], frequency()).map_err(|e| e.to_string())?);
    }
    let backend = q.as_mut().ok_or("no spooler available")?;
    let name = backend.enqueue(task).map_err(|e| e.to_string())?;
    drop(q);
    let quiet = super::context().is_some_and(|c| c.config.offload.spooler.quiet);
    if !quiet {
        let size = task.encode().map_or(0, |b| b.len());
        crate::log!("[spooler] written {size} bytes to file {name}");
    }
    Ok(name)
}

/// The figures of every spooler process, for the stats: (dir, pid, tasks, respawns, running).
#[must_use]
pub fn stats() -> Vec<(String, u64, u64, u64, u64)> {
    let Some(c) = super::context() else {
        return Vec::new();
    };
    let n = processes(&c.config);
    slots()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                names().get(i / n).cloned().unwrap_or_default(),
                s.pid.load(Ordering::Relaxed),
                s.tasks.load(Ordering::Relaxed),
                s.started.load(Ordering::Relaxed).saturating_sub(1),
                s.running.load(Ordering::Relaxed),
            )
        })
        .collect()
}

type Vars = Vec<(Vec<u8>, Vec<u8>)>;

fn vars_to_py<'py>(
    py: Python<'py>,
    vars: &Vars,
) -> Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    vars.iter()
        .map(|(k, v)| (PyBytes::new(py, k), PyBytes::new(py, v)))
        .collect()
}

/// `_headrace.spooler_names()`: the spoolers' directories (canonical) or Redis URLs.
#[pyfunction]
fn spooler_names() -> Vec<String> {
    names().to_vec()
}

/// `_headrace.spool(vars, body)`: enqueue a task; returns its name.
#[pyfunction]
fn spool(py: Python<'_>, vars: Vars, body: Vec<u8>) -> PyResult<String> {
    let task = Task { vars, body };
    py.detach(|| enqueue(&task)).map_err(PyValueError::new_err)
}

/// `_headrace.spooler_jobs()`: the tasks waiting on the first spooler (uWSGI's
/// `spooler_jobs`, which reads only the first).
#[pyfunction]
fn spooler_jobs(py: Python<'_>) -> PyResult<Vec<String>> {
    let Some(first) = names().first() else {
        return Ok(Vec::new());
    };
    let first = first.clone();
    py.detach(|| {
        open_backend(&first, frequency())
            .and_then(|mut b| b.pending())
            .map_err(|e| PyOSError::new_err(e.to_string()))
    })
}

/// `_headrace.spooler_pids()`: the spooler processes' pids, in `--spooler` order.
#[pyfunction]
fn spooler_pids() -> Vec<u64> {
    slots()
        .iter()
        .map(|s| s.pid.load(Ordering::Relaxed))
        .collect()
}

/// `_headrace.spooler_get_task(path)`: a task file's variables and body, or `None`.
#[pyfunction]
#[expect(
    clippy::type_complexity,
    reason = "a Python tuple of bytes pairs and bytes"
)]
fn spooler_get_task<'py>(
    py: Python<'py>,
    path: &str,
) -> Option<(
    Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>,
    Bound<'py, PyBytes>,
)> {
    let task = disk::read_task(Path::new(path))?;
    Some((vars_to_py(py, &task.vars), PyBytes::new(py, &task.body)))
}

/// `_headrace.set_spooler_frequency(seconds)`: change every spooler's rescan period.
#[pyfunction]
fn set_spooler_frequency(seconds: u64) -> bool {
    for s in slots() {
        s.frequency.store(seconds, Ordering::Relaxed);
    }
    true
}

/// `_headrace.spooler_dir()`: this spooler process's directory (or queue).
#[pyfunction]
fn spooler_dir() -> PyResult<String> {
    match super::role() {
        super::Role::Spooler(i, _) => names()
            .get(i)
            .cloned()
            .ok_or_else(|| PyValueError::new_err("This process is not a spooler")),
        _ => Err(PyValueError::new_err("This process is not a spooler")),
    }
}

/// The spooler's native functions, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(spooler_names, m)?)?;
    m.add_function(wrap_pyfunction!(spool, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_jobs, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_pids, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_get_task, m)?)?;
    m.add_function(wrap_pyfunction!(set_spooler_frequency, m)?)?;
    m.add_function(wrap_pyfunction!(spooler_dir, m)?)?;
    Ok(())
}

/// What the task's Python function made of it.
enum Outcome {
    /// An int it returned.
    Code(i64),
    /// No spooler function in this process.
    Missing,
    /// It raised (the traceback), or returned something that is not an int.
    Failed(String),
}

/// A task the harakiri watchdog watches.
struct Armed {
    lease: Lease,
    since: Instant,
}

/// The `--spooler-harakiri` watchdog: a thread that, when a task runs too long, logs it,
/// counts the attempt (the task is rescheduled or buried) and kills this process (the master
/// respawns it).
struct Watchdog {
    state: Arc<(Mutex<Option<Armed>>, Condvar)>,
}

impl Watchdog {
    fn start(limit: Duration, label: String, target: String, max_retries: u64) -> Self {
        let state: Arc<(Mutex<Option<Armed>>, Condvar)> =
            Arc::new((Mutex::new(None), Condvar::new()));
        let s = state.clone();
        std::thread::spawn(move || {
            let (lock, cv) = &*s;
            let mut guard = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                let Some(armed) = guard.as_ref() else {
                    guard = cv
                        .wait(guard)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    continue;
                };
                let left = limit.saturating_sub(armed.since.elapsed());
                if !left.is_zero() {
                    guard = cv
                        .wait_timeout(guard, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                    continue;
                }
                let secs = armed.since.elapsed().as_secs();
                crate::log!(
                    "*** HARAKIRI ON THE SPOOLER (pid: {}) *** {label}: task {} ran {secs}s (--spooler-harakiri {}), killing",
                    crate::sys::proc::getpid(),
                    armed.lease.name.rsplit('/').next().unwrap_or(&armed.lease.name),
                    limit.as_secs()
                );
                if let Some(armed) = guard.take() {
                    let why = format!("harakiri: the task ran longer than {}s", limit.as_secs());
                    if let Err(e) =
                        open_backend(&target, Duration::from_secs(30)).and_then(|mut b| {
                            settle_failure(&mut *b, armed.lease, &why, max_retries, &label)
                        })
                    {
                        crate::log!("[spooler {label}] cannot record the failed attempt: {e}");
                    }
                }
                crate::sys::proc::kill(crate::sys::proc::getpid(), libc::SIGKILL);
            }
        });
        Self { state }
    }

    fn arm(&self, lease: &Lease) {
        let (lock, cv) = &*self.state;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Armed {
            lease: Lease {
                name: lease.name.clone(),
                task: lease.task.clone(),
                attempts: lease.attempts,
            },
            since: Instant::now(),
        });
        cv.notify_all();
    }

    fn disarm(&self) {
        let (lock, _) = &*self.state;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// The delay before attempt `attempts + 1` of a failing task: 1, 2, 4, ... seconds, at most
/// five minutes.
fn backoff(attempts: u32) -> u64 {
    (1u64 << attempts.min(16)).min(MAX_BACKOFF_SECS)
}

/// A failed attempt: retry the task later, or bury it when it has had its attempts.
fn settle_failure(
    b: &mut dyn Backend,
    lease: Lease,
    why: &str,
    max_retries: u64,
    label: &str,
) -> Result<(), SpoolError> {
    let pid = crate::sys::proc::getpid();
    let name = lease
        .name
        .rsplit('/')
        .next()
        .unwrap_or(&lease.name)
        .to_owned();
    if u64::from(lease.attempts) >= max_retries {
        crate::log!(
            "[spooler {label} pid: {pid}] task {name} failed {} time(s): moved to the dead letters",
            u64::from(lease.attempts) + 1
        );
        b.bury(lease, why)
    } else {
        let delay = backoff(lease.attempts);
        crate::log!(
            "[spooler {label} pid: {pid}] task {name} failed (attempt {} of {}): retrying in {delay}s",
            lease.attempts + 1,
            max_retries + 1
        );
        // Times are whole seconds: one more makes the wait at least `delay`.
        b.retry(lease, disk::unix_now() + delay + 1)
    }
}

/// Call the Python side on one task.
fn call_task(py: Python<'_>, lease: &Lease) -> Outcome {
    let run = || -> PyResult<Outcome> {
        let m = py.import("headrace._uwsgi.spooler")?;
        // uWSGI passes the file's name in its directory, not its path.
        let short = lease.name.rsplit('/').next().unwrap_or(&lease.name);
        let r = m.call_method1(
            "_run_task",
            (
                short,
                vars_to_py(py, &lease.task.vars),
                PyBytes::new(py, &lease.task.body),
            ),
        )?;
        let (kind, code, text): (String, i64, String) = r.extract()?;
        Ok(match kind.as_str() {
            "code" => Outcome::Code(code),
            "missing" => Outcome::Missing,
            _ => Outcome::Failed(text),
        })
    };
    match run() {
        Ok(o) => o,
        Err(e) => {
            e.print(py);
            Outcome::Failed(e.to_string())
        }
    }
}

fn stop_requested(fd: i32) -> bool {
    crate::sys::proc::poll_readable(fd, 0)
}

fn exit(py: Python<'_>, code: i32) -> ! {
    crate::wsgi::load::flush_stdio(py);
    crate::sys::proc::exit_now(code)
}

/// Import the `--spooler-import` modules (a path or a `.py` name is run as a file, as uWSGI).
fn import_modules(py: Python<'_>, config: &Config) {
    for name in &config.offload.spooler.imports {
        let r = py
            .import("headrace._uwsgi.spooler")
            .and_then(|m| m.call_method1("_import", (name.as_str(),)));
        if let Err(e) = r {
            e.print(py);
        }
    }
}

/// The body of a spooler process (in the child after fork). Never returns.
#[expect(
    clippy::too_many_lines,
    reason = "the spooler loop reads best in one piece"
)]
pub fn run(py: Python<'_>, spec: &AuxSpec, config: &Config) -> ! {
    let AuxKind::Spooler(index, process) = spec.kind else {
        exit(py, 1)
    };
    let sc = &config.offload.spooler;
    let target = names()
        .get(index)
        .cloned()
        .unwrap_or_else(|| sc.spoolers[index].value.clone());
    let slot = slots().get(index * processes(config) + process);
    let pid = crate::sys::proc::getpid();
    // SIGTERM: finish the running task, then exit; SIGINT: at once (the task is run again).
    let Ok((stop_r, stop_w)) = crate::sys::fd::pipe() else {
        crate::log!("[spooler {target}] cannot make a pipe: exiting");
        exit(py, 1)
    };
    {
        use std::os::fd::AsRawFd;
        let _ = crate::sys::fd::set_nonblocking(stop_w.as_raw_fd());
        crate::sys::proc::worker_signals(stop_w.as_raw_fd());
    }
    let stop_fd = std::os::fd::AsRawFd::as_raw_fd(&stop_r);
    if let Some(s) = slot {
        s.pid
            .store(u64::try_from(pid).unwrap_or(0), Ordering::Relaxed);
        s.tasks.store(0, Ordering::Relaxed);
        s.running.store(0, Ordering::Relaxed);
        s.started.fetch_add(1, Ordering::Relaxed);
    }
    super::after_fork(py);
    if config.lazy_apps {
        // The app's spooler functions (`uwsgi.spooler`, `@spool`) are registered when it is
        // imported: with --lazy-apps the master never imports it, so the spooler does.
        if let Err(e) = crate::wsgi::load::load(py, config) {
            e.print(py);
            crate::log!(
                "[spooler {target}] the app did not load: only --spooler-import code runs tasks"
            );
        }
    }
    import_modules(py, config);
    let mut backend = match open_backend(&target, sc.frequency) {
        Ok(b) => b,
        Err(e) => {
            crate::log!("[spooler {target}] cannot open the queue: {e}");
            exit(py, 1)
        }
    };
    if !is_redis(&target) {
        if let Err(e) = std::env::set_current_dir(&target) {
            crate::log!("[spooler {target}] chdir(): {e}");
        }
    }
    if let Some(dir) = &sc.chdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            crate::log!("[spooler {target}] chdir({}): {e}", dir.display());
        }
    }
    let watchdog = (!sc.harakiri.is_zero())
        .then(|| Watchdog::start(sc.harakiri, target.clone(), target.clone(), sc.max_retries));
    let mut tasks: u64 = 0;
    let mut last_touch_check = Instant::now();
    loop {
        if stop_requested(stop_fd) {
            exit(py, 0);
        }
        if !sc.touch_reload.is_empty() && last_touch_check.elapsed() >= Duration::from_secs(1) {
            last_touch_check = Instant::now();
            let now = touch_state(&sc.touch_reload);
            if let Some(s) = slot {
                if s.touched.swap(now, Ordering::Relaxed) != now {
                    crate::log!("*** touch-spoolers-reload: restarting the spooler {target} (pid: {pid}) ***");
                    exit(py, 0);
                }
            }
        }
        let _ = backend.heartbeat();
        let lease = match py.detach(|| backend.lease(Duration::from_millis(500))) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                crate::log!("[spooler {target} pid: {pid}] cannot take a task: {e}");
                py.detach(|| std::thread::sleep(Duration::from_secs(1)));
                continue;
            }
        };
        if let Some(why) = lease.task.get(b"headrace_bad_packet") {
            let why = format!("not a spool packet: {}", String::from_utf8_lossy(why));
            crate::log!(
                "[spooler {target} pid: {pid}] {}: {why}: moved to the dead letters",
                lease.name
            );
            let _ = backend.bury(lease, &why);
            continue;
        }
        if let Some(s) = slot {
            s.running.store(1, Ordering::Relaxed);
        }
        if !sc.quiet {
            crate::log!(
                "[spooler {target} pid: {pid}] managing request {} ...",
                lease.name.rsplit('/').next().unwrap_or(&lease.name)
            );
        }
        let started = Instant::now();
        if let Some(w) = &watchdog {
            w.arm(&lease);
        }
        let outcome = call_task(py, &lease);
        if let Some(w) = &watchdog {
            w.disarm();
        }
        if let Some(s) = slot {
            s.running.store(0, Ordering::Relaxed);
        }
        let forever = lease.task.get(b"ud_spool_ret") == Some(b"-1");
        let name = lease
            .name
            .rsplit('/')
            .next()
            .unwrap_or(&lease.name)
            .to_owned();
        let settled = match outcome {
            Outcome::Code(SPOOL_OK) => {
                if !sc.quiet {
                    crate::log!(
                        "[spooler {target} pid: {pid}] done with task {name} after {} seconds",
                        started.elapsed().as_secs()
                    );
                }
                backend.ack(lease)
            }
            Outcome::Code(SPOOL_IGNORE) => {
                if !sc.quiet {
                    crate::log!(
                        "[spooler {target} pid: {pid}] task {name} ignored (SPOOL_IGNORE): removed"
                    );
                }
                backend.ack(lease)
            }
            Outcome::Code(SPOOL_RETRY) if forever => {
                let freq = slot
                    .map(|s| s.frequency.load(Ordering::Relaxed))
                    .filter(|&f| f > 0)
                    .unwrap_or(sc.frequency.as_secs());
                backend.release(lease, disk::unix_now() + freq.max(1))
            }
            Outcome::Code(code) => settle_failure(
                &mut *backend,
                lease,
                &format!("the spooler function returned {code} (SPOOL_RETRY)"),
                sc.max_retries,
                &target,
            ),
            Outcome::Missing => {
                crate::log!("unable to find the spooler function, have you loaded it into the spooler process ?");
                settle_failure(
                    &mut *backend,
                    lease,
                    "no spooler function in the spooler process (uwsgi.spooler is not set)",
                    sc.max_retries,
                    &target,
                )
            }
            Outcome::Failed(tb) => {
                settle_failure(&mut *backend, lease, &tb, sc.max_retries, &target)
            }
        };
        if let Err(e) = settled {
            crate::log!("[spooler {target} pid: {pid}] cannot settle task {name}: {e}");
        }
        tasks += 1;
        if let Some(s) = slot {
            s.tasks.store(tasks, Ordering::Relaxed);
        }
        if sc.max_tasks > 0 && tasks >= sc.max_tasks {
            crate::log!(
                "[spooler {target} pid: {pid}] maximum number of tasks reached ({}) recycling ...",
                sc.max_tasks
            );
            exit(py, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(
            (0..12).map(backoff).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
    }

    #[test]
    fn redis_urls_are_told_from_directories() {
        assert!(is_redis("redis://127.0.0.1:6379/0?queue=q"));
        assert!(!is_redis("/var/spool/redis://x"));
    }
}
