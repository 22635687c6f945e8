"""The crank (cu/node/core.py): a message whose result nobody reads is still evaluated and stored shortly
after its acknowledgement, and a read that comes first evaluates it on the reading request's thread."""

from __future__ import annotations

import json
import time

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.node.dispatch import Dispatcher
from tests.lua_process import embedded_node, spawn_lua32


@pytest.fixture()
def node(tmp_path):
    def make(crank_delay_s: float):
        core, client, sched = embedded_node({"data_dir": tmp_path / str(crank_delay_s),
                                             "crank_delay_s": crank_delay_s})
        pid = spawn_lua32(sched.ingest, ArweaveWallet.generate())
        made.append(core)
        return core, client, sched, pid
    made: list[Dispatcher] = []
    yield make
    for core in made:
        core.stop()


def _message(pid: str, data: str) -> bytes:
    return DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid,
                           tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")]).to_bytes()


def test_an_unread_message_is_evaluated_and_stored_by_the_crank(node):
    core, _client, sched, pid = node(0.05)
    acc = sched.ingest(_message(pid, "nobody reads me"))
    deadline = time.monotonic() + 20
    row = None
    while row is None and time.monotonic() < deadline:
        time.sleep(0.02)
        row = core.store.result_by_message(pid, acc.id)
    assert row is not None and json.loads(row.body)["Output"] == "nobody reads me"


def test_a_read_before_the_crank_is_due_evaluates_on_the_reading_thread(node):
    core, client, sched, pid = node(30.0)      # the crank would wait 30 s
    acc = sched.ingest(_message(pid, "read at once"))
    t0 = time.monotonic()
    body = client.result(pid, acc.id)
    assert json.loads(body)["Output"] == "read at once"
    assert time.monotonic() - t0 < 10
    assert pid in core.core._due          # the crank still has it due, and will find nothing left to do
    # the result was written behind the reply
    deadline = time.monotonic() + 10
    while core.store.result_by_message(pid, acc.id) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert core.store.result_by_message(pid, acc.id) is not None
