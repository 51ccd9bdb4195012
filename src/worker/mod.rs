//! A worker process: its serving threads, each with its own epoll loop over the shared
//! listening sockets and its own connections. A thread accepts only while it is idle, one
//! connection at a time, so idle workers pick up new work first. A keep-alive connection whose
//! next request waits behind its busy thread is handed to a free one (see `handoff`).

mod conn;
mod event_loop;
mod handoff;
pub(crate) mod recycle;
mod static_hit;

use crate::config::Config;
use crate::hooks::Phase;
use crate::scoreboard::Scoreboard;
use crate::wsgi::{App, Settings};
use pyo3::prelude::*;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once this worker process is stopping (SIGTERM, retirement, a replaced master). A static
/// rather than a field of `Worker` because responses, which are Python objects and so
/// `'static`, read it to decide whether their connection ends with them.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// A socket the master bound, as a worker sees it.
pub struct Listener {
    /// The listening socket (nonblocking), inherited across fork.
    pub fd: OwnedFd,
    /// SERVER_NAME for requests on it.
    pub server_name: String,
    /// SERVER_PORT for requests on it.
    pub server_port: String,
    /// The path of a unix socket (no REMOTE_ADDR, no TCP options; removed by --vacuum).
    pub unix_path: Option<std::path::PathBuf>,
    /// How it is described in the log.
    pub desc: String,
    /// What it speaks.
    pub kind: crate::config::SocketKind,
}

/// Everything a worker's threads share.
pub struct Worker<'a> {
    /// 1-based worker id.
    pub id: usize,
    /// Scoreboard slot.
    pub slot: usize,
    /// When this worker retires by itself.
    pub recycle: recycle::Recycle,
    /// This process's pid.
    pub pid: i32,
    /// The configuration.
    pub config: &'a Config,
    /// The sockets to accept on.
    pub listeners: Vec<&'a Listener>,
    /// Shared counters.
    pub scoreboard: &'a Scoreboard,
    /// The app.
    pub app: App,
    /// Read end of the stop pipe (readable once SIGTERM arrived).
    pub stop_fd: RawFd,
    /// Write end of the stop pipe: a stop decided inside the worker wakes every thread too.
    pub stop_write: RawFd,
    /// Indexes in `listeners` of the private sockets the router reaches this worker on, one
    /// per serving thread (`links[core]`): the router then knows which thread each of its links
    /// lands on, so two links never queue behind one thread while another idles.
    pub links: Vec<usize>,
    /// What the hand-off watcher sees of each serving thread, by core.
    threads: Vec<handoff::ThreadShare>,
    /// Where idle keep-alive connections are handed between workers (direct mode with more
    /// than one thread in all).
    handoff: Option<handoff::Handoff>,
    /// The hand-off socket has been drained and shut (by the first thread to stop).
    handoff_drained: AtomicBool,
    /// Serving settings.
    pub settings: Settings,
}

impl Worker<'_> {
    /// The worker is stopping.
    #[must_use]
    pub fn stopping(&self) -> bool {
        STOPPING.load(Ordering::Relaxed)
    }

    /// The stop flag, for the responses that must end their connection when it is set.
    #[must_use]
    pub fn stop_flag() -> &'static AtomicBool {
        &STOPPING
    }

    /// Start stopping: set the flag and wake every serving thread (through the stop pipe),
    /// so that none keeps accepting while another decided to stop.
    pub fn stop(&self) {
        if !STOPPING.swap(true, Ordering::Relaxed) {
            // Nonblocking pipe: if it is full, a stop is already pending anyway.
            let _ = crate::sys::fd::write_all(self.stop_write, &[1]);
        }
    }

    /// Retire for `reason` (logged once) and stop.
    pub fn retire(&self, reason: &str) {
        if self.recycle.retire(self.id, self.pid, reason) {
            self.stop();
        }
    }

    /// Listener `idx` is one of the router's links.
    #[must_use]
    pub fn is_link(&self, idx: usize) -> bool {
        self.links.contains(&idx)
    }

    /// Claim the hand-off socket for draining: `true` for the first caller only.
    fn claim_handoff_drain(&self) -> bool {
        !self.handoff_drained.swap(true, Ordering::AcqRel)
    }
}

