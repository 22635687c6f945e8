"""The client-side verifier is standalone: `aocu verify` runs with the native extension absent, no module of
cu.verify / cu.wire / cu.codec / attestation can reach it (the layer rules themselves: tests/test_layers.py),
and the pure-Python hashing the codecs use (deep-hash, keccak-256, hashpaths) equals the native core's.

Responses are signed in this process (full build, simulated TEE) and verified in a child process in which a
meta-path finder makes `cu._native`, `cu.hashing` and `cu.engine` unimportable, as on a client without the
C++ build."""

# ruff: noqa: F811 - the shared fixtures are imported from tests/test_signing.py and used as parameters
from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cu import _native
from cu.codec import hashes
from cu.node.signer import ResultId
from cu.verify.transport import RawResponse, to_curl_bytes
from tests.test_signing import BODY, MID, PID, SimNode, node_a, node_tdx, wallet_jwks  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
NONCE = bytes.fromhex("5eed" * 16)
BLOCKED = ("cu._native", "cu.hashing", "cu.engine")
# packages whose every module must stay free of native imports, and what the verifier is built from
PURE_ROOTS = ("cu.verify", "cu.wire", "cu.codec", "attestation")

CHILD = r"""
import json, sys

BLOCKED = tuple(sys.argv[1].split(","))


class NoNative:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: no native build)", name=name)
        return None


sys.meta_path.insert(0, NoNative())
import io, contextlib
from cu.cli import main as aocu
from cu.verify.cli import main as verify_main

out = {}
for name, argv in json.loads(sys.argv[2]).items():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = aocu(["verify", *argv]) if not name.startswith("direct") else verify_main(argv)
    out[name] = {"code": code, "stdout": buf.getvalue()}
try:
    import cu.hashing  # noqa: F401
    out["blocker"] = "cu.hashing imported"
except ImportError:
    out["blocker"] = "ok"
out["loaded"] = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
print(json.dumps(out))
"""


def _signed(node: SimNode, *, nonce: bytes | None = None, ans104: bool = False) -> RawResponse:
    if ans104:
        item, h = node.signer.ans104_result(200, BODY, ResultId(process=PID, slot=5), attest_nonce=nonce)
        return RawResponse(200, h, item)
    h = node.signer.sign(200, BODY, ResultId(process=PID, message=MID), attest_nonce=nonce)
    return RawResponse(200, [("Content-Type", "application/json"), *h], BODY)


