//! The `uwsgi` module's core: identity, reload/stop, logging and logvars, `workers()`, `opt`,
//! per-request harakiri, `--import`/`--shared-import`, `atexit`, hooks.
//!
//! What the calls need from other processes lives in one small shared table made by the master
//! before the first fork ([`IdSlot`], one per worker id): each worker writes its own entry when
//! it starts and after each request, so `uwsgi.workers()` and `uwsgi.total_requests()` read
//! every worker's figures from any process, and they count across a worker's respawns as
//! uWSGI's do. What belongs to one request (its logvars, its user harakiri) is kept in the
//! serving thread ([`begin_request`], [`end_request`]), as uWSGI keeps it in the thread's
//! `wsgi_request`.

use super::{AuxSpec, Role};
use crate::config::offload::OffloadConfig;
use crate::config::{Config, ConfigError};
use crate::scoreboard::Outcome;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One worker id's entry in the shared table (atomics only: it is `Shareable`, see
/// `sys::uwsgi_core`). Written by the worker that holds the id, read by any process.
#[derive(Default)]
#[repr(C, align(64))]
pub struct IdSlot {
    /// The pid of the id's newest process (0: never started).
    pub pid: AtomicI32,
    /// Its scoreboard slot plus one (0: unknown).
    pub slot: AtomicU64,
    /// Unix seconds of its newest spawn (uWSGI's `last_spawn`).
    pub last_spawn: AtomicU64,
    /// Processes started for the id (uWSGI's `respawn_count` is this minus one).
    pub spawns: AtomicU64,
    /// Requests served by all of the id's processes (uWSGI's per-worker `requests`).
    pub requests: AtomicU64,
    /// Requests whose app call raised.
    pub exceptions: AtomicU64,
    /// Response bytes sent.
    pub tx: AtomicU64,
    /// Time spent in requests, µs.
    pub running_us: AtomicU64,
}

/// The shared table: index 0 is unused, ids are 1-based. A re-exec'd master makes a new one
/// (the counters restart with the new image, as uWSGI's do after a reload); the previous
/// image's workers keep writing to theirs.
static TABLE: OnceLock<crate::sys::shm::Region> = OnceLock::new();

fn table() -> &'static [IdSlot] {
    TABLE
        .get()
        .and_then(|r| r.slice::<IdSlot>(0, r.len() / std::mem::size_of::<IdSlot>()))
        .unwrap_or(&[])
}

/// Check the values only this part understands, when the configuration is read.
pub fn validate(_o: &OffloadConfig) -> Result<(), ConfigError> {
    Ok(())
}

/// In the master, before the app is loaded (and before any fork): the shared table, then
/// `--shared-import` (uWSGI imports those in the master, before the app, in every mode).
pub fn init_master(py: Python<'_>, config: &Config) -> Result<(), String> {
    let ids = config.processes + 1;
    let region =
        crate::sys::shm::Region::create("headrace-uwsgi-core", std::mem::size_of::<IdSlot>() * ids)
            .map_err(|e| format!("cannot create the uwsgi module's shared table: {e}"))?;
    let _ = TABLE.set(region);
    import_all(py, &config.offload.shared_imports, "--shared-import");
    Ok(())
}

/// `--import`: modules imported where the app is loaded (in the master, or in each worker
/// with `--lazy-apps`), before the app. A module that fails to import is logged with its
/// traceback and the others are still imported, as uWSGI does.
pub fn import_app_modules(py: Python<'_>, config: &Config) {
    import_all(py, &config.offload.imports, "--import");
}

fn import_all(py: Python<'_>, modules: &[String], option: &str) {
    for m in modules {
        let py_file = std::path::Path::new(m)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("py"));
        let r = if m.contains('/') || py_file {
            import_file(py, m)
        } else {
            py.import("importlib")
                .and_then(|il| il.call_method1("import_module", (m,)))
                .map(drop)
        };
        if let Err(e) = r {
            e.print(py);
            crate::log!("headrace: {option} {m}: cannot import it");
        }
    }
}

