"""`aocu module publish|detect` (cu/codec/publish.py): the Module-Format read from the wasm of every test module,
the one-line refusals when it cannot be told, and a publish to a real `aocu serve` followed by spawn, message
and result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.publish import (
    F2,
    F3,
    F4,
    F4_METERING,
    FORMATS,
    PublishError,
    detect_format,
    format_candidates,
    module_tags,
    read_header,
)

REPO = Path(__file__).resolve().parent.parent
DETECTED = ("lua32", "lua32-f1", "lua32-f3", "lua32-lazy", "lua64")


def aocu(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cu.cli", *args], capture_output=True, timeout=180, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), input=stdin)


# -- a hand-made wasm header ------------------------------------------------------------------------------
def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _name(s: str) -> bytes:
    return _leb(len(s)) + s.encode()


def wasm(imports: list[tuple[str, str]], memory64: bool = False) -> bytes:
    """Type section with one ()->() type, function imports of it, and one memory."""
    types = b"\x01\x60\x00\x00"
    imp = _leb(len(imports)) + b"".join(_name(m) + _name(n) + b"\x00\x00" for m, n in imports)
    mem = b"\x01" + (b"\x04\x01" if memory64 else b"\x00\x01")
    sec = b"".join(bytes([sid]) + _leb(len(body)) + body for sid, body in ((1, types), (2, imp), (5, mem)))
    return b"\0asm\1\0\0\0" + sec


def test_formats_match_the_engine_and_the_node():
    from cu.engine.formats import FORMATS as ENGINE
    from cu.node.limits import FORMATS as NODE
    assert FORMATS == ENGINE == NODE


def test_header_reader_and_synthetic_detection():
    h = read_header(wasm([("env", "abort"), ("wasi_snapshot_preview1", "fd_write")]))
    assert h.imports == [("env", "abort", 0), ("wasi_snapshot_preview1", "fd_write", 0)] and not h.memory64
    assert read_header(wasm([], memory64=True)).memory64
    assert detect_format(wasm([("env", "_abort_js")], memory64=True)) == "wasm64-unknown-emscripten-draft_2024_02_15"
    assert detect_format(wasm([("a", "a"), ("a", "b"), ("metering", "usegas")])) == "wasm32-unknown-emscripten"
    assert detect_format(wasm([("env", "getTempRet0"), ("env", "abort")])) == F2
    assert detect_format(wasm([("env", "emscripten_memcpy_js")])) == F3
    assert detect_format(wasm([("env", "abort"), ("env", "_emscripten_system")])) == F3   # the one era with both
    assert detect_format(wasm([("env", "_abort_js")])) == F4
    assert format_candidates(wasm([("env", "_abort_js")]))[0] == [F4, F4_METERING]


@pytest.mark.parametrize("imports, listed", [
    ([("wasi_snapshot_preview1", "fd_write")], [F2, F3, F4, F4_METERING]),     # nothing tells the era
    ([("env", "_emscripten_system")], [F3, F4, F4_METERING]),
    ([("env", "abort")], [F2, F3]),
    ([("env", "system"), ("env", "_abort_js")], list(FORMATS)),                # eras mixed
    ([("a", "a"), ("env", "abort")], list(FORMATS)),                           # minified and plain names
])
def test_ambiguous_modules_ask_for_format(imports, listed):
    with pytest.raises(PublishError) as exc:
        detect_format(wasm(imports), "m.wasm")
    msg = str(exc.value)
    assert "\n" not in msg and "pass --format" in msg and "m.wasm" in msg
    assert msg.split("one of ", 1)[1].split(", ") == listed


def test_bad_input_and_tags(tmp_path):
    for blob in (b"", b"\0asm\2\0\0\0", b"not wasm at all", wasm([])[:-1]):
        with pytest.raises(PublishError):
            read_header(blob)
    with pytest.raises(PublishError, match="unknown Module-Format"):
        module_tags("wasm32-unknown-emscripten9")
    with pytest.raises(PublishError, match="memory-limit"):
        module_tags(F2, memory_limit="lots")
    with pytest.raises(PublishError, match="compute-limit"):
        module_tags(F2, compute_limit="-1")
    assert dict(module_tags(F2, memory_limit="1-gb"))["Memory-Limit"] == "1-gb"
    # through the CLI: one line, no traceback
    f = tmp_path / "amb.wasm"
    f.write_bytes(wasm([("wasi_snapshot_preview1", "fd_write")]))
    p = aocu("module", "publish", str(f), "-o", str(tmp_path / "item.bin"))
    err = p.stderr.decode()
    assert p.returncode == 1 and err.count("\n") == 1 and err.startswith("aocu: error: cannot tell the Module-Format")
    assert "Traceback" not in err and not (tmp_path / "item.bin").exists()
    p = aocu("module", "publish", str(f))
    assert p.returncode == 1 and "--node URL" in p.stderr.decode()
    # --format names it; -o writes the signed item without a node
    key = tmp_path / "k.json"
    assert aocu("wallet", "new", "--type", "ed25519", "-o", str(key)).returncode == 0
    p = aocu("module", "publish", str(f), "--format", F3, "--wallet", str(key), "-o", str(tmp_path / "item.bin"),
             "--tag", "Name=demo")
    assert p.returncode == 0, p.stderr
    item = DataItem.parse((tmp_path / "item.bin").read_bytes())
    assert item.verify() and item.id == p.stdout.decode().strip()
    assert item.tag("Module-Format") == F3 and item.tag("Type") == "Module" and item.tag("Name") == "demo"
    assert item.data == f.read_bytes()


# -- the real test modules ------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", DETECTED)
def test_detects_each_test_module(name):
    from tests.modules.build import MODULES, build
    path = build(name)
    assert detect_format(path.read_bytes(), name) == MODULES[name].module_format
    p = aocu("module", "detect", str(path))
    assert p.returncode == 0 and p.stdout.decode().strip() == MODULES[name].module_format


@pytest.mark.slow
def test_publish_then_spawn_message_result(tmp_path):
    import tests.test_node_e2e as e2e
    from cu.codec.wallet import ArweaveWallet
    from tests.modules.build import build

    wallet = ArweaveWallet.generate()
    jwk = tmp_path / "wallet.json"
    jwk.write_text(json.dumps(wallet.to_jwk()))
    node = e2e.Node(tmp_path / "data")
    try:
        ids = {}
        for name in ("lua32", "lua64"):
            p = aocu("module", "publish", str(build(name)), "--node", node.url, "--wallet", str(jwk))
            assert p.returncode == 0, p.stderr
            ids[name] = p.stdout.decode().strip()
            assert len(ids[name]) == 43 and "Module-Format" in p.stderr.decode()
            status, body, _ = e2e.get(f"{node.url}/raw/{ids[name]}")
            assert status == 200 and body == build(name).read_bytes()
        for name, mod in ids.items():
            pid = e2e.spawn(node.url, wallet, mod)
            mid = e2e.send(node.url, wallet, pid, "Count")
            assert e2e.result(node.url, pid, mid)["Output"] == "1", name
            mid = e2e.send(node.url, wallet, pid, "Echo", "héllo")
            assert e2e.result(node.url, pid, mid)["Output"] == "héllo", name
        # a node answering an error (here 404/405 for a wrong path) is one line
        p = aocu("module", "publish", str(build("lua32")), "--node", node.url + "/nowhere/")
        assert p.returncode == 1 and p.stderr.decode().splitlines()[-1].startswith("aocu: error: ")
        assert "Traceback" not in p.stderr.decode()
    finally:
        node.stop_term()