def _run_child(cases: dict[str, list[str]]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHILD, ",".join(BLOCKED), json.dumps(cases)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_verify_without_the_native_extension(node_a: SimNode, node_tdx: SimNode, tmp_path: Path) -> None:
    cases: dict[str, list[str]] = {}
    for node, tag in ((node_a, "snp"), (node_tdx, "tdx")):
        doc = tmp_path / f"{tag}-evidence.json"
        doc.write_text(json.dumps(node.document()))
        for kind, resp, extra in (("key", _signed(node), []),
                                  ("fresh", _signed(node, nonce=NONCE), ["--nonce", NONCE.hex()]),
                                  ("ans104", _signed(node, ans104=True), [])):
            f = tmp_path / f"{tag}-{kind}.txt"
            f.write_bytes(to_curl_bytes(resp))
            bad = tmp_path / f"{tag}-{kind}-tampered.txt"
            raw = f.read_bytes()
            # tamper with the result itself: the JSON body, or the item's data inside the ANS-104 body
            bad.write_bytes(raw[: raw.rindex(b'"hello"')] + b'"hellO"' + raw[raw.rindex(b'"hello"') + 7:])
            base = ["--evidence", str(doc), "--allow-simulated", str(node.roots), *extra]
            cases[f"{tag}-{kind}"] = ["--response", str(f), *base]
            cases[f"{tag}-{kind}-tampered"] = ["--response", str(bad), *base]
    cases["direct-snp-key"] = cases["snp-key"]
    cases["snp-key-no-simulated"] = ["--response", cases["snp-key"][1], "--evidence", cases["snp-key"][3]]

    out = _run_child(cases)
    assert out["blocker"] == "ok"
    assert out["loaded"] == [], out["loaded"]  # cu._native, cu.hashing, cu.engine never imported
    for name in cases:
        got = out[name]
        if name.endswith("-tampered") or name.endswith("-no-simulated"):
            assert got["code"] == 1, (name, got["stdout"])
            assert "NOT VERIFIED" in got["stdout"], (name, got["stdout"])
        else:
            assert got["code"] == 0, (name, got["stdout"])
            assert "VERIFIED (SIMULATED" in got["stdout"] and "FAIL" not in got["stdout"], (name, got["stdout"])
    assert "FAIL  content_digest" in out["snp-key-tampered"]["stdout"]
    assert "FAIL  ans104.signature" in out["tdx-ans104-tampered"]["stdout"]
    assert "FAIL  binding.fresh" in out["snp-fresh-tampered"]["stdout"]


# -- static: the import graph ------------------------------------------------------------------------------
def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for p in (base / "__init__.py", base.with_suffix(".py")):
        if p.is_file():
            return p
    return None


def _imports(name: str) -> set[str]:
    """Every name `name` imports, at module level or inside functions: `from a.b import c` gives a, a.b and
    a.b.c (c may be a submodule, even a compiled one)."""
    path = _module_file(name)
    assert path is not None, name
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                anchor = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join([*anchor, *([node.module] if node.module else [])])
            found.update(f"{mod}.{a.name}" for a in node.names)
            found.add(mod)
    out: set[str] = set()
    for m in found:
        parts = m.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def _closure(start: str) -> set[str]:
    """Every name reachable from `start` through imports of project modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        if m.split(".")[0] in ("cu", "attestation") and _module_file(m) is not None:
            todo.extend(_imports(m))
    return seen


def _modules_under(pkg: str) -> list[str]:
    root = REPO.joinpath(*pkg.split("."))
    out = []
    for p in root.rglob("*.py"):
        parts = p.relative_to(root).with_suffix("").parts
        out.append(".".join((pkg, *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return sorted(out)


def _blocked(names: set[str]) -> list[str]:
    return sorted(m for m in names if any(m == b or m.startswith(b + ".") for b in BLOCKED))


@pytest.mark.parametrize("root", PURE_ROOTS)
def test_no_native_import_reachable(root: str) -> None:
    for mod in _modules_under(root):
        assert not _blocked(_closure(mod)), f"{mod} reaches {_blocked(_closure(mod))}"
    assert "cu._native" in _blocked(_closure("cu.hashing"))  # the walk does see compiled modules


def test_verifiers_do_not_reach_the_simulator() -> None:
    for mod in ("cu.verify.cli", "attestation.evidence", "attestation.verify_snp", "attestation.verify_tdx"):
        assert "attestation.sim" not in _closure(mod), mod


# -- pure-Python hashing equals the native core -----------------------------------------------------------
def _random_tree(rng: random.Random, depth: int = 0) -> object:
    if depth < 4 and rng.random() < 0.35:
        return [_random_tree(rng, depth + 1) for _ in range(rng.randrange(0, 6))]
    blob = rng.randbytes(rng.choice((0, 1, 31, 32, 47, 48, 200, rng.randrange(0, 5000))))
    kind = rng.randrange(4)
    if kind == 0:
        return blob.hex()  # str: hashed as UTF-8
    if kind == 1:
        return bytearray(blob)
    return blob if kind == 2 else tuple([blob])


def test_deep_hash_matches_native() -> None:
    rng = random.Random(1040)
    for _ in range(500):
        tree = _random_tree(rng)
        assert hashes.deep_hash_py(tree) == _native.hash.deep_hash(tree)
    assert hashes.deep_hash_py("é") == _native.hash.deep_hash("é")
    with pytest.raises(TypeError):
        hashes.deep_hash_py([b"a", 5])  # type: ignore[list-item]
    deep: object = b""
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ValueError):
        hashes.deep_hash_py(deep)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        _native.hash.deep_hash(deep)


def test_keccak_sha_and_hashpath_match_native() -> None:
    rng = random.Random(7)
    lengths = [0, 1, 55, 56, 135, 136, 137, 271, 272, 273, 1000] + [rng.randrange(0, 700) for _ in range(60)]
    for n in lengths:
        data = rng.randbytes(n)
        assert hashes.keccak256_py(data) == _native.hash.keccak256(data), n
        assert hashes.sha256(data) == _native.hash.sha256(data)
        assert hashes.sha384(data) == _native.hash.sha384(data)
        assert hashes.sha512(data) == _native.hash.sha512(data)
    assert hashes.keccak256_py(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    for _ in range(50):
        a, b = rng.randbytes(32), rng.randbytes(32)
        hp = f"{hashes.b64url(a)}/{hashes.b64url(b)}"
        assert hashes.hashpath_next(hp, "X") == f"{hashes.b64url(_native.hash.hashpath_step(a, b))}/X"
    assert hashes.hashpath_next("text/also-text", "M") == \
        f"{hashes.b64url(_native.hash.hashpath_step(b'text', b'also-text'))}/M"
    with pytest.raises(ValueError):
        hashes.hashpath_next("nohash", "M")