/// uWSGI's `uwsgi_pyimport_by_filename`: a file becomes a module named after its path.
fn import_file(py: Python<'_>, path: &str) -> PyResult<()> {
    let name: String = std::path::Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let util = py.import("importlib.util")?;
    let spec = util.call_method1("spec_from_file_location", (&name, path))?;
    if spec.is_none() {
        return Err(pyo3::exceptions::PyImportError::new_err(format!(
            "cannot import {path}: not a Python file"
        )));
    }
    let module = util.call_method1("module_from_spec", (&spec,))?;
    py.import("sys")?
        .getattr("modules")?
        .set_item(&name, &module)?;
    spec.getattr("loader")?
        .call_method1("exec_module", (&module,))?;
    Ok(())
}

/// Apps by mountpoint.
pub type Mounted = Vec<(String, Py<PyAny>)>;

/// uWSGI's `applications`: a dict `{mountpoint: app}` the app module sets on the `uwsgi`
/// module (or defines itself) instead of one callable; an app is a callable or a
/// `"module[:callable]"` string. `None` when neither is a dict.
pub fn applications(py: Python<'_>, module: &Bound<'_, PyAny>) -> PyResult<Option<Mounted>> {
    let from_uwsgi = py
        .import("sys")?
        .getattr("modules")?
        .get_item("uwsgi")
        .and_then(|u| u.getattr("applications"))
        .ok();
    let from_module = module.getattr("applications").ok();
    let Some(dict) = [from_uwsgi, from_module]
        .into_iter()
        .flatten()
        .find_map(|d| d.cast_into::<PyDict>().ok())
    else {
        return Ok(None);
    };
    let mut apps = Vec::new();
    for (point, app) in dict.iter() {
        let point: String = point.extract()?;
        let app = if let Ok(spec) = app.extract::<String>() {
            let (m, c) = spec.split_once(':').unwrap_or((&spec, "application"));
            py.import("importlib")?
                .call_method1("import_module", (m,))?
                .getattr(c)?
        } else {
            app
        };
        if !app.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "uwsgi.applications[{point:?}] is not callable"
            )));
        }
        apps.push((point.trim_end_matches('/').to_owned(), app.unbind()));
    }
    Ok(Some(apps))
}

