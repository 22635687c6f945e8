"""Cheaper restores and evictions of the fast lifecycle, each checked against the plain way.

A plain restore keeps the snapshot's encoded image as the instance's rollback base (native/engine/instance.cpp)
instead of copying memory before the first message: errors after the restore roll back to exactly the state a
live instance rolls back to (results, memory bytes, globals and host state), including the rebuild after memory
grew and the replay of the messages applied since the restore.

An eviction's delta and new memory image come from one native pass (`pagedelta.capture_diff`): the same delta
as diffing the old image against a full capture, an image holding the same pages, and a node whose chains are
written that way gives the results of the Python path and reads back the same memory through it."""

from __future__ import annotations

import pytest

from cu import _native
from cu.engine import Instance, Module
from cu.node.eval import memimage
from tests.modules.build import MODULES, build
from tests.test_cow_restore import ENV, msg
from tests.test_pagedelta import _node_run, _read_back

pd = _native.pagedelta

# errors straight after the restore (journal empty), after messages (replayed), and after memory grew (rebuild)
SCRIPT = [msg("Fail", "first"), msg("Count"), msg("Eval", "Note = 'after restore'"), msg("Fail", "x"),
          msg("Count"), msg("Grow", "3"), msg("Fail", "grown"), msg("Eval", "return Note .. ' ' .. Count")]


def state(inst: Instance) -> tuple:
    """Everything a snapshot holds besides the memory encoding: size, exported globals, host state, the bytes."""
    _, _, globals_, host = inst._native.capture()
    return inst.memory_size, globals_, host, inst.memory()


@pytest.mark.parametrize("name", ["lua32", "lua64"])
def test_rollback_to_the_restored_image_matches_a_live_instance(name, cache_dir):
    mod = Module.load(build(name).read_bytes(), MODULES[name].module_format, cache_dir=cache_dir / "engine")
    live = Instance(mod)
    for m in (msg("Count"), msg("Grow", "6"), msg("Count")):
        assert "Error" not in live.handle(m, ENV)
    snap = live.snapshot(root=False)
    assert isinstance(snap._state[1], bytes)        # the encoded image, not a raw page image
    restored = Instance.restore(mod, snap)
    assert state(restored) == state(live)
    assert restored.stats().startswith("bases=0 recoveries=0")
    for i, m in enumerate(SCRIPT):
        expected = live.handle(m, ENV)
        assert restored.handle(m, ENV) == expected, f"message {i}"
        assert state(restored) == state(live), f"state after message {i}"
    # no memory copy was taken: every rollback went back to the encoded image (and replayed since)
    assert restored.stats().startswith("bases=0 recoveries=3 replayed=")
    assert expected["Output"]["data"] == "after restore 4"


def test_capture_diff_equals_a_capture_and_a_diff(cache_dir):
    mod = Module.load(build("lua32").read_bytes(), MODULES["lua32"].module_format, cache_dir=cache_dir / "engine")
    inst = Instance(mod)
    assert "Error" not in inst.handle(msg("Grow", "3"), ENV)
    old = inst._native.capture()[1]
    # small writes; then memory grows past the old image (pages the old image does not have)
    for step in (msg("Eval", "Note = 'x'"), msg("Grow", "9"), msg("Free")):
        assert "Error" not in inst.handle(step, ENV)
        state, changed, xors = pd.capture_diff(inst._native, old, 1)
        full = inst._native.capture()
        assert (changed, xors) == pd.diff(old, full[1])
        assert changed and memimage.diff(memimage.decode(old)[1], memimage.decode(full[1])[1]) == (changed, xors)
        assert memimage.decode(state[1]) == memimage.decode(full[1]) and state[0] == full[0]
        assert state[2:] == full[2:]
        old = state[1]
    with pytest.raises(ValueError, match="AOMI"):
        pd.capture_diff(inst._native, old[:30], 1)


def test_a_node_with_one_pass_deltas_matches_the_python_path(tmp_path, monkeypatch):
    calls = []
    real = pd.capture_diff
    monkeypatch.setattr(pd, "capture_diff", lambda *a: calls.append(1) or real(*a), raising=False)
    native_outs, m, pids = _node_run(tmp_path / "native", True, cow=False)
    python_outs, _, _ = _node_run(tmp_path / "python", False, cow=False)
    assert native_outs == python_outs
    # (a checkpoint at stop may add a call after the metrics were read). Evictions run off the request path: on a
    # busy machine a process asked for again before its checkpoint was taken goes back warm (cu/node/eval/warm.py,
    # _retiring) without a delta or a restore, so fewer than the 6 restores and 4 deltas of an idle run may happen
    assert m["restores_evicted"] >= 2 and m["checkpoint_deltas"] >= 2 and len(calls) >= m["checkpoint_deltas"]
    # the chain written with one-pass deltas reads back the same through the native and the Python path
    assert _read_back(tmp_path / "native", pids[1], True) == _read_back(tmp_path / "native", pids[1], False)
