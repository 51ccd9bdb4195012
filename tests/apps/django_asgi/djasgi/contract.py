"""The project behind a small lifespan wrapper, for gunicorn's framework contract (Django has no
lifespan of its own: `get_asgi_application()` refuses the scope, as gunicorn's Django app in
tests/docker/asgi_framework_compat works around the same way). The wrapper answers lifespan and
fills the ASGI `state`, which headrace copies into each request's scope; the contract views read
it from `request.scope["state"]`.

    --pythonpath tests/apps/django_asgi --module djasgi.contract:application"""

import time

from djasgi.asgi import application as django_application


class Counter:
    def __init__(self):
        self.value = 0


class Lifespan:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                scope["state"].update(
                    startup_called=True,
                    startup_time=time.time(),
                    custom_data={"initialized": True},
                    counter=Counter(),
                )
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


application = Lifespan(django_application)