/// In every forked child that runs Python, after its role is set: nothing yet (a worker
/// records itself earlier, in [`worker_started`], before its app is loaded).
pub fn after_fork(_py: Python<'_>) {}

/// A worker records itself in the shared table (its pid, slot and spawn), first thing after
/// fork.
pub fn worker_started(id: usize, slot: usize, pid: i32) {
    if let Some(e) = table().get(id) {
        e.pid.store(pid, Ordering::Relaxed);
        e.slot.store(slot as u64 + 1, Ordering::Relaxed);
        e.last_spawn.store(unix_secs(), Ordering::Relaxed);
        e.spawns.fetch_add(1, Ordering::Relaxed);
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A worker stopping gracefully calls `uwsgi.atexit` if the app set it (uWSGI does, before
/// the interpreter's own atexit functions). The master's exit runs it through Python's
/// `atexit` (see `_uwsgi/core.py`).
pub fn run_uwsgi_atexit(py: Python<'_>) {
    let r = py
        .import("headrace._uwsgi.core")
        .and_then(|m| m.call_method0("_run_atexit"));
    if let Err(e) = r {
        e.print(py);
    }
}

/// The auxiliary processes this part asks the master to run: none.
#[must_use]
pub fn aux_specs(_config: &Config) -> Vec<AuxSpec> {
    Vec::new()
}

/// One `uwsgi.set_logvar` pair: (key, value).
pub type Logvar = (Vec<u8>, Vec<u8>);

/// The request a serving thread is running, as the `uwsgi` calls see it. An event-loop (ASGI)
/// worker keeps one per request and makes it the thread's while that request's task runs a
/// step ([`enter`], [`leave`]).
pub struct Current {
    slot: usize,
    core: usize,
    fd: RawFd,
    /// `uwsgi.set_logvar` pairs, in the order set (a key set again is replaced).
    logvars: Vec<Logvar>,
    /// An event-loop worker's request: its id among the loop's requests. Its
    /// `uwsgi.set_user_harakiri` cancels its task, as `--harakiri` does, instead of killing a
    /// process that runs many other requests.
    task: Option<u64>,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

impl Current {
    /// A request of slot `slot`, serving thread `core`, on connection `fd`.
    #[must_use]
    pub const fn new(slot: usize, core: usize, fd: RawFd) -> Self {
        Self {
            slot,
            core,
            fd,
            logvars: Vec::new(),
            task: None,
        }
    }

    /// Request `id` of an event-loop worker in slot `slot`, on connection `fd`.
    #[must_use]
    pub const fn for_task(slot: usize, fd: RawFd, id: u64) -> Self {
        Self {
            slot,
            core: 0,
            fd,
            logvars: Vec::new(),
            task: Some(id),
        }
    }

    /// What its user harakiri is filed under.
    const fn key(&self) -> Key {
        match self.task {
            Some(id) => Key::Task(id),
            None => Key::Core(self.core),
        }
    }
}

/// An ASGI request's task takes a step: its `uwsgi` state (logvars, ...) becomes the thread's.
pub fn enter(cur: Option<Current>) {
    CURRENT.with(|c| *c.borrow_mut() = cur);
}

/// The step is over: the request's `uwsgi` state, back from the thread.
#[must_use]
pub fn leave() -> Option<Current> {
    CURRENT.with(|c| c.borrow_mut().take())
}

/// A serving thread starts a request (before the app is called).
pub fn begin_request(slot: usize, core: usize, fd: RawFd) {
    CURRENT.with(|c| {
        *c.borrow_mut() = Some(Current::new(slot, core, fd));
    });
}

/// The request is over: count it for its worker id, drop its user harakiri, and hand back its
/// logvars for the log line.
#[must_use]
pub fn end_request(o: &Outcome) -> Vec<Logvar> {
    count_request(o);
    let Some(cur) = CURRENT.with(|c| c.borrow_mut().take()) else {
        return Vec::new();
    };
    clear_harakiri(cur.key());
    if let Some(id) = cur.task {
        TASK_DEADLINES.with(|d| d.borrow_mut().retain(|(t, ..)| *t != id));
    }
    cur.logvars
}

/// Count a finished request for this worker's id (also the static files a worker serves
/// without calling the app).
pub fn count_request(o: &Outcome) {
    if let Role::Worker(id) = super::role() {
        if let Some(e) = table().get(id) {
            e.requests.fetch_add(1, Ordering::Relaxed);
            if o.exception {
                e.exceptions.fetch_add(1, Ordering::Relaxed);
            }
            e.tx.fetch_add(o.tx, Ordering::Relaxed);
            e.running_us.fetch_add(o.elapsed_us, Ordering::Relaxed);
        }
    }
}

// ---- per-request harakiri -------------------------------------------------------------------

/// Whose `uwsgi.set_user_harakiri` a deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// A serving thread of a threaded worker.
    Core(usize),
    /// A request of an event-loop worker (its task is cancelled at the deadline; this one,
    /// later by [`crate::asgi::HARAKIRI_CANCEL_GRACE`], kills the process if it did not end).
    Task(u64),
    /// A process that serves no requests: a mule, a spooler.
    Process,
}

/// Deadlines set with `uwsgi.set_user_harakiri`, after which the process is killed.
struct Deadlines {
    set: Mutex<Vec<(Key, Instant, u64)>>,
    wake: Condvar,
}

thread_local! {
    /// An event-loop worker's requests with a user harakiri: (id, when its task is cancelled,
    /// the seconds asked). Read by the loop's harakiri tick ([`overdue_tasks`]).
    static TASK_DEADLINES: RefCell<Vec<(u64, Instant, u64)>> = const { RefCell::new(Vec::new()) };
}

/// The event-loop requests whose user harakiri is due, `(id, seconds asked)`, forgotten here:
/// the loop cancels their tasks.
#[must_use]
pub fn overdue_tasks() -> Vec<(u64, u64)> {
    let now = Instant::now();
    TASK_DEADLINES.with(|d| {
        let mut d = d.borrow_mut();
        let due = d
            .iter()
            .filter(|(_, at, _)| *at <= now)
            .map(|&(id, _, secs)| (id, secs))
            .collect();
        d.retain(|(_, at, _)| *at > now);
        due
    })
}

static DEADLINES: Deadlines = Deadlines {
    set: Mutex::new(Vec::new()),
    wake: Condvar::new(),
};
static WATCHDOG: OnceLock<()> = OnceLock::new();
/// Time given to faulthandler to write the stuck process's tracebacks before SIGKILL.
const TRACEBACK_GRACE: Duration = Duration::from_millis(300);

fn clear_harakiri(key: Key) {
    if let Ok(mut set) = DEADLINES.set.lock() {
        let before = set.len();
        set.retain(|(k, ..)| *k != key);
        if set.len() != before {
            DEADLINES.wake.notify_all();
        }
    }
}

/// `uwsgi.set_user_harakiri(secs)`: kill this process if the running request (or, outside a
/// request, the process) is still at it after `secs` seconds; 0 disarms it. The watchdog is a
/// thread of this process, so it needs neither the GIL nor the master. In an event-loop (ASGI)
/// worker the request's task is cancelled at `secs` (by the loop's harakiri tick), and the
/// process killed only if the task has not ended `HARAKIRI_CANCEL_GRACE` later.
fn set_user_harakiri(secs: u64) -> Result<(), String> {
    if super::role() == Role::Master {
        // Code run while the master loads the app serves no request, and a watchdog thread
        // there would make forking the workers unsafe: nothing to guard, as in uWSGI.
        return Ok(());
    }
    let (key, task) = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .map_or((Key::Process, None), |c| (c.key(), c.task))
    });
    clear_harakiri(key);
    if let Some(id) = task {
        TASK_DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            d.retain(|(t, ..)| *t != id);
            if secs > 0 {
                d.push((id, Instant::now() + Duration::from_secs(secs), secs));
            }
        });
    }
    if secs == 0 {
        return Ok(());
    }
    let kill_after = match task {
        Some(_) => Duration::from_secs(secs) + crate::asgi::HARAKIRI_CANCEL_GRACE,
        None => Duration::from_secs(secs),
    };
    if WATCHDOG.get().is_none() {
        std::thread::Builder::new()
            .name("user-harakiri".into())
            .spawn(watchdog)
            .map_err(|e| format!("cannot start the harakiri watchdog: {e}"))?;
        let _ = WATCHDOG.set(());
    }
    let mut set = DEADLINES.set.lock().map_err(|_| "poisoned".to_owned())?;
    set.push((key, Instant::now() + kill_after, secs));
    DEADLINES.wake.notify_all();
    Ok(())
}

