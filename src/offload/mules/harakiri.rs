//! `--mule-harakiri`: a watchdog thread inside the mule. The mule arms it around each message
//! handler and each `@mulefunc`/`@mulemsg`/`@farm` call; when one runs past the limit the
//! watchdog logs the HARAKIRI line, makes faulthandler write every thread's traceback
//! (SIGUSR2) and kills the process; the master respawns the mule. It lives in the mule, not
//! the master, because only the mule knows when a task starts and ends, and it needs no lock
//! the stuck task could hold (the GIL included).

use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// Time given to faulthandler to write the traceback before SIGKILL.
const TRACEBACK_GRACE: Duration = Duration::from_millis(300);

struct Watch {
    limit: Duration,
    /// The running task's deadline and what it is.
    task: Mutex<Option<(Instant, String)>>,
    changed: Condvar,
}

static WATCH: OnceLock<Watch> = OnceLock::new();

/// Start the watchdog of mule `id` (in the mule, once). A zero `limit` starts nothing.
pub fn start(id: usize, limit: Duration) -> std::io::Result<()> {
    if limit.is_zero() {
        return Ok(());
    }
    let _ = WATCH.set(Watch {
        limit,
        task: Mutex::new(None),
        changed: Condvar::new(),
    });
    std::thread::Builder::new()
        .name("mule-harakiri".to_owned())
        .spawn(move || watch(id))
        .map(drop)
}

/// A task starts (`Some(what)`) or ends (`None`).
pub fn set(what: Option<&str>) {
    let Some(w) = WATCH.get() else { return };
    let mut task = w.task.lock().unwrap_or_else(PoisonError::into_inner);
    *task = what.map(|s| (Instant::now() + w.limit, s.to_owned()));
    w.changed.notify_one();
}

fn watch(id: usize) {
    let Some(w) = WATCH.get() else { return };
    let mut task = w.task.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let Some((deadline, what)) = task.clone() else {
            task = w.changed.wait(task).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let now = Instant::now();
        if now < deadline {
            task = w
                .changed
                .wait_timeout(task, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            continue;
        }
        let pid = crate::sys::proc::getpid();
        crate::log!(
            "HARAKIRI: mule {id} (pid {pid}) stuck {}s on {what}, killing",
            w.limit.as_secs()
        );
        drop(task);
        crate::sys::proc::kill(pid, libc::SIGUSR2);
        std::thread::sleep(TRACEBACK_GRACE);
        crate::sys::proc::kill(pid, libc::SIGKILL);
        return;
    }
}
