#!/usr/bin/env python3
"""The entry point of `bench/run`: headrace against its peers (see bench/README.md).

The harness itself is the package bench/harness/ (its __init__ says which module does what).
Standard library only: it runs under the system python3 and drives servers installed in its own
virtualenv, bench/.venv. Every server process it starts is stopped by PID in a `finally`, and
every external command has a timeout, so a hung server cannot hang the run.

The other scripts here (hotpath.py, static.py, ...) `import bench` for the harness's helpers:
the names below are what they use.
"""

from __future__ import annotations

import sys
import types
from dataclasses import asdict
from typing import Any

from harness import launch, procs
from harness.cli import main
from harness.common import (
    APPS,
    CLIENT_CORE,
    CORES,
    LISTEN_BACKLOG,
    LOGS,
    RESULTS,
    ROOT,
    VENV,
    WRK_SCRIPTS,
    RunError,
    log,
    one_line,
    tail,
)
from harness.launch import READY_TIMEOUT, free_port, http_status, launched, spawn
from harness.load import wrk
from harness.prepare import (
    Setup,
    build_headrace,
    ensure_apt_tools,
    ensure_venv,
    git_describe,
    loadavg,
    use_headrace,
)
from harness.procs import STOP_GRACE, run_bounded, stop_process, tree
from harness.records import WrkRun
from harness.scenarios import HELLO
from harness.servers import Server, headrace_cmd

__all__ = [
    "APPS",
    "CLIENT_CORE",
    "CORES",
    "HELLO",
    "LISTEN_BACKLOG",
    "LOGS",
    "READY_TIMEOUT",
    "RESULTS",
    "ROOT",
    "STOP_GRACE",
    "VENV",
    "WRK_SCRIPTS",
    "RunError",
    "Server",
    "Setup",
    "build_headrace",
    "ensure_apt_tools",
    "ensure_venv",
    "free_port",
    "git_describe",
    "headrace_cmd",
    "http_status",
    "launched",
    "loadavg",
    "log",
    "main",
    "one_line",
    "run_bounded",
    "spawn",
    "stop_process",
    "tail",
    "tree",
    "use_headrace",
    "wrk",
    "wrk_metrics",
]


def wrk_metrics(raw: dict[str, int]) -> dict[str, Any]:
    """wrk's numbers (bench/wrk/report.lua) as the flat dict the JSON keeps for a run."""
    return asdict(WrkRun.from_wrk(raw))


class _Limits(types.ModuleType):
    """hotpath.py lengthens READY_TIMEOUT and STOP_GRACE by assigning them on this module; the
    harness reads them from harness.launch and harness.procs, so the assignment goes there too."""

    def __setattr__(self, name: str, value: object) -> None:
        for module in (launch, procs):
            if name in ("READY_TIMEOUT", "STOP_GRACE") and hasattr(module, name):
                setattr(module, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Limits

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