fn watchdog() {
    let Ok(mut set) = DEADLINES.set.lock() else {
        return;
    };
    loop {
        let now = Instant::now();
        if let Some(&(key, _, secs)) = set.iter().find(|(_, at, _)| *at <= now) {
            drop(set);
            harakiri_self(key, secs);
            return;
        }
        let next = set.iter().map(|(_, at, _)| *at).min();
        set = match next {
            Some(at) => match DEADLINES.wake.wait_timeout(set, at - now) {
                Ok((s, _)) => s,
                Err(_) => return,
            },
            None => match DEADLINES.wake.wait(set) {
                Ok(s) => s,
                Err(_) => return,
            },
        };
    }
}

/// The deadline passed: say so in the master's words, dump the tracebacks (workers have
/// faulthandler on SIGUSR2), and die; the master respawns the process.
fn harakiri_self(key: Key, secs: u64) {
    let pid = crate::sys::proc::getpid();
    let what = match super::role() {
        Role::Worker(id) => format!("worker {id}"),
        Role::Mule(id) => format!("mule {id}"),
        Role::Spooler(..) => "spooler".to_owned(),
        _ => "process".to_owned(),
    };
    let request = match key {
        Key::Core(core) => request_line(core),
        Key::Task(_) => " on a request whose task did not end when cancelled".to_owned(),
        Key::Process => String::new(),
    };
    crate::log!(
        "HARAKIRI: {what} (pid {pid}) stuck {secs}s{request} (uwsgi.set_user_harakiri), killing"
    );
    if matches!(super::role(), Role::Worker(_)) {
        crate::sys::proc::kill(pid, libc::SIGUSR2);
        std::thread::sleep(TRACEBACK_GRACE);
    }
    crate::sys::proc::kill(pid, libc::SIGKILL);
}

