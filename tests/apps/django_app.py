"""A real Django app in one file: settings, views and URLs, for the framework tests."""

import hashlib
import json

import django
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import (
    FileResponse,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="headrace-tests-not-secret-" + "x" * 40,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATA_UPLOAD_MAX_MEMORY_SIZE=None,
    USE_TZ=True,
)
django.setup()


def index(request):
    return HttpResponse("hello from django", content_type="text/plain")


def post_json(request):
    data = json.loads(request.body)
    return JsonResponse({"received": data, "total": sum(data["numbers"])})


def post_form(request):
    return JsonResponse({"fields": {k: request.POST.getlist(k) for k in request.POST}})


def upload(request):
    f = request.FILES["file"]
    h = hashlib.sha256()
    size = 0
    for chunk in f.chunks():
        h.update(chunk)
        size += len(chunk)
    return JsonResponse({"size": size, "sha256": h.hexdigest(), "name": f.name,
                         "note": request.POST.get("note")})


def raw(request):
    data = request.body
    return JsonResponse({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def stream(request):
    return StreamingHttpResponse((f"line {i}\n" for i in range(20)), content_type="text/plain")


def source(request):
    return FileResponse(open(__file__, "rb"), content_type="text/x-python")


def boom(request):
    raise RuntimeError("django-boom-marker")


urlpatterns = [
    path("", index),
    path("json", post_json),
    path("form", post_form),
    path("upload", upload),
    path("raw", raw),
    path("stream", stream),
    path("source", source),
    path("boom", boom),
]

application = get_wsgi_application()
