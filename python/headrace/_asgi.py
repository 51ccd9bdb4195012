"""ASGI 3 serving for one headrace worker: one event loop in the worker's main thread.

The listening and accepted sockets are registered on the loop with ``add_reader`` /
``add_writer`` (no asyncio Protocol, no thread hand-off); request heads are parsed by
headrace's Rust parser (``_asgi_parse``, the same limits and error responses as the WSGI
front) and every request runs as an asyncio Task. Counters, the harakiri clock, the request
log line and recycling are kept by the Rust side (``_asgi_begin`` / ``_asgi_end``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import traceback
from urllib.parse import unquote_to_bytes

from headrace import _asgi_ws
from headrace import _headrace as native

FAILED_APP_CODE = 22
READ_SIZE = 65536
# Unconsumed bytes (body or pipelined requests) above which a connection stops being read.
PAUSE_ABOVE = 1 << 20
# How long an idle router link stays open once the worker stops (as the WSGI front).
LINK_IDLE_ON_STOP = 2.0


class ClientDisconnected(OSError):
    """`send()` after the client went away (ASGI: an OSError subclass)."""


def log(line: str) -> None:
    native._asgi_log(line)


def new_loop(choice: str) -> asyncio.AbstractEventLoop:
    if choice in ("auto", "uvloop"):
        try:
            import uvloop  # type: ignore[import-not-found]

            return uvloop.new_event_loop()
        except ImportError:
            if choice == "uvloop":
                log("headrace: --loop uvloop: uvloop is not installed, using asyncio")
    return asyncio.new_event_loop()


def serve(app, listeners, stop_fd: int, opts: dict) -> int:
    loop = new_loop(opts["loop"])
    asyncio.set_event_loop(loop)
    eager = getattr(asyncio, "eager_task_factory", None)  # Python 3.12+
    if eager is not None:
        loop.set_task_factory(eager)
    server = Server(loop, app, listeners, stop_fd, opts)
    kind = "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
    log(f"headrace: worker {opts['worker_id']} (pid: {os.getpid()}) serves ASGI on an {kind} loop")
    try:
        return loop.run_until_complete(server.main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class Listener:
    __slots__ = ("link", "server", "sock", "unix", "uwsgi")

    def __init__(self, fd, kind, name, port, unix, link):
        self.sock = socket.socket(fileno=os.dup(fd))
        self.sock.setblocking(False)
        self.uwsgi = kind == "uwsgi"
        self.unix = unix
        self.link = link
        self.server = (unix, None) if unix else (name, port)


class Server:
    def __init__(self, loop, app, listeners, stop_fd, opts):
        self.loop = loop
        self.app = app
        self.listeners = [Listener(*l) for l in listeners]
        self.stop_fd = stop_fd
        self.lifespan_mode = opts["lifespan"]
        self.keepalive = opts["keepalive"]
        self.socket_timeout = opts["socket_timeout"]
        self.conns: set[Conn] = set()
        self.running: list[Request] = []
        self.state: dict = {}
        self.stopping = False
        self.stop_since = 0.0
        self.done = loop.create_future()
        self.lifespan: Lifespan | None = None
        # Open WebSocket sessions (headrace._asgi_ws): in flight until their socket closes.
        self.websockets: set = set()
        self.ws_opts = opts

    async def main(self) -> int:
        # A stop during lifespan startup is obeyed too (the master waits for it).
        self.loop.add_reader(self.stop_fd, self.stop)
        if self.lifespan_mode != "off":
            self.lifespan = Lifespan(self)
            startup = self.loop.create_task(self.lifespan.startup())
            await asyncio.wait({startup, self.done}, return_when=asyncio.FIRST_COMPLETED)
            if not startup.done():
                log("headrace: stopped during ASGI lifespan startup")
                startup.cancel()
                return 0
            if not startup.result():
                return FAILED_APP_CODE
        if self.stopping:
            # Stopped while starting up: what started up still shuts down.
            if self.lifespan is not None:
                await self.lifespan.shutdown()
            return 0
        native._asgi_ready(True)
        for l in self.listeners:
            self.loop.add_reader(l.sock.fileno(), self.accept, l)
        self.loop.call_later(1.0, self.tick)
        await self.done
        if self.lifespan is not None:
            await self.lifespan.shutdown()
        return 0

    def accept(self, l: Listener) -> None:
        for _ in range(8):
            if self.stopping:
                return
            try:
                sock, addr = l.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log(f"headrace: accept failed: {e}")
                return
            self.adopt(sock, addr, l)

    def adopt(self, sock, addr, l: Listener) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = (addr[0].removeprefix("::ffff:"), addr[1])
        else:
            client = None
        c = Conn(self, sock, l, client)
        self.conns.add(c)
        c.on_readable()

    def stop(self) -> None:
        """SIGTERM, a retirement or a replaced master: stop taking requests, finish those
        running, then lifespan shutdown."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_since = time.monotonic()
        # Open WebSockets get a close frame: 1012 on a reload (read from `ready`, which the
        # master clears first), else 1001; so this comes before `_asgi_ready(False)`.
        _asgi_ws.going_away(self)
        native._asgi_ready(False)
        try:
            self.loop.remove_reader(self.stop_fd)
        except (ValueError, OSError):
            pass
        for l in self.listeners:
            self.loop.remove_reader(l.sock.fileno())
            if l.link:
                # Refuse new connects from the router, then take those already queued.
                try:
                    l.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                while True:
                    try:
                        sock, addr = l.sock.accept()
                    except OSError:
                        break
                    self.adopt(sock, addr, l)
        for c in list(self.conns):
            if c.request is None and not c.link:
                c.close()
        self.check_done()

    def check_done(self) -> None:
        if self.stopping and not self.conns and not self.websockets and not self.done.done():
            self.done.set_result(None)

    def tick(self) -> None:
        self.loop.call_later(1.0, self.tick)
        now = time.monotonic()
        for c in list(self.conns):
            c.sweep(now)
        if not self.stopping and native._asgi_periodic():
            self.stop()
        self.check_done()


