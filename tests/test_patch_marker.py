"""The empty patch@1.0 cache is saved as a zero-length marker named with an HMAC, not as a file: restored at its
seq it is known empty ({}), while a missing, moved or forged marker still means unknown (None), as a missing
file did."""

from __future__ import annotations

import stat
from pathlib import Path

from cu.codec.wallet import Ed25519Key
from cu.node.eval.cacheauth import CacheAuth
from cu.node.eval.patches import PatchCache

PID = "P" * 43


def _auth() -> CacheAuth:
    return CacheAuth(b"k" * 32)


def _files(d: Path) -> list[str]:
    return sorted(p.name for p in (d / "patch-cache").iterdir())


def test_empty_cache_is_a_marker_known_empty_at_its_seq(tmp_path):
    pc = PatchCache(tmp_path, auth=_auth())
    pc.apply(PID, {"Output": "no patches"})
    pc.save(PID, 3)
    [name] = _files(tmp_path)
    marker = tmp_path / "patch-cache" / name
    assert name.endswith(".empty") and marker.stat().st_size == 0 and stat.S_IMODE(marker.stat().st_mode) == 0o600
    fresh = PatchCache(tmp_path, auth=_auth())
    fresh.load(PID, 3)
    assert fresh.get(PID) == {}
    fresh.load(PID, 4)                                  # a checkpoint the marker is not for
    assert fresh.get(PID) is None
    assert PatchCache(tmp_path, auth=CacheAuth(b"x" * 32)).get(PID) == {}   # never loaded: nothing to doubt
    other = PatchCache(tmp_path, auth=CacheAuth(b"x" * 32))     # another key: the host cannot name a marker
    other.load(PID, 3)
    assert other.get(PID) is None
    marker.unlink()                                     # a deleted marker is unknown, never empty
    fresh.load(PID, 3)
    assert fresh.get(PID) is None


def test_marker_moves_with_the_checkpoint_also_across_restarts(tmp_path):
    pc = PatchCache(tmp_path, auth=_auth())
    for seq in (1, 5):
        pc.save(PID, seq)
    pc.save("Q" * 43, 2)
    assert len(_files(tmp_path)) == 2
    again = PatchCache(tmp_path, auth=_auth())          # a restarted evaluator finds the old marker and moves it
    again.save(PID, 9)
    assert len(_files(tmp_path)) == 2
    again.load(PID, 5)
    assert again.get(PID) is None
    again.load(PID, 9)
    assert again.get(PID) == {}


def test_first_patch_replaces_the_marker_with_the_file(tmp_path):
    pc = PatchCache(tmp_path, auth=_auth())
    pc.save(PID, 2)
    pc.apply(PID, {"Patches": [{"balance": 5}]})
    pc.save(PID, 4)
    assert _files(tmp_path) == [f"{PID}.json"]
    fresh = PatchCache(tmp_path, auth=_auth())
    fresh.load(PID, 4)
    assert fresh.get(PID) == {"balance": 5}
    fresh.load(PID, 2)
    assert fresh.get(PID) is None
    # evaluated again from the start (a reset): empty again at an early seq, the stale file notwithstanding
    fresh.reset(PID)
    fresh.save(PID, 1)
    fresh.load(PID, 1)
    assert fresh.get(PID) == {}


def test_unknown_cache_is_saved_unknown_not_empty(tmp_path):
    pc = PatchCache(tmp_path, auth=_auth())
    pc.save(PID, 1)
    pc.load(PID, 6)                                     # a checkpoint without its cache: unknown
    assert pc.get(PID) is None
    pc.save(PID, 8)
    assert _files(tmp_path) == [f"{PID}.json"]          # the marker is gone: it would say empty
    fresh = PatchCache(tmp_path, auth=_auth())
    fresh.load(PID, 8)
    assert fresh.get(PID) is None


def test_evicted_process_without_patches_restores_a_known_empty_cache(tmp_path):
    """Through the evaluator: the eviction checkpoint leaves a marker, no file, and `/now` after the restore
    serves an empty cache, not an unknown one."""
    from cu.codec.ans104 import DataItem
    from tests.lua_process import embedded_node, spawn, upload_lua32

    def count(pid: str) -> None:
        item = DataItem.create(owner, data=b"", target=pid, tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                  ("Action", "Count"), ("To", pid)])
        assert client.result(pid, sched.ingest(item.to_bytes()).id)

    core, client, sched = embedded_node({"data_dir": tmp_path / "node", "max_warm": 1, "crank_delay_s": 120.0})
    try:
        owner = Ed25519Key.generate()
        module_id = upload_lua32(sched.ingest, owner)
        a, b = (spawn(sched.ingest, owner, module_id, [("Name", n)]) for n in ("a", "b"))
        count(a)
        count(b)                                            # loads `b`: `a` is evicted and checkpointed
        ev = core.core.evaluator
        ev.procs.drain()                                    # the background eviction checkpoint is written
        assert ev.procs.get(a) is None
        names = _files(tmp_path / "node")
        assert names and all(n.endswith(".empty") for n in names) and any(n.startswith(a) for n in names)
        restores = ev.metrics["restores"]
        assert ev.now(a)["cache"] == {} and ev.metrics["restores"] == restores + 1
    finally:
        core.stop()
