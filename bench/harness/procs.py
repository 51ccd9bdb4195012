"""Running external commands with a timeout, and stopping a process tree by PID.

Everything started here runs in its own session; it is stopped by PID (SIGTERM, then SIGKILL for
whatever of its tree is still there), never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.common import log

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    state: str
    start: int  # starttime in clock ticks: tells a PID apart from a later reuse


def proc_table() -> dict[int, ProcInfo]:
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        # fields after the command: state ppid pgrp session tty tpgid flags ... starttime(#22)
        try:
            table[int(entry)] = ProcInfo(
                int(entry), int(rest[1]), int(rest[2]), rest[0], int(rest[19])
            )
        except (IndexError, ValueError):
            continue
    return table


def tree(leader: int, table: dict[int, ProcInfo] | None = None) -> dict[int, ProcInfo]:
    """The leader, its descendants, and whatever else is left in its process group."""
    table = proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: dict[int, ProcInfo] = {}
    stack = [leader]
    while stack:
        pid = stack.pop()
        if pid in found or pid not in table:
            continue
        found[pid] = table[pid]
        stack.extend(children.get(pid, []))
    for info in table.values():
        if info.pgid == leader:
            found.setdefault(info.pid, info)
    return found


def still_alive(known: dict[int, ProcInfo]) -> list[int]:
    table = proc_table()
    return [
        pid
        for pid, info in known.items()
        if pid in table and table[pid].start == info.start and table[pid].state != "Z"
    ]


def stop_process(proc: subprocess.Popen, grace: float | None = None) -> None:
    """SIGTERM the process, wait up to `grace`, then SIGKILL it and any of its tree still there."""
    grace = STOP_GRACE if grace is None else grace
    known = tree(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is None:
            known.update(tree(proc.pid))
        elif not still_alive(known):
            break
        time.sleep(0.02)
    if proc.poll() is None:
        known.update(tree(proc.pid))
    leftovers = still_alive(known)
    for pid in leftovers:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} did not die after SIGKILL")
    if leftovers:
        deadline = time.monotonic() + 3
        while still_alive(known) and time.monotonic() < deadline:
            time.sleep(0.02)


def run_bounded(
    argv: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
) -> tuple[int, str]:
    """Runs a command to completion or until `timeout`; returns (exit code, output).

    Output (stdout and stderr together) goes to `log_path` when given, else it is captured.
    On timeout the whole process tree is stopped and the exit code is -1.
    """
    out_file = open(log_path, "w+b") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_file,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as e:
            return 127, f"{argv[0]}: {e}"
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=2)
            rc = -1
        finally:
            if proc.poll() is None:
                stop_process(proc, grace=1)
        out_file.flush()
        out_file.seek(0)
        text = out_file.read().decode("utf-8", "replace")
        if rc == -1:
            text += f"\n[bench] timed out after {timeout:.0f} s\n"
        return rc, text
    finally:
        out_file.close()
