//! Raw file-descriptor operations: nonblocking socket I/O, epoll, poll, sendfile.
//! All functions return `io::Result` and never block unless their name says they wait.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cvt_size(r: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Accept one connection from a nonblocking listening socket. The new socket is nonblocking and
/// close-on-exec. Returns the peer address (`None` for unix sockets).
pub fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    // SAFETY: sockaddr_storage is plain old data; zeroed is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>())
        .expect("sockaddr_storage fits socklen_t");
    // SAFETY: storage/len describe a writable buffer of the right size; the kernel writes at most
    // `len` bytes and returns a new fd that we own.
    let fd = cvt(unsafe {
        libc::accept4(
            listener,
            std::ptr::addr_of_mut!(storage).cast(),
            &raw mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((owned, sockaddr_to_std(&storage)))
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in, which it is large enough for.
            let a: &libc::sockaddr_in = unsafe { &*std::ptr::from_ref(storage).cast() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: ss_family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*std::ptr::from_ref(storage).cast() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The local address of a socket (`None` for unix sockets).
#[must_use]
pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: as in `accept`: a zeroed sockaddr_storage and its size.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>()).ok()?;
    // SAFETY: the kernel writes at most `len` bytes into storage.
    let r = unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(storage).cast(), &raw mut len) };
    if r < 0 {
        return None;
    }
    sockaddr_to_std(&storage)
}

/// The path a unix socket is bound to, if `fd` is one.
#[must_use]
pub fn unix_path(fd: RawFd) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).ok()?;
    // SAFETY: the kernel writes at most `len` bytes into sun.
    let r = unsafe { libc::getsockname(fd, std::ptr::addr_of_mut!(sun).cast(), &raw mut len) };
    if r < 0 || libc::c_int::from(sun.sun_family) != libc::AF_UNIX {
        return None;
    }
    let bytes: Vec<u8> = sun
        .sun_path
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c.cast_unsigned())
        .collect();
    (!bytes.is_empty()).then(|| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

/// Connections waiting in a TCP listening socket's accept queue (Linux reports it in
/// `tcpi_unacked` of TCP_INFO for listening sockets). `None` for other sockets.
#[must_use]
pub fn accept_queue_len(fd: RawFd) -> Option<u32> {
    // SAFETY: tcp_info is plain data.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: the kernel writes at most `len` bytes into info.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &raw mut len,
        )
    };
    (r == 0 && info.tcpi_state == 10).then_some(info.tcpi_unacked) // 10 = TCP_LISTEN
}

/// Read into `buf` without blocking (the fd is nonblocking). `Ok(0)` is end of stream.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable region of buf.len() bytes.
    cvt_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// Send without blocking and without SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable region of buf.len() bytes.
    cvt_size(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) })
}

/// Gathering send of up to 64 slices, without blocking and without SIGPIPE.
pub fn sendv(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let mut iov: [libc::iovec; 64] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 64];
    let n = bufs.len().min(iov.len());
    for (slot, b) in iov.iter_mut().zip(bufs) {
        slot.iov_base = b.as_ptr().cast_mut().cast();
        slot.iov_len = b.len();
    }
    // SAFETY: msghdr is plain old data; we fill in the iovec array that outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n;
    // SAFETY: every iovec points into a live slice of `bufs`; sendmsg only reads them.
    cvt_size(unsafe { libc::sendmsg(fd, &raw const msg, libc::MSG_NOSIGNAL) })
}

/// Send every byte of `bufs` on a nonblocking socket, waiting (up to `timeout` per stall) for
/// room. Blocks: call with the GIL released.
pub fn send_all_blocking(fd: RawFd, bufs: &[&[u8]], timeout: Duration) -> io::Result<()> {
    send_all_blocking_from(fd, bufs, 0, timeout)
}

