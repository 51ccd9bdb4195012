//! Shared areas (`--sharedarea`): plain shared bytes, read and written under a robust mutex
//! (uWSGI's `sharedarea_*` calls; positions and widths checked as uWSGI's).

use super::{bytes_of, spec};
use crate::config::offload::Given;
use crate::sys::shmlock::LockedMap;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::OnceLock;

static SHAREDAREAS: OnceLock<Vec<LockedMap>> = OnceLock::new();

/// In the master, before any fork: one map per `--sharedarea`, ids in order.
pub fn init_master(given: &[Given]) -> Result<(), String> {
    let page = crate::sys::proc::page_size();
    let mut areas = Vec::new();
    for (id, g) in given.iter().enumerate() {
        let bytes = spec::parse_sharedarea(&g.value, page)?;
        let len = usize::try_from(bytes).map_err(|_| "--sharedarea too large".to_owned())?;
        // Mutex 0 guards the bytes; mutex 1 is the app's (`sharedarea_rlock`/`wlock`).
        let map = LockedMap::create(&format!("headrace-sharedarea-{id}"), 2, len)
            .map_err(|e| format!("cannot create sharedarea {id}: {e}"))?;
        crate::log!(
            "sharedarea {id} created ({} pages, {bytes} bytes)",
            bytes.div_ceil(page)
        );
        areas.push(map);
    }
    let _ = SHAREDAREAS.set(areas);
    Ok(())
}

// Positions and lengths are u64 in the API and checked against the area's usize length by
// `area` before they are cast.

fn area(id: i64, pos: u64, len: u64, what: &str) -> PyResult<&'static LockedMap> {
    let err = || PyValueError::new_err(format!("error calling uwsgi_sharedarea_{what}()"));
    let areas = SHAREDAREAS.get().map_or(&[][..], Vec::as_slice);
    let a = usize::try_from(id)
        .ok()
        .and_then(|i| areas.get(i))
        .ok_or_else(err)?;
    let size = a.data_len() as u64;
    if pos >= size || pos.checked_add(len).is_none_or(|end| end > size) {
        return Err(err());
    }
    Ok(a)
}

/// uWSGI reads positions as C `long long`: a negative one is out of bounds, a ValueError.
fn unsigned(v: i64, what: &str) -> PyResult<u64> {
    u64::try_from(v)
        .map_err(|_| PyValueError::new_err(format!("error calling uwsgi_sharedarea_{what}()")))
}

fn area_io<T: Send>(
    py: Python<'_>,
    a: &'static LockedMap,
    f: impl FnOnce(&mut [u8]) -> T + Send,
) -> PyResult<T> {
    py.detach(|| a.lock_data().map(|mut g| f(g.data())))
        .map_err(|e| PyRuntimeError::new_err(format!("cannot lock the shared area: {e}")))
}

/// `uwsgi.sharedarea_read(id, pos, len=0)`: bytes (len 0: to the end).
#[allow(clippy::cast_possible_truncation, reason = "checked by `area`")]
#[pyfunction]
#[pyo3(signature = (id, pos, len=0))]
fn sharedarea_read(py: Python<'_>, id: i64, pos: i64, len: i64) -> PyResult<Bound<'_, PyBytes>> {
    let (pos, len) = (unsigned(pos, "read")?, unsigned(len, "read")?);
    let a = area(id, pos, 0, "read")?;
    let len = if len == 0 {
        a.data_len() as u64 - pos
    } else {
        len
    };
    let a = area(id, pos, len, "read")?;
    let (p, n) = (pos as usize, len as usize);
    let v = area_io(py, a, |d| d[p..p + n].to_vec())?;
    Ok(PyBytes::new(py, &v))
}

/// `uwsgi.sharedarea_write(id, pos, data)`.
#[allow(clippy::cast_possible_truncation, reason = "checked by `area`")]
#[pyfunction]
fn sharedarea_write(py: Python<'_>, id: i64, pos: i64, data: &Bound<'_, PyAny>) -> PyResult<()> {
    let pos = unsigned(pos, "write")?;
    let data = bytes_of(data, "value")?;
    let a = area(id, pos, data.len() as u64, "write")?;
    let p = pos as usize;
    area_io(py, a, |d| d[p..p + data.len()].copy_from_slice(data))
}

/// `uwsgi.sharedarea_read8/16/32/64`: a signed little-endian number of `width` bytes.
#[allow(clippy::cast_possible_truncation, reason = "checked by `area`")]
#[pyfunction]
fn sharedarea_readint(py: Python<'_>, id: i64, pos: i64, width: u64) -> PyResult<i64> {
    let pos = unsigned(pos, &format!("read{}", width * 8))?;
    let a = area(id, pos, width, &format!("read{}", width * 8))?;
    let (p, w) = (pos as usize, width as usize);
    let raw = area_io(py, a, |d| {
        let mut b = [0u8; 8];
        b[..w].copy_from_slice(&d[p..p + w]);
        b
    })?;
    Ok(sign_extend(u64::from_le_bytes(raw), width))
}

#[expect(clippy::cast_possible_wrap, reason = "two's complement, as C's intN_t")]
fn sign_extend(v: u64, width: u64) -> i64 {
    let shift = 64 - width * 8;
    ((v << shift) as i64) >> shift
}

/// `uwsgi.sharedarea_write8/16/32/64`: store the low `width` bytes of `value`.
#[allow(clippy::cast_possible_truncation, reason = "checked by `area`")]
#[pyfunction]
fn sharedarea_writeint(
    py: Python<'_>,
    id: i64,
    pos: i64,
    width: u64,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let pos = unsigned(pos, &format!("write{}", width * 8))?;
    if width == 1 && !(0..=255).contains(&value.extract::<i64>()?) {
        // uWSGI parses it with "b" (an unsigned char).
        return Err(pyo3::exceptions::PyOverflowError::new_err(
            "unsigned byte integer is out of range 0..255",
        ));
    }
    let v: u64 = match value.extract::<i64>() {
        #[expect(
            clippy::cast_sign_loss,
            reason = "two's complement bytes, as C stores them"
        )]
        Ok(v) => v as u64,
        Err(_) => value.extract::<u64>()?,
    };
    let a = area(id, pos, width, &format!("write{}", width * 8))?;
    let (p, w) = (pos as usize, width as usize);
    area_io(py, a, |d| {
        d[p..p + w].copy_from_slice(&v.to_le_bytes()[..w]);
    })
}

