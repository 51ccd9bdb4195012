"""ASGI WebSockets through the real binary, directly (`--http-socket`) and through the router
(`--http`, which tunnels the upgraded connection to a worker): the `websockets` library as the
client for echo, fragmentation, 1 MiB messages, ping/pong, permessage-deflate, subprotocols,
accept headers, denials and every close code; raw sockets for what a library will not send
(unmasked frames, bad UTF-8, empty close frames, bad handshakes, unanswered pings)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time
import zlib

import pytest
import requests
from support import app, free_port, wait_until
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

WS = app("asgi_ws.py")
FRONTS = ["direct", "router"]
MODES = [[], ["--lazy-apps"]]


def start(headrace, front: str, *args: str, **kw):
    """A server for tests/apps/asgi_ws.py on `front`; returns (server, port)."""
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    srv = headrace(opt, f"127.0.0.1:{port}", "--wsgi-file", WS, *args, port=port, bind=False, **kw)
    return srv, port


def recorded(srv, ident: str, timeout: float = 10.0) -> str:
    """The `websocket.disconnect` the app recorded for `?id=<ident>`: '<code> <reason>'."""
    path = srv.record / f"ws-{ident}"
    wait_until(path.exists, timeout, f"the app's record for {ident}")
    time.sleep(0.05)
    return path.read_text()


def code_of(srv, ident: str) -> int:
    return int(recorded(srv, ident).split()[0])


# -- raw sockets


def raw_open(port: int, path: str, extra: str = "") -> tuple[socket.socket, bytes]:
    """A handshake by hand; returns the socket and the answer head (plus any bytes after it)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    return s, head


def frame(opcode: int, payload: bytes, mask: bool = True, fin: bool = True, rsv1: bool = False):
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Frames:
    """Reads server frames (unmasked) from a raw socket."""

    def __init__(self, s: socket.socket, already: bytes = b""):
        self.s = s
        self.buf = already

    def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    def next(self):
        """(fin, rsv1, opcode, payload), or None at EOF."""
        if not self._need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        assert not b1 & 0x80, "a server frame must not be masked"
        if not self._need(at + n):
            return None
        payload = self.buf[at : at + n]
        self.buf = self.buf[at + n :]
        return bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload

    def close_code(self) -> int | None:
        """Read frames until a close frame; its code (None: EOF first)."""
        while True:
            f = self.next()
            if f is None:
                return None
            if f[2] == 0x8:
                return struct.unpack("!H", f[3][:2])[0] if len(f[3]) >= 2 else 1005

    def eof(self, timeout: float = 10.0) -> bool:
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except OSError:
            return False


# -- the websockets library as client


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("mode", MODES, ids=["preloaded", "lazy"])
def test_echo_fragments_large_deflate_subprotocol(headrace, front, mode):
    srv, port = start(headrace, front, *mode)
    with connect(
        f"ws://127.0.0.1:{port}/echo?id=echo", subprotocols=["other", "chat"], max_size=None
    ) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers["x-accepted"] == "yes"
        assert "permessage-deflate" in ws.response.headers["sec-websocket-extensions"]
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xff"
        ws.send(["frag", "men", "ted"])
        assert ws.recv(timeout=10) == "fragmented"
        ws.send([b"\x01" * 1000, b"\x02" * 1000])
        assert ws.recv(timeout=10) == b"\x01" * 1000 + b"\x02" * 1000
        big = os.urandom(1 << 20)
        ws.send(big)
        assert ws.recv(timeout=20) == big
        text = "abc" * 400_000
        ws.send(text)
        assert ws.recv(timeout=20) == text
        pong = ws.ping(b"are you there")
        assert pong.wait(10)
    assert recorded(srv, "echo") == "1000 "
    line = srv.wait_request_lines(2)[-1]
    assert line["status"] == "101" and line["uri"] == "/echo?id=echo", line.string


@pytest.mark.parametrize("front", FRONTS)
def test_without_compression_or_subprotocol(headrace, front):
    _srv, port = start(headrace, front)
    with connect(f"ws://127.0.0.1:{port}/echo", compression=None) as ws:
        assert ws.subprotocol is None
        assert "sec-websocket-extensions" not in ws.response.headers
        ws.send("plain")
        assert ws.recv(timeout=10) == "plain"


