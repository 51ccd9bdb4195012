//! Round trips against a real client implementation: tungstenite (client role) over an
//! in-memory stream, with our handshake and [`Connection`] as the server. tungstenite checks
//! our 101 (Sec-WebSocket-Accept, Upgrade, Connection) and our frames (unmasked, well-formed,
//! close codes) the way an independent implementation reads them.

use super::handshake;
use super::{Config, Connection, DeflateConfig, Event, State};
use crate::http::{parse::parse_head, Limits};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame};
use tungstenite::{HandshakeError, Message, WebSocket};

/// The client's end of an in-memory socket: what it writes goes to the server's inbox; reads
/// come from the server's output, and an empty inbox is `WouldBlock`, like a non-blocking
/// socket.
#[derive(Clone, Default)]
struct Pipe {
    to_server: Rc<RefCell<Vec<u8>>>,
    to_client: Rc<RefCell<VecDeque<u8>>>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut q = self.to_client.borrow_mut();
        if q.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(q.len());
        for (dst, src) in buf.iter_mut().zip(q.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.to_server.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects a tungstenite client to a server that checks and accepts with our handshake.
/// With `subprotocol`, the client offers `superchat, chat` and the app picks `subprotocol`
/// (tungstenite refuses a 101 without one once it offered some).
fn connect(subprotocol: Option<&str>) -> (WebSocket<Pipe>, Connection, Pipe) {
    let pipe = Pipe::default();
    let mut request = "ws://127.0.0.1/chat"
        .parse::<tungstenite::http::Uri>()
        .map(tungstenite::client::IntoClientRequest::into_client_request)
        .unwrap()
        .unwrap();
    if subprotocol.is_some() {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "superchat, chat".parse().unwrap());
    }
    let mid = match tungstenite::client::client(request, pipe.clone()) {
        Err(HandshakeError::Interrupted(mid)) => mid,
        other => panic!("client should wait for the 101: {:?}", other.map(|_| ())),
    };
    // The server side: parse the head as the worker does, then check and accept.
    let bytes = std::mem::take(&mut *pipe.to_server.borrow_mut());
    let head = parse_head(
        &bytes,
        Limits {
            head: 8192,
            body: 0,
        },
    )
    .unwrap()
    .unwrap();
    let headers: Vec<(&[u8], &[u8])> = head
        .headers
        .iter()
        .map(|(n, v)| (&bytes[n.clone()], &bytes[v.clone()]))
        .collect();
    assert!(handshake::is_upgrade(headers.iter().copied()));
    let up = handshake::check(&bytes[head.method.clone()], head.version, headers).unwrap();
    if subprotocol.is_some() {
        assert_eq!(up.subprotocols, ["superchat", "chat"]);
    }
    let accepted = up
        .accept(subprotocol, &[], &DeflateConfig::default())
        .unwrap();
    assert_eq!(accepted.deflate, None, "tungstenite offers no extension");
    pipe.to_client.borrow_mut().extend(accepted.head);
    let (ws, response) = mid.handshake().unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        subprotocol
    );
    (ws, Connection::new(Config::default(), None), pipe)
}

/// Moves the client's bytes into the server, lets an echo app answer every message, and the
/// server's output back to the client. Returns the events the app saw.
fn serve(conn: &mut Connection, pipe: &Pipe) -> Vec<Event> {
    let bytes = std::mem::take(&mut *pipe.to_server.borrow_mut());
    conn.receive(&bytes);
    let mut seen = Vec::new();
    while let Some(ev) = conn.next_event() {
        if let Event::Message(m) = &ev {
            conn.send_message(m).unwrap();
        }
        seen.push(ev);
    }
    pipe.to_client.borrow_mut().extend(conn.take_output());
    seen
}

#[test]
fn echo_text_binary_large_and_fragmented() {
    let (mut ws, mut conn, pipe) = connect(Some("chat"));
    let big: Vec<u8> = (0..200_000u32).map(|i| i.to_le_bytes()[1]).collect();
    let messages = [
        Message::text("Hello"),
        Message::text(""),
        Message::text("κόσμε ✓"),
        Message::binary(vec![0u8, 255, 1, 254]),
        Message::binary(big.clone()),
    ];
    for m in &messages {
        ws.send(m.clone()).unwrap();
        serve(&mut conn, &pipe);
        assert_eq!(&ws.read().unwrap(), m);
    }
    // A text message in three fragments, a ping between them.
    let frames = [
        Frame::message("frag-1 ", OpCode::Data(Data::Text), false),
        Frame::ping(&b"mid"[..]),
        Frame::message("frag-2 ", OpCode::Data(Data::Continue), false),
        Frame::message("κ", OpCode::Data(Data::Continue), true),
    ];
    for f in frames {
        ws.write(Message::Frame(f)).unwrap();
    }
    ws.flush().unwrap();
    let seen = serve(&mut conn, &pipe);
    assert_eq!(
        seen.len(),
        1,
        "the ping is answered, not reported: {seen:?}"
    );
    assert_eq!(ws.read().unwrap(), Message::Pong(b"mid"[..].into()));
    assert_eq!(ws.read().unwrap(), Message::text("frag-1 frag-2 κ"));
}

