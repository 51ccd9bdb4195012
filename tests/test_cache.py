"""Caches (`--cache2`, `--cache`), shared areas and user locks through the real binary.

Every call goes through tests/apps/cache_app.py (`/call?fn=...`), on new connections, so that
requests land on different workers. The same app runs under uWSGI 2.0 (pyuwsgi) in
`test_api_answers_as_uwsgi` as the reference for return values and exception types.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests
from support import APPS, REPO, free_port, pid_alive, run_headrace, wait_until

APP = str(APPS / "cache_app.py")
MINE = "name=mine,items=4,blocksize=64"


def enc(v) -> str:
    if isinstance(v, bytes):
        return "x:" + v.hex()
    if isinstance(v, bool) or v is None:
        raise TypeError(v)
    if isinstance(v, int):
        return f"i:{v}"
    return v


def call(base: str, fn: str, *args, wait: float = 0) -> dict:
    """uwsgi.<fn>(*args) in whichever worker takes the new connection (which then sleeps
    `wait` seconds before answering)."""
    params = [("fn", fn), ("wait", str(wait))] + [("a", enc(a)) for a in args]
    r = requests.get(base + "/call", params=params, timeout=15,
                     headers={"Connection": "close"})
    assert r.status_code == 200, r.text
    return r.json()


def result(base: str, fn: str, *args):
    out = call(base, fn, *args)
    assert "error" not in out, out
    return ast.literal_eval(out["result"])


def start(headrace, front: str, *extra: str, processes: int = 2, threads: int = 1,
          lazy: bool = False):
    args = ["--wsgi-file", APP, "--master", "--processes", str(processes), *extra]
    if threads > 1:
        args += ["--threads", str(threads)]
    if lazy:
        args.append("--lazy-apps")
    if front == "router":
        port = free_port()
        return headrace("--http", f"127.0.0.1:{port}", *args, port=port)
    return headrace(*args)


def base_of(srv) -> str:
    return f"http://127.0.0.1:{srv.port}"


def from_every_worker(base: str, fn: str, *args, workers: int = 2, timeout: float = 30.0):
    """Ask until `workers` different pids answered; {pid: result}. Each round sends more
    calls at once than one worker has threads, each keeping its thread 0.2 s, so that the
    kernel (or the router) must hand some to another worker."""
    seen: dict[int, object] = {}
    errors: list = []

    def one():
        try:
            out = call(base, fn, *args, wait=0.2)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
            return
        if "error" in out:
            errors.append(out)
            return
        seen[out["pid"]] = ast.literal_eval(out["result"])

    def round_():
        ts = [threading.Thread(target=one, daemon=True) for _ in range(CONCURRENT)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert not errors, errors
        return len(seen) >= workers

    wait_until(round_, timeout, f"{workers} workers answering {fn}", interval=0.01)
    return seen


#: More than one worker's threads (the tests use at most 4).
CONCURRENT = 6


def stats(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


# --- shared between workers, on every front and mode ----------------------------------------


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy-apps"])
@pytest.mark.parametrize("front", ["direct", "router"])
def test_values_set_in_one_worker_are_seen_in_every_worker(headrace, front, lazy, threads):
    srv = start(headrace, front, "--cache2", MINE, "--cache", "8", "--sharedarea", "1",
                threads=threads, lazy=lazy)
    base = base_of(srv)
    first = call(base, "cache_set", "shared", b"value")
    assert first["result"] == "True", first
    assert result(base, "cache_set", "other", "in mine", 0, "mine") is True
    assert result(base, "sharedarea_write", 0, 8, b"area") is None
    got = from_every_worker(base, "cache_get", "shared")
    assert set(got.values()) == {b"value"}, got
    assert first["pid"] in got
    got = from_every_worker(base, "cache_get", "other", "mine")
    assert set(got.values()) == {b"in mine"}, got
    got = from_every_worker(base, "sharedarea_read", 0, 8, 4)
    assert set(got.values()) == {b"area"}, got
    # A counter bumped from both workers ends at the sum.
    for _ in range(20):
        assert result(base, "cache_inc", "hits") is True
    assert set(from_every_worker(base, "cache_num", "hits").values()) == {20}


def test_concurrent_increments_all_count(headrace):
    """8 clients x 25 cache_inc and sharedarea_inc64 on 2 workers x 4 threads: no update lost."""
    srv = start(headrace, "direct", "--cache2", MINE, "--sharedarea", "1", threads=4)
    base = base_of(srv)
    errors: list = []

    def client():
        for _ in range(25):
            for fn, args in (("cache_inc", ("n", 1, 0, "mine")), ("sharedarea_inc64", (0, 0))):
                out = call(base, fn, *args)
                if "error" in out:
                    errors.append(out)

    ts = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    assert result(base, "cache_num", "n", "mine") == 200
    assert result(base, "sharedarea_read64", 0, 0) == 200


def test_behind_nginx(headrace_module):
    from test_nginx import Stack, nginx_binary

    if nginx_binary() is None:
        pytest.skip("nginx is not installed (Debian package `nginx`)")

    def with_cache(*args, **kw):
        return headrace_module(*args, "--cache2", MINE, **kw)

    st = Stack(with_cache, "cache_app.py", 2)
    try:
        st.start_nginx()
        base = st.url("tcp").rstrip("/")
        assert result(base, "cache_set", "via", "nginx", 0, "mine") is True
        got = from_every_worker(base, "cache_get", "via", "mine")
        assert set(got.values()) == {b"nginx"}, got
    finally:
        st.stop()


# --- uWSGI's answers ------------------------------------------------------------------------

SEQUENCE = [
    ("cache_get", "k"), ("cache_set", "k", "v"), ("cache_set", "k", "v2"), ("cache_get", "k"),
    ("cache_update", "k", b"v3"), ("cache_get", b"k"), ("cache_exists", "k"),
    ("cache_exists", "nope"), ("cache_del", "k"), ("cache_del", "k"), ("cache_get", "k"),
    ("cache_set", "e", b""), ("cache_set", "big", "x" * 65, 0, "mine"),
    ("cache_set", "small", "x" * 64, 0, "mine"), ("cache_get", "small", "mine"),
    ("cache_get", "small"), ("cache_get", "k", "nope"), ("cache_set", "k", "v", 0, "nope"),
    ("cache_clear", "nope"), ("cache_inc", "n"), ("cache_inc", "n", 5), ("cache_dec", "n", 2),
    ("cache_mul", "n", 10), ("cache_div", "n", 3), ("cache_num", "n"), ("cache_get", "n"),
    ("cache_div", "n", 0), ("cache_num", "n"), ("cache_num", "missing"),
    ("cache_dec", "neg", 5), ("cache_num", "neg"), ("cache_mul", "fresh"), ("cache_num", "fresh"),
    ("cache_set", "s", "abc"), ("cache_num", "s"), ("cache_inc", "s"), ("cache_get", "s"),
    ("cache_keys",), ("cache_keys", "mine"), ("cache_clear", "mine"), ("cache_keys", "mine"),
    ("cache_keys", "nope"), ("cache_set", 3, "v"), ("cache_set", "k", 3), ("cache_clear",),
    ("cache_keys",),
    ("sharedarea_write", 0, 10, b"hello"), ("sharedarea_read", 0, 10, 5),
    ("sharedarea_read", 0, 4090), ("sharedarea_read", 0, 4096), ("sharedarea_read", 1, 0),
    ("sharedarea_write", 0, 4095, b"ab"), ("sharedarea_write64", 0, 16, -3),
    ("sharedarea_read64", 0, 16), ("sharedarea_read32", 0, 16), ("sharedarea_read16", 0, 16),
    ("sharedarea_read8", 0, 16), ("sharedarea_readbyte", 0, 16), ("sharedarea_inc64", 0, 16),
    ("sharedarea_inc64", 0, 16, 10), ("sharedarea_readlong", 0, 16),
    ("sharedarea_dec64", 0, 16, 4), ("sharedarea_read64", 0, 16),
    ("sharedarea_write32", 0, 32, 7), ("sharedarea_inc32", 0, 32),
    ("sharedarea_dec32", 0, 32, 3), ("sharedarea_read32", 0, 32),
    ("sharedarea_write16", 0, 40, 65535), ("sharedarea_read16", 0, 40),
    ("sharedarea_write8", 0, 48, 255), ("sharedarea_read8", 0, 48),
    ("sharedarea_write8", 0, 48, 256), ("sharedarea_writelong", 0, 56, 1 << 40),
    ("sharedarea_readlong", 0, 56),
    ("sharedarea_wlock", 0), ("sharedarea_unlock", 0), ("sharedarea_rlock", 0),
    ("sharedarea_unlock", 0), ("sharedarea_wlock", 5), ("sharedarea_update", 0),
    ("sharedarea_memoryview", 3), ("sharedarea_read", 0, -1), ("sharedarea_read64", 0, -8),
    ("sharedarea_write", 0, -1, b"x"), ("sharedarea_inc64", 0, -8),
    ("is_locked",), ("is_locked", 2), ("is_locked", 3), ("lock", 3), ("unlock", 1),
]

ARGS = ["--master", "--processes", "1", "--cache", "10", "--cache2", MINE,
        "--sharedarea", "1", "--locks", "2"]


def answer(out: dict):
    """A call's outcome, comparable across servers: the value, or the exception's type."""
    if "error" in out:
        return ("raises", out["error"].split(":", 1)[0])
    return ast.literal_eval(out["result"])


def uwsgi_binary() -> str:
    exe = shutil.which("uwsgi", path=str(REPO / ".venv" / "bin")) or shutil.which("uwsgi")
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")
    return exe


def test_api_answers_as_uwsgi(headrace, tmp_path):
    uport, ustats, hstats = free_port(), free_port(), free_port()
    log = open(tmp_path / "uwsgi.log", "wb")  # noqa: SIM115 - closed below
    uw = subprocess.Popen(
        [uwsgi_binary(), "--http-socket", f"127.0.0.1:{uport}", "--wsgi-file", APP,
         "--stats", f"127.0.0.1:{ustats}", *ARGS],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(REPO))
    try:
        srv = headrace("--wsgi-file", APP, "--stats", f"127.0.0.1:{hstats}", *ARGS)
        ubase = f"http://127.0.0.1:{uport}"

        def up():
            try:
                return requests.get(ubase + "/", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, 20, "uWSGI serving")
        differences = []
        for fn, *args in SEQUENCE:
            theirs = answer(call(ubase, fn, *args))
            ours = answer(call(base_of(srv), fn, *args))
            if fn == "cache_keys" and isinstance(theirs, list):
                theirs, ours = sorted(theirs), sorted(ours) if isinstance(ours, list) else ours
            if ours != theirs:
                differences.append(f"{fn}{tuple(args)!r}: headrace {ours!r}, uWSGI {theirs!r}")
        assert not differences, "\n".join(differences)
        # The stats list the caches with uWSGI's keys, in uWSGI's order.
        theirs, ours = stats(ustats)["caches"], stats(hstats)["caches"]
        assert [list(c) for c in ours] == [list(c) for c in theirs]
        assert [c["name"] for c in ours] == ["default", "mine"]
        for o, t in zip(ours, theirs, strict=True):
            for k in ("hash", "hashsize", "keysize", "blocksize", "max_items", "items"):
                assert o[k] == t[k], (k, o, t)
    finally:
        uw.send_signal(signal.SIGINT)
        try:
            uw.wait(15)
        except subprocess.TimeoutExpired:
            uw.kill()
            uw.wait(5)
        log.close()


def test_items_means_items(headrace):
    """uWSGI's `items=N` holds N - 1 keys (slot 0 is its sentinel); headrace holds N."""
    srv = start(headrace, "direct", "--cache2", "name=mine,items=3,blocksize=8", processes=1)
    base = base_of(srv)
    assert [result(base, "cache_set", k, "v") for k in "abc"] == [True] * 3
    assert result(base, "cache_set", "d", "v") is None


