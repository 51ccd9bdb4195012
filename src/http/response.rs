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
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
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
}
