"""Hostile processes on an embedded node: one that sends to itself is still cranked (bounded, one delivery round
per crank turn), and one whose start function loops is stopped by the evaluation wall-clock limit, marked failed
(also across a restart) and never holds up the others."""

from __future__ import annotations

import json
import time

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.node.client import embedded
from cu.node.config import NodeConfig
from cu.node.dispatch import Dispatcher
from cu.node.errors import Invalid
from cu.node.eval.failed import FILE
from cu.node.ingest import Scheduler
from tests.modules.build import build
from tests.wat.gen import FORMAT_OF, render

EVAL_TIMEOUT_S = 2.0


def looping_start_wasm() -> bytes:
    """The format-4 test process module (tests/wat) with a start function that never returns."""
    import wasmtime

    text = render("f4")
    end = text.rstrip().rindex(")")
    text = text[:end] + "\n  (func $spin (loop $forever (br $forever)))\n  (start $spin)\n" + text[end:]
    return wasmtime.wat2wasm(text)


class Node:
    def __init__(self, data_dir) -> None:
        self.cfg = NodeConfig.from_mapping({"data_dir": data_dir, "tee": "none", "evaluator": "embedded",
                                            "crank_delay_s": 0.02, "eval_timeout_s": EVAL_TIMEOUT_S})
        self.wallet = ArweaveWallet.generate()
        self.open()

    def open(self) -> None:
        self.core = Dispatcher.open(self.cfg)
        self.core.start()
        self.client = embedded(self.core)
        self.sched = Scheduler(self.cfg, self.core.store, self.core.core.identity, submit=self.client.submit)

    def restart(self) -> None:
        self.core.stop()
        self.open()

    def module(self, wasm: bytes, fmt: str) -> str:
        item = DataItem.create(self.wallet, data=wasm, tags=[
            ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", fmt), ("Input-Encoding", "JSON-1"),
            ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"), ("Compute-Limit", "9000000000000")])
        self.sched.ingest(item.to_bytes())
        return item.id

    def process(self, module_id: str) -> str:
        item = DataItem.create(self.wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                            ("Module", module_id)])
        self.sched.ingest(item.to_bytes())
        return item.id

    def message(self, pid: str, data: str, action: str = "Echo", tags: list[tuple[str, str]] = ()) -> str:
        item = DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid, tags=[
            ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action), *tags])
        return self.sched.ingest(item.to_bytes()).id

    def outputs(self, pid: str) -> list[object]:
        last = self.core.store.last_result(pid)
        rows = [self.core.store.result_by_seq(pid, s) for s in range(last.seq + 1)] if last else []
        return [json.loads(r.body).get("Output") for r in rows if r is not None]


@pytest.fixture()
def node(tmp_path):
    made: list[Node] = []

    def make() -> Node:
        n = Node(tmp_path / f"node{len(made)}")
        made.append(n)
        return n
    yield make
    for n in made:
        n.core.stop()


def _wait(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def _output_text(out: object) -> str:
    return out.get("data", "") if isinstance(out, dict) else str(out)


def test_a_message_a_process_sends_to_itself_is_cranked_unread(node):
    n = node()
    pid = n.process(n.module(build("lua32").read_bytes(), "wasm32-unknown-emscripten2"))
    n.message(pid, "to myself", action="Send", tags=[("Send-To", pid)])
    # nothing is read: the crank evaluates the Send, then (a later turn) the Echo it addressed to the process
    assert _wait(lambda: any(_output_text(o) == "to myself" for o in n.outputs(pid)), 10), n.outputs(pid)


def test_a_looping_start_function_is_bounded_marked_failed_and_stalls_nobody(node):
    n = node()
    good = n.process(n.module(build("lua32").read_bytes(), "wasm32-unknown-emscripten2"))
    bad = n.process(n.module(looping_start_wasm(), FORMAT_OF["f4"]))
    t0 = time.monotonic()
    n.message(bad, "hello")       # the crank starts instantiating the bad process (spins until the limit)
    time.sleep(0.2)
    # the good process's results keep flowing while the bad one is being tried
    for i in range(2):
        t1 = time.monotonic()
        body = n.client.result(good, n.message(good, f"still here {i}"))
        assert _output_text(json.loads(body)["Output"]) == f"still here {i}"
        assert time.monotonic() - t1 < 2.0
    # the bad process ends marked failed with a timeout reason, within about the evaluation timeout
    failed = n.core.core.evaluator.failed
    assert _wait(lambda: failed.reason(bad) is not None, EVAL_TIMEOUT_S + 4)
    assert time.monotonic() - t0 < EVAL_TIMEOUT_S * 2 + 3
    assert "wall-clock limit exceeded" in failed.reason(bad)
    # every request for it answers the domain error, quickly
    t1 = time.monotonic()
    with pytest.raises(Invalid, match=f"process {bad} cannot be instantiated: .*wall-clock limit exceeded"):
        n.client.result(bad, n.message(bad, "again"))
    assert time.monotonic() - t1 < 1.0
    marked = json.loads((n.cfg.data_dir / FILE).read_text())[bad]

    # after a restart it is not tried again (the crank finds it refused), and the good process still works
    n.restart()
    time.sleep(0.5)
    t1 = time.monotonic()
    with pytest.raises(Invalid, match="cannot be instantiated"):
        n.client.result(bad, n.message(bad, "after restart"))
    assert time.monotonic() - t1 < 1.0
    assert json.loads((n.cfg.data_dir / FILE).read_text())[bad] == marked       # not marked again
    body = n.client.result(good, n.message(good, "after restart"))
    assert _output_text(json.loads(body)["Output"]) == "after restart"


def test_one_crank_pass_evaluates_a_self_sender_once_and_hands_it_to_a_later_turn():
    from types import SimpleNamespace

    from cu.node.eval.loop import Evaluator

    calls: list[str] = []
    later: list[str] = []

    def catch_up(pid: str) -> list[str]:
        calls.append(pid)
        return {"a": ["a", "b"], "b": ["a", "b", "c"], "c": []}[pid]   # a and b send to themselves and each other

    fake = SimpleNamespace(catch_up=catch_up, on_delivery=later.append, owns=lambda pid: True,
                           has_work=lambda pid: True, metrics={"crank_idle": 0})
    Evaluator.settle(fake, ["a"])
    assert calls == ["a", "b", "c"]         # each process at most once per pass
    assert later == ["a", "b"]              # the rest is a later crank turn
