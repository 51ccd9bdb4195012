//! WebSockets for the server side (RFC 6455, permessage-deflate of RFC 7692), without I/O: the
//! ASGI layer feeds the bytes it read and writes the bytes it is handed.
//!
//! - [`handshake`]: check an Upgrade request, build the 101 (or 400/403/426) response.
//! - [`Connection`]: one open connection; `receive(bytes)` → [`Event`]s, `send_*`/`close` →
//!   bytes in [`Connection::output`].
//! - [`frame`], [`reader`], [`close`], [`deflate`], [`extensions`]: the wire format underneath.
//!
//! The ASGI layer's calls, in order:
//! 1. `handshake::is_upgrade(headers)` picks the `websocket` scope; `handshake::check(method,
//!    version, headers)` gives an [`Upgrade`] (its `subprotocols` go in the scope) or a
//!    [`HandshakeError`] whose `response()` is written before closing.
//! 2. `websocket.accept`: `upgrade.accept(subprotocol, headers, &deflate_config)` →
//!    [`Accepted`]; write `accepted.head`, then `accepted.connection(Config { max_size, .. })`.
//!    `websocket.close` before accept: `handshake::forbidden()`; `websocket.http.response`:
//!    `handshake::deny(status, headers, body)`.
//! 3. Each read: `conn.receive(bytes)`. Each `receive()` of the app: `conn.next_event()`
//!    (`Message` → `websocket.receive`; `Close { code, .. }`, `Error(e)` with
//!    `e.close_code()` → `websocket.disconnect`; `Ping`/`Pong` are informational).
//! 4. `websocket.send`: `conn.send_text`/`send_binary`; `websocket.close`:
//!    `conn.close(code, reason)`; shutdown 1001, reload 1012, app error 1011;
//!    `--ws-ping-interval`: `conn.ping(..)`. Socket gone: `conn.connection_lost()` (1006).
//! 5. Write `conn.output()`, then `conn.consume_output(n)`; once `conn.state()` is
//!    [`State::Closed`] and the output is written, close the socket (a `Closing` that lasts
//!    too long is the layer's timeout).

pub mod close;
pub mod connection;
pub mod deflate;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod reader;

#[cfg(test)]
mod autobahn_cases;
#[cfg(test)]
mod client_tests;

pub use connection::{Config, Connection, Event, Message, State};
pub use deflate::Deflate;
pub use extensions::{DeflateConfig, DeflateParams};
pub use handshake::{Accepted, HandshakeError, Upgrade};

/// Default largest message (`--ws-max-size`): 16 MiB, as uvicorn and websockets.
pub const DEFAULT_MAX_SIZE: usize = 16 * 1024 * 1024;

/// Why a connection fails, or why a send is refused. Each receive-side error maps to the close
/// code we send before closing (RFC 6455 §7.1.7 "Fail the WebSocket Connection").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A frame breaks RFC 6455 framing rules (1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason that is not UTF-8 (1007).
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// permessage-deflate data that does not inflate (1007).
    #[error("permessage-deflate: {0}")]
    Deflate(&'static str),
    /// A message over the size limit (1009).
    #[error("message larger than ws-max-size ({0} bytes)")]
    TooBig(usize),
    /// The app tried to send after the close handshake began.
    #[error("the WebSocket is closed")]
    Closed,
    /// The app gave a close code that may not go on the wire, or a control payload over 125
    /// bytes.
    #[error("invalid {0}")]
    InvalidArgument(&'static str),
}

impl WsError {
    /// The close code for this failure.
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self {
            Self::Protocol(_) => close::PROTOCOL_ERROR,
            Self::InvalidUtf8 | Self::Deflate(_) => close::INVALID_PAYLOAD,
            Self::TooBig(_) => close::MESSAGE_TOO_BIG,
            Self::Closed | Self::InvalidArgument(_) => close::INTERNAL_ERROR,
        }
    }
}
