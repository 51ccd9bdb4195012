//! The incremental frame reader: consumes whatever bytes arrived, unmasks payloads straight
//! into the message being reassembled, and yields whole messages and control frames. It checks
//! everything that can be checked without the message's end as soon as the bytes are there
//! (framing, size, UTF-8 of uncompressed text), so a bad peer is failed early ("fail fast",
//! Autobahn 6.4).

use super::frame::{self, Opcode, MAX_CONTROL_PAYLOAD, MAX_HEADER};
use super::WsError;

/// What a complete frame or message gives the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A reassembled data message; `data` is still compressed when `compressed`, and for text
    /// not yet known to be UTF-8 as a whole (its prefix was checked while it arrived).
    Message {
        /// Opcode was text.
        text: bool,
        /// RSV1 was set on its first frame (permessage-deflate).
        compressed: bool,
        /// The payload.
        data: Vec<u8>,
    },
    /// A ping's payload.
    Ping(Vec<u8>),
    /// A pong's payload.
    Pong(Vec<u8>),
    /// A close frame's payload (parsed by the connection).
    Close(Vec<u8>),
}

/// The frame whose payload is being read.
#[derive(Debug)]
struct Current {
    opcode: Opcode,
    fin: bool,
    mask: [u8; 4],
    done: usize,
    remaining: u64,
}

/// A data message being reassembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    /// `data[..checked]` is known to be a UTF-8 prefix (text, uncompressed).
    checked: usize,
}

/// The reader for one connection's client-to-server direction.
#[derive(Debug)]
pub struct Reader {
    max_size: usize,
    rsv1_allowed: bool,
    header: [u8; MAX_HEADER],
    header_have: usize,
    current: Option<Current>,
    message: Option<Partial>,
    control: Vec<u8>,
}

impl Reader {
    /// A reader accepting messages up to `max_size` bytes (on the wire and, for compressed
    /// ones, inflated); RSV1 only when permessage-deflate was agreed.
    #[must_use]
    pub fn new(max_size: usize, deflate: bool) -> Self {
        Self {
            max_size,
            rsv1_allowed: deflate,
            header: [0; MAX_HEADER],
            header_have: 0,
            current: None,
            message: None,
            control: Vec::new(),
        }
    }

