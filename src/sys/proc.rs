//! Processes and signals: fork, wait, kill, the master's signalfd and the worker's stop pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// A failed system call, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// `fork(2)` failed.
    #[error("fork failed: {0}")]
    Fork(io::Error),
    /// Setting up signal handling failed.
    #[error("signal setup failed: {0}")]
    Signal(io::Error),
}

/// Which side of a fork we are on.
pub enum ForkResult {
    /// In the parent; the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// Fork the process, with CPython's pre- and post-fork hooks around it.
///
/// The caller holds the GIL (the master always does).
pub fn fork() -> Result<ForkResult, SysError> {
    super::py::before_fork();
    // SAFETY: the master runs a single thread when it forks (DESIGN.md: it never starts one), so
    // the child cannot inherit a lock held by a thread that no longer exists. The child calls
    // only CPython's after-fork hook and async-signal-safe functions before it enters its loop.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = io::Error::last_os_error();
        super::py::after_fork_parent();
        return Err(SysError::Fork(err));
    }
    if pid == 0 {
        super::py::after_fork_child();
        Ok(ForkResult::Child)
    } else {
        super::py::after_fork_parent();
        Ok(ForkResult::Parent(pid))
    }
}

/// This process's pid.
#[must_use]
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The parent's pid.
#[must_use]
pub fn getppid() -> i32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// Send `sig` to `pid`. Errors (the process is already gone) are ignored.
pub fn kill(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill with a positive pid only signals that process.
        unsafe { libc::kill(pid, sig) };
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// `exit(code)`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Reap one exited child without blocking.
#[must_use]
pub fn reap() -> Option<(i32, ExitStatus)> {
    let mut status: libc::c_int = 0;
    // SAFETY: status is a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let how = if libc::WIFSIGNALED(status) {
        ExitStatus::Signal(libc::WTERMSIG(status))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    };
    Some((pid, how))
}

/// A signal's name as uWSGI and the shell print it.
#[must_use]
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "signal",
    }
}

/// Signals the master handles through its signalfd.
pub const MASTER_SIGNALS: [i32; 7] = [
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t.
    unsafe { libc::sigemptyset(&raw mut set) };
    for &s in signals {
        // SAFETY: s is a valid signal number.
        unsafe { libc::sigaddset(&raw mut set, s) };
    }
    set
}

/// The master's signal source: the signals are blocked and read from a signalfd, so the master
/// sees them in its poll loop and never runs code in a signal handler.
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Block [`MASTER_SIGNALS`] and open a nonblocking signalfd for them.
    pub fn new() -> Result<Self, SysError> {
        let set = sigset(&MASTER_SIGNALS);
        // SAFETY: set is a valid sigset; blocking signals in the calling (only) thread.
        let r =
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(SysError::Signal(io::Error::from_raw_os_error(r)));
        }
        // SAFETY: set is valid; -1 asks for a new fd.
        let fd =
            unsafe { libc::signalfd(-1, &raw const set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(SysError::Signal(io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptor we own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor to poll.
    #[must_use]
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next pending signal, if any.
    #[must_use]
    pub fn next(&self) -> Option<i32> {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: info is a writable buffer of `size` bytes.
        let r = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                std::ptr::addr_of_mut!(info).cast(),
                size,
            )
        };
        if usize::try_from(r).ok() == Some(size) {
            i32::try_from(info.ssi_signo).ok()
        } else {
            None
        }
    }
}

/// Wait up to `timeout_ms` for `fd` to become readable (the master's one blocking call).
#[must_use]
pub fn poll_readable(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: pfd is one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, timeout_ms) > 0 }
}

static STOP_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    let fd = STOP_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; the pipe is nonblocking, so a full pipe (a stop
        // is already pending) just fails.
        unsafe { libc::write(fd, std::ptr::from_ref(&b).cast(), 1) };
    }
}

fn set_handler(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: sigaction is plain data; we set a handler (or SIG_DFL/SIG_IGN) with an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut sa.sa_mask);
        libc::sigaction(sig, &raw const sa, std::ptr::null_mut());
    }
}