/// Exit code of a worker whose app failed to load (uWSGI's UWSGI_FAILED_APP_CODE).
pub const FAILED_APP_CODE: i32 = 22;
/// Exit code of an ASGI worker whose lifespan startup failed (Gunicorn's worker boot error,
/// Uvicorn's startup failure). The master learns it from the slot's `startup_failed` and,
/// before any worker served, stops the server.
pub const LIFESPAN_FAILED_CODE: i32 = 3;

/// The preloaded app, or (`--lazy-apps`) the app loaded now; a worker whose app does not load
/// exits with [`FAILED_APP_CODE`].
fn app_of(
    py: Python<'_>,
    config: &Config,
    preloaded: Option<&Py<PyAny>>,
    id: usize,
    pid: i32,
) -> Py<PyAny> {
    match preloaded {
        Some(app) => app.clone_ref(py),
        None => match crate::wsgi::load::load(py, config) {
            Ok(app) => {
                let kind = if crate::wsgi::load::is_asgi(py, app.bind(py), config) {
                    "ASGI"
                } else {
                    "WSGI"
                };
                crate::log!("{kind} app 0 (mountpoint='') ready in worker {id} (pid: {pid})");
                app
            }
            Err(err) => {
                err.print(py);
                crate::log!("OOPS ! failed loading app in worker {id} (pid {pid})");
                crate::wsgi::load::flush_stdio(py);
                crate::sys::proc::exit_now(FAILED_APP_CODE);
            }
        },
    }
}

/// [`app_of`], with the pre/post-app hooks around it when the app is loaded here
/// (`--lazy-apps`), as uWSGI runs them wherever it loads the app.
fn hooked_app_of(
    py: Python<'_>,
    config: &Config,
    preloaded: Option<&Py<PyAny>>,
    id: usize,
    pid: i32,
) -> Py<PyAny> {
    let lazy = preloaded.is_none();
    if lazy {
        py.detach(|| config.hooks.run_in_worker(Phase::PreApp));
    }
    let callable = app_of(py, config, preloaded, id, pid);
    if lazy {
        py.detach(|| config.hooks.run_in_worker(Phase::PostApp));
    }
    callable
}

/// uWSGI's accepting hooks: every worker's, then worker 1's.
fn accepting_hooks(config: &Config, id: usize) {
    config.hooks.run_in_worker(Phase::Accepting);
    if id == 1 {
        config.hooks.run_in_worker(Phase::Accepting1);
    }
}