class Lifespan:
    def __init__(self, server: Server):
        self.server = server
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.supported = True

    async def run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.server.state,
        }
        try:
            await self.server.app(scope, self.inbox.get, self.send)
        except BaseException as e:  # noqa: BLE001 - any failure of the app is logged
            if self.server.lifespan_mode == "on" or not isinstance(e, Exception):
                log("headrace: ASGI lifespan failed:\n" + traceback.format_exc().rstrip())
            else:
                log(f"headrace: the ASGI app does not support lifespan ({e!r}); serving without it")
            self.supported = False
            await self.outbox.put({"type": "lifespan.unsupported"})
        else:
            # An app that returns at once ignores lifespan (as `if scope["type"] != "http":
            # return` does); after startup, it simply has nothing to do at shutdown.
            self.supported = False
            await self.outbox.put({"type": "lifespan.unsupported"})

    async def send(self, message) -> None:
        await self.outbox.put(message)

    async def startup(self) -> bool:
        self.task = self.server.loop.create_task(self.run())
        await self.inbox.put({"type": "lifespan.startup"})
        msg = await self.outbox.get()
        kind = msg.get("type")
        if kind == "lifespan.startup.complete":
            return True
        if kind == "lifespan.startup.failed":
            log(f"headrace: ASGI lifespan startup failed: {msg.get('message', '')}")
            return False
        if kind == "lifespan.unsupported":
            if self.server.lifespan_mode == "auto":
                self.server.lifespan = None
                return True
            return False  # `run` logged the app's failure
        log(f"headrace: ASGI lifespan startup failed: unexpected {kind!r}")
        return False

    async def shutdown(self) -> None:
        if not self.supported or self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        msg = await self.outbox.get()
        if msg.get("type") == "lifespan.shutdown.failed":
            log(f"headrace: ASGI lifespan shutdown failed: {msg.get('message', '')}")


