//! Property tests for the HTTP/1.1 request-head parser and the chunked body decoder, and the
//! replay of the regression inputs in `tests/corpus/`.
//!
//! The default case count keeps `cargo test` fast; for a long search run by hand:
//! `PROPTEST_CASES=200000 cargo test --release --test http_props`.
//! Failures are not persisted by proptest: a failing input found here belongs in
//! `tests/corpus/` (see `corpus_replays_head` and `corpus_replays_chunked`), named by its expected
//! outcome.

use headrace::http::chunked::is_forbidden_trailer;
use headrace::http::parse::{parse_head, Framing, Limits, RequestHead, Version};
use headrace::http::{ChunkedDecoder, HttpError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::Config;
use std::ops::Range;
use std::path::Path;

/// A head limit above every generated valid request.
const BIG: Limits = Limits {
    head: 64 * 1024,
    body: 0,
};

/// The limits the corpus file names refer to (the `head` fuzz target's ordinary limits).
const CORPUS_LIMITS: Limits = Limits {
    head: 1024,
    body: 1_000_000,
};

/// The body limit the chunked corpus file names refer to (also used by the `chunked` target).
const CHUNKED_LIMIT: u64 = 64;

/// proptest's defaults (256 cases, or `PROPTEST_CASES`), with no failure files.
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Head: comparing results

/// Everything `parse_head` returns, in a comparable form.
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

/// Parse and check what holds for any input: a parsed head's ranges lie inside the head and
/// the head inside the buffer and the limit; a buffer at the limit never needs more bytes.
fn parse(buf: &[u8], limits: Limits) -> Result<Option<Head>, HttpError> {
    let r = parse_head(buf, limits).map(|h| h.map(key));
    match &r {
        Ok(Some(h)) => {
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
        Ok(None) => assert!(
            buf.len() < limits.head,
            "{} bytes at limit {} still need more",
            buf.len(),
            limits.head
        ),
        Err(_) => {}
    }
    r
}

/// Every prefix of `buf` gives `Ok(None)` or exactly the whole buffer's result: the outcome
/// does not depend on how the bytes were split into reads.
fn check_prefixes(buf: &[u8], limits: Limits) {
    let whole = parse(buf, limits);
    for k in 0..buf.len() {
        let part = parse(&buf[..k], limits);
        assert!(
            part == Ok(None) || part == whole,
            "prefix of {k} bytes gave {part:?}, the whole {} bytes {whole:?}: {:?}",
            buf.len(),
            String::from_utf8_lossy(buf)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Head: generating valid requests

const TCHAR: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Headers the framing rules read; random headers avoid them so the model stays simple.
const SPECIAL: &[&[u8]] = &[
    b"host",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"expect",
    b"content-type",
];

fn token(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(select(TCHAR), 1..=max)
}

/// What a method may be made of (uppercase letters, digits, `-_.`; see `parse_head`).
const METHOD_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";

/// A method that takes an origin-form or absolute-form target: CONNECT (authority-form only)
/// is renamed rather than filtered out.
fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"
        ])
        .prop_map(|m| m.as_bytes().to_vec()),
        vec(select(METHOD_CHARS), 1..=12).prop_map(|m| if m == b"CONNECT" {
            b"CONNECTX".to_vec()
        } else {
            m
        }),
    ]
}

/// An RFC 3986 reg-name (no `%`, so no pct-encoding to get right).
fn host() -> impl Strategy<Value = Vec<u8>> {
    vec(select(b"abcxyzABCXYZ0189-._~!$&'()*+,;=".to_vec()), 1..=10)
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    // RFC 3986 characters, '%' included, any visible ASCII, and UTF-8 (httparse's target is a
    // `&str`, so other bytes above 0x7F are rejected).
    let tail = vec(
        prop_oneof![
            4 => select(b"abcXYZ019-._~!$&'()*+,;=:@%/?".to_vec()).prop_map(|b| vec![b]),
            1 => (0x21u8..=0x7e).prop_map(|b| vec![b]),
            1 => prop_oneof![
                prop::char::range('\u{80}', '\u{d7ff}'),
                prop::char::range('\u{e000}', '\u{10ffff}'),
            ]
            .prop_map(|c| c.to_string().into_bytes()),
        ],
        0..60,
    )
    .prop_map(|parts| parts.concat());
    prop_oneof![
        4 => tail.clone().prop_map(|t| [b"/".as_slice(), &t].concat()),
        1 => Just(b"*".to_vec()),
        1 => (host(), tail).prop_map(|(h, t)| [b"http://".as_slice(), &h, b"/", &t].concat()),
    ]
}

/// A field value without leading or trailing whitespace (httparse trims both).
fn value() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            6 => 0x21u8..=0x7e,
            1 => Just(b' '),
            1 => Just(b'\t'),
            1 => 0x80u8..=0xff,
        ],
        0..40,
    )
    .prop_map(|v| v.trim_ascii().to_vec())
}

