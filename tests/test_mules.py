"""Mules and farms through the real binary: `--mule`, `--mules N`, `--mule=FILE.py`,
`--mule=MODULE:FUNCTION`, `--farm`, the message API (`uwsgi.mule_msg`, `mule_get_msg`,
`farm_msg`, `mule_msg_hook`) and the decorators (`@mulefunc`, `@mule`, `@muleloop`,
`@mulemsg`, `@farm`); supervision (respawn after kill -9, restart on SIGHUP and on
`--touch-mules-reload`, stop with the master), `--mule-harakiri`, and a full queue. The
message round trip runs on the direct and router fronts, preloaded and `--lazy-apps`, with one
and several threads per worker; the `@mulefunc` app is also run under uWSGI (pyuwsgi) as the
reference.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import pytest
from support import APPS, REPO, free_port, pid_alive, run_headrace, wait_until

APP = str(APPS / "mule_app.py")
DECORATED = str(APPS / "mule_decorated.py")
SCRIPT = str(APPS / "mule_script.py")
MULE_LINE = re.compile(r"spawned headrace mule (\d+) \(pid: (\d+)\)")


def start(headrace, *args, front="direct", processes=2, threads=1, app=APP):
    port = free_port()
    opt = {"direct": "--http-socket", "router": "--http"}[front]
    srv = headrace(
        opt,
        f"127.0.0.1:{port}",
        "--wsgi-file",
        app,
        "--master",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        *args,
        port=port,
        probe=None,
        workers=processes,
        bind=False,
    )
    srv.port = port
    # The router connects to its workers after they start: the first answer says it did.
    wait_until(lambda: _try(srv, "/id"), 15, "a first answer")
    return srv


def _try(srv, path):
    try:
        return get(srv, path)
    except OSError:
        return None


def get(srv, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.port}{path}", timeout=10) as r:
        return r.read().decode()


def mule_pids(srv) -> dict[int, list[int]]:
    """Every pid the log says each mule had, in spawn order."""
    out: dict[int, list[int]] = {}
    for m in MULE_LINE.finditer(srv.log()):
        out.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    return out


def wait_mules(srv, count: int, spawns: int = 1) -> dict[int, list[int]]:
    """Wait until mules 1..count each were spawned `spawns` times; their pids."""

    def ready():
        pids = mule_pids(srv)
        return pids if all(len(pids.get(i, [])) >= spawns for i in range(1, count + 1)) else None

    pids = wait_until(ready, 15, f"{count} mules spawned {spawns} time(s)")
    srv.known_pids.update(p for ps in pids.values() for p in ps)
    return pids


def wait_respawned(srv, before: dict[int, list[int]]) -> dict[int, list[int]]:
    """Wait until every mule of `before` has a new process and its previous one is gone."""

    def ready():
        pids = mule_pids(srv)
        return pids if all(len(pids.get(i, [])) > len(ps) for i, ps in before.items()) else None

    after = wait_until(ready, 15, "every mule respawned")
    srv.known_pids.update(p for ps in after.values() for p in ps)
    for ps in before.values():
        wait_until(lambda old=ps[-1]: not pid_alive(old), 10, f"old mule {ps[-1]} gone")
    return after


def recorded(record: Path, name: str, timeout: float = 10.0) -> str:
    path = record / name
    wait_until(path.exists, timeout, f"{name} recorded")
    return path.read_text()


# --- messages, on both fronts, preloaded and lazy, 1 and several threads ----------------------


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
@pytest.mark.parametrize("front", ["direct", "router"])
def test_messages_reach_the_mule_they_are_for(headrace, record_dir, front, lazy, threads):
    extra = ["--lazy-apps"] if lazy else []
    srv = start(
        headrace, "--mules", "2", "--farm", "pool:1,2", *extra, front=front, threads=threads
    )
    pids = wait_mules(srv, 2)
    if lazy:
        srv.wait_log("WSGI app 0 (mountpoint='') ready in mule 2")
    assert get(srv, "/msg?to=1&body=rec:one") == "True"
    assert get(srv, "/msg?to=2&body=rec:two") == "True"
    assert recorded(record_dir, "msg-one") == f"1 {pids[1][0]}"
    assert recorded(record_dir, "msg-two") == f"2 {pids[2][0]}"
    # No target, 0, or a farm: one mule of the group, exactly once.
    assert get(srv, "/msg?body=rec:any") == "True"
    assert get(srv, "/msg?to=0&body=rec:zero") == "True"
    assert get(srv, "/msg?to=pool&body=rec:farmed") == "True"
    assert get(srv, "/farm_msg?farm=pool&body=rec:farmmsg") == "None"
    for name in ("any", "zero", "farmed", "farmmsg"):
        assert recorded(record_dir, f"msg-{name}").split()[0] in ("1", "2")
    # @mulefunc: any mule; @mulefunc(2): mule 2.
    assert get(srv, "/call?name=f1") == "called"
    assert recorded(record_dir, "func-f1").split()[0] in ("1", "2")
    assert get(srv, "/call2?name=f2") == "called"
    assert recorded(record_dir, "func2-f2") == f"2 {pids[2][0]}"
    # Many senders at once (threads of both workers): every message arrives exactly once.
    errors = []

    def send(i):
        try:
            assert get(srv, f"/call?name=par&suffix={i}") == "called"
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    ts = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert not errors
    wait_until(lambda: len(list(record_dir.glob("func-par*"))) == 20, 10, "20 mulefunc calls")
    # A worker is no mule.
    assert get(srv, "/id") == "0"
    assert get(srv, "/get") == "you can receive mule messages only in a mule !!!"
    assert get(srv, "/error?to=3") == "invalid mule number"
    assert "Traceback" not in srv.log()


def test_without_mules_mule_msg_raises(headrace):
    srv = start(headrace)
    assert get(srv, "/error?to=0") == "no mule configured"
    assert get(srv, "/id") == "0"


def test_a_full_queue_refuses_the_message(headrace, record_dir):
    srv = start(headrace, "--mules", "1", "--mule-msg-size", "8192")
    pids = wait_mules(srv, 1)
    # Keep the mule busy so nothing is read, then fill its queue.
    assert get(srv, "/msg?to=1&body=sleep:30") == "True"
    recorded(record_dir, f"sleeping-{pids[1][0]}")
    sent = int(get(srv, "/flood?to=1&size=1000"))
    assert 0 < sent < 100, sent
    srv.wait_log(
        "*** MULE MSG QUEUE IS FULL: buffer size 8192 bytes "
        "(you can tune it with --mule-msg-size) ***"
    )
    # A message that cannot fit any queue is refused the same way.
    assert get(srv, "/flood?to=1&size=100000") == "0"
    srv.wait_log("does not fit a mule queue (--mule-msg-size 8192)")
    # The queue still works for the other mules' messages: the shared queue is separate.
    assert get(srv, "/msg?body=rec:shared") == "True"


# --- the mule's body: a script, a function, the decorators ------------------------------------


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_a_script_mule_reads_its_messages(headrace, record_dir, lazy):
    extra = ["--lazy-apps"] if lazy else []
    srv = start(headrace, f"--mule={SCRIPT}", *extra)
    pids = wait_mules(srv, 1)
    text = recorded(record_dir, f"script-{pids[1][0]}")
    assert text == f"1 __main__ {SCRIPT}"  # uwsgi.mule_file() as well
    assert get(srv, "/msg?to=1&body=hello") == "True"
    assert recorded(record_dir, "got-hello") == f"1 {pids[1][0]}"
    # mule_get_msg(timeout=1) returns b"" when nothing came.
    recorded(record_dir, f"script-timeouts-{pids[1][0]}", timeout=5)


def test_a_module_function_mule_runs_and_is_respawned_when_it_returns(
    headrace, record_dir, tmp_path
):
    (tmp_path / "mule_fn_mod.py").write_text(
        "import os\n"
        "def main():\n"
        "    open(os.path.join(os.environ['HR_RECORD'], f'fn-{os.getpid()}'), 'w').close()\n"
    )
    srv = start(headrace, "--mule=mule_fn_mod:main", "--pythonpath", str(tmp_path))
    wait_mules(srv, 1, spawns=2)
    srv.wait_log("mule 1: mule_fn_mod:main returned: the master respawns the mule")
    wait_until(lambda: len(list(record_dir.glob("fn-*"))) >= 2, 10, "two runs")


@pytest.mark.parametrize("lazy", [False, True], ids=["preloaded", "lazy"])
def test_decorators_run_in_their_mules(headrace, record_dir, lazy):
    extra = ["--lazy-apps"] if lazy else []
    srv = start(headrace, "--mules", "5", "--farm", "pool:4,5", *extra, app=DECORATED)
    pids = wait_mules(srv, 5)
    # @mule(1): once, in mule 1, which then waits for messages.
    assert recorded(record_dir, f"brain-{pids[1][0]}") == "1"
    assert get(srv, "/mule/1/plain") == "True"
    srv.wait_log("*** mule 1 received a 5 bytes message ***")
    # @muleloop(2): again and again in mule 2.
    wait_until(
        lambda: len(list(record_dir.glob(f"loop-{pids[2][0]}-*"))) >= 3, 10, "three loop rounds"
    )
    # @mulemsg(3): mule 3's messages.
    assert get(srv, "/mule/3/m1") == "True"
    assert recorded(record_dir, "mulemsg-m1") == f"3 {pids[3][0]}"
    # @farm("pool"): each farm message to one of mules 4 and 5.
    for i in range(6):
        assert get(srv, f"/farm/pool/f{i}") == "None"
    for i in range(6):
        assert recorded(record_dir, f"farm-f{i}").split()[0] in ("4", "5")
    assert not list(record_dir.glob("brain-*"))[1:], "brain ran once"
    assert "Traceback" not in srv.log()


# --- supervision ------------------------------------------------------------------------------


def test_mules_are_respawned_reloaded_and_stopped(headrace, record_dir, tmp_path):
    touch = tmp_path / "mules.touch"
    touch.write_text("")
    srv = start(headrace, f"--mule={SCRIPT}", "--mules", "1", "--touch-mules-reload", str(touch))
    pids = wait_mules(srv, 2)
    first = pids[1][0]
    # kill -9: respawned, and the new one runs the script again.
    os.kill(first, signal.SIGKILL)
    pids = wait_mules(srv, 1, spawns=2)
    srv.wait_log(f"DAMN ! mule 1 (pid: {first}) died, killed by signal 9")
    recorded(record_dir, f"script-{pids[1][1]}")
    assert not pid_alive(first)
    # SIGHUP reloads the workers and the mules.
    before = mule_pids(srv)
    os.kill(srv.proc.pid, signal.SIGHUP)
    after = wait_respawned(srv, before)
    recorded(record_dir, f"script-{after[1][-1]}")
    # --touch-mules-reload: only the mules restart.
    workers = set(srv.worker_pids())
    before = mule_pids(srv)
    touch.write_text("x")
    os.utime(touch, (time.time() + 2, time.time() + 2))
    srv.wait_log("has been touched... mules reload !!!")
    after = wait_respawned(srv, before)
    assert set(srv.worker_pids()) == workers
    # Stopped with the master: no mule left behind.
    live = [after[1][-1], after[2][-1]]
    assert all(pid_alive(p) for p in live)
    assert srv.stop() == 0
    assert srv.leftover_pids() == []
    assert not any(pid_alive(p) for p in live)


def test_mule_harakiri_kills_a_stuck_handler(headrace, record_dir):
    srv = start(headrace, "--mules", "1", "--mule-harakiri", "1")
    pids = wait_mules(srv, 1)
    # A quick task is not touched; a stuck one is killed and the mule respawned.
    assert get(srv, "/msg?to=1&body=sleep:0.1") == "True"
    recorded(record_dir, f"slept-{pids[1][0]}")
    assert get(srv, "/msg?to=1&body=sleep:30") == "True"
    srv.wait_log(f"HARAKIRI: mule 1 (pid {pids[1][0]}) stuck 1s on a message (on_message), killing")
    pids = wait_mules(srv, 1, spawns=2)
    assert "in on_message" in srv.log()  # faulthandler's traceback of the stuck handler
    assert get(srv, "/msg?to=1&body=rec:after") == "True"
    assert recorded(record_dir, "msg-after") == f"1 {pids[1][1]}"


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--mules", "2", "--farm", "pool:1,3"], "--farm"),
        (["--mules", "2", "--farm", "pool"], "--farm"),
        (["--mule=work.txt"], "--mule"),
    ],
)
def test_bad_values_exit_2_naming_the_option(args, option):
    p = run_headrace(
        ["--http-socket", f"127.0.0.1:{free_port()}", "--wsgi-file", APP, "--master", *args]
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert option.lstrip("-") in lines[0]


# --- uWSGI as the reference --------------------------------------------------------------------


def uwsgi_binary() -> str:
    exe = shutil.which("uwsgi", path=str(Path(sys.executable).parent)) or shutil.which("uwsgi")
    if exe is None:
        pytest.fail("pyuwsgi's uwsgi is not installed (./dev setup installs pyuwsgi)")
    return exe


@contextlib.contextmanager
def uwsgi_server(tmp_path: Path, app: str, *args: str):
    """uWSGI (pyuwsgi) serving `app` with `args`, recording into its own directory; yields
    (an object with .port, its record directory)."""
    port = free_port()
    record = tmp_path / "theirs"
    record.mkdir()
    log = open(tmp_path / "uwsgi.log", "wb")  # noqa: SIM115 - closed below
    cmd = [uwsgi_binary(), "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", app, "--master"]
    uw = subprocess.Popen(
        [*cmd, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(REPO),
        env={**os.environ, "HR_RECORD": str(record)},
    )
    theirs = types.SimpleNamespace(port=port)
    try:
        wait_until(lambda: _try(theirs, "/id"), 20, "uWSGI answering")
        yield theirs, record
    finally:
        uw.send_signal(signal.SIGINT)
        try:
            uw.wait(10)
        except subprocess.TimeoutExpired:
            uw.kill()
            uw.wait(5)
        log.close()


def test_the_same_app_under_uwsgi(headrace, record_dir, tmp_path):
    """The app's calls give what uWSGI gives: the same answers, the same mule ids."""
    args = ("--processes", "2", "--mules", "2", "--farm", "pool:1,2")
    with uwsgi_server(tmp_path, APP, *args) as (theirs, theirs_record):
        ours = start(headrace, *args[2:])
        wait_mules(ours, 2)
        paths = [
            "/id",
            "/msg?to=1&body=rec:a",
            "/msg?to=2&body=rec:b",
            "/msg?body=rec:c",
            "/msg?to=pool&body=rec:d",
            "/farm_msg?farm=pool&body=rec:e",
            "/call?name=x",
            "/call2?name=y",
            "/get",
        ]
        answers = [(get(theirs, p), get(ours, p)) for p in paths]
        assert [a for a, _ in answers] == [b for _, b in answers], answers
        for rec in (theirs_record, record_dir):
            assert recorded(rec, "msg-a").split()[0] == "1"
            assert recorded(rec, "msg-b").split()[0] == "2"
            assert recorded(rec, "func2-y").split()[0] == "2"
            for name in ("msg-c", "msg-d", "msg-e", "func-x"):
                assert recorded(rec, name).split()[0] in ("1", "2")


