"""ASGI WebSockets (scope type ``websocket``, spec 2.4) for one headrace worker.

``headrace._asgi`` hands a connection over here (``handoff``) once it has parsed a request
head carrying ``Upgrade: websocket``. The protocol is headrace's Rust codec (``AsgiUpgrade``,
``AsgiWs``: RFC 6455 and permessage-deflate, no I/O); this module owns the socket on the
worker's event loop (``add_reader`` / ``add_writer``, as the HTTP side) and runs the app as one
asyncio Task per session.

A session counts as one request from the handshake to the end of the connection: it is in
flight (the worker waits for it when it stops), it ends with one request log line (status 101,
or the denial's status) and it never holds the harakiri clock.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
import traceback
from urllib.parse import unquote_to_bytes

from headrace import _headrace as native

READ_SIZE = 65536
# How long our close frame waits for the peer's answer before the socket is dropped.
CLOSE_TIMEOUT = 5.0
# Messages read and not yet received by the app above which the socket stops being read.
MAX_PENDING = 64
# Bytes read before the app accepted above which the socket stops being read.
MAX_EARLY = 1 << 16

CONNECTING, RESPONDING, OPEN, DONE = range(4)


class WebSocketDisconnected(OSError):
    """`send()` on a WebSocket that is closed or closing (ASGI: an OSError subclass)."""


def log(line: str) -> None:
    native._asgi_log(line)


def is_upgrade(headers) -> bool:
    """The head asks for a WebSocket (`Upgrade: websocket`); it may still be a bad one."""
    for name, value in headers:
        if name == b"upgrade":
            return b"websocket" in value.lower()
    return False


def handoff(server, sock, listener, client, parsed, leftover: bytes) -> None:
    """Take over `sock` (non-blocking, no longer registered on the loop) whose request head
    `parsed` (as `_asgi_parse` gives it) is an Upgrade; `leftover` are the bytes read after
    the head. `client` is the peer's (host, port) or None."""
    Session(server, sock, listener, client, parsed, leftover).start()


def going_away(server) -> None:
    """The worker stops: open WebSockets get a close frame, 1012 on a reload, else 1001.
    Must run before the stop path clears the worker's `ready` flag."""
    code = native._ws_going_code()
    # A WebSocket handed over later (a router link drained during the stop) gets the same.
    server.ws_going = code
    for s in list(server.websockets):
        s.going_away(code)