fn ows() -> impl Strategy<Value = Vec<u8>> {
    vec(select(b" \t".to_vec()), 0..3)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    None,
    Length(u64),
    Chunked,
}

/// One header line: name, whitespace before the value, value, whitespace after it.
type Line = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// A valid request head and what `parse_head` must make of it.
#[derive(Debug, Clone)]
struct Req {
    method: Vec<u8>,
    target: Vec<u8>,
    version: Version,
    /// Header lines in wire order, special ones included.
    lines: Vec<Line>,
    /// `\n` instead of `\r\n` at the end of line i (request line first, blank line last).
    bare_lf: Vec<bool>,
    body: Body,
    close: bool,
    keep_alive_token: bool,
    expect: bool,
}

impl Req {
    fn bytes(&self) -> Vec<u8> {
        let eol = |i: usize| -> &[u8] {
            if self.bare_lf.get(i).copied().unwrap_or(false) {
                b"\n"
            } else {
                b"\r\n"
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.push(b' ');
        out.extend_from_slice(self.version.as_str().as_bytes());
        out.extend_from_slice(eol(0));
        for (i, (name, before, value, after)) in self.lines.iter().enumerate() {
            out.extend_from_slice(name);
            out.push(b':');
            out.extend_from_slice(before);
            out.extend_from_slice(value);
            out.extend_from_slice(after);
            out.extend_from_slice(eol(i + 1));
        }
        out.extend_from_slice(eol(self.lines.len() + 1));
        out
    }

    fn expected_framing(&self) -> Framing {
        match self.body {
            Body::None | Body::Length(0) => Framing::None,
            Body::Length(n) => Framing::Length(n),
            Body::Chunked => Framing::Chunked,
        }
    }

    /// Check a parse of `self.bytes()` (possibly followed by more bytes) against the model.
    fn check(&self, buf: &[u8], h: &Head) {
        let text = |r: &Range<usize>| buf[r.clone()].to_vec();
        assert_eq!(text(&h.0), self.method);
        assert_eq!(text(&h.1), self.target);
        assert_eq!(h.2, self.version);
        let got: Vec<(Vec<u8>, Vec<u8>)> = h.3.iter().map(|(n, v)| (text(n), text(v))).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = self
            .lines
            .iter()
            .map(|(n, _, v, _)| (n.clone(), v.clone()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(h.4, self.bytes().len());
        let framing = self.expected_framing();
        assert_eq!(h.5, framing);
        let v11 = self.version == Version::Http11;
        let keep_alive = !self.close && (v11 || self.keep_alive_token);
        assert_eq!(h.6, keep_alive, "keep_alive");
        assert_eq!(h.7, self.expect && v11 && framing != Framing::None);
        assert_eq!(h.8, self.method == b"HEAD");
    }
}

/// Random header lines, none of them one the framing rules read.
fn plain_lines() -> impl Strategy<Value = Vec<Line>> {
    vec(
        (
            // Renamed rather than filtered out, so long runs do not hit proptest's reject limit.
            token(16).prop_map(|n| {
                if SPECIAL.iter().any(|s| n.eq_ignore_ascii_case(s)) {
                    [b"X-".as_slice(), &n].concat()
                } else {
                    n
                }
            }),
            ows(),
            value(),
            ows(),
        ),
        0..12,
    )
}

/// Capitalisation as clients send it, or shouted.
fn spelled(name: &str, upper: bool) -> Vec<u8> {
    if upper {
        name.to_ascii_uppercase().into_bytes()
    } else {
        name.as_bytes().to_vec()
    }
}

prop_compose! {
    fn request()(
        method in method(),
        target in target(),
        v11 in any::<bool>(),
        mut lines in plain_lines(),
        body in prop_oneof![
            Just(Body::None),
            (0u64..=u64::from(u32::MAX)).prop_map(Body::Length),
            Just(Body::Chunked),
        ],
        host in (any::<bool>(), value()),
        close in any::<bool>(),
        keep_alive_token in any::<bool>(),
        expect in any::<bool>(),
        places in vec(any::<Index>(), 5),
        upper in any::<bool>(),
        bare_lf in vec(prop::bool::weighted(0.1), 20),
    ) -> Req {
        // Chunked framing is an error in HTTP/1.0 (covered by the corpus); not generated here.
        let body = if !v11 && body == Body::Chunked { Body::None } else { body };
        let mut special: Vec<Line> = Vec::new();
        // Host is required in 1.1, optional in 1.0.
        if v11 || host.0 {
            special.push((spelled("Host", upper), b" ".to_vec(), host.1, Vec::new()));
        }
        match body {
            Body::None => {}
            Body::Length(n) => special.push((
                spelled("Content-Length", upper), b" ".to_vec(), n.to_string().into_bytes(), Vec::new(),
            )),
            Body::Chunked => special.push((
                spelled("Transfer-Encoding", upper), b" ".to_vec(), b"chunked".to_vec(), Vec::new(),
            )),
        }
        if close || keep_alive_token {
            let mut tokens = Vec::new();
            if keep_alive_token {
                tokens.push("Keep-Alive");
            }
            if close {
                tokens.push("close");
            }
            special.push((spelled("Connection", upper), b" ".to_vec(), tokens.join(", ").into_bytes(), Vec::new()));
        }
        if expect {
            special.push((spelled("Expect", upper), b" ".to_vec(), b"100-continue".to_vec(), Vec::new()));
        }
        for (line, place) in special.into_iter().zip(places) {
            let at = place.index(lines.len() + 1);
            lines.insert(at, line);
        }
        let version = if v11 { Version::Http11 } else { Version::Http10 };
        // The asterisk-form is for OPTIONS only.
        let method = if target == b"*" { b"OPTIONS".to_vec() } else { method };
        Req { method, target, version, lines, bare_lf, body, close, keep_alive_token, expect }
    }
}

/// Valid request bytes with a few bytes inserted, overwritten or deleted.
fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop_oneof![
        3 => select(b"\r\n :\t\0\x7f\x80\xffH/1.0 ,;chunked".to_vec()),
        1 => any::<u8>(),
    ];
    (request(), vec((0u8..3, any::<Index>(), interesting), 1..5)).prop_map(|(req, edits)| {
        let mut b = req.bytes();
        for (op, at, byte) in edits {
            let i = at.index(b.len() + 1);
            match op {
                0 => b.insert(i, byte),
                1 if i < b.len() => b[i] = byte,
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => b.push(byte),
            }
        }
        b
    })
}

// ---------------------------------------------------------------------------------------------
// Chunked: decoding with checks

/// What decoding an input produced.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    body: Vec<u8>,
    done: bool,
    /// Bytes consumed (counted only while no error happened).
    consumed: usize,
    error: Option<HttpError>,
}

/// Feed `input` in pieces of the given lengths (cycled), as `wsgi.input` does: step over each
/// piece until it is used up or the body is done. Checks each step's contract, and that after
/// an error every further step fails the same way.
fn decode(input: &[u8], pieces: &[usize], limit: u64) -> Decoded {
    let mut d = ChunkedDecoder::new(limit);
    let mut out = Decoded {
        body: Vec::new(),
        done: false,
        consumed: 0,
        error: None,
    };
    let mut at = 0;
    for &len in pieces.iter().cycle() {
        if at >= input.len() || d.is_done() {
            break;
        }
        let end = (at + len.max(1)).min(input.len());
        let mut rest = &input[at..end];
        at = end;
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
                    for more in [rest, &input[at..], &b"0\r\n\r\n"[..], &b"1\r\nx\r\n"[..]] {
                        assert_eq!(d.step(more).as_ref().err(), Some(&e));
                    }
                    assert!(!d.is_done());
                    out.error = Some(e);
                    out.consumed = 0;
                    return out;
                }
            }
        }
    }
    out.done = d.is_done();
    if out.done {
        // A finished body takes nothing more: what follows is the next request.
        assert_eq!(d.step(b"GET / HTTP/1.1\r\n"), Ok((0, 0..0)));
    }
    assert!(out.body.len() <= input.len());
    if limit > 0 {
        assert!(out.body.len() as u64 <= limit);
    }
    out
}

