//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//! Line endings: CRLF, or a bare LF, accepted the same way `httparse` accepts them in the head.

use super::HttpError;

/// Longest chunk-extension accepted.
const MAX_EXTENSION: usize = 1024;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 8192;
/// Bytes of a trailer field name kept for the [`FORBIDDEN_TRAILERS`] check: the longest name
/// there; a longer name cannot be one of them.
const NAME_KEPT: usize = 19;

/// Fields that must not arrive in a trailer section (RFC 9110 §6.5.1): they decide the framing,
/// the routing, authentication, request modifiers or how the content is read, all of which were
/// settled when the head was read; a trailer carrying one is someone hoping a later hop merges
/// it into the head. The list is Go's `net/http` bad-trailer list plus the connection-level,
/// cookie and conditional fields.
pub const FORBIDDEN_TRAILERS: &[&[u8]] = &[
    b"authorization",
    b"cache-control",
    b"connection",
    b"content-encoding",
    b"content-length",
    b"content-range",
    b"content-type",
    b"cookie",
    b"expect",
    b"host",
    b"if-match",
    b"if-modified-since",
    b"if-none-match",
    b"if-range",
    b"if-unmodified-since",
    b"keep-alive",
    b"max-forwards",
    b"pragma",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"range",
    b"set-cookie",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"www-authenticate",
];

/// A trailer field name that [`FORBIDDEN_TRAILERS`] lists, in any case.
#[must_use]
pub fn is_forbidden_trailer(name: &[u8]) -> bool {
    FORBIDDEN_TRAILERS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// RFC 9110 §5.6.2 tchar: what a field name is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A field-value byte (RFC 9110 §5.5): HTAB, SP, VCHAR or obs-text, as httparse allows in the
/// head.
fn is_value_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: u8 },
    Extension { len: usize },
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerName { len: usize },
    TrailerValue,
    TrailerValueLf,
    TrailerEndLf,
    Done,
}

/// Decoder state for one body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    trailer_bytes: usize,
    /// The start of the trailer field name being read (up to [`NAME_KEPT`] bytes).
    name: [u8; NAME_KEPT],
    total: u64,
    limit: u64,
    /// The first error, returned again by every later step: after malformed framing the
    /// position in the stream is unknown, so nothing after it may pass as body.
    failed: Option<HttpError>,
}

impl ChunkedDecoder {
    /// A decoder rejecting bodies larger than `limit` bytes (0 = no limit).
    #[must_use]
    pub fn new(limit: u64) -> Self {
        Self {
            state: State::Size { digits: 0 },
            remaining: 0,
            trailer_bytes: 0,
            name: [0; NAME_KEPT],
            total: 0,
            limit,
            failed: None,
        }
    }

