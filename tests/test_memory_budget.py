"""The node-wide memory budget of warm processes (issue 17 item 5, `--max-memory`): warm instances are
checkpointed out least recently used first when their linear memory together exceeds the budget, not only
beyond `--max-warm`; an evicted process is restored from its checkpoint with the right state."""

from __future__ import annotations

import pytest

from cu.codec.wallet import ArweaveWallet
from cu.node.config import NodeConfig, parse_size, physical_memory
from tests.lua_process import embedded_node, spawn, upload_lua32
from tests.test_outbox_limit import _send

MIB = 1 << 20
GROWN = 48 * MIB          # the test module's memory after Grow 24 (16 MiB to start, deterministic)
BUDGET = "110M"           # two grown processes fit, three do not


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    core, client, sched = embedded_node({"data_dir": tmp_path_factory.mktemp("budget") / "node",
                                         "max_memory": BUDGET, "crank_delay_s": 30.0})
    wallet = ArweaveWallet.generate()
    module_id = upload_lua32(sched.ingest, wallet)
    pids = [spawn(sched.ingest, wallet, module_id, [("N", str(i))]) for i in range(3)]
    yield core, client, sched, pids
    core.stop()


def test_sizes_parse_and_the_default_is_half_of_physical_memory(tmp_path):
    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 * MIB and parse_size("1.5GiB") == 3 << 29
    assert parse_size("65536") == 65536 and parse_size("110m") == 110 * MIB
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    cfg = NodeConfig.from_mapping({"data_dir": tmp_path, "tee": "none"})
    assert cfg.max_memory == physical_memory() // 2 > 0


def test_processes_beyond_the_byte_budget_are_checkpointed_out_and_restored_right(node):
    core, client, sched, pids = node
    ev = core.core.evaluator
    budget = parse_size(BUDGET)
    assert 2 * GROWN <= budget < 3 * GROWN
    for pid in pids:
        assert _send(client, sched, pid, "Grow", "24")[1]["Output"]["held_mib"] == 24
        assert _send(client, sched, pid, "Count")[1]["Output"] == "1"
        assert ev.procs[pid].mem_bytes == GROWN
    # three would hold 144 MiB: the least recently used one was checkpointed out, by bytes (64 may be warm)
    assert ev.warm() == 2 and pids[0] not in [p for p, _ in ev.procs.items()]
    assert ev.metrics["evictions_memory"] >= 1 and ev.metrics["evictions_count"] == 0
    assert ev.metrics["warm_bytes"] == 2 * GROWN <= budget == ev.metrics["memory_budget"]
    ev.procs.drain()          # evicted processes are checkpointed in the background (lifecycle "fast")
    assert core.store.latest_checkpoint(pids[0]) is not None
    # the evicted process comes back from its checkpoint with its memory: Count and the grown strings
    restores = ev.metrics["restores"]
    assert _send(client, sched, pids[0], "Count")[1]["Output"] == "2"
    assert ev.metrics["restores"] == restores + 1
    assert _send(client, sched, pids[0], "Info")[1]["Output"]["held_mib"] == 24
    # and the next least recently used one made room for it
    assert ev.warm() == 2 and pids[1] not in [p for p, _ in ev.procs.items()]
    assert _send(client, sched, pids[1], "Count")[1]["Output"] == "2"
    m = client.metrics().metrics
    assert m["warm_bytes"] <= budget and m["evictions_memory"] >= 2
