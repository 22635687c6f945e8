"""Process lifecycle (issue 19): a process started from its module's init image is the same as a normally
spawned one; incremental checkpoint chains restore bit-identically to a full replay of the log; a kill -9 in
the middle of a checkpoint loses nothing (cu/node/eval/images.py, checkpoints.py, warm.py)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.node.eval import memimage
from tests.lua_process import embedded_node, spawn, upload_lua32

REPO = Path(__file__).resolve().parent.parent
ENV = json.dumps({"Process": {"Id": "P", "Owner": "O", "Tags": []}, "Module": {"Id": "M", "Owner": "O", "Tags": []}})


def _msg(i: int, action: str, data: str = "") -> str:
    return json.dumps({"Id": f"m{i}", "Target": "P", "Owner": "O", "From": "O", "Data": data, "Timestamp": i,
                       "Block-Height": 1, "Module": "M", "Tags": [{"name": "Action", "value": action}]})


def _send(client, sched, pid: str, action: str, data: str = "") -> tuple[str, bytes]:
    m = DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action)])
    mid = sched.ingest(m.to_bytes()).id
    return mid, client.result(pid, mid)


def test_memory_images_and_page_deltas_round_trip():
    size = 8 * memimage.PAGE
    old = {0: b"\1" * memimage.PAGE, 3: bytes(range(256)) * 256}
    new = {0: b"\1" * memimage.PAGE, 3: bytes(reversed(range(256))) * 256, 5: b"\7" * memimage.PAGE}
    assert memimage.decode(memimage.encode(size, new)) == (size, new)
    assert memimage.stored_pages(memimage.encode(size, new)) == 3
    changed, xors = memimage.diff(old, new)
    assert changed == [3, 5] and memimage.apply(old, changed, xors) == new
    changed, xors = memimage.diff(new, old)      # a page going back to zero is dropped from the map
    assert changed == [3, 5] and memimage.apply(new, changed, xors) == old
    with pytest.raises(memimage.ImageError):
        memimage.decode(b"AOMX" + bytes(20))


def test_a_process_started_from_the_init_image_equals_a_normal_spawn():
    import cu.engine as eng
    from cu.node.eval.images import InitImages
    from tests.modules.build import build

    module = eng.Module.load(build("lua32").read_bytes(), "wasm32-unknown-emscripten2")
    limits = {"memory_limit": 512 << 20, "compute_limit": 9_000_000_000_000, "timeout_s": 30.0}
    metrics: dict[str, float] = {}
    images = InitImages(metrics)
    first = images.instance(module, limits)          # instantiated; its image is taken
    second = images.instance(module, limits)         # restored from the image
    assert metrics == {"init_images": 1, "init_image_starts": 1}
    plain = eng.Instance(module, **limits)
    assert second.memory() == plain.memory() == first.memory()
    script = [("Eval", "X = 40 + 2; return X"), ("Count", ""), ("Random", ""), ("Time", ""), ("Count", ""),
              ("Eval", "return X * 2")]
    for i, (action, data) in enumerate(script):
        outs = [inst.handle(_msg(i, action, data), ENV) for inst in (plain, first, second)]
        assert outs[0] == outs[1] == outs[2] and "Error" not in outs[0], outs
    assert second.memory() == plain.memory() and second.commitment() == plain.commitment()


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    """A fast-lifecycle node whose two processes evict each other on every message (max_warm 1): each message
    ends in an incremental checkpoint; stopped, so its data dir holds full checkpoints with delta chains."""
    data = tmp_path_factory.mktemp("lifecycle") / "node"
    core, client, sched = embedded_node({"data_dir": data, "max_warm": 1, "crank_delay_s": 30.0})
    owner = ArweaveWallet.generate()
    module_id = upload_lua32(sched.ingest, owner)
    pids = [spawn(sched.ingest, owner, module_id, [("N", str(i))]) for i in range(2)]
    outs: dict[str, list[bytes]] = {p: [] for p in pids}
    heap = "Data = {} for k = 1, 5000 do Data[k] = 'x' .. k end return #Data"
    step = "Data[#Data + 1] = 'more'; return #Data"
    for r in range(6):
        for pid in pids:
            action, data_ = ("Eval", heap) if r == 0 else ("Count", "") if r % 2 else ("Eval", step)
            outs[pid].append(_send(client, sched, pid, action, data_)[1])
    core.core.evaluator.procs.drain()
    metrics = dict(core.core.evaluator.metrics)
    core.stop()
    return data, pids, outs, metrics


def _copy(data: Path, to: Path) -> Path:
    """A copy of the fixture's data dir for one test to change (the fixture's stays as written)."""
    shutil.copytree(data, to)
    return to


def _warm_memory(data: Path, pid: str, lifecycle: str) -> tuple[bytes, bytes, int | None]:
    core, client, sched = embedded_node({"data_dir": data, "max_warm": 4, "crank_delay_s": 30.0,
                                         "lifecycle": lifecycle})
    try:
        ev = core.core.evaluator
        with ev.procs.lock(pid):
            st = ev.up_to_now(pid)
            mem, chain = st.instance.memory(), (st.chain.links if st.chain is not None else None)
        _, out = _send(client, sched, pid, "Count")
        return mem, out, chain
    finally:
        core.stop()


def test_an_incremental_chain_restores_bit_identically_to_a_full_replay(chained, tmp_path):
    data, pids, outs, metrics = chained
    assert metrics["checkpoint_deltas"] >= 6 and metrics["restores_evicted"] >= 6
    for pid in pids:     # every message after the first went to an evicted process (restored from memory)
        got = [json.loads(o)["Output"] for o in outs[pid]]
        assert [o["data"] if isinstance(o, dict) else o for o in got] == ["5000", "1", "5001", "2", "5002", "3"]
    replay = _copy(data, tmp_path / "replay")
    with sqlite3.connect(replay / "node.sqlite") as c:       # no checkpoint at all: every message again
        c.execute("DELETE FROM checkpoints")
        c.execute("DELETE FROM checkpoint_deltas")
    for pid in pids:
        with sqlite3.connect(data / "node.sqlite") as c:
            (deltas,) = c.execute("SELECT count(*) FROM checkpoint_deltas WHERE pid=? AND base_seq="
                                  "(SELECT max(seq) FROM checkpoints WHERE pid=?)", (pid, pid)).fetchone()
        assert deltas >= 2
        chain_mem, chain_out, chain = _warm_memory(_copy(data, tmp_path / f"chain-{pid}"), pid, "fast")
        assert chain == deltas                  # restored from the store, every link applied
        replay_mem, replay_out, _ = _warm_memory(_copy(replay, tmp_path / f"replay-{pid}"), pid, "classic")
        assert chain_mem == replay_mem
        assert chain_out == replay_out and json.loads(chain_out)["Output"] == "4"


def test_a_tampered_delta_ends_the_chain_and_the_log_replays_the_rest(chained, tmp_path):
    data, pids, _, _ = chained
    copy = _copy(data, tmp_path / "tampered")
    pid = pids[0]
    with sqlite3.connect(copy / "node.sqlite") as c:
        # the second link gets the first one's bytes: a well-formed delta, only its HMAC can tell
        (s1, b1), (s2, _) = c.execute("SELECT seq, delta FROM checkpoint_deltas WHERE pid=? ORDER BY seq",
                                      (pid,)).fetchall()[:2]
        c.execute("UPDATE checkpoint_deltas SET delta=? WHERE pid=? AND seq=?", (b1, pid, s2))
    core, client, sched = embedded_node({"data_dir": copy, "max_warm": 4, "crank_delay_s": 30.0})
    try:
        ev = core.core.evaluator
        with ev.procs.lock(pid):
            st = ev.procs.state(pid)
            assert st.seq == s1                  # restored up to the link before the bad one, and the next
            assert st.chain.links == ev.checkpoints.full_every  # checkpoint starts a new chain
        assert json.loads(_send(client, sched, pid, "Count")[1])["Output"] == "4"
        assert ev.metrics["cache_rejected"] == 1 and ev.metrics["restore_failures"] == 0
    finally:
        core.stop()


CHILD = textwrap.dedent("""
    import json, sys, threading, time
    sys.path.insert(0, {repo!r})
    from cu.codec.ans104 import DataItem
    from cu.codec.wallet import ArweaveWallet, Ed25519Key
    from cu.node.store_sqlite import SqliteStore
    from tests.lua_process import embedded_node, spawn, upload_lua32

    # the third delta's transaction stays open (written, not committed) until the parent kills this process
    state = {{"deltas": 0}}
    local = threading.local()
    put, write = SqliteStore.put_checkpoint_delta, SqliteStore._write
    def put_delta(self, cp, base_seq):
        local.delta = True
        try:
            return put(self, cp, base_seq)
        finally:
            local.delta = False
    def slow_write(self, job, durable):
        if not getattr(local, "delta", False):
            return write(self, job, durable)
        state["deltas"] += 1
        def held(c):
            out = job(c)
            if state["deltas"] == 3:
                print("IN-CHECKPOINT", flush=True)
                time.sleep(60)
            return out
        return write(self, held, durable)
    SqliteStore.put_checkpoint_delta, SqliteStore._write = put_delta, slow_write

    core, client, sched = embedded_node({{"data_dir": {data!r}, "max_warm": 1, "crank_delay_s": 30.0}})
    owner = ArweaveWallet.generate()
    module_id = upload_lua32(sched.ingest, owner)
    pids = [spawn(sched.ingest, owner, module_id, [("N", str(i))]) for i in range(2)]
    for r in range(100):
        pid = pids[r % 2]
        m = DataItem.create(Ed25519Key.generate(), data=b"", target=pid,
                            tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Count")])
        mid = sched.ingest(m.to_bytes()).id
        print(json.dumps({{"pid": pid, "mid": mid}}), flush=True)           # acknowledged
        print(json.dumps({{"pid": pid, "mid": mid, "out": client.result(pid, mid).decode()}}), flush=True)
""")


def test_kill_9_during_a_checkpoint_loses_nothing(tmp_path):
    data = tmp_path / "node"
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), data=str(data))],
                             stdout=subprocess.PIPE, text=True)
    acked: dict[str, str] = {}                 # message id -> process
    outs: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 120
        for line in child.stdout:
            if line.startswith("IN-CHECKPOINT"):
                break
            rec = json.loads(line)
            acked[rec["mid"]] = rec["pid"]
            if "out" in rec:
                outs[rec["mid"]] = rec["out"]
            assert time.monotonic() < deadline, "the child never reached its third delta checkpoint"
        else:
            pytest.fail(f"child ended without checkpointing: {child.wait()}")
        child.kill()                           # SIGKILL with the delta's transaction open
    finally:
        child.kill()
        child.wait()
    assert len(outs) >= 3
    with sqlite3.connect(data / "node.sqlite") as c:    # two deltas committed, the third rolled back
        assert c.execute("SELECT count(*) FROM checkpoint_deltas").fetchone() == (2,)
    core, client, sched = embedded_node({"data_dir": data, "max_warm": 1, "crank_delay_s": 30.0})
    try:
        for mid, pid in acked.items():         # every acknowledged message has its result, the same as before
            body = client.result(pid, mid).decode()
            assert outs.get(mid, body) == body and json.loads(body)["Output"].isdigit()
        for pid in set(acked.values()):        # and the state goes on from the last message in the log
            scheduled = core.store.process(pid).nonce          # nonce 0 is the spawn
            assert scheduled - sum(1 for p in acked.values() if p == pid) in (0, 1)
            assert json.loads(_send(client, sched, pid, "Count")[1])["Output"] == str(scheduled + 1)
        m = core.core.evaluator.metrics
        assert m["restore_failures"] == 0 and m["restores"] >= 2
    finally:
        core.stop()
