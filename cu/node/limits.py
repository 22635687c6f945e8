"""Module admission checks of the legacy CU (docs/ABI.md: Module formats; Limits and gas)."""

from __future__ import annotations

import re

from cu.node.errors import Invalid, LimitExceeded

FORMATS: tuple[str, ...] = (
    "wasm32-unknown-emscripten",
    "wasm32-unknown-emscripten2",
    "wasm32-unknown-emscripten3",
    "wasm32-unknown-emscripten4",
    "wasm32-unknown-emscripten-metering",
    "wasm64-unknown-emscripten-draft_2024_02_15",
    "wasm64-unknown-emscripten-draft_2024_10_16-metering",
)

_BYTES = re.compile(r"^((-|\+)?(\d+(?:\.\d+)?)) *(kb|mb|gb|tb|pb|b)$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}


def parse_bytes(value: str) -> int | None:
    """npm `bytes.parse` after the legacy CU replaces the first '-' (`1-gb` -> `1gb`)."""
    text = value.replace("-", "", 1).strip()
    m = _BYTES.match(text)
    if m:
        return int(float(m.group(1)) * _UNITS[m.group(4).lower()])
    m = re.match(r"^\s*([+-]?\d+)", text)  # parseInt fallback: plain digits = bytes
    return int(m.group(1)) if m else None


def parse_int(value: str) -> int | None:
    m = re.match(r"^\s*([+-]?\d+)", value)
    return int(m.group(1)) if m else None


def _tag(tags: list[tuple[str, str]], name: str) -> str | None:
    for n, v in tags:
        if n == name:
            return v
    return None


def module_limits(pid: str, process_tags: list[tuple[str, str]], module_tags: list[tuple[str, str]], *,
                  memory_max: int, compute_max: int) -> tuple[str, int, int]:
    """(format, memory limit, compute limit) or LimitExceeded/Invalid (413/422 on the legacy CU)."""
    fmt = (_tag(module_tags, "Module-Format") or "").strip()
    if fmt not in FORMATS:
        raise Invalid(f"Module-Format {fmt or '(none)'} for process {pid} is not supported")
    for name in ("Input-Encoding", "Output-Encoding"):
        if not _tag(module_tags, name):
            raise Invalid(f"{name} for process {pid} is not supported: tag not found on module")
    if _tag(module_tags, "Extension") is not None or _tag(process_tags, "Extension") is not None:
        raise Invalid(f"Extension for process {pid} is not supported")
    mem_s = _tag(process_tags, "Memory-Limit") or _tag(module_tags, "Memory-Limit")
    cmp_s = _tag(process_tags, "Compute-Limit") or _tag(module_tags, "Compute-Limit")
    mem = parse_bytes(mem_s) if mem_s else None
    cmp_ = parse_int(cmp_s) if cmp_s else None
    if mem is None or mem <= 0 or mem > memory_max:
        raise LimitExceeded(f"Memory-Limit for process {pid} exceeds supported limit")
    if cmp_ is None or cmp_ <= 0 or cmp_ > compute_max:
        raise LimitExceeded(f"Compute-Limit for process {pid} exceeds supported limit")
    return fmt, mem, cmp_
