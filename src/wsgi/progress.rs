//! What the response needs to know about the request body while the app runs. Shared by
//! `wsgi.input` (which updates it) and the response writer (which reads it), so that neither
//! of those modules depends on the other.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most body bytes read and discarded after the app returns, to keep the connection alive.
pub const DRAIN_LIMIT: u64 = 1 << 20;

/// What the response needs to know about the body while the app runs: whether the
/// connection can be reused after it (a 100-continue still unanswered, or more unread body than
/// [`DRAIN_LIMIT`], means it cannot, so the response says `Connection: close`).
#[derive(Debug)]
pub struct BodyProgress {
    /// `Expect: 100-continue` was sent and not yet answered.
    pub continue_pending: AtomicBool,
    /// Body bytes not yet read (chunked: 0 until a drain found more than [`DRAIN_LIMIT`]).
    pub unread: AtomicU64,
}

impl BodyProgress {
    /// The connection cannot carry another request once the response is out.
    #[must_use]
    pub fn blocks_reuse(&self) -> bool {
        self.continue_pending.load(Ordering::Relaxed)
            || self.unread.load(Ordering::Relaxed) > DRAIN_LIMIT
    }
}
