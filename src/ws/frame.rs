//! The frame wire format (RFC 6455 §5.2): opcodes, the header, unmasking, and the encoder for
//! server frames (never masked, §5.1).

/// A frame opcode (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: a later fragment of a message.
    Continuation,
    /// 0x1: the first frame of a UTF-8 text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    /// The opcode for the low nibble of a frame's first byte; `None` for the reserved ones
    /// (0x3-0x7, 0xB-0xF), which fail the connection with 1002 (§5.2).
    #[must_use]
    pub fn from_nibble(n: u8) -> Option<Self> {
        match n {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// The wire value.
    #[must_use]
    pub fn nibble(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 payload bytes and never fragmented (§5.5).
    #[must_use]
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;

/// FIN bit of the first byte.
pub const FIN: u8 = 0x80;
/// RSV1 bit of the first byte: "per-message compressed" under permessage-deflate (RFC 7692 §6).
pub const RSV1: u8 = 0x40;
/// RSV2 and RSV3: no extension we negotiate defines them.
pub const RSV23: u8 = 0x30;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Last frame of its message.
    pub fin: bool,
    /// RSV1 set.
    pub rsv1: bool,
    /// RSV2 or RSV3 set.
    pub rsv23: bool,
    /// Raw opcode nibble (checked by the reader, which knows the message state).
    pub opcode: u8,
    /// Masking key, when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

/// Why a header cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// A 64-bit length with its most significant bit set (§5.2).
    LengthMsb,
    /// A length in a longer form than needed (§5.2: "the minimal number of bytes MUST be used
    /// to encode the length").
    NonMinimalLength,
}

/// The full header length announced by the first two bytes.
#[must_use]
pub fn header_len(b0_b1: [u8; 2]) -> usize {
    let b1 = b0_b1[1];
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 == 0 { 0 } else { 4 }
}

/// Parses a complete header (`buf.len() == header_len(..)`).
pub fn parse_header(buf: &[u8]) -> Result<Header, HeaderError> {
    let (b0, b1) = (buf[0], buf[1]);
    let (len, rest) = match b1 & 0x7f {
        126 => {
            let n = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
            if n < 126 {
                return Err(HeaderError::NonMinimalLength);
            }
            (n, &buf[4..])
        }
        127 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(HeaderError::LengthMsb);
            }
            if n <= 0xffff {
                return Err(HeaderError::NonMinimalLength);
            }
            (n, &buf[10..])
        }
        n => (u64::from(n), &buf[2..]),
    };
    let mask = (b1 & 0x80 != 0).then(|| [rest[0], rest[1], rest[2], rest[3]]);
    Ok(Header {
        fin: b0 & FIN != 0,
        rsv1: b0 & RSV1 != 0,
        rsv23: b0 & RSV23 != 0,
        opcode: b0 & 0x0f,
        mask,
        len,
    })
}

/// XORs `data` with `mask`, the first byte of `data` being byte `offset` of the payload
/// (§5.3). Eight bytes at a time: the mask repeats every four bytes, so a u64 holding it twice,
/// rotated to `offset`, covers any aligned run of eight.
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = [0u8; 4];
    for (i, b) in m.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(b) ^ word).to_ne_bytes());
    }
    // A multiple of 8 bytes was consumed, so the tail starts again at mask byte `m[0]`.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Appends one unmasked server frame (header and payload) to `out`, so that it goes out in the
/// same write as whatever else is queued.
pub fn encode(out: &mut Vec<u8>, fin: bool, rsv1: bool, opcode: Opcode, payload: &[u8]) {
    let mut b0 = opcode.nibble();
    if fin {
        b0 |= FIN;
    }
    if rsv1 {
        b0 |= RSV1;
    }
    let len = payload.len();
    out.reserve(10 + len);
    out.push(b0);
    if len < 126 {
        #[allow(clippy::cast_possible_truncation, reason = "len < 126")]
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A masked client frame with first byte `b0`, as a client library would send it (tests).
#[cfg(test)]
pub(crate) fn client_frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    let len = payload.len();
    if let Ok(short) = u8::try_from(len).map(|l| l.min(126)) {
        if short < 126 {
            out.push(0x80 | short);
        }
    }
    if out.len() == 1 {
        if let Ok(medium) = u16::try_from(len) {
            out.push(0xfe);
            out.extend_from_slice(&medium.to_be_bytes());
        } else {
            out.push(0xff);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask_bytewise(data: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn unmask_matches_bytewise_for_every_offset_and_length() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for offset in 0..8 {
            for len in 0..40 {
                let src: Vec<u8> = (0..len)
                    .map(|i: u32| (i * 7 + 3).to_le_bytes()[0])
                    .collect();
                let mut fast = src.clone();
                let mut slow = src.clone();
                unmask(&mut fast, mask, offset);
                unmask_bytewise(&mut slow, mask, offset);
                assert_eq!(fast, slow, "offset {offset} len {len}");
            }
        }
    }

    #[test]
    fn rfc6455_examples() {
        // §5.7: a single-frame masked text message "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(header_len([frame[0], frame[1]]), 6);
        let h = parse_header(&frame[..6]).unwrap();
        assert_eq!(
            h,
            Header {
                fin: true,
                rsv1: false,
                rsv23: false,
                opcode: 1,
                mask: Some([0x37, 0xfa, 0x21, 0x3d]),
                len: 5
            }
        );
        let mut payload = frame[6..].to_vec();
        unmask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
        // The same message unmasked, as a server sends it.
        let mut out = Vec::new();
        encode(&mut out, true, false, Opcode::Text, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        // 256 bytes binary in a single unmasked frame; 64 KiB likewise.
        let mut out = Vec::new();
        encode(&mut out, true, false, Opcode::Binary, &[0; 256]);
        assert_eq!(out[..4], [0x82, 0x7E, 0x01, 0x00]);
        let mut out = Vec::new();
        encode(&mut out, true, false, Opcode::Binary, &vec![0; 65536]);
        assert_eq!(
            out[..10],
            [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(out.len(), 10 + 65536);
    }

    #[test]
    fn header_lengths() {
        let table: &[(&[u8], Result<u64, HeaderError>)] = &[
            (&[0x82, 0x7d], Ok(125)),
            (&[0x82, 0x7e, 0x00, 0x7e], Ok(126)),
            (&[0x82, 0x7e, 0xff, 0xff], Ok(65535)),
            (
                &[0x82, 0x7e, 0x00, 0x05],
                Err(HeaderError::NonMinimalLength),
            ),
            (&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0], Ok(65536)),
            (
                &[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
                Err(HeaderError::NonMinimalLength),
            ),
            (
                &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Err(HeaderError::LengthMsb),
            ),
        ];
        for (bytes, want) in table {
            assert_eq!(header_len([bytes[0], bytes[1]]), bytes.len());
            assert_eq!(parse_header(bytes).map(|h| h.len), *want, "{bytes:x?}");
        }
    }

    #[test]
    fn opcodes_round_trip_and_reserved_ones_are_none() {
        for n in 0..16u8 {
            match Opcode::from_nibble(n) {
                Some(op) => assert_eq!(op.nibble(), n),
                None => assert!(matches!(n, 3..=7 | 0xB..=0xF)),
            }
        }
    }
}