    /// The terminating chunk and trailers have been read.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advance over `input`. Returns how many bytes were consumed and the range of `input` that
    /// is body data (empty if this step consumed only framing). Call again with the rest.
    /// After an error, every later call returns that error again.
    pub fn step(&mut self, input: &[u8]) -> Result<(usize, std::ops::Range<usize>), HttpError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.advance(input);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn advance(&mut self, input: &[u8]) -> Result<(usize, std::ops::Range<usize>), HttpError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // 16 hex digits fill u64; more is an overflow attempt.
                        if digits >= 16 {
                            return Err(HttpError::BadRequest("chunk size too large"));
                        }
                        let d = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                        self.remaining = self.remaining << 4 | d;
                        self.state = State::Size { digits: digits + 1 };
                    }
                    b';' if digits > 0 => self.state = State::Extension { len: 0 },
                    b'\r' if digits > 0 => self.state = State::SizeLf,
                    b'\n' if digits > 0 => self.size_line_done()?,
                    _ => return Err(HttpError::BadRequest("invalid chunk size")),
                },
                State::Extension { len } => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.size_line_done()?,
                    _ if len >= MAX_EXTENSION => {
                        return Err(HttpError::BadRequest("chunk extension too long"))
                    }
                    _ => self.state = State::Extension { len: len + 1 },
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadRequest("invalid chunk size line"));
                    }
                    self.size_line_done()?;
                }
                State::Data => {
                    let avail = (input.len() - i) as u64;
                    let take = usize::try_from(self.remaining.min(avail)).unwrap_or(0);
                    self.remaining -= take as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok((i + take, i..i + take));
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    b'\n' => self.state = State::Size { digits: 0 },
                    _ => return Err(HttpError::BadRequest("chunk data longer than its size")),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadRequest("chunk data longer than its size"));
                    }
                    self.state = State::Size { digits: 0 };
                }
                State::TrailerLineStart
                | State::TrailerName { .. }
                | State::TrailerValue
                | State::TrailerValueLf
                | State::TrailerEndLf => self.trailer(b)?,
                State::Done => return Ok((i, i..i)),
            }
            i += 1;
            if self.state == State::Done {
                return Ok((i, i..i));
            }
        }
        Ok((i, i..i))
    }

    /// One byte of the trailer section (RFC 9112 §7.1.2): `name: value` lines, the names
    /// checked against [`FORBIDDEN_TRAILERS`], the whole section bounded by [`MAX_TRAILERS`].
    fn trailer(&mut self, b: u8) -> Result<(), HttpError> {
        match self.state {
            State::TrailerLineStart => match b {
                b'\r' => self.state = State::TrailerEndLf,
                b'\n' => self.state = State::Done,
                // A line starting with whitespace is obs-fold, refused as in the head.
                _ if is_tchar(b) => {
                    self.trailer_byte()?;
                    self.name[0] = b;
                    self.state = State::TrailerName { len: 1 };
                }
                _ => return Err(HttpError::BadRequest("invalid trailer field name")),
            },
            State::TrailerName { len } => {
                self.trailer_byte()?;
                match b {
                    b':' => {
                        if len <= NAME_KEPT && is_forbidden_trailer(&self.name[..len]) {
                            return Err(HttpError::BadRequest(
                                "framing or routing field in the chunked trailer section",
                            ));
                        }
                        self.state = State::TrailerValue;
                    }
                    _ if is_tchar(b) => {
                        if let Some(slot) = self.name.get_mut(len) {
                            *slot = b;
                        }
                        self.state = State::TrailerName {
                            len: len.saturating_add(1),
                        };
                    }
                    _ => return Err(HttpError::BadRequest("invalid trailer field name")),
                }
            }
            State::TrailerValue => {
                self.trailer_byte()?;
                match b {
                    b'\r' => self.state = State::TrailerValueLf,
                    b'\n' => self.state = State::TrailerLineStart,
                    _ if is_value_byte(b) => {}
                    _ => return Err(HttpError::BadRequest("invalid trailer field value")),
                }
            }
            State::TrailerValueLf => {
                self.trailer_byte()?;
                if b != b'\n' {
                    return Err(HttpError::BadRequest("invalid trailer field value"));
                }
                self.state = State::TrailerLineStart;
            }
            State::TrailerEndLf => {
                if b != b'\n' {
                    return Err(HttpError::BadRequest("invalid end of trailers"));
                }
                self.state = State::Done;
            }
            _ => {}
        }
        Ok(())
    }

    /// Count one byte of the trailer section against [`MAX_TRAILERS`].
    fn trailer_byte(&mut self) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(HttpError::BadRequest("trailers too large"));
        }
        Ok(())
    }

    fn size_line_done(&mut self) -> Result<(), HttpError> {
        if self.remaining == 0 {
            self.state = State::TrailerLineStart;
            return Ok(());
        }
        self.total = self.total.saturating_add(self.remaining);
        if self.limit > 0 && self.total > self.limit {
            return Err(HttpError::BodyTooLarge(self.limit));
        }
        self.state = State::Data;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `input` fed in pieces of `piece` bytes; returns the body or the error status.
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool), u16> {
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        for part in input.chunks(piece) {
            let mut rest = part;
            while !rest.is_empty() && !d.is_done() {
                let (used, data) = d.step(rest).map_err(|e| e.status())?;
                out.extend_from_slice(&rest[data]);
                rest = &rest[used..];
            }
        }
        Ok((out, d.is_done()))
    }

    #[test]
    fn valid_bodies_in_any_split() {
        let table: &[(&[u8], &[u8])] = &[
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (
                b"A;name=v\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
                b"0123456789",
            ),
            (b"5\nhello\n0\n\n", b"hello"),
            (b"0\r\n\r\n", b""),
        ];
        for (input, body) in table {
            for piece in [1, 2, 3, 7, input.len()] {
                assert_eq!(decode(input, piece), Ok((body.to_vec(), true)), "{piece}");
            }
        }
    }

    #[test]
    fn partial_is_not_done() {
        assert_eq!(decode(b"5\r\nhel", 100), Ok((b"hel".to_vec(), false)));
        assert_eq!(
            decode(b"5\r\nhello\r\n0\r\n", 100),
            Ok((b"hello".to_vec(), false))
        );
    }

    #[test]
    fn malformed() {
        let table: &[(&[u8], u16)] = &[
            (b"x\r\n", 400),
            (b"\r\n", 400),
            (b"-1\r\n", 400),
            (b" 5\r\n", 400),
            (b"5 \r\nhello\r\n", 400),
            (b"5\r\nhelloXX\r\n", 400),
            (b"5\rXhello", 400),
            (b"11111111111111111\r\n", 400),
            (b"65\r\n", 413),
        ];
        for (input, status) in table {
            assert_eq!(
                decode(input, 100).map(|_| ()),
                Err(*status),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn trailer_fields() {
        let ok = |t: &str| format!("5\r\nhello\r\n0\r\n{t}\r\n");
        // (trailer section, status; 200 = accepted)
        let table: &[(&str, u16)] = &[
            ("X-Checksum: abc\r\n", 200),
            ("X-T: 1\r\nY:2\n", 200),
            ("Server-Timing: a;dur=1\r\n", 200),
            ("X-Content-Length: 4\r\n", 200),
            ("Content-Lengthy: 4\r\n", 200),
            ("X-T: caf\u{e9}\r\n", 200),
            ("X-A-Very-Long-Trailer-Name-Over-Nineteen: 1\r\n", 200),
            ("Content-Length: 40\r\n", 400),
            ("content-length: 40\r\n", 400),
            ("Transfer-Encoding: chunked\r\n", 400),
            ("HOST: evil\r\n", 400),
            ("Content-Type: text/evil\r\n", 400),
            ("Content-Encoding: gzip\r\n", 400),
            ("Content-Range: bytes 0-1/2\r\n", 400),
            ("Trailer: X\r\n", 400),
            ("Authorization: Basic x\r\n", 400),
            ("Cache-Control: no-cache\r\n", 400),
            ("Expect: 100-continue\r\n", 400),
            ("Max-Forwards: 1\r\n", 400),
            ("Pragma: no-cache\r\n", 400),
            ("Range: bytes=0-1\r\n", 400),
            ("TE: trailers\r\n", 400),
            ("Connection: close\r\n", 400),
            ("Keep-Alive: 5\r\n", 400),
            ("Upgrade: h2c\r\n", 400),
            ("Set-Cookie: a=b\r\n", 400),
            ("Proxy-Authorization: x\r\n", 400),
            ("If-Unmodified-Since: x\r\n", 400),
            ("X-Ok: 1\r\nHost: evil\r\n", 400),
            // syntax: as in the head
            (" folded: 1\r\n", 400),
            ("X-T 1\r\n", 400),
            ("X-T : 1\r\n", 400),
            (": 1\r\n", 400),
            ("X(T): 1\r\n", 400),
            ("X-T: a\x00b\r\n", 400),
            ("X-T: a\rb\r\n", 400),
        ];
        for (trailers, status) in table {
            let input = ok(trailers);
            for piece in [1, 2, 5, input.len()] {
                let got = decode(input.as_bytes(), piece).map(|_| 200);
                let want = if *status == 200 {
                    Ok(200)
                } else {
                    Err(*status)
                };
                assert_eq!(got, want, "{trailers:?} in pieces of {piece}");
            }
            if *status == 200 {
                assert_eq!(decode(input.as_bytes(), 100), Ok((b"hello".to_vec(), true)));
            }
        }
        assert!(FORBIDDEN_TRAILERS.iter().all(|f| f.len() <= NAME_KEPT));
    }

    #[test]
    fn errors_are_sticky() {
        // Each input fails at its last byte, in a state the rest of the body would otherwise
        // resume from (the bad byte is not consumed, so without the stored error the chunk
        // after it would decode as body).
        let table: &[&[u8]] = &[b"5\r\nhello\r\nX", b"5\r\nhelloX", b"11111111111111111"];
        for input in table {
            let mut d = ChunkedDecoder::new(0);
            let mut rest = *input;
            let err = loop {
                match d.step(rest) {
                    Ok((used, _)) => rest = &rest[used..],
                    Err(e) => break e,
                }
            };
            for more in [&b"0\r\n\r\n"[..], b"3\r\nabc\r\n", rest] {
                assert_eq!(
                    d.step(more),
                    Err(err.clone()),
                    "{}",
                    String::from_utf8_lossy(input)
                );
            }
            assert!(!d.is_done());
        }
    }
}
