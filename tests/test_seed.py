"""The seed scenario: examples/seed_app.py with 5 processes, 20 parallel requests from
examples/seed_client.py, four waves of five."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest
from support import REPO, free_port


@pytest.mark.slow
@pytest.mark.parametrize("bind", ["--http-socket", "--http"])
def test_seed_four_waves(headrace, bind):
    port = free_port()
    srv = headrace(bind, f"127.0.0.1:{port}", "--wsgi-file", str(REPO / "examples/seed_app.py"),
                   "--master", "--processes", "5", env={"SEED_SLEEP": "1"}, port=port,
                   probe=None, workers=5)
    workers = srv.worker_pids()
    assert len(set(workers)) == 5

    client = subprocess.run(
        [sys.executable, str(REPO / "examples/seed_client.py"), "--url",
         f"http://127.0.0.1:{port}"],
        check=False, capture_output=True, text=True, timeout=60,
    )
    out = client.stdout
    assert client.returncode == 0, out + client.stderr
    returned = re.findall(r"^Request_(\d+) returned 200 'true' after ([\d.]+) s$", out, re.MULTILINE)
    assert sorted(int(i) for i, _ in returned) == list(range(20)), out
    total = float(re.search(r"^20 of 20 requests done in ([\d.]+) s$", out, re.MULTILINE).group(1))
    assert 3.5 <= total <= 6.0, f"20 requests took {total} s, wanted four 1 s waves\n{out}"

    # Four waves of five: the finish times fall into four groups about a second apart.
    times = sorted(float(t) for _, t in returned)
    waves = [times[i:i + 5] for i in range(0, 20, 5)]
    for a, b in zip(waves, waves[1:]):
        assert b[0] - a[-1] > 0.5, f"waves not separated: {waves}"
    for w in waves:
        assert w[-1] - w[0] < 0.5, f"a wave is spread out: {waves}"

    lines = srv.wait_request_lines(20)
    assert len(lines) == 20
    per_pid = Counter(int(m["pid"]) for m in lines)
    assert set(per_pid) == set(workers), f"request pids {per_pid} vs workers {workers}"
    assert set(per_pid.values()) == {4}, f"each worker should serve 4: {per_pid}"
    assert sorted(int(m["treq"]) for m in lines) == list(range(1, 21))
    for m in lines:
        assert m["method"] == "GET" and m["uri"].startswith("/?param=Request_")
        assert m["status"] == "200" and m["size"] == "4" and m["proto"] == "HTTP/1.1"
        assert 900 <= int(m["msecs"]) < 3000
    log = srv.log()
    for i in range(20):
        assert f"Accept incoming request: Request_{i}\n" in log
