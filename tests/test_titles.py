"""Process titles as uWSGI sets them (`--auto-procname`, `--procname*`), so that `ps` and `top`
tell the master, the workers and the router apart; without those options the command line is
left alone, as in uWSGI."""

from __future__ import annotations

import re

import pytest
from support import free_port, wait_until


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace").strip()


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().rstrip("\n")


def router_pid(srv) -> int | None:
    m = re.search(r"spawned headrace http 1 \(pid: (\d+)\)", srv.log())
    return int(m.group(1)) if m else None


@pytest.mark.parametrize("front", ["--http-socket", "--http"])
def test_auto_procname(headrace, front):

    port = free_port()
    srv = headrace(front, f"127.0.0.1:{port}", "--wsgi-file", "tests/apps/basic.py",
                   "--processes", "2", "--auto-procname", "--procname-prefix-spaced", "myapp",
                   port=port, workers=2)
    master = srv.proc.pid
    wait_until(lambda: cmdline(master) == "myapp headrace master", 5, "the master's title")
    assert comm(master) == "myapp headrace "  # the kernel keeps 15 bytes
    pids = srv.worker_pids()
    titles = sorted(cmdline(p) for p in pids)
    assert titles == ["myapp headrace worker 1", "myapp headrace worker 2"], titles
    if front == "--http":
        assert cmdline(router_pid(srv)) == "myapp headrace http 1"


def test_procname_without_auto_names_only_the_master(headrace):
    srv = headrace("--wsgi-file", "tests/apps/basic.py", "--processes", "1",
                   "--procname", "shop", "--procname-append", " [prod]", workers=1)
    master = srv.proc.pid
    wait_until(lambda: cmdline(master) == "shop [prod]", 5, "the master's title")
    (worker,) = srv.worker_pids()
    assert "--procname" in cmdline(worker), "a worker without --auto-procname keeps its command line"


def test_no_title_options_leave_the_command_line(headrace):
    srv = headrace("--wsgi-file", "tests/apps/basic.py", "--processes", "1", workers=1)
    assert "--wsgi-file" in cmdline(srv.proc.pid)
    assert all("--wsgi-file" in cmdline(p) for p in srv.worker_pids())
