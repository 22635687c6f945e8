"""Authenticated caches (issue 16): a real evaluator process (Unix socket) whose compiled-module cache and
checkpoint rows are altered while it is stopped, the way a host with the disk would. The altered entries are
rejected with a log line and the `cache_rejected` metric, the module is recompiled and the state rebuilt from the
log, and the node answers correctly. File modes stay private under umask 000."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.http import create_app
from cu.node.config import NodeConfig
from cu.node.items import Identity
from tests.lua_process import spawn_lua32
from tests.test_signing import wallet_jwks  # noqa: F401 - RSA-4096 wallets generated once per cache

REPO = Path(__file__).resolve().parent.parent
V1_MAGIC, V2_MAGIC = b"AOCU-CWASM-1\n", b"AOCU-CWASM-2\n"


def elf_text(blob: bytes) -> tuple[int, int]:
    """(offset, size) of the .text section of the ELF image wasmtime serializes compiled code as."""
    assert blob[:4] == b"\x7fELF" and blob[4] == 2 and blob[5] == 1, "expected a 64-bit little-endian ELF"
    shoff, = struct.unpack_from("<Q", blob, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", blob, 0x3A)

    def sh(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from("<IIQQQQ", blob, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = sh(shstrndx)
    for i in range(shnum):
        name, off, size = sh(i)
        if blob[stroff + name:].split(b"\0", 1)[0] == b".text":
            return off, size
    raise AssertionError("no .text section")


class Node:
    def __init__(self, base: Path, jwk: dict) -> None:
        wallet = base / "wallet.json"
        wallet.write_text(json.dumps(jwk))
        wallet.chmod(0o600)
        self.cfg = NodeConfig.from_mapping({"data_dir": base / "node", "tee": "sim", "wallet": wallet,
                                            "evaluator": "socket", "checkpoint_every": 1, "busy_s": 120.0,
                                            # full checkpoints only (deltas: tests/test_lifecycle.py)
                                            "lifecycle": "classic"})
        self.log_path = base / "evaluator.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "cu.node.service", json.dumps(self.cfg.to_mapping())],
                                         stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + 60
        while not Path(self.cfg.socket_path).exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        assert self.proc.wait(timeout=60) == 0, self.log_path.read_text()[-3000:]
        Path(self.cfg.socket_path).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def node(tmp_path_factory, wallet_jwks):  # noqa: F811
    base = tmp_path_factory.mktemp("cacheauth")
    old = os.umask(0)   # file modes must not depend on the umask
    try:
        n = Node(base, wallet_jwks[0])
        Identity.load(n.cfg.data_dir, n.cfg.wallet)
        n.start()
        app = create_app(n.cfg)
    finally:
        os.umask(old)
    st = app.extensions["aocu"]
    owner = ArweaveWallet.from_jwk(wallet_jwks[1])
    pid = spawn_lua32(st.scheduler.ingest, owner)
    yield n, st, pid
    if n.proc is not None and n.proc.poll() is None:
        n.stop()


def count(st, pid: str) -> str:
    m = DataItem.create(Ed25519Key.generate(), data=b"", target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Count")])
    acc = st.scheduler.ingest(m.to_bytes())
    return json.loads(st.evaluator.result(pid, acc.id))["Output"]


def rejected(st) -> float:
    return st.evaluator.metrics().metrics["cache_rejected"]


def test_tampered_cwasm_and_checkpoint_are_rebuilt_never_used(node):
    n, st, pid = node
    assert [count(st, pid) for _ in range(3)] == ["1", "2", "3"]
    assert rejected(st) == 0
    n.stop()

    data = n.cfg.data_dir
    # one file per compiled variant the node used (the fuel engine's, read at load, and the fuel-free one its
    # instances run: docs/ABI.md); every one is attacked
    cws = sorted((data / "module-cache").glob("*.cwasm"))
    assert 1 <= len(cws) <= 2
    for cw in cws:
        raw = cw.read_bytes()
        assert raw.startswith(V2_MAGIC)
        blob = bytearray(raw[len(V2_MAGIC) + 32:])
        off, size = elf_text(blob)
        blob[off:off + size] = b"\xcc" * size            # int3 over the whole code
        # the attack: the unkeyed format with its SHA-256 recomputed over the altered code
        cw.write_bytes(V1_MAGIC + hashlib.sha256(blob).digest() + bytes(blob))
    db = sqlite3.connect(data / "node.sqlite")
    (new_seq, _), (old_seq, old_snap) = db.execute(
        "SELECT seq, snapshot FROM checkpoints WHERE pid=? ORDER BY seq DESC", (pid,)).fetchall()[:2]
    # roll the newest checkpoint back to the older state, memory root included: consistent for every unkeyed check
    db.execute("UPDATE checkpoints SET snapshot=?, memory_root=(SELECT memory_root FROM checkpoints WHERE pid=? "
               "AND seq=?) WHERE pid=? AND seq=?", (old_snap, pid, old_seq, pid, new_seq))
    db.commit()
    db.close()

    n.start()
    assert count(st, pid) == "4"                      # state rebuilt from the log, not the rolled-back snapshot
    assert rejected(st) == len(cws) + 1
    assert st.evaluator.metrics().metrics["restore_failures"] == 1
    log = n.log_path.read_text()
    for cw in cws:
        assert f"compiled-module cache {cw} rejected (not in the authenticated format)" in log
        assert cw.read_bytes().startswith(V2_MAGIC)   # recompiled and rewritten authenticated
    assert f"cache entry checkpoint {pid}@{new_seq} rejected (HMAC mismatch)" in log
    n.stop()

    # same file format, valid magic, altered code: only the HMAC can tell
    for cw in cws:
        raw = bytearray(cw.read_bytes())
        off, size = elf_text(raw[len(V2_MAGIC) + 32:])
        start = len(V2_MAGIC) + 32 + off
        raw[start:start + 64] = b"\xcc" * 64
        cw.write_bytes(bytes(raw))
    n.start()
    assert count(st, pid) == "5"
    assert rejected(st) == len(cws)                    # a new evaluator process: its own counter
    for cw in cws:
        assert f"compiled-module cache {cw} rejected (HMAC mismatch)" in n.log_path.read_text()


def test_data_dir_files_are_private_under_umask_000(node):
    n, _, _ = node
    data = n.cfg.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for p in [data / "module-cache", data / "patch-cache", *data.rglob("*")]:
        if not p.exists() or p.is_socket():
            continue
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o077 == 0, f"{p} has mode {mode:04o}"


def test_bridge_snapshots_are_authenticated(tmp_path):
    """The bridge's engine snapshots in bridge.sqlite, with the key the node registered for its data dir."""
    from cu.node.bridge.remote import Progress
    from cu.node.bridge.store import BridgeStore
    from cu.node.eval.cacheauth import CacheAuth

    metrics: dict[str, float] = {}
    CacheAuth.for_node("none", tmp_path, metrics)
    store = BridgeStore(tmp_path / "bridge.sqlite")
    prog = Progress(nonce=7)
    store.put_snapshot("P", prog, b"snapshot bytes")
    assert store.snapshot("P") == (prog, b"snapshot bytes")
    raw = store._q("SELECT blob FROM snapshots WHERE pid='P'")[0][0]
    assert raw.startswith(b"AOCU-BRIDGE-SNAP-MAC1\n") and raw.endswith(b"snapshot bytes")
    # the position rolled back under the same snapshot, and an unauthenticated blob: both read as no snapshot
    store._q("UPDATE snapshots SET state=? WHERE pid='P'", (Progress(nonce=3).to_json(),))
    assert store.snapshot("P") is None
    store._q("UPDATE snapshots SET state=?, blob=? WHERE pid='P'", (prog.to_json(), b"snapshot bytes"))
    assert store.snapshot("P") is None
    assert metrics["cache_rejected"] == 2
    assert stat.S_IMODE((tmp_path / "bridge.sqlite").stat().st_mode) == 0o600


