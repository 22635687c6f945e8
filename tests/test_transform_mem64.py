"""memory64 lowering (native/transform/mem64.cpp, `cu._native.transform.lower_memory64`): a wasm64 module
whose memory cannot pass 65535 pages runs on a 32-bit memory with the same results, the same memory and the
same traps; cu.engine picks the lowered code per instance memory limit and keeps memory64 above it."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest
import wasmtime

import cu.engine.module as engine_module
from cu import _native
from cu.engine import Instance, Module
from tests.wat.gen import HERE, render

T = _native.transform
W64 = "wasm64-unknown-emscripten-draft_2024_02_15"
PAGE = 65536


def _engine() -> wasmtime.Engine:
    c = wasmtime.Config()
    c.wasm_memory64 = True
    return wasmtime.Engine(c)


@pytest.fixture(scope="module")
def edges() -> tuple[bytes, bytes]:
    wasm = wasmtime.wat2wasm((HERE / "mem64_edges.wat").read_text())
    return wasm, T.lower_memory64(wasm)


def _outcome(fn, store, args):
    try:
        return ("ok", fn(store, *args))
    except wasmtime.Trap as exc:
        return ("trap", exc.trap_code, str(exc).splitlines()[0])


# addresses around every boundary: memory end (3 pages, 5 after growth), 2^31, 2^32, 2^63, 2^64
ADDRS = [0, 1, 1024, 3 * PAGE - 9, 3 * PAGE - 8, 3 * PAGE - 1, 3 * PAGE, 5 * PAGE - 1, 5 * PAGE, 2**31,
         2**32 - 8, 2**32 - 1, 2**32, 2**32 + 1024, 2**33, 2**63, 2**64 - 1]
WRAPS = [2**64 - 2**32 + 1024, 2**64 - 16, 2**64 - 65535]
CALLS = (
    [(f, (a,)) for f in ("load8", "load8_s", "load32", "load64", "load_far", "loadf", "loadf32") for a in ADDRS]
    + [("store8", (a, 0x1FF)) for a in ADDRS] + [("store16", (a, -2)) for a in ADDRS]
    + [("store64", (a, 0x0102030405060708)) for a in ADDRS] + [("storef", (a, 1.5)) for a in ADDRS]
    + [("storef32", (a, -0.25)) for a in ADDRS] + [("store_far", (a, 7)) for a in ADDRS]
    + [("store_expr", (a, 5)) for a in ADDRS]
    + [(f, (a,)) for f in ("pair", "pair_moved") for a in ADDRS]
    + [(f, (a, flag)) for f in ("branchy", "joined") for a in ADDRS for flag in (0, 1)]
    + [("size", ()), ("grow", (2**32,)), ("grow", (2**63,)), ("grow", (2**64 - 1,)), ("grow", (3,)),
       ("grow", (1,)), ("size", ()), ("grow", (0,)), ("grow", (1,)), ("grow", (1,)), ("size", ())]
    + [(f, (a,)) for f in ("load8", "load64") for a in ADDRS]
    + [("fill", (d, 0xAB, n)) for d, n in itertools.product(ADDRS, (0, 1, 16, 2**32, 2**64 - 1))]
    + [("copy", (d, s, n)) for d, s, n in itertools.product(ADDRS[::3], ADDRS[::4], (0, 3, 2**32 + 3))]
    + [("init", (d, s, n)) for d, s, n in itertools.product(ADDRS, (0, 5, 21, 22), (0, 1, 16))]
    # elided checks (mem64.cpp, lower_body): known locals, constants, loops, joins; WRAPS: v + 2^32 is small
    + [(f, (a,)) for f in ("plus_const", "const_addr", "const_far_store", "store_known") for a in ADDRS + WRAPS]
    + [("const_edge", ()), ("const_far", ())]
    + [("loop_known", (a, b)) for a in ADDRS[:8] + WRAPS for b in ADDRS[:8] + WRAPS]
    + [("block_join", (a, flag)) for a in ADDRS + WRAPS for flag in range(4)]
    + [(f, (a, b)) for f in ("copy_known", "moved_in_value") for a in ADDRS + WRAPS for b in (0, 1024, 2**32 + 8)]
    # parameters known on entry (mem64_calls.cpp) and stores whose value is a call
    + [(f, (a,)) for f in ("ip_known", "ip_exported", "ip_exported_caller") for a in ADDRS + WRAPS]
    + [(f, ()) for f in ("ip_const_lo", "ip_const_edge", "ip_const_mid", "ip_const_hi", "ip_const_hi2")]
    + [(f, (a, b)) for f in ("ip_mixed", "ip_table", "ip_chain", "store_call")
       for a in ADDRS[:8] + WRAPS for b in ADDRS + WRAPS]
    + [("tee_store", (a, b, c)) for a in ADDRS[:8] + WRAPS for b in (0, 1024, 2**32 + 8, WRAPS[0])
       for c in ADDRS + WRAPS]
    # joins after blocks and ifs: every path into the end (fallthrough, br_if, br_table, implicit else)
    + [(f, (a, b, flag)) for f in ("join_br_if", "join_if", "join_if_implicit", "join_table", "join_table2",
                                   "join_if2") for a in ADDRS[:8] + WRAPS for b in ADDRS[::2] + WRAPS for flag in range(4)]
)


def test_lowered_edges_match_memory64(edges):
    """Every access, grow and bulk operation at every boundary address: same value or same trap, in order,
    and the same memory bytes afterwards."""
    runs = []
    for wasm in edges:
        store = wasmtime.Store(_engine())
        inst = wasmtime.Instance(store, wasmtime.Module(store.engine, wasm), [])
        ex = inst.exports(store)
        outcomes = [_outcome(ex[name], store, args) for name, args in CALLS]
        mem = ex["memory"]
        runs.append((outcomes, hashlib.sha256(mem.read(store, 0, mem.data_len(store))).hexdigest()))
    (o64, h64), (o32, h32) = runs
    for (name, args), a, b in zip(CALLS, o64, o32, strict=True):
        assert a == b, (name, args)
    assert h64 == h32
    traps = sum(o[0] == "trap" for o in o64)
    assert 0 < traps < len(CALLS)  # both kinds of outcome were exercised
    assert ("ok", -1) in o64 and ("ok", 5) in o64  # grows past the maximum fail; the memory reached 5 pages


def test_lowered_module_shape(edges):
    wasm, low = edges
    assert T.memory64_limits(wasm) == (3, 5)
    assert T.memory64_limits(low) is None  # one 32-bit memory now
    mod = wasmtime.Module(_engine(), low)
    sigs = {e.name: (tuple(str(p) for p in e.type.params), tuple(str(r) for r in e.type.results))
            for e in mod.exports if isinstance(e.type, wasmtime.FuncType)}
    assert sigs["load64"] == (("i64",), ("i64",)) and sigs["grow"] == (("i64",), ("i64",))  # signatures kept
    with pytest.raises(ValueError, match="already 32-bit"):
        T.lower_memory64(low)
    with pytest.raises(ValueError):
        T.lower_memory64(b"\0asm\1\0\0\0\5")  # truncated


def _unbounded_w64() -> bytes:
    wat = render("w64")
    assert "(memory $mem i64 2 4096)" in wat
    return wasmtime.wat2wasm(wat.replace("(memory $mem i64 2 4096)", "(memory $mem i64 2)"))


def test_engine_lowers_only_within_4gib():
    mod = Module.load(_unbounded_w64(), W64)
    plain = mod._variant(False, True)  # the module as loaded, on the fuel engine
    assert mod.compiled_for(None) is plain  # no maximum, no limit: memory64
    assert mod.compiled_for(8 << 30) is plain  # limit above 4 GiB: memory64
    assert mod.compiled_for(4 << 30) is plain  # exactly 4 GiB: 65536 pages, kept (see module.py)
    low = mod.compiled_for(1 << 30)
    assert low is not plain and mod.compiled_for(4 * 2**30 - PAGE) is low
    results = {}
    for limit in (None, 8 << 30, 1 << 30, 32 << 20):
        inst = Instance(mod, memory_limit=limit)
        out = [inst.handle(c, "{}") for c in ("c", "c", "F", "G", "E", "t", "c")]
        results[limit] = (out, inst.memory_size, hashlib.sha256(inst.memory()).hexdigest())
    assert results[None] == results[8 << 30] == results[1 << 30] == results[32 << 20]
    # growth past the limit through emscripten_resize_heap fails the same way, lowered or not
    bombs = []
    for lower in (True, False):
        engine_module.LOWER_MEMORY64 = lower
        try:
            inst = Instance(mod, memory_limit=32 << 20)
            bombs.append((inst.handle("g", "{}"), inst.handle("c", "{}"), inst.memory_size,
                          hashlib.sha256(inst.memory()).hexdigest()))
        finally:
            engine_module.LOWER_MEMORY64 = True
    assert bombs[0] == bombs[1]
    assert "32" in json.dumps(bombs[0][0]) or "memory" in json.dumps(bombs[0][0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lua64", "lua64-sjlj"])
def test_lua64_modules_lowered_equal_unlowered(name, cache_dir):
    """The project's wasm64 Lua processes: same results (incl. an error rolled back and a memory-limit
    failure) and the same memory after the same messages."""
    from tests.modules.build import MODULES, build

    info = MODULES[name]
    mod = Module.load(build(name).read_bytes(), info.module_format, cache_dir=cache_dir / "engine")
    env = {"Process": {"Id": "P", "Owner": "O", "Tags": []}, "Module": {"Id": "M", "Tags": []}}
    codes = ["1+1", "X = string.rep('a', 1000000) return #X", "error('boom')",
             "T = {} for i = 1, 50000 do T[i] = {i, tostring(i)} end collectgarbage() return #T",
             "Big = string.rep('b', 48 * 1024 * 1024) return #Big", "return collectgarbage('count') > 0"]
    runs = []
    for lower in (False, True):
        engine_module.LOWER_MEMORY64 = lower
        try:
            inst = Instance(mod, memory_limit=40 << 20, compute_limit=10**12)
            assert (mod.compiled_for(40 << 20) is mod._variant(False, True)) is not lower
            out = []
            for k, code in enumerate(codes):
                m = {"Id": f"M{k}", "Owner": "O", "From": "O", "Target": "P", "Data": code,
                     "Tags": [{"name": "Action", "value": "Eval"}], "Timestamp": 1, "Block-Height": 1}
                out.append(inst.handle(m, env))
        finally:
            engine_module.LOWER_MEMORY64 = True
        runs.append((out, inst.memory_size, hashlib.sha256(inst.memory()).hexdigest()))
    assert runs[0] == runs[1]
    out = runs[0][0]
    assert "boom" in out[2]["Error"] and "memory" in json.dumps(out[4])  # error and limit paths were taken
