//! permessage-deflate (RFC 7692 §7.2): one raw DEFLATE stream per direction, flushed at each
//! message end with the trailing `00 00 ff ff` of the sync flush removed on the wire, and the
//! LZ77 window kept between messages unless a `*_no_context_takeover` was agreed.

use super::extensions::DeflateParams;
use super::WsError;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The empty stored block a sync flush ends with; removed by the sender, appended by the
/// receiver (RFC 7692 §7.2.1, §7.2.2).
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Both directions of one connection's permessage-deflate. Each direction's state (a few
/// hundred KiB for the compressor) is allocated on its first message: many connections agree
/// to compression and send little.
pub struct Deflate {
    params: DeflateParams,
    level: u32,
    compress: Option<Compress>,
    decompress: Option<Decompress>,
}

impl std::fmt::Debug for Deflate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflate")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Bytes the stream advanced by, as a usize (the deltas are bounded by buffer sizes).
fn delta(after: u64, before: u64) -> usize {
    usize::try_from(after - before).unwrap_or(usize::MAX)
}

impl Deflate {
    /// A codec for the agreed parameters, compressing at `level` (0-9).
    #[must_use]
    pub fn new(params: DeflateParams, level: u32) -> Self {
        Self {
            params,
            level: level.min(9),
            compress: None,
            decompress: None,
        }
    }

    /// The agreed parameters.
    #[must_use]
    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Appends `data` compressed as one message's payload to `out` (§7.2.1).
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), WsError> {
        let start = out.len();
        let level = self.level;
        let compress = self
            .compress
            .get_or_insert_with(|| Compress::new(Compression::new(level), false));
        let before = compress.total_in();
        loop {
            let consumed = delta(compress.total_in(), before);
            out.reserve((data.len() - consumed) / 2 + 64);
            compress
                .compress_vec(&data[consumed..], out, FlushCompress::Sync)
                .map_err(|_| WsError::Deflate("compression failed"))?;
            // The flush is complete once all input is in and the output did not fill up.
            if delta(compress.total_in(), before) == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TRAILER) {
            out.truncate(out.len() - TRAILER.len());
        }
        if self.params.server_no_context_takeover {
            compress.reset();
        }
        Ok(())
    }

    /// One received message's payload decompressed, failing with 1009 as soon as the output
    /// passes `max` bytes (a small payload can inflate a thousandfold: the output buffer grows
    /// only up to `max + 1`), and with 1007 on invalid DEFLATE data.
    pub fn decompress(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, WsError> {
        let cap = max.saturating_add(1);
        let mut out = Vec::with_capacity(data.len().saturating_mul(4).saturating_add(64).min(cap));
        let mut ended = false;
        let decompress = self
            .decompress
            .get_or_insert_with(|| Decompress::new(false));
        'parts: for part in [data, &TRAILER[..]] {
            let mut pos = 0;
            loop {
                if out.len() == out.capacity() {
                    let room = cap.saturating_sub(out.len());
                    if room == 0 {
                        return Err(WsError::TooBig(max));
                    }
                    out.reserve(room.min(out.len().max(4096)));
                }
                let (in_before, out_before, pos_before) = (decompress.total_in(), out.len(), pos);
                let status = decompress
                    .decompress_vec(&part[pos..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| WsError::Deflate("invalid compressed data"))?;
                pos += delta(decompress.total_in(), in_before);
                if out.len() > max {
                    return Err(WsError::TooBig(max));
                }
                if status == Status::StreamEnd {
                    // BFINAL was set (§7.2.3.4): what follows is only our trailer; the next
                    // message starts a new stream.
                    ended = true;
                    break 'parts;
                }
                // No progress with room to write: the decoder wants input this part lacks.
                let stalled = pos == pos_before && out.len() == out_before;
                if (pos == part.len() && out.len() < out.capacity()) || stalled {
                    break;
                }
            }
        }
        if ended || self.params.client_no_context_takeover {
            decompress.reset(false);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn codec(server_nct: bool, client_nct: bool) -> Deflate {
        Deflate::new(
            DeflateParams {
                server_no_context_takeover: server_nct,
                client_no_context_takeover: client_nct,
                server_max_window_bits: None,
            },
            6,
        )
    }

    #[test]
    fn rfc7692_decompression_examples() {
        let table: &[(&str, &[&[u8]])] = &[
            // §7.2.3.1: "Hello" in one compressed message.
            ("7.2.3.1", &[&HELLO]),
            // §7.2.3.2: the second "Hello" refers back into the first message's window.
            ("7.2.3.2", &[&HELLO, &[0xf2, 0x00, 0x11, 0x00, 0x00]]),
            // §7.2.3.3: a stored (uncompressed) block.
            (
                "7.2.3.3",
                &[&[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
                ]],
            ),
            // §7.2.3.4: BFINAL set.
            (
                "7.2.3.4",
                &[&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]],
            ),
            // §7.2.3.5: two DEFLATE blocks in one message.
            (
                "7.2.3.5",
                &[&[
                    0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
                ]],
            ),
        ];
        for (name, messages) in table {
            let mut d = codec(false, false);
            for m in *messages {
                assert_eq!(d.decompress(m, 1000).unwrap(), b"Hello", "{name}");
            }
        }
    }

    #[test]
    fn rfc7692_compression_with_and_without_context_takeover() {
        // With takeover, the second "Hello" is a back-reference and shorter than the first.
        let mut c = codec(false, false);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        c.compress(b"Hello", &mut first).unwrap();
        c.compress(b"Hello", &mut second).unwrap();
        assert_eq!(first, HELLO);
        assert!(second.len() < first.len(), "{second:x?}");
        let mut d = codec(false, false);
        assert_eq!(d.decompress(&first, 100).unwrap(), b"Hello");
        assert_eq!(d.decompress(&second, 100).unwrap(), b"Hello");
        // Without takeover, every message is compressed alone: the same bytes each time, and
        // each decodes with a fresh decompressor.
        let mut c = codec(true, false);
        for _ in 0..3 {
            let mut m = Vec::new();
            c.compress(b"Hello", &mut m).unwrap();
            assert_eq!(m, HELLO);
            assert_eq!(codec(false, false).decompress(&m, 100).unwrap(), b"Hello");
        }
    }

    #[test]
    fn client_no_context_takeover_resets_the_decompressor() {
        let mut d = codec(false, true);
        assert_eq!(d.decompress(&HELLO, 100).unwrap(), b"Hello");
        assert_eq!(d.decompress(&HELLO, 100).unwrap(), b"Hello");
        // The back-reference of §7.2.3.2 now points before the start of the stream: no
        // "Hello" any more (miniz_oxide reads its zeroed window where zlib would fail).
        let mut d = codec(false, true);
        d.decompress(&HELLO, 100).unwrap();
        let r = d.decompress(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100);
        assert_ne!(r, Ok(b"Hello".to_vec()));
    }

    #[test]
    fn round_trips_large_and_empty_messages() {
        let big: Vec<u8> = (0..300_000u32)
            .map(|i| ((i % 251) ^ ((i / 7) % 256)).to_le_bytes()[0])
            .collect();
        for msg in [&big[..], b"", b"a"] {
            let mut c = codec(false, false);
            let mut d = codec(false, false);
            for _ in 0..2 {
                let mut wire = Vec::new();
                c.compress(msg, &mut wire).unwrap();
                assert_eq!(d.decompress(&wire, big.len()).unwrap(), msg);
            }
        }
    }

    #[test]
    fn decompression_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut wire = Vec::new();
        codec(false, false).compress(&zeros, &mut wire).unwrap();
        assert!(wire.len() < 20_000, "{}", wire.len());
        let mut d = codec(false, false);
        assert_eq!(d.decompress(&wire, 1 << 20).unwrap_err().close_code(), 1009);
        assert_eq!(
            codec(false, false).decompress(&wire, 10 << 20).unwrap(),
            zeros
        );
    }

    #[test]
    fn invalid_data_is_1007() {
        // BTYPE 11 is reserved.
        let err = codec(false, false)
            .decompress(&[0xff, 0xff], 100)
            .unwrap_err();
        assert_eq!(err.close_code(), 1007);
    }
}