# --- expiry, full, math, keys, clear --------------------------------------------------------


def test_expired_items_vanish_everywhere(headrace):
    stats_port = free_port()
    srv = start(headrace, "direct", "--cache2", MINE, "--cache-expire-freq", "1",
                "--stats", f"127.0.0.1:{stats_port}")
    base = base_of(srv)
    assert result(base, "cache_set", "short", "lived", 1, "mine") is True
    assert result(base, "cache_set", "long", "lived", 3600, "mine") is True
    assert result(base, "cache_get", "short", "mine") == b"lived"
    wait_until(lambda: result(base, "cache_get", "short", "mine") is None, 5, "expiry")
    got = from_every_worker(base, "cache_exists", "short", "mine")
    assert set(got.values()) == {None}
    assert result(base, "cache_keys", "mine") == [b"long"]
    # The expired item's slot is free again: the count says so.
    (mine,) = stats(stats_port)["caches"]
    assert mine["items"] == 1
    # update without expires clears the expiry (as uWSGI); math keeps it.
    assert result(base, "cache_set", "n", b"\x01" + b"\x00" * 7, 1, "mine") is True
    assert result(base, "cache_inc", "n", 1, 0, "mine") is True
    wait_until(lambda: result(base, "cache_num", "n", "mine") == 0, 5, "n expiring")