class Conn:
    __slots__ = (
        "buf",
        "client",
        "closed",
        "drained",
        "fd",
        "head_started",
        "last_active",
        "link",
        "listener",
        "loop",
        "out",
        "reading",
        "request",
        "server",
        "sock",
    )

    def __init__(self, server: Server, sock, listener: Listener, client):
        self.server = server
        self.loop = server.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.listener = listener
        self.client = client
        self.link = listener.link
        self.buf = bytearray()
        self.request: Request | None = None
        self.closed = False
        self.out = bytearray()
        self.drained: asyncio.Future | None = None
        self.last_active = time.monotonic()
        self.head_started: float | None = None
        self.reading = True
        self.loop.add_reader(self.fd, self.on_readable)

    # -- reading

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
        self.last_active = time.monotonic()
        if self.head_started is None and self.request is None:
            self.head_started = self.last_active
        self.buf += data
        if self.request is not None:
            self.request.more_data()
            if len(self.buf) > PAUSE_ABOVE:
                self.pause()
        else:
            self.process()

    def pause(self) -> None:
        if self.reading and not self.closed:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume(self) -> None:
        if not self.reading and not self.closed:
            self.reading = True
            self.loop.add_reader(self.fd, self.on_readable)

    def process(self) -> None:
        """Start the next request in the buffer, if its head is complete."""
        if self.closed or self.request is not None:
            return
        if not self.buf:
            self.head_started = None
            if self.server.stopping and not self.link:
                self.close()
            return
        if self.server.stopping and not self.link:
            self.close()
            return
        parsed = native._asgi_parse(bytes(self.buf), self.listener.uwsgi)
        if parsed is None:
            return
        if parsed[0] < 0:
            self.reject(parsed[1], parsed[2], parsed[3])
            return
        del self.buf[: parsed[0]]
        self.head_started = None
        if _asgi_ws.is_upgrade(parsed[4]) and not (self.link and parsed[5][2]):
            # WebSocket (ASGI `websocket` scope): the socket leaves this Conn for good and
            # belongs to headrace._asgi_ws from here on (never a pooled router link, which
            # says keep-alive: the router tunnels upgrades over a connection of their own).
            # Port note: the handoff takes plain things: (server, socket object, listener,
            # client address, parsed head tuple, bytes read after the head); the socket must
            # no longer be registered on the loop.
            sock, leftover = self.sock, bytes(self.buf)
            if self.reading:
                self.loop.remove_reader(self.fd)
            self.sock, self.closed, self.reading = None, True, False
            self.server.conns.discard(self)
            _asgi_ws.handoff(self.server, sock, self.listener, self.client, parsed, leftover)
            return
        self.resume()
        self.request = Request(self, parsed)
        self.request.start()

    def reject(self, status: int, response: bytes, reason: str) -> None:
        addr = self.client[0] if self.client else "unix socket"
        text = REASONS.get(status, b"").decode()
        log(f"headrace: {status} {text} for {addr}: {reason}")
        try:
            self.sock.send(response)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close()

    def sweep(self, now: float) -> None:
        if self.request is not None:
            # A body or a response stalled past --socket-timeout ends the connection, as the
            # WSGI front's read and write timeouts do.
            r = self.request
            stalled = self.out or (r.waiter is not None and not r.body_done)
            if stalled and now - self.last_active > self.server.socket_timeout:
                log(
                    f"headrace: {r.method} {r.raw_target.decode('latin-1')}: client stalled "
                    f"for more than --socket-timeout, closing"
                )
                self.out.clear()
                self.loop.remove_writer(self.fd)
                self.lost()
            return
        if self.head_started is not None:
            if now - self.head_started > self.server.socket_timeout:
                self.reject(
                    408,
                    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
                    b"Content-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n",
                    "request head not received within --socket-timeout",
                )
        elif self.server.stopping:
            if now - max(self.last_active, self.server.stop_since) > LINK_IDLE_ON_STOP:
                self.close()
        elif now - self.last_active > self.server.keepalive:
            self.close()

    def lost(self) -> None:
        """The client closed its side or the connection broke."""
        if self.request is not None:
            self.request.disconnected()
            self.closed = True
            self.loop.remove_reader(self.fd)
            if self.drained is not None and not self.drained.done():
                self.drained.set_result(None)
            # The socket closes when the request's task ends.
        else:
            self.close()

    def close(self) -> None:
        if self.sock is None:
            return
        if self.reading and not self.closed:
            self.loop.remove_reader(self.fd)
        if self.out:
            self.loop.remove_writer(self.fd)
        self.closed = True
        self.reading = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.sock.close()
        self.sock = None
        self.server.conns.discard(self)
        self.server.check_done()

    # -- writing

    def write(self, data) -> bool:
        """Write now what the socket takes; `False`: the rest is queued (await `drain`)."""
        if self.closed:
            raise ClientDisconnected("the client went away")
        if self.out:
            self.out += data
            return False
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self.lost()
            raise ClientDisconnected(str(e)) from e
        if n == len(data):
            return True
        self.out += memoryview(data)[n:]
        self.loop.add_writer(self.fd, self.on_writable)
        return False

    async def drain(self) -> None:
        while self.out and not self.closed:
            self.drained = self.loop.create_future()
            await self.drained
        if self.closed:
            raise ClientDisconnected("the client went away")

    def on_writable(self) -> None:
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.out.clear()
            self.loop.remove_writer(self.fd)
            self.lost()
            return
        del self.out[:n]
        self.last_active = time.monotonic()
        if not self.out:
            self.loop.remove_writer(self.fd)
            if self.drained is not None and not self.drained.done():
                self.drained.set_result(None)


