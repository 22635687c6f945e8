"""Thread exhaustion (issue 17 item 2) against a real `aocu serve` (2 workers x 4 threads): slow-header and
slow-body clients get no request thread (cu/serve/worker.py), dry-runs have their own slots, wall-clock limit and
per-client rate (cu/http/admission.py), and /health, /ready and result reads stay served meanwhile."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from cu.codec.wallet import ArweaveWallet
from cu.http import create_app
from cu.serve.worker import ready
from tests.test_node_e2e import Node, request, send, spawn, upload_module

HEADER_TIMEOUT = 2.0
LOOP = json.dumps({"Tags": [{"name": "Action", "value": "Eval"}], "Data": "while true do end"}).encode()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from tests.modules.build import build
    n = Node(tmp_path_factory.mktemp("hostile-load") / "data", workers=2,
             extra=("--header-timeout", str(HEADER_TIMEOUT), "--dry-run-timeout", "3", "--dry-run-rate", "20"))
    wallet = ArweaveWallet.generate()
    n.wallet = wallet
    n.pid = spawn(n.url, wallet, upload_module(n.url, wallet, build("lua32").read_bytes()))
    n.mid = send(n.url, wallet, n.pid, "Echo", "warm")
    assert request("GET", f"{n.url}/result/{n.mid}?process-id={n.pid}")[0] == 200
    yield n
    n.stop_term()


def _slowloris(port: int, stop: threading.Event, out: list[str], body: bool = False) -> None:
    """A client that sends its request a few bytes at a time, forever (until the node closes it)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(0.3)
    head = (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 200000\r\n\r\n" if body
            else b"GET /health HTTP/1.1\r\nHost: a\r\n")
    s.sendall(head)
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            try:
                s.sendall(b"x" if body else b"X-A: b\r\n")
            except OSError:
                out.append(f"closed after {time.monotonic() - t0:.1f}s")
                return
            try:
                got = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                got = b""
            out.append(f"{got[:12].decode(errors='replace')} after {time.monotonic() - t0:.1f}s")
            return
        out.append("still open")
    finally:
        s.close()


def _timed(method: str, url: str, body: bytes | None = None) -> tuple[int, float, dict]:
    t0 = time.perf_counter()
    status, _, headers = request(method, url, body, {"Content-Type": "application/json"} if body else None,
                                 timeout=30)
    return status, time.perf_counter() - t0, headers


