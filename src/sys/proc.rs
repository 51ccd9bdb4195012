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
    /// Other threads run in the master, so a fork is not safe (see [`fork`]).
    #[error(
        "the app started {0} thread(s) in the master while it was loaded, and a forked worker \
         would inherit any lock they hold, locked forever: use --lazy-apps to load the app in \
         each worker after fork"
    )]
    Threads(usize),
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
/// Refuses with [`SysError::Threads`] when any other thread runs in this process. In the child,
/// the master's signalfd (if any) no longer receives signals: see [`SignalFd`].
///
/// The caller holds the GIL (the master always does).
pub fn fork() -> Result<ForkResult, SysError> {
    super::py::before_fork();
    if let Err(e) = ensure_single_threaded() {
        super::py::after_fork_parent();
        return Err(e);
    }
    // SAFETY: the child of a multi-threaded process gets only the forking thread; every lock
    // another thread held at that instant (malloc's, stdio's, a Python module's, the app's)
    // stays locked in the child forever, and the child deadlocks the first time it takes one.
    // fork is sound here only because this process runs one thread: /proc/self/task was just
    // counted, and no thread can start between that count and the fork (this thread holds the
    // GIL and runs no Python code in between). So every lock is this thread's: CPython's, which
    // before_fork took and after_fork_child resets in the child. The child calls only
    // CPython's after-fork hook and async-signal-safe functions before it enters its loop.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = io::Error::last_os_error();
        super::py::after_fork_parent();
        return Err(SysError::Fork(err));
    }
    if pid == 0 {
        super::py::after_fork_child();
        SignalFd::disarm_in_child();
        Ok(ForkResult::Child)
    } else {
        super::py::after_fork_parent();
        Ok(ForkResult::Parent(pid))
    }
}

/// How many threads this process runs (the entries of /proc/self/task).
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Err([`SysError::Threads`]) when other threads run beside this one, which makes [`fork`]
/// unsafe. A normal master runs one thread; a count greater than one means the app started
/// threads while it was preloaded. Without /proc the count is unknown and the check passes.
pub fn ensure_single_threaded() -> Result<(), SysError> {
    match thread_count() {
        Ok(n) if n > 1 => Err(SysError::Threads(n - 1)),
        _ => Ok(()),
    }
}

/// Close every descriptor of this process except stdin, stdout, stderr and those in `keep`:
/// a forked child that needs only a few of its parent's descriptors drops the rest, so that a
/// socket or file it does not serve is not held open by it. Uses close_range(2) (Linux 5.9),
/// else closes each entry of /proc/self/fd.
///
/// # Safety
/// Every closed descriptor may be owned elsewhere in this process (an `OwnedFd`, a `File`, a
/// Python file object); its number is free afterwards and the next open may reuse it. The
/// caller guarantees that no owner of a closed descriptor is used or dropped after this call:
/// in practice, only a freshly forked child that never returns to its parent's code and ends
/// with [`exit_now`] (which runs no destructors) may call it.
pub unsafe fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first: libc::c_uint = 3;
    for &k in &keep {
        let k = k.cast_unsigned();
        if k > first && !close_range(first, k - 1)? {
            return close_listed_except(&keep);
        }
        first = k + 1;
    }
    if close_range(first, libc::c_uint::MAX)? {
        Ok(())
    } else {
        close_listed_except(&keep)
    }
}