class Request:
    __slots__ = (
        "body_bytes",
        "body_done",
        "body_kind",
        "body_left",
        "body_sent_final",
        "chunked",
        "chunked_out",
        "close_after",
        "complete",
        "conn",
        "continue_sent",
        "exception",
        "expect_continue",
        "gone",
        "head_bytes",
        "head_only",
        "header_count",
        "headers",
        "keep_alive",
        "method",
        "pending_head",
        "raw_target",
        "scope",
        "start_micros",
        "start_ms",
        "started",
        "status",
        "t0",
        "version",
        "waiter",
        "write_error",
    )

    def __init__(self, conn: Conn, parsed):
        (_, method, target, version, headers, framing, extra) = parsed
        body_kind, length, keep_alive, expect = framing
        client, server, scheme, root_path = extra
        self.conn = conn
        self.method = method
        self.raw_target = target
        self.version = version
        self.headers = headers
        self.body_kind = body_kind
        self.body_left = length
        self.chunked = native.AsgiChunked() if body_kind == 2 else None
        self.body_done = body_kind == 0
        self.body_sent_final = False
        self.keep_alive = keep_alive and not (conn.server.stopping and not conn.link)
        self.expect_continue = expect
        self.continue_sent = False
        self.waiter: asyncio.Future | None = None
        self.gone = False
        self.started = False
        self.complete = False
        self.status = 0
        self.chunked_out = False
        self.close_after = not self.keep_alive
        self.head_bytes = 0
        self.body_bytes = 0
        self.header_count = 0
        self.exception = False
        self.write_error = False
        self.head_only = method == "HEAD"
        self.pending_head: list = []
        path_part, _, query = target.partition(b"?")
        if path_part.startswith((b"http://", b"https://")):
            # absolute-form: the path starts after the authority.
            slash = path_part.find(b"/", path_part.find(b"//") + 2)
            path_part = path_part[slash:] if slash >= 0 else b"/"
        l = conn.listener
        if scheme is None:
            scheme = "http"
        if client is None:
            client = conn.client
        if server is None:
            server = l.server
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.5"},
            "http_version": version,
            "method": method,
            "scheme": scheme,
            "path": unquote_to_bytes(path_part).decode("utf-8", "surrogateescape"),
            "raw_path": path_part,
            "query_string": query,
            "root_path": root_path or "",
            "headers": headers,
            "client": client,
            "server": server,
            "state": dict(conn.server.state),
            "extensions": {},
        }

    def start(self) -> None:
        self.t0 = time.monotonic()
        now = time.time()
        self.start_micros = int(now * 1_000_000)
        self.start_ms = int(now * 1000)
        server = self.conn.server
        server.running.append(self)
        if native._asgi_begin(self.method.encode(), self.raw_target):
            self.keep_alive = False
            self.close_after = True
        server.loop.create_task(self.run())

    async def run(self) -> None:
        server = self.conn.server
        try:
            await server.app(self.scope, self.receive, self.send)
        except Exception:  # noqa: BLE001 - an app exception is a 500, the worker lives on
            self.exception = True
            log(
                f"headrace: exception in ASGI app for {self.method} "
                f"{self.raw_target.decode('latin-1')}:\n" + traceback.format_exc().rstrip()
            )
            if self.head_bytes == 0 and not self.gone:
                # Nothing was written yet (a start without a body counts as nothing).
                self.started = False
                await self.error_500()
            else:
                self.close_after = True
        except asyncio.CancelledError:
            self.close_after = True
        else:
            if not self.started and not self.gone:
                log("headrace: the ASGI app returned without a response")
                await self.error_500()
            elif not self.complete:
                self.close_after = True
        finally:
            self.finish()

    async def error_500(self) -> None:
        try:
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await self.send({"type": "http.response.body", "body": b"Internal Server Error\n"})
        except OSError:
            pass

    def finish(self) -> None:
        conn = self.conn
        server = conn.server
        server.running.remove(self)
        oldest = server.running[0] if server.running else None
        h = {}
        for k, v in self.headers:
            if k in (b"host", b"user-agent", b"referer", b"content-length"):
                h[k] = v.decode("latin-1")
        remote = self.scope["client"][0] if self.scope["client"] else ""
        try:
            length = int(h.get(b"content-length", "0"))
        except ValueError:
            length = 0
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
                (self.exception, self.write_error, self.gone and not self.complete),
                (self.method.encode(), self.raw_target, "HTTP/" + self.version, remote),
                (h.get(b"host", ""), h.get(b"user-agent", ""), h.get(b"referer", ""), length),
            ),
            (oldest.start_ms, oldest.method.encode(), oldest.raw_target) if oldest else None,
        )
        conn.request = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.cancel()
        if conn.closed or self.gone:
            conn.close()
            return
        if self.close_after or not self.body_done:
            # A body the app did not read would be taken for the next request.
            self.conn.loop.create_task(self.close_when_flushed())
            return
        conn.last_active = time.monotonic()
        conn.resume()
        if conn.out:
            conn.loop.create_task(self.then_next())
        else:
            conn.process()

    async def then_next(self) -> None:
        try:
            await self.conn.drain()
        except OSError:
            self.conn.close()
            return
        self.conn.process()

    async def close_when_flushed(self) -> None:
        conn = self.conn
        try:
            await conn.drain()
            if conn.sock is not None:
                conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        conn.close()

    # -- receive

    def take_body(self) -> bytes:
        """Body bytes already buffered (and mark the end when reached)."""
        buf = self.conn.buf
        if self.body_done or not buf:
            return b""
        if self.chunked is None:
            n = min(self.body_left, len(buf))
            data = bytes(buf[:n])
            del buf[:n]
            self.body_left -= n
            if self.body_left == 0:
                self.body_done = True
            return data
        consumed, data, done = self.chunked.feed(bytes(buf))
        del buf[:consumed]
        if done:
            self.body_done = True
        return data

    def more_data(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def disconnected(self) -> None:
        self.gone = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def receive(self):
        while True:
            if self.gone:
                return {"type": "http.disconnect"}
            if not self.body_sent_final:
                try:
                    data = self.take_body()
                except ValueError as e:
                    _status, reason = e.args[0]
                    log(f"headrace: bad request body: {reason}")
                    self.close_after = True
                    self.gone = True
                    return {"type": "http.disconnect"}
                if data or self.body_done:
                    if self.body_done:
                        self.body_sent_final = True
                    self.conn.resume()
                    return {"type": "http.request", "body": data, "more_body": not self.body_done}
                if self.expect_continue and not self.continue_sent and self.head_bytes == 0:
                    self.continue_sent = True
                    try:
                        self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    except OSError:
                        pass
                if self.conn.closed:
                    self.gone = True
                    continue
                self.conn.resume()
            elif self.complete:
                # The response is sent: nothing more will come.
                return {"type": "http.disconnect"}
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    # -- send

    async def send(self, message) -> None:
        kind = message["type"]
        if self.gone or self.conn.closed:
            self.gone = True
            raise ClientDisconnected("the client went away")
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            self.pending_head = list(message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            raise RuntimeError("http.response.body after the response ended")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        out = bytearray()
        if self.head_bytes == 0:
            out += self.build_head(len(body), more)
            self.head_bytes = len(out)
        if not self.head_only:
            if self.chunked_out:
                if body:
                    out += b"%x\r\n" % len(body)
                    out += body
                    out += b"\r\n"
                if not more:
                    out += b"0\r\n\r\n"
            else:
                out += body
            self.body_bytes += len(body)
        if not more:
            self.complete = True
            self.more_data()
        if out:
            try:
                if not self.conn.write(out):
                    await self.conn.drain()
            except OSError:
                self.write_error = True
                self.gone = True
                raise

    def build_head(self, first_len: int, more: bool) -> bytes:
        status = self.status
        headers = self.pending_head
        has_length = False
        chunked = False
        for name, value in headers:
            n = name.lower()
            if n == b"content-length":
                has_length = True
            elif n == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif n == b"connection" and b"close" in value.lower():
                self.close_after = True
        no_body = status < 200 or status in (204, 304)
        # A uwsgi-protocol peer other than headrace's router (nginx's uwsgi_pass) reads the
        # body until the connection closes and does not decode chunks.
        plain_uwsgi = self.conn.listener.uwsgi and not self.keep_alive
        extra = []
        if not has_length and not chunked and not no_body:
            if not more:
                extra.append((b"content-length", b"%d" % first_len))
            elif self.version == "1.1" and not plain_uwsgi:
                extra.append((b"transfer-encoding", b"chunked"))
                self.chunked_out = True
            else:
                self.close_after = True
        if chunked:
            self.chunked_out = True
        if self.conn.server.stopping and not self.conn.link:
            self.close_after = True
        if self.close_after and not plain_uwsgi:
            extra.append((b"connection", b"close"))
        elif self.version == "1.0":
            extra.append((b"connection", b"keep-alive"))
        self.header_count = len(headers) + len(extra)
        reason = REASONS.get(status, b"")
        lines = [b"HTTP/%s %d %s\r\n" % (self.version.encode(), status, reason)]
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (bytes(name), bytes(value)))
        for name, value in extra:
            lines.append(b"%s: %s\r\n" % (name, value))
        lines.append(b"\r\n")
        return b"".join(lines)


REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    422: b"Unprocessable Content",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}
