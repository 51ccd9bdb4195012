//! The mules' message queues: one socket pair per queue, made by the master before any fork so
//! every process holds both ends. Senders (workers, spoolers, other mules) write datagrams on
//! one end without blocking, and a full queue refuses the message (`mule_msg` returns False,
//! as uWSGI's does); mules read the other end. Several mules reading one end (the shared queue,
//! a farm's queue) each take whole messages, so each message reaches exactly one of them.
//!
//! Queue numbers: 0 is the shared queue (any mule), 1..=N mule N's own, N+1.. the farms in
//! `--farm` order.

use crate::sys::fd;
use std::io;
use std::os::fd::IntoRawFd;
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One queue: where messages are written and where they are read.
#[derive(Debug, Clone, Copy)]
struct Queue {
    tx: RawFd,
    rx: RawFd,
}

static QUEUES: OnceLock<Vec<Queue>> = OnceLock::new();

/// Why a message was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The queue holds as much as its buffer allows.
    #[error("*** MULE MSG QUEUE IS FULL: buffer size {0} bytes (you can tune it with --mule-msg-size) ***")]
    Full(usize),
    /// The message is larger than a queue carries.
    #[error("mule_msg: a {len} bytes message does not fit a mule queue (--mule-msg-size {limit})")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// `--mule-msg-size`.
        limit: usize,
    },
    /// No such queue (no mules configured).
    #[error("no mule configured")]
    NoQueue,
    /// Another OS error.
    #[error("mule_msg: {0}")]
    Io(io::Error),
}

/// Open `count` queues whose buffers hold `size` bytes (the master, once, before any fork).
/// The ends stay open for the life of the process and its children; they close on exec.
pub fn open(count: usize, size: usize) -> io::Result<()> {
    let size = i32::try_from(size).unwrap_or(i32::MAX);
    let mut queues = Vec::with_capacity(count);
    for _ in 0..count {
        let (tx, rx) = fd::socketpair(libc::SOCK_DGRAM)?;
        for end in [&tx, &rx] {
            let raw = std::os::fd::AsRawFd::as_raw_fd(end);
            fd::set_nonblocking(raw)?;
            // As uWSGI's create_msg_pipe: both buffers of both ends sized by --mule-msg-size.
            fd::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, size)?;
            fd::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, size)?;
        }
        queues.push(Queue {
            tx: tx.into_raw_fd(),
            rx: rx.into_raw_fd(),
        });
    }
    let _ = QUEUES.set(queues);
    Ok(())
}

fn queue(n: usize) -> Option<Queue> {
    QUEUES.get()?.get(n).copied()
}

/// Queue `msg` on queue `n` without blocking. `limit` is `--mule-msg-size`, for the message.
pub fn send(n: usize, msg: &[u8], limit: usize) -> Result<(), SendError> {
    let q = queue(n).ok_or(SendError::NoQueue)?;
    match crate::sys::mules::send_record_now(q.tx, msg) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(SendError::Full(limit)),
        Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => Err(SendError::TooLarge {
            len: msg.len(),
            limit,
        }),
        Err(e) => Err(SendError::Io(e)),
    }
}

/// What [`recv`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A message.
    Message(Vec<u8>),
    /// Nothing before the timeout.
    TimedOut,
    /// The wait was interrupted by a signal (the caller runs Python's handlers, then waits
    /// again with what is left of its timeout).
    Interrupted,
}

/// Wait for a message on any of `queues` (earlier ones first when several are ready) for at
/// most `timeout` (`None`: forever). `max_len` cuts a longer message (0: take it whole). Blocks:
/// call with the GIL released.
pub fn recv(queues: &[usize], max_len: usize, timeout: Option<Duration>) -> io::Result<Received> {
    let rx: Vec<RawFd> = queues
        .iter()
        .filter_map(|&n| queue(n))
        .map(|q| q.rx)
        .collect();
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        let ready = match crate::sys::mules::poll_readable(&rx, wait_ms) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Received::Interrupted),
            Err(e) => return Err(e),
        };
        for (&fd, _) in rx.iter().zip(&ready).filter(|(_, r)| **r) {
            // Another mule may take the message between the poll and the read: then look again.
            if let Some(msg) = take(fd, max_len)? {
                return Ok(Received::Message(msg));
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Received::TimedOut);
        }
    }
}

/// One whole message from `fd`, or `None` when another reader took it first.
fn take(fd: RawFd, max_len: usize) -> io::Result<Option<Vec<u8>>> {
    let len = match crate::sys::mules::next_record_len(fd) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = vec![0u8; if max_len == 0 { len } else { len.min(max_len) }];
    match crate::sys::mules::recv_record_now(fd, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_go_whole_and_a_full_queue_refuses() {
        open(3, 4096).expect("socketpairs");
        send(1, b"hello", 4096).expect("room");
        send(2, &[7u8; 3000], 4096).expect("room");
        assert_eq!(
            recv(&[0, 1], 0, Some(Duration::from_millis(10))).expect("recv"),
            Received::Message(b"hello".to_vec())
        );
        assert_eq!(
            recv(&[0, 1], 0, Some(Duration::from_millis(10))).expect("recv"),
            Received::TimedOut
        );
        // Cut to max_len, as uWSGI's buffer_size does.
        assert_eq!(
            recv(&[2], 10, None).expect("recv"),
            Received::Message(vec![7u8; 10])
        );
        let mut sent = 0;
        let full = loop {
            match send(0, &[1u8; 500], 4096) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 10_000, "the queue never filled");
        };
        assert!(matches!(full, SendError::Full(4096)), "{full}");
        assert!(sent > 0);
        assert!(matches!(
            send(1, &vec![0u8; 1 << 20], 4096),
            Err(SendError::TooLarge { .. })
        ));
        assert!(matches!(send(9, b"x", 4096), Err(SendError::NoQueue)));
    }
}
