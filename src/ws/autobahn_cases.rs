//! The Autobahn|Testsuite cases that concern a codec, ported as tables.
//!
//! Source: crossbario/autobahn-testsuite, `autobahn/case/` (Case1_1_1 … Case13_7_18), run
//! against a server as its "fuzzingclient". Each case below keeps the suite's number and
//! sends the same frames (masked, as the suite does), fed in the same pieces where the suite
//! chops octets or frames or waits between them. The app is an echo app, as in the suite's
//! server runs; what is checked is what the suite sees: the frames the server writes (echoes,
//! pongs, its close frame and code), and for the "fail fast" cases (6.4.x) that the connection
//! failed before the rest of the message arrived. Left out: 9.x (performance), 10.x
//! (auto-fragmentation of outgoing messages, which we do not do) and the timing of the TCP close.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one table of the suite's cases"
)]

use super::close;
use super::deflate::Deflate;
use super::extensions::{self, DeflateConfig, DeflateParams};
use super::frame::{self, client_frame, Opcode};
use super::{Config, Connection, Event, Message, State};

const MASK: [u8; 4] = [0x13, 0x37, 0xbe, 0xef];

/// What the server wrote, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Text(String),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// Close code; `None` for an empty close payload.
    Close(Option<u16>),
}

fn text(s: &str) -> Out {
    Out::Text(s.to_owned())
}

/// One case: the pieces the client sends (each a separate `receive`), the frames the server
/// must write, and for fail-fast cases the piece after which the connection must be closed.
struct Case {
    id: &'static str,
    pieces: Vec<Vec<u8>>,
    expect: Vec<Out>,
    closed_after: Option<usize>,
}

fn case(id: &'static str, pieces: Vec<Vec<u8>>, expect: Vec<Out>) -> Case {
    Case {
        id,
        pieces,
        expect,
        closed_after: None,
    }
}

/// A masked frame: `b0` is FIN|RSV|opcode.
fn f(b0: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(b0, payload, MASK)
}

const TEXT: u8 = 0x81;
const BINARY: u8 = 0x82;
const CLOSE: u8 = 0x88;
const PING: u8 = 0x89;
const PONG: u8 = 0x8a;
const TEXT_MORE: u8 = 0x01;
const CONT_MORE: u8 = 0x00;
const CONT: u8 = 0x80;

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    f(CLOSE, &p)
}

/// All frames in one piece.
fn one(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    vec![frames.concat()]
}

/// Each frame its own piece (the suite's "frame-wise chops", and its delays between frames).
fn each(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    frames.to_vec()
}

/// All frames cut into pieces of `n` octets (the suite's "octet-wise chops").
fn chop(frames: &[Vec<u8>], n: usize) -> Vec<Vec<u8>> {
    frames.concat().chunks(n).map(<[u8]>::to_vec).collect()
}

/// Decodes the server's (unmasked) frames; `inflate` plays the client's decompressor.
fn decode_output(mut wire: &[u8], mut inflate: Option<&mut Deflate>) -> Vec<Out> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let hl = frame::header_len([wire[0], wire[1]]);
        let h = frame::parse_header(&wire[..hl]).expect("server header");
        assert_eq!(h.mask, None, "server frames are not masked");
        assert!(h.fin, "we do not fragment");
        let len = usize::try_from(h.len).unwrap();
        let mut payload = wire[hl..hl + len].to_vec();
        wire = &wire[hl + len..];
        if h.rsv1 {
            let d = inflate.as_deref_mut().expect("RSV1 only with deflate");
            payload = d.decompress(&payload, usize::MAX).unwrap();
        }
        out.push(match Opcode::from_nibble(h.opcode).unwrap() {
            Opcode::Text => Out::Text(String::from_utf8(payload).unwrap()),
            Opcode::Binary => Out::Binary(payload),
            Opcode::Pong => Out::Pong(payload),
            Opcode::Close => Out::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            op => panic!("server sent {op:?}"),
        });
    }
    out
}

