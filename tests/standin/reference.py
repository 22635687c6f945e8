"""The reference evaluator of the bridge tests: `aocu run` on the legacy stream the stand-in world models."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cu.node import legacy

ROOT = Path(__file__).resolve().parent.parent.parent


def aocu_run(world: Any, stream: list[dict[str, Any]], workdir: Path, cache_dir: Path) -> tuple[list[dict], str]:
    """Evaluates `stream` (the legacy CU's messages, as the world models them) with the `aocu run` CLI in a
    separate process; returns the result lines (merged like the legacy CU does) and the SHA-256 of the final
    memory."""
    from cu.engine import Instance, Module, Snapshot

    workdir.mkdir(parents=True, exist_ok=True)
    wasm = workdir / "module.wasm"
    wasm.write_bytes(world.module_wasm)
    msgs = workdir / "messages.jsonl"
    msgs.write_bytes(world.jsonl(stream))
    env = workdir / "env.json"
    env.write_text(json.dumps(world.env(), separators=(",", ":"), ensure_ascii=False))
    snap = workdir / "final.snap"
    cmd = [sys.executable, "-m", "cu.cli", "run", str(wasm), "--format", world.module_format, "--messages", str(msgs),
           "--env", str(env), "--memory-limit", "1-gb", "--compute-limit", "9000000000000",
           "--snapshot-out", str(snap), "--cache-dir", str(cache_dir)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()]
    assert len(lines) == len(stream)
    results = [legacy.result_view(legacy.merge_result(r)) for r in lines]
    module = Module.load(world.module_wasm, world.module_format, cache_dir=cache_dir)
    mem = Instance.restore(module, Snapshot.from_bytes(snap.read_bytes())).memory()
    return results, hashlib.sha256(mem).hexdigest()
