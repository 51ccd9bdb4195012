//! The uwsgi binary protocol (what nginx's `uwsgi_pass` and headrace's router speak): a 4-byte
//! header — modifier1, a little-endian u16 size, modifier2 — then that many bytes of CGI
//! variables, each a little-endian u16 length and the bytes, key then value. The request body
//! follows, CONTENT_LENGTH bytes. No Python here.

use std::ops::Range;

/// Why a packet was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UwsgiProtoError {
    /// A modifier1 other than 0 (WSGI requests).
    #[error("unsupported uwsgi modifier1 {0}")]
    Modifier(u8),
    /// The vars block is larger than `--buffer-size`.
    #[error("uwsgi packet of {0} bytes is larger than --buffer-size {1}")]
    TooLarge(usize, usize),
    /// A length field points past the end of the vars block.
    #[error("truncated uwsgi variable at offset {0}")]
    Truncated(usize),
    /// CONTENT_LENGTH is not a number.
    #[error("invalid CONTENT_LENGTH in uwsgi packet")]
    ContentLength,
}

/// A parsed packet: variable ranges into the buffer it was parsed from.
#[derive(Debug, Clone)]
pub struct Packet {
    /// (key, value) ranges, in order.
    pub vars: Vec<(Range<usize>, Range<usize>)>,
    /// Header plus vars: where the body starts.
    pub len: usize,
    /// CONTENT_LENGTH (0 when absent).
    pub content_length: u64,
    /// Index into `vars` of REQUEST_METHOD, REQUEST_URI, SERVER_PROTOCOL, REMOTE_ADDR.
    pub method: Option<usize>,
    /// See `method`.
    pub uri: Option<usize>,
    /// See `method`.
    pub protocol: Option<usize>,
    /// The sender (headrace's router) keeps the connection open for more requests.
    pub keep_alive: bool,
}

/// Variable the router sets to ask for a persistent connection with HTTP/1.1 response framing.
pub const KEEPALIVE_VAR: &[u8] = b"HEADRACE_KEEPALIVE";

fn u16_at(buf: &[u8], at: usize) -> Option<usize> {
    let b = buf.get(at..at + 2)?;
    Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
}

/// Parse a packet from the start of `buf`. `Ok(None)`: need more bytes.
pub fn parse(buf: &[u8], limit: usize) -> Result<Option<Packet>, UwsgiProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(UwsgiProtoError::Modifier(buf[0]));
    }
    let size = usize::from(u16::from_le_bytes([buf[1], buf[2]]));
    if size + 4 > limit {
        return Err(UwsgiProtoError::TooLarge(size + 4, limit));
    }
    if buf.len() < 4 + size {
        return Ok(None);
    }
    let end = 4 + size;
    let mut p = Packet {
        vars: Vec::with_capacity(32),
        len: end,
        content_length: 0,
        method: None,
        uri: None,
        protocol: None,
        keep_alive: false,
    };
    let mut at = 4;
    while at < end {
        let klen = u16_at(&buf[..end], at).ok_or(UwsgiProtoError::Truncated(at))?;
        let kstart = at + 2;
        let vlen_at = kstart + klen;
        let vlen = u16_at(&buf[..end], vlen_at).ok_or(UwsgiProtoError::Truncated(at))?;
        let vstart = vlen_at + 2;
        let vend = vstart + vlen;
        if vend > end {
            return Err(UwsgiProtoError::Truncated(at));
        }
        let key = &buf[kstart..vlen_at];
        let idx = p.vars.len();
        match key {
            b"REQUEST_METHOD" => p.method = Some(idx),
            b"REQUEST_URI" => p.uri = Some(idx),
            b"SERVER_PROTOCOL" => p.protocol = Some(idx),
            b"CONTENT_LENGTH" => {
                let v = &buf[vstart..vend];
                if !v.is_empty() {
                    if !v.iter().all(u8::is_ascii_digit) || v.len() > 19 {
                        return Err(UwsgiProtoError::ContentLength);
                    }
                    p.content_length = std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or(UwsgiProtoError::ContentLength)?;
                }
            }
            KEEPALIVE_VAR => p.keep_alive = true,
            _ => {}
        }
        p.vars.push((kstart..vlen_at, vstart..vend));
        at = vend;
    }
    Ok(Some(p))
}

