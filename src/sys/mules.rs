//! What a mule needs from the OS beyond `fd` and `proc`: its signal dispositions and reading
//! whole messages from its queues.

use std::io;
use std::os::fd::RawFd;

fn set_disposition(sig: i32, handler: libc::sighandler_t) {
    // SAFETY: sigaction is plain data; we set SIG_DFL or SIG_IGN with an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler;
        libc::sigemptyset(&raw mut sa.sa_mask);
        libc::sigaction(sig, &raw const sa, std::ptr::null_mut());
    }
}

/// In a freshly forked mule: uWSGI's mule dispositions. SIGTERM, SIGINT, SIGQUIT and SIGHUP end
/// it at once (uWSGI's `end_me`), SIGUSR1 and SIGPIPE are ignored, SIGUSR2 is left to
/// faulthandler (armed next, for harakiri tracebacks), every signal the master blocked for its
/// signalfd is unblocked, and a master that dies takes the mule with it (PR_SET_PDEATHSIG, as
/// uWSGI's mules).
pub fn mule_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGHUP] {
        set_disposition(sig, libc::SIG_DFL);
    }
    for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGPIPE] {
        set_disposition(sig, libc::SIG_IGN);
    }
    set_disposition(libc::SIGCHLD, libc::SIG_DFL);
    // SAFETY: sigset_t is plain data; sigfillset initialises it; unblocking every signal in the
    // only thread of the new child.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const all, std::ptr::null_mut());
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

/// The size of the next datagram or record waiting on `fd`, without taking it (MSG_PEEK |
/// MSG_TRUNC returns the real length on Linux). `WouldBlock` when there is none.
pub fn next_record_len(fd: RawFd) -> io::Result<usize> {
    let mut byte = 0u8;
    // SAFETY: one writable byte; MSG_TRUNC makes recv report the whole length anyway.
    let r = unsafe {
        libc::recv(
            fd,
            std::ptr::from_mut(&mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Send one datagram without blocking (EAGAIN: the queue is full) and without SIGPIPE.
pub fn send_record_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable region of buf.len() bytes.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Take one datagram or record into `buf` without blocking (a longer one is cut to
/// `buf.len()`, as recv(2) does).
pub fn recv_record_now(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Wait up to `timeout_ms` (-1: forever) for any of `fds` to be readable; which ones are.
/// `Interrupted` when a signal came first. Blocks: call with the GIL released.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let n = libc::nfds_t::try_from(raw.len()).unwrap_or(0);
    // SAFETY: `raw` is a valid array of `n` pollfds that lives across the call.
    let r = unsafe { libc::poll(raw.as_mut_ptr(), n, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(raw.iter().map(|p| p.revents != 0).collect())
}
