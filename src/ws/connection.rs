//! One WebSocket connection after the 101: the close handshake's state machine (RFC 6455 §7),
//! ping/pong, and the glue between the reader, permessage-deflate and the frame encoder.
//!
//! The ASGI layer calls [`Connection::receive`] with each read, takes events with
//! [`Connection::next_event`] as the app asks for them, calls `send_*`/[`Connection::close`]
//! for the app, writes [`Connection::output`] and reports it with
//! [`Connection::consume_output`], and closes the socket once [`Connection::state`] is
//! [`State::Closed`] and the output is empty.
//!
//! Pings are answered as soon as they are read. A peer's close, and a failure, take effect
//! when their event is taken: messages read before them reach the app first, and what the app
//! sends in reply still goes out ahead of our close frame (§5.5.1 lets an endpoint finish its
//! current message before answering a close). An ASGI layer that drains every event at once
//! gets the immediate answer instead.

use super::close;
use super::deflate::Deflate;
use super::frame::{self, Opcode, MAX_CONTROL_PAYLOAD};
use super::reader::{Inbound, Reader};
use super::{WsError, DEFAULT_MAX_SIZE};
use std::collections::VecDeque;

/// Per-connection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest message, on the wire and inflated (`--ws-max-size`).
    pub max_size: usize,
    /// Answer each ping with a pong carrying its payload (§5.5.2), as every ASGI server does:
    /// ASGI has no ping event.
    pub auto_pong: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
            auto_pong: true,
        }
    }
}

/// Where the close handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's (the ASGI layer bounds the wait).
    Closing,
    /// Both close frames were exchanged, or the connection failed: flush the output, then
    /// close the socket (the server closes TCP first, §7.1.1).
    Closed,
}

/// A data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, valid UTF-8.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// What the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete message.
    Message(Message),
    /// A ping, for a layer that answers pings itself (`auto_pong` off; with it on, pings are
    /// answered and not reported).
    Ping(Vec<u8>),
    /// A pong (for `--ws-ping-interval`'s liveness check). Consecutive pongs not yet taken
    /// collapse into the last one, so a peer's pong flood does not grow the queue.
    Pong(Vec<u8>),
    /// The close handshake ended (or the connection was lost: 1006): the code and reason for
    /// the app's `websocket.disconnect`. 1005 when the peer's close frame had no code.
    Close {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The peer broke the protocol; a close frame with `error.close_code()` is queued unless
    /// one was already sent, and the connection is closed.
    Error(WsError),
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    config: Config,
    state: State,
    reader: Reader,
    deflate: Option<Deflate>,
    inbound: Vec<Inbound>,
    events: VecDeque<Event>,
    out: Vec<u8>,
    out_pos: usize,
    /// The code we sent in our close frame (the one the app's disconnect reports when the
    /// peer's answer carries none).
    sent_close: Option<u16>,
    /// A close frame or a failure was read: later input is ignored.
    input_done: bool,
    /// Reused buffer for compressed outgoing payloads.
    scratch: Vec<u8>,
}

impl Connection {
    /// A connection that just sent its 101, with the permessage-deflate codec when one was
    /// agreed ([`super::handshake::Accepted::deflate`]).
    #[must_use]
    pub fn new(config: Config, deflate: Option<Deflate>) -> Self {
        Self {
            config,
            state: State::Open,
            reader: Reader::new(config.max_size, deflate.is_some()),
            deflate,
            inbound: Vec::new(),
            events: VecDeque::new(),
            out: Vec::new(),
            out_pos: 0,
            sent_close: None,
            input_done: false,
            scratch: Vec::new(),
        }
    }

    /// Events not yet taken: the layer stops reading the socket while the app lags this far
    /// behind (backpressure; messages are bounded by `max_size` each, not in number).
    #[must_use]
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// The next event ends the connection (the peer's close, or a failure). Taking it answers
    /// at once, so a layer whose app has not yet taken the messages read before it may leave
    /// it queued until then: the app's replies to them go out first (RFC 6455 §5.5.1).
    #[must_use]
    pub fn ending_next(&self) -> bool {
        matches!(
            self.events.front(),
            Some(Event::Close { .. } | Event::Error(_))
        )
    }