/// Decode fed whole and in `pieces`, check both agree, and return the result.
fn decode_both_ways(input: &[u8], pieces: &[usize], limit: u64) -> Decoded {
    let whole = decode(input, &[input.len()], limit);
    let split = decode(input, pieces, limit);
    assert_eq!(whole, split, "fed whole vs in pieces {pieces:?}");
    if whole.error.is_none() && !whole.done {
        assert_eq!(
            whole.consumed,
            input.len(),
            "unfinished body not fully consumed"
        );
    }
    whole
}

/// How to encode one chunk: its size, hex digits in upper case, leading zeros, an extension,
/// and a bare LF instead of CRLF.
type ChunkSpec = (usize, bool, usize, Option<String>, bool);

fn extension() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "[a-z]{1,8}=[A-Za-z0-9]{0,8}",
        "[a-z]{1,8}=\"[ -!#-~]{0,12}\"",
        "[a-z]{1,4}=[a-z]{1,4};[a-z]{1,4}",
    ]
}

prop_compose! {
    /// A random body and its chunked encoding.
    fn chunked()(
        body in vec(any::<u8>(), 0..700),
        specs in vec(
            (1usize..120, any::<bool>(), 0usize..3, prop::option::weighted(0.2, extension()), prop::bool::weighted(0.1)),
            1..12,
        ),
        last in (0usize..3, prop::option::weighted(0.2, extension())),
        trailers in vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..3),
    ) -> (Vec<u8>, Vec<u8>) {
        (body.clone(), encode(&body, &specs, &last, &trailers))
    }
}