/// " on GET /x" for the request serving thread `core` of this worker runs, if any.
fn request_line(core: usize) -> String {
    let Role::Worker(id) = super::role() else {
        return String::new();
    };
    let (Some(sb), Some(e)) = (super::scoreboard(), table().get(id)) else {
        return String::new();
    };
    let slot = e.slot.load(Ordering::Relaxed);
    if slot == 0 {
        return String::new();
    }
    let slot = usize::try_from(slot - 1).unwrap_or(usize::MAX);
    if slot >= sb.capacity() || core >= sb.threads() {
        return String::new();
    }
    sb.core(slot, core)
        .current()
        .map(|(_, r)| format!(" on {r}"))
        .unwrap_or_default()
}

// ---- the native functions -------------------------------------------------------------------

/// This part's native functions, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(core_opt, m)?)?;
    m.add_function(wrap_pyfunction!(core_info, m)?)?;
    m.add_function(wrap_pyfunction!(core_master_pid, m)?)?;
    m.add_function(wrap_pyfunction!(core_is_a_reload, m)?)?;
    m.add_function(wrap_pyfunction!(core_workers, m)?)?;
    m.add_function(wrap_pyfunction!(core_total_requests, m)?)?;
    m.add_function(wrap_pyfunction!(core_request_id, m)?)?;
    m.add_function(wrap_pyfunction!(core_connection_fd, m)?)?;
    m.add_function(wrap_pyfunction!(core_set_logvar, m)?)?;
    m.add_function(wrap_pyfunction!(core_get_logvar, m)?)?;
    m.add_function(wrap_pyfunction!(core_set_user_harakiri, m)?)?;
    m.add_function(wrap_pyfunction!(core_log, m)?)?;
    m.add_function(wrap_pyfunction!(core_setprocname, m)?)?;
    m.add_function(wrap_pyfunction!(core_mem, m)?)?;
    m.add_function(wrap_pyfunction!(core_ready, m)?)?;
    Ok(())
}

/// The options as given, in order: (key, value), the value `None` for a flag given on the
/// command line without one (uWSGI's `True`).
#[pyfunction]
fn core_opt() -> Vec<(String, Option<String>)> {
    super::context()
        .map(|c| c.config.offload.exported.clone())
        .unwrap_or_default()
}

/// `(numproc, cores, buffer_size, started_on)`.
#[pyfunction]
fn core_info() -> (usize, usize, usize, u64) {
    super::context().map_or((0, 0, 0, 0), |c| {
        (
            c.config.processes,
            c.config.threads,
            c.config.buffer_size,
            c.started_on,
        )
    })
}

#[pyfunction]
fn core_master_pid() -> i32 {
    super::master_pid()
}

/// This master image was started by a reload (a re-exec), as uWSGI's `is_a_reload`. The
/// master reads it from its hand-over variables, which the app does not see.
static IS_A_RELOAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Record, once at the master's start, whether this image came from a reload.
pub fn set_is_a_reload(reload: bool) {
    IS_A_RELOAD.store(reload, std::sync::atomic::Ordering::Relaxed);
}

#[pyfunction]
fn core_is_a_reload() -> bool {
    IS_A_RELOAD.load(std::sync::atomic::Ordering::Relaxed)
}

/// Text as bytes: `str` (UTF-8) or any bytes-like object, as uWSGI's `s#` takes.
fn bytes_of(v: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    v.extract::<Vec<u8>>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be str or bytes")))
}

