"""Engine benchmark: per-message time inside `handle` vs host overhead, cu.engine vs a wasmtime-py driver
of the same module in the same run; cached load + snapshot restore; incremental commitment.

    python bench/engine.py [--module lua64|lua32-lazy|...] [--messages 2000]
    python bench/engine.py --workload heavy [--messages 25] [--rounds 12] [--variants cu+lower+nofuel,py]

Targets (issue 2): host overhead <= 10 us/message; messages/s >= 1.15x the wasmtime-py driver;
cached load + 64 MiB restore < 20 ms; commitment after a small change on 64 MiB < 1 ms.
`--workload heavy` (issue 19): the module's own code dominates, as in real AOS (bench/engine_heavy.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.wasmtime_py_driver import PyDriver, make_engine  # noqa: E402
from cu import _native  # noqa: E402
from cu.engine import Instance, Module, Snapshot  # noqa: E402
from cu.engine.instance import normalise_response  # noqa: E402
from cu.engine.module import clear_process_cache  # noqa: E402
from tests.modules.build import MODULES, build, cached_path  # noqa: E402
from tests.wat.gen import build as build_wat  # noqa: E402

ENV = {"Process": {"Id": "PROCESS-ID", "Owner": "OWNER", "Tags": []}, "Module": {"Id": "MODULE-ID"}}


def message(i: int, data: str) -> bytes:
    m = {"Id": f"MSG-{i}", "Owner": "OWNER", "From": "OWNER", "Target": "PROCESS-ID",
         "Tags": [{"name": "Action", "value": "Eval"}], "Data": data, "Timestamp": 1730000000000 + i,
         "Block-Height": 1543210}
    return json.dumps(m, separators=(",", ":")).encode()


def run_loop(handle, inside_ns, msgs, env):
    totals, insides = [], []
    for m in msgs:
        t0 = time.perf_counter_ns()
        r = handle(m, env)
        totals.append(time.perf_counter_ns() - t0)
        insides.append(inside_ns())
        if "Error" in r:
            raise SystemExit(f"benchmark message failed: {r}")
    return totals, insides


def summarise(name, totals, insides):
    tot = statistics.median(totals) / 1000
    ins = statistics.median(insides) / 1000
    over = statistics.median([t - i for t, i in zip(totals, insides, strict=True)]) / 1000
    rate = len(totals) / (sum(totals) / 1e9)
    mean_over = (sum(totals) - sum(insides)) / len(totals) / 1000
    print(f"  {name:<22} inside handle {ins:8.1f} us   host overhead {over:6.1f} us (mean {mean_over:6.1f})"
          f"   total {tot:8.1f} us   {rate:9.0f} msg/s")
    return over, rate


def main() -> int:
    ap = argparse.ArgumentParser()
    default = "lua64" if cached_path("lua64").is_file() else "lua32-lazy"
    ap.add_argument("--module", default=default, choices=sorted(MODULES))
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--data", default="1+1")
    ap.add_argument("--workload", choices=("light", "heavy"), default="light")
    ap.add_argument("--rounds", type=int, default=12, help="heavy: interleaved rounds per variant")
    ap.add_argument("--variants", default="all", help="heavy: comma-separated variant names, or all")
    ap.add_argument("--interleave", choices=("message", "round"), default="message",
                    help="heavy: variants take turns per message, or per round of --messages messages")
    args = ap.parse_args()
    if args.workload == "heavy":
        from bench.engine_heavy import run_heavy

        return run_heavy(args.module, args.messages if args.messages != 2000 else 25, args.rounds,
                         args.variants, args.interleave)
    info = MODULES[args.module]
    wasm = build(args.module).read_bytes()
    env = json.dumps(ENV, separators=(",", ":")).encode()
    msgs = [message(i, args.data) for i in range(args.messages)]
    warm = [message(-i, args.data) for i in range(1, 51)]
    print(f"module {args.module} ({info.module_format}), {args.messages} messages of Eval {args.data!r}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (timings are wall clock)")

    cache = Path(tempfile.mkdtemp(prefix="aocu-bench-"))
    t0 = time.perf_counter()
    mod = Module.load(wasm, info.module_format, cache_dir=cache)
    compile_s = time.perf_counter() - t0
    inst = Instance(mod)
    for m in warm:
        inst.handle(m, env)
    cu_tot, cu_in = run_loop(inst.handle, lambda: inst.last_handle_ns, msgs, env)

    engine = make_engine()
    drv = PyDriver(engine, _native.transform.translate_legacy_eh(wasm)
                   if _native.transform.has_legacy_eh(wasm) else wasm, wasm64=info.memory64)

    def py_handle(m, e):
        return normalise_response(drv.handle(m, e), 0)

    for m in warm:
        py_handle(m, env)
    py_tot, py_in = run_loop(py_handle, lambda: drv.last_handle_ns, msgs, env)

    print("per message (medians):")
    cu_over, cu_rate = summarise("cu.engine", cu_tot, cu_in)
    py_over, py_rate = summarise("wasmtime-py driver", py_tot, py_in)
    print(f"  host overhead: {cu_over:.1f} us (target <= 10 us: {'PASS' if cu_over <= 10 else 'FAIL'}); "
          f"wasmtime-py {py_over:.1f} us ({py_over / cu_over:.1f}x more)")
    print(f"  throughput ratio cu.engine / wasmtime-py = {cu_rate / py_rate:.2f}x "
          f"(target >= 1.15x: {'PASS' if cu_rate / py_rate >= 1.15 else 'FAIL'})")
    print(f"  rollback journal: {inst.stats()}")

    # -- cached load + restore ------------------------------------------------------------------------
    def restore_case(label, wasm_bytes, fmt, inst):
        snap_bytes = inst.snapshot().to_bytes()
        loads = []
        r = None
        for _ in range(7):
            r = None  # destroy the previous instance outside the timed region
            clear_process_cache()
            t0 = time.perf_counter()
            m2 = Module.load(wasm_bytes, fmt, cache_dir=cache)
            t1 = time.perf_counter()
            r = Instance.restore(m2, Snapshot.from_bytes(snap_bytes))
            t2 = time.perf_counter()
            loads.append((t1 - t0, t2 - t1))
        assert r is not None and r.memory() == inst.memory()
        load_s = statistics.median(a for a, _ in loads)
        restore_s = statistics.median(b for _, b in loads)
        total_ms = (load_s + restore_s) * 1000
        print(f"  {label}: {inst.memory_size / 2**20:.0f} MiB memory, {len(snap_bytes) / 2**20:.1f} MiB snapshot: "
              f"load {load_s * 1000:.1f} ms + restore {restore_s * 1000:.1f} ms = {total_ms:.1f} ms "
              f"(target < 20 ms: {'PASS' if total_ms < 20 else 'FAIL'})")

    print(f"cached load + restore (medians of 7; compile without cache took {compile_s * 1000:.0f} ms):")
    # AOS-like layout: 68 MiB initial memory (1088 pages, as the format-4/wasm64 fixtures) with 8 MiB in use
    wat = build_wat("w64", initial_pages=1088)
    wfmt = "wasm64-unknown-emscripten-draft_2024_02_15"
    aos_like = Instance(Module.load(wat, wfmt, cache_dir=cache))
    aos_like.handle("F", "{}")
    restore_case("WAT process, 68 MiB memory with 8 MiB written", wat, wfmt, aos_like)
    # worst case for this module: 40 MiB string allocated then freed (non-zero garbage stays in memory)
    big = Instance(mod)
    big.handle(message(0, "Big = string.rep('x', 40 * 1024 * 1024) return #Big"), env)
    big.handle(message(1, "Big = nil collectgarbage() return 0"), env)
    restore_case(f"{args.module} after a 40 MiB allocation", wasm, info.module_format, big)

    # -- incremental commitment ---------------------------------------------------------------------------
    if hasattr(getattr(_native, "merkle", None), "PageMerkle"):
        big.commitment()
        big.handle(message(2, "Count = (Count or 0) + 1"), env)
        t0 = time.perf_counter()
        big.commitment()
        dt = (time.perf_counter() - t0) * 1000
        print(f"commitment after one message on {big.memory_size / 2**20:.0f} MiB: {dt:.2f} ms "
              f"(method {big._merkle.method}, pages rehashed {big._merkle.last_rehashed})")
    else:
        print("commitment: page-Merkle not available in this build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