#[test]
fn server_ping_is_answered_by_the_client() {
    let (mut ws, mut conn, pipe) = connect(None);
    conn.ping(b"heartbeat").unwrap();
    pipe.to_client.borrow_mut().extend(conn.take_output());
    assert_eq!(ws.read().unwrap(), Message::Ping(b"heartbeat"[..].into()));
    ws.flush().unwrap(); // tungstenite queues the pong on read
    assert_eq!(
        serve(&mut conn, &pipe),
        [Event::Pong(b"heartbeat".to_vec())]
    );
}

#[test]
fn client_initiated_close() {
    let (mut ws, mut conn, pipe) = connect(None);
    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    }))
    .unwrap();
    let seen = serve(&mut conn, &pipe);
    assert_eq!(
        seen,
        [Event::Close {
            code: 1001,
            reason: "bye".into()
        }]
    );
    assert_eq!(conn.state(), State::Closed);
    match ws.read().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_initiated_close_with_restart_code() {
    let (mut ws, mut conn, pipe) = connect(None);
    conn.close(1012, "reload").unwrap();
    pipe.to_client.borrow_mut().extend(conn.take_output());
    match ws.read().unwrap() {
        Message::Close(Some(f)) => {
            assert_eq!(u16::from(f.code), 1012);
            assert_eq!(f.reason.as_str(), "reload");
        }
        other => panic!("{other:?}"),
    }
    ws.flush().unwrap(); // the client's answering close
    let seen = serve(&mut conn, &pipe);
    assert_eq!(
        seen,
        [Event::Close {
            code: 1012,
            reason: "reload".into() // tungstenite echoes the reason too
        }]
    );
    assert_eq!(conn.state(), State::Closed);
}

