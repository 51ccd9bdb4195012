//! Writing a static reply on a worker's nonblocking socket: the head, then the file with
//! `sendfile(2)`. Blocks: the worker calls it with the GIL released.

use super::{Found, Reply};
use crate::sys::fd;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Send `reply` for `found` on `sock`, waiting up to `timeout` per stall. Returns the body
/// bytes sent; an error means the connection is unusable.
pub fn send_blocking(
    sock: RawFd,
    found: &Found,
    reply: &Reply,
    timeout: Duration,
) -> io::Result<u64> {
    fd::send_all_blocking(sock, &[&reply.head], timeout)?;
    let file = found.file.as_raw_fd();
    let mut off = i64::try_from(reply.offset).unwrap_or(i64::MAX);
    let mut left = reply.len;
    while left > 0 {
        let want = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match fd::sendfile(sock, file, &mut off, want) {
            // The file shrank under us: the announced length cannot be met.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                ))
            }
            Ok(n) => left -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !fd::wait_ready(sock, true, timeout)? {
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
    Ok(reply.len)
}