/// `uwsgi.workers()`: a tuple with one dict per worker id, uWSGI's keys and types.
#[pyfunction]
fn core_workers(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    let sb = super::scoreboard();
    let n = super::context().map_or(0, |c| c.config.processes);
    // Every worker serves every app: the main one (mountpoint '') and the `--mount`s.
    let apps: Vec<&[u8]> = super::context().map_or_else(Vec::new, |c| {
        c.config
            .app
            .iter()
            .map(|_| &b""[..])
            .chain(c.config.mounts.iter().map(|(p, _)| p.as_bytes()))
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for (id, e) in table().iter().enumerate().skip(1).take(n) {
        let pid = e.pid.load(Ordering::Relaxed);
        let slot = usize::try_from(e.slot.load(Ordering::Relaxed)).unwrap_or(0);
        let live = sb.and_then(|sb| slot.checked_sub(1).and_then(|s| sb.get(s)));
        let live = live.filter(|s| s.pid.load(Ordering::Relaxed) == pid && pid != 0);
        let (delta, avg_rt, busy) = live.map_or((0, 0, false), |s| {
            (
                s.requests.load(Ordering::Relaxed),
                s.avg_rt_us.load(Ordering::Relaxed),
                s.busy.load(Ordering::Relaxed) > 0,
            )
        });
        let (rss, vsz) = if live.is_some() {
            crate::sys::proc::memory(&format!("/proc/{pid}/statm"))
        } else {
            (0, 0)
        };
        let requests = e.requests.load(Ordering::Relaxed);
        let d = PyDict::new(py);
        d.set_item("id", id)?;
        d.set_item("pid", pid)?;
        d.set_item("requests", requests)?;
        d.set_item("delta_requests", delta)?;
        d.set_item("signals", 0)?;
        d.set_item("exceptions", e.exceptions.load(Ordering::Relaxed))?;
        let status: &[u8] = if busy { b"busy" } else { b"idle" };
        d.set_item("status", PyBytes::new(py, status))?;
        d.set_item("rss", rss)?;
        d.set_item("vsz", vsz)?;
        d.set_item("running_time", e.running_us.load(Ordering::Relaxed))?;
        d.set_item("last_spawn", e.last_spawn.load(Ordering::Relaxed))?;
        d.set_item(
            "respawn_count",
            e.spawns.load(Ordering::Relaxed).saturating_sub(1),
        )?;
        d.set_item("tx", e.tx.load(Ordering::Relaxed))?;
        d.set_item("avg_rt", avg_rt)?;
        // headrace counts requests per worker, not per app: the first app gets them.
        let mut app_dicts = Vec::new();
        for (j, mountpoint) in apps.iter().enumerate() {
            let a = PyDict::new(py);
            a.set_item("id", j)?;
            a.set_item("modifier1", 0)?;
            a.set_item("mountpoint", PyBytes::new(py, mountpoint))?;
            a.set_item("startup_time", 0)?;
            a.set_item("interpreter", 0)?;
            a.set_item("callable", 0)?;
            a.set_item("requests", if j == 0 { requests } else { 0 })?;
            a.set_item("exceptions", 0)?;
            a.set_item("chdir", PyBytes::new(py, b""))?;
            app_dicts.push(a);
        }
        d.set_item("apps", PyTuple::new(py, app_dicts)?)?;
        out.push(d);
    }
    PyTuple::new(py, out)
}

/// Requests served by every worker (uWSGI's `total_requests`).
#[pyfunction]
fn core_total_requests() -> u64 {
    table()
        .iter()
        .map(|e| e.requests.load(Ordering::Relaxed))
        .sum()
}

/// uWSGI's `request_id`: the requests this serving thread finished before the running one.
#[pyfunction]
fn core_request_id() -> u64 {
    let Some((slot, core)) = CURRENT.with(|c| c.borrow().as_ref().map(|c| (c.slot, c.core))) else {
        return 0;
    };
    super::scoreboard().map_or(0, |sb| sb.core(slot, core).requests.load(Ordering::Relaxed))
}

#[pyfunction]
fn core_connection_fd() -> PyResult<RawFd> {
    CURRENT
        .with(|c| c.borrow().as_ref().map(|c| c.fd))
        .ok_or_else(|| PyValueError::new_err("connection_fd() outside a request"))
}

/// `uwsgi.set_logvar(key, value)`: `%(key)` in `--log-format` for this request.
#[pyfunction]
fn core_set_logvar(key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let key = bytes_of(key, "set_logvar() key")?;
    let value = bytes_of(value, "set_logvar() value")?;
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(cur) = c.as_mut() else {
            return Err(PyValueError::new_err("set_logvar() outside a request"));
        };
        if let Some(v) = cur.logvars.iter_mut().find(|(k, _)| *k == key) {
            v.1 = value;
        } else {
            cur.logvars.push((key, value));
        }
        Ok(())
    })
}

#[pyfunction]
fn core_get_logvar<'py>(
    py: Python<'py>,
    key: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let key = bytes_of(key, "get_logvar() key")?;
    Ok(CURRENT.with(|c| {
        c.borrow().as_ref().and_then(|cur| {
            cur.logvars
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| PyBytes::new(py, v))
        })
    }))
}

