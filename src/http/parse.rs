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

/// A method as nginx and Gunicorn accept it: uppercase letters, digits, `-`, `_` and `.`.
/// httparse accepts any tchar (`get`, `G!T`), which lets a method the app or a proxy in front
/// would read differently through; RFC 9110 §9.1 methods are case-sensitive and the registered
/// ones are all uppercase.
fn method_ok(method: &[u8]) -> bool {
    !method.is_empty()
        && method
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// RFC 3986 §3.2.2 reg-name bytes: unreserved, sub-delims and `%` (pct-encoded, checked by
/// [`reg_name_ok`]).
fn reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)
}

/// A non-empty reg-name whose `%` are each followed by two hex digits.
fn reg_name_ok(host: &[u8]) -> bool {
    !host.is_empty()
        && host.iter().all(|&b| reg_name_byte(b))
        && host.iter().enumerate().all(|(i, &b)| {
            b != b'%'
                || host
                    .get(i + 1..i + 3)
                    .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        })
}

/// `port = 1*5DIGIT` up to 65535.
fn port_ok(port: &[u8]) -> bool {
    (1..=5).contains(&port.len())
        && port.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(port)
            .ok()
            .and_then(|p| p.parse::<u16>().ok())
            .is_some()
}

/// `uri-host [":" port]` (RFC 9110 §4.2.1 for http(s) URIs): the host is an IP-literal in
/// brackets or a non-empty reg-name (which covers IPv4); userinfo (`user@`) is an error there
/// (§4.2.4). `port_required` for CONNECT's authority-form (RFC 9112 §3.2.3).
fn authority_ok(authority: &[u8], port_required: bool) -> bool {
    let (host, port) = if let Some(rest) = authority.strip_prefix(b"[") {
        let Some(close) = memchr::memchr(b']', rest) else {
            return false;
        };
        let literal = &rest[..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &rest[close + 1..] {
            [] => (true, None),
            [b':', port @ ..] => (true, Some(port)),
            _ => return false,
        }
    } else {
        match memchr::memrchr(b':', authority) {
            Some(c) => (reg_name_ok(&authority[..c]), Some(&authority[c + 1..])),
            None => (reg_name_ok(authority), None),
        }
    };
    host && match port {
        Some(p) => port_ok(p),
        None => !port_required,
    }
}

/// An absolute-form target (RFC 9112 §3.2.2) for an http or https URI: the scheme, `://`, a
/// valid authority, then nothing, a path or a query. Other schemes name no resource of this
/// server. The path is PATH_INFO ([`super::target::split_target`]).
fn absolute_form_ok(target: &[u8]) -> bool {
    let Some(sep) = memchr::memmem::find(target, b"://") else {
        return false;
    };
    let scheme = &target[..sep];
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return false;
    }
    let rest = &target[sep + 3..];
    let end = memchr::memchr2(b'/', b'?', rest).unwrap_or(rest.len());
    authority_ok(&rest[..end], false)
}

/// RFC 9112 §3.2: which request-target forms a method may use. origin-form (`/path`) for any
/// method but CONNECT; absolute-form (`http://host/path`) likewise; asterisk-form (`*`) only
/// for OPTIONS; authority-form (`host:port`) only, and always, for CONNECT.
fn target_error(method: &[u8], target: &[u8]) -> Option<&'static str> {
    if method == b"CONNECT" {
        return (!authority_ok(target, true)).then_some("CONNECT needs an authority-form target");
    }
    if target == b"*" {
        return (method != b"OPTIONS").then_some("asterisk-form target outside OPTIONS");
    }
    if target.starts_with(b"/") || absolute_form_ok(target) {
        return None;
    }
    Some("invalid request-target")
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