@pytest.mark.parametrize("front", FRONTS)
def test_scope_and_lifespan_state(headrace, front):
    _srv, port = start(headrace, front)
    with connect(
        f"ws://127.0.0.1:{port}/scope?x=%201", subprotocols=["a", "b"], compression=None
    ) as ws:
        scope = json.loads(ws.recv(timeout=10))
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/scope"
    assert scope["raw_path"] == "/scope"
    assert scope["query_string"] == "x=%201"
    assert scope["root_path"] == ""
    assert scope["subprotocols"] == ["a", "b"]
    assert scope["state"] == {"token": "from-lifespan"}
    assert scope["extensions"] == {"websocket.http.response": {}}
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", port]
    names = [k for k, _ in scope["headers"]]
    assert "sec-websocket-key" in names and "upgrade" in names


@pytest.mark.parametrize("front", FRONTS)
def test_starlette_websocket_endpoint(headrace, front):
    srv, port = start(headrace, front)
    with connect(f"ws://127.0.0.1:{port}/starlette/echo?id=st", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        ws.send("hi")
        assert ws.recv(timeout=10) == "starlette: hi (from-lifespan)"
        ws.close(4001, "client done")
    assert recorded(srv, "st") == "4001 client done"
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{port}/starlette/deny")
    assert e.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{port}/starlette/deny-response")
    assert e.value.response.status_code == 401
    assert e.value.response.body == b"members only\n"


@pytest.mark.parametrize("front", FRONTS)
def test_many_concurrent_sockets_on_one_worker(headrace, front):
    srv, port = start(headrace, front)

    async def client(i: int) -> int:
        async with aconnect(f"ws://127.0.0.1:{port}/echo", compression=None) as ws:
            for j in range(20):
                await ws.send(f"{i}:{j}")
                assert await ws.recv() == f"{i}:{j}"
        return i

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(50))), 60)

    assert sorted(asyncio.run(main())) == list(range(50))
    lines = srv.wait_request_lines(51)
    assert sum(1 for m in lines if m["status"] == "101") == 50


@pytest.mark.parametrize("front", FRONTS)
def test_denials(headrace, front):
    srv, port = start(headrace, front)
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{port}/deny")
    assert e.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{port}/deny-custom")
    r = e.value.response
    assert r.status_code == 418
    assert r.headers["x-why"] == "teapot"
    assert r.body == b"no tea"
    with pytest.raises(InvalidStatus) as e:
        connect(f"ws://127.0.0.1:{port}/raise-before")
    assert e.value.response.status_code == 500
    statuses = sorted(int(m["status"]) for m in srv.wait_request_lines(4)[1:])
    assert statuses == [403, 418, 500], srv.tail()
    assert "boom before accept" in srv.log()
    # The worker serves on.
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"


@pytest.mark.parametrize("front", FRONTS)
def test_server_closes_1000_and_1011_and_send_after_close_raises(headrace, front):
    srv, port = start(headrace, front)
    with connect(f"ws://127.0.0.1:{port}/echo?id=srv") as ws:
        ws.send("close-me")
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1000
        assert e.value.rcvd.reason == "server bye"
    assert code_of(srv, "srv") == 1000
    with connect(f"ws://127.0.0.1:{port}/raise-after") as ws:
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1011
    assert "boom after accept" in srv.log()
    with connect(f"ws://127.0.0.1:{port}/return-after-accept") as ws:
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1000
    with connect(f"ws://127.0.0.1:{port}/send-after-close?id=late") as ws:
        ws.close(1000)
    wait_until(
        lambda: "OSError WebSocketDisconnected" in recorded(srv, "late"),
        10,
        "send after close raising an OSError",
    )


