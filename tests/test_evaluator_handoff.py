"""The evaluator's request path (issue 20, CPU per result): the RPC server's buffered frame reader
(cu/node/service.py), the typed codec's field-wise fast paths (cu/node/rpc.py, same wire), the leading writer's
group commit without futures and the crank turn skipped when a reader already evaluated what it was for
(cu/node/core.py)."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import msgpack
import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.node import rpc
from cu.node.errors import NotFound
from cu.node.items import item_meta
from cu.node.store import LogEntry, ResultRow, ScheduleOp
from cu.node.wire import FrameReader
from tests.lua_process import embedded_node, spawn_lua32


def _frame(obj: object) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(data)) + data


def test_frame_reader_splits_joins_and_reads_large_frames():
    a, b = socket.socketpair()
    big = b"x" * (3 * FrameReader.CHUNK + 17)
    stream = _frame(["one", 1]) + _frame(["two", [2, None]]) + _frame(["big", big]) + _frame(["last", 3])

    def write() -> None:
        for i in range(0, len(stream), 5000):      # frames cut at arbitrary points, several in one write
            b.sendall(stream[i:i + 5000])
        b.close()
    t = threading.Thread(target=write)
    t.start()
    frames = FrameReader(a)
    assert frames.next() == ["one", 1]
    assert frames.next() == ["two", [2, None]]
    assert frames.next() == ["big", big]
    assert frames.next() == ["last", 3]
    assert frames.next() is None          # closed between frames
    t.join()
    a.close()


def test_frame_reader_refuses_a_cut_frame_and_an_oversized_length():
    a, b = socket.socketpair()
    b.sendall(_frame(["whole"])[:-2])
    b.close()
    with pytest.raises(ConnectionError, match="mid-frame"):
        FrameReader(a).next()
    a.close()
    a, b = socket.socketpair()
    b.sendall(struct.pack(">I", 0xFFFFFFFF))
    with pytest.raises(ConnectionError, match="too large"):
        FrameReader(a).next()
    a.close()
    b.close()


def test_rpc_codec_keeps_the_wire_and_checks_field_counts():
    key = Ed25519Key.generate()
    item = DataItem.create(key, data=b"m", target="P" * 43, tags=[("Data-Protocol", "ao"), ("Action", "Echo")])
    meta = item_meta(item)
    op = ScheduleOp("message", "P" * 43, item.id, (meta, item.to_bytes()))
    wire = rpc.encode_request(rpc.Schedule(op))
    # the wire form is the dataclasses' fields in order, nested as arrays (what cu/node/client.py sends)
    assert wire == ["Schedule", [["message", "P" * 43, item.id,
                                  [[meta.id, meta.owner, meta.owner_key, meta.target, meta.anchor, meta.signature,
                                    [list(t) for t in meta.tags], meta.kind, meta.created_ms, meta.size, meta.codec],
                                   item.to_bytes()], "", False, ""]]]
    back = rpc.decode_request(msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False))
    assert back == rpc.Schedule(op) and isinstance(back.op.item[0].tags[0], tuple)
    for req in (rpc.Result("p", "m"), rpc.Status(["a"], (5, "x"), 3), rpc.Status([], None, 0), rpc.Metrics(),
                rpc.DryRun("p", {"k": [1]}, rpc.At(5)), rpc.ResultsPage("p", rpc.Bound(1, 2), None, True, 5, False,
                                                                       True)):
        assert rpc.decode_request(msgpack.unpackb(msgpack.packb(rpc.encode_request(req)), raw=False)) == req
    for reply, req_type in ((rpc.Scheduled(LogEntry("p", 1, "m", "a", 5, 0, "h", 0), True), rpc.Schedule),
                            (rpc.Page([ResultRow("p", 1, 1, None, "m", 5, 0, False, b"{}")], False), rpc.ResultsPage),
                            (rpc.Done(), rpc.Flush)):
        wire_reply = msgpack.unpackb(msgpack.packb(rpc.encode_reply(reply)), raw=False)
        assert rpc.decode_reply(req_type, wire_reply) == reply
    with pytest.raises(ValueError, match="expected 2 fields"):
        rpc.decode_request(["Result", ["p"]])
    with pytest.raises(ValueError, match="expected 2 values"):
        rpc.decode_request(["Status", [[], [5], 1]])


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    core, client, sched = embedded_node({"data_dir": tmp_path_factory.mktemp("handoff") / "node",
                                         "crank_delay_s": 1.0})
    pid = spawn_lua32(sched.ingest, ArweaveWallet.generate())
    assert json.loads(client.result(pid, _send(sched, pid, "warm")))["Output"] == "warm"   # loaded and warm
    deadline = time.monotonic() + 10
    while core.core.queued() and time.monotonic() < deadline:
        time.sleep(0.05)                        # the turns of the spawn and that message are over
    yield core, client, sched, pid
    core.stop()


def _send(sched, pid: str, data: str) -> str:
    return sched.ingest(DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid, tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")]).to_bytes()).id


def _settled(core, monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    settle = core.core.evaluator.settle
    monkeypatch.setattr(core.core.evaluator, "settle", lambda pids: (calls.append(list(pids)), settle(pids))[1])
    return calls


def test_the_crank_skips_a_turn_a_reader_already_evaluated(node, monkeypatch):
    core, client, sched, pid = node
    calls = _settled(core, monkeypatch)
    mid = _send(sched, pid, "read at once")
    assert json.loads(client.result(pid, mid))["Output"] == "read at once"
    assert pid in core.core._due
    time.sleep(1.5)                            # past the crank's delay
    assert pid not in core.core._due and calls == []
    # a notification that names no message (an outbox delivery, a start) still gets its turn
    core.core.notify(pid)
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [[pid]]


def test_an_unread_message_is_still_cranked(node, monkeypatch):
    core, _client, sched, pid = node
    calls = _settled(core, monkeypatch)
    mid = _send(sched, pid, "nobody reads me")
    deadline = time.monotonic() + 20
    while core.store.result_by_message(pid, mid) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    row = core.store.result_by_message(pid, mid)
    assert row is not None and json.loads(row.body)["Output"] == "nobody reads me"
    assert [pid] in calls


def test_concurrent_writers_share_commits_and_keep_the_slot_order(node):
    core, client, _sched, pid = node
    key = Ed25519Key.generate()
    items = [DataItem.create(key, data=f"c{i}".encode(), target=pid, tags=[("Data-Protocol", "ao"),
                                                                           ("Type", "Message"), ("Action", "Echo")])
             for i in range(40)]
    got: dict[str, int] = {}
    m = core.core.evaluator.metrics
    commits0, writes0 = m.get("commits", 0), m.get("commit_writes", 0)

    def post(part: list[DataItem]) -> None:
        for it in part:
            entry, fresh = client.submit(ScheduleOp("message", pid, it.id, (item_meta(it), it.to_bytes())))
            assert fresh
            got[it.id] = entry.nonce
    threads = [threading.Thread(target=post, args=(items[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    nonces = sorted(got.values())
    assert nonces == list(range(nonces[0], nonces[0] + 40))          # one slot each, no gap, no repeat
    log = core.store.log_range(pid, nonces[0], nonces[-1])
    assert [(e.message_id, e.nonce) for e in log] == sorted(got.items(), key=lambda kv: kv[1])
    assert m["commit_writes"] - writes0 >= 40 and m["commits"] - commits0 <= m["commit_writes"] - writes0
    for it in items:
        assert json.loads(client.result(pid, it.id))["Output"] == it.data.decode()
    # a failing write in a leading writer's own batch comes back as its error
    ghost = items[0]
    with pytest.raises(NotFound, match="not found"):
        client.submit(ScheduleOp("message", "G" * 43, ghost.id, (item_meta(ghost), ghost.to_bytes())))