/// RFC 9112 §6.3: how the body is delimited, from the Content-Length value and whether
/// Transfer-Encoding ends in chunked; a Content-Length over `--limit-post` is refused here.
fn framing(
    content_length: Option<u64>,
    chunked: bool,
    version: Version,
    limits: Limits,
) -> Result<Framing, HttpError> {
    let framing = match (content_length, chunked) {
        (Some(_), true) => {
            // A smuggling vector; reject rather than guess.
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
    if let Framing::Length(n) = framing {
        if limits.body > 0 && n > limits.body {
            return Err(HttpError::BodyTooLarge(limits.body));
        }
    }
    Ok(framing)
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
    if !method_ok(method) {
        return Err(HttpError::BadRequest(
            "method outside uppercase letters, digits and -_.",
        ));
    }
    if let Some(why) = target_error(method, target) {
        return Err(HttpError::BadRequest(why));
    }
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
    let mut content_types = 0;
    // RFC 9112 §9.3: `close` ends the connection whatever else the Connection fields say, so a
    // later `keep-alive` (HTTP/1.0) cannot turn it back on.
    let mut close = false;
    let mut keep_alive_token = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        head.headers
            .push((range_of(buf, name), range_of(buf, value)));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)
                .ok_or(HttpError::BadRequest("invalid Content-Length"))?;
            // Repeated lines with the same value are accepted: the framing is not in doubt,
            // and RFC 9110 §8.6 lets a recipient take such a list as the single value (a
            // `5, 5` list in one line stays a 400: it is not 1*DIGIT). Differing values are
            // the classic smuggling vector.
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
            close |= has_token(value, b"close");
            keep_alive_token |= has_token(value, b"keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            // RFC 9110 §10.1.1: a 1.0 client cannot be sent an interim response.
            head.expect_continue = version == Version::Http11
                && value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-type") {
            content_types += 1;
        }
    }
    head.keep_alive = !close && (version == Version::Http11 || keep_alive_token);
    // RFC 9110 §5.3: a singleton field sent twice is invalid. Two Content-Types would let the
    // app and a proxy in front pick different ones (how the body is parsed).
    if content_types > 1 {
        return Err(HttpError::BadRequest("more than one Content-Type header"));
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1; at most one in 1.0.
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(HttpError::BadRequest(if hosts > 1 {
            "more than one Host header"
        } else {
            "missing Host header"
        }));
    }
    head.framing = framing(content_length, chunked, version, limits)?;
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

    /// Parse `raw` (no Host added) and give the status, or 200 for a complete head.
    fn status_of(raw: &[u8]) -> u16 {
        match parse_head(raw, LIMITS) {
            Ok(Some(_)) => 200,
            Ok(None) => 0,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn request_target_forms() {
        // (method, target, status): RFC 9112 §3.2.
        let table: &[(&str, &str, u16)] = &[
            ("GET", "/", 200),
            ("GET", "/a?b", 200),
            ("GET", "http://example.com/a?b", 200),
            ("GET", "http://example.com", 200),
            ("GET", "http://example.com?q", 200),
            ("GET", "HTTPS://example.com:8443/", 200),
            ("GET", "http://127.0.0.1:80/x", 200),
            ("GET", "http://[::1]:8080/x", 200),
            ("GET", "http://[::1]/x", 200),
            ("GET", "http://ex%41mple.com/", 200),
            ("OPTIONS", "*", 200),
            ("OPTIONS", "/", 200),
            ("CONNECT", "example.com:443", 200),
            ("CONNECT", "[::1]:443", 200),
            // origin-form must start with '/'
            ("GET", "a/b", 400),
            ("GET", "?q", 400),
            // absolute-form needs http(s) and a valid authority
            ("GET", "http:///path", 400),
            ("GET", "http://", 400),
            ("GET", "http://user@example.com/", 400),
            ("GET", "http://exa^mple.com/", 400),
            ("GET", "http://example.com:/", 400),
            ("GET", "http://example.com:99999/", 400),
            ("GET", "http://example.com:8o/", 400),
            ("GET", "http://[::1/", 400),
            ("GET", "http://[]/", 400),
            ("GET", "http://[::1]x/", 400),
            ("GET", "http://ex%4mple.com/", 400),
            ("GET", "ftp://example.com/", 400),
            ("GET", "http:/example.com/", 400),
            // asterisk-form only with OPTIONS
            ("GET", "*", 400),
            ("POST", "*", 400),
            ("OPTIONS", "*x", 400),
            // authority-form only with CONNECT, and CONNECT only with it
            ("GET", "example.com:443", 400),
            ("OPTIONS", "example.com:443", 400),
            ("CONNECT", "example.com", 400),
            ("CONNECT", "/", 400),
            ("CONNECT", "http://example.com:443/", 400),
            ("CONNECT", ":443", 400),
            ("CONNECT", "*", 400),
        ];
        for (method, target, status) in table {
            let raw = format!("{method} {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status_of(raw.as_bytes()), *status, "{raw:?}");
        }
    }

    #[test]
    fn method_characters() {
        let table: &[(&str, u16)] = &[
            ("GET", 200),
            ("M-SEARCH", 200),
            ("VERSION_CONTROL", 200),
            ("X.Y2", 200),
            ("get", 400),
            ("Get", 400),
            ("G!T", 400),
            ("G*T", 400),
            ("G'T", 400),
            ("G~T", 400),
            ("G|T", 400),
        ];
        for (method, status) in table {
            let raw = format!("{method} / HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status_of(raw.as_bytes()), *status, "{raw:?}");
        }
    }

    #[test]
    fn repeated_singletons() {
        let table: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
                400,
            ),
            // identical values: the framing is not in doubt (see parse_head)
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 02\r\n\r\n",
                200,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\nContent-Type: a/b\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\nContent-type: c/d\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\nContent_Type: c/d\r\n\r\n",
                200,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: a/b\r\n\r\n",
                200,
            ),
        ];
        for (raw, status) in table {
            assert_eq!(status_of(raw), *status, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn connection_close_wins() {
        // (head, keep_alive)
        let table: &[(&[u8], bool)] = &[
            (
                b"GET / HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n",
                false,
            ),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: TE\r\nConnection: Keep-Alive\r\n\r\n",
                true,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
                false,
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
                true,
            ),
        ];
        for (raw, keep_alive) in table {
            let h = parse_head(raw, LIMITS).unwrap().unwrap();
            assert_eq!(
                h.keep_alive,
                *keep_alive,
                "{}",
                String::from_utf8_lossy(raw)
            );
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
