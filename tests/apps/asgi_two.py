"""An ASGI 2 app (a class instantiated with the scope): headrace refuses it at startup."""


class application:
    def __init__(self, scope):
        self.scope = scope

    async def __call__(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2"})
