"""Bridge benchmark: replaying a long legacy stream from the stand-in legacy SU + gateway (loopback HTTP).

    python bench/bridge.py [--messages 1500] [--page-size 1000]

Measured: the bridge computing the stand-in process from nonce 0 to the SU's current timestamp (SU paging,
gateway hydration of assignments, hash-chain checks, dedup, cron generation, evaluation on the native engine,
results committed to SQLite), in evaluated messages per second (scheduled messages + crons).
Baseline from the same run: the same message stream (the legacy CU's JSON, pre-built) evaluated locally on one
`cu.engine.Instance` without HTTP, normalisation or storage. The ratio bridge/baseline is the bridge's overhead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cu.engine import Instance, Module  # noqa: E402
from cu.node.bridge import BridgeConfig, BridgeService  # noqa: E402
from tests.modules.build import MODULES, build  # noqa: E402
from tests.standin.server import StandIn  # noqa: E402
from tests.standin.world import World  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=1500, help="scheduled messages in the legacy process")
    ap.add_argument("--page-size", type=int, default=1000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    world = World(build("lua32").read_bytes(), MODULES["lua32"].module_format, n_messages=args.messages, seed=11)
    stream = world.expected_stream()
    print(f"legacy process: {len(world.edges)} scheduled messages "
          f"({sum(e.message is None for e in world.edges)} assignments, {sum(e.duplicate for e in world.edges)} "
          f"duplicates), {sum(s['kind'] == 'cron' for s in stream)} crons -> {len(stream)} evaluations "
          f"(built in {time.perf_counter() - t0:.1f}s)")

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "module-cache"
        # baseline: the same messages, pre-built, evaluated locally
        module = Module.load(world.module_wasm, world.module_format, cache_dir=cache)
        inst = Instance(module, memory_limit=1 << 30, compute_limit=9_000_000_000_000, timeout_s=30.0)
        env = json.dumps(world.env(), separators=(",", ":"), ensure_ascii=False).encode()
        lines = world.jsonl(stream).splitlines()
        t = time.perf_counter()
        for line in lines:
            inst.handle(line, env)
        base_s = time.perf_counter() - t
        base_rate = len(lines) / base_s

        with StandIn(world) as standin:
            cfg = BridgeConfig(gateway_url=standin.url, page_size=args.page_size, cache_dir=cache)
            bridge = BridgeService(cfg, Path(tmp) / "data")
            t = time.perf_counter()
            bridge._warm_state(world.pid)          # locate, process + module metadata, module bytes, load
            warm_s = time.perf_counter() - t
            t = time.perf_counter()
            bridge.cron(world.pid)
            bridge_s = time.perf_counter() - t
            evals = int(bridge.metrics["evaluations"])
            eval_s = bridge.metrics["eval_seconds"]
            su_requests = sum(1 for svc, _ in standin.requests if svc == "su")
            gw_requests = sum(1 for svc, _ in standin.requests if svc == "gateway")
            bridge.shutdown()
        assert evals == len(stream), (evals, len(stream))
    rate = evals / bridge_s
    print(f"baseline (local Instance.handle, no HTTP): {base_rate:9.1f} msg/s  ({base_s:.2f}s)")
    print(f"bridge (stand-in SU over HTTP, end to end): {rate:9.1f} msg/s  ({bridge_s:.2f}s, of which evaluation "
          f"{eval_s:.2f}s; warm-up {warm_s:.2f}s; {su_requests} SU + {gw_requests} gateway requests)")
    print(f"ratio bridge/baseline: {rate / base_rate:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
