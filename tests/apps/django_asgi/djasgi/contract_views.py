"""gunicorn's framework contract endpoints as Django views (see djasgi.contract)."""

import asyncio
import json

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def health(request):
    return HttpResponse("OK", content_type="text/plain")


async def scope(request):
    s = request.scope
    return JsonResponse(
        {
            "type": s["type"],
            "asgi": s["asgi"],
            "http_version": s["http_version"],
            "method": s["method"],
            "scheme": s["scheme"],
            "path": s["path"],
            "root_path": s.get("root_path", ""),
            "raw_path": (s.get("raw_path") or b"").decode("latin-1"),
            "query_string": s["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]],
            "server": list(s["server"]) if s.get("server") else None,
            "client": list(s["client"]) if s.get("client") else None,
        }
    )


@csrf_exempt
async def echo(request):
    return HttpResponse(request.body,
                        content_type=request.headers.get("content-type",
                                                         "application/octet-stream"))


def headers(request):
    return JsonResponse({k.lower(): v for k, v in request.headers.items()})


def status(request, code):
    return HttpResponse(f"Status: {code}", status=code, content_type="text/plain")


async def streaming(request):
    async def lines():
        for i in range(10):
            yield f"chunk-{i}\n"
            await asyncio.sleep(0.01)

    return StreamingHttpResponse(lines(), content_type="text/plain")


async def sse(request):
    async def events():
        for i in range(5):
            yield f"event: message\ndata: {json.dumps({'count': i})}\n\n"
            await asyncio.sleep(0.01)
        yield "event: done\ndata: {}\n\n"

    return StreamingHttpResponse(events(), content_type="text/event-stream")


def large(request):
    size = min(int(request.GET.get("size", "1024")), 10 << 20)
    return HttpResponse(b"x" * size, content_type="application/octet-stream")


async def delay(request):
    seconds = min(float(request.GET.get("seconds", "1")), 10.0)
    await asyncio.sleep(seconds)
    return JsonResponse({"delayed": seconds})


def lifespan_state(request):
    st = request.scope["state"]
    return JsonResponse({"startup_called": st["startup_called"],
                         "startup_time": st["startup_time"],
                         "custom_data": st["custom_data"],
                         "counter": st["counter"].value})


def lifespan_counter(request):
    counter = request.scope["state"]["counter"]
    counter.value += 1
    return JsonResponse({"counter": counter.value})
