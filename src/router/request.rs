//! What passes between a client connection and a worker link: the buffered request (a job),
//! and the answer that comes back (a reply).

use crate::http::Version;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, Notify};

/// Who is at the other end of a client connection.
pub struct Peer {
    /// The client's address (`None` on a unix socket).
    pub addr: Option<SocketAddr>,
    /// REMOTE_ADDR and REMOTE_PORT as sent to the workers (formatted once per connection).
    pub remote: (String, String),
    /// SERVER_NAME and SERVER_PORT of the listening socket.
    pub server: Rc<(String, String)>,
}

/// A request body, complete.
pub enum Body {
    /// Held in memory.
    Memory(Vec<u8>),
    /// Spilled to an unlinked temporary file of this many bytes (read with `pread`, off the
    /// runtime thread, as often as the request is sent).
    File(Arc<std::fs::File>, u64),
}

impl Body {
    /// Bytes in the body.
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(v) => v.len() as u64,
            Self::File(_, n) => *n,
        }
    }

    /// No body at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the response side needs to know about the request.
#[derive(Clone, Copy)]
pub struct ReqInfo {
    /// The client's HTTP version.
    pub version: Version,
    /// The client allows another request on this connection.
    pub keep_alive: bool,
    /// HEAD: no response body.
    pub is_head: bool,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In the router's queue: `--queue-timeout` applies.
    Queued,
    /// Written (or being written) to a worker.
    Sent,
}

/// A complete request on its way to a worker.
pub struct Job {
    /// The uwsgi packet (the request's CGI variables).
    pub packet: Vec<u8>,
    /// The body, shared so that a retry can send it again.
    pub body: Rc<Body>,
    /// For the response side.
    pub info: ReqInfo,
    /// Where the answer goes; closed when the client gave up.
    pub reply: oneshot::Sender<Reply>,
    /// Where the job is, for the client's queue timeout.
    pub stage: Rc<Cell<Stage>>,
    /// When it was queued (for the oldest-wait figure).
    pub since: Instant,
    /// Workers it was offered to that failed before it could be processed.
    pub attempts: u8,
}

impl Job {
    /// The client is no longer waiting for it.
    #[must_use]
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Why a request got no worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-queue` requests already wait.
    QueueFull,
    /// It waited `--queue-timeout`.
    QueueTimeout,
    /// It was refused by every worker it was offered to.
    NoWorker,
}

/// Bytes queued between a worker link and a slow client, with a wake-up when the client took
/// some: a slow reader holds router memory (up to [`RELAY_QUEUE_BYTES`]), never a worker.
#[derive(Default)]
pub struct Queued {
    /// Bytes in the channel.
    pub bytes: Cell<usize>,
    /// Notified when the client took a chunk.
    pub room: Notify,
    /// Set when the body ended where its framing said (else the client connection is cut).
    pub complete: Cell<bool>,
}

/// Most response bytes queued for one slow client; past it the link waits.
pub const RELAY_QUEUE_BYTES: usize = 64 << 20;

/// The answer to a job.
pub enum Reply {
    /// The whole response, ready for the client; `true`: the connection may stay open.
    Whole(Vec<u8>, bool),
    /// A response head, with its body following through `chunks`.
    Stream {
        /// The head for the client.
        head: Vec<u8>,
        /// The connection may stay open after the body.
        keep: bool,
        /// Body chunks, as the worker sends them.
        chunks: mpsc::UnboundedReceiver<Vec<u8>>,
        /// Their accounting.
        queued: Rc<Queued>,
    },
    /// No worker for it: 503.
    Refused(Refusal),
    /// The worker failed before the response head: 502 with the reason logged.
    BadGateway(String),
    /// No response head within `--socket-timeout`: 504.
    Timeout,
}
