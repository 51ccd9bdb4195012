//! Mules: processes beside the workers that run `--mule` scripts, `@mulefunc`/`@muleloop`
//! functions and receive messages (`uwsgi.mule_msg`), grouped in farms (uWSGI 2.0's
//! core/mule.c). The master makes every queue before it loads the app ([`queue`]), supervises
//! each mule as an auxiliary process (`crate::master::aux`: respawned, stopped with the
//! server, restarted on reload and on `--touch-mules-reload`), and the mule's body is
//! [`run`]: the app's post-fork hooks (where `@mule`/`@muleloop` functions run), then its
//! script, its `module:function`, or the message loop of `headrace._uwsgi.mules`.

mod harakiri;
mod queue;

use super::{AuxKind, AuxSpec};
use crate::config::offload::OffloadConfig;
use crate::config::{Config, ConfigError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Exit code of a mule whose script or function returned (uWSGI's UWSGI_END_CODE): the master
/// respawns it, with backoff when it keeps ending at once.
const END_CODE: i32 = 30;

/// What a `--mule` value asks the mule to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuleBody {
    /// Bare `--mule` or `--mules N`: wait for messages.
    Empty,
    /// `--mule=FILE.py`: run the file as `__main__`.
    Script(String),
    /// `--mule=MODULE:FUNCTION`: import the module and call the function.
    Function(String, String),
}

impl MuleBody {
    /// Parse a `--mule` value (uWSGI's python plugin: `.py` files, then `module:function`).
    pub fn parse(value: &str) -> Result<Self, String> {
        let v = value.trim();
        if v.is_empty() {
            return Ok(Self::Empty);
        }
        if std::path::Path::new(v)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("py"))
        {
            return Ok(Self::Script(v.to_owned()));
        }
        match v.split_once(':') {
            Some((m, f)) if !m.trim().is_empty() && !f.trim().is_empty() => {
                Ok(Self::Function(m.trim().to_owned(), f.trim().to_owned()))
            }
            _ => Err("expected nothing (an empty mule), a FILE.py or a MODULE:FUNCTION".to_owned()),
        }
    }
}

/// Check the values only this part understands, when the configuration is read.
pub fn validate(o: &OffloadConfig) -> Result<(), ConfigError> {
    for m in &o.mules.mules {
        MuleBody::parse(&m.value).map_err(|why| m.invalid("mule", &why))?;
    }
    Ok(())
}

/// `--touch-mules-reload` files and their last seen modification times.
static TOUCH: Mutex<Vec<(PathBuf, Option<SystemTime>)>> = Mutex::new(Vec::new());

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// In the master, before the app is loaded (and before any fork): open the shared queue, each
/// mule's queue and each farm's queue, so every process inherits them.
pub fn init_master(_py: Python<'_>, config: &Config) -> Result<(), String> {
    let m = &config.offload.mules;
    if let Ok(mut touch) = TOUCH.lock() {
        *touch = m
            .touch_reload
            .iter()
            .map(|p| (p.clone(), mtime(p)))
            .collect();
    }
    if m.mules.is_empty() {
        return Ok(());
    }
    let farms = super::farms(config);
    queue::open(1 + m.mules.len() + farms.len(), m.msg_size)
        .map_err(|e| format!("cannot create the mule queues: {e}"))?;
    for (i, (name, ids)) in farms.iter().enumerate() {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        crate::log!(
            "created farm {} name: {name} mules:{}",
            i + 1,
            ids.join(",")
        );
    }
    Ok(())
}

/// `--touch-mules-reload`: whether a watched file changed since the last call (the master,
/// on its touch timer); logs which one, as uWSGI does.
pub fn touched() -> bool {
    let Ok(mut touch) = TOUCH.lock() else {
        return false;
    };
    let mut any = false;
    for (path, seen) in touch.iter_mut() {
        let now = mtime(path);
        if now != *seen {
            *seen = now;
            crate::log!(
                "*** {} has been touched... mules reload !!! ***",
                path.display()
            );
            any = true;
        }
    }
    any
}

/// In every forked child that runs Python, after its role is set.
pub fn after_fork(_py: Python<'_>) {}

/// The auxiliary processes this part asks the master to run: one per mule, restarted with the
/// workers on reload, given `--mule-reload-mercy` to stop.
#[must_use]
pub fn aux_specs(config: &Config) -> Vec<AuxSpec> {
    let m = &config.offload.mules;
    (1..=m.mules.len())
        .map(|id| AuxSpec {
            kind: AuxKind::Mule(id),
            name: format!("mule {id}"),
            reload_with_workers: true,
            stop_mercy: m.reload_mercy,
        })
        .collect()
}

/// This part's native functions, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mule_layout, m)?)?;
    m.add_function(wrap_pyfunction!(mule_send, m)?)?;
    m.add_function(wrap_pyfunction!(mule_recv, m)?)?;
    m.add_function(wrap_pyfunction!(mule_task, m)?)?;
    m.add_function(wrap_pyfunction!(mule_log, m)?)?;
    Ok(())
}

/// Each mule's `--mule` value, each farm with its mule ids, `--mule-msg-size`, and whether
/// `--mule-harakiri` is on.
type Layout = (Vec<String>, Vec<(String, Vec<usize>)>, usize, bool);

/// `_headrace.mule_layout()`: `(mules, farms, msg_size, harakiri)`: each mule's `--mule` value
/// ("" for an empty one), each farm as `(name, [mule ids])`, `--mule-msg-size`, and whether
/// `--mule-harakiri` is on. Outside a server: no mules.
#[pyfunction]
fn mule_layout() -> Layout {
    let Some(ctx) = super::context() else {
        return (Vec::new(), Vec::new(), 0, false);
    };
    let m = &ctx.config.offload.mules;
    (
        m.mules.iter().map(|g| g.value.trim().to_owned()).collect(),
        super::farms(&ctx.config),
        m.msg_size,
        !m.harakiri.is_zero(),
    )
}

