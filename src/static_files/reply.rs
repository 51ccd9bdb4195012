//! The response to a found file: conditional requests (RFC 9110 §13: If-None-Match before
//! If-Modified-Since), one byte range (§14; several ranges are answered whole, which §14.2
//! allows), and the head.

use super::{Found, Request};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to send: the head, then `len` bytes of the file from `offset` (nothing for HEAD, 304
/// and 416).
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Status line and headers, with the blank line.
    pub head: Vec<u8>,
    /// First byte of the file to send.
    pub offset: u64,
    /// Bytes of the file to send.
    pub len: u64,
    /// The Content-Length announced (for the log).
    pub content_length: u64,
}

fn etag(f: &Found) -> String {
    let t = f.mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "\"{:x}-{:x}-{:x}{}\"",
        t.as_secs(),
        t.subsec_nanos(),
        f.len,
        if f.gzip { "-gz" } else { "" }
    )
}

/// Whole seconds: HTTP dates have no fractions, so a comparison in seconds is the only fair one.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn etag_listed(list: &[u8], tag: &str) -> bool {
    let list = list.trim_ascii();
    if list == b"*" {
        return true;
    }
    // Weak comparison (§13.1.2): a W/ prefix does not matter.
    list.split(|b| *b == b',').any(|t| {
        let t = t.trim_ascii();
        let t = t.strip_prefix(b"W/").unwrap_or(t);
        t == tag.as_bytes()
    })
}

/// `bytes=A-B`, `bytes=A-`, `bytes=-N` against a length. `None`: ignore the header (not bytes,
/// malformed, or several ranges); `Some(Err(()))`: unsatisfiable (416).
fn parse_range(h: &[u8], len: u64) -> Option<Result<(u64, u64), ()>> {
    let h = std::str::from_utf8(h).ok()?.trim();
    let (unit, spec) = h.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (a, b) = spec.trim().split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if a.is_empty() {
        let n = num(b)?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        let n = n.min(len);
        return Some(Ok((len - n, n)));
    }
    let start = num(a)?;
    let end = if b.is_empty() { u64::MAX } else { num(b)? };
    if end < start {
        return None;
    }
    if start >= len {
        return Some(Err(()));
    }
    let last = end.min(len - 1);
    Some(Ok((start, last - start + 1)))
}

