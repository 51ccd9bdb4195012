"""Starlette's FileResponse behind a wrapper that notes the message types each response
sent, so a test can see the file went out as `http.response.pathsend`.

    /file?name=NAME   FileResponse(NAME) (absolute, or relative to the worker's cwd)
    /sent             the message types of the previous /file response, as JSON
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

SENT: list[str] = []


async def file(request: Request):
    return FileResponse(request.query_params["name"], media_type="text/plain")


async def sent(request: Request):
    return JSONResponse(SENT)


inner = Starlette(routes=[Route("/file", file, methods=["GET", "HEAD"]), Route("/sent", sent),
                          Route("/", sent)])


async def application(scope, receive, send):
    if scope["type"] != "http" or scope["path"] != "/file":
        return await inner(scope, receive, send)
    SENT.clear()

    async def noting(message):
        SENT.append(message["type"])
        await send(message)

    await inner(scope, receive, noting)
