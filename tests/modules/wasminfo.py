"""Tiny wasm header reader for the module tests: types, imports, exports, memories, tags.

Reads only the sections it needs (no code decoding); opcode checks use wabt's wasm-objdump.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref",
            0x6F: "externref", 0x69: "exnref"}
EXPORT_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass
class WasmInfo:
    types: list[tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=list)
    func_imports: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    other_imports: list[tuple[str, str, int]] = field(default_factory=list)
    exports: dict[str, tuple[str, int]] = field(default_factory=dict)
    func_types: list[int] = field(default_factory=list)  # type index of every function (imports first)
    memories: list[tuple[bool, int, int | None]] = field(default_factory=list)  # (memory64, min, max)
    tables: list[tuple[str, bool, int, int | None]] = field(default_factory=list)  # (elem, table64, min, max)
    tags: list[int] = field(default_factory=list)  # type index per tag
    section_ids: list[int] = field(default_factory=list)

    def export_sig(self, name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        kind, idx = self.exports[name]
        if kind != "func":
            raise KeyError(f"export {name} is a {kind}")
        return self.types[self.func_types[idx]]


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ValueError("truncated wasm")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def name(self) -> str:
        n = self.uleb()
        s = self.data[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def valtype(self) -> str:
        b = self.byte()
        if b in (0x63, 0x64):  # (ref null? ht) — not used by these modules, read the heap type
            ht = self.byte()
            return f"ref:{ht:#x}"
        return VALTYPES.get(b, f"{b:#x}")

    def limits(self) -> tuple[bool, int, int | None]:
        flags = self.byte()
        is64 = bool(flags & 0x04)
        lo = self.uleb()
        hi = self.uleb() if flags & 0x01 else None
        return is64, lo, hi


def parse(data: bytes) -> WasmInfo:
    if data[:4] != b"\0asm":
        raise ValueError("not a wasm binary")
    info = WasmInfo()
    r = _Reader(data, 8)
    while r.pos < len(data):
        sid = r.byte()
        size = r.uleb()
        start = r.pos
        info.section_ids.append(sid)
        s = _Reader(data, start, start + size)
        if sid == 1:
            for _ in range(s.uleb()):
                if s.byte() != 0x60:
                    raise ValueError("unsupported type form")
                params = tuple(s.valtype() for _ in range(s.uleb()))
                results = tuple(s.valtype() for _ in range(s.uleb()))
                info.types.append((params, results))
        elif sid == 2:
            for _ in range(s.uleb()):
                mod, nm, kind = s.name(), s.name(), s.byte()
                if kind == 0:
                    ti = s.uleb()
                    info.func_imports[(mod, nm)] = info.types[ti]
                    info.func_types.append(ti)
                elif kind == 1:
                    elem = s.valtype()
                    s.limits()
                    info.other_imports.append((mod, nm, kind))
                    _ = elem
                elif kind == 2:
                    info.memories.append(s.limits())
                    info.other_imports.append((mod, nm, kind))
                elif kind == 3:
                    s.valtype()
                    s.byte()
                    info.other_imports.append((mod, nm, kind))
                elif kind == 4:
                    s.byte()
                    info.tags.append(s.uleb())
                    info.other_imports.append((mod, nm, kind))
                else:
                    raise ValueError(f"unknown import kind {kind}")
        elif sid == 3:
            info.func_types.extend(s.uleb() for _ in range(s.uleb()))
        elif sid == 4:
            for _ in range(s.uleb()):
                elem = s.valtype()
                is64, lo, hi = s.limits()
                info.tables.append((elem, is64, lo, hi))
        elif sid == 5:
            info.memories.extend(s.limits() for _ in range(s.uleb()))
        elif sid == 7:
            for _ in range(s.uleb()):
                nm, kind, idx = s.name(), s.byte(), s.uleb()
                info.exports[nm] = (EXPORT_KINDS.get(kind, str(kind)), idx)
        elif sid == 13:
            for _ in range(s.uleb()):
                s.byte()  # attribute 0 = exception
                info.tags.append(s.uleb())
        r.pos = start + size
    return info
