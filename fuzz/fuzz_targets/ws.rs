#![no_main]
//! Fuzz the WebSocket `Connection` with the input as the bytes a client sends after the
//! handshake, with and without permessage-deflate, fed whole and in pieces of several sizes, to
//! an echo app, with a 4 KiB message limit.
//!
//! Checked: no panic; everything written is well-formed unmasked server frames, with nothing
//! after our close frame; a close or an error is the last event and leaves the connection
//! closed; the events (runs of untaken pongs collapsed) and the end state do not depend on the
//! piece size.

use headrace::ws::{Config, Connection, Deflate, DeflateParams, Event, State};
use libfuzzer_sys::fuzz_target;

const PIECES: [usize; 6] = [1, 2, 3, 7, 16, 61];

fn run(input: &[u8], piece: usize, deflate: bool) -> (Vec<Event>, State) {
    let config = Config {
        max_size: 4096,
        auto_pong: true,
    };
    let codec = deflate.then(|| Deflate::new(DeflateParams::default(), 6));
    let mut conn = Connection::new(config, codec);
    let mut events: Vec<Event> = Vec::new();
    let mut out = Vec::new();
    for part in input.chunks(piece) {
        conn.receive(part);
        while let Some(ev) = conn.next_event() {
            if let Event::Message(m) = &ev {
                conn.send_message(m).expect("the connection is open while events come");
            }
            match (events.last_mut(), &ev) {
                (Some(Event::Pong(last)), Event::Pong(p)) => last.clone_from(p),
                _ => events.push(ev),
            }
        }
        out.extend(conn.take_output());
    }
    check_output(&out);
    if let Some(i) = events
        .iter()
        .position(|e| matches!(e, Event::Close { .. } | Event::Error(_)))
    {
        assert_eq!(i, events.len() - 1, "events after the end: {events:?}");
        assert_eq!(conn.state(), State::Closed);
    }
    (events, conn.state())
}

fn check_output(mut out: &[u8]) {
    use headrace::ws::frame;
    while !out.is_empty() {
        assert!(out.len() >= 2);
        let hl = frame::header_len([out[0], out[1]]);
        let h = frame::parse_header(&out[..hl]).expect("our header");
        assert_eq!(h.mask, None);
        let end = hl + usize::try_from(h.len).expect("fits");
        assert!(end <= out.len());
        out = &out[end..];
        if h.opcode == 0x8 {
            assert!(out.is_empty(), "bytes after our close frame");
        }
    }
}

fuzz_target!(|input: &[u8]| {
    for deflate in [false, true] {
        let whole = run(input, input.len().max(1), deflate);
        for piece in PIECES {
            assert_eq!(run(input, piece, deflate), whole, "fed in {piece}-byte pieces");
        }
    }
});
