"""The router's links to workers and its queue, after the rework that pipelines requests on
pooled links: responses stay matched to their requests under concurrency (small, streamed and
large bodies mixed), a queued request whose client left is never run, fractional
`--queue-timeout`, HTTP/1.0 status lines, a spill-file error answered 503 (not 413), and an
accept loop that backs off on EMFILE instead of spinning.
"""

from __future__ import annotations

import json
import os
import re
import resource
import threading
import time

from support import Conn, app, build_request, wait_until
from test_router import get, start

RT = app("rt_app.py")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[-1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_concurrent_mixed_responses_stay_matched(headrace):
    """Many keep-alive clients on one worker: the router batches their requests on one link;
    each client must get exactly its own answer, whatever the sizes and framings around it."""
    srv = start(headrace, "--wsgi-file", RT, "--master", "--processes", "1")
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        try:
            with srv.connect(20) as c:
                for i in range(40):
                    kind = (n + i) % 4
                    if kind == 0:
                        c.send(get(f"/echo-path?c={n}&i={i}"))
                        r = c.read_response()
                        ok = r.status == 200 and r.body == f"/echo-path?c={n}&i={i}".encode()
                    elif kind == 1:
                        c.send(get("/stream?n=30"))
                        r = c.read_response()
                        ok = r.status == 200 and r.body == b"".join(
                            f"line {k}\n".encode() for k in range(30))
                    elif kind == 2:
                        c.send(get("/big?mb=1"))
                        r = c.read_response()
                        ok = r.status == 200 and r.body == b"x" * (1 << 20)
                    else:
                        body = f"{n}-{i}".encode() * 100
                        c.send(build_request("POST", "/echo", body=body))
                        r = c.read_response()
                        ok = r.status == 200 and r.body == body
                    if not ok:
                        with lock:
                            errors.append(f"client {n} request {i} kind {kind}: {r.status}")
                        return
        except Exception as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(f"client {n}: {e!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    assert not errors, errors[:5]


def test_queued_request_of_a_departed_client_never_runs(headrace):
    srv = start(headrace, "--wsgi-file", RT, "--master", "--processes", "1")
    (pid,) = srv.worker_pids()
    with srv.connect(20) as busy:
        busy.send(get("/sleep?s=1&tag=hold"))
        srv.wait_log(f"SLEEP-START {pid} hold", timeout=5)
        with srv.connect(5) as gone:
            gone.send(get("/echo-path?departed=1"))
            time.sleep(0.2)  # read and queued by the router
        r = busy.read_response()
        assert r.status == 200
    r = srv.request(get("/echo-path?after=1"))
    assert r.status == 200
    # the line is logged after the response: wait for it, then look at every line before it
    srv.wait_log("GET /echo-path?after=1 =>", timeout=5)
    uris = [m.group("uri") for m in srv.request_lines()]
    assert "/echo-path?after=1" in uris
    assert not any("departed" in u for u in uris), f"the departed client's request ran: {uris}"


def test_fractional_queue_timeout(headrace):
    srv = start(headrace, "--wsgi-file", RT, "--master", "--processes", "1",
                "--queue-timeout", "0.5")
    (pid,) = srv.worker_pids()
    with srv.connect(20) as busy:
        busy.send(get("/sleep?s=2&tag=hold"))
        srv.wait_log(f"SLEEP-START {pid} hold", timeout=5)
        t0 = time.monotonic()
        r = srv.request(get("/echo-path?waits=1"))
        took = time.monotonic() - t0
        assert r.status == 503, r
        assert 0.45 <= took < 1.5, f"503 after {took:.2f} s with --queue-timeout 0.5"
        assert b"queue-timeout" in r.body
        assert busy.read_response().status == 200


def test_http10_clients_get_http10_status_lines(headrace):
    srv = start(headrace, "--wsgi-file", RT, "--master", "--processes", "1", "--max-queue", "1")
    r = srv.request(b"GET /pid HTTP/1.0\r\n\r\n")
    assert (r.version, r.status) == ("HTTP/1.0", 200)
    # a response the router makes itself, too
    (pid,) = srv.worker_pids()
    with srv.connect(20) as busy, srv.connect(20) as queued:
        busy.send(get("/sleep?s=1&tag=hold"))
        srv.wait_log(f"SLEEP-START {pid} hold", timeout=5)
        queued.send(get("/echo-path?q=1"))
        time.sleep(0.2)
        r = srv.request(b"GET /echo-path?refused=1 HTTP/1.0\r\n\r\n")
        assert (r.version, r.status) == ("HTTP/1.0", 503)
        assert busy.read_response().status == 200
        assert queued.read_response().status == 200


def test_spill_file_error_is_503_and_router_lives(headrace, tmp_path):
    missing = tmp_path / "no-such-dir"
    srv = start(headrace, "--wsgi-file", RT, "--master", "--processes", "1",
                env={"TMPDIR": str(missing)})
    body = b"y" * (2 << 20)  # past the 1 MiB in-memory limit: spills to a file
    r = srv.request(build_request("POST", "/upload", body=body), timeout=20)
    assert r.status == 503, r
    assert r.header("Retry-After") is not None
    assert "cannot buffer a request body" in srv.log()
    missing.mkdir()
    r = srv.request(build_request("POST", "/upload", body=body), timeout=20)
    assert r.status == 200 and json.loads(r.body)["size"] == len(body)


def test_accept_backs_off_on_emfile(headrace):
    srv = start(headrace, "--wsgi-file", RT, "--master", "--processes", "1")
    router = srv.router_pid()
    assert srv.request(get("/pid")).status == 200
    soft, hard = resource.prlimit(router, resource.RLIMIT_NOFILE)
    opened = len(os.listdir(f"/proc/{router}/fd"))
    resource.prlimit(router, resource.RLIMIT_NOFILE, (opened + 4, hard))
    conns: list[Conn] = []
    try:
        for _ in range(12):
            conns.append(srv.connect(5))
        srv.wait_log("accept failed", timeout=5)
        before = cpu_seconds(router)
        time.sleep(1.0)
        used = cpu_seconds(router) - before
        assert used < 0.3, f"the router used {used:.2f} s of CPU in 1 s while out of fds"
        assert srv.log().count("accept failed") <= 3, "complaints not limited to one a second"
    finally:
        for c in conns:
            c.close()
        resource.prlimit(router, resource.RLIMIT_NOFILE, (soft, hard))
    wait_until(lambda: srv.request(get("/pid")).status == 200, 10, "serving again")


def test_links_land_on_distinct_threads(headrace):
    """With --threads 2 the router keeps one link per worker thread: two requests at once run
    side by side, never one behind the other on the same thread."""
    srv = start(headrace, "--wsgi-file", RT, "--master", "--processes", "1", "--threads", "2")
    assert len(set(re.findall(r"serves the router link @(\S+)", srv.log()))) == 2
    for round_ in range(3):
        results: list[float] = []

        def slow(tag: str, results: list[float] = results) -> None:
            t0 = time.monotonic()
            r = srv.request(get(f"/sleep?s=0.6&tag={tag}"), timeout=10)
            assert r.status == 200
            results.append(time.monotonic() - t0)

        threads = [threading.Thread(target=slow, args=(f"r{round_}-{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(results) == 2
        assert max(results) < 1.1, f"round {round_}: {results} — the requests ran one after another"
