"""Reloads on every front under load: direct HTTP (`--http-socket`), the router (`--http`) and
the uwsgi protocol (`--socket`), each with SIGHUP, `--touch-reload`, `--chain-reload` and
`--touch-chain-reload`, preloaded (the master re-execs) and `--lazy-apps`.

After each reload only new workers answer, every old worker (and, after a re-exec, the old
router) is gone, the master has exactly `processes` workers (+ 1 router), and not one request of
the load failed or waited for a timeout. Requests go on new connections, as in the issue that
found the router keeping old workers forever and losing requests in chain reloads.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import threading
import time
from collections import Counter

import pytest
from support import (
    APPS,
    build_request,
    free_port,
    pid_alive,
    wait_until,
)
from test_supervision import ChildSampler, live_children, touch_later

SUP = str(APPS / "supervised.py")
PROCESSES = 2


def uwsgi_get(path: str) -> bytes:
    pairs = [
        (b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", path.encode()),
        (b"PATH_INFO", path.encode()), (b"QUERY_STRING", b""),
        (b"SERVER_PROTOCOL", b"HTTP/1.1"), (b"SERVER_NAME", b"localhost"),
        (b"SERVER_PORT", b"80"), (b"REMOTE_ADDR", b"127.0.0.1"), (b"REMOTE_PORT", b"40000"),
        (b"HTTP_HOST", b"localhost"),
    ]
    body = b"".join(struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
                    for k, v in pairs)
    return struct.pack("<BHB", 0, len(body), 0) + body


def ask(port: int, front: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a new connection: (status, body). Raises on a broken answer."""
    raw = uwsgi_get(path) if front == "uwsgi" else build_request(
        "GET", path, headers=[("Connection", "close")])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise EOFError(f"no complete response head: {data[:200]!r}")
    status = int(head.split(b" ", 2)[1])
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and int(value) != len(body):
            raise EOFError(f"body of {len(body)} bytes, Content-Length {int(value)}")
    return status, body


class Load:
    """`clients` threads x `count` requests of /version on new connections, bounded by
    `limit` s; anything but a complete 200 is a failure, and so is a wait near the timeout."""

    def __init__(self, port: int, front: str, clients: int, count: int, limit: float = 60.0):
        self.port, self.front, self.count = port, front, count
        self.deadline = time.monotonic() + limit
        self.lock = threading.Lock()
        self.bodies: list[bytes] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    @property
    def done(self) -> int:
        with self.lock:
            return len(self.bodies) + len(self.failures)

    def _run(self) -> None:
        for _ in range(self.count):
            if time.monotonic() > self.deadline:
                break
            t0 = time.monotonic()
            try:
                status, body = ask(self.port, self.front, "/version", timeout=10)
                ok = status == 200 and time.monotonic() - t0 < 5
                what = body if ok else f"status {status} after {time.monotonic() - t0:.1f} s"
            except Exception as e:  # noqa: BLE001 - counted
                ok, what = False, f"{e!r} after {time.monotonic() - t0:.1f} s"
            with self.lock:
                (self.bodies if ok else self.failures).append(what)
            time.sleep(0.002)

    def join(self) -> None:
        for t in self.threads:
            t.join(max(0.0, self.deadline - time.monotonic()) + 20)
        assert not any(t.is_alive() for t in self.threads), "load threads did not finish"


FRONTS = ["direct", "router", "uwsgi"]
# Requests per load client: enough that the load outlasts the reload's start on a fast front
# (touch_later waits for a new mtime second) yet ends quickly afterwards.
LOAD_PER_CLIENT = 600
RELOADS = {
    # id: (extra args, trigger, chain)
    "sighup-reexec": ([], "hup", False),
    "sighup-lazy": (["--lazy-apps"], "hup", False),
    "chain-reexec": (["--chain-reload"], "hup", True),
    "chain-lazy": (["--lazy-apps", "--chain-reload"], "hup", True),
    "touch-reexec": (["--touch-reload", "{touch}"], "touch", False),
    "touch-chain-lazy": (["--lazy-apps", "--touch-chain-reload", "{touch}"], "touch", True),
}


def front_args(front: str, port: int) -> list[str]:
    return {"direct": ["--http-socket"], "router": ["--http"], "uwsgi": ["--socket"]}[front] + [
        f"127.0.0.1:{port}"]


def router_pids(srv) -> list[int]:
    return [int(x) for x in
            re.findall(r"spawned headrace http 1 \(pid: (\d+)\)", srv.log())]


