//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1).
//! Line endings: CRLF, or a bare LF, accepted the same way `httparse` accepts them in the head.

use super::HttpError;

/// Longest chunk-extension accepted.
const MAX_EXTENSION: usize = 1024;
/// Largest trailer section accepted.
const MAX_TRAILERS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: u8 },
    Extension { len: usize },
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerLineStart,
    TrailerLine,
    TrailerEndLf,
    Done,
}

/// Decoder state for one body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    remaining: u64,
    trailer_bytes: usize,
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
                State::TrailerLineStart => match b {
                    b'\r' => self.state = State::TrailerEndLf,
                    b'\n' => self.state = State::Done,
                    _ => {
                        self.trailer_bytes += 1;
                        self.state = State::TrailerLine;
                    }
                },
                State::TrailerLine => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > MAX_TRAILERS {
                        return Err(HttpError::BadRequest("trailers too large"));
                    }
                    if b == b'\n' {
                        self.state = State::TrailerLineStart;
                    }
                }
                State::TrailerEndLf => {
                    if b != b'\n' {
                        return Err(HttpError::BadRequest("invalid end of trailers"));
                    }
                    self.state = State::Done;
                }
                State::Done => return Ok((i, i..i)),
            }
            i += 1;
            if self.state == State::Done {
                return Ok((i, i..i));
            }
        }
        Ok((i, i..i))
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