/// Runs a case against an echo app.
fn run(c: &Case, deflate: Option<DeflateParams>, max_size: usize) {
    let config = Config {
        max_size,
        auto_pong: true,
    };
    let mut conn = Connection::new(config, deflate.map(|p| Deflate::new(p, 6)));
    let mut wire = Vec::new();
    for (i, piece) in c.pieces.iter().enumerate() {
        conn.receive(piece);
        while let Some(ev) = conn.next_event() {
            if let Event::Message(m) = ev {
                conn.send_message(&m).unwrap();
            }
        }
        wire.extend(conn.take_output());
        if c.closed_after == Some(i) {
            assert_eq!(conn.state(), State::Closed, "{}: not failed fast", c.id);
        }
    }
    // The client side of permessage-deflate mirrors the agreement.
    let mut inflate = deflate.map(|p| {
        Deflate::new(
            DeflateParams {
                client_no_context_takeover: p.server_no_context_takeover,
                server_no_context_takeover: p.client_no_context_takeover,
                server_max_window_bits: None,
            },
            6,
        )
    });
    assert_eq!(
        decode_output(&wire, inflate.as_mut()),
        c.expect,
        "Autobahn case {}",
        c.id
    );
}

fn fail(code: u16) -> Out {
    Out::Close(Some(code))
}

#[test]
fn framing_1() {
    let mut cases = Vec::new();
    for (i, len) in [0, 125, 126, 127, 128, 65535, 65536]
        .into_iter()
        .enumerate()
    {
        let t = "*".repeat(len);
        let b = vec![0xfe; len];
        let ids = [
            ["1.1.1", "1.2.1"],
            ["1.1.2", "1.2.2"],
            ["1.1.3", "1.2.3"],
            ["1.1.4", "1.2.4"],
            ["1.1.5", "1.2.5"],
            ["1.1.6", "1.2.6"],
            ["1.1.7", "1.2.7"],
        ][i];
        cases.push(case(ids[0], one(&[f(TEXT, t.as_bytes())]), vec![text(&t)]));
        cases.push(case(ids[1], one(&[f(BINARY, &b)]), vec![Out::Binary(b)]));
    }
    let t = "*".repeat(65536);
    cases.push(case(
        "1.1.8",
        chop(&[f(TEXT, t.as_bytes())], 997),
        vec![text(&t)],
    ));
    cases.push(case(
        "1.2.8",
        chop(&[f(BINARY, &vec![0xfe; 65536])], 997),
        vec![Out::Binary(vec![0xfe; 65536])],
    ));
    for c in &cases {
        run(c, None, 1 << 20);
    }
}