/// In a freshly forked worker: undo the master's signal mask and handlers. SIGTERM writes to the
/// stop pipe (graceful stop, seen by every serving thread's epoll); SIGINT and SIGQUIT keep their
/// default action (immediate death); SIGHUP and SIGPIPE are ignored; a master that dies takes the
/// worker with it (PR_SET_PDEATHSIG).
pub fn worker_signals(stop_write: RawFd) {
    STOP_PIPE.store(stop_write, Ordering::Relaxed);
    set_handler(
        libc::SIGTERM,
        on_stop_signal as *const () as libc::sighandler_t,
    );
    set_handler(libc::SIGINT, libc::SIG_DFL);
    set_handler(libc::SIGQUIT, libc::SIG_DFL);
    set_handler(libc::SIGHUP, libc::SIG_IGN);
    set_handler(libc::SIGPIPE, libc::SIG_IGN);
    set_handler(libc::SIGUSR1, libc::SIG_IGN);
    set_handler(libc::SIGUSR2, libc::SIG_IGN);
    set_handler(libc::SIGCHLD, libc::SIG_DFL);
    let set = sigset(&MASTER_SIGNALS);
    // SAFETY: unblocking in the only thread of the new child.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const set, std::ptr::null_mut()) };
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// Exit the process at once, without running Rust or C atexit machinery (the worker has already
/// flushed what it must).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process; nothing after it runs.
    unsafe { libc::_exit(code) }
}

/// Replace this process's image (same pid) with `argv[0]` run with `argv`. Returns only on
/// failure.
#[must_use]
pub fn exec(path: &str, argv: &[String]) -> io::Error {
    use std::ffi::CString;
    let Ok(cpath) = CString::new(path) else {
        return io::Error::new(io::ErrorKind::InvalidInput, "NUL in executable path");
    };
    let cargs: Result<Vec<CString>, _> = argv.iter().map(|a| CString::new(a.as_str())).collect();
    let Ok(cargs) = cargs else {
        return io::Error::new(io::ErrorKind::InvalidInput, "NUL in an argument");
    };
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: cpath and every pointer in ptrs point to live NUL-terminated strings; the array
    // ends with NULL. execv only returns on failure.
    unsafe { libc::execv(cpath.as_ptr(), ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// Let `fd` survive exec (for handing listening sockets to the re-exec'd master).
pub fn keep_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFD/F_SETFD on an open fd.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Close `fd` on exec again (sockets adopted after a re-exec must not leak into programs the
/// app runs).
pub fn close_on_exec(fd: RawFd) {
    // SAFETY: fcntl on an open fd; failure leaves the flag as it was.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Take ownership of an inherited descriptor (systemd socket activation, re-exec).
///
/// # Safety contract
/// The caller names a descriptor that was handed to this process and that nothing else owns;
/// a descriptor that is not open is reported as an error.
pub fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fd is open and, by the caller's contract, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lookup_id(name: &str, group: bool) -> io::Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a user or group name"))?;
    // SAFETY: getpwnam/getgrnam return a pointer to static storage or NULL; the master is
    // single-threaded when it calls this, so the storage is not shared.
    let id = unsafe {
        if group {
            let g = libc::getgrnam(cname.as_ptr());
            (!g.is_null()).then(|| (*g).gr_gid)
        } else {
            let p = libc::getpwnam(cname.as_ptr());
            (!p.is_null()).then(|| (*p).pw_uid)
        }
    };
    id.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no such {} \"{name}\"",
                if group { "group" } else { "user" }
            ),
        )
    })
}

/// `--uid`/`--gid`: drop privileges (group first, supplementary groups cleared, then user).
pub fn drop_privileges(uid: Option<&str>, gid: Option<&str>) -> io::Result<()> {
    if let Some(g) = gid {
        let gid = lookup_id(g, true)?;
        // SAFETY: setgroups with an empty list, then setgid; both only change credentials.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(gid) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    if let Some(u) = uid {
        let uid = lookup_id(u, false)?;
        // SAFETY: setuid only changes credentials.
        if unsafe { libc::setuid(uid) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