fn msg_size() -> usize {
    super::context().map_or(65536, |c| c.config.offload.mules.msg_size)
}

/// `_headrace.mule_send(queue, message)`: queue a message without blocking; `False` (and a log
/// line, as uWSGI's) when the queue is full or the message does not fit. The send never
/// blocks, so the GIL is kept.
#[pyfunction]
fn mule_send(queue: usize, message: &[u8]) -> PyResult<bool> {
    match queue::send(queue, message, msg_size()) {
        Ok(()) => Ok(true),
        Err(queue::SendError::NoQueue) => Err(pyo3::exceptions::PyValueError::new_err(
            "no mule configured",
        )),
        Err(e) => {
            crate::log!("{e}");
            Ok(false)
        }
    }
}

/// `_headrace.mule_recv(queues, buffer_size, timeout)`: the next message on any of `queues`
/// (bytes, cut to `buffer_size` unless it is 0), or `None` after `timeout` seconds (`None`:
/// wait forever). Python's signal handlers run while it waits.
#[pyfunction]
#[pyo3(signature = (queues, buffer_size, timeout=None))]
#[allow(
    clippy::needless_pass_by_value,
    reason = "pyo3 extracts a Python list into a Vec, not a slice"
)]
fn mule_recv(
    py: Python<'_>,
    queues: Vec<usize>,
    buffer_size: usize,
    timeout: Option<f64>,
) -> PyResult<Option<Py<PyBytes>>> {
    // A timeout too large for a Duration (inf) waits forever, as no timeout does.
    let deadline = timeout
        .and_then(|t| Duration::try_from_secs_f64(t.max(0.0)).ok())
        .and_then(|t| std::time::Instant::now().checked_add(t));
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let got = py.detach(|| queue::recv(&queues, buffer_size, left));
        match got {
            Ok(queue::Received::Message(m)) => return Ok(Some(PyBytes::new(py, &m).unbind())),
            Ok(queue::Received::TimedOut) => return Ok(None),
            Ok(queue::Received::Interrupted) => {
                py.check_signals()?;
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Ok(None);
                }
            }
            Err(e) => return Err(pyo3::exceptions::PyOSError::new_err(e.to_string())),
        }
    }
}

/// `_headrace.mule_task(what)`: a task starts (its description) or ends (`None`), for
/// `--mule-harakiri`.
#[pyfunction]
#[pyo3(signature = (what=None))]
fn mule_task(what: Option<&str>) {
    harakiri::set(what);
}

/// `_headrace.mule_log(line)`: one log line.
#[pyfunction]
fn mule_log(line: &str) {
    crate::log!("{line}");
}

/// SIGUSR2 makes Python's faulthandler write every thread's traceback (for harakiri).
fn register_traceback_dump(py: Python<'_>) {
    let r = py.import("faulthandler").and_then(|fh| {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("all_threads", true)?;
        fh.call_method("register", (libc::SIGUSR2,), Some(&kwargs))
    });
    if let Err(e) = r {
        crate::log!("headrace: cannot arm the traceback dump on SIGUSR2: {e}");
    }
}

/// The body of mule N (in the child after fork; its role already set). Never returns.
pub fn run(py: Python<'_>, spec: &AuxSpec, config: &Config) -> ! {
    let AuxKind::Mule(id) = spec.kind else {
        crate::sys::proc::exit_now(1)
    };
    let pid = crate::sys::proc::getpid();
    crate::sys::mules::mule_signals();
    register_traceback_dump(py);
    // A preloaded app came with the fork; with --lazy-apps the mule loads it as workers do,
    // so that the app's @mulefunc/@mule functions exist here too (uWSGI's lazy mules do not
    // load it, and its @mulefunc calls then fail in the mule).
    if config.lazy_apps && (config.app.is_some() || !config.mounts.is_empty()) {
        match crate::wsgi::load::load(py, config) {
            Ok(_) => crate::log!("WSGI app 0 (mountpoint='') ready in mule {id} (pid: {pid})"),
            Err(e) => {
                e.print(py);
                crate::log!(
                    "mule {id} (pid: {pid}): the app cannot be loaded; the mule runs without it"
                );
            }
        }
    }
    if let Err(e) = harakiri::start(id, config.offload.mules.harakiri) {
        crate::log!("mule {id} (pid: {pid}): cannot start the --mule-harakiri watchdog: {e}");
    }
    super::after_fork(py);
    let value = config
        .offload
        .mules
        .mules
        .get(id - 1)
        .map(|g| g.value.trim().to_owned())
        .unwrap_or_default();
    let code = py
        .import("headrace._uwsgi.mules")
        .and_then(|m| m.call_method1("_run", (id, value)))
        .and_then(|c| c.extract::<i32>());
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            e.print(py);
            1
        }
    };
    crate::wsgi::load::flush_stdio(py);
    crate::sys::proc::exit_now(if code == 0 { END_CODE } else { code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mule_values() {
        for (value, body) in [
            ("", Some(MuleBody::Empty)),
            ("  ", Some(MuleBody::Empty)),
            ("work.py", Some(MuleBody::Script("work.py".to_owned()))),
            (
                "dir/Work.PY",
                Some(MuleBody::Script("dir/Work.PY".to_owned())),
            ),
            (
                "pkg.jobs:main",
                Some(MuleBody::Function("pkg.jobs".to_owned(), "main".to_owned())),
            ),
            ("pkg.jobs:", None),
            (":main", None),
            ("true", None),
            ("work.txt", None),
        ] {
            assert_eq!(MuleBody::parse(value).ok(), body, "{value:?}");
        }
    }
}