/// Run a freshly forked worker until it is told to stop; never returns.
#[allow(
    clippy::too_many_lines,
    reason = "the worker's start, in order; the ASGI hook added its branch"
)]
pub fn run(
    py: Python<'_>,
    (id, slot): (usize, usize),
    config: &Config,
    listeners: &[Listener],
    scoreboard: &Scoreboard,
    preloaded: Option<&Py<PyAny>>,
    router_socket: Option<&str>,
) -> ! {
    let pid = crate::sys::proc::getpid();
    crate::offload::set_role(crate::offload::Role::Worker(id));
    crate::wsgi::response::set_added_headers(&config.add_headers);
    crate::wsgi::set_donotlog(&config.donotlog);
    crate::routing::set_rules(py, &config.routes);
    match config.titles.child(&format!("headrace worker {id}")) {
        Some(title) => crate::sys::proc::set_title(&title),
        None => crate::sys::proc::restore_title(),
    }
    let Ok((stop_read, stop_write)) = crate::sys::fd::pipe() else {
        crate::log!("headrace: worker {id} (pid: {pid}) cannot create its stop pipe");
        crate::sys::proc::exit_now(1);
    };
    crate::sys::proc::worker_signals(std::os::fd::AsRawFd::as_raw_fd(&stop_write));
    scoreboard.slot(slot).pid.store(pid, Ordering::Relaxed);
    crate::offload::core::worker_started(id, slot, pid);
    register_traceback_dump(py);
    let callable = hooked_app_of(py, config, preloaded, id, pid);
    crate::offload::after_fork(py);
    let (autoreload, ignore) = &config.py_autoreload;
    if *autoreload > 0 {
        if let Err(e) = crate::wsgi::load::start_autoreload(py, *autoreload, ignore) {
            crate::log!("headrace: worker {id} cannot start --py-autoreload: {e}");
        }
    }
    py.detach(|| accepting_hooks(config, id));
    // The router's sockets are the router's; a worker serves the others and, when there is a
    // router, its own private socket for it.
    let private = bind_links(router_socket, config, id, pid);
    for l in &private {
        // Tests and operators find the links by this line.
        crate::log!("headrace: worker {id} (pid: {pid}) serves the {}", l.desc);
    }
    let listeners: Vec<&Listener> = listeners
        .iter()
        .filter(|l| l.kind != crate::config::SocketKind::Router)
        .chain(private.iter())
        .collect();
    let links: Vec<usize> = (listeners.len() - private.len()..listeners.len()).collect();
    if crate::wsgi::load::is_asgi(py, callable.bind(py), config) {
        let fds = (stop_read, stop_write);
        serve_asgi(
            py,
            (id, slot, pid),
            config,
            (&listeners, &links),
            scoreboard,
            callable,
            fds,
        );
    }
    if config.asgi.limit_concurrency > 0 {
        crate::log!(
            "headrace: worker {id} (pid: {pid}) serves a WSGI app: --limit-concurrency is for \
             ASGI apps only (a WSGI worker runs at most --threads {} requests at once)",
            config.threads
        );
    }
    let servers: Vec<(String, String)> = listeners
        .iter()
        .map(|l| (l.server_name.clone(), l.server_port.clone()))
        .collect();
    let constants = crate::wsgi::environ::Constants {
        servers: &servers,
        multithread: config.threads > 1,
        multiprocess: config.processes > 1,
    };
    let app = match App::new(py, callable, &constants) {
        Ok(a) => a,
        Err(err) => {
            err.print(py);
            crate::sys::proc::exit_now(1);
        }
    };
    let threads = thread_shares(config.threads, id, pid);
    let handoff = bind_handoff(config, &listeners, id, pid);
    let worker = Worker {
        id,
        slot,
        recycle: recycle::Recycle::new(&config.supervision),
        pid,
        config,
        listeners,
        scoreboard,
        app,
        stop_fd: std::os::fd::AsRawFd::as_raw_fd(&stop_read),
        stop_write: std::os::fd::AsRawFd::as_raw_fd(&stop_write),
        links,
        threads,
        handoff,
        handoff_drained: AtomicBool::new(false),
        settings: Settings::for_worker(config, id),
    };
    scoreboard.slot(slot).ready.store(1, Ordering::Release);
    // Threads 1.. run in scoped threads; thread 0 is this one. The GIL is released while
    // joining so that the others can finish.
    py.detach(|| {
        std::thread::scope(|s| {
            for core in 1..config.threads {
                let w = &worker;
                s.spawn(move || Python::attach(|py| event_loop::run(py, w, core)));
            }
            if let Some(h) = &worker.handoff {
                let w = &worker;
                s.spawn(move || handoff::watch(w, h));
            }
            Python::attach(|py| event_loop::run(py, &worker, 0));
        });
    });
    py.detach(crate::offload::signals::finish_handlers);
    run_atexit(py);
    drop(stop_write);
    crate::sys::proc::exit_now(0);
}

