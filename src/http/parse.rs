//! The request-head parser: `httparse` for the syntax, then RFC 9112's framing rules.

use super::HttpError;
use std::ops::Range;

/// Most header lines accepted in one request (431 beyond).
pub const MAX_HEADERS: usize = 100;

/// Limits applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest head in bytes (`--buffer-size`).
    pub head: usize,
    /// Largest body in bytes (`--limit-post`, 0 = none).
    pub body: u64,
}

/// HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0
    Http10,
    /// HTTP/1.1
    Http11,
}

impl Version {
    /// `HTTP/1.x` as text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head. Text fields are ranges into the buffer that was parsed, which stays
/// untouched until the environ is built.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Method token.
    pub method: Range<usize>,
    /// Request target as sent.
    pub target: Range<usize>,
    /// Protocol version.
    pub version: Version,
    /// Header (name, value) ranges in order.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    /// Body framing.
    pub framing: Framing,
    /// The client allows keeping the connection open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The method is HEAD (no response body).
    pub is_head: bool,
}

fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    // httparse returns subslices of `buf`; their offset is a pointer difference.
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    // RFC 9110 §8.6: 1*DIGIT. No sign, no spaces inside, no list.
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The status for a syntax error `httparse` found.
fn syntax_error(buf: &[u8], e: httparse::Error) -> HttpError {
    match e {
        httparse::Error::Version => version_error(buf),
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders(MAX_HEADERS),
        httparse::Error::Token => HttpError::BadRequest("invalid token in request line"),
        httparse::Error::HeaderName => HttpError::BadRequest("invalid header name"),
        httparse::Error::HeaderValue => HttpError::BadRequest("invalid header value"),
        httparse::Error::NewLine => HttpError::BadRequest("invalid line ending"),
        httparse::Error::Status => HttpError::BadRequest("malformed request line"),
    }
}

/// The version part of the request line at the start of `buf`, if the line has exactly three
/// space-separated parts, and whether the line has ended. Empty lines before the request line
/// are skipped, as httparse skips them (RFC 9112 §2.2).
fn request_line_version(buf: &[u8]) -> (Option<&[u8]>, bool) {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let end = memchr::memchr(b'\n', rest);
    let line = &rest[..end.unwrap_or(rest.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let version = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(v), None) => Some(v),
        _ => None,
    };
    (version, end.is_some())
}

/// `v` is `HTTP/` DIGIT "." DIGIT (RFC 9112 §2.3), or the start of it.
fn version_shaped(v: &[u8]) -> bool {
    v.len() <= 8
        && v.iter().zip(b"HTTP/0.0").all(|(&b, &shape)| {
            if shape == b'0' {
                b.is_ascii_digit()
            } else {
                b == shape
            }
        })
}

/// httparse rejects `HTTP/2` at the `2`, before the line ends as `HTTP/2.0` (505) or `HTTP/2x`
/// (400): until the line ends, such a version is only incomplete, so that the status does not
/// depend on how the bytes were split into reads.
fn version_unfinished(buf: &[u8]) -> bool {
    matches!(request_line_version(buf), (Some(v), false) if version_shaped(v))
}

/// 505 for a well-formed `HTTP/x.y` that is not 1.0 or 1.1; 400 for anything else in the
/// version's place (`HTTX/1.1`, `http/1.1`: HTTP-name is case-sensitive, RFC 9112 §2.3), or
/// for a request line without exactly three parts (`GET /  HTTP/1.1`).
fn version_error(buf: &[u8]) -> HttpError {
    match request_line_version(buf) {
        (Some(v), _) if v.len() == 8 && version_shaped(v) => HttpError::Version,
        _ => HttpError::BadRequest("malformed HTTP version"),
    }
}