#[test]
fn protocol_error_reaches_the_client_as_1002() {
    let (mut ws, mut conn, pipe) = connect(None);
    // A reserved opcode, sent raw by the client.
    ws.write(Message::Frame(Frame::message(
        "x",
        OpCode::Data(Data::Reserved(3)),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    let seen = serve(&mut conn, &pipe);
    assert!(
        matches!(&seen[..], [Event::Error(e)] if e.close_code() == 1002),
        "{seen:?}"
    );
    match ws.read().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Protocol),
        other => panic!("{other:?}"),
    }
}

/// The client side of [`python_websockets_round_trip`]: Python's `websockets` (the library
/// the ASGI acceptance tests use, and uvicorn's default backend), with permessage-deflate
/// offered as it does by default.
const PY_CLIENT: &str = r#"
import sys
from websockets.sync.client import connect
from websockets.exceptions import ConnectionClosed

port, mode = int(sys.argv[1]), sys.argv[2]
compression = None if mode == "plain" else "deflate"
with connect(f"ws://127.0.0.1:{port}/", compression=compression, subprotocols=["chat"],
             max_size=None, open_timeout=10, close_timeout=10) as ws:
    assert ws.subprotocol == "chat", ws.subprotocol
    print("extensions", ws.response.headers.get("Sec-WebSocket-Extensions"))
    if mode == "restart":
        ws.send("close-please")
        try:
            ws.recv()
            raise SystemExit("no close")
        except ConnectionClosed as e:
            print("closed", e.rcvd.code, e.rcvd.reason)
        raise SystemExit(0)
    for m in ["Hello", "", "κόσμε", b"\x00\xff", "x" * 100000, bytes(range(256)) * 300]:
        for _ in range(2):  # the second time from the shared LZ77 window
            ws.send(m)
            got = ws.recv()
            assert got == m, (m[:20], got[:20])
    ws.send(["frag-", "ment-", "ed"])
    assert ws.recv() == "frag-ment-ed"
    assert ws.ping(b"p").wait(5)
    ws.close(1001, "bye")
    print("closed", ws.close_code)
"#;

/// One server connection on `listener`, serving an echo app with our handshake and
/// [`Connection`] over a blocking socket; with `restart`, the app closes with 1012 on the
/// message `close-please`. Returns the Sec-WebSocket-Extensions we answered and the events.
fn serve_socket(
    listener: &std::net::TcpListener,
    restart: bool,
    deflate: DeflateConfig,
    client: &mut std::process::Child,
) -> (Option<String>, Vec<Event>) {
    // Bounded: a client that dies before connecting must fail the test, not hang it.
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut sock = loop {
        match listener.accept() {
            Ok((sock, _)) => break sock,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(status) = client.try_wait().unwrap() {
                    let mut err = String::new();
                    if let Some(mut stderr) = client.stderr.take() {
                        stderr.read_to_string(&mut err).unwrap();
                    }
                    panic!("client exited ({status}) before connecting: {err}");
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "client never connected"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 65536];
    let head = loop {
        let n = sock.read(&mut tmp).unwrap();
        assert!(n > 0, "client left during the handshake");
        buf.extend_from_slice(&tmp[..n]);
        let limits = Limits {
            head: 8192,
            body: 0,
        };
        if let Some(head) = parse_head(&buf, limits).unwrap() {
            break head;
        }
    };
    let headers: Vec<(&[u8], &[u8])> = head
        .headers
        .iter()
        .map(|(n, v)| (&buf[n.clone()], &buf[v.clone()]))
        .collect();
    let up = handshake::check(&buf[head.method.clone()], head.version, headers).unwrap();
    let accepted = up.accept(Some("chat"), &[], &deflate).unwrap();
    let ext = accepted.deflate.map(|p| p.header_value());
    sock.write_all(&accepted.head).unwrap();
    let mut conn = accepted.connection(Config::default());
    conn.receive(&buf[head.len..]);
    let mut seen = Vec::new();
    loop {
        while let Some(ev) = conn.next_event() {
            match &ev {
                Event::Message(super::Message::Text(t)) if restart && t == "close-please" => {
                    conn.close(1012, "reload").unwrap();
                }
                Event::Message(m) => conn.send_message(m).unwrap(),
                _ => seen.push(ev),
            }
        }
        sock.write_all(&conn.take_output()).unwrap();
        if conn.state() == State::Closed {
            return (ext, seen);
        }
        let n = sock.read(&mut tmp).unwrap();
        if n == 0 {
            conn.connection_lost();
        } else {
            conn.receive(&tmp[..n]);
        }
    }
}

/// Needs a Python with `websockets` (`HEADRACE_WS_PYTHON`, default `python3`):
/// `HEADRACE_WS_PYTHON=/path/to/python cargo test -q --lib python_websockets -- --ignored`.
#[test]
#[ignore = "needs Python's websockets library"]
fn python_websockets_round_trip() {
    let python = std::env::var("HEADRACE_WS_PYTHON").unwrap_or_else(|_| "python3".into());
    for mode in ["deflate", "deflate-no-takeover", "plain", "restart"] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port().to_string();
        let mut child = std::process::Command::new(&python)
            .args(["-c", PY_CLIENT, &port, mode])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let no_takeover = mode == "deflate-no-takeover";
        let config = DeflateConfig {
            server_no_context_takeover: no_takeover,
            client_no_context_takeover: no_takeover,
            ..DeflateConfig::default()
        };
        let (ext, seen) = serve_socket(&listener, mode == "restart", config, &mut child);
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        match mode {
            "deflate" => {
                // websockets offers `permessage-deflate; client_max_window_bits`.
                assert_eq!(ext.as_deref(), Some("permessage-deflate"));
                assert!(
                    stdout.contains("extensions permessage-deflate\n"),
                    "{stdout}"
                );
                assert!(stdout.contains("closed 1001"), "{stdout}");
            }
            "deflate-no-takeover" => {
                let want = "permessage-deflate; server_no_context_takeover; \
                            client_no_context_takeover";
                assert_eq!(ext.as_deref(), Some(want));
                assert!(stdout.contains(&format!("extensions {want}\n")), "{stdout}");
                assert!(stdout.contains("closed 1001"), "{stdout}");
            }
            "plain" => {
                assert_eq!(ext, None);
                assert!(stdout.contains("closed 1001"), "{stdout}");
            }
            _ => assert!(stdout.contains("closed 1012 reload"), "{stdout}"),
        }
        let close = seen
            .iter()
            .find(|e| matches!(e, Event::Close { .. }))
            .cloned();
        let want = if mode == "restart" { 1012 } else { 1001 };
        assert!(
            matches!(close, Some(Event::Close { code, .. }) if code == want),
            "{mode}: {seen:?}"
        );
    }
}
