"""A real `aocu serve` (gunicorn master, 2 workers, evaluator process), configured by a TOML file and AOCU_*
variables: /ready follows the evaluator (stopped, then killed with -9 and restarted by the supervisor) and the store's writability;
/metrics sums the workers' multi-process files (no PID label), starts from zero (stale files are removed at
start) and forgets a dead worker's live gauges; every log line of every process is one JSON object."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

import tests.test_node_e2e as e2e
from tests.test_metrics import check_exposition, prom_value


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    data = tmp_path_factory.mktemp("ready") / "data"
    # a counter file left by a worker of an earlier run: it must not be summed into this run's counts
    (data / "metrics").mkdir(parents=True)
    stale = MmapedDict(str(data / "metrics" / "counter_1.db"))
    stale.write_value(mmap_key("aocu_http_requests", "aocu_http_requests_total", ["route", "method", "code"],
                               ["/health", "GET", "200"], "x"), 1000.0, 0.0)
    stale.close()
    cfg = data.parent / "node.toml"
    cfg.write_text('log-level = "info"\nworkers = 2\nthreads = 2\n')   # info: wins over the harness's --quiet
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AOCU_LOG_FORMAT", "json")
        n = e2e.Node(data, extra=("--config", str(cfg)))
    yield n
    n.stop_term()


def ready(url: str) -> tuple[int, dict]:
    status, body, _ = e2e.get(url + "/ready")
    return status, json.loads(body)


def wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s")


def log_objects(node) -> list[dict]:
    text = (node.data_dir.parent / f"node-{node.port}.log").read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    bad = [ln for ln in lines if not ln.startswith("{")]
    assert not bad, bad[:5]
    return [json.loads(ln) for ln in lines]


def per_file(mdir: Path, sample: str, **labels: str) -> dict[str, float]:
    """The value of one sample in each worker's counter file (prometheus_client's own reader)."""
    out = {}
    for f in sorted(mdir.glob("counter_*.db")):
        out[f.name] = sum(s.value for fam in MultiProcessCollector.merge([str(f)]) for s in fam.samples
                          if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))
    return out


def test_metrics_sum_the_workers(node):
    def hammer(_: int) -> None:
        for _ in range(10):
            assert e2e.get(node.url + "/health")[0] == 200
    with ThreadPoolExecutor(8) as pool:     # concurrent connections: both workers accept some
        list(pool.map(hammer, range(8)))
    text = e2e.get(node.url + "/metrics")[1].decode()
    check_exposition(text)               # HELP/TYPE on every family, no pid/worker label
    served = prom_value(text, "aocu_http_requests_total", route="/health", method="GET", code="200")
    # the harness polled /health until the node answered; the stale file's 1000 is not counted
    assert 80 <= served < 1000
    assert prom_value(text, "aocu_http_request_duration_seconds_count", route="/health", method="GET") == served
    assert prom_value(text, "aocu_evaluator_up") == 1
    assert prom_value(text, "aocu_build_info", tee="none") == 1
    assert prom_value(text, "process_cpu_seconds_total") > 0                # the serve process
    assert prom_value(text, "aocu_evaluator_process_resident_memory_bytes") > 1e6
    # the exposition is the sum over the workers' files (which worker accepts a connection is the kernel's pick)
    counts = per_file(node.data_dir / "metrics", "aocu_http_requests_total", route="/health", code="200")
    assert "counter_1.db" not in counts and 1 <= len(counts) <= 2 and sum(counts.values()) == served, counts
    pids = {o["pid"] for o in log_objects(node) if o.get("route") == "/health"}
    assert {f"counter_{p}.db" for p in pids} == {f for f, v in counts.items() if v}, (pids, counts)


def test_json_logs_from_every_process(node):
    objs = log_objects(node)
    assert all({"ts", "level", "logger", "msg", "pid"} <= set(o) for o in objs)
    assert all(o["ts"].endswith("Z") for o in objs)
    loggers = {o["logger"] for o in objs}
    assert {"aocu.http", "aocu.evaluator", "gunicorn.error"} <= loggers, loggers
    req = next(o for o in objs if o.get("route") == "/health")
    assert req["level"] == "info" and req["method"] == "GET" and req["status"] == 200
    assert req["msg"].startswith("GET /health 200 ") and isinstance(req["ms"], float) and req["remote"]


def test_ready_follows_the_evaluator(node):
    assert ready(node.url) == (200, {"status": "ready"})
    lock = node.data_dir / "evaluator.lock"
    old = int(lock.read_text().strip())
    # frozen first: a dead evaluator is restarted within about the probe's connect grace (0.5 s), which a probe
    # waits out, so only a stopped one is reliably seen down; then killed, for the supervisor's restart
    os.kill(old, signal.SIGSTOP)
    try:
        status, body = wait_for("503", lambda: (r := ready(node.url))[0] == 503 and r)
    finally:
        os.kill(old, signal.SIGKILL)
    assert body["status"] == "not ready" and body["error"].startswith("evaluator: ")
    text = e2e.get(node.url + "/metrics")[1].decode()
    assert prom_value(text, "aocu_evaluator_up") == 0 or int(lock.read_text().strip()) != old
    # the supervisor starts a new evaluator: ready again
    wait_for("ready again", lambda: ready(node.url)[0] == 200)
    assert int(lock.read_text().strip()) != old
    assert prom_value(e2e.get(node.url + "/metrics")[1].decode(), "aocu_evaluator_up") == 1


def test_ready_needs_a_writable_store(node):
    conn = sqlite3.connect(node.data_dir / "node.sqlite", isolation_level=None, timeout=5)
    try:
        conn.execute("BEGIN IMMEDIATE")          # another writer holds the store
        status, body = ready(node.url)
        assert status == 503 and "not writable" in body["error"] and "locked" in body["error"], body
        assert e2e.get(node.url + "/health")[0] == 200       # liveness is unaffected
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert ready(node.url)[0] == 200


def test_a_dead_workers_counts_stay_and_its_live_gauges_leave(node):
    mdir: Path = node.data_dir / "metrics"
    health = {"route": "/health", "method": "GET", "code": "200"}
    before = prom_value(e2e.get(node.url + "/metrics")[1].decode(), "aocu_http_requests_total", **health)
    counts = per_file(mdir, "aocu_http_requests_total", **health)
    busiest = max(counts, key=counts.get)
    pid = int(busiest[len("counter_"):-3])
    assert counts[busiest] > 0 and (mdir / f"gauge_livesum_{pid}.db").exists()
    os.kill(pid, signal.SIGKILL)
    # gunicorn reaps it and calls child_exit: its in-flight gauge file goes, a new worker starts
    wait_for("the gauge file removed", lambda: not (mdir / f"gauge_livesum_{pid}.db").exists())
    wait_for("a new worker", lambda: len(list(mdir.glob("gauge_livesum_*.db"))) == 2)
    for _ in range(10):
        assert e2e.get(node.url + "/health")[0] == 200
    text = e2e.get(node.url + "/metrics")[1].decode()
    # the dead worker's file still counts: nothing served before is lost from the counter
    assert (mdir / busiest).exists()
    assert prom_value(text, "aocu_http_requests_total", **health) == before + 10
    assert prom_value(text, "aocu_http_requests_in_flight") == 1        # this scrape; the dead one's gauge left
