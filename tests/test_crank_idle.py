"""The crank (cu/node/core.py -> Evaluator.settle) restores an evicted process only when it has work: a message
past its last stored result, an outbox delivery to it among them. An evicted process whose messages were all
read (evaluated and stored) is answered from the store and stays evicted (bench/many.py: one restore per
message read, none by the crank)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import Ed25519Key
from tests.lua_process import embedded_node, spawn, upload_lua32


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    # one warm instance, so reading one process evicts the other; the crank's own delay is long, so it runs
    # only when a test asks for it (notify) or an outbox delivery wakes it
    core, client, sched = embedded_node({"data_dir": tmp_path_factory.mktemp("crank-idle") / "node",
                                         "max_warm": 1, "crank_delay_s": 120.0})
    owner = Ed25519Key.generate()
    module_id = upload_lua32(sched.ingest, owner)
    names = itertools.count()           # ed25519 items are deterministic: each process needs its own tags
    yield core, client, sched, lambda: spawn(sched.ingest, owner, module_id, [("Name", f"p{next(names)}")])
    core.stop()


def _send(sched: Any, pid: str, action: str, *tags: tuple[str, str]) -> str:
    item = DataItem.create(Ed25519Key.generate(), data=b"hi", target=pid, tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action), *tags])
    return sched.ingest(item.to_bytes()).id


def _until(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return got


def _evicted(core: Any, pid: str) -> None:
    core.core.evaluator.procs.drain()      # the background eviction checkpoint is written
    assert core.core.evaluator.procs.get(pid) is None


def test_an_idle_evicted_process_is_not_restored_but_one_with_a_pending_message_is(node):
    core, client, sched, new = node
    m = core.core.evaluator.metrics
    idle, other = new(), new()
    assert json.loads(client.result(idle, _send(sched, idle, "Count")))["Output"] == "1"
    client.result(other, _send(sched, other, "Count"))      # loads `other`: `idle` is evicted
    _evicted(core, idle)
    _until(lambda: core.store.last_result(idle) is not None, "the written-behind result")
    restores, skipped = m["restores"], m["crank_idle"]

    core.core.notify(idle)                  # the crank turn its messages asked for, now
    _until(lambda: m["crank_idle"] > skipped, "the crank turn")
    assert m["restores"] == restores
    assert core.core.evaluator.procs.get(idle) is None

    # a message nobody reads: the crank restores the process and evaluates it
    mid = _send(sched, idle, "Count")
    core.core.notify(idle)
    row = _until(lambda: core.store.result_by_message(idle, mid), "the crank's evaluation")
    assert json.loads(row.body)["Output"] == "2"
    assert m["restores"] == restores + 1
    assert m["crank_idle"] == skipped + 1


def test_an_outbox_delivery_to_an_evicted_process_restores_it(node):
    core, client, sched, new = node
    m = core.core.evaluator.metrics
    target, sender = new(), new()
    client.result(target, _send(sched, target, "Count"))
    client.result(sender, _send(sched, sender, "Count"))     # `target` is evicted
    _evicted(core, target)
    _until(lambda: core.store.last_result(target) is not None, "the written-behind result")
    before = core.store.process(target).nonce
    restores = m["restores"]

    # `sender` messages `target` (and assigns it this message): delivered locally, cranked unread
    client.result(sender, _send(sched, sender, "Send", ("Send-To", target)))
    proc = _until(lambda: (p := core.store.process(target)) and p.nonce > before and p, "the delivery")
    _until(lambda: (r := core.store.last_result(target)) and r.nonce == proc.nonce, "the crank's evaluation")
    assert m["restores"] > restores


def test_has_work_up_to_a_named_nonce_warm_or_evicted(node):
    """The one crank-skip check (Evaluator.has_work): a turn for named messages is skipped once the process is
    past them, whether it is warm (its state's nonce) or evicted (its last stored result); without a nonce a warm
    process always has its turn and an evicted one only for a message past its last stored result."""
    core, client, sched, new = node
    ev = core.core.evaluator
    a, b = new(), new()
    client.result(a, _send(sched, a, "Count"))
    client.result(b, _send(sched, b, "Count"))               # loads `b`: `a` is evicted
    n = ev.procs.get(b).nonce
    assert not ev.has_work(b, n) and ev.has_work(b, n + 1) and ev.has_work(b)
    _evicted(core, a)
    last = _until(lambda: core.store.last_result(a), "the written-behind result").nonce
    assert not ev.has_work(a, last) and ev.has_work(a, last + 1) and not ev.has_work(a)
    assert ev.procs.get(a) is None                          # decided from the store: not restored
