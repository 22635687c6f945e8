"""The 7 Module-Format strings (docs/ABI.md, Module formats) and what each one selects in the engine."""

from __future__ import annotations

from dataclasses import dataclass

from cu.engine.native import native


@dataclass(frozen=True)
class FormatSpec:
    name: str
    family: int  # native family constant: glue family, docs/ABI.md (Module formats)
    meter: str | None  # "i32"/"i64": binary rewritten by the metering transform at load (§8)


_SPECS = (
    FormatSpec("wasm32-unknown-emscripten", native.F1, None),
    FormatSpec("wasm32-unknown-emscripten2", native.F2, None),
    FormatSpec("wasm32-unknown-emscripten3", native.F3, None),
    FormatSpec("wasm32-unknown-emscripten4", native.F4, None),
    FormatSpec("wasm32-unknown-emscripten-metering", native.F4, "i32"),
    FormatSpec("wasm64-unknown-emscripten-draft_2024_02_15", native.W64, None),
    FormatSpec("wasm64-unknown-emscripten-draft_2024_10_16-metering", native.W64, "i64"),
)

FORMATS: tuple[str, ...] = tuple(s.name for s in _SPECS)
_BY_NAME = {s.name: s for s in _SPECS}


def spec_for(fmt: str) -> FormatSpec | None:
    """Spec for a Module-Format tag value (whitespace-trimmed as the legacy CU does), or None."""
    return _BY_NAME.get(fmt.strip()) if isinstance(fmt, str) else None
