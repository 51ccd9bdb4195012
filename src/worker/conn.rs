//! One client connection held by a serving thread.

use crate::http::ReadBuf;
use crate::wsgi::environ::Peer;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

/// Initial read buffer per connection; grows up to --buffer-size for big heads.
pub const INITIAL_BUFFER: usize = 8192;

/// A connection between requests (or reading a head).
pub struct Conn {
    /// The socket; closing happens on drop.
    pub fd: OwnedFd,
    /// Who it is from.
    pub peer: Peer,
    /// Bytes received and not yet consumed.
    pub buf: ReadBuf,
    /// When the connection last made progress (for the keep-alive and head timeouts).
    pub last_active: Instant,
    /// When the first byte of the pending request head arrived (`None`: nothing pending).
    pub head_started: Option<Instant>,
    /// It speaks the uwsgi protocol (else HTTP/1.1).
    pub uwsgi: bool,
    /// It came from the router's private link: it stays open through a stop until the router
    /// closes it, since the router may already have written requests on it.
    pub link: bool,
}

impl Conn {
    /// Wrap an accepted socket.
    #[must_use]
    pub fn new(fd: OwnedFd, peer: Peer) -> Self {
        Self {
            fd,
            peer,
            buf: ReadBuf::with_capacity(INITIAL_BUFFER),
            last_active: Instant::now(),
            // A new connection owes us a request head: --socket-timeout runs from the accept.
            head_started: Some(Instant::now()),
            uwsgi: false,
            link: false,
        }
    }

    /// The raw socket.
    #[must_use]
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
