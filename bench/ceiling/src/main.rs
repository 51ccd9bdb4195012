//! `ceiling`: the no-Python reference line for `bench/run`.
//!
//! One thread, one level-triggered epoll loop, non-blocking sockets. It accepts on
//! 127.0.0.1:PORT, finds the end of each request head (`\r\n\r\n`), and answers every head with
//! the same fixed hello-world response, in order, so pipelined requests are safe. Connections are
//! kept alive unless the head says `Connection: close` (then the server closes after the answer).
//! It ignores request bodies: it is meant for GET load only. Nothing a WSGI server must do
//! (parsing headers, calling Python) is done here, so no WSGI server can beat it on this machine.
//!
//! Usage: `ceiling PORT`

use std::collections::HashMap;
use std::io;
use std::os::raw::c_int;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
const CLOSE_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nHello, World!";
const MAX_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 64 * 1024;
const MAX_EVENTS: usize = 256;

struct Conn {
    fd: c_int,
    inbuf: Vec<u8>,
    /// Where to resume searching for `\r\n\r\n` in `inbuf`.
    scan: usize,
    out: Vec<u8>,
    out_pos: usize,
    close_after: bool,
    writable_interest: bool,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn check(rc: c_int, what: &str) -> io::Result<c_int> {
    if rc < 0 {
        let e = last_err();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(rc)
    }
}

fn listen_on(port: u16) -> io::Result<c_int> {
    // SAFETY: plain socket syscalls on values we own; the sockaddr is fully initialised.
    unsafe {
        let fd = check(
            libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            ),
            "socket",
        )?;
        let one: c_int = 1;
        check(
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const c_int).cast(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            ),
            "setsockopt(SO_REUSEADDR)",
        )?;
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        check(
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            "bind",
        )?;
        check(libc::listen(fd, 1024), "listen")?;
        Ok(fd)
    }
}

fn epoll_ctl(ep: c_int, op: c_int, fd: c_int, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `ev` lives across the call; epoll copies it.
    check(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }, "epoll_ctl")?;
    Ok(())
}

fn close_fd(fd: c_int) {
    // SAFETY: closing a descriptor this process owns; it is removed from every table first.
    unsafe {
        libc::close(fd);
    }
}

/// Must the connection close after answering this head? (`Connection: close`, or HTTP/1.0)
fn wants_close(head: &[u8]) -> bool {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut close = lines.next().is_some_and(|l| l.ends_with(b"HTTP/1.0"));
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"connection") {
            close |= line[colon + 1..]
                .split(|&b| b == b',')
                .any(|tok| tok.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    close
}

/// Appends one response per complete request head in `c.inbuf`. Returns false on a bad request.
fn parse_heads(c: &mut Conn) -> bool {
    let mut consumed = 0;
    loop {
        let from = c.scan.max(consumed);
        let hay = &c.inbuf[from..];
        match find_head_end(hay) {
            Some(rel) => {
                let end = from + rel + 4;
                let close = wants_close(&c.inbuf[consumed..end]);
                c.out
                    .extend_from_slice(if close { CLOSE_RESPONSE } else { RESPONSE });
                consumed = end;
                c.scan = end;
                if close {
                    c.close_after = true;
                    break;
                }
            }
            None => {
                // Rescan the last 3 bytes next time: a terminator may straddle two reads.
                c.scan = c.inbuf.len().saturating_sub(3).max(consumed);
                break;
            }
        }
    }
    c.inbuf.drain(..consumed);
    c.scan -= consumed;
    c.inbuf.len() <= MAX_HEAD
}

fn find_head_end(hay: &[u8]) -> Option<usize> {
    hay.windows(4).position(|w| w == b"\r\n\r\n")
}

enum Flush {
    Done,
    Blocked,
    Failed,
}

fn flush(c: &mut Conn) -> Flush {
    while c.out_pos < c.out.len() {
        let rest = &c.out[c.out_pos..];
        // SAFETY: `rest` is a valid initialised slice for the duration of the call.
        let n = unsafe { libc::send(c.fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = last_err();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Flush::Blocked,
                io::ErrorKind::Interrupted => continue,
                _ => Flush::Failed,
            };
        }
        c.out_pos += n as usize;
    }
    c.out.clear();
    c.out_pos = 0;
    Flush::Done
}

/// Handles one readiness event; returns false when the connection must be closed.
fn serve(ep: c_int, c: &mut Conn, events: u32, buf: &mut [u8]) -> bool {
    if events & (libc::EPOLLERR as u32) != 0 {
        return false;
    }
    if events & (libc::EPOLLIN as u32 | libc::EPOLLHUP as u32) != 0 && !c.close_after {
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::recv(c.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == 0 {
            return false;
        }
        if n < 0 {
            let e = last_err();
            if !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) {
                return false;
            }
        } else {
            c.inbuf.extend_from_slice(&buf[..n as usize]);
            if !parse_heads(c) {
                return false;
            }
        }
    }
    match flush(c) {
        Flush::Failed => false,
        Flush::Blocked => {
            if !c.writable_interest {
                c.writable_interest = true;
                let ev = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
                if epoll_ctl(ep, libc::EPOLL_CTL_MOD, c.fd, ev).is_err() {
                    return false;
                }
            }
            true
        }
        Flush::Done => {
            if c.close_after {
                return false;
            }
            if c.writable_interest {
                c.writable_interest = false;
                if epoll_ctl(ep, libc::EPOLL_CTL_MOD, c.fd, libc::EPOLLIN as u32).is_err() {
                    return false;
                }
            }
            true
        }
    }
}

fn accept_all(ep: c_int, lfd: c_int, conns: &mut HashMap<c_int, Conn>) {
    loop {
        // SAFETY: null address pointers are allowed by accept4.
        let fd = unsafe {
            libc::accept4(
                lfd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return; // EAGAIN (drained) or a transient error: epoll will tell us again.
        }
        let one: c_int = 1;
        // SAFETY: setting an int option on a socket we own.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const c_int).cast(),
                std::mem::size_of::<c_int>() as libc::socklen_t,
            );
        }
        if epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32).is_err() {
            close_fd(fd);
            continue;
        }
        conns.insert(
            fd,
            Conn {
                fd,
                inbuf: Vec::with_capacity(4096),
                scan: 0,
                out: Vec::with_capacity(4096),
                out_pos: 0,
                close_after: false,
                writable_interest: false,
            },
        );
    }
}

fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(p)) => p,
        _ => {
            eprintln!("usage: ceiling PORT   (listens on 127.0.0.1:PORT)");
            std::process::exit(2);
        }
    };
    let lfd = listen_on(port)?;
    // SAFETY: creating an epoll instance has no memory-safety preconditions.
    let ep = check(
        unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) },
        "epoll_create1",
    )?;
    epoll_ctl(ep, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32)?;
    eprintln!("ceiling: listening on 127.0.0.1:{port}");

    let mut conns: HashMap<c_int, Conn> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        // SAFETY: `events` has room for MAX_EVENTS entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), MAX_EVENTS as c_int, -1) };
        if n < 0 {
            let e = last_err();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as c_int;
            let flags = ev.events;
            if fd == lfd {
                accept_all(ep, lfd, &mut conns);
                continue;
            }
            let keep = match conns.get_mut(&fd) {
                Some(c) => serve(ep, c, flags, &mut buf),
                None => continue,
            };
            if !keep {
                conns.remove(&fd);
                // Closing removes the fd from the epoll set.
                close_fd(fd);
            }
        }
    }
}
