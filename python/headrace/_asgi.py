"""ASGI 3 serving for one headrace worker: one event loop in the worker's main thread.

This module keeps what is naturally Python: the loop's setup and stop logic, accepting, and
the lifespan protocol. Each accepted socket is handed to headrace's Rust connection
(``native.AsgiHub.adopt``), which registers it on the loop with ``add_reader`` /
``add_writer`` (no asyncio Protocol, no thread hand-off), parses heads with the WSGI front's
parser and limits, builds the scope, writes responses, and keeps the bookkeeping (counters,
harakiri clock, request log line, recycling, ``--limit-concurrency``). Every request runs
as an asyncio Task whose coroutine is ``native.AsgiRequest``: it drives the app's coroutine and
ends the request on the Rust side (a 500 when the app raised before answering, the log line,
the next request on the connection).
"""

from __future__ import annotations

import asyncio
import os
import socket
import traceback

from headrace import _asgi_ws
from headrace import _headrace as native

FAILED_APP_CODE = 22
# How often an ASGI worker looks for overdue requests (--harakiri, uwsgi.set_user_harakiri),
# in seconds.
HARAKIRI_TICK = 0.1


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
    article = "an" if kind == "asyncio" else "a"
    log(
        f"headrace: worker {opts['worker_id']} (pid: {os.getpid()}) serves ASGI on "
        f"{article} {kind} loop"
    )
    try:
        return loop.run_until_complete(server.main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


class Listener:
    __slots__ = ("index", "link", "server", "sock", "unix", "uwsgi")

    def __init__(self, index, fd, kind, name, port, unix, link):
        self.index = index
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
        self.listeners = [Listener(i, *l) for i, l in enumerate(listeners)]
        self.stop_fd = stop_fd
        self.lifespan_mode = opts["lifespan"]
        self.harakiri_limit = opts["harakiri"]
        self.worker_id = opts["worker_id"]
        self.state: dict = {}
        self.stopping = False
        self.done = loop.create_future()
        self.lifespan: Lifespan | None = None
        self.hub = native.AsgiHub(
            loop,
            app,
            self,
            ClientDisconnected,
            [(l.uwsgi, l.link, l.server) for l in self.listeners],
            opts,
        )
        self.hub.set_state(self.state)
        # WebSockets (headrace._asgi_ws): the hub hands every `Upgrade: websocket` request
        # to `upgrade` below. Open sessions are in flight until their socket closes.
        self.websockets: set = set()
        self.ws_opts = opts
        self.socket_timeout = opts["socket_timeout"]
        self.hub.set_websocket(True)

    def oldest_running(self):
        """`(start_ms, method, uri)` of the oldest HTTP request running (in the hub), or
        None: where the harakiri clock goes back to when a WebSocket session ends."""
        return self.hub.oldest()

    def upgrade(self, fd: int, index: int, head: tuple, leftover: bytes) -> None:
        """An `Upgrade: websocket` request: the hub no longer manages `fd` (it is ours to
        close); `head` is the `_asgi_parse` tuple, `leftover` the bytes read after the head."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        client = None
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                addr = sock.getpeername()
                client = (addr[0].removeprefix("::ffff:"), addr[1])
            except OSError:
                pass
        _asgi_ws.handoff(self, sock, self.listeners[index], client, head, leftover)

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
        # Always: a request may set its own limit with uwsgi.set_user_harakiri.
        self.loop.call_later(HARAKIRI_TICK, self.harakiri)
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
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = (addr[0].removeprefix("::ffff:"), addr[1])
        else:
            client = None
        sock.setblocking(False)
        self.hub.adopt(sock.detach(), l.index, client)

    def stop(self) -> None:
        """SIGTERM, a retirement or a replaced master: stop taking requests, finish those
        running, then lifespan shutdown."""
        if self.stopping:
            return
        self.stopping = True
        # Open WebSockets get a close frame: 1012 on a reload (read from `ready`, which the
        # master clears first), else 1001; so this comes before `_asgi_ready(False)`.
        _asgi_ws.going_away(self)
        native._asgi_ready(False)
        try:
            self.loop.remove_reader(self.stop_fd)
        except (ValueError, OSError):
            pass
        self.hub.stop()
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
        self.check_done()

    def check_done(self) -> None:
        if (
            self.stopping
            and not self.hub.connections()
            and not self.websockets
            and not self.done.done()
        ):
            self.done.set_result(None)

    def harakiri(self) -> None:
        """--harakiri, and a request's own uwsgi.set_user_harakiri: cancel the task of every
        request past its limit, after logging where it waits. The request ends as cancelled (a
        504 when it had not answered yet); the worker is killed only if it is still running
        `HARAKIRI_CANCEL_GRACE` later (by the master for --harakiri, by the worker's watchdog
        thread for a user harakiri)."""
        self.loop.call_later(HARAKIRI_TICK, self.harakiri)
        for task, method, uri, secs, user in self.hub.harakiri(self.harakiri_limit):
            where = task_stack(task)
            why = (
                f"uwsgi.set_user_harakiri({user})" if user
                else f"--harakiri {self.harakiri_limit:g}"
            )
            log(
                f"HARAKIRI: worker {self.worker_id} (pid {os.getpid()}) cancels "
                f"{method.decode('latin-1')} {uri.decode('latin-1')}, running {secs}s "
                f"({why}); its task was at:\n{where}"
            )
            task.cancel()
        for sid, user in self.hub.overdue_sessions():
            for session in self.websockets:
                if session.coro is not None and session.coro.id == sid and session.task:
                    log(
                        f"HARAKIRI: worker {self.worker_id} (pid {os.getpid()}) cancels "
                        f"WebSocket {session.raw_target.decode('latin-1')} "
                        f"(uwsgi.set_user_harakiri({user})); its task was at:\n"
                        f"{task_stack(session.task)}"
                    )
                    session.task.cancel()

    def tick(self) -> None:
        self.loop.call_later(1.0, self.tick)
        self.hub.sweep()
        if not self.stopping and native._asgi_periodic():
            self.stop()
        self.check_done()


def task_stack(task) -> str:
    """Where a suspended request task waits: its coroutines' frames, outermost first, down
    the `await` chain (what `Task.get_stack` cannot see through headrace's request coroutine),
    then the innermost thing awaited when it is not a coroutine (a Future, a sleep)."""
    frames = []
    aw = task.get_coro()
    for _ in range(100):
        frame = next((getattr(aw, a) for a in FRAME_ATTRS if getattr(aw, a, None)), None)
        if frame is not None and all(frame is not f for f, _ in frames):
            frames.append((frame, frame.f_lineno))
        nxt = next((getattr(aw, a) for a in AWAIT_ATTRS if getattr(aw, a, None) is not None), None)
        if nxt is None:
            break
        aw = nxt
    lines = traceback.StackSummary.extract(frames).format()
    if aw is not None and not any(hasattr(aw, a) for a in FRAME_ATTRS):
        # A Future's iterator says nothing of its Future: the task knows what it waits for.
        waited = getattr(task, "_fut_waiter", None)
        lines.append(f"  awaiting {waited if waited is not None else aw!r}\n")
    return "".join(lines).rstrip() or "  (no Python frame: the task had not started)"


FRAME_ATTRS = ("cr_frame", "gi_frame", "ag_frame")
AWAIT_ATTRS = ("cr_await", "gi_yieldfrom", "ag_await")


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
