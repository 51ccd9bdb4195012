"""Real frameworks from PyPI on headrace: Flask and a single-file Django project."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests
from support import app


@pytest.fixture(scope="module", params=["flask", "django"])
def fw(request, headrace_module):
    pytest.importorskip(request.param)
    srv = headrace_module("--wsgi-file", app(f"{request.param}_app.py"), "--processes", "2")
    srv.framework = request.param
    return srv


def test_get(fw):
    r = requests.get(fw.url("/"), timeout=10)
    assert r.status_code == 200
    assert r.text == f"hello from {fw.framework}"


def test_json_post(fw):
    r = requests.post(fw.url("/json"), json={"numbers": [1, 2, 3.5], "name": "é"}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"received": {"numbers": [1, 2, 3.5], "name": "é"}, "total": 6.5}


def test_form_post(fw):
    r = requests.post(fw.url("/form"), data={"a": "1", "b": ["x", "y"], "c": "ü & ="},
                      timeout=10)
    assert r.status_code == 200
    assert r.json() == {"fields": {"a": ["1"], "b": ["x", "y"], "c": ["ü & ="]}}


@pytest.mark.slow
def test_upload_10mb_multipart(fw):
    data = os.urandom(10 * 1024 * 1024)
    r = requests.post(fw.url("/upload"), files={"file": ("big.bin", data)},
                      data={"note": "ten megabytes"}, timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                        "name": "big.bin", "note": "ten megabytes"}


@pytest.mark.slow
def test_upload_10mb_raw(fw):
    data = os.urandom(10 * 1024 * 1024)
    r = requests.post(fw.url("/raw"), data=data,
                      headers={"Content-Type": "application/octet-stream"}, timeout=60)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_upload_chunked_raw(fw):
    if fw.framework == "django":
        pytest.skip("Django reads request bodies by CONTENT_LENGTH only")
    parts = [os.urandom(100_000) for _ in range(10)]
    r = requests.post(fw.url("/raw"), data=iter(parts),
                      headers={"Content-Type": "application/octet-stream"}, timeout=60)
    data = b"".join(parts)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_streamed_response(fw):
    r = requests.get(fw.url("/stream"), timeout=10, stream=True)
    assert r.status_code == 200
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert r.content.decode() == "".join(f"line {i}\n" for i in range(20))


def test_404(fw):
    r = requests.get(fw.url("/no/such/page"), timeout=10)
    assert r.status_code == 404


def test_500_page_and_worker_lives(fw):
    r = requests.get(fw.url("/boom"), timeout=10)
    assert r.status_code == 500
    assert "boom-marker" not in r.text  # DEBUG is off: no traceback to the client
    for _ in range(4):
        assert requests.get(fw.url("/"), timeout=10).status_code == 200


def test_django_file_response(fw):
    if fw.framework != "django":
        pytest.skip("FileResponse is Django's")
    r = requests.get(fw.url("/source"), timeout=10)
    assert r.status_code == 200
    with open(app("django_app.py"), "rb") as f:
        assert r.content == f.read()


def test_keepalive_session(fw):
    with requests.Session() as s:
        for _ in range(5):
            assert s.get(fw.url("/"), timeout=10).status_code == 200
