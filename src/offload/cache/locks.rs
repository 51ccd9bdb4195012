//! User locks (`--locks`, `uwsgi.lock`/`unlock`/`is_locked`, `@uwsgidecorators.lock`): robust
//! process-shared mutexes, lock 0 plus `--locks` more, held by the thread that took them.

use crate::offload::Role;
use crate::sys::shmlock::LockedMap;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::sync::OnceLock;

static LOCKS: OnceLock<LockedMap> = OnceLock::new();

/// In the master, before any fork: lock 0 and `extra` more.
pub fn init_master(extra: usize) -> Result<(), String> {
    let locks = LockedMap::create("headrace-locks", extra + 1, 0)
        .map_err(|e| format!("cannot create the user locks: {e}"))?;
    let _ = LOCKS.set(locks);
    Ok(())
}

fn user_lock(n: i64) -> PyResult<(&'static LockedMap, usize)> {
    if matches!(crate::offload::role(), Role::Spooler(..)) {
        return Err(PyValueError::new_err(
            "The spooler cannot lock/unlock resources",
        ));
    }
    let locks = LOCKS
        .get()
        .ok_or_else(|| PyValueError::new_err("Invalid lock number"))?;
    let i = usize::try_from(n)
        .ok()
        .filter(|&i| i < locks.locks())
        .ok_or_else(|| PyValueError::new_err("Invalid lock number"))?;
    Ok((locks, i))
}

/// `uwsgi.lock(n=0)`: block until this thread holds user lock n (across every process).
#[pyfunction(name = "user_lock")]
#[pyo3(signature = (n=0))]
fn lock(py: Python<'_>, n: i64) -> PyResult<()> {
    let (locks, i) = user_lock(n)?;
    match py.detach(|| locks.lock_raw(i)) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EDEADLK) => Err(PyRuntimeError::new_err(format!(
            "uwsgi.lock({n}): this thread holds lock {n} already"
        ))),
        Err(e) => Err(PyRuntimeError::new_err(format!("uwsgi.lock({n}): {e}"))),
    }
}

/// `uwsgi.unlock(n=0)`.
#[pyfunction(name = "user_unlock")]
#[pyo3(signature = (n=0))]
fn unlock(n: i64) -> PyResult<()> {
    let (locks, i) = user_lock(n)?;
    match locks.unlock_raw(i) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // uWSGI ignores it (its robust mutex refuses too); say so once per call.
            crate::log!(
                "uwsgi.unlock({n}): this thread does not hold lock {n}: ignored, as uWSGI does"
            );
            Ok(())
        }
        Err(e) => Err(PyRuntimeError::new_err(format!("uwsgi.unlock({n}): {e}"))),
    }
}

/// `uwsgi.is_locked(n=0)`: some thread (of any process) holds user lock n.
#[pyfunction(name = "user_is_locked")]
#[pyo3(signature = (n=0))]
fn is_locked(py: Python<'_>, n: i64) -> PyResult<bool> {
    let (locks, i) = user_lock(n)?;
    match py.detach(|| locks.try_lock_raw(i)) {
        Ok(Some(_)) => {
            let _ = locks.unlock_raw(i);
            Ok(false)
        }
        Ok(None) => Ok(true),
        Err(e) => Err(PyRuntimeError::new_err(format!(
            "uwsgi.is_locked({n}): {e}"
        ))),
    }
}

/// The lock functions, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(lock, m)?)?;
    m.add_function(wrap_pyfunction!(unlock, m)?)?;
    m.add_function(wrap_pyfunction!(is_locked, m)?)?;
    Ok(())
}
