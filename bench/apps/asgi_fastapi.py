"""A FastAPI app with one JSON endpoint built from pydantic models (scenarios asgi-fastapi,
asgi-fastapi-free): the same 20 items as flask_app.py, validated and serialized by FastAPI's
`response_model` on every request; every path answers the same JSON."""

from fastapi import FastAPI
from pydantic import BaseModel


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]


class Items(BaseModel):
    count: int
    items: list[Item]


ITEMS = [Item(id=i, name=f"item {i}", price=i * 1.25, tags=["a", "b"]) for i in range(20)]

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/", response_model=Items)
@app.get("/{path:path}", response_model=Items)
async def items(path: str = "") -> Items:
    return Items(count=len(ITEMS), items=ITEMS)


application = app
