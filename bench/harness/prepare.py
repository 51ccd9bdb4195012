"""The Setup of a run: wrk and nginx, bench/.venv with the pinned peers, the ceiling server,
headrace itself, and the facts about the machine and checkout that the results name."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.common import (
    CEILING_DIR,
    CLIENT_CORE,
    CORES,
    LOGS,
    REQUIREMENTS,
    ROOT,
    VENV,
    WSLOAD_DIR,
    log,
    one_line,
)
from harness.procs import run_bounded


@dataclass
class Setup:
    pin: bool = False
    wrk: str | None = None
    nginx: str | None = None
    ceiling: Path | None = None
    wsload: Path | None = None  # the WebSocket load client (bench/wsload)
    unavailable: dict[str, str] = field(default_factory=dict)  # requirement -> reason
    versions: dict[str, str] = field(default_factory=dict)
    gunicorn_no_control_socket: bool = False
    build_log_tail: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    headrace_bin: str = str(VENV / "bin" / "headrace")
    headrace_help: dict[str, str] = field(default_factory=dict)  # option -> its --help line
    headrace_origin: str = "built into bench/.venv by `pip install <repo>` (maturin, release)"

    def bin(self, name: str) -> str:
        return str(VENV / "bin" / name)

    def server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)
        env["VIRTUAL_ENV"] = str(VENV)
        env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def pinned(self, core: int, argv: list[str]) -> list[str]:
        return ["taskset", "-c", str(core), *argv] if self.pin else argv

    def unpinned(self, argv: list[str]) -> list[str]:
        """On every core: the harness pinned itself to the client core, and its children
        inherit that, so an unpinned server needs taskset too."""
        return ["taskset", "-c", f"0-{CORES - 1}", *argv] if self.pin else argv


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def ensure_apt_tools(st: Setup, allow_apt: bool, extra: tuple[str, ...] = ()) -> None:
    """wrk and nginx (and `extra` packages) from Debian's packages when missing."""
    missing = []
    if not shutil.which("wrk"):
        missing.append("wrk")
    if not find_nginx():
        missing.append("nginx")
    missing += [
        p
        for p in extra
        if subprocess.call(["dpkg", "-s", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        != 0
    ]
    if missing and allow_apt and shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log(f"apt-get install {' '.join(missing)}")
        rc, out = run_bounded([*sudo, "apt-get", "update", "-qq"], timeout=300, env=env)
        if rc != 0:
            log(f"apt-get update failed ({rc}): {one_line(out.splitlines()[-3:])}")
        rc, out = run_bounded(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            timeout=600,
            env=env,
        )
        if rc != 0:
            log(f"apt-get install failed ({rc}): {one_line(out.splitlines()[-3:])}")
    st.wrk = shutil.which("wrk")
    st.nginx = find_nginx()
    if not st.wrk:
        st.unavailable["wrk"] = "wrk is not installed"
    if not st.nginx:
        st.unavailable["nginx"] = "nginx is not installed"


def file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(ROOT)).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError:
            h.update(b"<unreadable>")
        h.update(b"\0")
    return h.hexdigest()


def ensure_venv(st: Setup) -> None:
    """bench/.venv with the pinned peers from requirements.txt (reinstalled when it changes)."""
    if not (VENV / "bin" / "python").exists():
        log(f"creating {VENV}")
        rc, out = run_bounded([sys.executable, "-m", "venv", str(VENV)], timeout=300)
        if rc != 0:
            raise SystemExit(f"cannot create {VENV}: {out}")
    LOGS.mkdir(parents=True, exist_ok=True)
    stamp = VENV / "requirements.stamp"
    digest = file_digest([REQUIREMENTS])
    if not stamp.exists() or stamp.read_text().strip() != digest:
        log("installing pinned peers into bench/.venv (pip)")
        pip = [st.bin("python"), "-m", "pip", "--disable-pip-version-check", "-q"]
        rc, out = run_bounded([*pip, "install", "-r", str(REQUIREMENTS)], timeout=1200)
        if rc != 0:
            tail_lines = out.splitlines()[-3:]
            st.unavailable["peers"] = "pip install -r requirements.txt failed: " + one_line(
                tail_lines
            )
            return
        stamp.write_text(digest + "\n")
    rc, out = run_bounded([st.bin("python"), "-m", "pip", "list", "--format", "json"], 120)
    if rc == 0:
        with contextlib.suppress(ValueError):
            st.versions.update({p["name"].lower(): p["version"] for p in json.loads(out)})
    rc, out = run_bounded([st.bin("gunicorn"), "--help"], timeout=60)
    st.gunicorn_no_control_socket = rc == 0 and "--no-control-socket" in out


def cargo_build(st: Setup, name: str, crate: Path) -> Path | None:
    """`cargo build --release` of one of bench/'s own crates into bench/.venv/NAME-target; the
    binary, or None with the reason in st.unavailable[name]."""
    target = VENV / f"{name}-target"
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    if not shutil.which("cargo"):
        st.unavailable[name] = "cargo is not installed"
        return None
    log(f"building bench/{crate.name} (cargo build --release)")
    rc, out = run_bounded(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", str(crate / "Cargo.toml")],
        timeout=900,
        env=env,
        log_path=LOGS / f"build-{name}.log",
    )
    binary = target / "release" / name
    if rc != 0 or not binary.exists():
        st.unavailable[name] = f"build failed: {one_line(out.splitlines()[-3:])}"
        return None
    return binary


def build_ceiling(st: Setup) -> None:
    st.ceiling = cargo_build(st, "ceiling", CEILING_DIR)


def build_wsload(st: Setup) -> None:
    st.wsload = cargo_build(st, "wsload", WSLOAD_DIR)


def headrace_sources() -> list[Path]:
    files = []
    for name in ("Cargo.toml", "Cargo.lock", "pyproject.toml", "build.rs", "README.md"):
        if (ROOT / name).is_file():
            files.append(ROOT / name)
    for top in ("src", "python"):
        for dirpath, dirnames, filenames in os.walk(ROOT / top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for fname in sorted(filenames):
                if not fname.endswith((".so", ".pyc")):
                    files.append(Path(dirpath) / fname)
    return files


def first_error(lines: list[str]) -> str:
    """The most telling line of a failed `pip install`: rustc's error, else maturin's cause."""
    generic = ("subprocess-exited-with-error", "metadata-generation-failed", "failed-wheel-build")
    for line in lines:
        m = re.match(r"\s*(error(\[E\d+\])?: .*)", line)
        if m and not any(g in line for g in generic):
            return m.group(1).strip()
    causes = [line.strip() for line in lines if "Caused by:" in line]
    if causes:
        return causes[0]
    for line in lines:
        if re.match(r"\s*(error|ERROR|💥)", line):
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def use_headrace(st: Setup, path: str) -> None:
    """--headrace PATH: measure an executable built elsewhere (e.g. by `./dev build`)."""
    st.headrace_bin = str(Path(path).resolve())
    st.headrace_origin = f"the executable given with --headrace ({st.headrace_bin}), not rebuilt"
    check_headrace(st)


def check_headrace(st: Setup) -> None:
    rc, out = run_bounded([st.headrace_bin, "--version"], timeout=30, env=st.server_env())
    if rc != 0:
        st.unavailable["headrace"] = f"`headrace --version` failed: {one_line(out.splitlines())}"
        return
    st.versions["headrace"] = out.strip().splitlines()[-1] if out.strip() else "?"
    rc, out = run_bounded([st.headrace_bin, "--help"], timeout=30, env=st.server_env())
    lines = out.splitlines()
    for i, line in enumerate(lines):
        # `--opt VALUE  text` (headrace), `--opt <VALUE>  text` (clap), or the text on the next
        # line when the option is long
        m = re.match(r"^\s*(?:-\w, )?(--[\w-]+)(?: <?\w+>?)?(?:\s{2,}(\S.*))?$", line)
        if not m:
            continue
        said = m.group(2)
        if said is None and i + 1 < len(lines) and not lines[i + 1].strip().startswith("-"):
            said = lines[i + 1].strip()
        if said:
            st.headrace_help[m.group(1)] = said


def build_headrace(st: Setup, mode: str) -> None:
    """`pip install <repo>` into bench/.venv: a release build by maturin, skipped when unchanged.

    mode: "auto" (build when the sources changed), "always", or "never" (use what is installed).
    """
    binary = VENV / "bin" / "headrace"
    stamp = VENV / "headrace-build.stamp"
    digest = file_digest(headrace_sources())
    fresh = stamp.exists() and stamp.read_text().strip() == digest and binary.exists()
    if mode == "never" or (mode == "auto" and fresh):
        if not binary.exists():
            st.unavailable["headrace"] = "not installed in bench/.venv (and --no-build given)"
            return
        if mode == "auto":
            log("headrace in bench/.venv is up to date with the checkout")
    else:
        log("building headrace from the checkout into bench/.venv (pip install, release mode)")
        stamp.unlink(missing_ok=True)
        env = dict(os.environ, CARGO_TARGET_DIR=str(VENV / "headrace-target"))
        env.pop("CONDA_PREFIX", None)
        env["VIRTUAL_ENV"] = str(VENV)
        build_log = LOGS / "build-headrace.log"
        t0 = time.monotonic()
        rc, out = run_bounded(
            [
                st.bin("python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--force-reinstall",
                "--no-deps",
                str(ROOT),
            ],
            timeout=2400,
            env=env,
            log_path=build_log,
        )
        if rc != 0:
            lines = [line for line in out.splitlines() if line.strip()]
            st.build_log_tail = lines[-40:]
            st.unavailable["headrace"] = f"build failed: {first_error(lines)}"
            log(f"headrace build failed in {time.monotonic() - t0:.0f} s; log: {build_log}")
            return
        log(f"headrace built in {time.monotonic() - t0:.0f} s")
        stamp.write_text(digest + "\n")
    check_headrace(st)


def tool_versions(st: Setup) -> None:
    def first_line(argv: list[str]) -> str:
        rc, out = run_bounded(argv, timeout=20)
        lines = [line for line in out.splitlines() if line.strip()]
        return lines[0].strip() if lines else f"? (exit {rc})"

    if st.wrk:
        st.versions["wrk"] = first_line([st.wrk, "-v"]).split(" Copyright")[0]
    if st.nginx:
        st.versions["nginx"] = first_line([st.nginx, "-v"])
    if shutil.which("rustc"):
        st.versions["rustc"] = first_line(["rustc", "--version"])


def prepare(args: argparse.Namespace) -> Setup:
    st = Setup()
    st.pin = CORES >= 2 and shutil.which("taskset") is not None
    if st.pin:
        # The harness itself (and so wrk and the saturation client) lives on the client core.
        os.sched_setaffinity(0, {CLIENT_CORE})
    else:
        st.notes.append("server and client are NOT pinned to separate cores")
    ensure_apt_tools(st, allow_apt=not args.no_apt)
    ensure_venv(st)
    build_ceiling(st)
    build_wsload(st)
    if args.headrace:
        use_headrace(st, args.headrace)
    else:
        build_headrace(st, "never" if args.no_build else "always" if args.rebuild else "auto")
    tool_versions(st)
    return st


def git_describe() -> str:
    rc, out = run_bounded(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], timeout=20)
    commit = out.strip() if rc == 0 else "(no commit yet)"
    rc, out = run_bounded(
        [
            "git",
            "-C",
            str(ROOT),
            "status",
            "--porcelain",
            "--",
            "src",
            "python",
            "Cargo.toml",
            "pyproject.toml",
        ],
        timeout=20,
    )
    dirty = rc == 0 and out.strip()
    return f"{commit}{' + uncommitted changes' if dirty else ''}"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
