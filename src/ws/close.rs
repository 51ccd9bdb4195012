//! Close frames (RFC 6455 §5.5.1, §7.4): status codes, parsing a peer's close payload and
//! building ours.

use super::WsError;

/// 1000: the purpose of the connection was fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the server is going away (shutdown), or a browser left the page.
pub const GOING_AWAY: u16 = 1001;
/// 1002: protocol error.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: a data type the endpoint cannot accept.
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1005: reported when a close frame carried no code; never sent on the wire.
pub const NO_STATUS: u16 = 1005;
/// 1006: reported when the connection was lost without a close frame; never sent.
pub const ABNORMAL: u16 = 1006;
/// 1007: a text message that is not UTF-8, or data inconsistent with the message type.
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: policy violation.
pub const POLICY_VIOLATION: u16 = 1008;
/// 1009: a message larger than `--ws-max-size`.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// 1011: the server hit an unexpected condition (the app raised).
pub const INTERNAL_ERROR: u16 = 1011;
/// 1012: the server is restarting (reload).
pub const SERVICE_RESTART: u16 = 1012;

/// Largest close reason: a control payload is at most 125 bytes, two of them the code.
pub const MAX_REASON: usize = 123;

/// A code that may appear in a close frame (§7.4.1 plus the IANA registry, §7.4.2): 1000-1003,
/// 1007-1014, and the 3000-4999 ranges for libraries and applications. 1004 is reserved,
/// 1005/1006/1015 are only reported locally, and everything else below 3000 is unassigned.
#[must_use]
pub fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A peer's close payload as (code, reason): 1005 with an empty reason when the payload is
/// empty (§7.1.5). A one-byte payload or an invalid code is a protocol error (1002); a reason
/// that is not UTF-8 is 1007 (§5.5.1: the body "is not guaranteed to be human readable" but
/// "MUST" be UTF-8 per §8.1).
pub fn parse(payload: &[u8]) -> Result<(u16, String), WsError> {
    match payload {
        [] => Ok((NO_STATUS, String::new())),
        [_] => Err(WsError::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_code(code) {
                return Err(WsError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok((code, reason.to_owned()))
        }
    }
}

/// The payload of a close frame we send: the code and the reason cut to [`MAX_REASON`] bytes
/// at a character boundary. `NO_STATUS` gives the empty payload (the answer to a peer's empty
/// close).
#[must_use]
pub fn payload(code: u16, reason: &str) -> Vec<u8> {
    if code == NO_STATUS {
        return Vec::new();
    }
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        type Case<'a> = (&'a [u8], Result<(u16, &'a str), u16>);
        let table: &[Case] = &[
            (b"", Ok((1005, ""))),
            (b"\x03", Err(1002)),
            (b"\x03\xe8", Ok((1000, ""))),
            (b"\x03\xe8bye", Ok((1000, "bye"))),
            (b"\x0f\xa0x", Ok((4000, "x"))),
            (
                b"\x03\xe8\xce\xba\xe1\xbd\xb9",
                Ok((1000, "\u{3ba}\u{1f79}")),
            ),
            (b"\x03\xe8\xff", Err(1007)),
            (b"\x03\xed", Err(1002)), // 1005 on the wire
            (b"\x00\x00", Err(1002)),
        ];
        for (bytes, want) in table {
            let got = parse(bytes).map_err(|e| e.close_code());
            let want = want.map(|(c, r)| (c, r.to_owned()));
            assert_eq!(got, want, "{bytes:x?}");
        }
    }

    #[test]
    fn payload_cuts_reason_at_a_char_boundary() {
        assert_eq!(payload(1000, "ok"), b"\x03\xe8ok");
        assert!(payload(NO_STATUS, "ignored").is_empty());
        let long = "é".repeat(100); // 200 bytes
        let p = payload(1000, &long);
        assert_eq!(p.len(), 2 + 122);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    #[test]
    fn valid_codes() {
        // Autobahn 7.7.x (valid) and 7.9.x (invalid).
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_code(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_code(code), "{code}");
        }
    }
}
