//! Property tests for the uwsgi packet parser (`--socket`, nginx, the router's links): nothing
//! from the wire indexes memory unchecked, truncated and lying packets are rejected, and a
//! packet built by `push_var` parses back to the same variables however it is split.

use headrace::http::HttpError;
use headrace::uwsgi_proto::{begin_packet, finish_packet, parse, push_var, UwsgiProtoError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

fn build(vars: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    begin_packet(&mut out);
    for (k, v) in vars {
        push_var(&mut out, k, v);
    }
    finish_packet(&mut out, 0).expect("generated packets stay under 64 KiB");
    out
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary bytes: never a panic, and every range returned lies inside the packet.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), limit in 4usize..600) {
        if let Ok(Some(p)) = parse(&bytes, limit) {
            prop_assert!(p.len <= bytes.len() && p.len <= limit);
            for (k, v) in &p.vars {
                prop_assert!(k.end <= p.len && v.end <= p.len && k.start >= 4);
            }
        }
    }

    /// Built packets parse back to their variables; every proper prefix asks for more bytes.
    #[test]
    fn round_trip_and_prefixes(
        vars in vec((vec(b'A'..=b'Z', 1..20), vec(any::<u8>(), 0..40)), 0..12),
        trailing in vec(any::<u8>(), 0..16),
    ) {
        let packet = build(&vars);
        let mut wire = packet.clone();
        wire.extend_from_slice(&trailing);
        let p = parse(&wire, 4096).unwrap().unwrap();
        prop_assert_eq!(p.len, packet.len());
        let got: Vec<(Vec<u8>, Vec<u8>)> = p
            .vars
            .iter()
            .map(|(k, v)| (wire[k.clone()].to_vec(), wire[v.clone()].to_vec()))
            .collect();
        prop_assert_eq!(got, vars);
        for cut in 0..packet.len() {
            prop_assert!(parse(&packet[..cut], 4096).unwrap().is_none(), "prefix {}", cut);
        }
    }

    /// A length field that promises more than the packet holds is truncation, never a read
    /// past the packet: the last variable's key or value length is inflated.
    #[test]
    fn lying_lengths_are_rejected(
        vars in vec((vec(b'A'..=b'Z', 1..10), vec(any::<u8>(), 0..10)), 1..6),
        lie_in_value in any::<bool>(),
        extra in 1u16..300,
    ) {
        let mut packet = build(&vars);
        let (k, v) = vars.last().unwrap();
        let last = packet.len() - (4 + k.len() + v.len());
        let (at, len) = if lie_in_value { (last + 2 + k.len(), v.len()) } else { (last, k.len()) };
        let lie = u16::try_from(len).unwrap() + extra;
        packet[at..at + 2].copy_from_slice(&lie.to_le_bytes());
        let r = parse(&packet, 4096);
        prop_assert!(matches!(r, Err(UwsgiProtoError::Truncated(_))), "{:?}", r);
    }
}

/// Every file in tests/corpus/uwsgi/ is one packet, parsed with a 4096-byte limit, whose name
/// starts with the outcome: `ok-`, `partial-`, or the status the worker answers (the
/// `HttpError` the error converts to). A missing or empty directory fails: a replay of nothing
/// proves nothing.
#[test]
fn corpus_replays_uwsgi() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/uwsgi");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for path in files {
        let bytes = std::fs::read(&path).expect("corpus file");
        let got = match parse(&bytes, 4096) {
            Ok(Some(_)) => "ok".to_string(),
            Ok(None) => "partial".to_string(),
            Err(e) => HttpError::from(e).status().to_string(),
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let want = name.split_once('-').map_or(name, |(w, _)| w);
        assert_eq!(got, want, "{}", path.display());
    }
}
