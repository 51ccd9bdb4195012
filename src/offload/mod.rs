//! What runs beside the workers: the `uwsgi` Python module and `uwsgidecorators`, spoolers,
//! mules, signals, timers and cron, attached daemons, caches, shared areas and locks
//! (uWSGI's names and behaviour; see DESIGN.md, "Offloading").
//!
//! The master supervises these processes as *auxiliary* processes ([`AuxSpec`]): forked like
//! workers, respawned when they die, stopped with the master, and (spoolers and mules)
//! restarted on reload. Every process of the server learns who it is from [`role`], and can
//! reach the master through the [`control`] channel (`uwsgi.signal`, `uwsgi.reload`, ...).

pub mod cache;
pub mod control;
pub mod core;
pub mod daemon;
pub mod mules;
pub mod signals;
pub mod spooler;

use crate::config::offload::OffloadConfig;
use crate::config::{Config, ConfigError};
use crate::scoreboard::Scoreboard;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Which process this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The master (also before any fork).
    Master,
    /// Worker N (1-based).
    Worker(usize),
    /// The `--http` router.
    Router,
    /// Mule N (1-based, uWSGI's `mule_id`).
    Mule(usize),
    /// A spooler process: the index of its `--spooler` (0-based) and its process number
    /// among `--spooler-processes` (0-based).
    Spooler(usize, usize),
    /// An attached daemon (before it execs).
    Daemon,
}

static ROLE_KIND: AtomicU8 = AtomicU8::new(0);
static ROLE_A: AtomicUsize = AtomicUsize::new(0);
static ROLE_B: AtomicUsize = AtomicUsize::new(0);
static MASTER_PID: AtomicI32 = AtomicI32::new(0);

/// This process's role.
#[must_use]
pub fn role() -> Role {
    let a = ROLE_A.load(Ordering::Relaxed);
    match ROLE_KIND.load(Ordering::Relaxed) {
        1 => Role::Worker(a),
        2 => Role::Router,
        3 => Role::Mule(a),
        4 => Role::Spooler(a, ROLE_B.load(Ordering::Relaxed)),
        5 => Role::Daemon,
        _ => Role::Master,
    }
}

/// Set this process's role; called first thing in a forked child.
pub fn set_role(role: Role) {
    let (kind, a, b) = match role {
        Role::Master => (0, 0, 0),
        Role::Worker(id) => (1, id, 0),
        Role::Router => (2, 0, 0),
        Role::Mule(id) => (3, id, 0),
        Role::Spooler(i, n) => (4, i, n),
        Role::Daemon => (5, 0, 0),
    };
    ROLE_A.store(a, Ordering::Relaxed);
    ROLE_B.store(b, Ordering::Relaxed);
    ROLE_KIND.store(kind, Ordering::Relaxed);
}

/// The master's pid (uWSGI's `masterpid`).
#[must_use]
pub fn master_pid() -> i32 {
    MASTER_PID.load(Ordering::Relaxed)
}

/// What every process of this server shares, set by the master before it loads the app and
/// inherited by every child.
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// Unix time the master started (uWSGI's `started_on`).
    pub started_on: u64,
}

static CONTEXT: OnceLock<Context> = OnceLock::new();
static SCOREBOARD: OnceLock<Arc<Scoreboard>> = OnceLock::new();

/// The server's shared context; `None` outside a headrace server process (unit tests).
#[must_use]
pub fn context() -> Option<&'static Context> {
    CONTEXT.get()
}

/// The scoreboard, once the master has made it (it is made after the app is loaded, so code
/// running at import time in the master sees `None`).
#[must_use]
pub fn scoreboard() -> Option<&'static Arc<Scoreboard>> {
    SCOREBOARD.get()
}

/// Called by the master once, before the app is loaded: record the context, open the control
/// channel, create the shared memory the `uwsgi` module needs, and install `uwsgi` and
/// `uwsgidecorators` in `sys.modules`.
pub fn init_master(py: Python<'_>, config: &Config) -> Result<(), String> {
    MASTER_PID.store(crate::sys::proc::getpid(), Ordering::Relaxed);
    let started_on = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = CONTEXT.set(Context {
        config: config.clone(),
        started_on,
    });
    control::open().map_err(|e| format!("cannot open the master's control channel: {e}"))?;
    core::init_master(py, config)?;
    cache::init_master(py, config)?;
    signals::init_master(py, config)?;
    mules::init_master(py, config)?;
    spooler::init_master(py, config)?;
    install_modules(py).map_err(|e| format!("cannot install the uwsgi module: {e}"))?;
    Ok(())
}

/// Called by the master when the scoreboard exists.
pub fn set_scoreboard(scoreboard: &Arc<Scoreboard>) {
    let _ = SCOREBOARD.set(scoreboard.clone());
}

/// Put `uwsgi` and `uwsgidecorators` in `sys.modules`: they exist only inside a headrace
/// server, as uWSGI's exist only inside uWSGI.
fn install_modules(py: Python<'_>) -> PyResult<()> {
    let modules = py.import("sys")?.getattr("modules")?;
    let uwsgi = py.import("headrace._uwsgi")?;
    modules.set_item("uwsgi", &uwsgi)?;
    let decorators = py.import("headrace._uwsgi.decorators")?;
    modules.set_item("uwsgidecorators", decorators)?;
    Ok(())
}

