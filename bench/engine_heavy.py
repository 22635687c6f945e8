"""bench/engine.py --workload heavy (issue 19): a wasm64 Lua process whose own code dominates each message, as
in real AOS: the process decodes the message JSON (20 tags), runs four handlers over a heap of ~10 MiB of Lua
tables (a scan, an update, a JSON encode+decode of 300 rows, a sort of 2,000 numbers) and a full
`collectgarbage()`. Marginal messages/s (thread CPU time after a warm-up) of cu.engine vs the wasmtime-py driver
on the same module in the same run, variants interleaved round by round so load changes hit them alike:

  cu / cu+lower          cu.engine with memory64 kept / lowered to a 32-bit memory (native/transform/mem64.cpp)
  cu+lower+nofuel        cu+lower with the node's default limits (Compute-Limit 9e12, --eval-timeout 30 s), which
                         run on the fuel-free engine (docs/ABI.md, Limits and gas); cu / cu+lower set no timeout
                         and so keep fuel
  py / py+lower          the wasmtime-py driver (same wasmtime version and config as cu.engine) on the original /
                         the lowered module: the lowering's gain with the host held fixed
  py+lower:<change>      one wasmtime config change on top (opt level, fuel, epochs, guard/reservation,
                         signals-based traps), to price each on the module's own code
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cu.engine.module as engine_module  # noqa: E402
from bench.wasmtime_py_driver import PyDriver, make_engine  # noqa: E402
from cu import _native  # noqa: E402
from cu.engine import Instance, Module  # noqa: E402
from cu.engine.instance import normalise_response  # noqa: E402
from tests.modules.build import MODULES, build  # noqa: E402

ENV = json.dumps({"Process": {"Id": "PROCESS-ID", "Owner": "OWNER", "Tags": []},
                  "Module": {"Id": "MODULE-ID"}}, separators=(",", ":")).encode()
TAGS = [{"name": f"X-Tag-{k}", "value": f"value-{k}-" + "v" * 24} for k in range(20)]
SETUP = """
json = require('json')
Heap = {}
for i = 1, 40000 do Heap[i] = { id = i, name = 'user-' .. i, bal = i * 7, note = string.rep('n', 40) } end
Handlers = {}
Handlers[1] = function(n) local s = 0 for i = 1, #Heap, 7 do s = s + Heap[i].bal end return s end
Handlers[2] = function(n) local a = Heap[(n % #Heap) + 1] a.bal = a.bal + 1 a.note = 'x' .. n return a.bal end
Handlers[3] = function(n) local t = {} for i = 1, 300 do t[i] = { Heap[i].name, Heap[i].bal } end
  return #json.decode(json.encode(t)) end
Handlers[4] = function(n) local t = {} for i = 1, 2000 do t[i] = Heap[(i * 31 + n) % #Heap + 1].bal end
  table.sort(t) return t[1] end
function Work(n) local r = 0 for k = 1, #Handlers do r = r + Handlers[k](n) end collectgarbage() return r end
return math.floor(collectgarbage('count'))
"""

GiB = 1 << 30
# (name, lowered module?, wasmtime.Config overrides, driver flags) for the wasmtime-py variants
PY_VARIANTS: list[tuple[str, bool, dict, dict]] = [
    ("py", False, {}, {}),
    ("py+lower", True, {}, {}),
    ("py+lower:opt=speed_and_size", True, {"cranelift_opt_level": "speed_and_size"}, {}),
    ("py+lower:no-fuel", True, {"consume_fuel": False}, {"fuel": False}),
    ("py+lower:no-epoch", True, {"epoch_interruption": False}, {"epoch": False}),
    ("py+lower:no-nan-canon", True, {"cranelift_nan_canonicalization": False}, {}),
    ("py+lower:guard=2GiB", True, {"memory_guard_size": 2 * GiB}, {}),
    ("py+lower:reservation=0", True, {"memory_reservation": 0, "memory_guard_size": 0}, {}),
    ("py+lower:no-signals", True, {"signals_based_traps": False}, {}),
    ("py:opt=speed_and_size", False, {"cranelift_opt_level": "speed_and_size"}, {}),
    ("py:no-fuel", False, {"consume_fuel": False}, {"fuel": False}),
]


def _uleb(r: memoryview, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        b = r[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def _enc(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def with_memory_max(wasm: bytes, max_pages: int) -> bytes:
    """The module with its (single, defined) memory's maximum set to `max_pages`: lua64 is linked with a 1 GiB
    maximum, AOS wasm64 builds declare 16 GiB, which makes wasmtime check every access against the current
    size instead of a constant (the case the lowering is for)."""
    v = memoryview(wasm)
    i, out = 8, bytearray(wasm[:8])
    while i < len(wasm):
        sid = v[i]
        size, p = _uleb(v, i + 1)
        if sid == 5:
            count, q = _uleb(v, p)
            flags, q = _uleb(v, q)
            mn, q = _uleb(v, q)
            assert count == 1 and flags & 4, "expects one memory64"
            payload = _enc(1) + _enc(flags | 1) + _enc(mn) + _enc(max_pages)
            out += bytes([5]) + _enc(len(payload)) + payload
        else:
            out += wasm[i:p + size]
        i = p + size
    return bytes(out)


def binaryen_lowered(wasm: bytes) -> bytes | None:
    """binaryen's --memory64-lowering of `wasm` (reference only: it wraps addresses to 32 bits without a check,
    so an address >= 2^32 reads low memory instead of trapping), or None without tests/peers' wasm-opt."""
    exe = Path(__file__).resolve().parent.parent / "tests/peers/node_modules/.bin/wasm-opt"
    if not exe.is_file():
        return None
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.wasm", Path(d) / "out.wasm"
        src.write_bytes(wasm)
        feats = ["--enable-memory64", "--enable-bulk-memory", "--enable-exception-handling", "--enable-sign-ext",
                 "--enable-mutable-globals", "--enable-nontrapping-float-to-int"]
        try:
            subprocess.run([str(exe), *feats, "--memory64-lowering", str(src), "-o", str(dst)], check=True,
                           capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError):
            return None
        return dst.read_bytes()


def message(i: int, data: str) -> bytes:
    m = {"Id": f"MSG-{i}", "Owner": "OWNER", "From": "OWNER", "Target": "PROCESS-ID",
         "Tags": [{"name": "Action", "value": "Eval"}, *TAGS], "Data": data, "Timestamp": 1730000000000 + i,
         "Block-Height": 1543210}
    return json.dumps(m, separators=(",", ":")).encode()


NODE_LIMITS = {"compute_limit": 9_000_000_000_000, "timeout_s": 30.0}  # cu/node/config.py defaults


def _cu(mod: Module, lower: bool, **limits: float) -> Callable[[bytes, bytes], dict]:
    engine_module.LOWER_MEMORY64 = lower
    try:
        inst = Instance(mod, memory_limit=GiB, **limits)
    finally:
        engine_module.LOWER_MEMORY64 = True
    return inst.handle


def _py(wasm: bytes, overrides: dict, flags: dict) -> Callable[[bytes, bytes], dict]:
    drv = PyDriver(make_engine(**overrides), wasm, wasm64=True, **flags)
    return lambda m, e: normalise_response(drv.handle(m, e), 0)


def run_heavy(name: str, per_round: int, rounds: int, only: str) -> int:
    info = MODULES[name]
    if not info.memory64:
        raise SystemExit(f"--workload heavy needs a wasm64 module (lua64), not {name}")
    # as AOS: a 16 GiB maximum; the node's default 1 GiB Memory-Limit is what allows the lowering
    wasm = with_memory_max(build(name).read_bytes(), 16 << 14)
    t = _native.transform
    plain = t.translate_legacy_eh(wasm) if t.has_legacy_eh(wasm) else wasm
    lowered = t.lower_memory64(plain)
    mod = Module.load(wasm, info.module_format)
    variants: dict[str, Callable] = {}
    wanted = None if only == "all" else set(only.split(","))
    build_s = time.perf_counter()
    if wanted is None or "cu" in wanted:
        variants["cu"] = _cu(mod, False)
    if wanted is None or "cu+lower" in wanted:
        variants["cu+lower"] = _cu(mod, True)
    if wanted is None or "cu+lower+nofuel" in wanted:
        variants["cu+lower+nofuel"] = _cu(mod, True, **NODE_LIMITS)
    for vname, low, over, flags in PY_VARIANTS:
        if wanted is None or vname in wanted or vname == "py":
            variants[vname] = _py(lowered if low else plain, over, flags)
    if wanted is None or "py+binaryen" in wanted:
        bw = binaryen_lowered(wasm)
        if bw is not None:
            variants["py+binaryen"] = _py(t.translate_legacy_eh(bw) if t.has_legacy_eh(bw) else bw, {}, {})
    build_s = time.perf_counter() - build_s
    print(f"module {name} ({info.module_format}, maximum memory set to 16 GiB as AOS; Memory-Limit 1 GiB), heavy workload: JSON decode of a 20-tag message, 4 handlers "
          f"over a ~10 MiB Lua heap, full collectgarbage(); {rounds} rounds x {per_round} messages per variant, "
          f"interleaved; thread CPU time; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          f"(variants compiled in {build_s:.0f} s)")
    outputs: dict[str, list] = {}
    for vname, h in variants.items():
        r = h(message(0, SETUP), ENV)
        assert "Error" not in r, (vname, r)
        for k in range(3):  # warm-up: the first full collections size the heap
            h(message(k + 1, f"Work({k})"), ENV)
        outputs[vname] = [r["Output"]]
    cpu = {v: 0.0 for v in variants}
    rounds_cpu: dict[str, list[float]] = {v: [] for v in variants}
    n = 0
    for rnd in range(rounds):
        for vname, h in variants.items():
            t0 = time.thread_time()
            for k in range(per_round):
                i = rnd * per_round + k
                r = h(message(100 + i, f"Work({i})"), ENV)
                if "Error" in r:
                    raise SystemExit(f"{vname}: benchmark message failed: {r}")
                if k == 0:
                    outputs[vname].append(r["Output"])
            cpu[vname] += time.thread_time() - t0
            rounds_cpu[vname].append(time.thread_time() - t0)
        n += per_round
    ref = outputs["py"]
    for vname, out in outputs.items():  # every variant computed the same thing
        assert out == ref, (vname, out[:2], ref[:2])
    rate = {v: n / c for v, c in cpu.items()}
    base = rate["py"]
    # ratio per round against the driver's time in the same round, median over rounds: robust to load changes
    ratio = {v: statistics.median(p / c for p, c in zip(rounds_cpu["py"], rounds_cpu[v], strict=True))
             for v in variants}
    print(f"marginal messages/s (CPU), {n} messages each; ratio vs the wasmtime-py driver on the original module"
          " (py+binaryen: reference, inexact lowering):")
    for vname in variants:
        print(f"  {vname:<30} {rate[vname]:8.2f} msg/s   {1000 / rate[vname]:7.2f} ms/msg   "
              f"x{rate[vname] / base:5.3f}   median of per-round ratios x{ratio[vname]:5.3f}")
    if "cu" in rate and "cu+lower" in rate:
        print(f"  lowering alone (median ratios): cu.engine x{ratio['cu+lower'] / ratio['cu']:.3f}"
              + (f", wasmtime-py x{ratio['py+lower']:.3f}" if "py+lower" in rate else ""))
    if "cu+lower" in rate and "cu+lower+nofuel" in rate:
        print(f"  fuel-free engine alone (median ratios): cu.engine x{ratio['cu+lower+nofuel'] / ratio['cu+lower']:.3f}")
    best = "cu+lower+nofuel" if "cu+lower+nofuel" in rate else "cu+lower"
    got = ratio.get(best, 0)
    print(f"  cu.engine ({best}: the node's default) / wasmtime-py = {got:.2f}x median per round, "
          f"{rate.get(best, 0) / base:.2f}x overall (target >= 1.25x: {'PASS' if got >= 1.25 else 'FAIL'})")
    return 0