/// Build the response for a found file. `http11`: the status line's version; `close`: the
/// connection ends after it.
#[must_use]
pub fn reply(f: &Found, req: &Request<'_>, http11: bool, close: bool) -> Reply {
    let tag = etag(f);
    let modified = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs(f.mtime)));
    let not_modified = match (req.if_none_match, req.if_modified_since) {
        (Some(list), _) => etag_listed(list, &tag),
        (None, Some(since)) => std::str::from_utf8(since)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
            .is_some_and(|since| secs(f.mtime) <= secs(since)),
        (None, None) => false,
    };
    // If-Range (§13.1.5): the range applies only while the representation is unchanged.
    let range_applies = req.if_range.is_none_or(|v| {
        let v = v.trim_ascii();
        if v.first() == Some(&b'"') {
            v == tag.as_bytes()
        } else {
            v == modified.as_bytes()
        }
    });
    let range = if not_modified || !range_applies {
        None
    } else {
        req.range.and_then(|r| parse_range(r, f.len))
    };
    let (status, offset, len) = match range {
        _ if not_modified => (304, 0, 0),
        None => (200, 0, f.len),
        Some(Ok((start, n))) => (206, start, n),
        Some(Err(())) => (416, 0, 0),
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        _ => "Range Not Satisfiable",
    };
    let mut head = String::with_capacity(320);
    let _ = write!(head, "HTTP/1.{} {status} {reason}\r\n", u8::from(http11));
    let _ = write!(head, "Last-Modified: {modified}\r\nETag: {tag}\r\n");
    if let Some(at) = f.expires {
        // uWSGI adds Expires only (no Cache-Control).
        let _ = write!(head, "Expires: {}\r\n", httpdate::fmt_http_date(at));
    }
    if f.gzip {
        head.push_str("Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n");
    }
    let content_length = match status {
        304 => None,
        416 => {
            let _ = write!(head, "Content-Range: bytes */{}\r\n", f.len);
            Some(0)
        }
        _ => {
            let _ = write!(
                head,
                "Content-Type: {}\r\nAccept-Ranges: bytes\r\n",
                f.content_type
            );
            if status == 206 {
                let _ = write!(
                    head,
                    "Content-Range: bytes {offset}-{}/{}\r\n",
                    offset + len - 1,
                    f.len
                );
            }
            Some(len)
        }
    };
    if let Some(n) = content_length {
        let _ = write!(head, "Content-Length: {n}\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    } else if !http11 {
        head.push_str("Connection: keep-alive\r\n");
    }
    head.push_str("\r\n");
    let is_head = req.method == b"HEAD";
    let send = if is_head || status == 304 || status == 416 {
        0
    } else {
        len
    };
    Reply {
        status,
        head: head.into_bytes(),
        offset,
        len: send,
        content_length: content_length.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for (h, len, want) in [
            ("bytes=0-4", 10, Some(Ok((0, 5)))),
            ("bytes=5-", 10, Some(Ok((5, 5)))),
            ("bytes=-3", 10, Some(Ok((7, 3)))),
            ("bytes=-30", 10, Some(Ok((0, 10)))),
            ("bytes=8-100", 10, Some(Ok((8, 2)))),
            ("bytes=10-", 10, Some(Err(()))),
            ("bytes=-0", 10, Some(Err(()))),
            ("bytes=5-2", 10, None),
            ("bytes=0-1,3-4", 10, None),
            ("items=0-1", 10, None),
            ("bytes=a-b", 10, None),
            ("bytes=+1-2", 10, None),
            ("bytes=0-0", 0, Some(Err(()))),
        ] {
            assert_eq!(parse_range(h.as_bytes(), len), want, "{h} of {len}");
        }
    }

    fn found(len: u64) -> Found {
        let file = std::fs::File::open("/dev/null").unwrap();
        Found {
            file,
            len,
            mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            content_type: "text/plain",
            gzip: false,
            expires: None,
        }
    }

    fn get(h: &[(&'static [u8], &'static [u8])]) -> Request<'static> {
        let mut r = Request {
            method: b"GET",
            path: b"/x",
            ..Request::default()
        };
        for (k, v) in h {
            r.header(k, v);
        }
        r
    }

    #[test]
    fn statuses() {
        let f = found(10);
        let tag = etag(&f);
        let tag: &'static [u8] = Box::leak(tag.into_bytes().into_boxed_slice());
        let date: &'static [u8] = b"Tue, 14 Nov 2023 22:13:20 GMT";
        let later: &'static [u8] = b"Wed, 15 Nov 2023 22:13:20 GMT";
        let earlier: &'static [u8] = b"Mon, 13 Nov 2023 22:13:20 GMT";
        for (hs, status, offset, len) in [
            (vec![], 200, 0, 10),
            (vec![(&b"Range"[..], &b"bytes=2-3"[..])], 206, 2, 2),
            (vec![(&b"range"[..], &b"bytes=20-"[..])], 416, 0, 0),
            (vec![(&b"If-None-Match"[..], tag)], 304, 0, 0),
            (vec![(&b"If-None-Match"[..], &b"\"other\""[..])], 200, 0, 10),
            (vec![(&b"If-Modified-Since"[..], date)], 304, 0, 0),
            (vec![(&b"If-Modified-Since"[..], later)], 304, 0, 0),
            (vec![(&b"If-Modified-Since"[..], earlier)], 200, 0, 10),
            // If-None-Match wins over If-Modified-Since.
            (
                vec![
                    (&b"If-None-Match"[..], &b"\"x\""[..]),
                    (&b"If-Modified-Since"[..], date),
                ],
                200,
                0,
                10,
            ),
            (
                vec![(&b"Range"[..], &b"bytes=2-3"[..]), (&b"If-Range"[..], tag)],
                206,
                2,
                2,
            ),
            (
                vec![
                    (&b"Range"[..], &b"bytes=2-3"[..]),
                    (&b"If-Range"[..], &b"\"old\""[..]),
                ],
                200,
                0,
                10,
            ),
            (
                vec![(&b"Range"[..], &b"bytes=2-3"[..]), (&b"If-Range"[..], date)],
                206,
                2,
                2,
            ),
        ] {
            let r = reply(&f, &get(&hs), true, false);
            assert_eq!((r.status, r.offset, r.len), (status, offset, len), "{hs:?}");
        }
        let r = reply(&f, &get(&[(b"Range", b"bytes=2-3")]), true, true);
        let head = String::from_utf8(r.head).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 206 Partial Content\r\n"),
            "{head}"
        );
        assert!(head.contains("Content-Range: bytes 2-3/10\r\n"), "{head}");
        assert!(head.contains("Content-Length: 2\r\n"), "{head}");
        assert!(head.contains("Connection: close\r\n"), "{head}");
        let mut head_req = get(&[]);
        head_req.method = b"HEAD";
        let r = reply(&f, &head_req, false, false);
        assert_eq!((r.status, r.len, r.content_length), (200, 0, 10));
        assert!(String::from_utf8(r.head)
            .unwrap()
            .contains("Connection: keep-alive\r\n"));
    }
}