@pytest.mark.parametrize("front", FRONTS)
def test_client_codes_1005_1006_and_protocol_errors(headrace, front):
    srv, port = start(headrace, front)
    # An empty close frame: the app sees 1005, the server answers with an empty close.
    s, head = raw_open(port, "/echo?id=nocode")
    assert head.startswith(b"HTTP/1.1 101 "), head
    s.sendall(frame(0x8, b""))
    f = Frames(s, head.split(b"\r\n\r\n", 1)[1])
    assert f.close_code() == 1005
    assert f.eof()
    s.close()
    assert code_of(srv, "nocode") == 1005
    # The TCP connection dropped without a close frame: 1006.
    s, head = raw_open(port, "/echo?id=drop")
    assert head.startswith(b"HTTP/1.1 101 "), head
    s.sendall(frame(0x1, b"ping?"))
    assert Frames(s, head.split(b"\r\n\r\n", 1)[1]).next()[3] == b"ping?"
    s.close()
    assert code_of(srv, "drop") == 1006
    # An unmasked client frame: 1002 to the client and to the app.
    s, head = raw_open(port, "/echo?id=unmasked")
    s.sendall(frame(0x1, b"hello", mask=False))
    f = Frames(s, head.split(b"\r\n\r\n", 1)[1])
    assert f.close_code() == 1002
    assert f.eof()
    s.close()
    assert code_of(srv, "unmasked") == 1002
    # A text message that is not UTF-8: 1007.
    s, head = raw_open(port, "/echo?id=utf8")
    s.sendall(frame(0x1, b"\xff\xfe"))
    assert Frames(s, head.split(b"\r\n\r\n", 1)[1]).close_code() == 1007
    s.close()
    assert code_of(srv, "utf8") == 1007


@pytest.mark.parametrize("front", FRONTS)
def test_message_too_big_1009(headrace, front):
    srv, port = start(headrace, front, "--ws-max-size", "1000")
    with connect(f"ws://127.0.0.1:{port}/echo?id=big", compression=None) as ws:
        ws.send(b"x" * 1000)
        assert len(ws.recv(timeout=10)) == 1000
        ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1009
    assert code_of(srv, "big") == 1009


@pytest.mark.parametrize("front", FRONTS)
def test_permessage_deflate_on_the_wire(headrace, front):
    _srv, port = start(headrace, front)
    s, head = raw_open(port, "/echo", "Sec-WebSocket-Extensions: permessage-deflate\r\n")
    assert b"permessage-deflate" in head.lower(), head
    text = ("compress me " * 500).encode()
    c = zlib.compressobj(wbits=-15)
    data = c.compress(text) + c.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    s.sendall(frame(0x1, data[:-4], rsv1=True))
    fin, rsv1, opcode, payload = Frames(s, head.split(b"\r\n\r\n", 1)[1]).next()
    assert fin and rsv1 and opcode == 0x1
    assert len(payload) < len(text) // 10
    assert zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff") == text
    s.close()


@pytest.mark.parametrize("front", FRONTS)
def test_bad_handshakes_get_a_clear_answer(headrace, front):
    _srv, port = start(headrace, front)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = Frames(s).s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"Sec-WebSocket-Key" in answer
        assert Frames(s).eof()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 426 "), answer
        assert b"Sec-WebSocket-Version: 13\r\n" in answer
        assert Frames(s).eof()


@pytest.mark.parametrize("front", FRONTS)
def test_ping_interval(headrace, front):
    # The shortest interval (whole seconds); the two clients run side by side.
    srv, port = start(headrace, front, "--ws-ping-interval", "1")
    # A silent raw client sees the server's ping, does not answer, and is dropped: the app
    # gets 1006.
    s, head = raw_open(port, "/echo?id=silent")
    # A client that answers pings (the websockets library does) stays connected: past the
    # pong deadline of its first ping, and as long as the silent one lived.
    with connect(f"ws://127.0.0.1:{port}/echo", ping_interval=None) as ws:
        opened = time.monotonic()
        f = Frames(s, head.split(b"\r\n\r\n", 1)[1])
        first = f.next()
        assert first is not None and first[2] == 0x9, first
        assert f.eof(timeout=10)
        s.close()
        time.sleep(max(0.0, 2.5 - (time.monotonic() - opened)))
        ws.send("alive")
        assert ws.recv(timeout=10) == "alive"
    assert code_of(srv, "silent") == 1006
    assert "no pong within --ws-ping-interval" in srv.log()


@pytest.mark.parametrize("front", FRONTS)
def test_a_client_that_stops_reading_is_dropped_after_socket_timeout(headrace, front):
    srv, port = start(headrace, front, "--socket-timeout", "2")
    s, head = raw_open(port, "/flood?id=flood")
    with s:
        assert head.startswith(b"HTTP/1.1 101 "), head
        # Nothing is read: the app's send() blocks, then fails once the socket stalled.
        assert recorded(srv, "flood", timeout=30) == "OSError WebSocketDisconnected"
    srv.wait_log("client stalled for more than --socket-timeout")