    /// The size limit.
    #[must_use]
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Consumes all of `data`, appending each completed item to `out`. After an error the
    /// reader must not be fed again: the connection is failed.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Inbound>) -> Result<(), WsError> {
        while !data.is_empty() {
            let Some(cur) = self.current.as_mut() else {
                data = self.read_header(data, out)?;
                continue;
            };
            let n = usize::try_from(cur.remaining)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let dest = if cur.opcode.is_control() {
                &mut self.control
            } else {
                let Some(m) = self.message.as_mut() else {
                    return Err(WsError::Protocol("payload without a message"));
                };
                &mut m.data
            };
            let start = dest.len();
            dest.extend_from_slice(&data[..n]);
            frame::unmask(&mut dest[start..], cur.mask, cur.done % 4);
            cur.done += n;
            cur.remaining -= n as u64;
            data = &data[n..];
            let complete = cur.remaining == 0;
            // A message's last bytes are checked whole when it is turned into a string; until
            // then each piece is checked as it comes, so the outcome does not depend on how
            // the bytes were split into reads.
            let message_end = complete && cur.fin;
            if !cur.opcode.is_control() && !message_end {
                self.check_partial_utf8()?;
            }
            if complete {
                self.finish_frame(out);
            }
        }
        Ok(())
    }

    /// Takes header bytes from `data`; once the header is whole, starts its frame. Returns
    /// the rest of `data`.
    fn read_header<'d>(
        &mut self,
        data: &'d [u8],
        out: &mut Vec<Inbound>,
    ) -> Result<&'d [u8], WsError> {
        let mut data = data;
        let mut need = if self.header_have < 2 {
            2
        } else {
            frame::header_len([self.header[0], self.header[1]])
        };
        loop {
            let take = (need - self.header_have).min(data.len());
            self.header[self.header_have..self.header_have + take].copy_from_slice(&data[..take]);
            self.header_have += take;
            data = &data[take..];
            if self.header_have < need {
                return Ok(data);
            }
            if need == 2 {
                self.check_first_bytes()?;
                need = frame::header_len([self.header[0], self.header[1]]);
                if need > 2 {
                    continue;
                }
            }
            break;
        }
        let header = frame::parse_header(&self.header[..need]).map_err(|e| match e {
            frame::HeaderError::LengthMsb => {
                WsError::Protocol("64-bit length with its top bit set")
            }
            frame::HeaderError::NonMinimalLength => WsError::Protocol("non-minimal length"),
        })?;
        self.header_have = 0;
        self.start_frame(header, out)?;
        Ok(data)
    }

    /// The checks the first two bytes allow: a bad peer is failed before its payload arrives.
    fn check_first_bytes(&self) -> Result<(), WsError> {
        let (b0, b1) = (self.header[0], self.header[1]);
        if b0 & frame::RSV23 != 0 {
            return Err(WsError::Protocol("RSV2/RSV3 set without an extension"));
        }
        let Some(opcode) = Opcode::from_nibble(b0 & 0x0f) else {
            return Err(WsError::Protocol("reserved opcode"));
        };
        // §5.1: "a client MUST mask all frames that it sends to the server".
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol("unmasked client frame"));
        }
        let fin = b0 & frame::FIN != 0;
        let rsv1 = b0 & frame::RSV1 != 0;
        if opcode.is_control() {
            if !fin {
                return Err(WsError::Protocol("fragmented control frame"));
            }
            if usize::from(b1 & 0x7f) > MAX_CONTROL_PAYLOAD {
                return Err(WsError::Protocol("control frame over 125 bytes"));
            }
            if rsv1 {
                return Err(WsError::Protocol("RSV1 set on a control frame"));
            }
            return Ok(());
        }
        match (opcode, self.message.is_some()) {
            (Opcode::Continuation, false) => {
                Err(WsError::Protocol("continuation frame without a message"))
            }
            // RFC 7692 §6.1: RSV1 marks the first frame of a compressed message only.
            (Opcode::Continuation, true) if rsv1 => {
                Err(WsError::Protocol("RSV1 set on a continuation frame"))
            }
            (Opcode::Text | Opcode::Binary, true) => Err(WsError::Protocol(
                "new message before the fragmented one ended",
            )),
            _ if rsv1 && !self.rsv1_allowed => {
                Err(WsError::Protocol("RSV1 set without permessage-deflate"))
            }
            _ => Ok(()),
        }
    }

    fn start_frame(&mut self, h: frame::Header, out: &mut Vec<Inbound>) -> Result<(), WsError> {
        let Some(opcode) = Opcode::from_nibble(h.opcode) else {
            return Err(WsError::Protocol("reserved opcode"));
        };
        let Some(mask) = h.mask else {
            return Err(WsError::Protocol("unmasked client frame"));
        };
        if !opcode.is_control() {
            let have = self.message.as_ref().map_or(0, |m| m.data.len());
            let len = usize::try_from(h.len).unwrap_or(usize::MAX);
            // Refused on the header: the limit holds before any of the payload is buffered.
            if len > self.max_size - have {
                return Err(WsError::TooBig(self.max_size));
            }
            let m = self.message.get_or_insert_with(|| Partial {
                text: opcode == Opcode::Text,
                compressed: h.rsv1,
                data: Vec::new(),
                checked: 0,
            });
            // Grow ahead by at most 64 KiB: a header announcing 16 MiB costs nothing until the
            // bytes come.
            m.data.reserve(len.min(64 * 1024));
        }
        self.current = Some(Current {
            opcode,
            fin: h.fin,
            mask,
            done: 0,
            remaining: h.len,
        });
        if h.len == 0 {
            self.finish_frame(out);
        }
        Ok(())
    }

    fn finish_frame(&mut self, out: &mut Vec<Inbound>) {
        let Some(cur) = self.current.take() else {
            return;
        };
        match cur.opcode {
            Opcode::Ping => out.push(Inbound::Ping(std::mem::take(&mut self.control))),
            Opcode::Pong => out.push(Inbound::Pong(std::mem::take(&mut self.control))),
            Opcode::Close => out.push(Inbound::Close(std::mem::take(&mut self.control))),
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                if cur.fin {
                    if let Some(m) = self.message.take() {
                        out.push(Inbound::Message {
                            text: m.text,
                            compressed: m.compressed,
                            data: m.data,
                        });
                    }
                }
            }
        }
    }

    /// Checks the part of an unfinished uncompressed text message received so far: bytes that
    /// can never start valid UTF-8 fail now (1007, Autobahn 6.4's "fail fast"), a sequence cut
    /// at the end waits for more.
    fn check_partial_utf8(&mut self) -> Result<(), WsError> {
        let Some(m) = self.message.as_mut() else {
            return Ok(());
        };
        if !m.text || m.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&m.data[m.checked..]) {
            Ok(_) => m.checked = m.data.len(),
            Err(e) if e.error_len().is_none() => m.checked += e.valid_up_to(),
            Err(_) => return Err(WsError::InvalidUtf8),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::client_frame;

    fn read_all(r: &mut Reader, data: &[u8], chunk: usize) -> Result<Vec<Inbound>, WsError> {
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            r.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn partial_input_at_every_split_gives_the_same_result() {
        let mut wire = client_frame(0x01, b"Hello, ", [1, 2, 3, 4]);
        wire.extend(client_frame(0x89, b"ping", [5, 6, 7, 8]));
        wire.extend(client_frame(0x80, "wörld".as_bytes(), [9, 9, 9, 9]));
        wire.extend(client_frame(0x82, &[7; 300], [0xaa, 0xbb, 0xcc, 0xdd]));
        wire.extend(client_frame(
            0x82,
            &vec![8; 70_000],
            [0xaa, 0xbb, 0xcc, 0xdd],
        ));
        let want = vec![
            Inbound::Ping(b"ping".to_vec()),
            Inbound::Message {
                text: true,
                compressed: false,
                data: "Hello, wörld".as_bytes().to_vec(),
            },
            Inbound::Message {
                text: false,
                compressed: false,
                data: vec![7; 300],
            },
            Inbound::Message {
                text: false,
                compressed: false,
                data: vec![8; 70_000],
            },
        ];
        for chunk in [1, 2, 3, 5, 7, 13, 64, 1000, wire.len()] {
            let mut r = Reader::new(1 << 20, false);
            assert_eq!(
                read_all(&mut r, &wire, chunk).unwrap(),
                want,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn size_limit_is_checked_on_the_header_across_fragments() {
        let mut r = Reader::new(10, false);
        let mut out = Vec::new();
        r.feed(&client_frame(0x02, &[0; 6], [0; 4]), &mut out)
            .unwrap();
        // Only the header of the next fragment: refused before its payload arrives.
        let next = client_frame(0x80, &[0; 5], [0; 4]);
        assert_eq!(r.feed(&next[..6], &mut out), Err(WsError::TooBig(10)));
        let mut r = Reader::new(10, false);
        assert!(r
            .feed(&client_frame(0x82, &[0; 10], [0; 4]), &mut out)
            .is_ok());
    }

    #[test]
    fn malformed_headers() {
        let table: &[(&[u8], &str)] = &[
            (&[0x81, 0x05], "unmasked"),
            (&[0x83, 0x80], "reserved opcode"),
            (&[0xa1, 0x80], "RSV2"),
            (&[0xc1, 0x80], "RSV1"),
            (&[0x09, 0x80], "fragmented control"),
            (&[0x89, 0xfe], "over 125"),
            (&[0x80, 0x80], "continuation frame without"),
            (
                &[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                "top bit",
            ),
            (&[0x82, 0xfe, 0x00, 0x01, 1, 2, 3, 4], "non-minimal"),
        ];
        for (bytes, want) in table {
            let mut r = Reader::new(100, false);
            let err = r.feed(bytes, &mut Vec::new()).unwrap_err();
            assert_eq!(err.close_code(), 1002, "{bytes:x?}");
            assert!(err.to_string().contains(want), "{err} for {bytes:x?}");
        }
    }
}