fn size_line(
    out: &mut Vec<u8>,
    size: usize,
    (upper, zeros, ext, lf): (bool, usize, &Option<String>, bool),
) {
    out.extend(std::iter::repeat_n(b'0', zeros));
    let hex = if upper {
        format!("{size:X}")
    } else {
        format!("{size:x}")
    };
    out.extend_from_slice(hex.as_bytes());
    if let Some(ext) = ext {
        out.push(b';');
        out.extend_from_slice(ext.as_bytes());
    }
    out.extend_from_slice(if lf { b"\n" } else { b"\r\n" });
}

fn encode(
    body: &[u8],
    specs: &[ChunkSpec],
    last: &(usize, Option<String>),
    trailers: &[String],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    for (size, upper, zeros, ext, lf) in specs.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (*size).min(rest.len());
        size_line(&mut out, n, (*upper, *zeros, ext, *lf));
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(if *lf { b"\n" } else { b"\r\n" });
        rest = &rest[n..];
    }
    size_line(&mut out, 0, (false, last.0, &last.1, false));
    for t in trailers {
        // A field that may not be a trailer (Host, TE...) would make the body an error.
        let name = t.split(':').next().unwrap_or_default();
        if is_forbidden_trailer(name.as_bytes()) {
            out.extend_from_slice(b"X-");
        }
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// An encoding with a few bytes inserted, overwritten or deleted.
fn mutated_chunked() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop_oneof![
        3 => select(b"\r\n0123456789abcdefABCDEFgG;= \t\0".to_vec()),
        1 => any::<u8>(),
    ];
    (chunked(), vec((0u8..3, any::<Index>(), interesting), 1..4)).prop_map(|((_, enc), edits)| {
        let mut b = enc;
        for (op, at, byte) in edits {
            let i = at.index(b.len() + 1);
            match op {
                0 => b.insert(i, byte),
                1 if i < b.len() => b[i] = byte,
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => b.push(byte),
            }
        }
        b
    })
}

