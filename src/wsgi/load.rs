//! Loading the WSGI app: `--wsgi-file` (executed as a module, as uWSGI does) or
//! `--module mod[:callable]`.

use crate::config::{AppSource, Config};
use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyList;

/// Put the working directory and `--pythonpath` entries on `sys.path`, as uWSGI does.
pub fn prepare_path(py: Python<'_>, config: &Config) -> PyResult<()> {
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    // The virtualenv first, so that --pythonpath entries still come before it.
    if let Some(home) = &config.home {
        add_virtualenv(py, &path, home)?;
    }
    for p in config.pythonpath.iter().rev() {
        path.insert(0, p)?;
    }
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    if !path.contains(&cwd)? {
        path.insert(0, cwd)?;
    }
    Ok(())
}

/// `--home` / `--virtualenv`: uWSGI points the embedded interpreter's home at the virtualenv;
/// headrace's interpreter is already running, so the virtualenv's site-packages (with its
/// `.pth` files, through `site.addsitedir`) goes to the front of `sys.path` instead, which is
/// what the app sees either way. A virtualenv of another Python version has no such directory:
/// that is an error, not a silent fall-back to the server's own packages.
fn add_virtualenv(
    py: Python<'_>,
    path: &Bound<'_, PyList>,
    home: &std::path::Path,
) -> PyResult<()> {
    let v = py.version_info();
    let candidates = [
        home.join(format!("lib/python{}.{}/site-packages", v.major, v.minor)),
        home.join(format!("lib64/python{}.{}/site-packages", v.major, v.minor)),
        home.join("Lib/site-packages"),
    ];
    let Some(site_dir) = candidates.iter().find(|p| p.is_dir()) else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
            "--home/--virtualenv {}: no lib/python{}.{}/site-packages in it (a virtualenv of another Python?)",
            home.display(),
            v.major,
            v.minor
        )));
    };
    let before: Vec<String> = path.extract()?;
    py.import("site")?
        .call_method1("addsitedir", (site_dir.display().to_string(),))?;
    // addsitedir appends; what it added goes first, in its order.
    let after: Vec<String> = path.extract()?;
    let added: Vec<String> = after.into_iter().filter(|p| !before.contains(p)).collect();
    for p in &added {
        path.call_method1("remove", (p,))?;
    }
    for p in added.iter().rev() {
        path.insert(0, p)?;
    }
    Ok(())
}

/// `--py-autoreload N`: start the module watcher (a daemon Python thread; off the request
/// path) in this worker, once its app is loaded.
pub fn start_autoreload(py: Python<'_>, interval: u64, ignore: &[String]) -> PyResult<()> {
    let code = std::ffi::CString::new(include_str!("autoreload.py"))
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let module = PyModule::from_code(py, &code, c"headrace_autoreload.py", c"headrace_autoreload")?;
    let master = crate::sys::proc::getppid();
    module.call_method1("start", (interval, ignore.to_vec(), master))?;
    Ok(())
}

/// Import the app and return its callable.
pub fn load(py: Python<'_>, config: &Config) -> PyResult<Py<PyAny>> {
    let main = config
        .app
        .as_ref()
        .map(|a| load_source(py, a, &config.callable))
        .transpose()?;
    if config.mounts.is_empty() {
        return main.ok_or_else(|| PyTypeError::new_err("no app to serve"));
    }
    // Several apps by mountpoint: one dispatching callable, built once.
    let apps = pyo3::types::PyList::empty(py);
    if let Some(m) = main {
        apps.append(("", m))?;
    }
    for (i, (point, src)) in config.mounts.iter().enumerate() {
        let app = load_source(py, src, &config.callable)?;
        crate::log!(
            "WSGI app {} (mountpoint='{point}') ready (pid: {})",
            i + 1,
            crate::sys::proc::getpid()
        );
        apps.append((point, app))?;
    }
    let code = std::ffi::CString::new(include_str!("mount.py"))
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let module = PyModule::from_code(py, &code, c"headrace_mount.py", c"headrace_mount")?;
    Ok(module
        .call_method1("make", (apps, config.manage_script_name))?
        .unbind())
}

/// Import one app (a file or `MODULE[:CALLABLE]`) and return its callable.
fn load_source(py: Python<'_>, source: &AppSource, default_callable: &str) -> PyResult<Py<PyAny>> {
    let (module, callable, what) = match source {
        AppSource::File(file) => {
            let abs = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            let name: String = format!("uwsgi_file_{}", abs.display())
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            let util = py.import("importlib.util")?;
            let spec = util.call_method1(
                "spec_from_file_location",
                (&name, abs.display().to_string()),
            )?;
            if spec.is_none() {
                return Err(pyo3::exceptions::PyImportError::new_err(format!(
                    "cannot load {}: not a Python file",
                    file.display()
                )));
            }
            let module = util.call_method1("module_from_spec", (&spec,))?;
            py.import("sys")?
                .getattr("modules")?
                .set_item(&name, &module)?;
            spec.getattr("loader")?
                .call_method1("exec_module", (&module,))?;
            (
                module,
                default_callable.to_owned(),
                file.display().to_string(),
            )
        }
        AppSource::Module(spec) => {
            let (m, c) = spec
                .split_once(':')
                .map_or((spec.as_str(), default_callable), |(m, c)| (m, c));
            let module = py
                .import("importlib")?
                .call_method1("import_module", (m,))?;
            (module, c.to_owned(), m.to_owned())
        }
    };
    let app = module.getattr(callable.as_str()).map_err(|_| {
        PyAttributeError::new_err(format!("callable \"{callable}\" not found in {what}"))
    })?;
    if !app.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "\"{callable}\" in {what} is not callable"
        )));
    }
    Ok(app.unbind())
}

/// Flush Python's stdout and stderr (before a fork, an exec or an exit, so that nothing the app
/// printed is lost or printed twice).
pub fn flush_stdio(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}