/// RFC 9112 §6.1: chunked must be the final transfer coding (else 400, since the body's end
/// cannot be found); codings before it would need decoding we do not implement (501).
fn transfer_coding(value: &[u8]) -> Result<(), HttpError> {
    let codings: Vec<&[u8]> = value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .collect();
    match codings.split_last() {
        Some((last, rest)) if last.eq_ignore_ascii_case(b"chunked") => {
            if rest.is_empty() {
                Ok(())
            } else if rest.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) {
                Err(HttpError::BadRequest("chunked applied twice"))
            } else {
                Err(HttpError::NotImplemented)
            }
        }
        _ if codings.iter().any(|c| c.eq_ignore_ascii_case(b"chunked")) => Err(
            HttpError::BadRequest("chunked is not the final transfer coding"),
        ),
        _ => Err(HttpError::NotImplemented),
    }
}

/// 414 when the request line alone does not fit the limit, 431 when the headers make it too big.
fn too_large(buf: &[u8], limit: usize) -> HttpError {
    let line = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
    if line >= limit {
        HttpError::UriTooLong(limit)
    } else {
        HttpError::HeadTooLarge(limit)
    }
}

/// `Ok(None)` below the limit; at it, the head cannot fit.
fn need_more(buf: &[u8], limits: Limits) -> Result<Option<RequestHead>, HttpError> {
    if buf.len() >= limits.head {
        Err(too_large(buf, limits.head))
    } else {
        Ok(None)
    }
}

