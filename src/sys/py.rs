//! The CPython calls PyO3 does not wrap: the fork hooks, Latin-1 decoding and `PyIter_Send`.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// `PyOS_BeforeFork`: take the import lock and friends so the child gets them in a sane state.
pub(super) fn before_fork() {
    // SAFETY: called with the GIL held (the master holds it whenever it forks).
    unsafe { ffi::PyOS_BeforeFork() };
}

/// `PyOS_AfterFork_Parent`.
pub(super) fn after_fork_parent() {
    // SAFETY: called in the parent right after fork with the GIL held.
    unsafe { ffi::PyOS_AfterFork_Parent() };
}

/// `PyOS_AfterFork_Child`: must be the child's first Python call.
pub(super) fn after_fork_child() {
    // SAFETY: called in the child right after fork; the forking thread held the GIL, and it is
    // the only thread in the child.
    unsafe { ffi::PyOS_AfterFork_Child() };
}

/// Decode bytes as Latin-1 (PEP 3333's "native string" rule for environ values).
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("value too long"))?;
    // SAFETY: bytes is a valid buffer of len bytes; the GIL is held (we have `py`). The result is
    // a new reference or NULL with an exception set, which from_owned_ptr_or_err handles.
    unsafe {
        let ptr = ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null());
        Bound::from_owned_ptr_or_err(py, ptr).map(|b| b.cast_into_unchecked())
    }
}

/// `coro.send(value)` through `PyIter_Send` (no bound method, no `StopIteration` object when
/// the coroutine returns): `Some(yielded)`, or `None` once it returned (its value dropped).
/// Works on any object with `send` (native coroutines and generators take the fast path).
pub fn coro_send(coro: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
    let py = coro.py();
    let mut result: *mut pyo3::ffi::PyObject = std::ptr::null_mut();
    // SAFETY: both objects are alive for the call (borrowed references); PyIter_Send stores a
    // new reference in `result` on NEXT and RETURN, and sets an exception on ERROR.
    let status = unsafe { pyo3::ffi::PyIter_Send(coro.as_ptr(), value.as_ptr(), &raw mut result) };
    match status {
        pyo3::ffi::PySendResult::PYGEN_NEXT => {
            // SAFETY: a new, non-NULL reference (see above), owned from here on.
            Ok(Some(unsafe { Bound::from_owned_ptr(py, result) }.unbind()))
        }
        pyo3::ffi::PySendResult::PYGEN_RETURN => {
            // SAFETY: as above; the value (None for an ASGI app) is released at once.
            drop(unsafe { Bound::from_owned_ptr(py, result) });
            Ok(None)
        }
        pyo3::ffi::PySendResult::PYGEN_ERROR => Err(PyErr::fetch(py)),
    }
}

/// Read up to `n` bytes from `fd` straight into a new `bytes` object (the kernel copies into
/// the object's own storage: no buffer in between). Meant for `n` bytes the socket is known
/// to hold (`FIONREAD`); a shorter read keeps what came, in a copy of the prefix. `Ok(None)`:
/// end of stream.
pub fn read_bytes<'py>(
    py: Python<'py>,
    fd: std::os::fd::RawFd,
    n: usize,
) -> std::io::Result<Option<Bound<'py, pyo3::types::PyBytes>>> {
    use pyo3::types::PyBytesMethods;
    let len = ffi::Py_ssize_t::try_from(n).map_err(std::io::Error::other)?;
    // SAFETY: a NULL source asks CPython for an uninitialised bytes object of `len` bytes.
    let raw = unsafe { ffi::PyBytes_FromStringAndSize(std::ptr::null(), len) };
    if raw.is_null() {
        return Err(std::io::Error::other(PyErr::fetch(py).to_string()));
    }
    // SAFETY: `raw` is a new, non-NULL reference to a bytes object, owned from here on.
    let bytes: Bound<'py, pyo3::types::PyBytes> =
        unsafe { Bound::from_owned_ptr(py, raw).cast_into_unchecked() };
    // SAFETY: the object is ours alone (not yet shared with Python code) and its storage is
    // `n` writable bytes; read(2) writes at most `n` of them.
    let got = unsafe { libc::read(fd, ffi::PyBytes_AsString(raw).cast(), n) };
    let got = usize::try_from(got).map_err(|_| std::io::Error::last_os_error())?;
    if got == 0 && n > 0 {
        return Ok(None);
    }
    if got == n {
        return Ok(Some(bytes));
    }
    // A short read: only the first `got` bytes were written; keep a copy of them.
    Ok(Some(pyo3::types::PyBytes::new(
        py,
        &bytes.as_bytes()[..got],
    )))
}
