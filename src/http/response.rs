//! Writing response heads: status lines, the cached `Date` header, chunk framing.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The standard reason phrase for a status we generate ourselves.
#[must_use]
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A complete plain-text response that headrace makes itself (protocol errors, the router's
/// 502/503/504): the status line in `version` (`b"HTTP/1.1"` or `b"HTTP/1.0"`),
/// `Content-Type: text/plain`, `Content-Length`, then `extra_headers` as given (each line ending
/// in `\r\n`, e.g. `"Retry-After: 1\r\n"`), `Connection: close` when `close`, `Date`, and
/// `text` as the body, byte for byte (add the final newline yourself).
#[must_use]
pub fn plain(status: u16, version: &[u8], extra_headers: &str, text: &str, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + extra_headers.len() + text.len());
    status_line(&mut out, version, status);
    out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(text.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra_headers.as_bytes());
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    date_header(&mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());
    out
}

/// Append `HTTP/1.1 500 Internal Server Error\r\n`.
pub fn status_line(out: &mut Vec<u8>, version: &[u8], status: u16) {
    out.extend_from_slice(version);
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// (unix second, "Date: ...\r\n") — formatted once per second per thread.
    static DATE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Append `Date: <IMF-fixdate>\r\n` for the current second.
pub fn date_header(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.0 != secs {
            cache.1.clear();
            cache.1.extend_from_slice(b"Date: ");
            cache
                .1
                .extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            cache.1.extend_from_slice(b"\r\n");
            cache.0 = secs;
        }
        out.extend_from_slice(&cache.1);
    });
}

/// The size line of one chunk: `1f4\r\n`.
#[must_use]
pub fn chunk_size_line(len: usize) -> ([u8; 18], usize) {
    let mut buf = [0u8; 18];
    let hex = format!("{len:x}\r\n");
    let n = hex.len().min(18);
    buf[..n].copy_from_slice(&hex.as_bytes()[..n]);
    (buf, n)
}

/// Statuses that never carry a body (RFC 9110 §6.4.1).
#[must_use]
pub fn status_has_no_body(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_and_status() {
        let mut out = Vec::new();
        status_line(&mut out, b"HTTP/1.1", 404);
        date_header(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\nDate: "));
        assert!(s.ends_with(" GMT\r\n"));
        assert_eq!(
            s.len(),
            "HTTP/1.1 404 Not Found\r\n".len() + "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n".len()
        );
        let (b, n) = chunk_size_line(500);
        assert_eq!(&b[..n], b"1f4\r\n");
        assert!(status_has_no_body(304) && !status_has_no_body(200));
    }

    #[test]
    fn every_status_we_send_has_its_reason() {
        let table = [
            (100, "Continue"),
            (400, "Bad Request"),
            (408, "Request Timeout"),
            (413, "Content Too Large"),
            (414, "URI Too Long"),
            (431, "Request Header Fields Too Large"),
            (500, "Internal Server Error"),
            (501, "Not Implemented"),
            (502, "Bad Gateway"),
            (503, "Service Unavailable"),
            (504, "Gateway Timeout"),
            (505, "HTTP Version Not Supported"),
        ];
        for (status, want) in table {
            assert_eq!(reason(status), want, "{status}");
        }
    }

    #[test]
    fn plain_responses() {
        /// (status, version, extra headers, text, close, the expected head up to Date)
        type Case<'a> = (u16, &'a [u8], &'a str, &'a str, bool, &'a str);
        let table: &[Case] = &[
            (
                504,
                b"HTTP/1.1",
                "",
                "504 Gateway Timeout\n",
                true,
                "HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n",
            ),
            (
                503,
                b"HTTP/1.0",
                "Retry-After: 1\r\n",
                "busy",
                false,
                "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nRetry-After: 1\r\n",
            ),
            (
                400,
                b"HTTP/1.1",
                "",
                "",
                false,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n",
            ),
        ];
        for (status, version, extra, text, close, head) in table {
            let out = String::from_utf8(plain(*status, version, extra, text, *close)).unwrap();
            let (got_head, body) = out.split_once("\r\n\r\n").unwrap();
            let (before_date, date) = got_head.rsplit_once("Date: ").unwrap();
            assert_eq!(before_date, *head);
            assert!(date.ends_with(" GMT"), "{date}");
            assert_eq!(body, *text);
        }
    }
}