def test_the_decorators_under_uwsgi(headrace, record_dir, tmp_path):
    """@mule, @muleloop, @mulemsg and @farm do in headrace what they do in uWSGI."""
    args = ("--processes", "1", "--mules", "5", "--farm", "pool:4,5")
    with uwsgi_server(tmp_path, DECORATED, *args) as (theirs, theirs_record):
        ours = start(headrace, *args[2:], processes=1, app=DECORATED)
        wait_mules(ours, 5)
        for srv in (theirs, ours):
            assert get(srv, "/mule/3/m1") == "True"
            assert get(srv, "/farm/pool/f1") == "None"
        for rec in (theirs_record, record_dir):
            wait_until(lambda rec=rec: list(rec.glob("brain-*")), 10, "@mule ran")
            assert [p.read_text() for p in rec.glob("brain-*")] == ["1"]
            wait_until(lambda rec=rec: len(list(rec.glob("loop-*"))) >= 3, 10, "@muleloop")
            assert {p.read_text() for p in rec.glob("loop-*")} == {"2"}
            assert recorded(rec, "mulemsg-m1").split()[0] == "3"
            assert recorded(rec, "farm-f1").split()[0] in ("4", "5")


def test_a_script_mule_under_uwsgi(headrace, record_dir, tmp_path):
    """A `--mule=FILE.py` runs as __main__ and `mule_get_msg(timeout=1)` gives b"" in both."""
    args = ("--processes", "1", f"--mule={SCRIPT}")
    with uwsgi_server(tmp_path, APP, *args) as (theirs, theirs_record):
        ours = start(headrace, *args[2:], processes=1)
        wait_mules(ours, 1)
        for srv in (theirs, ours):
            assert get(srv, "/msg?to=1&body=hello") == "True"
        for rec in (theirs_record, record_dir):
            assert recorded(rec, "got-hello").split()[0] == "1"
            wait_until(lambda rec=rec: list(rec.glob("script-timeouts-*")), 10, "a timeout")
            started = [p.read_text() for p in rec.glob("script-*") if "timeouts" not in p.name]
            assert [s.split()[:2] for s in started] == [["1", "__main__"]]


def test_a_mule_that_ignores_sigterm_is_killed_after_its_mercy(headrace, record_dir, tmp_path):
    touch = tmp_path / "mules.touch"
    touch.write_text("")
    stubborn = str(APPS / "mule_stubborn.py")
    srv = start(
        headrace,
        f"--mule={stubborn}",
        "--mule-reload-mercy",
        "1",
        "--touch-mules-reload",
        str(touch),
    )
    before = wait_mules(srv, 1)
    recorded(record_dir, f"stubborn-{before[1][0]}")
    os.utime(touch, (time.time() + 2, time.time() + 2))
    srv.wait_log(f"mule 1 (pid: {before[1][0]}) did not stop in time: SIGKILL")
    after = wait_respawned(srv, before)
    recorded(record_dir, f"stubborn-{after[1][-1]}")
    # The server's graceful stop gives auxiliary processes the workers' --reload-mercy (60 s),
    # not --mule-reload-mercy: stop this one at once.
    assert srv.stop(signal.SIGINT) is not None