/// Append one variable to a packet being built.
pub fn push_var(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let k = u16::try_from(key.len()).unwrap_or(u16::MAX);
    let v = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&k.to_le_bytes());
    out.extend_from_slice(&key[..usize::from(k)]);
    out.extend_from_slice(&v.to_le_bytes());
    out.extend_from_slice(&value[..usize::from(v)]);
}

/// Start a packet: reserve the 4-byte header, to be filled by [`finish_packet`].
pub fn begin_packet(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 0, 0, 0]);
}

/// Fill in the header of a packet started at `start`. `None` if the vars exceed 64 KiB.
pub fn finish_packet(out: &mut [u8], start: usize) -> Option<()> {
    let size = u16::try_from(out.len() - start - 4).ok()?;
    out[start + 1..start + 3].copy_from_slice(&size.to_le_bytes());
    Some(())
}

impl From<UwsgiProtoError> for crate::http::HttpError {
    /// uwsgi packet errors are answered like the HTTP errors they resemble.
    fn from(e: UwsgiProtoError) -> Self {
        match e {
            UwsgiProtoError::TooLarge(_, limit) => Self::HeadTooLarge(limit),
            UwsgiProtoError::Modifier(_) => Self::BadRequest("unsupported uwsgi modifier1"),
            UwsgiProtoError::Truncated(_) => Self::BadRequest("truncated uwsgi packet"),
            UwsgiProtoError::ContentLength => Self::BadRequest("invalid CONTENT_LENGTH"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(vars: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        begin_packet(&mut out);
        for (k, v) in vars {
            push_var(&mut out, k, v);
        }
        finish_packet(&mut out, 0).unwrap();
        out
    }

    #[test]
    fn round_trip_and_partial() {
        let raw = packet(&[
            (b"REQUEST_METHOD", b"POST"),
            (b"REQUEST_URI", b"/x?y"),
            (b"CONTENT_LENGTH", b"5"),
            (b"HTTP_HOST", b""),
        ]);
        let mut with_body = raw.clone();
        with_body.extend_from_slice(b"hello");
        let p = parse(&with_body, 4096).unwrap().unwrap();
        assert_eq!(p.len, raw.len());
        assert_eq!(p.content_length, 5);
        assert_eq!(&raw[p.vars[p.uri.unwrap()].1.clone()], b"/x?y");
        assert_eq!(p.vars.len(), 4);
        assert!(!p.keep_alive);
        for cut in 0..raw.len() {
            assert!(parse(&raw[..cut], 4096).unwrap().is_none(), "prefix {cut}");
        }
    }

    #[test]
    fn malformed() {
        let good = packet(&[(b"A", b"B")]);
        let mut bad_mod = good.clone();
        bad_mod[0] = 5;
        let mut lying = good.clone();
        lying[4] = 200; // key length past the end of the vars
        let mut cl = packet(&[(b"CONTENT_LENGTH", b"-1")]);
        let table: Vec<(Vec<u8>, UwsgiProtoError)> = vec![
            (bad_mod, UwsgiProtoError::Modifier(5)),
            (lying, UwsgiProtoError::Truncated(4)),
            (std::mem::take(&mut cl), UwsgiProtoError::ContentLength),
            (
                vec![0, 0xff, 0xff, 0],
                UwsgiProtoError::TooLarge(65539, 4096),
            ),
            (vec![0, 3, 0, 0, 1, 0, b'k'], UwsgiProtoError::Truncated(4)),
        ];
        for (raw, want) in table {
            assert_eq!(parse(&raw, 4096).unwrap_err(), want);
        }
    }
}