fn pieces() -> impl Strategy<Value = Vec<usize>> {
    vec(1usize..80, 1..30)
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config())]

    #[test]
    fn head_arbitrary_bytes_never_panic(
        buf in vec(any::<u8>(), 0..1500),
        limit in 1usize..2000,
    ) {
        let _ = parse(&buf, Limits { head: limit, body: 0 });
    }

    #[test]
    fn head_valid_request_parses_as_built(req in request()) {
        let buf = req.bytes();
        let h = parse(&buf, BIG).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let h = h.ok_or_else(|| TestCaseError::fail("complete head needs more"))?;
        req.check(&buf, &h);
    }

    #[test]
    fn head_incremental_equals_whole(
        req in request(),
        tail in vec(any::<u8>(), 0..64),
    ) {
        // What follows the head (a body, a pipelined request) must not change it.
        let head = req.bytes();
        let buf = [head.as_slice(), &tail].concat();
        let whole = parse(&buf, BIG);
        let mut first = None;
        for k in 0..=buf.len() {
            match parse(&buf[..k], BIG) {
                Ok(None) => {}
                Ok(Some(h)) => {
                    first = Some((k, h));
                    break;
                }
                Err(e) => prop_assert!(false, "prefix of {} bytes: {:?}", k, e),
            }
        }
        let (k, h) = first.ok_or_else(|| TestCaseError::fail("never complete"))?;
        prop_assert_eq!(k, head.len());
        req.check(&buf, &h);
        prop_assert_eq!(Ok(Some(h)), whole);
    }

    #[test]
    fn head_prefix_gives_none_or_the_same_result(
        buf in mutated_request(),
        small in any::<bool>(),
        limit in any::<Index>(),
    ) {
        let limits = if small {
            Limits { head: limit.index(buf.len()) + 1, body: 100 }
        } else {
            CORPUS_LIMITS
        };
        check_prefixes(&buf, limits);
    }

    #[test]
    fn head_over_the_limit_is_414_or_431(req in request(), cut in any::<Index>()) {
        let buf = req.bytes();
        let limit = cut.index(buf.len() - 1) + 1;
        let limits = Limits { head: limit, body: 0 };
        let line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
        let want = if line >= limit {
            HttpError::UriTooLong(limit)
        } else {
            HttpError::HeadTooLarge(limit)
        };
        for k in 0..=buf.len() {
            let got = parse(&buf[..k], limits);
            if k < limit {
                prop_assert_eq!(got, Ok(None), "prefix of {} bytes", k);
            } else {
                prop_assert_eq!(got, Err(want.clone()), "prefix of {} bytes", k);
            }
        }
        // Exactly at the limit it fits.
        let exact = parse(&buf, Limits { head: buf.len(), body: 0 })
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        prop_assert!(exact.is_some());
    }

    #[test]
    fn head_body_limit_is_413(req in request(), limit in 1u64..u64::from(u32::MAX)) {
        let buf = req.bytes();
        let got = parse(&buf, Limits { head: BIG.head, body: limit });
        match req.expected_framing() {
            Framing::Length(n) if n > limit => {
                prop_assert_eq!(got, Err(HttpError::BodyTooLarge(limit)));
            }
            _ => prop_assert!(matches!(got, Ok(Some(_)))),
        }
    }

    #[test]
    fn chunked_arbitrary_bytes_never_panic(
        input in vec(any::<u8>(), 0..1024),
        pieces in pieces(),
        limited in any::<bool>(),
    ) {
        decode_both_ways(&input, &pieces, if limited { CHUNKED_LIMIT } else { 0 });
    }

    #[test]
    fn chunked_mutated_bodies_are_split_invariant(
        input in mutated_chunked(),
        pieces in pieces(),
        limited in any::<bool>(),
    ) {
        decode_both_ways(&input, &pieces, if limited { CHUNKED_LIMIT } else { 0 });
    }

    #[test]
    fn chunked_round_trip(
        (body, encoded) in chunked(),
        pieces in pieces(),
        next in vec(any::<u8>(), 0..20),
    ) {
        // Bytes after the last chunk (the next request) are left unconsumed.
        let input = [encoded.as_slice(), &next].concat();
        let got = decode_both_ways(&input, &pieces, 0);
        prop_assert_eq!(&got, &Decoded { body: body.clone(), done: true, consumed: encoded.len(), error: None });
        let exact = decode_both_ways(&input, &pieces, body.len() as u64);
        prop_assert_eq!(exact.body, body);
    }

    #[test]
    fn chunked_over_the_limit_is_413(
        (body, encoded) in chunked(),
        pieces in pieces(),
        below in 1usize..100,
    ) {
        if body.len() < 2 {
            // No limit below a body this short (`prop_assume` would count rejects).
            return Ok(());
        }
        let limit = body.len().saturating_sub(below).max(1) as u64;
        let got = decode_both_ways(&encoded, &pieces, limit);
        prop_assert_eq!(got.error, Some(HttpError::BodyTooLarge(limit)));
        prop_assert!(body.starts_with(&got.body));
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus replay

/// The expected outcome a corpus file's name starts with: `ok-`, `partial-` or a status
/// (`400-`); anything else (`any-`, `crash-`) only has to run the checks without a panic.
fn expectation(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let (word, _) = name.split_once('-')?;
    let known =
        word == "ok" || word == "partial" || (word.len() == 3 && word.parse::<u16>().is_ok());
    known.then(|| word.to_string())
}

fn corpus(kind: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p, bytes)
        })
        .collect()
}