#[test]
fn pings_2() {
    let bin = [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    let b125 = [0xfe; 125];
    let ten_pings: Vec<Vec<u8>> = (0..10).map(|_| f(PING, b"payload")).collect();
    let ten_answers: Vec<Out> = (0..10).map(|_| Out::Pong(b"payload".to_vec())).collect();
    let cases = vec![
        case("2.1", one(&[f(PING, b"")]), vec![Out::Pong(vec![])]),
        case(
            "2.2",
            one(&[f(PING, b"Hello, world!")]),
            vec![Out::Pong(b"Hello, world!".to_vec())],
        ),
        case("2.3", one(&[f(PING, &bin)]), vec![Out::Pong(bin.to_vec())]),
        case(
            "2.4",
            one(&[f(PING, &b125)]),
            vec![Out::Pong(b125.to_vec())],
        ),
        case("2.5", one(&[f(PING, &[0xfe; 126])]), vec![fail(1002)]),
        case(
            "2.6",
            chop(&[f(PING, &b125)], 1),
            vec![Out::Pong(b125.to_vec())],
        ),
        case("2.7", one(&[f(PONG, b"")]), vec![]),
        case("2.8", one(&[f(PONG, b"unsolicited pong payload")]), vec![]),
        case(
            "2.9",
            one(&[
                f(PONG, b"unsolicited pong payload"),
                f(PING, b"ping payload"),
            ]),
            vec![Out::Pong(b"ping payload".to_vec())],
        ),
        case("2.10", one(&ten_pings), ten_answers.clone()),
        case("2.11", chop(&ten_pings, 1), ten_answers),
    ];
    for c in &cases {
        run(c, None, 1 << 20);
    }
}

#[test]
fn reserved_bits_3() {
    let hello = || f(TEXT, b"Hello, world!");
    let cases = vec![
        case(
            "3.1",
            one(&[f(TEXT | 0x40, b"Hello, world!")]),
            vec![fail(1002)],
        ),
        case(
            "3.2",
            one(&[hello(), f(TEXT | 0x20, b"Hello, world!"), f(PING, b"")]),
            vec![text("Hello, world!"), fail(1002)],
        ),
        case(
            "3.3",
            each(&[hello(), f(TEXT | 0x60, b"Hello, world!"), f(PING, b"")]),
            vec![text("Hello, world!"), fail(1002)],
        ),
        case(
            "3.4",
            chop(
                &[hello(), f(TEXT | 0x10, b"Hello, world!"), f(PING, b"")],
                1,
            ),
            vec![text("Hello, world!"), fail(1002)],
        ),
        case(
            "3.5",
            one(&[f(BINARY | 0x50, &[0xff; 8])]),
            vec![fail(1002)],
        ),
        case("3.6", one(&[f(PING | 0x60, b"")]), vec![fail(1002)]),
        case(
            "3.7",
            one(&[close_frame(1000, b"")])
                .into_iter()
                .map(|mut p| {
                    p[0] |= 0x70;
                    p
                })
                .collect(),
            vec![fail(1002)],
        ),
    ];
    for c in &cases {
        run(c, None, 1 << 20);
    }
}

#[test]
fn opcodes_4() {
    let hello = || f(TEXT, b"Hello, world!");
    let mut cases = Vec::new();
    for (ids, ops) in [
        (
            ["4.1.1", "4.1.2", "4.1.3", "4.1.4", "4.1.5"],
            [3u8, 4, 5, 6, 7],
        ),
        (
            ["4.2.1", "4.2.2", "4.2.3", "4.2.4", "4.2.5"],
            [11, 12, 13, 14, 15],
        ),
    ] {
        cases.push(case(
            ids[0],
            one(&[f(0x80 | ops[0], b"")]),
            vec![fail(1002)],
        ));
        cases.push(case(
            ids[1],
            one(&[f(0x80 | ops[1], b"reserved opcode payload")]),
            vec![fail(1002)],
        ));
        for k in 2..5 {
            cases.push(case(
                ids[k],
                each(&[hello(), f(0x80 | ops[k], b"payload"), f(PING, b"")]),
                vec![text("Hello, world!"), fail(1002)],
            ));
        }
    }
    for c in &cases {
        run(c, None, 1 << 20);
    }
}

#[test]
fn fragmentation_5() {
    let two = || [f(TEXT_MORE, b"fragment1"), f(CONT, b"fragment2")];
    let with_ping = || {
        [
            f(TEXT_MORE, b"fragment1"),
            f(PING, b"ping payload"),
            f(CONT, b"fragment2"),
        ]
    };
    let both = || text("fragment1fragment2");
    let pong = || Out::Pong(b"ping payload".to_vec());
    let lone_fin = || {
        [
            f(CONT, b"non-continuation payload"),
            f(TEXT, b"Hello, world!"),
        ]
    };
    let lone_more = || {
        [
            f(CONT_MORE, b"non-continuation payload"),
            f(TEXT, b"Hello, world!"),
        ]
    };
    let five: Vec<Vec<u8>> = vec![
        f(TEXT_MORE, b"fragment1"),
        f(PING, b"pongme 1!"),
        f(CONT_MORE, b"fragment2"),
        f(PING, b"pongme 2!"),
        f(CONT_MORE, b"fragment3"),
        f(PING, b"pongme 3!"),
        f(CONT_MORE, b"fragment4"),
        f(PING, b"pongme 4!"),
        f(CONT, b"fragment5"),
    ];
    let five_out = vec![
        Out::Pong(b"pongme 1!".to_vec()),
        Out::Pong(b"pongme 2!".to_vec()),
        Out::Pong(b"pongme 3!".to_vec()),
        Out::Pong(b"pongme 4!".to_vec()),
        text("fragment1fragment2fragment3fragment4fragment5"),
    ];
    let cases = vec![
        case(
            "5.1",
            one(&[f(0x09, b"fragment1"), f(0x80, b"fragment2")]),
            vec![fail(1002)],
        ),
        case(
            "5.2",
            one(&[f(0x0a, b"fragment1"), f(0x80, b"fragment2")]),
            vec![fail(1002)],
        ),
        case("5.3", one(&two()), vec![both()]),
        case("5.4", chop(&two(), 1), vec![both()]),
        case("5.5", each(&two()), vec![both()]),
        case("5.6", one(&with_ping()), vec![pong(), both()]),
        case("5.7", chop(&with_ping(), 1), vec![pong(), both()]),
        case("5.8", each(&with_ping()), vec![pong(), both()]),
        case("5.9", one(&lone_fin()), vec![fail(1002)]),
        case("5.10", chop(&lone_fin(), 1), vec![fail(1002)]),
        case("5.11", each(&lone_fin()), vec![fail(1002)]),
        case("5.12", one(&lone_more()), vec![fail(1002)]),
        case("5.13", chop(&lone_more(), 1), vec![fail(1002)]),
        case("5.14", each(&lone_more()), vec![fail(1002)]),
        case(
            "5.15",
            each(&[
                f(TEXT_MORE, b"fragment1"),
                f(CONT, b"fragment2"),
                f(CONT_MORE, b"fragment3"),
                f(TEXT, b"fragment4"),
            ]),
            vec![both(), fail(1002)],
        ),
        case(
            "5.16",
            each(&[
                f(CONT_MORE, b"fragment1"),
                f(TEXT_MORE, b"fragment2"),
                f(CONT, b"fragment3"),
            ]),
            vec![fail(1002)],
        ),
        case(
            "5.17",
            each(&[
                f(CONT, b"fragment1"),
                f(TEXT_MORE, b"fragment2"),
                f(CONT, b"fragment3"),
            ]),
            vec![fail(1002)],
        ),
        case(
            "5.18",
            each(&[f(TEXT_MORE, b"fragment1"), f(TEXT, b"fragment2")]),
            vec![fail(1002)],
        ),
        case("5.19", each(&five), five_out.clone()),
        case("5.20", chop(&five, 1), five_out),
    ];
    for c in &cases {
        run(c, None, 1 << 20);
    }
}

/// The suite's UTF-8 samples (6.5-6.23, from Markus Kuhn's UTF-8 decoder stress test), with
/// whether each is valid.
fn utf8_samples() -> Vec<(&'static str, Vec<u8>, bool)> {
    let hex = |s: &str| -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    };
    let table: &[(&str, &str, bool)] = &[
        ("6.5.1", "ce ba e1 bd b9 cf 83 ce bc ce b5", true),
        ("6.5.2", "f4 8f bf bf", true),
        ("6.5.3", "65 64 69 74 65 64", true),
        ("6.7.1", "00", true),
        ("6.7.2", "c2 80", true),
        ("6.7.3", "e0 a0 80", true),
        ("6.7.4", "f0 90 80 80", true),
        ("6.8.1", "f8 88 80 80 80", false),
        ("6.8.2", "fc 84 80 80 80 80", false),
        ("6.9.1", "7f", true),
        ("6.9.2", "df bf", true),
        ("6.9.3", "ef bf bf", true),
        ("6.9.4", "f4 8f bf bf", true),
        ("6.10.1", "f7 bf bf bf", false),
        ("6.10.2", "fb bf bf bf bf", false),
        ("6.10.3", "fd bf bf bf bf bf", false),
        ("6.11.1", "ed 9f bf", true),
        ("6.11.2", "ee 80 80", true),
        ("6.11.3", "ef bf bd", true),
        ("6.11.4", "f4 8f bf bf", true),
        ("6.11.5", "f4 90 80 80", false),
        ("6.12.1", "80", false),
        ("6.12.2", "bf", false),
        ("6.12.3", "80 bf", false),
        ("6.12.4", "80 bf 80", false),
        ("6.12.5", "80 bf 80 bf", false),
        ("6.12.6", "80 bf 80 bf 80", false),
        ("6.12.7", "80 bf 80 bf 80 bf", false),
        ("6.13.1", "c0 20 c1 20 c2 20 c3 20", false),
        ("6.13.2", "e0 20 e1 20 e2 20", false),
        ("6.13.3", "f0 20 f1 20", false),
        ("6.13.4", "f8 20 f9 20", false),
        ("6.13.5", "fc 20 fd 20", false),
        ("6.14.1", "c0", false),
        ("6.14.2", "e0 80", false),
        ("6.14.3", "f0 80 80", false),
        ("6.14.4", "f8 80 80 80", false),
        ("6.14.5", "fc 80 80 80 80", false),
        ("6.14.6", "df", false),
        ("6.14.7", "ef bf", false),
        ("6.14.8", "f7 bf bf", false),
        ("6.14.9", "fb bf bf bf", false),
        ("6.14.10", "fd bf bf bf bf", false),
        ("6.15.1", "c0 e0 80 f0 80 80 f8 80 80 80 fc 80 80 80 80 df ef bf f7 bf bf fb bf bf bf fd bf bf bf bf", false),
        ("6.16.1", "fe", false),
        ("6.16.2", "ff", false),
        ("6.16.3", "fe fe ff ff", false),
        ("6.17.1", "c0 af", false),
        ("6.17.2", "e0 80 af", false),
        ("6.17.3", "f0 80 80 af", false),
        ("6.17.4", "f8 80 80 80 af", false),
        ("6.17.5", "fc 80 80 80 80 af", false),
        ("6.18.1", "c1 bf", false),
        ("6.18.2", "e0 9f bf", false),
        ("6.18.3", "f0 8f bf bf", false),
        ("6.18.4", "f8 87 bf bf bf", false),
        ("6.18.5", "fc 83 bf bf bf bf", false),
        ("6.19.1", "c0 80", false),
        ("6.19.2", "e0 80 80", false),
        ("6.19.3", "f0 80 80 80", false),
        ("6.19.4", "f8 80 80 80 80", false),
        ("6.19.5", "fc 80 80 80 80 80", false),
        ("6.20.1", "ed a0 80", false),
        ("6.20.2", "ed ad bf", false),
        ("6.20.3", "ed ae 80", false),
        ("6.20.4", "ed af bf", false),
        ("6.20.5", "ed b0 80", false),
        ("6.20.6", "ed be 80", false),
        ("6.20.7", "ed bf bf", false),
        ("6.21.1", "ed a0 80 ed b0 80", false),
        ("6.21.2", "ed a0 80 ed bf bf", false),
        ("6.21.3", "ed ad bf ed b0 80", false),
        ("6.21.4", "ed ad bf ed bf bf", false),
        ("6.21.5", "ed ae 80 ed b0 80", false),
        ("6.21.6", "ed ae 80 ed bf bf", false),
        ("6.21.7", "ed af bf ed b0 80", false),
        ("6.21.8", "ed af bf ed bf bf", false),
        ("6.22.1", "ef bf be", true),
        ("6.22.2", "ef bf bf", true),
        ("6.22.3", "f0 9f bf be", true),
        ("6.22.4", "f0 9f bf bf", true),
        ("6.22.33", "f4 8f bf be", true),
        ("6.22.34", "f4 8f bf bf", true),
        ("6.23.1", "ef bf b9", true),
        ("6.23.2", "ef bf ba", true),
        ("6.23.3", "ef bf bb", true),
        ("6.23.4", "ef bf bc", true),
        ("6.23.5", "ef bf bd", true),
        ("6.23.6", "ef bf be", true),
        ("6.23.7", "ef bf bf", true),
    ];
    table.iter().map(|(id, h, ok)| (*id, hex(h), *ok)).collect()
}

