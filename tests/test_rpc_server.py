"""The evaluator's RPC server (cu/node/rpc_server.py): one reading thread answers cheap requests inline, the rest
go to a pool; a slow inline request gets the reading thread replaced, so other processes' requests are not held
up; pipelined frames, large replies and bad frames on one connection are answered in order."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time

import msgpack
import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import Ed25519Key
from cu.node import rpc
from cu.node.client import over_socket
from cu.node.rpc_server import TAKEOVER_S, WATCH_PARK_S, RpcServer
from cu.node.service import listen
from cu.node.wire import FrameBuffer, recv_frame
from tests.lua_process import embedded_node, spawn, upload_lua32

EVAL_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("rpc-server")
    # the crank waits long: a message is evaluated by the request reading it, on the thread answering it
    core, client, sched = embedded_node({"data_dir": d / "node", "crank_delay_s": 120.0,
                                         "eval_timeout_s": EVAL_TIMEOUT_S})
    path = str(d / "ev.sock")
    server = RpcServer(listen(path), core)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    owner = Ed25519Key.generate()
    module_id = upload_lua32(sched.ingest, owner)
    slow, fast = (spawn(sched.ingest, owner, module_id, [("Name", n)]) for n in ("slow", "fast"))
    for pid in (slow, fast):
        assert json.loads(client.result(pid, _send(sched, pid, "Echo", "warm")))["Output"] == "warm"
    yield core, sched, path, server, slow, fast
    server.shutdown()
    server.server_close()
    core.stop()


def _send(sched, pid: str, action: str, data: str) -> str:
    return sched.ingest(DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid, tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action)]).to_bytes()).id


def _frame(obj: object) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(data)) + data


@pytest.mark.parametrize("idle", [False, True], ids=["busy", "after-idle"])
def test_a_runaway_message_read_inline_does_not_hold_up_another_process(served, idle):
    core, sched, path, server, slow, fast = served
    core._slow.clear()          # the other case's runaway sent the slow process to the pool for a while
    if idle:
        # an idle watchdog sleeps until the next inline request: that request must still be watched
        deadline = time.monotonic() + WATCH_PARK_S + 5
        while not server._watch_parked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server._watch_parked
    loop = _send(sched, slow, "Eval", "while true do end")
    assert core.inline(rpc.Result(slow, loop))          # warm and idle: read on the reading thread itself
    takeovers = server.takeovers
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(over_socket(path).result(slow, loop)))
    reader.start()
    time.sleep(0.2)                                     # the reading thread is inside the runaway evaluation
    t0 = time.monotonic()
    body = over_socket(path).result(fast, _send(sched, fast, "Echo", "still here"))
    took = time.monotonic() - t0
    assert json.loads(body)["Output"] == "still here"
    assert reader.is_alive() and took < EVAL_TIMEOUT_S / 2, took    # answered while the runaway still ran
    reader.join(EVAL_TIMEOUT_S + 10)
    assert "Error" in json.loads(got[0])                # the runaway stopped at the wall-clock limit
    assert server.takeovers == takeovers + 1
    # the slow process's requests go to the pool for a while; the other's stay inline
    assert not core.inline(rpc.Result(slow, loop)) and core.inline(rpc.Result(fast, "any"))
    assert over_socket(path).result(slow, loop) == got[0]


def test_pipelined_requests_pooled_and_inline_are_answered_in_order(served):
    core, sched, path, _server, _slow, fast = served
    mid = _send(sched, fast, "Echo", "x" * 100_000)     # its result is over one small frame: sent by the pool
    reqs = [rpc.Now(fast), rpc.Result(fast, mid), rpc.Metrics(), rpc.Checkpoint(fast), rpc.Result(fast, mid)]
    assert [core.inline(r) for r in reqs] == [False, True, True, False, True]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.settimeout(30)
        s.sendall(b"".join(_frame(rpc.encode_request(r)) for r in reqs) + _frame(["NoSuchRequest", []]))
        replies = [recv_frame(s) for _ in range(len(reqs) + 1)]
        ok = [r[0] for r in replies]
        assert ok == [True] * len(reqs) + [False], replies[-1]
        assert isinstance(rpc.decode_reply(rpc.Now, replies[0][1]), rpc.NowReply)
        body = rpc.decode_reply(rpc.Result, replies[1][1]).body
        assert json.loads(body)["Output"] == "x" * 100_000
        assert rpc.decode_reply(rpc.Result, replies[4][1]).body == body
        assert isinstance(rpc.decode_reply(rpc.Metrics, replies[2][1]), rpc.MetricsReply)
        assert replies[5][1] == "internal" and "NoSuchRequest" in replies[5][2]
        # the connection still serves after the bad frame
        s.sendall(_frame(rpc.encode_request(rpc.Result(fast, mid))))
        assert rpc.decode_reply(rpc.Result, recv_frame(s)[1]).body == body


def test_an_oversized_frame_length_closes_only_that_connection(served):
    _core, sched, path, _server, _slow, fast = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.settimeout(10)
        s.sendall(struct.pack(">I", 0xFFFFFFFF))
        assert s.recv(10) == b""
    assert json.loads(over_socket(path).result(fast, _send(sched, fast, "Echo", "after")))["Output"] == "after"


def test_frame_buffer_splits_joins_and_refuses_oversized_lengths():
    big = b"y" * (3 * FrameBuffer.CHUNK + 5)
    stream = _frame(["a", 1]) + _frame(["big", big]) + _frame(["b", None])
    buf, out = FrameBuffer(), []
    for i in range(0, len(stream), 7001):
        assert buf.want() >= FrameBuffer.CHUNK
        buf.feed(stream[i:i + 7001])
        while buf.ready():
            out.append(buf.take())
    assert out == [["a", 1], ["big", big], ["b", None]] and not buf.buf
    with pytest.raises(ConnectionError, match="too large"):
        FrameBuffer().feed(struct.pack(">I", 0xFFFFFFFF))
    assert TAKEOVER_S < EVAL_TIMEOUT_S / 4
