from django.urls import path

from djasgi import views

urlpatterns = [
    path("async/", views.async_view),
    path("sync/", views.sync_view),
    path("echo/", views.echo),
    path("stream/", views.stream),
    path("boom/", views.boom),
    path("pid/", views.pid),
]