#[test]
fn utf8_6() {
    let kosme = "κόσμε".as_bytes();
    let hello = "Hello-µ@ßöäüàá-UTF-8!!";
    let mut cases = vec![
        case("6.1.1", one(&[f(TEXT, b"")]), vec![text("")]),
        case(
            "6.1.2",
            each(&[f(TEXT_MORE, b""), f(CONT_MORE, b""), f(CONT, b"")]),
            vec![text("")],
        ),
        case(
            "6.1.3",
            each(&[f(TEXT_MORE, b""), f(CONT_MORE, b"middle"), f(CONT, b"")]),
            vec![text("middle")],
        ),
        case(
            "6.2.1",
            one(&[f(TEXT, hello.as_bytes())]),
            vec![text(hello)],
        ),
        case(
            "6.2.2",
            // Fragmented at code point boundaries.
            each(&[
                f(TEXT_MORE, "Hello-µ@ßöä".as_bytes()),
                f(CONT, "üàá-UTF-8!!".as_bytes()),
            ]),
            vec![text(hello)],
        ),
        case(
            "6.2.3",
            chop(&[f(TEXT, hello.as_bytes())], 1),
            vec![text(hello)],
        ),
        case(
            "6.2.4",
            // One frame per octet: fragments cut through code points.
            each(
                &kosme
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let op = match (i == 0, i == kosme.len() - 1) {
                            (true, _) => TEXT_MORE,
                            (false, true) => CONT,
                            (false, false) => CONT_MORE,
                        };
                        f(op, &[*b])
                    })
                    .collect::<Vec<_>>(),
            ),
            vec![text("κόσμε")],
        ),
    ];
    let edited: Vec<u8> = [kosme, &[0xed, 0xa0, 0x80], b"edited"].concat();
    cases.push(case("6.3.1", one(&[f(TEXT, &edited)]), vec![fail(1007)]));
    cases.push(case(
        "6.3.2",
        chop(&[f(TEXT, &edited)], 1),
        vec![fail(1007)],
    ));
    // 6.4.x fail fast: the connection must fail on the invalid piece, before the rest.
    let mut c = case(
        "6.4.1",
        each(&[
            f(TEXT_MORE, kosme),
            f(CONT_MORE, &[0xf4, 0x90, 0x80, 0x80]),
            f(CONT, b"edited"),
        ]),
        vec![fail(1007)],
    );
    c.closed_after = Some(1);
    cases.push(c);
    let mut c = case(
        "6.4.2",
        each(&[
            f(TEXT_MORE, &[kosme, &[0xf4]].concat()),
            f(CONT_MORE, &[0x90]),
            f(CONT, &[0x80, 0x80, b'e', b'd', b'i', b't', b'e', b'd']),
        ]),
        vec![fail(1007)],
    );
    c.closed_after = Some(1);
    cases.push(c);
    // One frame, its payload sent in three pieces: valid, invalid, rest.
    let whole = f(
        TEXT,
        &[kosme, &[0xf4, 0x90, 0x80, 0x80], b"edited"].concat(),
    );
    let cut1 = 6 + kosme.len();
    let mut c = case(
        "6.4.3",
        vec![
            whole[..cut1].to_vec(),
            whole[cut1..cut1 + 4].to_vec(),
            whole[cut1 + 4..].to_vec(),
        ],
        vec![fail(1007)],
    );
    c.closed_after = Some(1);
    cases.push(c);
    let mut c = case(
        "6.4.4",
        vec![
            whole[..cut1].to_vec(),
            whole[cut1..=cut1].to_vec(),
            whole[cut1 + 1..cut1 + 2].to_vec(),
            whole[cut1 + 2..].to_vec(),
        ],
        vec![fail(1007)],
    );
    // f4 alone may still start a valid sequence; f4 90 cannot.
    c.closed_after = Some(2);
    cases.push(c);
    for c in &cases {
        run(c, None, 1 << 20);
    }
    // 6.5-6.23: each sample as one frame, then as one frame per octet (the suite's 6.6 and the
    // per-octet variants).
    for (id, bytes, valid) in utf8_samples() {
        let expect = if valid {
            vec![text(std::str::from_utf8(&bytes).unwrap())]
        } else {
            vec![fail(1007)]
        };
        run(
            &case(id, one(&[f(TEXT, &bytes)]), expect.clone()),
            None,
            1024,
        );
        let per_octet: Vec<Vec<u8>> = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let last = i == bytes.len() - 1;
                let op = match (i == 0, last) {
                    (true, true) => TEXT,
                    (true, false) => TEXT_MORE,
                    (false, true) => CONT,
                    (false, false) => CONT_MORE,
                };
                f(op, &[*b])
            })
            .collect();
        run(&case(id, each(&per_octet), expect), None, 1024);
    }
}

