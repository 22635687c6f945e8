"""The layer rules of docs/ARCHITECTURE.md, checked on the source with `ast` (every import statement, including
those inside functions): no module imports a higher layer, `attestation/` imports nothing from `cu/`, the
client-side verifier and the response wire format reach no native code, and no two modules import each other
(directly or through a longer cycle)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer and lower ones. `attestation` stands apart (imports no cu).
LAYERS: list[tuple[str, ...]] = [
    ("cu._native", "attestation"),
    ("cu.engine", "cu.codec", "cu.hashing"),
    ("cu.wire",),
    ("cu.verify", "cu.node"),
    ("cu.http",),
    ("cu.serve",),
    ("cu.cli", "cu"),
]
NATIVE = ("cu._native", "cu.hashing", "cu.engine")
NO_NATIVE = ("cu.wire", "cu.verify", "attestation")
MAX_LINES = 600
# references to the reference material outside the repository (spelled apart so this file does not match)
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "shared" + "/(docs|vectors)", "AO-" + "ABI", "AO-" + "CORE\\.md"]))


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("cu", "attestation"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Modules of this repository that `name` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # `from pkg import mod` imports the submodule; `from mod import symbol` the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            # the longest prefix that is a module here (`from x import name` names a module or a symbol)
            parts = t.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts and parts[0] in ("cu", "attestation"):
                found.add(".".join(parts))
    found.discard(name)
    return found


def _layer(mod: str) -> int:
    best, best_len = None, -1
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best is not None, f"{mod} is in no layer of tests/test_layers.py"
    return best


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imports(m, p, known) for m, p in known.items()}


def test_no_module_imports_a_higher_layer():
    bad = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
           for m, deps in _graph().items() for d in sorted(deps)
           if _layer(d) > _layer(m) and not d == "cu" and not (m.startswith(d + "."))]
    assert not bad, "\n".join(bad)


def test_attestation_imports_nothing_from_cu():
    bad = [f"{m} imports {d}" for m, deps in _graph().items() if m.startswith("attestation")
           for d in sorted(deps) if d == "cu" or d.startswith("cu.")]
    assert not bad, "\n".join(bad)


def test_verifier_and_wire_format_reach_no_native_code():
    graph = _graph()
    bad = []
    for start in graph:
        if not start.startswith(NO_NATIVE):
            continue
        seen, todo, parent = {start}, [start], {start: ""}
        while todo:
            m = todo.pop()
            for d in graph.get(m, ()):
                if d in seen:
                    continue
                seen.add(d)
                parent[d] = m
                if d.startswith(NATIVE):
                    chain, cur = [d], m
                    while cur:
                        chain.append(cur)
                        cur = parent[cur]
                    bad.append(" <- ".join(chain))
                else:
                    todo.append(d)
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = _graph()
    # Tarjan's strongly connected components; package __init__ re-exports count as edges too
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_files_stay_small():
    big = []
    for pkg in ("cu", "attestation"):
        for path in (ROOT / pkg).rglob("*.py"):
            n = len(path.read_text().splitlines())
            if n > MAX_LINES:
                big.append(f"{path.relative_to(ROOT)}: {n} lines")
    for path in (ROOT / "native").rglob("*.[ch]*"):
        n = len(path.read_text(errors="replace").splitlines())
        if n > 800:
            big.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not big, "\n".join(big)


def test_the_repository_points_nowhere_outside_itself():
    bad = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if not path.is_file() or rel.parts[0] in (".git", ".venv", "out") or "node_modules" in rel.parts \
                or ".cache" in rel.parts or path.suffix in (".wasm", ".pem", ".bin", ".so", ".gz", ".zst"):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not bad, "references to documents outside the repository:\n" + "\n".join(sorted(bad))