#[pyfunction]
fn core_set_user_harakiri(secs: i64) -> PyResult<()> {
    set_user_harakiri(u64::try_from(secs).unwrap_or(0)).map_err(PyValueError::new_err)
}

/// `uwsgi.log(msg)`: one line in the server's log (with `--log-date` and the encoders).
#[pyfunction]
fn core_log(msg: &Bound<'_, PyAny>) -> PyResult<()> {
    let bytes = bytes_of(msg, "log() message")?;
    crate::log!("{}", String::from_utf8_lossy(&bytes));
    Ok(())
}

#[pyfunction]
fn core_setprocname(name: &str) {
    crate::sys::proc::set_title(name);
}

/// `(rss, vsz)` of this process, bytes.
#[pyfunction]
fn core_mem() -> (u64, u64) {
    crate::sys::proc::memory("/proc/self/statm")
}

/// Whether the workers have been started (uWSGI's `ready()` is true once the master serves).
#[pyfunction]
fn core_ready() -> bool {
    super::scoreboard().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(tx: u64) -> Outcome {
        Outcome {
            status: 200,
            tx,
            elapsed_us: 10,
            exception: false,
            write_error: false,
            read_error: false,
        }
    }

    #[test]
    fn logvars_belong_to_the_request() {
        begin_request(0, 0, 3);
        CURRENT.with(|c| {
            c.borrow_mut()
                .as_mut()
                .unwrap()
                .logvars
                .push((b"a".to_vec(), b"1".to_vec()));
        });
        assert_eq!(
            end_request(&outcome(1)),
            vec![(b"a".to_vec(), b"1".to_vec())]
        );
        assert_eq!(end_request(&outcome(1)), Vec::<(Vec<u8>, Vec<u8>)>::new());
    }

    #[test]
    fn opt_is_every_option_as_given() {
        let argv: Vec<String> = [
            "headrace",
            "--http-socket",
            "127.0.0.1:0",
            "--wsgi-file",
            "a.py",
            "--master",
            "-p",
            "2",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--lazy-apps=false",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let crate::config::Request::Serve(c) = Config::load(&argv, &[]).unwrap() else {
            panic!("not a serve request")
        };
        let s = |v: &str| Some(v.to_owned());
        let want: Vec<(String, Option<String>)> = vec![
            ("http-socket".into(), s("127.0.0.1:0")),
            ("wsgi-file".into(), s("a.py")),
            ("master".into(), None),
            ("processes".into(), s("2")),
            ("env".into(), s("A=1")),
            ("env".into(), s("B=2")),
            ("lazy-apps".into(), s("false")),
        ];
        assert_eq!(c.offload.exported, want);
    }

    #[test]
    fn harakiri_deadlines_are_per_thread_and_per_task() {
        let later = || Instant::now() + Duration::from_secs(60);
        for key in [Key::Core(7), Key::Core(8), Key::Task(7)] {
            clear_harakiri(key);
            DEADLINES.set.lock().unwrap().push((key, later(), 60));
        }
        clear_harakiri(Key::Core(7));
        let left: Vec<Key> = DEADLINES.set.lock().unwrap().iter().map(|d| d.0).collect();
        assert!(
            left.contains(&Key::Core(8)) && left.contains(&Key::Task(7)),
            "{left:?}"
        );
        assert!(!left.contains(&Key::Core(7)));
        clear_harakiri(Key::Core(8));
        clear_harakiri(Key::Task(7));
    }

    #[test]
    fn a_tasks_user_harakiri_is_its_own() {
        // Two requests of one event loop: each has its deadline; the end of one leaves the
        // other's; the loop's tick gets the due one once.
        TASK_DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            d.clear();
            d.push((1, Instant::now(), 3));
            d.push((2, Instant::now() + Duration::from_secs(60), 60));
        });
        assert_eq!(overdue_tasks(), vec![(1, 3)]);
        assert_eq!(overdue_tasks(), vec![]);
        enter(Some(Current::for_task(0, -1, 2)));
        let _ = end_request(&outcome(0));
        assert!(TASK_DEADLINES.with(|d| d.borrow().is_empty()));
    }
}