#[test]
fn close_7() {
    let hello = || f(TEXT, b"Hello World!");
    let mut cases = vec![
        case(
            "7.1.1",
            one(&[hello(), close_frame(1000, b"")]),
            vec![text("Hello World!"), Out::Close(Some(1000))],
        ),
        case(
            "7.1.2",
            each(&[close_frame(1000, b""), close_frame(1000, b"")]),
            vec![Out::Close(Some(1000))],
        ),
        case(
            "7.1.3",
            each(&[close_frame(1000, b""), f(PING, b"")]),
            vec![Out::Close(Some(1000))],
        ),
        case(
            "7.1.4",
            each(&[close_frame(1000, b""), hello()]),
            vec![Out::Close(Some(1000))],
        ),
        case(
            "7.1.5",
            each(&[
                f(TEXT_MORE, b"fragment1"),
                close_frame(1000, b""),
                f(CONT, b"fragment2"),
            ]),
            vec![Out::Close(Some(1000))],
        ),
        case(
            "7.1.6",
            one(&[
                f(TEXT, &vec![b'B'; 256 * 1024]),
                close_frame(1000, b""),
                f(PING, b""),
            ]),
            vec![text(&"B".repeat(256 * 1024)), Out::Close(Some(1000))],
        ),
        case("7.3.1", one(&[f(CLOSE, b"")]), vec![Out::Close(None)]),
        case("7.3.2", one(&[f(CLOSE, b"a")]), vec![fail(1002)]),
        case(
            "7.3.3",
            one(&[close_frame(1000, b"")]),
            vec![Out::Close(Some(1000))],
        ),
        case(
            "7.3.4",
            one(&[close_frame(1000, b"Hello World!")]),
            vec![Out::Close(Some(1000))],
        ),
        case(
            "7.3.5",
            one(&[close_frame(1000, &[b'*'; 123])]),
            vec![Out::Close(Some(1000))],
        ),
        case(
            "7.3.6",
            one(&[close_frame(1000, &[b'*'; 124])]),
            vec![fail(1002)],
        ),
        case(
            "7.5.1",
            one(&[close_frame(
                1000,
                &[
                    0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0,
                    0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64,
                ],
            )]),
            vec![fail(1007)],
        ),
    ];
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ];
    for (i, code) in valid.into_iter().enumerate() {
        let ids = [
            "7.7.1", "7.7.2", "7.7.3", "7.7.4", "7.7.5", "7.7.6", "7.7.7", "7.7.8", "7.7.9",
            "7.7.10", "7.7.11", "7.7.12", "7.7.13",
        ];
        cases.push(case(
            ids[i],
            one(&[close_frame(code, b"")]),
            vec![Out::Close(Some(code))],
        ));
    }
    let invalid = [
        0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for (i, code) in invalid.into_iter().enumerate() {
        let ids = [
            "7.9.1", "7.9.2", "7.9.3", "7.9.4", "7.9.5", "7.9.6", "7.9.7", "7.9.8", "7.9.9",
            "7.13.1", "7.13.2",
        ];
        cases.push(case(
            ids[i],
            one(&[close_frame(code, b"")]),
            vec![fail(1002)],
        ));
    }
    for c in &cases {
        run(c, None, 1 << 20);
    }
}

