"""An ASGI app for tests/test_asgi_perf_paths.py: a request that holds its slot until a file
appears (for --limit-concurrency), a large response (backpressure against a slow reader), and
an echo of the scope path."""

import asyncio
import os


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/hold":
        gate = os.environ["ASGI_GATE_FILE"]
        with open(gate + ".started", "a") as f:  # noqa: ASYNC230 - a test marker
            f.write("x")
        for _ in range(400):
            if os.path.exists(gate):
                break
            await asyncio.sleep(0.025)
        body = b"released"
    elif path == "/big":
        size = int(scope["query_string"] or b"8388608")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            n = min(len(chunk), size - sent)
            await send({"type": "http.response.body", "body": chunk[:n], "more_body": True})
            sent += n
        await send({"type": "http.response.body", "body": b""})
        return
    elif path == "/no-suspend":
        # send() on a writable socket and receive() of a buffered body finish without
        # suspending: their awaitables stop at the first step.
        steps = []
        for aw in (
            receive(),
            send({"type": "http.response.start", "status": 200, "headers": []}),
            send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True}),
        ):
            it = aw.__await__()
            try:
                next(it)
                steps.append("suspended")
            except StopIteration as stop:
                steps.append(type(stop.value).__name__)
        await send({"type": "http.response.body", "body": " ".join(steps).encode()})
        return
    elif path == "/big-once":
        size = int(scope["query_string"] or b"8388608")
        body = b"y" * size
    else:
        body = path.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