@pytest.mark.slow
def test_health_and_results_are_served_under_slow_clients_and_runaway_dry_runs(node):
    stop = threading.Event()
    slow: list[str] = []
    clients = [threading.Thread(target=_slowloris, args=(node.port, stop, slow, i % 2 == 1)) for i in range(10)]
    dry: list[tuple[int, float, dict]] = []
    runaway = [threading.Thread(target=lambda: dry.append(_timed("POST", f"{node.url}/dry-run?process-id={node.pid}",
                                                                   LOOP))) for _ in range(8)]
    for t in clients + runaway:
        t.start()
    time.sleep(0.5)     # every slow client connected, every dry-run admitted or queued
    lat: list[float] = []
    try:
        for i in range(12):
            for path in ("/health", "/ready", f"/result/{node.mid}?process-id={node.pid}"):
                status, took, _ = _timed("GET", node.url + path)
                assert status == 200, (path, status)
                lat.append(took)
            if i % 4 == 0:       # and new messages are acknowledged and evaluated
                mid = send(node.url, node.wallet, node.pid, "Echo", f"m{i}")
                status, took, _ = _timed("GET", f"{node.url}/result/{mid}?process-id={node.pid}")
                assert status == 200
                lat.append(took)
            time.sleep(0.1)
    finally:
        for t in runaway:
            t.join(30)
        time.sleep(HEADER_TIMEOUT + 1.5)
        stop.set()
        for t in clients:
            t.join(10)
    lat.sort()
    assert lat[-1] < 2.0 and lat[len(lat) // 2] < 0.5, lat
    # each runaway dry-run ran at most --dry-run-timeout, or was refused at once with Retry-After
    statuses = sorted(s for s, _, _ in dry)
    assert set(statuses) <= {200, 503} and statuses.count(200) >= 2, dry
    for status, took, headers in dry:
        assert took < 3 + 9, dry      # --dry-run-timeout 3 (not --eval-timeout 30), with slack for a loaded CI
        if status == 503:
            assert headers.get("Retry-After") == "1"
    # the slow clients were answered 408 (or closed) after about --header-timeout, not left holding threads
    assert len(slow) == 10 and all(s.startswith(("HTTP/1.1 408", "closed")) for s in slow), slow
    assert all(float(s.rsplit(" ", 1)[1][:-1]) < HEADER_TIMEOUT + 2.5 for s in slow), slow


@pytest.mark.slow
def test_a_slow_large_body_is_answered_408(node):
    """A body over what the poller reads ahead (1 MiB) is read by a thread, under a deadline."""
    s = socket.create_connection(("127.0.0.1", node.port))
    s.settimeout(HEADER_TIMEOUT + 10)
    t0 = time.monotonic()
    s.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n" + b"x" * 1000)
    got = b""
    try:
        while b"\r\n\r\n" not in got:
            s.sendall(b"x")
            time.sleep(0.2)
            s.setblocking(False)
            try:
                got += s.recv(4096)
            except BlockingIOError:
                pass
            s.setblocking(True)
    except OSError:
        pass
    finally:
        s.close()
    assert got.startswith(b"HTTP/1.1 408") and b"request body not received within 2 s" in got, got
    assert time.monotonic() - t0 < HEADER_TIMEOUT + 3


@pytest.mark.slow
def test_a_dry_run_obeys_its_own_wall_clock_limit(node):
    status, took, _ = _timed("POST", f"{node.url}/dry-run?process-id={node.pid}", LOOP)
    assert status in (200, 503)
    if status == 200:
        assert 2.5 < took < 12


def test_dry_run_rate_limit_per_client(tmp_path):
    app = create_app({"data_dir": tmp_path / "n", "evaluator": "embedded", "tee": "none", "dry_run_rate": 0.5,
                      "dry_run_burst": 2, "dry_run_slots": 1, "eager": False})
    try:
        c = app.test_client()
        codes = [c.post("/dry-run?process-id=nope", json={}, environ_base={"REMOTE_ADDR": "10.9.9.9"})
                 for _ in range(3)]
        assert [r.status_code for r in codes] == [404, 404, 429]
        assert codes[2].headers["Retry-After"] == "2" and "too many dry-runs from 10.9.9.9" in codes[2].json["error"]
        # another client has its own bucket, and the AO-Core dry-run route shares the client's
        assert c.post("/dry-run?process-id=nope", json={}, environ_base={"REMOTE_ADDR": "10.9.9.8"}).status_code == 404
        r = c.get("/nope~process@1.0/as=execution/compute", environ_base={"REMOTE_ADDR": "10.9.9.9"})
        assert r.status_code == 429
    finally:
        app.extensions["aocu"].dispatcher.stop()


def test_ready_decides_when_a_connection_gets_a_thread():
    assert not ready(b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert ready(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert not ready(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc")
    assert ready(b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nabcde")
    assert ready(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")             # large: read by the thread
    assert ready(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert ready(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert ready(b"G" * 70000)                                                      # the parser answers 400


# -- the worker class alone, under real gunicorn (2 threads) ------------------------------------------------------

@pytest.fixture()
def aocu_worker(tmp_path):
    from tests.test_http_worker import APP, gunicorn_server
    # --preload: the app module (and the class setting in it) is imported by the master, before the fork
    yield from gunicorn_server(
        tmp_path, APP + "\nfrom cu.serve.worker import AocuWorker\nAocuWorker.header_timeout_s = 1.5\n",
        "cu.serve.worker.AocuWorker", "--preload")


def test_worker_keeps_the_keep_alive_behaviour(aocu_worker):
    from tests import test_http_worker as t
    t.test_back_to_back_requests_on_one_connection(aocu_worker)
    t.test_pipelined_requests_are_all_answered_in_order(aocu_worker)
    t.test_idle_connection_goes_back_to_the_poller_and_still_works(aocu_worker)


def test_slow_clients_hold_no_thread_of_a_two_thread_worker(aocu_worker):
    from tests.test_http_worker import _get, _responses
    slow = [socket.create_connection(("127.0.0.1", aocu_worker)) for _ in range(6)]
    try:
        for i, s in enumerate(slow):       # partial heads, partial small bodies, a pipelined partial head
            s.sendall([b"GET /echo HTTP/1.1\r\nHost: t\r\n",
                       b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc",
                       _get("p") + b"GET /echo HTTP/1.1\r\n"][i % 3])
        time.sleep(0.3)
        t0 = time.monotonic()
        for i in range(5):
            with socket.create_connection(("127.0.0.1", aocu_worker)) as c:
                c.sendall(_get(f"n{i}"))
                assert _responses(c, 1)[0][0] == 200
        assert time.monotonic() - t0 < 1.0
        # each slow client gets 408 (after its answered first request, for the pipelined one) and is closed
        for i, s in enumerate(slow):
            s.settimeout(5)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.count(b"HTTP/1.1 ") == (2 if i % 3 == 2 else 1) and data.rfind(b"HTTP/1.1 408") >= 0, data
    finally:
        for s in slow:
            s.close()