/// 9.x is about speed, but its sizes also check the limit: a message over `--ws-max-size`
/// is 1009, exactly at it is echoed (uvicorn's 16 MiB default, scaled down).
#[test]
fn size_limit() {
    run(
        &case(
            "limit",
            one(&[f(BINARY, &[1; 4096])]),
            vec![Out::Binary(vec![1; 4096])],
        ),
        None,
        4096,
    );
    run(
        &case("limit+1", one(&[f(BINARY, &[1; 4097])]), vec![fail(1009)]),
        None,
        4096,
    );
    run(
        &case(
            "limit fragmented",
            each(&[f(0x02, &[1; 4000]), f(CONT, &[1; 97])]),
            vec![fail(1009)],
        ),
        None,
        4096,
    );
}

/// A client frame compressed as the client would: RSV1 on the first frame.
fn compressed(client: &mut Deflate, op: u8, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    client.compress(data, &mut payload).unwrap();
    f(op | 0x40, &payload)
}

/// 12.x and 13.x: echo of compressed messages of the suite's sizes, under the agreements of
/// 13.1-13.7 (each offer negotiated through the real negotiation code).
#[test]
fn compression_12_13() {
    let offers = [
        ("13.1", "permessage-deflate"),
        ("13.2", "permessage-deflate; client_no_context_takeover"),
        ("13.3", "permessage-deflate; client_max_window_bits=8"),
        ("13.4", "permessage-deflate; client_max_window_bits=15"),
        (
            "13.5",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=8",
        ),
        (
            "13.6",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=15",
        ),
        (
            "13.7",
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=8, \
             permessage-deflate; client_no_context_takeover, permessage-deflate",
        ),
        (
            "server nct",
            "permessage-deflate; server_no_context_takeover",
        ),
    ];
    for (id, offer) in offers {
        let parsed = extensions::parse_offers([offer.as_bytes()]);
        let agreed = extensions::negotiate_deflate(&parsed, &DeflateConfig::default())
            .unwrap_or_else(|| panic!("{id} declined"));
        // The client side: it compresses with its own context rules, afresh for each run.
        let client = || {
            Deflate::new(
                DeflateParams {
                    server_no_context_takeover: agreed.client_no_context_takeover,
                    client_no_context_takeover: agreed.server_no_context_takeover,
                    server_max_window_bits: None,
                },
                6,
            )
        };
        for size in [
            16usize, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131_072,
        ] {
            let msg: String = (0..size)
                .map(|i| char::from(b"abcdefghij"[(i * 7 + i / 13) % 10]))
                .collect();
            let frames = || {
                let mut c = client();
                let mut frames: Vec<Vec<u8>> = (0..3)
                    .map(|_| compressed(&mut c, TEXT, msg.as_bytes()))
                    .collect();
                frames.push(compressed(&mut c, BINARY, &[0xab; 100]));
                frames
            };
            let expect = vec![
                text(&msg),
                text(&msg),
                text(&msg),
                Out::Binary(vec![0xab; 100]),
            ];
            run(
                &case(id, one(&frames()), expect.clone()),
                Some(agreed),
                1 << 20,
            );
            run(
                &case(id, chop(&frames(), 97), expect),
                Some(agreed),
                1 << 20,
            );
        }
    }
}

