"""Evaluator shards (`aocu serve --evaluators N`, cu/node/shards.py): stable assignment of processes to shards,
each process evaluated in order by its one owner, cross-shard outbox delivery exactly once, and a killed shard
restarted on its own while the other keeps serving (and catching up on what was delivered to it meanwhile)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet
from cu.node import rpc, shards
from cu.node.client import over_socket
from cu.node.errors import Unavailable
from tests.test_metrics import prom_value
from tests.test_node_e2e import Node, get, request, result, send, spawn, upload_module


def test_assignment_is_stable_and_moves_little_when_n_changes():
    pids = [f"{i:043d}" for i in range(3000)]
    assert {shards.shard_of(p, 1) for p in pids} == {0}
    two = [shards.shard_of(p, 2) for p in pids]
    three = [shards.shard_of(p, 3) for p in pids]
    shards.shard_of.cache_clear()
    assert two == [shards.shard_of(p, 2) for p in pids]          # the same after the cache is gone
    for n, got in ((2, two), (3, three)):
        counts = [got.count(i) for i in range(n)]
        assert all(abs(c - len(pids) / n) < len(pids) / n * 0.15 for c in counts), counts
    # rendezvous: from 2 to 3 shards a process stays where it was or moves to the new shard, ~1/3 of them
    moved = [(a, b) for a, b in zip(two, three, strict=True) if a != b]
    assert all(b == 2 for _, b in moved)
    assert 0.25 < len(moved) / len(pids) < 0.42, len(moved)
    assert shards.socket_for("/d/evaluator.sock", 0) == Path("/d/evaluator.sock")
    assert shards.socket_for("/d/evaluator.sock", 3) == Path("/d/evaluator-3.sock")
    assert shards.lock_file("/d", 0) == Path("/d/evaluator.lock") and shards.lock_file("/d", 2).name == \
        "evaluator-2.lock"


def test_state_export_tokens_name_their_shard():
    t = shards.ShardedTransport("/nonexistent/evaluator.sock", 3)
    assert t._export("2.abc.def") == (2, "abc.def")
    for bad in ("abc", "7.abc", "x.abc"):
        with pytest.raises(Unavailable, match="names no evaluator shard"):
            t._export(bad)


def test_any_shard_lock_held_by_another_process_keeps_a_second_node_out(tmp_path):
    """A node's own shards may hold their locks (its supervisor restarting one); any other holder of any shard's
    lock, also a lock file left by an earlier run with more shards, means the data dir is in use."""
    from cu.node.service import acquire_lock
    from cu.serve.supervisor import DataDirInUse, check_data_dir
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pathlib import Path\nfrom cu.node.service import acquire_lock\n"
        "acquire_lock(Path(sys.argv[1]), 3); print('locked', flush=True); time.sleep(60)"), str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirInUse, match=f"is in use by PID {holder.pid}$"):
            check_data_dir(tmp_path)
        check_data_dir(tmp_path, ours={holder.pid})          # one of this node's shards
        fd = acquire_lock(tmp_path, 0)                        # shard 0 free: this process takes it
        try:
            with pytest.raises(DataDirInUse, match=f"PID {os.getpid()}$"):     # shard 0's holder is named first
                check_data_dir(tmp_path, ours={holder.pid})
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    check_data_dir(tmp_path)      # every lock free again (the files stay)


@pytest.fixture(scope="module")
def lua32_wasm() -> bytes:
    from tests.modules.build import build
    return build("lua32").read_bytes()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, lua32_wasm):
    """A node with two evaluator shards, its module and two processes on each shard."""
    node = Node(tmp_path_factory.mktemp("shards") / "data", workers=1, extra=("--evaluators", "2"))
    wallet = ArweaveWallet.generate()
    module = upload_module(node.url, wallet, lua32_wasm)
    by_shard: dict[int, list[str]] = {0: [], 1: []}
    while min(len(v) for v in by_shard.values()) < 2:
        pid = spawn(node.url, wallet, module)
        by_shard[shards.shard_of(pid, 2)].append(pid)
    for pid in by_shard[0] + by_shard[1]:      # each instantiated and evaluated: the shards are idle after this
        assert result(node.url, pid, send(node.url, wallet, pid, "Eval", "return 1"))["Output"]["data"] == "1"
    yield node, wallet, module, by_shard
    node.stop_term()


def _metric(node: Node, name: str, **labels: str) -> float:
    return prom_value(get(node.url + "/metrics")[1].decode(), name, **labels)


def _wait(what: str, cond: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return got


def test_a_process_is_evaluated_in_order_by_its_shard_alone(sharded):
    node, wallet, _module, by_shard = sharded
    pid = by_shard[1][0]
    socks = [shards.socket_for(node.data_dir / "evaluator.sock", i) for i in (0, 1)]
    before = [_metric(node, "aocu_shard_evaluations_total", shard=str(i)) for i in (0, 1)]
    mids = [send(node.url, wallet, pid, "Eval", f"n = (n or 0) + 1; return n .. ':{i}'") for i in range(8)]
    outs = [result(node.url, pid, m)["Output"]["data"] for m in mids]
    assert outs == [f"{i + 1}:{i}" for i in range(8)]         # one instance, slot order
    after = [_metric(node, "aocu_shard_evaluations_total", shard=str(i)) for i in (0, 1)]
    assert after[1] - before[1] >= 8 and after[0] == before[0]
    # the other shard refuses the process outright (two warm instances of one process must never exist)
    with pytest.raises(Unavailable, match="belongs to evaluator shard 1 of 2, not 0"):
        over_socket(socks[0]).cron(pid)
    # each shard keeps only its own processes warm
    everything = by_shard[0] + by_shard[1]
    for i, sock in enumerate(socks):
        warm = over_socket(sock).send(rpc.Status(everything, None, 0)).warm
        assert warm and all(shards.shard_of(p, 2) == i for p in warm), (i, warm)


def _echoes_from(node: Node, target: str, sender: str) -> list[dict]:
    page = json.loads(get(f"{node.url}/{target}")[1])
    return [e for e in page["edges"] if e["node"]["message"]
            and {"name": "From-Process", "value": sender} in e["node"]["message"]["tags"]]


def _delivered_once(node: Node, a: str, b: str, mid: str, text: str) -> None:
    """a's outbox message to b is on b's log exactly once, marked delivered locally, and evaluated by b."""
    echoes = _wait("the delivery", lambda: [e for e in _echoes_from(node, b, a)
                                            if e["node"]["message"]["data"] == text])
    assert len(echoes) == 1, echoes
    assert result(node.url, b, echoes[0]["node"]["message"]["id"])["Output"] == text
    db = sqlite3.connect(node.data_dir / "node.sqlite")
    try:
        rows = db.execute("SELECT state, remote FROM outbox WHERE pid=? AND target=? AND kind='Message' AND seq="
                          "(SELECT seq FROM results WHERE pid=? AND message_id=?)", (a, b, a, mid)).fetchall()
        logged = db.execute("SELECT count(*) FROM log WHERE pid=? AND message_id=?",
                            (b, echoes[0]["node"]["message"]["id"])).fetchone()[0]
    finally:
        db.close()
    assert len(rows) == 1 and rows[0][0] == "local" and rows[0][1].startswith("local slot "), rows
    assert logged == 1


def test_a_message_to_a_process_on_another_shard_is_delivered_exactly_once(sharded):
    node, wallet, _module, by_shard = sharded
    for a, b in ((by_shard[0][0], by_shard[1][0]), (by_shard[1][1], by_shard[0][1])):
        mid = send(node.url, wallet, a, "Send", f"to {b[:8]}", (("Send-To", b),))
        assert result(node.url, a, mid)["Messages"][0]["Target"] == b
        _delivered_once(node, a, b, mid, f"to {b[:8]}")


def test_node_wide_reads_merge_the_shards(sharded):
    """GET /processes asks every shard which of its processes are warm; a /state too large for one frame is
    streamed from the shard that owns the process (the export token names it)."""
    node, wallet, _module, by_shard = sharded
    listed = {p["id"]: p for p in json.loads(get(node.url + "/processes?limit=100")[1])["processes"]}
    assert all(listed[p]["warm"] is True for p in by_shard[0] + by_shard[1]), listed
    pid = by_shard[1][0]
    grow = send(node.url, wallet, pid, "Eval", "big = string.rep('x', 8 * 1024 * 1024); return #big")
    assert result(node.url, pid, grow)["Output"]["data"] == str(8 * 1024 * 1024)   # memory over state_chunk now
    status, mem, headers = get(f"{node.url}/state/{pid}")
    assert status == 200 and len(mem) > 16 * 1024 * 1024 and int(headers["Content-Length"]) == len(mem)
    import base64
    import hashlib
    assert headers["Content-Digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(mem).digest()).decode()}:"


def test_cron_monitors_run_on_each_owning_shard_and_share_one_file(sharded):
    """POST /monitor on processes of both shards: each shard's ticker runs its own process's crons unread, and the
    shared DATA-DIR/monitors.json keeps both (a shard's save keeps the other shard's entries); DELETE removes one."""
    node, wallet, module, _by_shard = sharded
    crons: dict[int, str] = {}
    while len(crons) < 2:
        pid = spawn(node.url, wallet, module, (("Cron-Interval", "1-second"), ("Cron-Tag-Action", "Count")))
        crons.setdefault(shards.shard_of(pid, 2), pid)
    time.sleep(1.2)                     # a cron of each is due
    body = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Message")]).to_bytes()
    for pid in crons.values():
        assert request("POST", f"{node.url}/monitor/{pid}", body)[:2] == (200, b"Monitoring process")
    assert sorted(json.loads((node.data_dir / "monitors.json").read_text())) == sorted(crons.values())

    def cron_results() -> dict[str, int]:
        db = sqlite3.connect(node.data_dir / "node.sqlite")
        try:
            return {p: db.execute("SELECT count(*) FROM results WHERE pid=? AND cron IS NOT NULL", (p,)).fetchone()[0]
                    for p in crons.values()}
        finally:
            db.close()
    _wait("crons evaluated unread on both shards", lambda: all(cron_results().values()))
    assert request("DELETE", f"{node.url}/monitor/{crons[0]}", body)[0] == 200
    assert json.loads((node.data_dir / "monitors.json").read_text()) == [crons[1]]


def test_a_killed_shard_comes_back_while_the_other_serves(sharded):
    node, wallet, _module, by_shard = sharded
    lock = shards.lock_file(node.data_dir, 1)
    old = int(lock.read_text().strip())
    a, b = by_shard[0][1], by_shard[1][1]
    os.kill(old, signal.SIGKILL)
    status, body, _ = _wait("/ready to say which shard is down", lambda: (r := get(node.url + "/ready"))[0] == 503
                            and r, timeout=10)
    assert "shard 1 of 2" in json.loads(body)["error"], body
    # shard 0 keeps serving, and its process sends to one on the dead shard: scheduled now, evaluated when
    # shard 1 is back (it catches up on what was delivered to it while it was down)
    mid = send(node.url, wallet, a, "Send", "while down", (("Send-To", b),))
    assert result(node.url, a, mid)["Messages"][0]["Target"] == b
    _wait("/ready again", lambda: get(node.url + "/ready")[0] == 200)
    assert int(lock.read_text().strip()) != old
    node.logs()         # flushed
    log = (node.data_dir.parent / f"node-{node.port}.log").read_text(errors="replace")
    assert f"evaluator shard 1 (PID {old}) was killed by SIGKILL" in log, log[-3000:]
    _delivered_once(node, a, b, mid, "while down")
    assert _metric(node, "aocu_evaluator_up") == 1
