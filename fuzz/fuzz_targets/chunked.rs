#![no_main]
//! Fuzz `ChunkedDecoder` with the input as a request body as sent, fed whole and in pieces of
//! several sizes, with no body limit and with a limit of 64 bytes.
//!
//! Checked: no panic; each step consumes at most its input, reports data only inside what it
//! consumed, and makes progress until done; the decoded body, the error and the end state do
//! not depend on the piece size; after an error every further step fails the same way; a
//! limit only cuts the body short with a 413.

use headrace::http::{ChunkedDecoder, HttpError};
use libfuzzer_sys::fuzz_target;

/// The body limit the corpus file names refer to (see tests/http_props.rs).
const LIMIT: u64 = 64;

const PIECES: [usize; 6] = [1, 2, 3, 7, 16, 61];

#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    body: Vec<u8>,
    done: bool,
    /// Input consumed (counted only while no error happened).
    consumed: usize,
    error: Option<HttpError>,
}

/// Feed `input` in `piece`-byte reads, as `wsgi.input` does: step over each read until it is
/// used up or the body is done.
fn decode(input: &[u8], piece: usize, limit: u64) -> Decoded {
    let mut d = ChunkedDecoder::new(limit);
    let mut out = Decoded {
        body: Vec::new(),
        done: false,
        consumed: 0,
        error: None,
    };
    for (n, part) in input.chunks(piece).enumerate() {
        let mut rest = part;
        while !rest.is_empty() && !d.is_done() {
            match d.step(rest) {
                Ok((used, data)) => {
                    assert!(used <= rest.len(), "consumed {used} of {}", rest.len());
                    assert!(
                        used > 0 || d.is_done(),
                        "no progress on {} bytes",
                        rest.len()
                    );
                    assert!(data.start <= data.end && data.end <= used, "data {data:?}");
                    out.body.extend_from_slice(&rest[data]);
                    out.consumed += used;
                    rest = &rest[used..];
                }
                Err(e) => {
                    // Sticky: neither the same bytes again, nor what follows, nor a valid end.
                    let after = &input[((n + 1) * piece).min(input.len())..];
                    for more in [rest, after, &b"0\r\n\r\n"[..], &b"1\r\nx\r\n"[..]] {
                        assert_eq!(d.step(more).as_ref().err(), Some(&e));
                    }
                    assert!(!d.is_done());
                    out.error = Some(e);
                    out.consumed = 0;
                    return out;
                }
            }
        }
        if d.is_done() {
            break;
        }
    }
    out.done = d.is_done();
    if out.done {
        // A finished body takes nothing more: what follows is the next request.
        assert_eq!(d.step(b"GET / HTTP/1.1\r\n"), Ok((0, 0..0)));
    }
    out
}

fuzz_target!(|input: &[u8]| {
    let free = decode(input, input.len().max(1), 0);
    assert!(free.body.len() <= input.len());
    if free.error.is_none() && !free.done {
        assert_eq!(
            free.consumed,
            input.len(),
            "unfinished body not fully consumed"
        );
    }
    let limited = decode(input, input.len().max(1), LIMIT);
    assert!(limited.body.len() as u64 <= LIMIT);
    if limited.error != Some(HttpError::BodyTooLarge(LIMIT)) {
        assert_eq!(limited, free, "the limit changed more than a 413");
    } else {
        assert!(free.body.starts_with(&limited.body));
    }
    for piece in PIECES {
        assert_eq!(decode(input, piece, 0), free, "fed in {piece}-byte pieces");
        assert_eq!(
            decode(input, piece, LIMIT),
            limited,
            "fed in {piece}-byte pieces, limited"
        );
    }
});
