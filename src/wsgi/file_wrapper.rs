//! `wsgi.file_wrapper`: iterable over a file-like object; for a real file the server sends it
//! with sendfile(2) instead of iterating.

use pyo3::prelude::*;

/// `environ['wsgi.file_wrapper'](filelike, blksize=8192)`.
/// Frozen: the server reads it while the app's other threads may hold it, without a borrow.
#[pyclass(module = "headrace", frozen)]
pub struct FileWrapper {
    /// The wrapped object.
    pub filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        Self {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let chunk = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        Ok((chunk.len()? > 0).then_some(chunk))
    }

    /// Close the wrapped object, if it can be closed (PEP 3333).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}

impl FileWrapper {
    /// The wrapped object's file descriptor and current position, when it is a regular file
    /// that sendfile(2) can send: `(fd, offset, bytes to the end)`.
    #[must_use]
    pub fn sendable(&self, py: Python<'_>) -> Option<(i32, u64, u64)> {
        let f = self.filelike.bind(py);
        let fd: i32 = f.call_method0("fileno").ok()?.extract().ok()?;
        let size = crate::sys::fd::regular_file_size(fd)?;
        // tell() accounts for Python-level buffering; flush-free since we only read.
        let pos: u64 = f.call_method0("tell").ok()?.extract().ok()?;
        Some((fd, pos, size.saturating_sub(pos)))
    }
}
