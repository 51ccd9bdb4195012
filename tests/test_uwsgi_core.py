"""The `uwsgi` module's core through the real binary: identity (`worker_id`, `masterpid`,
`opt`, `version`, ...), `workers()`, `total_requests`/`request_id`, `log`, logvars in
`--log-format`, per-request harakiri (`set_user_harakiri`, `@harakiri`), `@postfork`,
`post_fork_hook`, `@thread`, `atexit`, `reload`/`stop`, `setprocname`, `--import` and
`--shared-import`, preloaded and `--lazy-apps`, one and several threads; the calls that touch
the request on every front (direct `--http-socket`, the `--http` router, the uwsgi protocol
behind real nginx). Types and shapes are compared with uWSGI 2.0.30 (pyuwsgi).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from support import APPS, free_port, pid_alive, wait_until
from test_nginx import Stack, nginx_binary

APP = str(APPS / "core_app.py")
FRONTS = ["direct", "router", "nginx"]


class CoreStack(Stack):
    """test_nginx's nginx in front of a headrace started with this file's arguments."""

    def __init__(self, headrace, base: list[str], env):
        self.exe = nginx_binary()
        self.dir = Path(tempfile.mkdtemp(prefix="headrace-nginx-"))
        os.chmod(self.dir, 0o755)
        self.sock = str(self.dir / "hr.sock")
        self.tcp_port = free_port()
        self.ports = {"unix": free_port(), "tcp": free_port()}
        self.nginx = None
        self.nginx_pids = set()
        self.hr = headrace(
            "--socket",
            f"127.0.0.1:{self.tcp_port}",
            "--socket",
            self.sock,
            "--chmod-socket",
            "666",
            *base,
            bind=False,
            port=self.tcp_port,
            probe=None,
            env=env,
        )


class Front:
    """One headrace behind one front; `get(path)` returns (status, parsed JSON or None)."""

    def __init__(self, headrace, front: str, *args: str, processes: int = 1, env=None):
        self.front = front
        self.stack = None
        base = [
            "--wsgi-file",
            APP,
            "--master",
            "--processes",
            str(processes),
            "--pythonpath",
            str(APPS),
            *args,
        ]
        if front == "direct":
            self.srv = headrace(*base, probe="/ident", env=env)
            self.base = self.srv.url("")
        elif front == "router":
            port = free_port()
            self.srv = headrace(
                "--http", f"127.0.0.1:{port}", *base, port=port, probe="/ident", env=env
            )
            self.base = self.srv.url("")
        else:
            if nginx_binary() is None:
                pytest.fail("nginx is not installed (./dev test installs Debian's nginx)")
            self.stack = CoreStack(headrace, base, env)
            self.stack.start_nginx()
            self.srv = self.stack.hr
            self.base = f"http://127.0.0.1:{self.stack.ports['tcp']}"

    def get(self, path: str, timeout: float = 15):
        r = requests.get(self.base + path, timeout=timeout)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, None

    def close(self):
        if self.stack is not None:
            self.stack.stop()


@pytest.fixture
def front_factory(headrace):
    made = []

    def make(front, *args, **kw):
        f = Front(headrace, front, *args, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def b(text: str) -> dict:
    """How core_app shows bytes."""
    return {"b": text}


# --- identity --------------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
@pytest.mark.parametrize("threads", [1, 3])
def test_identity(front_factory, lazy, threads):
    extra = ["--lazy-apps"] if lazy else []
    f = front_factory(
        "direct",
        "--threads",
        str(threads),
        "--env",
        "A=1",
        "--env",
        "B=2",
        "--import",
        "core_imported",
        "--shared-import",
        "core_shared",
        *extra,
        processes=2,
    )
    started = time.time()
    seen = {}
    for _ in range(40):
        status, d = f.get("/ident")
        assert status == 200
        seen[d["worker_id"]] = d
        if len(seen) == 2:
            break
    assert set(seen) <= {1, 2} and seen
    master = f.srv.proc.pid
    for wid, d in seen.items():
        assert d["masterpid"] == master
        assert d["mule_id"] == 0
        assert d["numproc"] == 2
        assert d["cores"] == threads
        assert d["buffer_size"] == 32768 and isinstance(d["buffer_size"], int)
        assert abs(d["started_on"] - started) < 60
        assert d["version"] == b("2.0.30")
        assert d["version_info"] == {"tuple": [2, 0, 30, 0, b("headrace")]}
        assert d["hostname"] == b(os.uname().nodename)
        assert d["ready"] is True
        assert d["applications"] is None
        assert d["magic_table"]["b:%"] == b("%")
        rss, vsz = d["mem"]["tuple"]
        assert 0 < rss <= vsz
        assert isinstance(d["connection_fd"], int) and d["connection_fd"] > 2
        opt = d["opt"]
        # uWSGI's opt: option names as given, bytes values, bare flags True, repeats a list.
        assert opt["master"] is True
        assert opt["processes"] == b("2")
        assert opt["threads"] == b(str(threads))
        assert opt["env"] == [b("A=1"), b("B=2")]
        assert opt["wsgi-file"] == b(APP)
        assert opt.get("lazy-apps") is (True if lazy else None)
        # --shared-import: in the master, before any fork; --import: with the app.
        assert d["imported"]["core_shared"] == master
        assert d["imported"]["core_imported"] == (d["pid"] if lazy else master)
        # post_fork_hook, then @postfork; @postfork(2) only in worker 2.
        loader = master if not lazy else d["pid"]
        assert d["at_import"] == {
            "worker_id": 0 if not lazy else wid,
            "mule_id": 0,
            "masterpid": master,
            "pid": loader,
            "ready": lazy or None,
        }
        assert d["is_a_reload"] is False
        kinds = [k for k, pid in d["postfork"] if pid == d["pid"]]
        assert kinds == (
            ["post_fork_hook", "all", "two"] if wid == 2 else ["post_fork_hook", "all"]
        )
    f.srv.wait_log("core-app says hello")


def test_outside_headrace_import_fails():
    # As without uWSGI: the modules exist only inside a server (pyuwsgi's uwsgidecorators.py
    # is on sys.path here, and fails the same way, on `import uwsgi`).
    for mod in ("uwsgi", "uwsgidecorators"):
        p = subprocess.run(
            [sys.executable, "-c", f"import headrace; import {mod}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 1
        assert "ModuleNotFoundError: No module named 'uwsgi'" in p.stderr, p.stderr


# --- counters --------------------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_request_id_and_total_requests(front_factory, lazy, front):
    f = front_factory(front, *(["--lazy-apps"] if lazy else []))
    _, first = f.get("/ident")
    ids, totals = [first["request_id"]], [first["total_requests"]]
    for _ in range(3):
        _, d = f.get("/ident")
        ids.append(d["request_id"])
        totals.append(d["total_requests"])
    # uWSGI: the thread's finished requests before this one; all workers' finished requests.
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2, ids[0] + 3]
    assert totals == [totals[0], totals[0] + 1, totals[0] + 2, totals[0] + 3]


def test_workers_shape_and_respawn_count(front_factory):
    f = front_factory("direct", processes=2)
    for _ in range(4):
        f.get("/ident")
    status, ws = f.get("/workers")
    assert status == 200
    ws = ws["tuple"]
    assert [w["id"] for w in ws] == [1, 2]
    keys = {
        "id",
        "pid",
        "requests",
        "delta_requests",
        "signals",
        "exceptions",
        "status",
        "rss",
        "vsz",
        "running_time",
        "last_spawn",
        "respawn_count",
        "tx",
        "avg_rt",
        "apps",
    }
    for w in ws:
        assert set(w) == keys
        assert pid_alive(w["pid"])
        assert w["status"] in (b("busy"), b("idle"))
        assert w["respawn_count"] == 0
        assert w["rss"] > 0 and w["vsz"] >= w["rss"]
        (a,) = w["apps"]["tuple"]
        assert a["mountpoint"] == b("") and a["id"] == 0
    assert sum(w["requests"] for w in ws) >= 5
    assert [w["status"] for w in ws].count(b("busy")) == 1, "the worker asking is busy"
    # A harakiri'd worker is respawned; its id's requests go on counting, as in uWSGI.
    # Either worker may take the fatal request: find the one whose pid changed.
    before = {w["id"]: w for w in ws}
    with pytest.raises(requests.RequestException):
        requests.get(f.base + "/harakiri?s=1&sleep=10", timeout=15)

    def respawned():
        _, now = f.get("/workers")
        for w in now["tuple"]:
            old = before[w["id"]]
            if w["pid"] != old["pid"] and w["respawn_count"] == 1:
                return w, old
        return None

    w, old = wait_until(respawned, 15, "the worker to be respawned")
    assert w["requests"] >= old["requests"]
    assert w["last_spawn"] >= old["last_spawn"]


def test_workers_agrees_with_the_stats_server(front_factory):
    from test_stats import stats

    sport = free_port()
    f = front_factory("direct", "--stats", f"127.0.0.1:{sport}", processes=2)
    for _ in range(6):
        f.get("/ident")
    f.get("/raise")
    # The worker counts the exception, then the request, then goes idle, after the 500 went
    # out: wait until the exception is counted and no worker is busy any more.
    def settled():
        ws = stats(("127.0.0.1", sport))["workers"]
        return sum(w["exceptions"] for w in ws) == 1 and all(w["status"] != "busy" for w in ws)

    wait_until(settled, 10, "the exception to be counted and the workers to be idle")
    _, ws = f.get("/workers")
    # The response goes out before its request is counted: read the stats once it is.
    want = sum(w["requests"] for w in ws["tuple"]) + 1
    theirs = wait_until(
        lambda: (t := {w["id"]: w for w in stats(("127.0.0.1", sport))["workers"]})
        and sum(w["requests"] for w in t.values()) >= want and t,
        10,
        "the /workers request to be counted",
    )
    for w in ws["tuple"]:
        s = theirs[w["id"]]
        asking = w["status"] == b("busy")
        # The request asking is counted once it ends, by both.
        assert (w["pid"], w["exceptions"]) == (s["pid"], s["exceptions"])
        assert w["requests"] == s["requests"] - (1 if asking else 0)
        assert w["respawn_count"] == s["respawn_count"] - 1  # uWSGI: 0 here, 1 there


def test_exceptions_are_counted(front_factory):
    f = front_factory("direct")
    assert f.get("/raise")[0] == 500
    _, ws = f.get("/workers")
    assert ws["tuple"][0]["exceptions"] == 1


# --- logging ---------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("front", FRONTS)
def test_logvars_in_log_format(front_factory, front, threads):
    f = front_factory(
        front,
        "--threads",
        str(threads),
        "--log-format",
        "LV|%(uri)|%(who)|%(bytes_key)|%(missing)|",
    )
    status, d = f.get("/logvar?who=alice")
    assert status == 200
    # get_logvar returns bytes, None for a key never set.
    assert d == {"who": b("alice"), "missing": None}
    f.get("/ident")
    text = f.srv.wait_log("LV|/ident|")
    assert "LV|/logvar?who=alice|alice|bytes-value|-|" in text
    # Logvars belong to their request: the next one starts without them.
    assert "LV|/ident|-|-|-|" in text


def test_logvars_are_per_request_across_threads(front_factory):
    from concurrent.futures import ThreadPoolExecutor

    f = front_factory("direct", "--threads", "2", "--log-format", "LV|%(who)|%(sleep)|")
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(f.get, "/logvar?who=first&sleep=0.6")
        time.sleep(0.2)
        b_ = pool.submit(f.get, "/logvar?who=second&sleep=0.1")
        assert a.result()[1]["who"] == b("first")
        assert b_.result()[1]["who"] == b("second")
    text = f.srv.wait_log("LV|first|0.6|")
    assert "LV|second|0.1|" in text


def test_log_writes_a_line(front_factory):
    f = front_factory("direct")
    f.get("/ident?log=a+line+from+uwsgi.log")
    f.srv.wait_log("a line from uwsgi.log")


# --- per-request harakiri --------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
def test_user_harakiri_kills_the_stuck_request(front_factory, front):
    f = front_factory(front, "--threads", "2")
    try:
        status, _ = f.get("/harakiri?s=1&sleep=10")
        assert status >= 500
    except requests.RequestException:
        pass  # direct: the connection dies with the worker
    text = f.srv.wait_log("(uwsgi.set_user_harakiri), killing")
    assert "stuck 1s on GET /harakiri?s=1&sleep=10" in text
    # The master respawns it, and the next request is served.
    wait_until(lambda: f.get("/ident")[0] == 200, 15, "a respawned worker")


@pytest.mark.parametrize("front", ["direct", "nginx"])
def test_user_harakiri_ends_with_the_request(front_factory, front):
    f = front_factory(front)
    status, d = f.get("/harakiri?s=1&sleep=0")
    assert status == 200
    status, after = f.get("/sleep?s=1.6")
    assert status == 200 and after["pid"] == d["pid"], "disarmed when its request ended"
    assert "set_user_harakiri" not in f.srv.log()


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_harakiri_decorator(front_factory, lazy):
    f = front_factory("direct", "--threads", "2", *(["--lazy-apps"] if lazy else []))
    status, d = f.get("/harakiri-deco?sleep=0")
    assert (status, d["result"]) == (200, "survived")
    # A call that raises is disarmed too (uWSGI's decorator leaves it armed).
    status, d2 = f.get("/harakiri-raise?sleep=1.6")
    assert status == 200 and d2["pid"] == d["pid"]
    with pytest.raises(requests.RequestException):
        requests.get(f.base + "/harakiri-deco?sleep=10", timeout=15)
    f.srv.wait_log("(uwsgi.set_user_harakiri), killing")


# --- decorators and hooks --------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_decorator(front_factory, threads, record_dir):
    f = front_factory("direct", "--threads", str(threads), env={"HR_RECORD": str(record_dir)})
    status, d = f.get("/thread?a=1&b=2")
    assert status == 200 and d == {"returned_function": True, "done": True}
    assert (record_dir / "core-thread.txt").read_text() == "1 2 True\n"


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_atexit_runs_in_workers_and_master(front_factory, lazy, record_dir):
    f = front_factory(
        "direct",
        *(["--lazy-apps"] if lazy else []),
        processes=2,
        env={"HR_RECORD": str(record_dir)},
    )
    f.get("/ident")
    workers = f.srv.worker_pids()
    assert f.srv.stop() == 0
    lines = (record_dir / "core-atexit.txt").read_text().split("\n")
    got = sorted(tuple(map(int, x.split())) for x in lines if x)
    want = sorted([(p, i + 1) for i, p in enumerate(workers)])
    if not lazy:
        want = sorted([*want, (f.srv.proc.pid, 0)])
    # Each worker id once per process; the master too when it loaded the app.
    assert sorted(wid for _, wid in got) == sorted(w for _, w in want)
    assert {p for p, _ in got} == {p for p, _ in want}


def test_is_connected(front_factory, record_dir):
    f = front_factory("direct", env={"HR_RECORD": str(record_dir)})
    assert f.get("/is_connected")[1] == {"fd": True, "bad": False}
    # A client that sends its request and goes away is seen gone (uWSGI's SO_ERROR test
    # misses an orderly close).
    with socket.create_connection(("127.0.0.1", f.srv.port), timeout=10) as s:
        s.sendall(b"GET /is_connected?sleep=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.1)
    seen = wait_until(
        lambda: (
            len(lines := (record_dir / "core-connected.txt").read_text().splitlines()) == 2
            and lines
        ),
        10,
        "the app's answer",
    )
    assert json.loads(seen[-1]) == {"fd": False, "bad": False}


def test_setprocname(front_factory):
    f = front_factory("direct")
    _, d = f.get("/setprocname?name=core-renamed")
    with open(f"/proc/{d['pid']}/cmdline", "rb") as fh:
        assert fh.read().split(b"\0")[0].startswith(b"core-renamed")


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_applications_mounts_the_apps(headrace, lazy):
    srv = headrace(
        "--wsgi-file",
        str(APPS / "core_applications.py"),
        "--pythonpath",
        str(APPS),
        "--master",
        "--manage-script-name",
        *(["--lazy-apps"] if lazy else []),
    )
    assert requests.get(srv.url("/b/x"), timeout=10).text == "b '/b' '/x'"
    assert requests.get(srv.url("/other"), timeout=10).text == "root '' '/other'"
    d = requests.get(srv.url("/"), timeout=10)
    assert d.status_code == 200


# --- reload and stop -------------------------------------------------------------------------


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_reload_replaces_the_workers(front_factory, lazy):
    f = front_factory("direct", *(["--lazy-apps"] if lazy else []), processes=2)
    status, d = f.get("/reload")
    assert status == 200 and d["reload"] is True
    old = d["pid"]
    wait_until(lambda: not pid_alive(old), 20, "the old worker to stop")
    status, d2 = f.get("/ident")
    assert status == 200 and d2["pid"] != old
    assert d2["masterpid"] == f.srv.proc.pid
    # A preloaded app is reloaded by re-exec'ing the master: uWSGI's is_a_reload.
    assert d2["is_a_reload"] is (not lazy)


@pytest.mark.parametrize("front", FRONTS)
def test_stop_stops_the_server(front_factory, front):
    """The graceful stop: the request that called uwsgi.stop() gets its response through
    every front, then the server exits."""
    f = front_factory(front)
    status, d = f.get("/stop")
    assert status == 200 and d == {"stop": True}
    assert f.srv.proc.wait(15) == 0


# --- the same calls under uWSGI (pyuwsgi) ----------------------------------------------------


def shape(v):
    """The types of a value, recursively (dict keys kept)."""
    if isinstance(v, dict):
        if set(v) == {"b"}:
            return "bytes"
        if set(v) == {"tuple"}:
            return ("tuple", [shape(x) for x in v["tuple"][:1]])
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v[:1]]
    return type(v).__name__


def test_types_match_uwsgi(front_factory, tmp_path):
    exe = shutil.which("uwsgi", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")
    args = [
        "--wsgi-file",
        APP,
        "--master",
        "--processes",
        "2",
        "--pythonpath",
        str(APPS),
        "--env",
        "A=1",
        "--enable-threads",
    ]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    env["HR_RECORD"] = str(tmp_path)
    with open(tmp_path / "uwsgi.log", "wb") as out:
        uw = subprocess.Popen(
            [exe, "--http-socket", f"127.0.0.1:{port}", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:

        def theirs(path):
            try:
                return requests.get(f"http://127.0.0.1:{port}{path}", timeout=10).json()
            except (requests.RequestException, ValueError):
                return None

        ref = wait_until(lambda: theirs("/ident"), 20, "uWSGI to serve")
        ref_workers = theirs("/workers")
        ref_logvar = theirs("/logvar?who=x")
        f = front_factory("direct", "--env", "A=1", "--enable-threads", processes=2)
        _, ours = f.get("/ident")
        _, our_workers = f.get("/workers")
        _, our_logvar = f.get("/logvar?who=x")
        for key in (
            "worker_id",
            "mule_id",
            "masterpid",
            "numproc",
            "cores",
            "buffer_size",
            "started_on",
            "version",
            "version_info",
            "hostname",
            "total_requests",
            "request_id",
            "ready",
            "applications",
            "connection_fd",
            "mem",
            "log",
        ):
            assert shape(ours[key]) == shape(ref[key]), key
        assert ref["version"] == ours["version"]
        assert ref["version_info"]["tuple"][:4] == ours["version_info"]["tuple"][:4]
        for k in ("master", "processes", "wsgi-file", "env", "enable-threads", "pythonpath"):
            assert shape(ours["opt"][k]) == shape(ref["opt"][k]), k
        assert ours["opt"]["processes"] == ref["opt"]["processes"]
        assert shape(our_workers) == shape(ref_workers)
        assert our_logvar == ref_logvar
        # The same hooks ran in the same order (uWSGI's uwsgidecorators chains @postfork
        # after post_fork_hook... by replacing it: see the README).
        assert [k for k, _ in ours["postfork"]] in (
            ["post_fork_hook", "all"],
            ["post_fork_hook", "all", "two"],
        )
    finally:
        uw.send_signal(signal.SIGINT)
        uw.wait(10)


def test_opt_matches_uwsgi_for_an_ini(headrace, tmp_path):
    exe = shutil.which("uwsgi", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")
    ini = tmp_path / "opt.ini"
    ini.write_text(
        f"[uwsgi]\nmaster = true\nprocesses = 2\nwsgi-file = {APP}\n"
        "enable-threads =\nvacuum = 1\nenv = A=1\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    env["HR_RECORD"] = str(tmp_path)
    with open(tmp_path / "uwsgi.log", "wb") as out:
        uw = subprocess.Popen(
            [exe, "--http-socket", f"127.0.0.1:{port}", "--ini", str(ini), "-L"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:

        def theirs():
            try:
                return requests.get(f"http://127.0.0.1:{port}/ident", timeout=10).json()
            except (requests.RequestException, ValueError):
                return None

        ref = wait_until(theirs, 20, "uWSGI to serve")["opt"]
        hport = free_port()
        srv = headrace(
            "--http-socket",
            f"127.0.0.1:{hport}",
            "--ini",
            str(ini),
            "-L",
            port=hport,
            probe="/ident",
            env={"HR_RECORD": str(tmp_path)},
        )
        ours = requests.get(srv.url("/ident"), timeout=10).json()["opt"]
        assert ours.pop("http-socket") == b(f"127.0.0.1:{hport}")
        assert ref.pop("http-socket") == b(f"127.0.0.1:{port}")
        assert ours == ref
        assert ref["disable-logging"] is True  # -L, a bare flag
        assert ref["enable-threads"] == b("")
    finally:
        uw.send_signal(signal.SIGINT)
        uw.wait(10)


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_a_failing_import_is_logged_and_the_app_serves(front_factory, lazy):
    # As uWSGI: the traceback is printed and the app is loaded all the same.
    f = front_factory(
        "direct",
        "--import",
        "core_no_such_module",
        "--import",
        "core_imported",
        "--shared-import",
        str(APPS / "core_shared.py"),
        *(["--lazy-apps"] if lazy else []),
    )
    status, d = f.get("/ident")
    assert status == 200
    assert d["imported"]["core_imported"] is not None
    assert d["imported"]["core_shared"] == f.srv.proc.pid, "a .py path is imported by its name"
    text = f.srv.wait_log("headrace: --import core_no_such_module: cannot import it")
    assert "ModuleNotFoundError: No module named 'core_no_such_module'" in text