/// Called in every forked child that runs Python (worker, mule, spooler), after its role is
/// set and before it does its work: uWSGI's post-fork hooks (`uwsgi.post_fork_hook`,
/// `@postfork`).
pub fn after_fork(py: Python<'_>) {
    core::after_fork(py);
    cache::after_fork(py);
    signals::after_fork(py);
    mules::after_fork(py);
    spooler::after_fork(py);
    let run = || -> PyResult<()> {
        py.import("headrace._uwsgi")?.call_method0("_after_fork")?;
        Ok(())
    };
    if let Err(e) = run() {
        e.print(py);
    }
}

/// Check the values only the offload parts understand (`--cache2`, `--farm`, `--cron`, ...).
pub fn validate(o: &OffloadConfig) -> Result<(), ConfigError> {
    for f in &o.mules.farms {
        parse_farm(&f.value, o.mules.mules.len()).map_err(|why| f.invalid("farm", &why))?;
    }
    core::validate(o)?;
    cache::validate(o)?;
    signals::validate(o)?;
    mules::validate(o)?;
    spooler::validate(o)?;
    daemon::validate(o)?;
    Ok(())
}

/// `--farm NAME:1,2,3`: a farm's name and its mule ids (1-based, each at most `mules`).
pub fn parse_farm(s: &str, mules: usize) -> Result<(String, Vec<usize>), String> {
    let (name, ids) = s
        .trim()
        .split_once(':')
        .ok_or("expected NAME:MULE_ID[,MULE_ID...]")?;
    if name.is_empty() {
        return Err("the farm has no name".to_owned());
    }
    let mut out = Vec::new();
    for id in ids.split(',').map(str::trim) {
        match id.parse::<usize>() {
            Ok(n) if (1..=mules).contains(&n) => {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            _ => return Err(format!("{id:?} is not a mule id (1 to {mules})")),
        }
    }
    Ok((name.to_owned(), out))
}

/// The farms of this configuration (validated when it was read).
#[must_use]
pub fn farms(config: &Config) -> Vec<(String, Vec<usize>)> {
    let m = &config.offload.mules;
    m.farms
        .iter()
        .filter_map(|f| parse_farm(&f.value, m.mules.len()).ok())
        .collect()
}

/// What an auxiliary process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuxKind {
    /// Spooler process: the index of its `--spooler` and its number among `--spooler-processes`.
    Spooler(usize, usize),
    /// Mule N (1-based).
    Mule(usize),
}

/// One auxiliary process the master keeps running.
#[derive(Debug, Clone)]
pub struct AuxSpec {
    /// What it is.
    pub kind: AuxKind,
    /// How logs name it ("spooler /var/spool/x", "mule 1").
    pub name: String,
    /// Restarted when the workers are reloaded (spoolers and mules, as in uWSGI).
    pub reload_with_workers: bool,
    /// How long it may take to stop after SIGTERM before SIGKILL.
    pub stop_mercy: Duration,
}

/// Every auxiliary process this configuration asks for, in the order they are started.
#[must_use]
pub fn aux_specs(config: &Config) -> Vec<AuxSpec> {
    let mut specs = spooler::aux_specs(config);
    specs.extend(mules::aux_specs(config));
    specs
}

/// The body of an auxiliary process, in the child after fork (its role already set). Never
/// returns.
pub fn run_aux(py: Python<'_>, spec: &AuxSpec, config: &Config) -> ! {
    match spec.kind {
        AuxKind::Spooler(..) => spooler::run(py, spec, config),
        AuxKind::Mule(_) => mules::run(py, spec, config),
    }
}

/// The native functions the `uwsgi` module is built on, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(native_role, m)?)?;
    m.add_function(wrap_pyfunction!(native_control, m)?)?;
    core::register(m)?;
    cache::register(m)?;
    signals::register(m)?;
    mules::register(m)?;
    spooler::register(m)?;
    Ok(())
}

/// `_headrace.role()`: `("master", 0, 0)`, `("worker", id, 0)`, `("mule", id, 0)`,
/// `("spooler", index, process)`, `("router", 0, 0)`, `("daemon", 0, 0)`, or `None`
/// outside a server.
#[pyfunction(name = "role")]
fn native_role() -> Option<(&'static str, usize, usize)> {
    context()?;
    Some(match role() {
        Role::Master => ("master", 0, 0),
        Role::Worker(id) => ("worker", id, 0),
        Role::Router => ("router", 0, 0),
        Role::Mule(id) => ("mule", id, 0),
        Role::Spooler(i, n) => ("spooler", i, n),
        Role::Daemon => ("daemon", 0, 0),
    })
}

/// `_headrace.control(message)`: send one message to the master (see [`control::Control`]).
#[pyfunction(name = "control")]
fn native_control(message: &str) -> PyResult<()> {
    let msg = control::Control::decode(message.as_bytes()).ok_or_else(|| {
        pyo3::exceptions::PyValueError::new_err(format!("not a control message: {message:?}"))
    })?;
    control::send(&msg).map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn farms_name_existing_mules() {
        assert_eq!(
            parse_farm("mine:1, 3,3", 3),
            Ok(("mine".to_owned(), vec![1, 3]))
        );
        assert!(parse_farm("mine:4", 3).is_err());
        assert!(parse_farm("mine:0", 3).is_err());
        assert!(parse_farm("mine", 3).is_err());
        assert!(parse_farm(":1", 3).is_err());
        assert!(parse_farm("mine:x", 3).is_err());
    }
}
