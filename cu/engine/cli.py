"""`aocu run`: the loader on the command line (docs/ABI.md, Calling handle). Each message line reaches `handle` byte for
byte; one legacy-shape result line per message; memory carried across messages.

Every line of MSGS.jsonl is checked before anything runs (a JSON object; `--raw` passes lines unchecked, for test
modules that read plain text): a bad line stops with `aocu: error: FILE line N: reason` and exit 2. A module whose
imports do not match --format is reported once, imports grouped by reason."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}


def parse_bytes(text: str) -> int:
    """Plain digits, or a Memory-Limit style value ('1-gb', '512mb', binary units; docs/ABI.md, Limits and gas)."""
    t = text.strip().lower().replace("-", "", 1)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|pb)?", t)
    if not m:
        raise argparse.ArgumentTypeError(f"not a byte size: {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2) or "b"])


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    from cu.engine.formats import FORMATS

    p = subparsers.add_parser(
        "run",
        help="evaluate messages (JSONL) on a module, memory carried across messages",
        description="Evaluate each message line on one instance of MODULE and print one legacy result "
        "line per message. Messages reach handle() exactly as written (no normalisation).",
    )
    p.add_argument("module", metavar="MODULE.wasm", type=Path)
    p.add_argument("--format", required=True, choices=FORMATS, metavar="FMT", help="Module-Format")
    p.add_argument("--messages", required=True, type=Path, metavar="MSGS.jsonl", help="one message JSON per line")
    p.add_argument("--raw", action="store_true", help="pass the lines unchecked (they need not be JSON)")
    p.add_argument("--process", type=Path, metavar="PROC.json", help="process message; env = {Process:{Id,Owner,Tags}}")
    p.add_argument("--env", type=Path, metavar="ENV.json", help="env JSON passed verbatim (overrides --process)")
    p.add_argument("--memory-limit", type=parse_bytes, metavar="BYTES")
    p.add_argument("--compute-limit", type=_nonneg_int, metavar="N")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="wall-clock backstop per message")
    p.add_argument("--snapshot-in", type=Path, metavar="F", help="start from a snapshot written by --snapshot-out")
    p.add_argument("--snapshot-out", type=Path, metavar="F", help="write the state after the last message")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   default=Path(os.environ.get("AOCU_CACHE_DIR", Path.home() / ".cache" / "aocu" / "modules")),
                   help="compiled-module cache (default: $AOCU_CACHE_DIR or ~/.cache/aocu/modules)")
    p.set_defaults(func=run)


def _env_bytes(args: argparse.Namespace) -> bytes:
    if args.env is not None:
        return args.env.read_bytes().strip()
    if args.process is not None:
        proc = json.loads(args.process.read_bytes())
        if not isinstance(proc, dict):
            raise ValueError(f"{args.process}: process JSON must be an object")
        sub = {k: proc[k] for k in ("Id", "Owner", "Tags") if k in proc}
    else:
        sub = {}
    return json.dumps({"Process": sub}, separators=(",", ":"), ensure_ascii=False).encode()


def _result_line(r: dict) -> str:
    if "Error" in r:
        out = {"Messages": [], "Spawns": [], "Assignments": [], "Error": r["Error"], "GasUsed": r["GasUsed"]}
    else:
        out = {k: r[k] for k in ("Output", "Messages", "Spawns", "Assignments", "GasUsed")}
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def message_lines(data: bytes, name: str, *, raw: bool = False) -> list[bytes]:
    """The non-empty lines of a JSONL file, each a JSON object unless `raw`; ValueError naming the first bad line
    (its number and why) and how many are bad."""
    lines: list[tuple[int, bytes]] = []
    bad: list[str] = []
    for n, text in enumerate(data.splitlines(), 1):
        line = text.rstrip(b"\r")
        if not line.strip():
            continue
        lines.append((n, line))
        if raw:
            continue
        try:
            value = json.loads(line)
        except UnicodeDecodeError:
            bad.append(f"{name} line {n}: not UTF-8 text")
        except ValueError as exc:
            bad.append(f"{name} line {n}: not JSON ({exc.msg} at column {exc.colno})")
        else:
            if not isinstance(value, dict):
                bad.append(f"{name} line {n}: a message must be a JSON object, got {type(value).__name__}")
    if bad:
        more = f" ({len(bad)} bad lines in all; --raw passes lines unchecked)" if len(bad) > 1 else ""
        raise ValueError(bad[0] + more)
    return [line for _, line in lines]


def condense(message: str) -> str:
    """The engine's "imports this host does not provide: A sig: why; B sig: why; ..." with each reason once."""
    head, sep, rest = message.partition("module has imports this host does not provide: ")
    if not sep:
        return message
    tail = ""
    items = rest.split("; ")
    for i, item in enumerate(items):
        if ": " not in item:  # the engine's next problem (missing export ...), not an import
            tail = "; " + "; ".join(items[i:])
            items = items[:i]
            break
    by_reason: dict[str, list[str]] = {}
    for item in items:
        imp, _, why = item.partition(": ")
        by_reason.setdefault(why, []).append(imp.split(" ")[0])
    groups = []
    for why, names in by_reason.items():
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        groups.append(f"{why}: {shown}")
    return f"{head}module imports do not match this format ({len(items)} imports) -- " + "; ".join(groups) + tail


def _fail(msg: str, code: int = 1) -> int:
    print(f"aocu: error: {' '.join(msg.split())}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    from cu.engine import EngineError, Instance, Module, Snapshot

    try:
        wasm = args.module.read_bytes()
        env = _env_bytes(args)
        data = args.messages.read_bytes()
        snap_in = Snapshot.from_bytes(args.snapshot_in.read_bytes()) if args.snapshot_in else None
    except (OSError, ValueError, EngineError) as exc:
        return _fail(str(exc))
    try:
        lines = message_lines(data, str(args.messages), raw=args.raw)
    except ValueError as exc:
        return _fail(str(exc), 2)
    limits = {"memory_limit": args.memory_limit, "compute_limit": args.compute_limit, "timeout_s": args.timeout}
    try:
        module = Module.load(wasm, args.format, cache_dir=args.cache_dir)
        inst = Instance.restore(module, snap_in, **limits) if snap_in else Instance(module, **limits)
    except EngineError as exc:
        msg = condense(str(exc))
        if "imports do not match" in msg:
            msg += f" (`aocu module detect {args.module}` reads the Module-Format from the wasm)"
        return _fail(msg)
    out = sys.stdout
    try:
        for line in lines:
            out.write(_result_line(inst.handle(line, env)) + "\n")
            out.flush()
        if args.snapshot_out:
            tmp = args.snapshot_out.with_name(args.snapshot_out.name + ".tmp")
            tmp.write_bytes(inst.snapshot().to_bytes())
            os.replace(tmp, args.snapshot_out)
    except (EngineError, OSError) as exc:
        return _fail(str(exc))
    return 0