def test_full_cache(headrace):
    srv = start(headrace, "direct", "--cache2", "name=mine,items=2,blocksize=8",
                "--cache2", "name=lru,items=2,blocksize=8,purge_lru=1",
                "--cache2", "name=quiet,items=1,blocksize=8,ignore_full=1", processes=1)
    base = base_of(srv)
    assert result(base, "cache_set", "a", "1", 0, "mine") is True
    assert result(base, "cache_set", "b", "2", 0, "mine") is True
    assert result(base, "cache_set", "c", "3", 0, "mine") is None
    assert result(base, "cache_update", "a", "9", 0, "mine") is True
    srv.wait_log('*** DANGER cache "mine" is FULL !!! ***')
    # purge_lru: the least recently used key makes room.
    assert result(base, "cache_set", "a", "1", 0, "lru") is True
    assert result(base, "cache_set", "b", "2", 0, "lru") is True
    assert result(base, "cache_get", "a", "lru") == b"1"
    assert result(base, "cache_set", "c", "3", 0, "lru") is True
    assert sorted(result(base, "cache_keys", "lru")) == [b"a", b"c"]
    srv.wait_log('LRU item will be purged from cache "lru"')
    assert result(base, "cache_set", "a", "1", 0, "quiet") is True
    assert result(base, "cache_set", "b", "1", 0, "quiet") is None
    assert 'cache "quiet"' not in srv.log()