/// `uwsgi.sharedarea_inc32/64` and `dec32/64`: add `delta` (wrapping, as C).
#[allow(clippy::cast_possible_truncation, reason = "checked by `area`")]
#[pyfunction]
fn sharedarea_add(py: Python<'_>, id: i64, pos: i64, width: u64, delta: i64) -> PyResult<()> {
    let what = if delta < 0 { "dec" } else { "inc" };
    let pos = unsigned(pos, &format!("{what}{}", width * 8))?;
    let a = area(id, pos, width, &format!("{what}{}", width * 8))?;
    let (start, end) = (pos as usize, (pos + width) as usize);
    area_io(py, a, |d| {
        let mut raw = [0u8; 8];
        raw[..end - start].copy_from_slice(&d[start..end]);
        #[expect(clippy::cast_sign_loss, reason = "two's complement, as C")]
        let sum = u64::from_le_bytes(raw).wrapping_add(delta as u64);
        d[start..end].copy_from_slice(&sum.to_le_bytes()[..end - start]);
    })
}

/// `uwsgi.sharedarea_memoryview(id)`: the area's bytes, writable, unlocked (as uWSGI).
#[pyfunction]
fn sharedarea_memoryview(py: Python<'_>, id: i64) -> PyResult<Bound<'_, PyAny>> {
    let a = area(id, 0, 0, "memoryview").map_err(|_| {
        PyValueError::new_err(format!(
            "cannot get a memoryview object from sharedarea {id}"
        ))
    })?;
    a.memoryview(py)
}

/// `uwsgi.sharedarea_rlock/wlock/unlock(id)`: the app's own lock on an area (one mutex: a
/// read lock excludes other readers too).
#[pyfunction]
fn sharedarea_lock(py: Python<'_>, id: i64, take: bool) -> PyResult<()> {
    let what = if take { "wlock" } else { "unlock" };
    let a = area(id, 0, 0, what)?;
    if take {
        py.detach(|| a.lock_raw(1))
            .map(|_| ())
            .map_err(|e| PyRuntimeError::new_err(format!("sharedarea {id}: {e}")))
    } else {
        a.unlock_raw(1)
            .map_err(|e| PyRuntimeError::new_err(format!("sharedarea {id}: {e}")))
    }
}

/// The shared-area functions, in `headrace._headrace`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sharedarea_read, m)?)?;
    m.add_function(wrap_pyfunction!(sharedarea_write, m)?)?;
    m.add_function(wrap_pyfunction!(sharedarea_readint, m)?)?;
    m.add_function(wrap_pyfunction!(sharedarea_writeint, m)?)?;
    m.add_function(wrap_pyfunction!(sharedarea_add, m)?)?;
    m.add_function(wrap_pyfunction!(sharedarea_memoryview, m)?)?;
    m.add_function(wrap_pyfunction!(sharedarea_lock, m)?)?;
    Ok(())
}
