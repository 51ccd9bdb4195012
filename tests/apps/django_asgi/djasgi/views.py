"""Async and sync views. Django runs a sync view in a thread (asgiref's sync_to_async), so the
sync view reports the thread it ran in next to the event loop's."""

import asyncio
import hashlib
import os
import threading

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


async def async_view(request):
    await asyncio.sleep(0)
    return JsonResponse(
        {
            "kind": "async",
            "loop_running": asyncio.get_running_loop().is_running(),
            "thread": threading.get_ident(),
            "main_thread": threading.main_thread().ident,
            "path": request.path,
            "query": request.GET.dict(),
        }
    )


def sync_view(request):
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    return JsonResponse(
        {
            "kind": "sync",
            "in_event_loop_thread": in_loop,
            "thread": threading.get_ident(),
            "main_thread": threading.main_thread().ident,
        }
    )


@csrf_exempt
async def echo(request):
    body = request.body
    return JsonResponse(
        {
            "method": request.method,
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": request.content_type,
        }
    )


async def stream(request):
    n = int(request.GET.get("n", "5"))

    async def parts():
        for i in range(n):
            await asyncio.sleep(0.01)
            yield f"part {i}\n".encode()

    return StreamingHttpResponse(parts(), content_type="text/plain")


async def boom(request):
    raise RuntimeError("django view exploded on purpose")


def pid(request):
    return HttpResponse(str(os.getpid()), content_type="text/plain")