/// [`send_all_blocking`] of what follows the first `skip` bytes of `bufs` (the rest of a send
/// that the socket took only in part). Blocks: call with the GIL released.
pub fn send_all_blocking_from(
    fd: RawFd,
    bufs: &[&[u8]],
    mut skip: usize,
    timeout: Duration,
) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    while skip < total {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(bufs.len());
        let mut offset = skip;
        for b in bufs {
            if offset >= b.len() {
                offset -= b.len();
                continue;
            }
            parts.push(&b[offset..]);
            offset = 0;
        }
        match sendv(fd, &parts) {
            Ok(n) => skip += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_ready(fd, true, timeout)? {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// End a connection after an error response so that the client reads the response and then
/// the end of the stream, not a reset: shut our sending side, then read away what the client
/// has already sent (a close with unread input would send a reset, which can destroy the
/// response before the client reads it). Never waits.
pub fn close_gently(fd: RawFd) {
    shutdown_write(fd);
    let mut scratch = [0u8; 16 * 1024];
    for _ in 0..16 {
        if !matches!(read(fd, &mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
}

/// `sendfile(2)` from `file` at `offset` without blocking. Advances `offset`.
pub fn sendfile(out: RawFd, file: RawFd, offset: &mut i64, count: usize) -> io::Result<usize> {
    // SAFETY: offset points to a live i64; both fds are open descriptors owned by the caller.
    cvt_size(unsafe { libc::sendfile(out, file, offset, count) })
}

/// Wait until `fd` is readable (`write == false`) or writable, or the timeout passes.
/// Returns `Ok(false)` on timeout. Blocks: call with the GIL released.
pub fn wait_ready(fd: RawFd, write: bool, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: if write { libc::POLLOUT } else { libc::POLLIN },
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    loop {
        // SAFETY: pfd is one valid pollfd.
        let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

/// Shut down both directions of a socket, so the peer sees the end at once even if another
/// process still holds a copy of the descriptor.
pub fn shutdown(fd: RawFd) {
    // SAFETY: shutdown on any fd is harmless; errors (not a socket, not connected) are ignored.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Shut down the sending side only: the peer reads our last bytes, then end of stream.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on any fd is harmless; errors are ignored.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// Set an integer socket option; errors are returned to the caller to decide.
pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("int fits");
    // SAFETY: value is a live c_int and len its size.
    cvt(unsafe { libc::setsockopt(fd, level, name, std::ptr::from_ref(&value).cast(), len) })
        .map(drop)
}

/// Disable Nagle on a TCP socket (ignored on unix sockets).
pub fn set_nodelay(fd: RawFd) {
    let _ = setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
}

/// Make a descriptor nonblocking.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL on an open fd.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Duplicate `fd` onto `target` (used for `--logto`).
pub fn dup2(fd: RawFd, target: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on open descriptors; target is closed and replaced atomically.
    cvt(unsafe { libc::dup2(fd, target) }).map(drop)
}

/// Take an exclusive `flock` on `fd`'s file, waiting for it; released when every descriptor
/// of that open file is closed (log rotation: one process renames the full file).
pub fn lock_exclusive(fd: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: flock only reads the descriptor number; an invalid one gives EBADF.
        match cvt(unsafe { libc::flock(fd, libc::LOCK_EX) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r.map(drop),
        }
    }
}

/// Write all of `buf` to a blocking descriptor (log lines, pidfiles), retrying on EINTR.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable region.
        let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[usize::try_from(r).unwrap_or(0)..];
    }
    Ok(())
}

/// A pipe whose ends are nonblocking and close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is an array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected pair of unix sockets of `kind` (`libc::SOCK_DGRAM`, `SOCK_SEQPACKET`, ...),
/// close-on-exec and blocking.
pub fn socketpair(kind: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is an array of two ints for the kernel to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: socketpair returned two fresh descriptors that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send one datagram (or record), waiting while the socket's queue is full, without SIGPIPE.
pub fn send_record(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: buf is a valid readable region of buf.len() bytes.
        match cvt_size(unsafe {
            libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)
        }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

/// Send `fd` with `data` in one datagram to the unix datagram socket bound to the abstract
/// name `name`, without blocking. The receiver gets its own descriptor for the same open file
/// (SCM_RIGHTS); the caller's stays open.
pub fn send_fd(sock: RawFd, name: &[u8], fd: RawFd, data: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.len() + 1 > addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket name too long",
        ));
    }
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).expect("AF_UNIX fits");
    // An abstract name: a NUL, then the name (not NUL-terminated; the length says where it ends).
    for (dst, &b) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = libc::c_char::from_ne_bytes([b]);
    }
    let addr_len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::sa_family_t>() + 1 + name.len())
            .expect("address length fits socklen_t");
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let fd_len = u32::try_from(std::mem::size_of::<libc::c_int>()).expect("int size fits");
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain old data; zeroed is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut addr).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg_control points to `space` zeroed, aligned bytes, room for one header carrying
    // one int, so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for the descriptor.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
    }
    // SAFETY: msg describes live buffers (address, one iovec, control) for the whole call.
    let r = unsafe {
        libc::sendmsg(
            sock,
            &raw const msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    cvt_size(r).map(drop)
}

/// A datagram received by [`recv_fd`].
pub struct ReceivedFd {
    /// The descriptor it carried (`None`: it carried none).
    pub fd: Option<OwnedFd>,
    /// Bytes of data written to the caller's buffer.
    pub len: usize,
    /// The sender's pid, as the kernel vouches for it (needs SO_PASSCRED on the socket).
    pub sender: Option<i32>,
}

/// Receive one datagram sent by [`send_fd`], without blocking. The descriptor it carries is
/// close-on-exec; any extra descriptors are closed.
pub fn recv_fd(sock: RawFd, data: &mut [u8]) -> io::Result<ReceivedFd> {
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let fds_len = u32::try_from(4 * std::mem::size_of::<libc::c_int>()).expect("size fits");
    let cred_len = u32::try_from(std::mem::size_of::<libc::ucred>()).expect("size fits");
    // SAFETY: CMSG_SPACE only computes sizes.
    let space = unsafe { libc::CMSG_SPACE(fds_len) + libc::CMSG_SPACE(cred_len) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain old data; zeroed is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg describes live buffers (one iovec, the control buffer) for the whole call.
    let r = unsafe {
        libc::recvmsg(
            sock,
            &raw mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    let len = cvt_size(r)?;
    let mut out = ReceivedFd {
        fd: None,
        len,
        sender: None,
    };
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed headers;
    // CMSG_FIRSTHDR/CMSG_NXTHDR walk them and stop at the end. Each SCM_RIGHTS int is a fresh
    // descriptor now owned by this process, taken into an OwnedFd exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let level = (*cmsg).cmsg_level;
            let kind = (*cmsg).cmsg_type;
            let data_at = libc::CMSG_DATA(cmsg);
            let data_len = (*cmsg).cmsg_len - (data_at as usize - cmsg as usize);
            if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
                let n = data_len / std::mem::size_of::<libc::c_int>();
                for i in 0..n {
                    let at = data_at.add(i * std::mem::size_of::<libc::c_int>());
                    let raw = std::ptr::read_unaligned(at.cast::<libc::c_int>());
                    let owned = OwnedFd::from_raw_fd(raw);
                    if out.fd.is_none() {
                        out.fd = Some(owned);
                    }
                }
            } else if level == libc::SOL_SOCKET && kind == libc::SCM_CREDENTIALS {
                let cred = std::ptr::read_unaligned(data_at.cast::<libc::ucred>());
                out.sender = Some(cred.pid);
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok(out)
}

/// One ready event from [`Epoll::wait`].
pub type EpollEvent = libc::epoll_event;

/// An epoll instance, level-triggered.
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Create a close-on-exec epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 returns a fresh fd that we own.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fresh descriptor from the kernel.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watch `fd` for input. `exclusive` sets EPOLLEXCLUSIVE, so that of all the threads and
    /// processes waiting on a shared listening socket only one is woken per connection.
    pub fn add(&self, fd: RawFd, token: u64, exclusive: bool) -> io::Result<()> {
        let mut flags = libc::EPOLLIN | libc::EPOLLRDHUP;
        if exclusive {
            flags = libc::EPOLLIN | libc::EPOLLEXCLUSIVE;
        }
        let mut ev = libc::epoll_event {
            events: flags.cast_unsigned(),
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event; both fds are open.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) })
            .map(drop)
    }

    /// Stop watching `fd`.
    pub fn delete(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: deleting an fd; errors (not registered) are harmless and ignored.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &raw mut ev) };
    }

    /// Wait for events (blocks: call with the GIL released). EINTR returns zero events.
    pub fn wait(&self, events: &mut [EpollEvent], timeout_ms: i32) -> io::Result<usize> {
        let cap = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: events is a writable array of `cap` epoll_event.
        let r =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), cap, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(usize::try_from(r).unwrap_or(0))
    }
}