/// close_range(2) on `first..=last`; `Ok(false)` when the kernel lacks it. Called through
/// syscall(2) so that the extension does not need glibc 2.34's wrapper.
fn close_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<bool> {
    // SAFETY: close_range only closes descriptors; the caller of close_fds_except vouched for
    // every one in the range.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The fallback of [`close_fds_except`]: close each descriptor listed in /proc/self/fd above 2
/// and not in `keep`.
fn close_listed_except(keep: &[RawFd]) -> io::Result<()> {
    // Collected before closing: the directory's own descriptor is listed and must be closed by
    // read_dir, not by us.
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: the caller of close_fds_except vouched for this descriptor. EBADF (the
            // read_dir descriptor, already closed) is harmless.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// This process's pid.
#[must_use]
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The real uid and gid of this process.
#[must_use]
pub fn ids() -> (u32, u32) {
    // SAFETY: getuid and getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// The size of a memory page, bytes (what /proc's page counts are in).
#[must_use]
pub fn page_size() -> u64 {
    // SAFETY: sysconf with a valid name has no side effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
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

/// The kernel's `PF_EXITING` task flag (include/linux/sched.h): set at the start of `do_exit`,
/// before the process's descriptors are closed.
const PF_EXITING: u64 = 0x4;

/// `pid` exists, is not a zombie and is not exiting. A process that is being killed closes its
/// descriptors only after `PF_EXITING` is set, so a peer that saw one of its sockets close can
/// tell "it closed the socket" from "it is dying" with this check (unlike `kill(pid, 0)`,
/// which a dying or zombie process passes).
#[must_use]
pub fn serving(pid: i32) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .is_some_and(|text| stat_serving(&text))
}

/// [`serving`], from the text of /proc/PID/stat: the state (third field) is not Z, X or x,
/// and the flags (ninth field) lack `PF_EXITING`.
fn stat_serving(text: &str) -> bool {
    let Some((_, rest)) = text.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let Some(state) = fields.next() else {
        return false;
    };
    // After the state: ppid, pgrp, session, tty_nr, tpgid, then flags.
    let flags = fields.nth(5).and_then(|f| f.parse::<u64>().ok());
    !matches!(state, "Z" | "X" | "x") && flags.is_some_and(|f| f & PF_EXITING == 0)
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

/// The descriptor of the live [`SignalFd`], for [`fork`] to disarm in the child (-1: none).
static MASTER_SIGNALFD: AtomicI32 = AtomicI32::new(-1);

/// The master's signal source: the signals are blocked and read from a signalfd, so the master
/// sees them in its poll loop and never runs code in a signal handler.
///
/// A child of [`fork`] does not hold the signalfd: fork puts an inert eventfd in its place, so
/// the child's copy of this value still owns an open descriptor (dropping it is harmless) but
/// [`SignalFd::next`] there always returns `None`.
pub struct SignalFd {
    fd: OwnedFd,
}

impl Drop for SignalFd {
    fn drop(&mut self) {
        let _ = MASTER_SIGNALFD.compare_exchange(
            self.fd.as_raw_fd(),
            -1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
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
        MASTER_SIGNALFD.store(fd, Ordering::Relaxed);
        // SAFETY: fresh descriptor we own.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// In a freshly forked child: replace the master's signalfd by an empty nonblocking eventfd
    /// at the same number. Closing it would leave the child's copy of the `SignalFd` owning a
    /// number the next open may reuse; an eventfd keeps the number owned and never reads.
    /// Best effort: if the kernel refuses, the child keeps the signalfd, which can only ever
    /// report the child's own signals.
    fn disarm_in_child() {
        let fd = MASTER_SIGNALFD.swap(-1, Ordering::Relaxed);
        if fd < 0 {
            return;
        }
        // SAFETY: eventfd returns a fresh descriptor (or -1); dup3 atomically replaces the
        // signalfd at `fd`, which the child's SignalFd copy owns, and the fresh one is closed
        // once duplicated. No other thread exists in the child to race on the number.
        unsafe {
            let inert = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if inert >= 0 {
                libc::dup3(inert, fd, libc::O_CLOEXEC);
                libc::close(inert);
            }
        }
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

/// What [`poll_many`] waits for on one fd, and what it found.
#[derive(Debug, Clone, Copy)]
pub struct PollFd {
    /// The descriptor.
    pub fd: RawFd,
    /// Wait for it to be writable (else readable).
    pub write: bool,
    /// Set by `poll_many`: ready (or in error, or hung up: the next read or write says which).
    pub ready: bool,
}

/// The master's wait: until one of `fds` is ready or `timeout_ms` passes (an interrupted
/// wait returns early with nothing ready). Sets each entry's `ready`. Blocks: call with the
/// GIL released.
pub fn poll_many(fds: &mut [PollFd], timeout_ms: i32) {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.fd,
            events: if f.write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        })
        .collect();
    let n = libc::nfds_t::try_from(raw.len()).unwrap_or(0);
    // SAFETY: `raw` is a valid array of `n` pollfds that lives across the call.
    let r = unsafe { libc::poll(raw.as_mut_ptr(), n, timeout_ms) };
    for (f, p) in fds.iter_mut().zip(&raw) {
        f.ready = r > 0 && p.revents != 0;
    }
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

/// Set this process's title as `ps` and `top` show it: the command line (`/proc/PID/cmdline`)
/// is overwritten in place, as uWSGI and setproctitle do, and the kernel's short name
/// (`comm`, 15 bytes) is set too. The title is cut to the space the original arguments took.
pub fn set_title(title: &str) {
    let bytes = title.as_bytes();
    let mut comm = [0u8; 16];
    for (d, s) in comm.iter_mut().zip(bytes.iter().take(15)) {
        *d = *s;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `comm`.
    unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
    let Some((start, end)) = argv_area() else {
        return;
    };
    let len = end - start;
    if len < 2 {
        return;
    }
    let n = bytes.len().min(len - 1);
    ORIGINAL_ARGS.get_or_init(|| {
        // SAFETY: reading the same area as below, before the first title overwrites it.
        unsafe { std::slice::from_raw_parts(std::ptr::with_exposed_provenance::<u8>(start), len) }
            .to_vec()
    });
    // SAFETY: the area argv_area just read.
    unsafe { write_args(start, len, bytes, n) };
}

/// The command line as it was before the first title, for children that get no title of their
/// own (uWSGI's `uwsgi_fork` restores it the same way).
static ORIGINAL_ARGS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Put back the command line a title replaced (a forked child that gets no title of its own).
pub fn restore_title() {
    let (Some(orig), Some((start, end))) = (ORIGINAL_ARGS.get(), argv_area()) else {
        return;
    };
    let len = (end - start).min(orig.len());
    // SAFETY: the area argv_area just read.
    unsafe { write_args(start, end - start, orig, len) };
}

/// Overwrite the argument area [start, start + len) with the first `n` bytes of `bytes`, then
/// NULs.
///
/// # Safety
/// [start, start + len) must be this process's argument area, as `argv_area` reads it.
unsafe fn write_args(start: usize, len: usize, bytes: &[u8], n: usize) {
    let n = n.min(len).min(bytes.len());
    // SAFETY: [start, end) is this process's own argument area as the kernel records it
    // (/proc/self/stat arg_start..arg_end): mapped, writable stack memory holding the original
    // argv strings. Nothing reads those strings after startup: CPython decoded its own copy
    // (sys.argv, sys.orig_argv), headrace takes its arguments from Python, and the re-exec uses
    // the copy captured before any title is set. Each process writes only its own copy.
    unsafe {
        let p = std::ptr::with_exposed_provenance_mut::<u8>(start);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, n);
        std::ptr::write_bytes(p.add(n), 0, len - n);
    }
}

/// The argument area (arg_start, arg_end) from /proc/self/stat (fields 48 and 49).
fn argv_area() -> Option<(usize, usize)> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let start: usize = fields.get(45)?.parse().ok()?;
    let end: usize = fields.get(46)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// `--umask`: set the file mode creation mask of this process (and its children).
pub fn set_umask(mask: u32) {
    // SAFETY: umask only changes this process's mask; it cannot fail.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// Start a new session (`--daemonize`): no controlling terminal, no terminal signals.
pub fn setsid() {
    // SAFETY: plain syscall; failure (already a group leader) leaves the process as it was.
    unsafe { libc::setsid() };
}

/// Put this process in `SCHED_BATCH`: its wakeups do not preempt the running task. The router
/// uses it so that a worker on the same core finishes its batch of pipelined requests before
/// the router runs to relay the responses (one switch per batch, not per response).
pub fn batch_scheduling() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on this process with a valid parameter struct.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resident and virtual size in bytes from a `statm` file (`/proc/self/statm`,
/// `/proc/PID/statm`; uWSGI's `get_memusage` reads the same figures); (0, 0) when unreadable.
#[must_use]
pub fn memory(statm_path: &str) -> (u64, u64) {
    let Ok(statm) = std::fs::read_to_string(statm_path) else {
        return (0, 0);
    };
    let page = page_size();
    let mut fields = statm
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    let vsz = fields.next().unwrap_or(0) * page;
    let rss = fields.next().unwrap_or(0) * page;
    (rss, vsz)
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

/// Take ownership of a descriptor this process inherited (systemd socket activation, re-exec);
/// a descriptor that is not open is reported as an error.
///
/// # Safety
/// `fd` must have been handed to this process open (by systemd or by the master's previous
/// image), and nothing else in the process may own it: it is not adopted twice and was not
/// wrapped by other code. The returned `OwnedFd` closes it when dropped.
pub unsafe fn adopt_fd(fd: RawFd) -> io::Result<OwnedFd> {
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

/// `--chown-socket USER[:GROUP]`: give `path` to that owner (the group stays unless named).
pub fn chown(path: &std::path::Path, spec: &str) -> io::Result<()> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let uid = lookup_id(user, false)?;
    let gid = group.map(|g| lookup_id(g, true)).transpose()?;
    std::os::unix::fs::chown(path, Some(uid), gid)
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

/// Keep up to `bytes` of freed memory at the top of the C heap instead of returning it to the
/// kernel at every `free`, and serve blocks below `bytes / 2` from the heap rather than from
/// fresh mappings. glibc's defaults (trim above 128 KiB, a dynamic mmap threshold that setting
/// either tunable turns off) make a worker that streams a body, allocating and freeing buffers
/// of a few hundred KiB per chunk, pay `brk` or `mmap`/`munmap` and fresh zeroed pages for
/// every chunk.
pub fn keep_freed_heap(bytes: i32) {
    // SAFETY: mallopt only changes allocator tunables; it is called from the worker's one
    // loop thread before requests are served.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes / 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `f` in a forked child and return its exit code (the test process has other threads,
    /// so the child only makes system calls and allocates, which glibc's fork handlers allow).
    fn in_child(f: impl FnOnce() -> i32 + std::panic::UnwindSafe) -> i32 {
        // SAFETY: test only; the child runs `f` and leaves with _exit, touching no lock another
        // test thread may hold except malloc's, which glibc resets in the child.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            exit_now(std::panic::catch_unwind(f).unwrap_or(99));
        }
        let mut status = 0;
        // SAFETY: status is a valid out pointer; pid is our child.
        assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "child ended by a signal: {status}");
        libc::WEXITSTATUS(status)
    }

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only queries.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    /// Two pipes; the child keeps `keep(a_read, b_write)` and reports, as bits, which of
    /// (a_read, a_write, b_read, b_write, stdin, stdout, stderr) are still open.
    fn open_after(close: fn(&[RawFd]) -> io::Result<()>, duplicate_keep: bool) -> i32 {
        let (ar, aw) = crate::sys::fd::pipe().expect("pipe");
        let (br, bw) = crate::sys::fd::pipe().expect("pipe");
        let fds = [&ar, &aw, &br, &bw].map(AsRawFd::as_raw_fd);
        in_child(move || {
            let mut keep = vec![fds[0], fds[3], 1];
            if duplicate_keep {
                keep.extend([fds[3], fds[0]]);
            }
            if close(&keep).is_err() {
                return 98;
            }
            fds.iter()
                .chain(&[0, 1, 2])
                .enumerate()
                .map(|(bit, &fd)| i32::from(is_open(fd)) << bit)
                .sum()
        })
    }

    fn close_fds_except_safe(keep: &[RawFd]) -> io::Result<()> {
        // SAFETY: called only in a forked test child that leaves with _exit.
        unsafe { close_fds_except(keep) }
    }

    #[test]
    fn close_fds_except_keeps_only_the_listed_and_stdio() {
        // a_read, b_write and stdio open; a_write and b_read closed.
        let want = 0b111_1001;
        for (name, close, dup) in [
            (
                "close_range",
                close_fds_except_safe as fn(&[RawFd]) -> io::Result<()>,
                false,
            ),
            ("close_range, keep repeated", close_fds_except_safe, true),
            ("/proc/self/fd fallback", close_listed_except, false),
            (
                "/proc/self/fd fallback, keep repeated",
                close_listed_except,
                true,
            ),
        ] {
            assert_eq!(open_after(close, dup), want, "{name}");
        }
    }

    #[test]
    fn another_thread_refuses_fork() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        assert!(thread_count().expect("/proc/self/task") >= 2);
        let err = ensure_single_threaded().expect_err("a second thread runs");
        assert!(matches!(err, SysError::Threads(n) if n >= 1), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("--lazy-apps") && !text.contains('\n'),
            "{text}"
        );
        drop(tx);
        let _ = t.join();
    }

    #[test]
    fn child_holds_no_signalfd() {
        let sig = SignalFd::new().expect("signalfd");
        let fd = sig.raw();
        let target = |fd: RawFd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        assert_eq!(
            target(fd).as_deref(),
            Some(std::path::Path::new("anon_inode:[signalfd]"))
        );
        let sig_in_child = &sig;
        let code = in_child(move || {
            SignalFd::disarm_in_child();
            let now = target(fd);
            let inert = now.as_deref() == Some(std::path::Path::new("anon_inode:[eventfd]"));
            i32::from(inert) + 2 * i32::from(sig_in_child.next().is_none())
        });
        assert_eq!(
            code, 3,
            "the child's copy must be an inert eventfd that never reads"
        );
        assert_eq!(
            MASTER_SIGNALFD.load(Ordering::Relaxed),
            fd,
            "parent unchanged"
        );
    }

    #[test]
    fn serving_reads_state_and_exiting_flag() {
        for (stat, want) in [
            ("7 (py) S 1 7 7 0 -1 4194560 0 0", true),
            // A name with spaces and parentheses: the fields start after the last ')'.
            ("7 (a) b (c)) R 1 7 7 0 -1 4194304 0", true),
            ("7 (py) Z 1 7 7 0 -1 4194316 0 0", false),
            ("7 (py) X 1 7 7 0 -1 4194304 0 0", false),
            // PF_EXITING (0x4) set: killed, its descriptors closing.
            ("7 (py) R 1 7 7 0 -1 4194308 0 0", false),
            ("7 (py) R 1 7", false),
            ("garbage", false),
        ] {
            assert_eq!(stat_serving(stat), want, "{stat}");
        }
        assert!(serving(getpid()));
        assert!(!serving(0) && !serving(-1));
    }
}