def test_math_keys_clear(headrace):
    srv = start(headrace, "direct", "--cache2", MINE + ",math_initial=100")
    base = base_of(srv)
    assert result(base, "cache_inc", "n", 1, 0, "mine") is True
    assert result(base, "cache_num", "n", "mine") == 101
    assert result(base, "cache_dec", "m", 1, 0, "mine") is True
    assert result(base, "cache_num", "m", "mine") == 99
    assert result(base, "cache_set", "max", (2**63 - 1).to_bytes(8, "little"), 0, "mine")
    assert result(base, "cache_inc", "max", 1, 0, "mine") is True
    assert result(base, "cache_num", "max", "mine") == -(2**63)
    got = from_every_worker(base, "cache_keys", "mine")
    assert all(sorted(v) == [b"m", b"max", b"n"] for v in got.values()), got
    assert result(base, "cache_clear", "mine") is True
    got = from_every_worker(base, "cache_keys", "mine")
    assert list(got.values()) == [[], []], got


def test_bitmap_values_span_blocks(headrace):
    srv = start(headrace, "direct", "--cache2", "name=bm,items=4,blocksize=16,blocks=8,bitmap=1")
    base = base_of(srv)
    big = b"0123456789" * 10  # 7 blocks of 16
    assert result(base, "cache_set", "big", big, 0, "bm") is True
    assert set(from_every_worker(base, "cache_get", "big", "bm").values()) == {big}
    assert result(base, "cache_set", "two", b"x" * 32, 0, "bm") is None  # 1 block left
    assert result(base, "cache_set", "one", b"y" * 16, 0, "bm") is True
    assert result(base, "cache_set", "too_big", b"z" * 129, 0, "bm") is None


def test_without_caches_calls_answer_none(headrace):
    srv = start(headrace, "direct", processes=1)
    base = base_of(srv)
    assert result(base, "cache_get", "k") is None
    assert result(base, "cache_set", "k", "v") is None
    assert result(base, "cache_exists", "k") is None
    assert result(base, "cache_clear") is None
    assert call(base, "cache_keys")["error"] == "ValueError: no local uWSGI cache available"
    assert call(base, "sharedarea_read", 0, 0)["error"].startswith("ValueError")
    assert result(base, "is_locked") is False


# --- store= persistence ---------------------------------------------------------------------