def test_upgrade_over_the_uwsgi_protocol(headrace):
    """What the router sends a worker (and what any uwsgi-protocol peer could): the handshake
    as CGI variables (`HTTP_UPGRADE`...), then frames on the same connection."""
    port = free_port()
    srv = headrace(
        "--socket", f"127.0.0.1:{port}", "--wsgi-file", WS, probe=None, port=port, bind=False
    )
    pairs = [
        (b"REQUEST_METHOD", b"GET"),
        (b"REQUEST_URI", b"/scope?id=uw"),
        (b"PATH_INFO", b"/scope"),
        (b"QUERY_STRING", b"id=uw"),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"example.org"),
        (b"SERVER_PORT", b"8080"),
        (b"REMOTE_ADDR", b"10.0.0.7"),
        (b"REMOTE_PORT", b"40000"),
        (b"HTTP_HOST", b"example.org"),
        (b"HTTP_UPGRADE", b"websocket"),
        (b"HTTP_CONNECTION", b"Upgrade"),
        (b"HTTP_SEC_WEBSOCKET_KEY", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"HTTP_SEC_WEBSOCKET_VERSION", b"13"),
    ]
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v for k, v in pairs)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
        f = Frames(s, head.split(b"\r\n\r\n", 1)[1])
        scope = json.loads(f.next()[3])
        assert scope["client"] == ["10.0.0.7", 40000]
        assert scope["server"] == ["example.org", 8080]
        s.sendall(frame(0x1, b"over uwsgi"))
        assert f.next()[3] == b"over uwsgi"
        s.sendall(frame(0x8, struct.pack("!H", 1000)))
        assert f.close_code() == 1000
    assert code_of(srv, "uw") == 1000


# -- the worker stopping


@pytest.mark.parametrize("front", FRONTS)
def test_sigterm_closes_open_websockets_with_1001(headrace, front):
    srv, port = start(headrace, front)
    with connect(f"ws://127.0.0.1:{port}/echo?id=term") as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        srv.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1001
    assert code_of(srv, "term") == 1001
    assert srv.proc.wait(15) == 0


@pytest.mark.parametrize("front", FRONTS)
def test_reload_closes_open_websockets_with_1012(headrace, front):
    srv, port = start(headrace, front)
    with connect(f"ws://127.0.0.1:{port}/echo?id=reload") as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        os.kill(srv.master_pid(), signal.SIGHUP)
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=15)
        assert e.value.rcvd.code == 1012
    assert code_of(srv, "reload") == 1012

    def reconnects():
        try:
            with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=2) as ws:
                ws.send("back")
                return ws.recv(timeout=5) == "back"
        except (OSError, InvalidStatus, ConnectionClosed):
            return False

    wait_until(reconnects, 15, "a WebSocket to the reloaded worker")


@pytest.mark.parametrize("front", FRONTS)
def test_max_requests_retirement_closes_open_websockets_with_1001(headrace, front):
    srv, port = start(headrace, front, "--max-requests", "2")
    # Request 1 was the readiness probe; a WebSocket counts when it ends.
    with connect(f"ws://127.0.0.1:{port}/echo?id=retire") as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        # Request 2 is the worker's last: it retires, and the open socket hears 1001.
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd.code == 1001
    assert code_of(srv, "retire") == 1001


def test_harakiri_spares_open_websockets(headrace):
    srv, port = start(headrace, "direct", "--harakiri", "1")
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        time.sleep(3)
        ws.send("survived")
        assert ws.recv(timeout=10) == "survived"
    assert "HARAKIRI" not in srv.log()


def test_harakiri_still_kills_a_stuck_http_request_beside_a_websocket(headrace):
    srv, port = start(headrace, "direct", "--harakiri", "2")
    with connect(f"ws://127.0.0.1:{port}/echo") as ws:
        ws.send("x")
        assert ws.recv(timeout=10) == "x"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
            srv.wait_log("HARAKIRI", timeout=20)
        # The worker was killed under the open socket.
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)


@pytest.mark.parametrize("front", FRONTS)
def test_wsgi_app_answers_an_upgrade_as_plain_http(headrace, front):
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    headrace(opt, f"127.0.0.1:{port}", "--wsgi-file", app("basic.py"), port=port, bind=False)
    s, head = raw_open(port, "/")
    with s:
        # Through the router, the answer comes from a plain uwsgi exchange (HTTP/1.0 framing,
        # then the connection closes).
        assert head.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")), head
        if front == "router":
            assert Frames(s, head.split(b"\r\n\r\n", 1)[1]).eof()
