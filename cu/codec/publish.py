"""`aocu module publish FILE.wasm --node URL`: sign a Type=Module data item for a wasm module and POST it to a
node's `POST /` (the legacy MU route); prints the module id. `aocu module detect FILE.wasm` prints the format.

The Module-Format is read from the wasm where that is unambiguous (docs/ABI.md, Module formats and Host imports):
  memory64                                        -> wasm64-unknown-emscripten-draft_2024_02_15
  wasm32, every import in namespace `a` (minified) -> wasm32-unknown-emscripten (format 1)
  wasm32, import names of one emscripten era       -> wasm32-unknown-emscripten2 / 3 / 4
    format 2: system, getTempRet0/setTempRet0, emscripten_memcpy_big, _emscripten_date_now
    format 3: emscripten_memcpy_js (with abort, _emscripten_system, emscripten_date_now)
    format 4: _abort_js, _emscripten_memcpy_js, the WeaveDrive imports, metering_gasUsed
Otherwise (and for the `-metering` formats, which are the same binaries evaluated with the metering rewrite)
`--format` names it. Pure Python (a header-only wasm reader), so it runs without the native build.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, load_key

F1 = "wasm32-unknown-emscripten"
F2 = "wasm32-unknown-emscripten2"
F3 = "wasm32-unknown-emscripten3"
F4 = "wasm32-unknown-emscripten4"
F4_METERING = "wasm32-unknown-emscripten-metering"
W64 = "wasm64-unknown-emscripten-draft_2024_02_15"
W64_METERING = "wasm64-unknown-emscripten-draft_2024_10_16-metering"
# the 7 Module-Format strings (cu/engine/formats.py FORMATS, in the same order; checked by tests/test_publish.py)
FORMATS: tuple[str, ...] = (F1, F2, F3, F4, F4_METERING, W64, W64_METERING)

# import name -> the wasm32 formats (2, 3, 4) whose host ABI uses that name (tests/test_modules.py tables)
_ERA: dict[str, frozenset[str]] = {
    **dict.fromkeys(("system", "getTempRet0", "setTempRet0", "emscripten_memcpy_big", "_emscripten_date_now"),
                    frozenset({F2})),
    "emscripten_memcpy_js": frozenset({F3}),
    "abort": frozenset({F2, F3}),
    **dict.fromkeys(("_emscripten_system", "emscripten_date_now"), frozenset({F3, F4})),
    **dict.fromkeys(("_abort_js", "_emscripten_memcpy_js", "__asyncjs__weavedrive_open",
                     "__asyncjs__weavedrive_read", "__asyncjs__weavedrive_close", "metering_gasUsed"),
                    frozenset({F4})),
}

DEFAULT_MEMORY_LIMIT = "512-mb"
DEFAULT_COMPUTE_LIMIT = "9000000000000"
_BYTES = re.compile(r"\d+(?:\.\d+)?-?(?:b|kb|mb|gb|tb|pb)?", re.IGNORECASE)
MAX_MODULE = 1 << 30


class PublishError(ValueError):
    """The module cannot be read, its format cannot be told, or the node refused it."""


# -- the wasm header ----------------------------------------------------------------------------------
@dataclass
class WasmHeader:
    imports: list[tuple[str, str, int]] = field(default_factory=list)   # (module, name, kind)
    memory64: bool = False
    exports: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise PublishError("not a valid wasm module (truncated section)")
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
            if shift > 63:
                raise PublishError("not a valid wasm module (bad LEB128)")

    def name(self) -> str:
        n = self.uleb()
        if self.pos + n > self.end:
            raise PublishError("not a valid wasm module (truncated name)")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")

    def limits(self) -> bool:
        """Reads limits; True when they are 64-bit (memory64 / table64)."""
        flags = self.uleb()
        self.uleb()
        if flags & 1:
            self.uleb()
        return bool(flags & 4)


def read_header(wasm: bytes) -> WasmHeader:
    """Imports, memory kind and exports of a wasm binary (no code is decoded)."""
    if wasm[:4] != b"\0asm":
        raise PublishError("not a wasm module (no \\0asm magic)")
    if wasm[4:8] != b"\1\0\0\0":
        raise PublishError(f"unsupported wasm binary version {wasm[4:8].hex()}")
    info = WasmHeader()
    r = _Reader(wasm, 8, len(wasm))
    while r.pos < r.end:
        sid = r.byte()
        size = r.uleb()
        end = r.pos + size
        if end > len(wasm):
            raise PublishError("not a valid wasm module (section past the end)")
        s = _Reader(wasm, r.pos, end)
        if sid == 2:                                  # imports
            for _ in range(s.uleb()):
                mod, name, kind = s.name(), s.name(), s.byte()
                info.imports.append((mod, name, kind))
                if kind == 0:
                    s.uleb()
                elif kind == 1:
                    s.byte()
                    s.limits()
                elif kind == 2:
                    info.memory64 |= s.limits()
                elif kind == 3:
                    s.byte()
                    s.byte()
                elif kind == 4:
                    s.byte()
                    s.uleb()
                else:
                    raise PublishError(f"not a valid wasm module (import kind {kind})")
        elif sid == 5:                                # memories
            for _ in range(s.uleb()):
                info.memory64 |= s.limits()
        elif sid == 7:                                # exports
            for _ in range(s.uleb()):
                info.exports.append(s.name())
                s.byte()
                s.uleb()
        r.pos = end
    return info


def format_candidates(wasm: bytes) -> tuple[list[str], str, bool]:
    """(the Module-Formats this module can be, best first; why; whether the first one is certain). The
    `-metering` formats are the same binaries as format 4 / wasm64, so they are candidates, never detected."""
    h = read_header(wasm)
    if h.memory64:
        return [W64, W64_METERING], "memory64", True
    funcs = [(m, n) for m, n, k in h.imports if k == 0 and (m, n) != ("metering", "usegas")]
    namespaces = {m for m, _ in funcs}
    if "a" in namespaces:
        if namespaces == {"a"}:
            return [F1], "wasm32 with format 1's minified imports (namespace a)", True
        return [], "it mixes format 1's minified namespace a with " + ", ".join(sorted(namespaces - {"a"})), False
    candidates = {F2, F3, F4}
    seen: list[str] = []
    for _, name in funcs:
        era = _ERA.get(name)
        if era is not None:
            seen.append(name)
            candidates &= era
            if not candidates:
                return [], "its imports mix emscripten eras: " + ", ".join(sorted(set(seen))), False
    ordered = [f for f in (F2, F3, F4) if f in candidates]
    if len(ordered) == 1:
        return ordered + ([F4_METERING] if ordered == [F4] else []), "imports " + ", ".join(sorted(set(seen))), True
    return ordered + ([F4_METERING] if F4 in ordered else []), "no import tells them apart", False


def detect_format(wasm: bytes, name: str = "the module") -> str:
    """The Module-Format when the wasm tells it unambiguously; PublishError listing the candidates otherwise."""
    candidates, why, certain = format_candidates(wasm)
    if certain:
        return candidates[0]
    listed = ", ".join(candidates or FORMATS)
    raise PublishError(f"cannot tell the Module-Format of {name} ({why}): pass --format, one of {listed}")


# -- the item and the upload --------------------------------------------------------------------------
def module_tags(fmt: str, *, memory_limit: str = DEFAULT_MEMORY_LIMIT, compute_limit: str = DEFAULT_COMPUTE_LIMIT,
                extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    if fmt not in FORMATS:
        raise PublishError(f"unknown Module-Format {fmt!r} (one of {', '.join(FORMATS)})")
    if not _BYTES.fullmatch(memory_limit.strip()):
        raise PublishError(f"--memory-limit {memory_limit!r}: a size such as 512-mb or 1-gb")
    if not compute_limit.isdigit() or int(compute_limit) <= 0:
        raise PublishError(f"--compute-limit {compute_limit!r}: a positive integer")
    return [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Module"), ("Module-Format", fmt),
            ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", memory_limit.strip()),
            ("Compute-Limit", compute_limit), ("Content-Type", "application/wasm"), *(extra or [])]


def post_item(node: str, item: DataItem, timeout: float = 120.0) -> dict:
    """POST the item to the node's `POST /`; the node's JSON answer (202 Processing DataItem)."""
    parts = urlsplit(node)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PublishError(f"--node {node!r}: an http(s) URL such as http://127.0.0.1:6363")
    req = urllib.request.Request(node.rstrip("/") + "/", data=item.to_bytes(), method="POST",
                                 headers={"Content-Type": "application/octet-stream", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - scheme checked above
            status, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise PublishError(f"{node}: {getattr(exc, 'reason', exc)}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not 200 <= status < 300:
        msg = doc.get("error") if isinstance(doc, dict) else body[:200].decode("utf-8", "replace")
        raise PublishError(f"the node refused the module: HTTP {status}: {msg}")
    if not isinstance(doc, dict) or doc.get("id") != item.id:
        raise PublishError(f"unexpected answer from {node}: HTTP {status} {body[:200]!r}")
    return doc


# -- command line -------------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    m = subparsers.add_parser("module", help="process modules: publish a wasm module to a node, detect its format")
    msub = m.add_subparsers(dest="module_command", metavar="ACTION", required=True)
    p = msub.add_parser("publish", help="sign a Type=Module item for FILE.wasm and POST it to a node; prints its id")
    p.add_argument("wasm", metavar="FILE.wasm", type=Path)
    p.add_argument("--node", metavar="URL", help="the node to publish to (its POST /), e.g. http://127.0.0.1:6363")
    p.add_argument("--wallet", metavar="JWK",
                   help="key that signs the item (default: a new throwaway Arweave wallet, its address on stderr)")
    p.add_argument("--format", default="auto", metavar="auto|FORMAT",
                   help="Module-Format (default auto: read from the wasm; one of " + ", ".join(FORMATS) + ")")
    p.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT, metavar="SIZE",
                   help=f"Memory-Limit tag (default {DEFAULT_MEMORY_LIMIT})")
    p.add_argument("--compute-limit", default=DEFAULT_COMPUTE_LIMIT, metavar="N",
                   help=f"Compute-Limit tag (default {DEFAULT_COMPUTE_LIMIT})")
    p.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE", help="extra tag (repeatable)")
    p.add_argument("-o", "--output", metavar="FILE", help="also write the signed item to FILE ('-': stdout)")
    p.set_defaults(func=cmd_publish)
    d = msub.add_parser("detect", help="print the Module-Format of FILE.wasm (exit 1 when it cannot be told)")
    d.add_argument("wasm", metavar="FILE.wasm", type=Path)
    d.set_defaults(func=cmd_detect)


def _read_wasm(path: Path) -> bytes:
    if path.stat().st_size > MAX_MODULE:
        raise PublishError(f"{path}: larger than {MAX_MODULE} bytes")
    wasm = path.read_bytes()
    try:
        read_header(wasm)
    except PublishError as exc:
        raise PublishError(f"{path}: {exc}") from None
    return wasm


def cmd_detect(args: argparse.Namespace) -> int:
    print(detect_format(_read_wasm(args.wasm), str(args.wasm)))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    if not args.node and not args.output:
        raise PublishError("--node URL (or -o FILE to only write the signed item)")
    wasm = _read_wasm(args.wasm)
    if args.format == "auto":
        fmt = detect_format(wasm, str(args.wasm))
        print(f"Module-Format {fmt} (read from {args.wasm.name})", file=sys.stderr)
    else:
        fmt = args.format.strip()
    extra = []
    for t in args.tag:
        name, sep, value = t.partition("=")
        if not sep or not name:
            raise PublishError(f"--tag must be NAME=VALUE, got {t!r}")
        extra.append((name, value))
    tags = module_tags(fmt, memory_limit=args.memory_limit, compute_limit=args.compute_limit, extra=extra)
    if args.wallet:
        key = load_key(args.wallet)
    else:
        key = ArweaveWallet.generate()
        print(f"signed with a new throwaway wallet {key.address} (--wallet JWK signs as you)", file=sys.stderr)
    item = DataItem.create(key, data=wasm, tags=tags)
    to_stdout = False
    if args.output:
        from cu.codec.cli import write_output

        to_stdout = write_output(args.output, item.to_bytes())
    if args.node:
        post_item(args.node, item)
        print(f"published {len(wasm)} bytes to {args.node.rstrip('/')}/ as module {item.id}", file=sys.stderr)
    print(item.id, file=sys.stderr if to_stdout else sys.stdout)
    return 0