def test_store_survives_restart_and_kill_9(headrace, tmp_path):
    store = tmp_path / "mine.cache"
    opts = ["--cache2", f"{MINE},store={store},store_sync=1"]
    srv = start(headrace, "direct", *opts, processes=1)
    base = base_of(srv)
    assert result(base, "cache_set", "kept", "across restarts", 0, "mine") is True
    assert result(base, "cache_inc", "n", 7, 0, "mine") is True
    assert srv.stop() == 0
    srv = start(headrace, "direct", *opts, processes=1)
    base = base_of(srv)
    srv.wait_log("recovered cache from backing store file")
    assert result(base, "cache_get", "kept", "mine") == b"across restarts"
    assert result(base, "cache_num", "n", "mine") == 7
    # kill -9 of every process: the file is the cache's memory, so nothing is lost.
    assert result(base, "cache_set", "after", "kill", 0, "mine") is True
    srv.remember_pids()
    pids = set(srv.known_pids)
    os.kill(srv.proc.pid, signal.SIGKILL)
    for p in pids:
        if p != srv.proc.pid and pid_alive(p):
            os.kill(p, signal.SIGKILL)
    srv.proc.wait(10)
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "every process gone")
    srv = start(headrace, "direct", *opts, processes=1)
    base = base_of(srv)
    assert result(base, "cache_get", "after", "mine") == b"kill"
    assert result(base, "cache_get", "kept", "mine") == b"across restarts"


def test_store_in_use_by_another_server_is_refused(headrace, tmp_path):
    store = tmp_path / "mine.cache"
    srv = start(headrace, "direct", "--cache2", f"{MINE},store={store}", processes=1)
    assert result(base_of(srv), "cache_set", "k", "first", 0, "mine") is True
    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP,
                      "--cache2", f"{MINE},store={store}"])
    assert p.returncode != 0
    assert f"cache store file {store} of cache \"mine\" is in use by another server" in (
        p.stdout + p.stderr)
    assert result(base_of(srv), "cache_get", "k", "mine") == b"first"


def test_store_of_another_shape_is_refused(headrace, tmp_path):
    store = tmp_path / "mine.cache"
    srv = start(headrace, "direct", "--cache2", f"{MINE},store={store}", processes=1)
    assert srv.stop() == 0
    other = f"name=mine,items=5,blocksize=64,store={store}"
    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP,
                      "--cache2", other])
    assert p.returncode != 0
    assert f"invalid cache store file {store}" in p.stdout + p.stderr
    srv = start(headrace, "direct", "--cache2", other + ",store_delete=1", processes=1)
    srv.wait_log(f"Removing invalid cache store file: {store}")
    assert result(base_of(srv), "cache_keys", "mine") == []


# --- bad options ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "items=10", "name=x", "name=x,items=0", "name=x,items=ten", "name=x,items=3,colour=red",
    "name=x,items=3,blocksize=0", "name=x,items=3,nodes=127.0.0.1:3000",
    "name=x,items=3,blocks=2,bitmap=1",
])
def test_bad_cache2_exits_2_with_one_line(value):
    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP,
                      "--cache2", value])
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "cache2" in lines[0] and value in lines[0], lines


@pytest.mark.parametrize("value", ["0", "file=/tmp/x", "lots"])
def test_bad_sharedarea_exits_2(value):
    p = run_headrace(["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP,
                      "--sharedarea", value])
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "sharedarea" in p.stdout + p.stderr


# --- shared areas ---------------------------------------------------------------------------


def test_sharedarea_memoryview_is_shared(headrace):
    srv = start(headrace, "direct", "--sharedarea", "1")
    base = base_of(srv)
    r = requests.get(base + "/memoryview", timeout=10).json()
    assert ast.literal_eval(r["result"]) == (4096, b"mv")
    got = from_every_worker(base, "sharedarea_read", 0, 100, 2)
    assert set(got.values()) == {b"mv"}


# --- locks ----------------------------------------------------------------------------------


def hold_in_background(base: str, path: str, out: list):
    def run():
        try:
            out.append(requests.get(base + path, timeout=30).json())
        except requests.RequestException as e:  # its worker was killed: the test says so
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("path", ["/hold?n=1&s=0.6", "/decorated?s=0.6"])
@pytest.mark.parametrize(("processes", "threads"), [(2, 1), (1, 2)])
def test_locks_serialize(headrace, path, processes, threads):
    srv = start(headrace, "direct", "--locks", "1", processes=processes, threads=threads)
    base = base_of(srv)
    out: list = []
    ts = [hold_in_background(base, path, out) for _ in range(2)]
    for t in ts:
        t.join(30)
    assert len(out) == 2, out
    a, b = sorted(out, key=lambda r: r["got"])
    # The second got the lock only once the first let it go.
    assert b["got"] >= a["released"] - 0.01, (a, b)
    if processes == 2:
        assert a["pid"] != b["pid"], "both requests ran in one worker"


