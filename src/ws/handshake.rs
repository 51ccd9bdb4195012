//! The opening handshake, server side (RFC 6455 §4.2): checking the client's Upgrade request,
//! the 101 answer with the chosen subprotocol and extensions, and the refusals (400, 426, and
//! the app's denial, 403 by default).

use super::extensions::{self, DeflateConfig, DeflateParams, Extension};
use crate::http::Version;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID of RFC 6455 §1.3 that turns a Sec-WebSocket-Key into Sec-WebSocket-Accept.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an Upgrade request is refused, or an app's answer cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request breaks §4.2.1 (400).
    #[error("bad WebSocket handshake: {0}")]
    BadRequest(&'static str),
    /// `Sec-WebSocket-Version` is not 13 (426 with `Sec-WebSocket-Version: 13`, §4.2.2).
    #[error("unsupported Sec-WebSocket-Version {0:?}")]
    Version(String),
    /// The app's subprotocol or headers would break the response (CR/LF, bad name): the
    /// app's fault, 500.
    #[error("invalid {0} from the app")]
    App(&'static str),
}

impl HandshakeError {
    /// The status of the refusal.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Version(_) => 426,
            Self::App(_) => 500,
        }
    }

    /// The whole refusal response; the connection closes after it.
    #[must_use]
    pub fn response(&self) -> Vec<u8> {
        let extra: &[(&[u8], &[u8])] = match self {
            Self::Version(_) => &[(b"Sec-WebSocket-Version", b"13")],
            _ => &[],
        };
        let body = format!("{self}\n");
        deny(self.status(), extra, body.as_bytes())
    }
}

/// The request has `Upgrade: websocket` (a token in the list, any case): the ASGI layer gives
/// such a request a `websocket` scope, and [`check`] says whether it is a valid one.
pub fn is_upgrade<'a>(headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> bool {
    headers
        .into_iter()
        .any(|(n, v)| n.eq_ignore_ascii_case(b"upgrade") && has_token(v, b"websocket"))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A valid Upgrade request, waiting for the app's accept or denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` for the 101.
    pub accept: String,
    /// Subprotocols offered, in the client's order (the ASGI scope's `subprotocols`).
    pub subprotocols: Vec<String>,
    /// Extensions offered.
    pub extensions: Vec<Extension>,
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)) (§4.2.2 step 5.4).
#[must_use]
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Checks an Upgrade request (§4.2.1): GET over HTTP/1.1, `Upgrade: websocket`,
/// `Connection: upgrade`, one `Sec-WebSocket-Key` of 16 base64-encoded bytes, and
/// `Sec-WebSocket-Version: 13`. Headers are (name, value) as the HTTP parser gives them; names
/// compare case-insensitively and a header may repeat.
pub fn check<'a>(
    method: &[u8],
    version: Version,
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Upgrade, HandshakeError> {
    if method != b"GET" {
        return Err(HandshakeError::BadRequest("method is not GET"));
    }
    if version != Version::Http11 {
        return Err(HandshakeError::BadRequest("HTTP/1.1 required"));
    }
    let (mut upgrade, mut connection) = (false, false);
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut versions: Vec<&[u8]> = Vec::new();
    let mut subprotocols = Vec::new();
    let mut ext_values: Vec<&[u8]> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match name.as_slice() {
            b"upgrade" => upgrade |= has_token(value, b"websocket"),
            b"connection" => connection |= has_token(value, b"upgrade"),
            b"sec-websocket-key" => keys.push(value.trim_ascii()),
            b"sec-websocket-version" => versions.push(value.trim_ascii()),
            b"sec-websocket-protocol" => subprotocols.extend(
                value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|p| !p.is_empty())
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
            ),
            b"sec-websocket-extensions" => ext_values.push(value),
            _ => {}
        }
    }
    if !upgrade {
        return Err(HandshakeError::BadRequest("no Upgrade: websocket"));
    }
    if !connection {
        return Err(HandshakeError::BadRequest("no Connection: upgrade"));
    }
    match versions.as_slice() {
        [v] if *v == b"13" => {}
        [] => return Err(HandshakeError::BadRequest("no Sec-WebSocket-Version")),
        vs => {
            let given = vs
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(HandshakeError::Version(given));
        }
    }
    let [key] = keys.as_slice() else {
        return Err(HandshakeError::BadRequest(
            "Sec-WebSocket-Key missing or repeated",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| HandshakeError::BadRequest("Sec-WebSocket-Key is not base64"))?;
    if decoded.len() != 16 {
        return Err(HandshakeError::BadRequest(
            "Sec-WebSocket-Key is not 16 bytes",
        ));
    }
    Ok(Upgrade {
        accept: accept_key(key),
        subprotocols,
        extensions: extensions::parse_offers(ext_values),
    })
}

/// The app's accept, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The 101 response head, blank line included.
    pub head: Vec<u8>,
    /// The agreed permessage-deflate, for [`super::Deflate::new`].
    pub deflate: Option<DeflateParams>,
    /// Compression level from the [`DeflateConfig`].
    level: u32,
}