/// An empty event array for [`Epoll::wait`].
#[must_use]
pub fn empty_events(n: usize) -> Vec<EpollEvent> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}

/// Size of an open regular file, or `None` for anything else (pipes, sockets).
#[must_use]
pub fn regular_file_size(fd: RawFd) -> Option<u64> {
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is a valid out pointer.
    if unsafe { libc::fstat(fd, &raw mut st) } < 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
        return None;
    }
    u64::try_from(st.st_size).ok()
}

/// Set the listen backlog of a bound socket (calling listen again updates it on Linux).
pub fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen on an open socket.
    cvt(unsafe { libc::listen(fd, backlog) }).map(drop)
}

/// Take ownership of a descriptor handed over from Python (`socket.detach()`), so that it is
/// closed when the owner drops it.
#[must_use]
pub fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller passes a descriptor it owns and will not use or close again (the
    // Python socket object was detached from it).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Close a raw descriptor nobody else owns (a hand-off that failed).
pub fn close_raw(fd: RawFd) {
    drop(own(fd));
}

/// Read up to `max` bytes without blocking, appending them to `buf` (no zero-filling and no
/// copy through a scratch buffer). `Ok(0)` is end of stream.
pub fn read_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: `spare` is writable, uninitialised capacity of at least `want` bytes; read(2)
    // writes at most `want` bytes into it.
    let n = cvt_size(unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) })?;
    // SAFETY: read(2) initialised exactly `n <= want` bytes after the current length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// How many bytes the socket's receive queue holds now (`FIONREAD`).
pub fn bytes_readable(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for the call.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &raw mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}
