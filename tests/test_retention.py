"""Retention (issue 17 item 10, `--retain-results` / `--retain-checkpoints`): a background pass removes result
bodies beyond each process's latest N and checkpoints beyond the latest N; the message log stays whole, a read
of a removed result answers 410, and results recomputed after a restart from an older checkpoint are neither
stored again nor have their outbox delivered twice."""

from __future__ import annotations

import json
import time

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.http import create_app
from cu.node.errors import Gone
from cu.node.retention import Pruner
from cu.node.store import Checkpoint
from tests.lua_process import spawn_lua32
from tests.test_outbox_limit import HOOK

KEEP = 3


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    app = create_app({"data_dir": tmp_path_factory.mktemp("retention") / "node", "tee": "none",
                      "retain_results": KEEP, "retain_checkpoints": 1, "prune_every_s": 0.2, "crank_delay_s": 30.0})
    st = app.extensions["aocu"]
    wallet = ArweaveWallet.generate()
    pid = spawn_lua32(st.scheduler.ingest, wallet)
    # the history every test starts from (each test also runs alone, e.g. under -k)
    _send(st, pid, "Eval", HOOK)
    st.evaluator.checkpoint(pid)                           # the restart point of the recompute test (seq 1)
    first, _ = _send(st, pid, "Count", tags=(("Burst", "1"),))      # its outbox: one message to itself
    mids = [_send(st, pid, "Count")[0] for _ in range(6)]
    st.store.flush()
    yield app, st, pid, first, mids
    st.dispatcher.stop()


def _send(st, pid: str, action: str, data: str = "", tags: tuple = ()) -> tuple[str, dict]:
    m = DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action), *tags])
    acc = st.scheduler.ingest(m.to_bytes())
    return acc.id, json.loads(st.evaluator.result(pid, acc.id))


def _count(store, sql: str, *args) -> int:
    return store._conn().execute(sql, args).fetchone()[0]


def test_old_results_are_pruned_in_the_background_the_log_stays_and_reads_answer_410(node):
    app, st, pid, first, mids = node
    store, ev = st.store, st.dispatcher.core.evaluator
    log_rows = _count(store, "SELECT count(*) FROM log WHERE pid=?", pid)
    assert log_rows == 10 and store.process(pid).nonce == 9
    deadline = time.monotonic() + 20
    while _count(store, "SELECT count(*) FROM results WHERE pid=?", pid) > KEEP and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r[0] for r in store._conn().execute("SELECT seq FROM results WHERE pid=? ORDER BY seq", (pid,))] == \
        [7, 8, 9]
    assert ev.metrics["pruned_results"] == 7
    assert _count(store, "SELECT count(*) FROM log WHERE pid=?", pid) == log_rows      # the log is intact
    assert _count(store, "SELECT count(*) FROM outbox WHERE pid=?", pid) == 1
    # a removed result: 410 with the reason; the latest ones are served as before
    with pytest.raises(Gone, match="retention policy"):
        st.evaluator.result(pid, first)
    r = app.test_client().get(f"/result/{mids[0]}?process-id={pid}")
    assert r.status_code == 410 and "--retain-results 3" in r.get_json()["error"]
    r = app.test_client().get(f"/result/{mids[-1]}?process-id={pid}")
    assert r.status_code == 200 and r.get_json()["Output"] == "7"
    page = app.test_client().get(f"/results/{pid}?limit=100").get_json()
    assert len(page["edges"]) == KEEP


def test_a_recompute_from_an_older_checkpoint_neither_restores_nor_redelivers_pruned_results(node):
    _app, st, pid, _, _ = node
    store, ev = st.store, st.dispatcher.core.evaluator
    deadline = time.monotonic() + 20        # the results this recompute must not restore are pruned first
    while _count(store, "SELECT count(*) FROM results WHERE pid=? AND seq <= 6", pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.latest_checkpoint(pid).seq == 1
    nonce_before = store.process(pid).nonce
    with ev.procs.lock(pid):
        ev.procs.drop(pid)                  # as after a crash: rebuilt from the checkpoint at seq 1
    assert _send(st, pid, "Count")[1]["Output"] == "8"     # seq 2..9 evaluated again, then this one
    store.flush()
    assert store.process(pid).nonce == nonce_before + 1    # the pruned result's outbox was not sent again
    assert _count(store, "SELECT count(*) FROM results WHERE pid=? AND seq <= 6", pid) == 0
    assert _count(store, "SELECT count(*) FROM outbox WHERE pid=?", pid) == 1
    assert ev.metrics["recompute_mismatch"] == 0


def test_checkpoints_beyond_the_setting_are_pruned(node):
    _app, st, pid, _, _ = node
    store = st.store
    cp = store.latest_checkpoint(pid)
    for seq in (20, 21, 22):           # written while a larger setting was in force
        store.put_checkpoint(Checkpoint(pid, seq, cp.nonce, cp.cron_ts, cp.timestamp, cp.module_hash,
                                        cp.memory_root, cp.snapshot), keep=5)
    assert _count(store, "SELECT count(*) FROM checkpoints WHERE pid=?", pid) == 4
    pruner = Pruner(store, retain_results=0, retain_checkpoints=1, every_s=3600, metrics={})
    assert pruner.run_pass() == 3
    assert [r[0] for r in store._conn().execute("SELECT seq FROM checkpoints WHERE pid=?", (pid,))] == [22]
    assert pruner.metrics == {"pruned_results": 0, "pruned_checkpoints": 3}
