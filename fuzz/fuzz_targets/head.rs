#![no_main]
//! Fuzz `parse_head` with the whole input as the read buffer.
//!
//! Beyond "no panic", each input is checked for what the worker relies on:
//! - the ranges of a parsed head lie inside the head, and the head inside the buffer;
//! - a buffer that has reached the head limit never gets `Ok(None)` (no waiting forever);
//! - every prefix of the input gives `Ok(None)` or exactly the whole input's result, so the
//!   outcome does not depend on how the bytes were split into reads.

use headrace::http::parse::{parse_head, Framing, Limits, RequestHead, Version};
use headrace::http::HttpError;
use libfuzzer_sys::fuzz_target;
use std::ops::Range;

/// The ordinary case: a head limit well above most inputs.
const LARGE: Limits = Limits {
    head: 1024,
    body: 1_000_000,
};

/// Every prefix is checked up to this length; longer inputs are sampled.
const ALL_PREFIXES: usize = 700;

type Head = (
    Range<usize>,
    Range<usize>,
    Version,
    Vec<(Range<usize>, Range<usize>)>,
    usize,
    Framing,
    bool,
    bool,
    bool,
);

fn key(h: RequestHead) -> Head {
    (
        h.method,
        h.target,
        h.version,
        h.headers,
        h.len,
        h.framing,
        h.keep_alive,
        h.expect_continue,
        h.is_head,
    )
}

fn outcome(buf: &[u8], limits: Limits) -> Result<Option<Head>, HttpError> {
    let r = parse_head(buf, limits).map(|h| h.map(key));
    if let Ok(Some(h)) = &r {
        in_bounds(buf, h, limits);
    }
    r
}

fn in_bounds(buf: &[u8], h: &Head, limits: Limits) {
    let len = h.4;
    assert!(len <= buf.len() && len <= limits.head, "head length {len}");
    let inside = |r: &Range<usize>| r.start <= r.end && r.end <= len;
    assert!(inside(&h.0) && !h.0.is_empty(), "method {:?}", h.0);
    assert!(inside(&h.1) && !h.1.is_empty(), "target {:?}", h.1);
    for (name, value) in &h.3 {
        assert!(inside(name) && !name.is_empty(), "header name {name:?}");
        assert!(inside(value), "header value {value:?}");
    }
}

fn check(data: &[u8], limits: Limits) {
    let whole = outcome(data, limits);
    if data.len() >= limits.head {
        assert!(
            !matches!(whole, Ok(None)),
            "{} bytes at limit {} still need more",
            data.len(),
            limits.head
        );
    }
    let step = (data.len() / ALL_PREFIXES).max(1);
    let mut lengths: Vec<usize> = (0..data.len()).step_by(step).collect();
    if let Ok(Some(h)) = &whole {
        // The head alone, and one byte short of it.
        lengths.push(h.4);
        lengths.push(h.4 - 1);
    }
    for k in lengths {
        let part = outcome(&data[..k], limits);
        assert!(
            part == Ok(None) || part == whole,
            "prefix of {k} bytes gave {part:?}, the whole {} bytes {whole:?}",
            data.len()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, LARGE);
    // A limit below the input's length reaches the 414/431 paths at every input size.
    check(
        data,
        Limits {
            head: data.len() / 2 + 1,
            body: 10,
        },
    );
});