def test_a_worker_killed_holding_a_lock_does_not_block_the_others(headrace):
    srv = start(headrace, "direct", "--processes", "2")
    base = base_of(srv)
    hold_in_background(base, "/hold?n=0&s=60", [])
    wait_until(lambda: call(base, "is_locked")["result"] == "True", 10, "lock 0 held")
    answering = call(base, "is_locked")["pid"]
    holder = [p for p in srv.worker_pids() if p != answering and pid_alive(p)]
    assert len(holder) == 1, (holder, answering)
    os.kill(holder[0], signal.SIGKILL)
    started = time.monotonic()
    r = requests.get(base + "/hold?n=0&s=0", timeout=20).json()
    assert "got" in r, r
    assert time.monotonic() - started < 15
    assert result(base, "is_locked") is False


def test_lock_numbers_and_spooler_rules(headrace):
    srv = start(headrace, "direct", "--locks", "3", processes=1)
    base = base_of(srv)
    assert result(base, "is_locked", 3) is False
    assert call(base, "lock", 4)["error"] == "ValueError: Invalid lock number"
    assert call(base, "lock", -1)["error"] == "ValueError: Invalid lock number"


# --- reloads --------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded-reexec", "lazy-apps"])
def test_reload(headrace, tmp_path, lazy):
    """SIGHUP: a store= cache keeps its items either way; a memory-only cache keeps them when
    the master stays (--lazy-apps) and starts empty when it re-execs (a preloaded app), as
    uWSGI's."""
    store = tmp_path / "kept.cache"
    srv = start(headrace, "direct", "--cache2", f"name=kept,items=4,blocksize=64,store={store}",
                "--cache2", MINE, lazy=lazy)
    base = base_of(srv)
    assert result(base, "cache_set", "k", "stored", 0, "kept") is True
    assert result(base, "cache_set", "k", "memory", 0, "mine") is True
    old = set(srv.worker_pids())
    os.kill(srv.proc.pid, signal.SIGHUP)

    def new_workers_answer():
        got = from_every_worker(base, "cache_get", "k", "kept", timeout=20)
        return set(got) - old == set(got) and got

    got = wait_until(new_workers_answer, 30, "the new workers")
    assert set(got.values()) == {b"stored"}, got
    mine = set(from_every_worker(base, "cache_get", "k", "mine").values())
    assert mine == ({b"memory"} if lazy else {None}), mine
    # The reloaded server still shares one lock: a counter bumped everywhere adds up.
    for _ in range(10):
        assert result(base, "cache_inc", "n", 1, 0, "kept") is True
    assert set(from_every_worker(base, "cache_num", "n", "kept").values()) == {10}


# --- processes killed in the middle of writes -----------------------------------------------

BUSY = "name=b,items=2000,blocksize=128"


def check_intact(base: str) -> int:
    """Every key the cache lists reads back whole (the /bench loop writes b"x" * 100)."""
    keys = result(base, "cache_keys")
    for k in keys:
        v = result(base, "cache_get", k)
        assert v in (b"x" * 100, None) or len(v) == 8, (k, v)  # "counter" is a number
    assert result(base, "cache_update", "probe", "ok") is True
    assert result(base, "cache_get", "probe") == b"ok"
    return len(keys)


def test_worker_killed_while_writing(headrace):
    srv = start(headrace, "direct", "--cache2", BUSY)
    base = base_of(srv)
    hold_in_background(base, "/bench?n=50000000", [])
    wait_until(lambda: call(base, "cache_exists", "key999")["result"] == "True", 10, "writes")
    other = call(base, "cache_exists", "key1")["pid"]
    busy = [p for p in srv.worker_pids() if p != other and pid_alive(p)]
    assert len(busy) == 1, busy
    os.kill(busy[0], signal.SIGKILL)
    # Whatever it was doing, the other worker (and its respawned peer) carry on intact.
    assert check_intact(base) > 0


def test_everything_killed_while_writing_to_a_store(headrace, tmp_path):
    opts = ["--cache2", f"{BUSY},store={tmp_path / 'b.cache'}"]
    srv = start(headrace, "direct", *opts, processes=1)
    base = base_of(srv)
    hold_in_background(base, "/bench?n=50000000", [])
    time.sleep(0.5)  # one worker, busy writing: nothing else gets an answer
    srv.remember_pids()
    pids = set(srv.known_pids)
    for p in [srv.proc.pid, *pids]:
        if pid_alive(p):
            os.kill(p, signal.SIGKILL)
    srv.proc.wait(10)
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10, "every process gone")
    srv = start(headrace, "direct", *opts, processes=1)
    srv.wait_log("[uwsgi-cache] restored")
    assert check_intact(base_of(srv)) > 0
