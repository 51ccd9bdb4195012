"""ASGI 3 apps in shapes the detection must see through (tests/test_asgi.py)."""

import functools


async def _hello(greeting, scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": greeting.encode()})


# A partial of a coroutine function: detected as ASGI.
partial_app = functools.partial(_hello, "partial")


class Instance:
    async def __call__(self, scope, receive, send):
        await _hello("instance", scope, receive, send)


# An instance whose __call__ is a coroutine function: detected as ASGI.
instance_app = Instance()


def sync_wrapper(scope, receive, send):
    """A plain function returning the coroutine: ASGI only with --interface asgi."""
    return _hello("wrapped", scope, receive, send)
