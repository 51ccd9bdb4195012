//! uWSGI signals (`uwsgi.register_signal`/`uwsgi.signal`), their delivery to workers,
//! mules and spoolers, and the timers, cron entries and file monitors that raise them.
//!
//! As in uWSGI: a signal is a number 0-255; the signal table (shared memory, [`table`]) says
//! which target it goes to; any process raises it by telling the master (the control channel),
//! and the master writes the number to each target process's signal channel (a datagram
//! socket pair per process, plus one shared by each pool: any worker, any mule, a farm, any
//! spooler). Each Python process runs a handler thread that reads its channels and calls the
//! handler with the GIL (uWSGI runs it in the worker's loop between requests; a thread also
//! serves a worker whose threads are all busy). The master runs the timers, cron entries and
//! file monitors (`crate::master::timers`); sources added after fork reach it as control
//! messages ([`source::Source`]).

pub mod cron;
pub mod route;
pub mod source;
pub mod table;

use super::control::{self, Control};
use super::{AuxKind, AuxSpec, Role};
use crate::config::offload::OffloadConfig;
use crate::config::{Config, ConfigError};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use route::{Counts, Dest};
use source::{Source, MAX_PER_KIND};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};

/// Check `--timer`, `--rbtimer`, `--cron`, `--unique-cron`, `--cron2` and `--touch-signal`.
pub fn validate(o: &OffloadConfig) -> Result<(), ConfigError> {
    let s = &o.signals;
    for g in &s.timers {
        source::parse_signal_secs(&g.value).map_err(|why| g.invalid("timer", &why))?;
    }
    for g in &s.rbtimers {
        source::parse_signal_secs(&g.value).map_err(|why| g.invalid("rbtimer", &why))?;
    }
    for g in &s.crons {
        cron::parse_cron(&g.value, false).map_err(|why| g.invalid("cron", &why))?;
    }
    for g in &s.unique_crons {
        cron::parse_cron(&g.value, true).map_err(|why| g.invalid("unique-cron", &why))?;
    }
    for g in &s.crons2 {
        cron::parse_cron2(&g.value).map_err(|why| g.invalid("cron2", &why))?;
    }
    for g in &s.touch_signals {
        source::parse_touch_signal(&g.value).map_err(|why| g.invalid("touch-signal", &why))?;
    }
    Ok(())
}

/// The command crons of this configuration, in order: `--cron`, `--unique-cron`, `--cron2`
/// (validated when it was read).
#[must_use]
pub fn command_crons(config: &Config) -> Vec<cron::CommandCron> {
    let s = &config.offload.signals;
    let plain = s
        .crons
        .iter()
        .filter_map(|g| cron::parse_cron(&g.value, false).ok());
    let unique = s
        .unique_crons
        .iter()
        .filter_map(|g| cron::parse_cron(&g.value, true).ok());
    let two = s
        .crons2
        .iter()
        .filter_map(|g| cron::parse_cron2(&g.value).ok());
    plain.chain(unique).chain(two).collect()
}

/// The `--timer` and `--rbtimer` sources of this configuration.
#[must_use]
pub fn option_sources(config: &Config) -> Vec<Source> {
    let s = &config.offload.signals;
    let timers = s.timers.iter().filter_map(|g| {
        let (signal, secs) = source::parse_signal_secs(&g.value).ok()?;
        Some(Source::Timer {
            signal,
            period_ms: secs * 1000,
        })
    });
    let rb = s.rbtimers.iter().filter_map(|g| {
        let (signal, secs) = source::parse_signal_secs(&g.value).ok()?;
        Some(Source::RbTimer {
            signal,
            secs,
            iterations: 0,
        })
    });
    timers.chain(rb).collect()
}

/// One signal channel: the master writes to `tx`, the target processes read `rx`, one byte
/// per signal. A stream socket pair, as uWSGI's: its buffer holds thousands of signals (a
/// datagram pair holds about ten). Both ends nonblocking (several processes may poll one
/// `rx`; each read takes one byte, so one of them gets each signal).
struct Chan {
    tx: OwnedFd,
    rx: OwnedFd,
}

impl Chan {
    fn new() -> std::io::Result<Self> {
        let (rx, tx) = crate::sys::fd::socketpair(libc::SOCK_STREAM)?;
        crate::sys::fd::set_nonblocking(rx.as_raw_fd())?;
        crate::sys::fd::set_nonblocking(tx.as_raw_fd())?;
        Ok(Self { tx, rx })
    }
}

