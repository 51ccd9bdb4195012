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
    crate::offload::core::import_app_modules(py, config);
    let main = config
        .app
        .as_ref()
        .map(|a| load_source(py, a, config))
        .transpose()?;
    if config.mounts.is_empty() {
        let app = main.ok_or_else(|| PyTypeError::new_err("no app to serve"))?;
        // An ASGI 2 app, or a forced interface the app does not fit, is a load failure.
        interface(py, app.bind(py), &config.asgi.interface)?;
        return Ok(app);
    }
    // Several apps by mountpoint: one dispatching callable, built once.
    let mut apps = Vec::new();
    if let Some(m) = main {
        apps.push((String::new(), m));
    }
    let first_mount = apps.len();
    for (point, src) in &config.mounts {
        apps.push((point.clone(), load_source(py, src, config)?));
    }
    let points: Vec<String> = apps[first_mount..].iter().map(|(p, _)| p.clone()).collect();
    let (app, kind) = mounted(py, apps, config)?;
    for (i, point) in points.iter().enumerate() {
        crate::log!(
            "{kind} app {} (mountpoint='{point}') ready (pid: {})",
            i + 1,
            crate::sys::proc::getpid()
        );
    }
    Ok(app)
}

/// One callable that hands each request to the app of its mountpoint, and what it speaks:
/// WSGI apps get mount.py's dispatcher, ASGI apps (every one, by [`interface`]) the ASGI one
/// in `headrace._asgi_mount`. WSGI and ASGI apps together are refused: a worker runs either
/// the WSGI loop or one event loop, not both.
fn mounted(
    py: Python<'_>,
    apps: Vec<(String, Py<PyAny>)>,
    config: &Config,
) -> PyResult<(Py<PyAny>, &'static str)> {
    let kinds = apps
        .iter()
        .map(|(_, app)| interface(py, app.bind(py), &config.asgi.interface))
        .collect::<PyResult<Vec<String>>>()?;
    let asgi = kinds.iter().filter(|k| *k == "asgi").count();
    if asgi == 0 {
        let code = std::ffi::CString::new(include_str!("mount.py"))
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let module = PyModule::from_code(py, &code, c"headrace_mount.py", c"headrace_mount")?;
        let app = module.call_method1("make", (apps, config.manage_script_name))?;
        return Ok((app.unbind(), "WSGI"));
    }
    if asgi < kinds.len() {
        let list = apps
            .iter()
            .zip(&kinds)
            .map(|((point, _), kind)| format!("'{point}' {}", kind.to_uppercase()))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(PyTypeError::new_err(format!(
            "--mount: WSGI and ASGI apps cannot be mounted in one headrace ({list}); \
             serve them from two instances"
        )));
    }
    let app = py
        .import("headrace._asgi_mount")?
        .call_method1("make", (apps, config.asgi.lifespan.as_str()))?;
    Ok((app.unbind(), "ASGI"))
}

/// Import one app (a file or `MODULE[:CALLABLE]`) and return its callable.
fn load_source(py: Python<'_>, source: &AppSource, config: &Config) -> PyResult<Py<PyAny>> {
    let default_callable = config.callable.as_str();
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
    // uWSGI's `uwsgi.applications` (or the module's `applications`): {mountpoint: app}.
    if let Some(apps) = crate::offload::core::applications(py, &module)? {
        return Ok(mounted(py, apps, config)?.0);
    }
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

/// What the loaded callable speaks, `"wsgi"` or `"asgi"` (`forced` is `--interface`): an
/// `async def app(scope, receive, send)`, or an object whose `__call__` is one, is ASGI 3. An
/// ASGI 2 app (a class taking the scope) is an error. Decided from the code objects, without
/// importing anything: a WSGI app loads exactly as before (even after `--uid` dropped the
/// rights to read the standard library).
pub fn interface(py: Python<'_>, app: &Bound<'_, PyAny>, forced: &str) -> PyResult<String> {
    if forced == "wsgi" {
        return Ok("wsgi".to_owned());
    }
    let is_class = app.is_instance_of::<pyo3::types::PyType>();
    let call = if is_class {
        app.getattr("__call__").ok()
    } else {
        app.get_type().getattr("__call__").ok()
    };
    let async_call = call.as_ref().is_some_and(is_coroutine_function);
    if is_class {
        if async_call {
            return Err(PyTypeError::new_err(format!(
                "{} is an ASGI 2 application (a class instantiated with the scope); headrace \
                 serves ASGI 3: wrap it with asgiref.compatibility.guarantee_single_callable",
                app.repr()?
            )));
        }
        return Ok(if forced == "asgi" { "asgi" } else { "wsgi" }.to_owned());
    }
    if is_coroutine_function(app) || async_call {
        return Ok("asgi".to_owned());
    }
    if forced == "asgi" {
        let argcount = app
            .getattr("__code__")
            .and_then(|c| c.getattr("co_argcount"))
            .and_then(|n| n.extract::<usize>())
            .ok();
        if argcount == Some(1) {
            return Err(PyTypeError::new_err(format!(
                "{} takes only the scope: an ASGI 2 application; headrace serves ASGI 3",
                app.repr()?
            )));
        }
        return Ok("asgi".to_owned());
    }
    let _ = py;
    Ok("wsgi".to_owned())
}

/// `inspect.iscoroutinefunction` without importing `inspect`: the code object's
/// `CO_COROUTINE` flag, through bound methods and `functools.partial`, or the marker that
/// `inspect.markcoroutinefunction` / asgiref set.
fn is_coroutine_function(obj: &Bound<'_, PyAny>) -> bool {
    const CO_COROUTINE: u32 = 0x80;
    let mut f = obj.clone();
    for _ in 0..8 {
        let partial = f.get_type().name().is_ok_and(|n| n == "partial");
        let inner = if partial {
            f.getattr("func")
        } else {
            f.getattr("__func__")
        };
        if let Ok(inner) = inner {
            f = inner;
        } else {
            break;
        }
    }
    if f.hasattr("_is_coroutine_marker").unwrap_or(false) {
        return true;
    }
    f.getattr("__code__")
        .and_then(|c| c.getattr("co_flags"))
        .and_then(|n| n.extract::<u32>())
        .is_ok_and(|flags| flags & CO_COROUTINE != 0)
}

/// The app is served as ASGI (see [`interface`]; the load already refused what cannot be).
#[must_use]
pub fn is_asgi(py: Python<'_>, app: &Bound<'_, PyAny>, config: &Config) -> bool {
    // Mounted apps are served through one dispatcher, WSGI or ASGI (see `mounted`), which
    // the same detection reads.
    match interface(py, app, &config.asgi.interface) {
        Ok(kind) => kind == "asgi",
        Err(e) => {
            e.print(py);
            false
        }
    }
}
