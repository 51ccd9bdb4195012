"""ASGI app for tests/test_router_asgi.py: many requests at once in one worker's loop behind
the router, and what the app sees when a client leaves. Records go to HR_RECORD."""

import asyncio
import os
from pathlib import Path
from urllib.parse import parse_qs

RECORD = Path(os.environ.get("HR_RECORD", "."))
# Per rendezvous name: how many arrived, and the event that opens when all have.
MEETINGS: dict[str, tuple[list[int], asyncio.Event]] = {}


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    q = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path == "/meet":
        body = await meet(q["name"], int(q["n"]), float(q.get("hold", "0")))
    elif path == "/pid":
        body = str(os.getpid())
    elif path == "/stream":
        await stream(q["tag"], send)
        return
    else:
        body = "not found"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body.encode()})


async def meet(name: str, n: int, hold: float) -> str:
    """'met <pid>' once `n` requests of this name are inside the app at once (the 'n'-th
    arrival opens the door and records `met-<name>`), 'alone <count>' after 10 s without.
    Each stays `hold` seconds more after the door opens."""
    count, door = MEETINGS.setdefault(name, ([0], asyncio.Event()))
    count[0] += 1
    if count[0] == n:
        (RECORD / f"met-{name}").write_text("met\n")
    if count[0] >= n:
        door.set()
    try:
        await asyncio.wait_for(door.wait(), 10)
    except asyncio.TimeoutError:
        return f"alone {count[0]}"
    await asyncio.sleep(hold)
    return f"met {os.getpid()}"


async def stream(tag: str, send) -> None:
    """400 chunks, one every 50 ms (20 s in all), until send() raises; records the count and
    how it ended."""
    sent, how = 0, "complete"
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for _ in range(400):
            await send({"type": "http.response.body", "body": b"chunk\n", "more_body": True})
            sent += 1
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b""})
    except OSError as e:
        how = type(e).__name__
    (RECORD / f"stream-{tag}").write_text(f"{sent} {how}\n")