impl Accepted {
    /// The connection that starts once the head is written, with the agreed compression.
    #[must_use]
    pub fn connection(&self, config: super::Config) -> super::Connection {
        super::Connection::new(
            config,
            self.deflate.map(|p| super::Deflate::new(p, self.level)),
        )
    }
}

/// A header name is a token, a value has no CR, LF or NUL: anything else from the app could
/// split the response.
fn header_ok(name: &[u8], value: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: u16) {
    let reason = match status {
        101 => "Switching Protocols",
        403 => "Forbidden",
        426 => "Upgrade Required",
        other => crate::http::response::reason(other),
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

impl Upgrade {
    /// The 101 for the app's `websocket.accept`: its `subprotocol` (ASGI lets the app pick any;
    /// it should be one of [`Upgrade::subprotocols`]), its extra `headers`, and the first
    /// permessage-deflate offer `deflate` can honour.
    pub fn accept(
        &self,
        subprotocol: Option<&str>,
        headers: &[(&[u8], &[u8])],
        deflate: &DeflateConfig,
    ) -> Result<Accepted, HandshakeError> {
        if let Some(p) = subprotocol {
            if !header_ok(b"x", p.as_bytes()) || p.contains(',') || p.trim().is_empty() {
                return Err(HandshakeError::App("subprotocol"));
            }
        }
        if headers.iter().any(|(n, v)| !header_ok(n, v)) {
            return Err(HandshakeError::App("header"));
        }
        let agreed = extensions::negotiate_deflate(&self.extensions, deflate);
        let mut head = Vec::with_capacity(160);
        status_line(&mut head, 101);
        head.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
        push_header(&mut head, b"Sec-WebSocket-Accept", self.accept.as_bytes());
        if let Some(p) = subprotocol {
            push_header(&mut head, b"Sec-WebSocket-Protocol", p.as_bytes());
        }
        if let Some(params) = &agreed {
            push_header(
                &mut head,
                b"Sec-WebSocket-Extensions",
                params.header_value().as_bytes(),
            );
        }
        for (n, v) in headers {
            push_header(&mut head, n, v);
        }
        crate::http::response::date_header(&mut head);
        head.extend_from_slice(b"\r\n");
        Ok(Accepted {
            head,
            deflate: agreed,
            level: deflate.level,
        })
    }
}

/// A whole refusal response (the app's `websocket.http.response`, or `websocket.close` before
/// accept as 403, as uvicorn does): status, the given headers, `Content-Length`,
/// `Connection: close` and the body. Header lines that could split the response are dropped.
#[must_use]
pub fn deny(status: u16, headers: &[(&[u8], &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    status_line(&mut out, status);
    for (n, v) in headers {
        if header_ok(n, v)
            && !n.eq_ignore_ascii_case(b"content-length")
            && !n.eq_ignore_ascii_case(b"connection")
        {
            push_header(&mut out, n, v);
        }
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\n");
    crate::http::response::date_header(&mut out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The 403 for an app that closed before accepting.
#[must_use]
pub fn forbidden() -> Vec<u8> {
    deny(403, &[(b"Content-Type", b"text/plain")], b"Forbidden\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &[(&'static str, &'static str)]) -> Vec<(&'static [u8], &'static [u8])> {
        let mut h: Vec<(&[u8], &[u8])> = vec![
            (b"Host", b"server.example.com"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", KEY),
            (b"Sec-WebSocket-Version", b"13"),
        ];
        for (n, v) in extra {
            h.push((n.as_bytes(), v.as_bytes()));
        }
        h
    }

    fn without(name: &str) -> Vec<(&'static [u8], &'static [u8])> {
        request(&[])
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name.as_bytes()))
            .collect()
    }

    #[test]
    fn rfc6455_accept_example() {
        // §1.3.
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let up = check(b"GET", Version::Http11, request(&[])).unwrap();
        assert_eq!(up.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn refusals() {
        type Case = (
            &'static [u8],
            Version,
            Vec<(&'static [u8], &'static [u8])>,
            u16,
        );
        let mut key15 = request(&[]);
        key15[3].1 = b"AAAAAAAAAAAAAAAAAAAA"; // 15 bytes
        let mut bad64 = request(&[]);
        bad64[3].1 = b"not base64 at all!!!!!==";
        let mut v8 = request(&[]);
        v8[4].1 = b"8";
        let mut no_conn_token = request(&[]);
        no_conn_token[2].1 = b"keep-alive";
        let table: Vec<Case> = vec![
            (b"POST", Version::Http11, request(&[]), 400),
            (b"GET", Version::Http10, request(&[]), 400),
            (b"GET", Version::Http11, without("upgrade"), 400),
            (b"GET", Version::Http11, without("connection"), 400),
            (b"GET", Version::Http11, no_conn_token, 400),
            (b"GET", Version::Http11, without("sec-websocket-key"), 400),
            (b"GET", Version::Http11, key15, 400),
            (b"GET", Version::Http11, bad64, 400),
            (
                b"GET",
                Version::Http11,
                request(&[("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]),
                400,
            ),
            (
                b"GET",
                Version::Http11,
                without("sec-websocket-version"),
                400,
            ),
            (b"GET", Version::Http11, v8, 426),
        ];
        for (method, version, headers, status) in table {
            let err = check(method, version, headers.clone()).unwrap_err();
            assert_eq!(err.status(), status, "{err} for {headers:?}");
        }
        let resp = HandshakeError::Version("8".into()).response();
        let text = String::from_utf8(resp).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    }

    #[test]
    fn header_tokens_are_case_insensitive_lists() {
        let h: Vec<(&[u8], &[u8])> = vec![
            (b"upgrade", b"foo, WebSocket"),
            (b"CONNECTION", b"keep-alive, UPGRADE"),
            (b"sec-websocket-key", KEY),
            (b"sec-websocket-version", b"13"),
            (b"Sec-WebSocket-Protocol", b"chat, superchat"),
            (b"Sec-WebSocket-Protocol", b"v2"),
        ];
        assert!(is_upgrade(h.clone()));
        let up = check(b"GET", Version::Http11, h).unwrap();
        assert_eq!(up.subprotocols, ["chat", "superchat", "v2"]);
        assert!(!is_upgrade(without("upgrade")));
    }

    #[test]
    fn accept_builds_the_101() {
        let up = check(
            b"GET",
            Version::Http11,
            request(&[
                ("Sec-WebSocket-Protocol", "chat"),
                (
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; client_max_window_bits",
                ),
            ]),
        )
        .unwrap();
        let acc = up
            .accept(
                Some("chat"),
                &[(b"X-Thing", b"1")],
                &DeflateConfig::default(),
            )
            .unwrap();
        let text = String::from_utf8(acc.head).unwrap();
        assert!(text.starts_with(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\nX-Thing: 1\r\nDate: "
        ));
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!(acc.deflate, Some(DeflateParams::default()));
        let off = DeflateConfig {
            enabled: false,
            ..DeflateConfig::default()
        };
        let acc = up.accept(None, &[], &off).unwrap();
        let text = String::from_utf8(acc.head).unwrap();
        assert!(
            !text.contains("Sec-WebSocket-Extensions") && !text.contains("Sec-WebSocket-Protocol"),
            "{text}"
        );
        assert_eq!(acc.deflate, None);
        // Header injection from the app.
        for (sub, headers) in [
            (Some("a\r\nX: y"), vec![]),
            (Some("a, b"), vec![]),
            (None, vec![(&b"X"[..], &b"1\r\nY: 2"[..])]),
            (None, vec![(&b"X Y"[..], &b"1"[..])]),
        ] {
            let err = up.accept(sub, &headers, &off).unwrap_err();
            assert_eq!(err.status(), 500);
        }
    }

    #[test]
    fn denial() {
        let resp = deny(
            401,
            &[(b"WWW-Authenticate", b"Basic"), (b"Content-Length", b"99")],
            b"no",
        );
        let text = String::from_utf8(resp).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 "), "{text}");
        assert!(text.contains("\r\nWWW-Authenticate: Basic\r\nContent-Length: 2\r\n"));
        assert!(!text.contains("99"));
        assert!(text.ends_with("\r\n\r\nno"));
        let text = String::from_utf8(forbidden()).unwrap();
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    }
}
