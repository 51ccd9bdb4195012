//! Abstract unix sockets for the router's links to workers.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Start a nonblocking connect to the abstract unix socket `name` (no leading NUL). A unix
/// connect completes at once or fails at once: `WouldBlock` means the listener's backlog is
/// full, `ConnectionRefused` that nobody listens on that name (any more).
pub fn connect_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: a zeroed sockaddr_un is valid; we fill family and path within its bounds below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap_or(1);
    // Abstract namespace: sun_path[0] is NUL, the name follows, unterminated.
    if name.len() + 1 > addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket name too long",
        ));
    }
    for (dst, &b) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = libc::c_char::from_ne_bytes([b]);
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: plain syscall; the fd, if any, is ours alone.
    let raw = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket() returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = libc::socklen_t::try_from(len).unwrap_or(0);
    // SAFETY: addr is a valid sockaddr_un and len covers the family, the NUL and the name.
    let rc = unsafe { libc::connect(raw, std::ptr::addr_of!(addr).cast::<libc::sockaddr>(), len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // EAGAIN is how a unix socket says "backlog full"; EINPROGRESS does not happen here.
        return Err(e);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    #[test]
    fn connects_and_refuses() {
        let name = format!("headrace-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
        assert!(connect_abstract(name.as_bytes()).is_ok());
        drop(l);
        let e = connect_abstract(name.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(connect_abstract(&[b'x'; 200]).is_err());
    }
}
