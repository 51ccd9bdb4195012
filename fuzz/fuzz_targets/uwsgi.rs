#![no_main]
//! Fuzz the uwsgi packet parser (what `--socket` reads from nginx and the workers read from
//! the router) with the input as a packet as sent, whole and as every prefix.
//!
//! Checked: no panic; every range it returns lies inside the packet and after the header; a
//! prefix of a complete packet asks for more bytes or fails the same way; the limit holds.

use headrace::uwsgi_proto::parse;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data, LIMIT);
    if let Ok(Some(p)) = &whole {
        assert!(p.len <= data.len() && p.len <= LIMIT);
        for (k, v) in &p.vars {
            assert!(k.start >= 4 && k.end <= v.start && v.end <= p.len);
        }
        for cut in 0..p.len {
            match parse(&data[..cut], LIMIT) {
                Ok(None) => {}
                Err(e) => assert_eq!(Err(e), parse(&data[..p.len], LIMIT).map(|_| ())),
                Ok(Some(_)) => panic!("a prefix of {} bytes parsed as a whole packet", cut),
            }
        }
    }
});