/// Everything shared, made by the master before the first fork.
struct Shared {
    table: table::Table,
    worker_pool: Chan,
    workers: Vec<Chan>,
    mule_pool: Chan,
    mules: Vec<Chan>,
    /// Farm names and their mule ids, in `--farm` order.
    farms: Vec<(String, Vec<usize>)>,
    farm_chans: Vec<Chan>,
    spooler_pool: Chan,
    /// Each spooler process's kind (`AuxKind::Spooler(i, n)`) and channel, in start order.
    spoolers: Vec<((usize, usize), Chan)>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// Sources the master itself added (before fork: the app loading, `--shared-import`), for the
/// master's loop to pick up; processes forked later send theirs on the control channel.
static PENDING: Mutex<Vec<Source>> = Mutex::new(Vec::new());

/// In the master, before the app is loaded (and before any fork).
pub fn init_master(_py: Python<'_>, config: &Config) -> Result<(), String> {
    let make = || -> std::io::Result<Shared> {
        let farms = super::farms(config);
        let spoolers = super::aux_specs(config)
            .into_iter()
            .filter_map(|s| match s.kind {
                AuxKind::Spooler(i, n) => Some((i, n)),
                AuxKind::Mule(_) => None,
            })
            .map(|k| Ok((k, Chan::new()?)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Shared {
            table: table::Table::create(config.processes)?,
            worker_pool: Chan::new()?,
            workers: (0..config.processes)
                .map(|_| Chan::new())
                .collect::<Result<_, _>>()?,
            mule_pool: Chan::new()?,
            mules: (0..config.offload.mules.mules.len())
                .map(|_| Chan::new())
                .collect::<Result<_, _>>()?,
            farm_chans: farms
                .iter()
                .map(|_| Chan::new())
                .collect::<Result<_, _>>()?,
            farms,
            spooler_pool: Chan::new()?,
            spoolers,
        })
    };
    let shared = make().map_err(|e| format!("cannot create the uWSGI signal table: {e}"))?;
    let _ = SHARED.set(shared);
    Ok(())
}

static ROW_CLAIMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// This process's row of the signal table: 0 in the master, the worker id in a worker
/// (`None` elsewhere). A worker's first look at its row clears what a previous process of
/// the same id left there (`--lazy-apps` and reloads start a worker with no handlers but the
/// master's), so that `get_free_signal` and the routing see this process's registrations only.
fn own_row(sh: &Shared) -> Option<usize> {
    match super::role() {
        Role::Master => Some(0),
        Role::Worker(id) => {
            if !ROW_CLAIMED.swap(true, Ordering::AcqRel) {
                sh.table.clear_row(id);
            }
            Some(id)
        }
        _ => None,
    }
}

/// In every forked child that runs Python, after its role is set: start the thread that
/// runs this process's signal handlers.
pub fn after_fork(_py: Python<'_>) {
    let Some(sh) = SHARED.get() else { return };
    own_row(sh);
    let (who, id, fds): (&'static str, usize, Vec<RawFd>) = match super::role() {
        Role::Worker(id) => match sh.workers.get(id.wrapping_sub(1)) {
            Some(c) => (
                "worker",
                id,
                vec![c.rx.as_raw_fd(), sh.worker_pool.rx.as_raw_fd()],
            ),
            None => return,
        },
        Role::Mule(id) => {
            let Some(own) = sh.mules.get(id.wrapping_sub(1)) else {
                return;
            };
            let mut fds = vec![own.rx.as_raw_fd(), sh.mule_pool.rx.as_raw_fd()];
            for ((_, ids), c) in sh.farms.iter().zip(&sh.farm_chans) {
                if ids.contains(&id) {
                    fds.push(c.rx.as_raw_fd());
                }
            }
            ("mule", id, fds)
        }
        Role::Spooler(i, n) => {
            let Some((_, own)) = sh.spoolers.iter().find(|(k, _)| *k == (i, n)) else {
                return;
            };
            let pid = usize::try_from(crate::sys::proc::getpid()).unwrap_or(0);
            (
                "spooler",
                pid,
                vec![own.rx.as_raw_fd(), sh.spooler_pool.rx.as_raw_fd()],
            )
        }
        Role::Master | Role::Router | Role::Daemon => return,
    };
    let spawned = std::thread::Builder::new()
        .name("uwsgi-signals".to_owned())
        .spawn(move || handler_loop(who, id, &fds));
    if let Err(e) = spawned {
        crate::log!("headrace: {who} {id} cannot start its signal handler thread: {e}");
    }
}

/// Signals received by this process and not yet waited for (`uwsgi.signal_wait`).
struct Received {
    count: u64,
    last: i32,
}

static RECEIVED: Mutex<Received> = Mutex::new(Received { count: 0, last: -1 });
static RECEIVED_CV: Condvar = Condvar::new();
static WAITERS: AtomicUsize = AtomicUsize::new(0);

/// A handler is running in this process (`finish_handlers` waits for it).
static RUNNING: Mutex<bool> = Mutex::new(false);
static RUNNING_CV: Condvar = Condvar::new();
/// This process is stopping: take no more signals (they stay queued for the next process).
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A process that stops gracefully calls this (without the GIL) before it exits: no new
/// signal is taken, and a handler that is running finishes first, as a handler in uWSGI's
/// request loop does (the master's reload mercy bounds the wait). Returns at once when none
/// runs.
pub fn finish_handlers() {
    STOPPING.store(true, Ordering::Release);
    let Ok(mut running) = RUNNING.lock() else {
        return;
    };
    while *running {
        match RUNNING_CV.wait(running) {
            Ok(r) => running = r,
            Err(_) => return,
        }
    }
}

fn set_running(on: bool) {
    if let Ok(mut r) = RUNNING.lock() {
        *r = on;
    }
    RUNNING_CV.notify_all();
}

/// The handler thread: wait for a signal on any of `fds`, run its handler, until the process
/// stops. The process ends with `_exit`, which ends this thread too, so it never holds a stop
/// back beyond the handler that runs (see [`finish_handlers`]).
fn handler_loop(who: &'static str, id: usize, fds: &[RawFd]) {
    let mut polls: Vec<crate::sys::proc::PollFd> = fds
        .iter()
        .map(|&fd| crate::sys::proc::PollFd {
            fd,
            write: false,
            ready: false,
        })
        .collect();
    let mut buf = [0u8; 1];
    loop {
        crate::sys::proc::poll_many(&mut polls, 1000);
        for p in polls.iter().filter(|p| p.ready) {
            // Another process sharing a pool channel may have taken it: EAGAIN.
            loop {
                set_running(true);
                if STOPPING.load(Ordering::Acquire) {
                    set_running(false);
                    return;
                }
                let n = match crate::sys::fd::read(p.fd, &mut buf) {
                    Ok(n) if n > 0 => n,
                    // EAGAIN (another process took it), or the master is gone (the
                    // process follows it: PR_SET_PDEATHSIG).
                    _ => {
                        set_running(false);
                        break;
                    }
                };
                for &sig in &buf[..n] {
                    run_handler(who, id, sig);
                }
                set_running(false);
            }
        }
        if STOPPING.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Run the handler of `sig` in this process, with the GIL; log, as uWSGI does, when there is
/// none or it raised (the traceback first).
fn run_handler(who: &str, id: usize, sig: u8) {
    let handled = Python::attach(|py| {
        let call = || -> PyResult<bool> {
            py.import("headrace._uwsgi.signals")?
                .call_method1("_deliver", (sig,))?
                .extract()
        };
        match call() {
            Ok(found) => found,
            Err(e) => {
                e.print(py);
                false
            }
        }
    });
    let waiting = WAITERS.load(Ordering::Acquire) > 0;
    if !handled && !waiting {
        crate::log!("error managing signal {sig} on {who} {id}");
    }
    if let Ok(mut r) = RECEIVED.lock() {
        r.count += 1;
        r.last = i32::from(sig);
    }
    RECEIVED_CV.notify_all();
}

/// The master: signal `sig` was raised; write it to its target's channels. `active(id)`:
/// worker `id` runs now. `rr` turns, to spread signals over the workers that registered one.
pub fn route(sig: u8, active: &dyn Fn(usize) -> bool, rr: &mut usize) {
    let Some(sh) = SHARED.get() else { return };
    // The master's own registration (made before fork) rules; else the workers' (made after
    // fork, e.g. with --lazy-apps: uWSGI would ignore their target).
    let (target, registered) = if let Some(r) = sh.table.lookup(0, sig) {
        (r.target, None)
    } else {
        let ids: Vec<usize> = (1..=sh.table.workers())
            .filter(|&w| sh.table.registered(w, sig))
            .collect();
        let target = ids
            .first()
            .and_then(|&w| sh.table.lookup(w, sig))
            .map(|r| r.target)
            .unwrap_or_default();
        (target, Some(ids))
    };
    let parsed = match route::parse(&target) {
        Ok(t) => t,
        Err(t) => {
            crate::log!("^^^ UNSUPPORTED SIGNAL TARGET: {t} ^^^");
            return;
        }
    };
    let farm_names: Vec<String> = sh.farms.iter().map(|(n, _)| n.clone()).collect();
    let counts = Counts {
        workers: sh.workers.len(),
        mules: sh.mules.len(),
        farms: &farm_names,
        spoolers: sh.spoolers.len(),
    };
    *rr = rr.wrapping_add(1);
    let dests = match route::destinations(&parsed, &counts, active, registered.as_deref(), *rr) {
        Ok(d) => d,
        Err(why) => {
            crate::log!("could not deliver signal {sig}: {why}");
            count(sh, false);
            return;
        }
    };
    for d in dests {
        let (chan, name) = match d {
            Dest::WorkerPool => (&sh.worker_pool, "workers pool".to_owned()),
            Dest::Worker(i) => (&sh.workers[i - 1], format!("worker {i}")),
            Dest::MulePool => (&sh.mule_pool, "a mule".to_owned()),
            Dest::Mule(i) => (&sh.mules[i - 1], format!("mule {i}")),
            Dest::Farm(i) => (
                &sh.farm_chans[i],
                format!("farm {} ({})", i + 1, sh.farms[i].0),
            ),
            Dest::SpoolerPool => (&sh.spooler_pool, "the spooler".to_owned()),
            Dest::Spooler(i) => (&sh.spoolers[i].1, format!("spooler {}", i + 1)),
        };
        match crate::sys::fd::send(chan.tx.as_raw_fd(), &[sig]) {
            Ok(_) => count(sh, true),
            Err(e) => {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    crate::log!("*** SIGNAL QUEUE IS FULL: the signal channel of {name} is full (its process does not read it) ***");
                }
                crate::log!("could not deliver signal {sig} to {name}: {e}");
                count(sh, false);
            }
        }
    }
}

fn count(sh: &Shared, routed: bool) {
    if let Some(h) = sh.table.header() {
        let c = if routed { &h.routed } else { &h.unrouted };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The master: the sources it added itself since the last call.
pub fn take_pending() -> Vec<Source> {
    PENDING
        .lock()
        .map(|mut p| std::mem::take(&mut *p))
        .unwrap_or_default()
}

/// The master accepted a source of this kind: count it toward uWSGI's limit of 64.
pub fn count_source(kind: usize) {
    if let Some(h) = SHARED.get().and_then(|sh| sh.table.header()) {
        h.sources[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// Signals routed and not routed so far (uWSGI's `routed_signals`, `unrouted_signals`).
#[must_use]
pub fn routed() -> (u64, u64) {
    SHARED
        .get()
        .and_then(|sh| sh.table.header())
        .map_or((0, 0), |h| {
            (
                h.routed.load(Ordering::Relaxed),
                h.unrouted.load(Ordering::Relaxed),
            )
        })
}

/// The auxiliary processes this part asks the master to run.
#[must_use]
pub fn aux_specs(_config: &Config) -> Vec<AuxSpec> {
    Vec::new()
}

/// This part's native functions, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(signal_register, m)?)?;
    m.add_function(wrap_pyfunction!(signal_registered, m)?)?;
    m.add_function(wrap_pyfunction!(signal_raise, m)?)?;
    m.add_function(wrap_pyfunction!(signal_add, m)?)?;
    m.add_function(wrap_pyfunction!(signal_wait, m)?)?;
    Ok(())
}

fn unable(what: &str) -> PyErr {
    PyValueError::new_err(format!("unable to {what}"))
}

/// `_headrace.signal_register(num, target)`: record the registration in the shared table
/// (the handler itself is kept by the Python side). Only the master and the workers may, as
/// in uWSGI.
#[pyfunction]
fn signal_register(signum: u8, target: &str) -> PyResult<()> {
    let sh = SHARED.get().ok_or_else(|| unable("register signal"))?;
    let Some(row) = own_row(sh) else {
        crate::log!("only the master and the workers can register signal handlers");
        return Err(unable("register signal"));
    };
    if target.len() > table::TARGET_MAX {
        crate::log!("{}", table::RegisterError::TargetTooLong(target.to_owned()));
        return Err(unable("register signal"));
    }
    if let Err(t) = route::parse(target) {
        crate::log!("[uwsgi-signal] unsupported signal target: {t:?}");
        return Err(unable("register signal"));
    }
    if let Err(e) = sh.table.register(row, signum, target) {
        crate::log!("{e}");
        return Err(unable("register signal"));
    }
    let what = if target.is_empty() {
        "default, any worker"
    } else {
        target
    };
    crate::log!(
        "[uwsgi-signal] signum {signum} registered (wid: {row} modifier1: 0 target: {what})"
    );
    Ok(())
}

/// `_headrace.signal_registered(num)`: registered by this process (a worker's own row) or by
/// the master before fork.
#[pyfunction]
fn signal_registered(signum: u8) -> bool {
    let Some(sh) = SHARED.get() else { return false };
    let own = own_row(sh).is_some_and(|row| sh.table.registered(row, signum));
    own || sh.table.registered(0, signum)
}

/// `_headrace.signal_raise(num)`: tell the master to route signal `num`.
#[pyfunction]
fn signal_raise(signum: u8) -> PyResult<()> {
    control::send(&Control::Signal(signum)).map_err(|e| PyOSError::new_err(e.to_string()))
}

/// `_headrace.signal_add(source)`: add a timer, rb timer, cron entry or file monitor (the
/// text form of [`Source`]). Refused past uWSGI's 64 of a kind.
#[pyfunction]
fn signal_add(text: &str) -> PyResult<()> {
    let src = Source::decode(text)
        .ok_or_else(|| PyValueError::new_err(format!("not a signal source: {text:?}")))?;
    let (kind, plural) = src.kind();
    let what = match kind {
        0 => "add timer",
        1 => "add rb_timer",
        2 => "add cron",
        _ => "add file monitor",
    };
    let sh = SHARED.get().ok_or_else(|| unable(what))?;
    let added = sh
        .table
        .header()
        .map_or(0, |h| h.sources[kind].load(Ordering::Relaxed));
    if added >= MAX_PER_KIND {
        crate::log!("you can register max {MAX_PER_KIND} {plural} !!!");
        return Err(unable(what));
    }
    if let Source::FileMonitor { path, .. } = &src {
        if std::fs::metadata(path).is_err() {
            crate::log!("uwsgi_add_file_monitor: cannot watch {path}: no such file or directory");
            return Err(unable(what));
        }
    }
    if super::role() == Role::Master {
        PENDING.lock().map_err(|_| unable(what))?.push(src);
        return Ok(());
    }
    control::send(&Control::SignalSource(src.encode()))
        .map_err(|e| PyOSError::new_err(e.to_string()))
}

/// `_headrace.signal_wait(num=None)`: block (without the GIL) until this process receives a
/// signal (`num`, or any) and its handler has run; the signal received.
#[pyfunction]
#[pyo3(signature = (signum=None))]
fn signal_wait(py: Python<'_>, signum: Option<u8>) -> PyResult<i32> {
    if SHARED.get().is_none() || super::role() == Role::Master {
        return Err(pyo3::exceptions::PySystemError::new_err(
            "error waiting for signal",
        ));
    }
    WAITERS.fetch_add(1, Ordering::AcqRel);
    let got = py.detach(|| {
        let mut r = RECEIVED
            .lock()
            .map_err(|_| "the signal state is poisoned")?;
        let mut seen = r.count;
        loop {
            r = RECEIVED_CV
                .wait(r)
                .map_err(|_| "the signal state is poisoned")?;
            if r.count != seen {
                seen = r.count;
                if signum.is_none_or(|want| i32::from(want) == r.last) {
                    return Ok::<i32, &str>(r.last);
                }
            }
        }
    });
    WAITERS.fetch_sub(1, Ordering::AcqRel);
    got.map_err(pyo3::exceptions::PySystemError::new_err)
}