#[test]
fn compression_rsv1_rules() {
    let p = Some(DeflateParams::default());
    let mut client = Deflate::new(DeflateParams::default(), 6);
    let mut z = Vec::new();
    client.compress(b"Hello", &mut z).unwrap();
    // RFC 7692 §7.2.3.1 example fragmented: RSV1 on the first frame only.
    let cases = vec![
        case(
            "7692 fragmented",
            each(&[f(0x41, &z[..3]), f(CONT, &z[3..])]),
            vec![text("Hello")],
        ),
        case(
            "RSV1 on continuation",
            each(&[f(0x41, &z[..3]), f(0xc0, &z[3..])]),
            vec![fail(1002)],
        ),
        case(
            "RSV1 on ping",
            one(&[f(PING | 0x40, b"")]),
            vec![fail(1002)],
        ),
        case(
            "uncompressed message is fine",
            one(&[f(TEXT, b"plain")]),
            vec![text("plain")],
        ),
        case(
            "garbage",
            one(&[f(TEXT | 0x40, &[0xff, 0xff, 0xff])]),
            vec![fail(1007)],
        ),
    ];
    for c in &cases {
        run(c, p, 1 << 20);
    }
    // Decompression bomb: 1 MiB of zeros compresses to about 1 KiB, the limit is 64 KiB.
    let mut client = Deflate::new(DeflateParams::default(), 6);
    let bomb = compressed(&mut client, BINARY, &vec![0; 1 << 20]);
    assert!(bomb.len() < 4096);
    run(&case("bomb", one(&[bomb]), vec![fail(1009)]), p, 64 * 1024);
    // Without the extension RSV1 is 3.x's protocol error.
    run(
        &case("no deflate", one(&[f(TEXT | 0x40, &z)]), vec![fail(1002)]),
        None,
        1 << 20,
    );
}

