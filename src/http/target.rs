//! Request-target and header helpers shared by the environ builder and the router: splitting
//! path and query, percent-decoding, CGI header keys, and the one rule for which headers reach
//! the app.

use std::borrow::Cow;
use std::ops::Range;

#[must_use]
/// `X-Custom-Thing` → `HTTP_X_CUSTOM_THING`. Header names are tokens, hence ASCII.
pub fn cgi_key(name: &[u8]) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for &b in name {
        key.push(if b == b'-' {
            '_'
        } else {
            char::from(b.to_ascii_uppercase())
        });
    }
    key
}

/// Split a request target into (path, query). Absolute-form targets (`http://h/p?q`, RFC 9112
/// §3.2.2) lose their scheme and authority, and an empty path is `/` (RFC 9110 §4.2.3); the
/// parser has checked the form ([`super::parse::parse_head`]).
#[must_use]
pub fn split_target(target: &[u8]) -> (&[u8], &[u8]) {
    let mut path = target;
    if !path.starts_with(b"/") {
        if let Some(p) = memchr::memmem::find(path, b"://") {
            let rest = &path[p + 3..];
            match memchr::memchr2(b'/', b'?', rest) {
                Some(s) if rest[s] == b'/' => path = &rest[s..],
                Some(q) => return (b"/", &rest[q + 1..]),
                None => return (b"/", b""),
            }
        }
    }
    match memchr::memchr(b'?', path) {
        Some(q) => (&path[..q], &path[q + 1..]),
        None => (path, b""),
    }
}

/// Decode `%XX` escapes; malformed escapes are kept as they are (as uWSGI does).
#[must_use]
pub fn percent_decode(input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !input.contains(&b'%') {
        return std::borrow::Cow::Borrowed(input);
    }
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}
/// The request headers as the app sees them, in order: names containing `_` are dropped
/// (`X_Forwarded_For` would impersonate `X-Forwarded-For`, both being HTTP_X_FORWARDED_FOR; nginx
/// and Gunicorn drop them too), and a repeated header is joined with `", "` into its first
/// occurrence.
pub fn app_headers<'a>(
    buf: &'a [u8],
    headers: &'a [(Range<usize>, Range<usize>)],
) -> impl Iterator<Item = (&'a [u8], Cow<'a, [u8]>)> + 'a {
    headers.iter().enumerate().filter_map(move |(idx, (n, v))| {
        let name = &buf[n.clone()];
        if name.contains(&b'_')
            || headers[..idx]
                .iter()
                .any(|(p, _)| buf[p.clone()].eq_ignore_ascii_case(name))
        {
            return None;
        }
        let mut value = Cow::Borrowed(&buf[v.clone()]);
        for (n2, v2) in &headers[idx + 1..] {
            if buf[n2.clone()].eq_ignore_ascii_case(name) {
                let joined = value.to_mut();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(&buf[v2.clone()]);
            }
        }
        Some((name, value))
    })
}

/// Every request header field as a proxy passes it on, in order, a repeated header as
/// repeated fields (ASGI keeps them apart; a WSGI worker joins them as [`app_headers`] does):
/// names containing `_` are dropped, as there.
pub fn app_header_fields<'a>(
    buf: &'a [u8],
    headers: &'a [(Range<usize>, Range<usize>)],
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
    headers
        .iter()
        .map(move |(n, v)| (&buf[n.clone()], &buf[v.clone()]))
        .filter(|(name, _)| !name.contains(&b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_target_forms() {
        // (target, path, query)
        let table: &[(&[u8], &[u8], &[u8])] = &[
            (b"/a/b?x=1", b"/a/b", b"x=1"),
            (b"/", b"/", b""),
            (b"/?", b"/", b""),
            (b"http://example.com/x?y", b"/x", b"y"),
            (b"HTTPS://example.com:8443/x/y", b"/x/y", b""),
            (b"http://example.com", b"/", b""),
            (b"http://example.com?q=1", b"/", b"q=1"),
            (b"http://example.com?q=/a", b"/", b"q=/a"),
            (b"http://[::1]:80/p?q", b"/p", b"q"),
            (b"*", b"*", b""),
            (b"example.com:443", b"example.com:443", b""),
        ];
        for (target, path, query) in table {
            assert_eq!(
                split_target(target),
                (*path, *query),
                "{}",
                String::from_utf8_lossy(target)
            );
        }
    }
    #[test]
    fn header_fields_keep_repeats_and_drop_underscores() {
        let buf = b"X-Dup: a\r\nX_Evil: 1\r\nHost: h\r\nx-dup: b\r\n";
        let text = std::str::from_utf8(buf).unwrap_or_default();
        let mut headers = Vec::new();
        let mut at = 0;
        for line in text.split_terminator("\r\n") {
            let colon = line.find(':').unwrap_or(0);
            headers.push((at..at + colon, at + colon + 2..at + line.len()));
            at += line.len() + 2;
        }
        let fields: Vec<_> = app_header_fields(buf, &headers).collect();
        assert_eq!(
            fields,
            [
                (&b"X-Dup"[..], &b"a"[..]),
                (&b"Host"[..], &b"h"[..]),
                (&b"x-dup"[..], &b"b"[..])
            ]
        );
        let joined: Vec<_> = app_headers(buf, &headers)
            .map(|(n, v)| (n.to_vec(), v.into_owned()))
            .collect();
        assert_eq!(
            joined,
            [
                (b"X-Dup".to_vec(), b"a, b".to_vec()),
                (b"Host".to_vec(), b"h".to_vec())
            ]
        );
    }
}