/// Serve an ASGI app: one event loop in this thread (see `crate::asgi`); never returns.
fn serve_asgi(
    py: Python<'_>,
    (id, slot, pid): (usize, usize, i32),
    config: &Config,
    (listeners, links): (&[&Listener], &[usize]),
    scoreboard: &Scoreboard,
    app: Py<PyAny>,
    (stop_read, stop_write): (OwnedFd, OwnedFd),
) -> ! {
    let owned = match scoreboard.duplicate() {
        Ok(s) => s,
        Err(e) => {
            crate::log!("headrace: worker {id} (pid: {pid}) cannot map the scoreboard: {e}");
            crate::sys::proc::exit_now(1);
        }
    };
    let ctx = crate::asgi::Ctx {
        id,
        slot,
        pid,
        master: crate::sys::proc::getppid(),
        scoreboard: owned,
        recycle: recycle::Recycle::new(&config.supervision),
        settings: Settings::for_worker(config, id),
        stop_write: std::os::fd::AsRawFd::as_raw_fd(&stop_write),
        inflight: std::sync::atomic::AtomicUsize::new(0),
        static_files: config.static_files.clone(),
    };
    let socks: Vec<(&Listener, bool)> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, links.contains(&i)))
        .collect();
    let stop_fd = std::os::fd::AsRawFd::as_raw_fd(&stop_read);
    let code = match crate::asgi::serve(py, ctx, app, &socks, stop_fd, config) {
        Ok(FAILED_APP_CODE) => {
            // Told through the slot, not only the exit code: an app may exit with any code.
            scoreboard
                .slot(slot)
                .startup_failed
                .store(1, std::sync::atomic::Ordering::Release);
            LIFESPAN_FAILED_CODE
        }
        Ok(code) => code,
        Err(err) => {
            err.print(py);
            1
        }
    };
    if code == 0 {
        run_atexit(py);
    }
    crate::wsgi::load::flush_stdio(py);
    drop(stop_write);
    crate::sys::proc::exit_now(code);
}

/// One epoll and hand-off share per serving thread; a worker without them cannot serve.
fn thread_shares(threads: usize, id: usize, pid: i32) -> Vec<handoff::ThreadShare> {
    match (0..threads)
        .map(|_| handoff::ThreadShare::new())
        .collect::<std::io::Result<Vec<_>>>()
    {
        Ok(t) => t,
        Err(e) => {
            crate::log!("headrace: worker {id} (pid: {pid}) cannot create its epolls: {e}");
            crate::sys::proc::exit_now(1);
        }
    }
}

/// The hand-off socket, when connections can move: HTTP listeners served by the workers
/// (direct mode) and another thread somewhere to take them.
fn bind_handoff(
    config: &Config,
    listeners: &[&Listener],
    id: usize,
    pid: i32,
) -> Option<handoff::Handoff> {
    if config.processes * config.threads < 2 {
        return None;
    }
    let http = listeners
        .iter()
        .find(|l| l.kind == crate::config::SocketKind::Http)?;
    match handoff::Handoff::bind(&http.fd, pid) {
        Ok(h) => Some(h),
        Err(e) => {
            crate::log!(
                "headrace: worker {id} (pid: {pid}) cannot bind its hand-off socket, keep-alive connections stay with their thread: {e}"
            );
            None
        }
    }
}

/// With a router, bind one link socket per serving thread (a worker that cannot is no use to
/// the router: it exits, and the master respawns it).
fn bind_links(router_socket: Option<&str>, config: &Config, id: usize, pid: i32) -> Vec<Listener> {
    let Some(name) = router_socket else {
        return Vec::new();
    };
    (0..config.threads)
        .map(|core| {
            bind_private(&crate::router::link_name(name, core), config.listen).unwrap_or_else(|e| {
                crate::log!(
                    "headrace: worker {id} (pid: {pid}) cannot bind its router socket: {e}"
                );
                crate::sys::proc::exit_now(1);
            })
        })
        .collect()
}

/// Bind the abstract unix socket the router reaches this worker on.
fn bind_private(name: &str, backlog: i32) -> std::io::Result<Listener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let l = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    let fd: OwnedFd = l.into();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    crate::sys::fd::listen(raw, backlog)?;
    crate::sys::fd::set_nonblocking(raw)?;
    Ok(Listener {
        fd,
        server_name: "localhost".to_owned(),
        server_port: String::new(),
        unix_path: None,
        desc: format!("router link @{name}"),
        kind: crate::config::SocketKind::Uwsgi,
    })
}

/// SIGUSR2 makes Python's faulthandler write every thread's traceback to stderr, straight from
/// the signal handler: it works while a thread holds the GIL in a stuck request, which is when
/// harakiri needs it.
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

/// A worker that stops gracefully runs the app's atexit handlers, as a normal interpreter
/// exit would (`uwsgi.atexit` first, as uWSGI).
fn run_atexit(py: Python<'_>) {
    crate::offload::core::run_uwsgi_atexit(py);
    if let Ok(atexit) = py.import("atexit") {
        if let Err(e) = atexit.call_method0("_run_exitfuncs") {
            e.print(py);
        }
    }
    crate::wsgi::load::flush_stdio(py);
}
