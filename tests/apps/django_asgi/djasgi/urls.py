from django.urls import path

from djasgi import contract_views as c
from djasgi import views

urlpatterns = [
    path("async/", views.async_view),
    path("sync/", views.sync_view),
    path("echo/", views.echo),
    path("stream/", views.stream),
    path("boom/", views.boom),
    path("pid/", views.pid),
    # gunicorn's framework contract (djasgi.contract serves these with a lifespan)
    path("health", c.health),
    path("scope", c.scope),
    path("echo", c.echo),
    path("headers", c.headers),
    path("status/<int:code>", c.status),
    path("streaming", c.streaming),
    path("sse", c.sse),
    path("large", c.large),
    path("delay", c.delay),
    path("lifespan/state", c.lifespan_state),
    path("lifespan/counter", c.lifespan_counter),
]