@pytest.mark.parametrize("mode", list(RELOADS))
@pytest.mark.parametrize("front", FRONTS)
def test_reload_under_load(headrace, tmp_path, front, mode):
    extra, trigger, chain = RELOADS[mode]
    appfile = tmp_path / "reloadable.py"
    shutil.copy(SUP, appfile)
    touch = tmp_path / "reload.touch"
    touch.write_text("x")
    port = free_port()
    args = [a.replace("{touch}", str(touch)) for a in extra]
    srv = headrace(*front_args(front, port), "--wsgi-file", str(appfile), "--master",
                   "--processes", str(PROCESSES), *args, port=port, probe=None,
                   workers=PROCESSES, bind=False)
    master = srv.proc.pid
    wait_until(lambda: ask(port, front, "/version")[0] == 200, 10, "the first answer")
    routed = front == "router"
    old = live_children(master)
    old_router = set(router_pids(srv)) if routed else set()
    assert len(old) == PROCESSES + routed, old
    if trigger == "touch":
        time.sleep(1.5)  # the watcher has seen the first mtime; untouched, nothing happens
        assert live_children(master) == old, "reloaded although the file was not touched"
    sampler = ChildSampler(master)
    load = Load(port, front, clients=8, count=LOAD_PER_CLIENT, limit=60)
    try:
        wait_until(lambda: load.done >= 300, 30, "300 requests before the reload")
        text = appfile.read_text()
        appfile.write_text(text.replace('VERSION = "v1"', 'VERSION = "v2-after-reload"'))
        touch_later(appfile)
        before = load.done
        if trigger == "hup":
            os.kill(master, signal.SIGHUP)
        else:
            touch_later(touch)
        keeps_router = routed and "lazy" in mode

        def reloaded():
            now = live_children(master)
            workers_now = now - (old_router if keeps_router else set())
            if len(now) != PROCESSES + routed:
                return None
            if keeps_router:
                if not old_router <= now or workers_now & old:
                    return None
            elif now & old:
                return None
            return workers_now
        wait_until(reloaded, 30, f"every worker replaced after the {mode} reload")
        srv.wait_log("reload complete", timeout=30)
    finally:
        load.join()
        samples = sampler.stop()
    assert not load.failures, (
        f"{len(load.failures)} of {load.done} requests failed, e.g. {load.failures[:5]}"
    )
    assert before < 8 * LOAD_PER_CLIENT - 200, "the load ended before the reload started; nothing tested"
    assert srv.proc.poll() is None and pid_alive(master), "the master exited"
    now = live_children(master)
    assert len(now) == PROCESSES + routed, f"children after the reload: {now}"
    assert not any(pid_alive(p) for p in old - (old_router if keeps_router else set())), (
        "an old worker is still alive"
    )
    answers = [ask(port, front, "/version")[1].decode() for _ in range(12)]
    assert all(a.startswith("v2-after-reload ") for a in answers), (
        f"the changed app is not served after the reload: {answers}"
    )
    assert {int(a.split()[1]) for a in answers} <= now, "an answer from outside the children"
    versions = Counter(b.split()[0] for b in load.bodies)
    assert versions[b"v1"] >= 300 and versions[b"v2-after-reload"] > 0, (
        f"the load did not span the reload: {versions}"
    )
    if chain:
        # processes + the new one (+ the router; after a re-exec briefly both routers)
        most = PROCESSES + 1 + (2 if routed else 0)
        assert max(samples) <= most, f"up to {max(samples)} children in a chain reload"


@pytest.mark.parametrize("front", ["direct", "router"])
def test_reexec_reload_after_lowering_processes(headrace, tmp_path, front):
    """A reload that lowers `processes` in the ini: the master re-execs with fewer worker ids
    than it adopts, and must neither crash nor respawn the ids it no longer has."""
    ini = tmp_path / "app.ini"
    opt = {"direct": "http-socket", "router": "http"}[front]

    def write(n: int, chain: bool, port: int) -> None:
        ini.write_text(f"[uwsgi]\n{opt} = 127.0.0.1:{port}\nwsgi-file = {SUP}\nmaster = true\n"
                       f"processes = {n}\nchain-reload = {'true' if chain else 'false'}\n")

    for chain in (False, True):
        port = free_port()
        write(3, chain, port)
        srv = headrace("--ini", str(ini), port=port, probe=None, workers=3)
        master = srv.proc.pid
        routed = front == "router"
        wait_until(lambda p=port: ask(p, "direct", "/pid")[0] == 200, 10, "the first answer")
        assert len(live_children(master)) == 3 + routed
        write(1, chain, port)
        os.kill(master, signal.SIGHUP)
        srv.wait_log("reload complete", timeout=30)
        wait_until(lambda m=master, r=routed: len(live_children(m)) == 1 + r, 10,
                   "one worker (and the router) after lowering processes to 1")
        assert srv.proc.poll() is None, "the master exited"
        status, body = ask(port, "direct", "/pid")
        assert status == 200 and int(body) in live_children(master)
        time.sleep(1.2)  # a respawn of a dropped id would show within the master's tick
        assert len(live_children(master)) == 1 + routed, "a dropped worker id was respawned"
        assert "panicked" not in srv.log()
        srv.stop()