/// Each file in `tests/corpus/head/` is one read buffer, parsed with [`CORPUS_LIMITS`] (its
/// name gives the outcome) and with a limit of half its length (checks only), every prefix
/// included.
#[test]
fn corpus_replays_head() {
    for (path, buf) in corpus("head") {
        check_prefixes(&buf, CORPUS_LIMITS);
        check_prefixes(
            &buf,
            Limits {
                head: buf.len() / 2 + 1,
                body: 10,
            },
        );
        let got = match parse(&buf, CORPUS_LIMITS) {
            Ok(Some(_)) => "ok".to_string(),
            Ok(None) => "partial".to_string(),
            Err(e) => e.status().to_string(),
        };
        if let Some(want) = expectation(&path) {
            assert_eq!(got, want, "{}", path.display());
        }
    }
}

/// Each file in `tests/corpus/chunked/` is a body as sent, decoded with a limit of
/// [`CHUNKED_LIMIT`] bytes (its name gives the outcome) and without one, fed whole and in
/// several piece sizes.
#[test]
fn corpus_replays_chunked() {
    for (path, input) in corpus("chunked") {
        let mut results = Vec::new();
        for limit in [CHUNKED_LIMIT, 0] {
            for piece in [1, 2, 3, 5, 8, 13, 64] {
                results.push(decode_both_ways(&input, &[piece], limit));
            }
        }
        let r = &results[0];
        let got = match (&r.error, r.done) {
            (Some(e), _) => e.status().to_string(),
            (None, true) => "ok".to_string(),
            (None, false) => "partial".to_string(),
        };
        if let Some(want) = expectation(&path) {
            assert_eq!(got, want, "{}", path.display());
        }
    }
}
