"""`--mount /PATH=APP` of ASGI 3 apps: one ASGI callable, built once when the apps load (by
`wsgi::load`), that hands each connection to the app of its mountpoint and runs every mounted
app's lifespan.

Which app (``http`` and ``websocket`` scopes):

1. A ``root_path`` that is itself a mountpoint names the app, the scope unchanged: nginx sent it
   as SCRIPT_NAME over the uwsgi protocol, and uWSGI picks the app by SCRIPT_NAME.
2. Else the longest mountpoint that starts the path below ``root_path``, on a segment boundary
   (``/blog`` takes ``/blog`` and ``/blog/x``, not ``/blogger``), picks the app, which gets a
   shallow copy of the scope with the mountpoint appended to ``root_path``; ``path`` stays whole,
   root_path included (ASGI 2.5, as Starlette's ``Mount`` does).
3. Else the app mounted at '' (the ``--module``/``--wsgi-file`` app), or a 404 (a WebSocket is
   denied with a 404 before it is accepted).

``--manage-script-name`` changes nothing here: ASGI's ``path`` always carries the mountpoint, so
both of uWSGI's ways (SCRIPT_NAME from nginx, or the mountpoint taken from the path) hold at once.

Lifespan: each app runs its own lifespan task, with its own queues, in mount order (shut down in
the reverse order), so each sees its own startup and shutdown. They share one ``state`` dict (the
worker's), which every request's scope copies: what an app puts there, its requests see. Under
``--lifespan auto`` an app that raises on the lifespan scope (or returns) before
``lifespan.startup.complete`` is served without lifespan, the others still start; under ``on``
that fails the startup. Any app's ``lifespan.startup.failed`` fails the startup with that app's
message, after the apps already started are shut down.
"""

from __future__ import annotations

import asyncio
import traceback

from headrace import _headrace as native

NOT_FOUND = b"no app is mounted here\n"
NOT_FOUND_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(NOT_FOUND)).encode()),
]


def log(line: str) -> None:
    native._asgi_log(line)


def make(apps, lifespan_mode: str):
    """`apps`: ``[(mountpoint, app)]`` in mount order, mountpoints without a trailing slash,
    '' for the default app; `lifespan_mode`: ``--lifespan`` (auto, on, off)."""
    by_point = dict(apps)
    default = by_point.get("")
    # Longest first: the first match is the longest mountpoint.
    table = sorted(((p, a) for p, a in apps if p), key=lambda pa: -len(pa[0]))

    async def dispatch(scope, receive, send):
        kind = scope["type"]
        if kind == "lifespan":
            await lifespan(apps, lifespan_mode, scope, receive, send)
            return
        root = scope.get("root_path", "").rstrip("/")
        if root:
            app = by_point.get(root)
            if app is not None:
                await app(scope, receive, send)
                return
        path = scope["path"]
        rest = path[len(root) :] if root and path.startswith(root) else path
        for point, app in table:
            n = len(point)
            if rest.startswith(point) and (len(rest) == n or rest[n] == "/"):
                scope = dict(scope)
                scope["root_path"] = root + point
                await app(scope, receive, send)
                return
        if default is not None:
            await default(scope, receive, send)
        elif kind == "http":
            await send({"type": "http.response.start", "status": 404, "headers": NOT_FOUND_HEADERS})
            await send({"type": "http.response.body", "body": NOT_FOUND})
        elif kind == "websocket":
            if "websocket.http.response" in scope.get("extensions", {}):
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": 404,
                        "headers": NOT_FOUND_HEADERS,
                    }
                )
                await send({"type": "websocket.http.response.body", "body": NOT_FOUND})
            else:
                await send({"type": "websocket.close", "code": 1000})

    return dispatch


class Sub:
    """One mounted app's lifespan: its task and its two queues. The app's `send` puts on
    `outbox`; `None` there means the app's lifespan call ended (returned or raised)."""

    __slots__ = ("app", "error", "inbox", "outbox", "point", "task", "trace")

    def __init__(self, point: str, app) -> None:
        self.point = point
        self.app = app
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.error: BaseException | None = None
        self.trace = ""

    @property
    def name(self) -> str:
        return f"the app mounted at '{self.point}'"

    async def run(self, scope) -> None:
        try:
            await self.app(scope, self.inbox.get, self.outbox.put)
        except BaseException as e:  # noqa: BLE001 - told to the dispatcher, which logs it
            self.error = e
            self.trace = traceback.format_exc().rstrip()
        await self.outbox.put(None)

    async def ask(self, kind: str):
        await self.inbox.put({"type": kind})
        return await self.outbox.get()


async def lifespan(apps, mode: str, scope, receive, send) -> None:
    await receive()  # lifespan.startup
    started: list[Sub] = []
    loop = asyncio.get_running_loop()
    for point, app in apps:
        sub = Sub(point, app)
        # A shallow copy: the same `state` dict for every app.
        sub.task = loop.create_task(sub.run(dict(scope)))
        reply = await sub.ask("lifespan.startup")
        kind = None if reply is None else reply.get("type")
        if kind == "lifespan.startup.complete":
            started.append(sub)
            continue
        if kind == "lifespan.startup.failed":
            failure = f"{sub.name}: {reply.get('message', '')}"
        elif reply is None and mode == "auto":
            # Ended before startup completed: no lifespan support (as `_asgi.Lifespan` decides
            # for one app); the other apps still start.
            if isinstance(sub.error, Exception):
                log(
                    f"headrace: {sub.name} does not support lifespan ({sub.error!r}); "
                    "serving it without"
                )
            elif sub.error is not None:
                log(f"headrace: ASGI lifespan of {sub.name} failed:\n{sub.trace}")
            continue
        elif reply is None:
            if sub.error is not None:
                log(f"headrace: ASGI lifespan of {sub.name} failed:\n{sub.trace}")
                failure = f"{sub.name}: {sub.error!r} (--lifespan on)"
            else:
                failure = f"{sub.name} does not support lifespan (--lifespan on)"
        else:
            failure = f"{sub.name}: unexpected {kind!r}"
        await shutdown(started)
        await send({"type": "lifespan.startup.failed", "message": failure})
        return
    if not started:
        # No app has a lifespan: the worker serves without one (`_asgi.Lifespan`, auto).
        return
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    failures = await shutdown(started)
    if failures:
        await send({"type": "lifespan.shutdown.failed", "message": "; ".join(failures)})
    else:
        await send({"type": "lifespan.shutdown.complete"})


async def shutdown(started: list[Sub]) -> list[str]:
    """Shut the started apps down, the last started first; their failures, as messages."""
    failures = []
    for sub in reversed(started):
        reply = await sub.ask("lifespan.shutdown")
        if reply is None:
            if sub.error is not None:
                log(f"headrace: ASGI lifespan of {sub.name} failed:\n{sub.trace}")
                failures.append(f"{sub.name}: {sub.error!r}")
        elif reply.get("type") == "lifespan.shutdown.failed":
            failures.append(f"{sub.name}: {reply.get('message', '')}")
    return failures