def test_patch_cache_file_is_authenticated(tmp_path):
    from cu.node.eval.cacheauth import CacheAuth
    from cu.node.eval.patches import PatchCache

    metrics: dict[str, float] = {}
    auth = CacheAuth.for_node("none", tmp_path, metrics)
    pc = PatchCache(tmp_path, auth=auth)
    pc.apply("P", {"Patches": [{"balance": 5}]})
    pc.save("P", 3)
    f = tmp_path / "patch-cache" / "P.json"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and stat.S_IMODE(f.parent.stat().st_mode) == 0o700
    fresh = PatchCache(tmp_path, auth=auth)
    fresh.load("P", 3)
    assert fresh.get("P") == {"balance": 5}
    doc = json.loads(f.read_text())
    doc["body"] = doc["body"].replace("5", "500")       # the host edits the state, the tag stays
    f.write_text(json.dumps(doc))
    fresh.load("P", 3)
    assert fresh.get("P") is None and metrics["cache_rejected"] == 1   # unknown, never the altered state


def test_no_sealing_key_means_a_per_process_cache_key(tmp_path, caplog):
    from cu.node.eval import cacheauth

    a = cacheauth.CacheAuth.for_node("tdx", tmp_path / "t")
    assert a.ephemeral and "no sealing key on TDX" in caplog.text
    assert cacheauth.CacheAuth.for_node("tdx", tmp_path / "t").tag("k", b"x") == a.tag("k", b"x")  # same process
    cacheauth._EPHEMERAL.clear()                                                   # as in a restarted evaluator
    assert not cacheauth.CacheAuth.for_node("tdx", tmp_path / "t").verify(a.tag("k", b"x"), "k", b"x")
    n1 = cacheauth.CacheAuth.for_node("none", tmp_path / "n")
    assert not n1.ephemeral and cacheauth.CacheAuth.for_node("none", tmp_path / "n").verify(n1.tag("k", 1), "k", 1)