class Session:
    __slots__ = (
        "app_done",
        "body_bytes",
        "close_timer",
        "connect_sent",
        "coro",
        "deny_body",
        "deny_headers",
        "disconnect",
        "drained",
        "early",
        "ended",
        "events",
        "exception",
        "fd",
        "going",
        "head_bytes",
        "header_count",
        "headers",
        "held",
        "hold_timer",
        "last_recv",
        "listener",
        "loop",
        "max_size",
        "method",
        "out",
        "ping_interval",
        "ping_sent_at",
        "raw_target",
        "reading",
        "scope",
        "server",
        "sock",
        "start_micros",
        "state",
        "status",
        "t0",
        "task",
        "upgrade",
        "version",
        "waiter",
        "write_error",
        "ws",
    )

    def __init__(self, server, sock, listener, client, parsed, leftover: bytes):
        (_, method, target, version, headers, _framing, extra) = parsed
        peer, server_addr, scheme, root_path = extra
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.listener = listener
        self.method = method
        self.raw_target = target
        self.version = version
        self.headers = headers
        self.early = bytearray(leftover)
        self.ws = None
        self.upgrade = None
        self.state = CONNECTING
        self.events: collections.deque = collections.deque()
        self.connect_sent = False
        self.waiter: asyncio.Future | None = None
        self.out = bytearray()
        self.drained: asyncio.Future | None = None
        self.disconnect: tuple[int, str] | None = None
        self.reading = False
        self.close_timer = None
        # The peer's close (or a failure) waits in the codec while the app has messages to
        # take (see `pump`); `hold_timer` bounds the wait.
        self.held = False
        self.hold_timer = None
        self.going = 0
        self.app_done = False
        self.ended = False
        self.coro = None
        self.task: asyncio.Task | None = None
        self.status = 0
        self.head_bytes = 0
        self.header_count = 0
        self.body_bytes = 0
        self.exception = False
        self.write_error = False
        self.deny_headers: list = []
        self.deny_body = bytearray()
        opts = server.ws_opts
        self.max_size = int(opts.get("ws_max_size", 16 << 20))
        self.ping_interval = float(opts.get("ws_ping_interval", 0.0))
        self.ping_sent_at: float | None = None
        self.last_recv = time.monotonic()
        path_part, _, query = target.partition(b"?")
        if path_part.startswith((b"http://", b"https://")):
            slash = path_part.find(b"/", path_part.find(b"//") + 2)
            path_part = path_part[slash:] if slash >= 0 else b"/"
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": version,
            "scheme": "wss" if scheme == "https" else "ws",
            "path": unquote_to_bytes(path_part).decode("utf-8", "surrogateescape"),
            "raw_path": path_part,
            "query_string": query,
            "root_path": root_path or "",
            "headers": headers,
            "client": peer if peer is not None else client,
            "server": server_addr if server_addr is not None else listener.server,
            "subprotocols": [],
            "state": dict(server.state),
            "extensions": {"websocket.http.response": {}},
        }

    # -- start and end

    def start(self) -> None:
        check = native._ws_check(self.method, self.version, self.headers)
        if isinstance(check, tuple):
            status, response, reason = check
            addr = self.scope["client"][0] if self.scope["client"] else "unix socket"
            log(f"headrace: {status} WebSocket handshake refused for {addr}: {reason}")
            try:
                self.sock.send(response)
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None
            return
        self.upgrade = check
        self.scope["subprotocols"] = check.subprotocols
        self.t0 = time.monotonic()
        self.start_micros = int(time.time() * 1_000_000)
        self.server.websockets.add(self)
        native._ws_begin()
        if self.server.stopping:
            self.going = getattr(self.server, "ws_going", 1001)
        self.reading = True
        self.loop.add_reader(self.fd, self.on_readable)
        # The session's `uwsgi` request state (set_logvar, ...) goes with its task's steps.
        self.coro = self.server.hub.session(self.run(), self.fd)
        self.task = self.loop.create_task(self.coro)

    async def run(self) -> None:
        try:
            await self.server.app(self.scope, self.receive, self.send)
        except Exception:  # noqa: BLE001 - an app exception ends the session, not the worker
            self.exception = True
            log(
                f"headrace: exception in ASGI app for WebSocket "
                f"{self.raw_target.decode('latin-1')}:\n" + traceback.format_exc().rstrip()
            )
            self.app_ended(1011)
        except asyncio.CancelledError:
            self.app_ended(1011)
        else:
            self.app_ended(1000)

    def app_ended(self, code: int) -> None:
        """The app returned (or raised): finish what it left open."""
        self.app_done = True
        self.release()
        if self.sock is not None:
            if self.state == CONNECTING:
                if not self.exception:
                    log(
                        "headrace: the ASGI app returned without accepting or denying the WebSocket"
                    )
                self.respond(500, [(b"content-type", b"text/plain")], b"Internal Server Error\n")
            elif self.state == RESPONDING:
                # A denial whose body never ended: the client sees the connection close.
                self.drop()
            elif self.state == OPEN and self.ws.state() == 0:
                try:
                    self.ws.close(code, "")
                except (RuntimeError, ValueError):
                    pass
                self.flush()
                self.arm_close_timer()
        self.maybe_end()

    def maybe_end(self) -> None:
        """Once the app returned and the socket is closed: the request's bookkeeping."""
        if self.ended or not self.app_done or self.sock is not None:
            return
        self.ended = True
        server = self.server
        server.websockets.discard(self)
        h = {}
        for k, v in self.headers:
            if k in (b"host", b"user-agent", b"referer"):
                h[k] = v.decode("latin-1")
        client = self.scope["client"]
        if self.coro is not None:
            self.coro.finish()  # its logvars go to the log line
        native._asgi_end(
            (
                (
                    self.status or 500,
                    self.head_bytes,
                    self.body_bytes,
                    self.header_count,
                    len(self.headers),
                    int((time.monotonic() - self.t0) * 1_000_000),
                    self.start_micros,
                ),
                (self.exception, self.write_error, False),
                (
                    self.method.encode(),
                    self.raw_target,
                    "HTTP/" + self.version,
                    client[0] if client else "",
                ),
                (h.get(b"host", ""), h.get(b"user-agent", ""), h.get(b"referer", ""), 0),
            ),
            server.oldest_running(),
        )
        server.check_done()

    def going_away(self, code: int) -> None:
        if self.going:
            return
        self.going = code
        self.release()
        if self.state == OPEN and self.sock is not None and self.ws.state() == 0:
            self.ws.close(code, "")
            self.flush()
            self.arm_close_timer()

    # -- the socket

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.lost()
            return
        self.last_recv = time.monotonic()
        if self.ws is None:
            self.early += data
            if len(self.early) > MAX_EARLY:
                self.pause()
            return
        self.ws.receive(data)
        self.pump()

    def pump(self, force: bool = False) -> None:
        """Take every event the codec has (pongs go out at once). The peer's close or a
        failure stays in the codec while the app still has messages to take: taking it answers
        at once and refuses the app's sends, and the app's replies to those messages go first
        (RFC 6455 §5.5.1; the Autobahn suite's 3.2, 4.x.3, 5.15 expect the echo). `receive`
        takes it once the app comes back for more, at the latest after CLOSE_TIMEOUT."""
        ws = self.ws
        self.held = False
        while True:
            if not force and self.events and ws.ending_next():
                self.held = True
                if self.hold_timer is None:
                    self.hold_timer = self.loop.call_later(CLOSE_TIMEOUT, self.release)
                break
            ev = ws.next_event()
            if ev is None:
                break
            kind = ev[0]
            if kind == 0:
                self.events.append(ev[1])
            elif kind == 1:
                pass  # a pong: `last_recv` already moved
            else:
                code, reason = ev[1], ev[2]
                if kind == 3:
                    log(f"headrace: WebSocket {self.raw_target.decode('latin-1')}: {reason}")
                    reason = ""
                elif code == 1005 and ws.sent_close() is not None:
                    # The peer answered our close without a code: ours stands.
                    code = ws.sent_close()
                if self.disconnect is None:
                    self.disconnect = (code, reason)
        self.flush()
        if ws.state() == 2:
            self.close_when_flushed()
        elif len(self.events) >= MAX_PENDING:
            self.pause()
        self.wake()

    def release(self) -> None:
        """Take a held close now (the app is slow to come back, goes away or is gone)."""
        if self.hold_timer is not None:
            self.hold_timer.cancel()
            self.hold_timer = None
        if self.held and self.sock is not None:
            self.pump(force=True)

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def pause(self) -> None:
        if self.reading and self.sock is not None:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume(self) -> None:
        if not self.reading and self.sock is not None and self.disconnect is None:
            self.reading = True
            self.loop.add_reader(self.fd, self.on_readable)

    def lost(self) -> None:
        """The peer closed its side or the connection broke."""
        if self.ws is not None:
            self.ws.connection_lost()
            self.pump(force=True)
        if self.disconnect is None:
            self.disconnect = (1006, "")
        self.drop()

    def drop(self) -> None:
        """Close the socket now (what is still unwritten is lost)."""
        if self.sock is None:
            return
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False
        if self.out:
            self.loop.remove_writer(self.fd)
            self.out.clear()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if self.hold_timer is not None:
            self.hold_timer.cancel()
            self.hold_timer = None
        self.sock.close()
        self.sock = None
        if self.disconnect is None:
            self.disconnect = (1006, "")
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.wake()
        self.maybe_end()

    def close_when_flushed(self) -> None:
        """The close handshake is over (or the answer is written): the server closes TCP
        first (RFC 6455 §7.1.1), once its last bytes are out."""
        if self.sock is None:
            return
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False
        if self.out:
            self.loop.create_task(self.drain_then_drop())
        else:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.drop()

    async def drain_then_drop(self) -> None:
        try:
            await self.drain()
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.drop()

    def arm_close_timer(self) -> None:
        if self.close_timer is None and self.sock is not None:
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.close_timed_out)

    def close_timed_out(self) -> None:
        self.close_timer = None
        if self.disconnect is None:
            sent = self.ws.sent_close() if self.ws is not None else None
            self.disconnect = (sent or 1006, "")
        self.drop()

    def flush(self) -> None:
        data = self.ws.take_output()
        if data is not None:
            self.write(data)

    def write(self, data) -> bool:
        """Write now what the socket takes; `False`: the rest is queued (await `drain`)."""
        if self.sock is None:
            return True
        if self.out:
            self.out += data
            return False
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self.write_error = True
            self.lost()
            return True
        if n == len(data):
            return True
        self.out += memoryview(data)[n:]
        self.loop.add_writer(self.fd, self.on_writable)
        return False

    def on_writable(self) -> None:
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.write_error = True
            self.lost()
            return
        del self.out[:n]
        if not self.out:
            self.loop.remove_writer(self.fd)
            if self.drained is not None and not self.drained.done():
                self.drained.set_result(None)

    async def drain(self) -> None:
        """Wait until the queued output is written. A peer that takes nothing for
        --socket-timeout is dropped (1006), as the HTTP side drops a stalled client."""
        while self.out and self.sock is not None:
            self.drained = self.loop.create_future()
            pending = len(self.out)
            try:
                await asyncio.wait_for(self.drained, self.server.socket_timeout)
            except asyncio.TimeoutError:
                if self.sock is not None and len(self.out) >= pending:
                    log(
                        f"headrace: WebSocket {self.raw_target.decode('latin-1')}: client "
                        f"stalled for more than --socket-timeout, closing"
                    )
                    self.drop()
        self.drained = None

    # -- the ping timer (--ws-ping-interval)

    def ping_tick(self) -> None:
        if self.sock is None or self.ws is None or self.ws.state() != 0:
            return
        now = time.monotonic()
        if self.ping_sent_at is not None and self.last_recv < self.ping_sent_at:
            log(
                f"headrace: WebSocket {self.raw_target.decode('latin-1')}: no pong within "
                f"--ws-ping-interval {self.ping_interval:g}s, closing"
            )
            self.disconnect = (1006, "")
            self.drop()
            return
        if now - self.last_recv >= self.ping_interval * 0.9:
            self.ws.ping(b"headrace")
            self.ping_sent_at = now
            self.flush()
        else:
            self.ping_sent_at = None
        self.loop.call_later(self.ping_interval, self.ping_tick)

    # -- the app's receive and send

    async def receive(self):
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while True:
            if self.held and not self.events:
                self.release()
            if self.events:
                data = self.events.popleft()
                if not self.reading and len(self.events) < MAX_PENDING // 2:
                    self.resume()
                # One key, as uvicorn sends it: apps test `"text" in message`.
                if isinstance(data, str):
                    return {"type": "websocket.receive", "text": data}
                return {"type": "websocket.receive", "bytes": data}
            if self.disconnect is not None:
                code, reason = self.disconnect
                return {"type": "websocket.disconnect", "code": code, "reason": reason}
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    async def send(self, message) -> None:
        kind = message["type"]
        state = self.state
        if self.sock is None or self.disconnect is not None:
            raise WebSocketDisconnected("the WebSocket is closed")
        if state == OPEN:
            ws = self.ws
            if kind == "websocket.send":
                if ws.state() != 0:
                    raise WebSocketDisconnected("the WebSocket is closing")
                data = message.get("bytes")
                if data is not None:
                    ws.send_binary(data)
                    self.body_bytes += len(data)
                else:
                    text = message.get("text")
                    if text is None:
                        raise RuntimeError("websocket.send needs 'bytes' or 'text'")
                    ws.send_text(text)
                    self.body_bytes += len(text)
                out = ws.take_output()
                if out is not None and not self.write(out):
                    await self.drain()
                return
            if kind == "websocket.close":
                if ws.state() != 0:
                    raise WebSocketDisconnected("the WebSocket is closing")
                ws.close(int(message.get("code") or 1000), message.get("reason") or "")
                self.flush()
                self.arm_close_timer()
                return
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an open WebSocket")
        if state == CONNECTING:
            if kind == "websocket.accept":
                self.accept(message)
                return
            if kind == "websocket.close":
                self.respond_raw(403, native._ws_forbidden())
                return
            if kind == "websocket.http.response.start":
                self.state = RESPONDING
                self.status = int(message["status"])
                self.deny_headers = list(message.get("headers", ()))
                return
            raise RuntimeError(
                f"unexpected ASGI message {kind!r} before websocket.accept, websocket.close "
                f"or websocket.http.response.start"
            )
        if state == RESPONDING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"unexpected ASGI message {kind!r} in a denial response")
            self.deny_body += message.get("body", b"")
            if not message.get("more_body", False):
                self.respond(self.status, self.deny_headers, bytes(self.deny_body))
            return
        raise WebSocketDisconnected("the WebSocket is closed")

    def accept(self, message) -> None:
        headers = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        try:
            head, ws = self.upgrade.accept(message.get("subprotocol"), headers, self.max_size)
        except ValueError as e:
            log(f"headrace: WebSocket {self.raw_target.decode('latin-1')}: {e}")
            self.exception = True
            self.respond(500, [(b"content-type", b"text/plain")], b"Internal Server Error\n")
            raise RuntimeError(str(e)) from None
        self.ws = ws
        self.state = OPEN
        self.status = 101
        self.head_bytes = len(head)
        self.header_count = head.count(b"\r\n") - 2
        self.write(head)
        if self.sock is None:
            return
        if self.early:
            early = bytes(self.early)
            self.early.clear()
            ws.receive(early)
            self.pump()
            self.resume()
        if self.going and ws.state() == 0:
            ws.close(self.going, "")
            self.flush()
            self.arm_close_timer()
        if self.ping_interval > 0:
            self.loop.call_later(self.ping_interval, self.ping_tick)

    def respond(self, status: int, headers, body: bytes) -> None:
        self.respond_raw(
            status, native._ws_deny(status, [(bytes(n), bytes(v)) for n, v in headers], body)
        )

    def respond_raw(self, status: int, response: bytes) -> None:
        """A whole HTTP answer instead of the 101; the connection closes after it."""
        self.state = DONE
        self.status = status
        head = response[: response.find(b"\r\n\r\n") + 4]
        self.head_bytes = len(head)
        self.body_bytes = len(response) - len(head)
        self.header_count = head.count(b"\r\n") - 2
        self.write(response)
        self.close_when_flushed()