/// Our own close: the handshake ends when the peer answers; messages in between are dropped.
#[test]
fn server_initiated_close() {
    let mut conn = Connection::new(Config::default(), None);
    conn.close(close::GOING_AWAY, "shutdown").unwrap();
    assert_eq!(conn.state(), State::Closing);
    assert_eq!(
        decode_output(&conn.take_output(), None),
        vec![Out::Close(Some(1001))]
    );
    assert!(conn.send_text("late").is_err());
    conn.receive(&f(TEXT, b"in flight"));
    conn.receive(&close_frame(1001, b""));
    assert_eq!(
        conn.state(),
        State::Closing,
        "until the app takes the event"
    );
    assert_eq!(
        conn.next_event(),
        Some(Event::Close {
            code: 1001,
            reason: String::new()
        })
    );
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.next_event(), None);
    assert!(conn.take_output().is_empty(), "no second close frame");
    // Lost connections report 1006 once.
    let mut conn = Connection::new(Config::default(), None);
    conn.connection_lost();
    conn.connection_lost();
    assert_eq!(
        conn.next_event(),
        Some(Event::Close {
            code: close::ABNORMAL,
            reason: String::new()
        })
    );
    assert_eq!(conn.next_event(), None);
    // The app may not send codes that never go on the wire.
    let mut conn = Connection::new(Config::default(), None);
    assert!(conn.close(1006, "").is_err());
    assert!(conn.ping(&[0; 126]).is_err());
    conn.ping(b"hb").unwrap();
    conn.send_message(&Message::Binary(vec![1, 2])).unwrap();
    let out = conn.output().to_vec();
    conn.consume_output(3);
    assert_eq!(conn.output(), &out[3..]);
    conn.consume_output(out.len());
    assert!(conn.output().is_empty());
}
