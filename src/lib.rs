//! headrace: a Python application server with uWSGI's words and a Rust core.
//!
//! This file holds the Python module only; see DESIGN.md for the map.

pub mod asgi;
pub mod config;
pub mod hooks;
pub mod http;
pub mod log;
pub mod master;
pub mod offload;
pub mod router;
pub mod routing;
pub mod scoreboard;
pub mod static_files;
pub mod stats;
pub mod sys;
pub mod uwsgi_proto;
pub mod worker;
pub mod ws;
pub mod wsgi;

use pyo3::prelude::*;

/// `headrace._headrace.run(argv)`: the console script's body. Returns the exit code.
#[pyfunction]
#[allow(
    clippy::needless_pass_by_value,
    reason = "PyO3 converts the Python list into an owned Vec"
)]
fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    master::main(py, &argv)
}

#[pymodule]
fn _headrace(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    wsgi::register(m)?;
    offload::register(m)?;
    asgi::register(m)?;
    Ok(())
}