/// Parse a request head from the start of `buf`. `Ok(None)`: need more bytes.
pub fn parse_head(buf: &[u8], limits: Limits) -> Result<Option<RequestHead>, HttpError> {
    // An acceptable head lies within the first `limits.head` bytes, so nothing past them is
    // parsed: the outcome is then the same however much arrived beyond the limit (a head that
    // overflows it is a 414/431 even if a bad byte follows later), and a full buffer costs one
    // bounded scan.
    let buf = &buf[..buf.len().min(limits.head)];
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return need_more(buf, limits),
        Err(httparse::Error::Version) if version_unfinished(buf) => return need_more(buf, limits),
        Err(e) => return Err(syntax_error(buf, e)),
    };
    let method = req.method.unwrap_or_default().as_bytes();
    let target = req.path.unwrap_or_default().as_bytes();
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HttpError::Version),
    };
    let mut head = RequestHead {
        method: range_of(buf, method),
        target: range_of(buf, target),
        version,
        headers: Vec::with_capacity(req.headers.len()),
        len: used,
        framing: Framing::None,
        keep_alive: version == Version::Http11,
        expect_continue: false,
        is_head: method == b"HEAD",
    };
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut hosts = 0;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        head.headers
            .push((range_of(buf, name), range_of(buf, value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)
                .ok_or(HttpError::BadRequest("invalid Content-Length"))?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HttpError::BadRequest("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if chunked {
                return Err(HttpError::BadRequest("chunked applied twice"));
            }
            chunked = true;
            transfer_coding(value)?;
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(value, b"close") {
                head.keep_alive = false;
            } else if version == Version::Http10 && has_token(value, b"keep-alive") {
                head.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            // RFC 9110 §10.1.1: a 1.0 client cannot be sent an interim response.
            head.expect_continue = version == Version::Http11
                && value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one in 1.0.
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(HttpError::BadRequest(if hosts > 1 {
            "more than one Host header"
        } else {
            "missing Host header"
        }));
    }
    head.framing = match (content_length, chunked) {
        (Some(_), true) => {
            // RFC 9112 §6.3: a smuggling vector; reject rather than guess.
            return Err(HttpError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        (None, true) if version == Version::Http10 => {
            return Err(HttpError::BadRequest("chunked body in HTTP/1.0"));
        }
        (None, true) => Framing::Chunked,
        (Some(0) | None, false) => Framing::None,
        (Some(n), false) => Framing::Length(n),
    };
    if let Framing::Length(n) = head.framing {
        if limits.body > 0 && n > limits.body {
            return Err(HttpError::BodyTooLarge(limits.body));
        }
    }
    if head.framing == Framing::None {
        head.expect_continue = false;
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        head: 256,
        body: 1000,
    };

    /// Parse, adding `Host` to HTTP/1.1 requests that lack one (most cases are about other
    /// headers; Host has its own cases below).
    fn parse(raw: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        let text = String::from_utf8_lossy(raw);
        if text.contains("HTTP/1.1\r\n") && !text.to_ascii_lowercase().contains("\nhost:") {
            let with_host = text.replacen("HTTP/1.1\r\n", "HTTP/1.1\r\nHost: h\r\n", 1);
            return parse_head(with_host.as_bytes(), LIMITS).map(|h| {
                h.map(|mut h| {
                    h.len -= 9; // keep lengths comparable to the input
                    h
                })
            });
        }
        parse_head(raw, LIMITS)
    }

    #[test]
    fn complete_partial_and_framing() {
        let h = parse(b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest")
            .unwrap()
            .unwrap();
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(&raw[h.target.clone()], b"/a?b");
        assert_eq!(h.len, raw.len() - 4);
        assert!(h.keep_alive);
        assert_eq!(h.framing, Framing::None);
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(parse(b"GE").unwrap().is_none());
        assert!(parse(b"").unwrap().is_none());
        let table: &[(&[u8], Framing, bool)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (b"GET / HTTP/1.0\r\n\r\n", Framing::None, false),
            (
                b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                Framing::None,
                true,
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n",
                Framing::None,
                false,
            ),
        ];
        for (raw, framing, ka) in table {
            let h = parse(raw).unwrap().unwrap();
            assert_eq!(
                (h.framing, h.keep_alive),
                (*framing, *ka),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn host_is_required_in_http11() {
        let missing = parse_head(b"GET / HTTP/1.1\r\nX: y\r\n\r\n", LIMITS);
        assert_eq!(missing.unwrap_err().status(), 400);
        assert!(parse_head(b"GET / HTTP/1.0\r\n\r\n", LIMITS)
            .unwrap()
            .is_some());
        let continue_10 = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
        assert!(
            !parse_head(continue_10, LIMITS)
                .unwrap()
                .unwrap()
                .expect_continue
        );
    }

    #[test]
    fn rejections() {
        let long_target = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(300));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        let table: Vec<(Vec<u8>, u16)> = vec![
            (b"GARBAGE\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
            (b"GET / HTTP/1.2\r\n\r\n".to_vec(), 505),
            (b"GET / HTTX/1.1\r\n\r\n".to_vec(), 400),
            (b"GET / http/1.1\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.10\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nX : y\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n".to_vec(), 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1,2\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    .to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
                501,
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n".to_vec(),
                413,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
                501,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
                400,
            ),
            (b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(), 400),
            (b"\r\nGET / HTTP/2.0\r\n\r\n".to_vec(), 505),
            (b"GET / HTTP/2.00\r\n\r\n".to_vec(), 400),
            (long_target.into_bytes(), 414),
            (big_head.into_bytes(), 431),
            (many.into_bytes(), 431),
        ];
        for (raw, status) in table {
            let got = parse(&raw).map(|_| ()).unwrap_err();
            assert_eq!(got.status(), status, "{}", String::from_utf8_lossy(&raw));
        }
    }

    #[test]
    fn outcome_does_not_depend_on_the_split() {
        // Every prefix needs more bytes or gives the whole buffer's status.
        let mut past_limit = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(300)).into_bytes();
        past_limit.extend_from_slice(b"\x00\r\n\r\n");
        let table: Vec<(Vec<u8>, u16)> = vec![
            (b"GET / HTTP/2.0\r\n\r\n".to_vec(), 505),
            (b"GET / HTTP/2.00\r\n\r\n".to_vec(), 400),
            (b"GET / HTTP/3\r\n\r\n".to_vec(), 400),
            (b"GET /  HTTP/1.1\r\n\r\n".to_vec(), 400),
            // A bad byte after the limit: the head does not fit whatever follows.
            (past_limit, 431),
        ];
        for (raw, status) in table {
            let whole = parse_head(&raw, LIMITS).map(|_| ()).unwrap_err();
            assert_eq!(whole.status(), status, "{}", String::from_utf8_lossy(&raw));
            for k in 0..raw.len() {
                match parse_head(&raw[..k], LIMITS) {
                    Ok(None) => {}
                    Ok(Some(_)) => panic!("prefix {k} complete"),
                    Err(e) => assert_eq!(e, whole, "prefix {k}"),
                }
            }
        }
    }
}