    /// The close handshake's state.
    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    /// Feeds bytes read from the socket; events become available from
    /// [`Connection::next_event`], answers (pongs, close replies) in the output. Bytes after
    /// the connection closed are ignored.
    pub fn receive(&mut self, data: &[u8]) {
        if self.input_done || self.state == State::Closed {
            return;
        }
        let mut inbound = std::mem::take(&mut self.inbound);
        let read = self.reader.feed(data, &mut inbound);
        for item in inbound.drain(..) {
            if self.input_done {
                break;
            }
            if let Err(e) = self.handle(item) {
                self.input_done = true;
                self.events.push_back(Event::Error(e));
            }
        }
        self.inbound = inbound;
        if let Err(e) = read {
            if !self.input_done {
                self.input_done = true;
                self.events.push_back(Event::Error(e));
            }
        }
    }

    /// The next event, oldest first. Taking a [`Event::Close`] queues our answering close
    /// frame (echoing its code, §5.5.1) unless we sent ours already; taking an
    /// [`Event::Error`] queues the close frame that fails the connection (§7.1.7). Either way
    /// the state becomes [`State::Closed`].
    pub fn next_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        match &event {
            Event::Close { code, .. } => {
                if self.state == State::Open && *code != close::ABNORMAL {
                    let reply = close::payload(*code, "");
                    frame::encode(&mut self.out, true, false, Opcode::Close, &reply);
                    self.sent_close = Some(*code);
                }
                self.state = State::Closed;
            }
            Event::Error(e) => self.fail(e),
            _ => {}
        }
        Some(event)
    }

    /// The socket went away without a close handshake: reports 1006 (§7.1.5) unless a close
    /// was already read.
    pub fn connection_lost(&mut self) {
        if !self.input_done && self.state != State::Closed {
            self.input_done = true;
            self.state = State::Closed;
            self.events.push_back(Event::Close {
                code: close::ABNORMAL,
                reason: String::new(),
            });
        }
    }

    fn handle(&mut self, item: Inbound) -> Result<(), WsError> {
        match item {
            Inbound::Message {
                text,
                compressed,
                data,
            } => {
                let data = if compressed {
                    match self.deflate.as_mut() {
                        Some(d) => d.decompress(&data, self.config.max_size)?,
                        None => return Err(WsError::Protocol("RSV1 without permessage-deflate")),
                    }
                } else {
                    data
                };
                let message = if text {
                    Message::Text(String::from_utf8(data).map_err(|_| WsError::InvalidUtf8)?)
                } else {
                    Message::Binary(data)
                };
                // After our close, the app no longer reads (§5.5.1 lets the peer keep sending
                // until it sees our close): checked above, then dropped.
                if self.state == State::Open {
                    self.events.push_back(Event::Message(message));
                }
            }
            Inbound::Ping(payload) => {
                if !self.config.auto_pong {
                    self.events.push_back(Event::Ping(payload));
                } else if self.state == State::Open {
                    frame::encode(&mut self.out, true, false, Opcode::Pong, &payload);
                }
            }
            Inbound::Pong(payload) => {
                if let Some(Event::Pong(last)) = self.events.back_mut() {
                    *last = payload;
                } else {
                    self.events.push_back(Event::Pong(payload));
                }
            }
            Inbound::Close(payload) => {
                // Answered when the event is taken (`next_event`).
                let (code, reason) = close::parse(&payload)?;
                self.input_done = true;
                self.events.push_back(Event::Close { code, reason });
            }
        }
        Ok(())
    }

    /// Fails the connection (§7.1.7): our close frame with the error's code unless we already
    /// sent one, then closed.
    fn fail(&mut self, e: &WsError) {
        if self.state == State::Open {
            let code = e.close_code();
            let reason = match e {
                WsError::Protocol(why) | WsError::Deflate(why) => why,
                WsError::InvalidUtf8 => "invalid UTF-8",
                WsError::TooBig(_) => "message too big",
                WsError::Closed | WsError::InvalidArgument(_) => "",
            };
            frame::encode(
                &mut self.out,
                true,
                false,
                Opcode::Close,
                &close::payload(code, reason),
            );
            self.sent_close = Some(code);
        }
        self.state = State::Closed;
    }

    /// Queues a text message (compressed when permessage-deflate was agreed).
    pub fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.send(Opcode::Text, text.as_bytes())
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), WsError> {
        self.send(Opcode::Binary, data)
    }

    /// Queues a message.
    pub fn send_message(&mut self, message: &Message) -> Result<(), WsError> {
        match message {
            Message::Text(t) => self.send_text(t),
            Message::Binary(b) => self.send_binary(b),
        }
    }

    fn send(&mut self, opcode: Opcode, data: &[u8]) -> Result<(), WsError> {
        if self.state != State::Open {
            return Err(WsError::Closed);
        }
        if let Some(d) = self.deflate.as_mut() {
            self.scratch.clear();
            d.compress(data, &mut self.scratch)?;
            frame::encode(&mut self.out, true, true, opcode, &self.scratch);
        } else {
            frame::encode(&mut self.out, true, false, opcode, data);
        }
        Ok(())
    }

    /// Queues a ping (`--ws-ping-interval`); payload at most 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.control(Opcode::Ping, payload)
    }

    /// Queues an unsolicited pong (a heartbeat, §5.5.3).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), WsError> {
        self.control(Opcode::Pong, payload)
    }

    fn control(&mut self, opcode: Opcode, payload: &[u8]) -> Result<(), WsError> {
        if self.state != State::Open {
            return Err(WsError::Closed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(WsError::InvalidArgument("control payload over 125 bytes"));
        }
        frame::encode(&mut self.out, true, false, opcode, payload);
        Ok(())
    }

    /// Starts the close handshake (the app's `websocket.close`, 1001 on shutdown, 1012 on
    /// reload): queues our close frame and waits for the peer's. `code` must be one that may
    /// go on the wire, or 1005 for an empty close frame; the reason is cut to 123 bytes.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), WsError> {
        if self.state != State::Open {
            return Err(WsError::Closed);
        }
        if code != close::NO_STATUS && !close::is_valid_code(code) {
            return Err(WsError::InvalidArgument("close code"));
        }
        let payload = close::payload(code, reason);
        frame::encode(&mut self.out, true, false, Opcode::Close, &payload);
        self.sent_close = Some(code);
        self.state = State::Closing;
        Ok(())
    }

    /// The code of the close frame we sent, if any.
    #[must_use]
    pub fn sent_close(&self) -> Option<u16> {
        self.sent_close
    }

    /// Bytes waiting to be written, in order.
    #[must_use]
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Marks the first `n` bytes of [`Connection::output`] as written.
    pub fn consume_output(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Takes all waiting output at once.
    pub fn take_output(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.drain(..self.out_pos);
        self.out_pos = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::client_frame;
    use proptest::prelude::*;

    /// Feeds `wire` in pieces of `piece` bytes to an echo app; returns the events and whether
    /// the connection ended closed.
    fn run(wire: &[u8], piece: usize, deflate: bool) -> (Vec<Event>, State, Vec<u8>) {
        let config = Config {
            max_size: 2000,
            auto_pong: true,
        };
        let codec = deflate.then(|| Deflate::new(super::super::DeflateParams::default(), 6));
        let mut conn = Connection::new(config, codec);
        let mut events = Vec::new();
        let mut out = Vec::new();
        for part in wire.chunks(piece.max(1)) {
            conn.receive(part);
            while let Some(ev) = conn.next_event() {
                if let Event::Message(m) = &ev {
                    conn.send_message(m).unwrap();
                }
                events.push(ev);
            }
            out.extend(conn.take_output());
        }
        (events, conn.state(), out)
    }

    /// Every byte of `out` belongs to a well-formed unmasked server frame, and nothing
    /// follows a close frame.
    fn check_output(mut out: &[u8]) {
        while out.len() >= 2 {
            let hl = frame::header_len([out[0], out[1]]);
            let h = frame::parse_header(&out[..hl]).unwrap();
            assert_eq!(h.mask, None);
            let end = hl + usize::try_from(h.len).unwrap();
            assert!(end <= out.len());
            out = &out[end..];
            if h.opcode == 0x8 {
                assert!(out.is_empty(), "bytes after our close frame");
            }
        }
        assert!(out.is_empty());
    }

    fn collapse_pongs(events: &[Event]) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for e in events {
            match (out.last_mut(), e) {
                (Some(Event::Pong(last)), Event::Pong(p)) => last.clone_from(p),
                _ => out.push(e.clone()),
            }
        }
        out
    }

    fn frames() -> impl Strategy<Value = Vec<u8>> {
        let b0 = prop::sample::select(vec![
            0x81u8, 0x82, 0x01, 0x02, 0x00, 0x80, 0x89, 0x8a, 0x88, 0xc1, 0x83, 0x91,
        ]);
        let payload = prop::collection::vec(
            prop::sample::select(vec![b'a', 0x03, 0xe8, 0xce, 0xba, 0xff, 0x80]),
            0..200,
        );
        prop::collection::vec((b0, payload, any::<[u8; 4]>()), 0..12).prop_map(|fs| {
            fs.into_iter()
                .flat_map(|(b0, p, mask)| client_frame(b0, &p, mask))
                .collect()
        })
    }

    #[test]
    fn pings_without_auto_pong_and_pong_floods() {
        let config = Config {
            auto_pong: false,
            ..Config::default()
        };
        let mut conn = Connection::new(config, None);
        let mut wire = client_frame(0x89, b"p1", [1, 2, 3, 4]);
        for i in 0..1000u16 {
            wire.extend(client_frame(0x8a, &i.to_be_bytes(), [5, 6, 7, 8]));
        }
        wire.extend(client_frame(0x81, b"m", [1, 2, 3, 4]));
        wire.extend(client_frame(0x8a, b"last", [1, 2, 3, 4]));
        conn.receive(&wire);
        assert!(conn.output().is_empty(), "no pong without auto_pong");
        assert_eq!(conn.pending_events(), 4);
        let events: Vec<Event> = std::iter::from_fn(|| conn.next_event()).collect();
        assert_eq!(
            events,
            [
                Event::Ping(b"p1".to_vec()),
                Event::Pong(999u16.to_be_bytes().to_vec()),
                Event::Message(Message::Text("m".into())),
                Event::Pong(b"last".to_vec()),
            ]
        );
        conn.pong(b"p1").unwrap();
        assert_eq!(conn.output(), b"\x8a\x02p1");
    }

    #[test]
    fn the_ending_event_waits_unanswered_until_taken() {
        for (last, code) in [
            (
                client_frame(0x88, &1000u16.to_be_bytes(), [1, 2, 3, 4]),
                1000u16,
            ),
            (client_frame(0xa1, b"RSV2", [1, 2, 3, 4]), 1002),
        ] {
            let mut conn = Connection::new(Config::default(), None);
            let mut wire = client_frame(0x81, b"m", [1, 2, 3, 4]);
            wire.extend(last);
            conn.receive(&wire);
            assert!(!conn.ending_next(), "a message comes first");
            assert_eq!(
                conn.next_event(),
                Some(Event::Message(Message::Text("m".into())))
            );
            assert!(conn.ending_next());
            // Not answered yet: the reply to the message still goes out first.
            conn.send_text("m").unwrap();
            assert_eq!(conn.output(), b"\x81\x01m");
            assert!(conn.next_event().is_some());
            assert!(!conn.ending_next());
            let out = conn.take_output();
            assert_eq!(&out[..3], b"\x81\x01m");
            assert_eq!(out[3], 0x88);
            assert_eq!(u16::from_be_bytes([out[5], out[6]]), code);
        }
    }

    #[test]
    fn invalid_utf8_in_a_fragment_fails_before_a_later_protocol_error_at_any_split() {
        // Found by `split_invariance`: the UTF-8 error used to be seen only at the end of a
        // read, after a later frame's protocol error when both came in one read.
        let mut wire = client_frame(0x01, b"aa\xff", [1, 2, 3, 4]);
        wire.extend(client_frame(0x81, b"new message", [1, 2, 3, 4]));
        for piece in [1, 5, 9, wire.len()] {
            let (events, state, _) = run(&wire, piece, false);
            assert_eq!(
                events,
                [Event::Error(WsError::InvalidUtf8)],
                "piece {piece}"
            );
            assert_eq!(state, State::Closed);
        }
    }

    proptest! {
        /// The outcome does not depend on how the bytes were split into reads, on frames
        /// built from a mix of valid and invalid first bytes and payloads, and on raw bytes.
        #[test]
        fn split_invariance(
            wire in prop_oneof![frames(), prop::collection::vec(any::<u8>(), 0..600)],
            piece in 1usize..40,
            deflate in any::<bool>(),
        ) {
            let (events, state, out) = run(&wire, wire.len(), deflate);
            check_output(&out);
            let (events2, state2, out2) = run(&wire, piece, deflate);
            check_output(&out2);
            // Pongs not yet taken collapse, so how many depends on when events were taken.
            prop_assert_eq!(collapse_pongs(&events), collapse_pongs(&events2));
            prop_assert_eq!(state, state2);
            // Nothing after the end: a close or an error is the last event.
            if let Some(i) = events
                .iter()
                .position(|e| matches!(e, Event::Close { .. } | Event::Error(_)))
            {
                prop_assert_eq!(i, events.len() - 1);
                prop_assert_eq!(state, State::Closed);
            }
        }
    }
}
