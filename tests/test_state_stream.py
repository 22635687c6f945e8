"""`/state` of a process larger than one evaluator frame (issue 17 item 4): the evaluator spools the memory once
(cu/node/eval/exports.py) and the worker streams it to the client chunk by chunk over the real Unix-socket RPC
(an evaluator process next to the app), with Content-Length and a signed Content-Digest known up front. The
bytes are checked against the evaluator's own page-Merkle commitment of the instance memory (a checkpoint at
the same position)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cu._native import merkle

from attestation.policy import Policy
from attestation.trust import TrustStore
from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.http import create_app
from cu.node.config import NodeConfig
from cu.node.eval.exports import DIR
from cu.node.items import Identity
from cu.verify.response import verify_response
from cu.verify.transport import RawResponse
from tests.lua_process import spawn_lua32

REPO = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20          # 1 MiB: the 16 MiB initial memory of the test module crosses many chunks


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """(app, evaluator client, scheduler, pid, data dir): a real evaluator process on its Unix socket."""
    base = tmp_path_factory.mktemp("state")
    wallet_path = base / "wallet.json"
    wallet_path.write_text(json.dumps(ArweaveWallet.generate().to_jwk()))
    wallet_path.chmod(0o600)
    cfg = NodeConfig.from_mapping({"data_dir": base / "node", "tee": "sim", "wallet": wallet_path,
                                   "evaluator": "socket", "state_chunk": CHUNK, "busy_s": 120.0,
                                   # full checkpoints that carry the page-Merkle root the streamed bytes are
                                   # checked against (the default lifecycle's checkpoints are HMAC'd deltas
                                   # without a root: tests/test_lifecycle.py); streaming itself is the same
                                   "lifecycle": "classic"})
    Identity.load(cfg.data_dir, cfg.wallet)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(base / "evaluator.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "cu.node.service", json.dumps(cfg.to_mapping())],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while not Path(cfg.socket_path).exists():
        assert proc.poll() is None and time.monotonic() < deadline, (base / "evaluator.log").read_text()
        time.sleep(0.05)
    app = create_app(cfg)
    st = app.extensions["aocu"]
    owner = ArweaveWallet.generate()
    pid = spawn_lua32(st.scheduler.ingest, owner)
    yield app, st.evaluator, st.scheduler, pid, cfg.data_dir
    proc.terminate()
    proc.wait(timeout=60)
    log.close()


def _send(client, sched, pid: str, action: str, data: str = "") -> dict:
    m = DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action)])
    acc = sched.ingest(m.to_bytes())
    return json.loads(client.result(pid, acc.id))


def _check_state(app, client, pid: str, data_dir: Path) -> bytes:
    """GET /state and check it: length, digest, signature, and the evaluator's memory commitment."""
    client.checkpoint(pid)          # the evaluator's page-Merkle root of the memory at this position
    r = app.test_client().get(f"/state/{pid}", buffered=False)
    assert r.status_code == 200, r.get_data()[:200]
    chunks = list(r.response)
    r.close()
    body = b"".join(chunks)
    assert len(chunks) == -(-len(body) // CHUNK) > 1 and max(map(len, chunks)) == CHUNK      # streamed in chunks
    assert int(r.headers["Content-Length"]) == len(body) and len(body) % 65536 == 0
    assert r.headers["Content-Digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"
    cp = app.extensions["aocu"].store.latest_checkpoint(pid)
    assert merkle.PageMerkle.full_root(body) == cp.memory_root
    assert r.headers["Last-Ordinate"] == str(cp.nonce)
    assert not list((data_dir / DIR).iterdir())       # the spooled copy is gone once read
    return body


def test_state_streams_in_chunks_and_is_the_evaluators_memory(node, tmp_path):
    app, client, sched, pid, data_dir = node
    assert _send(client, sched, pid, "Count")["Output"] == "1"
    body = _check_state(app, client, pid, data_dir)
    assert len(body) > 8 * CHUNK
    # the streamed result verifies like any signed result (digest signed up front)
    c = app.test_client()
    doc = c.get("/~attestation@1.0/evidence").get_json()
    policy = Policy.strict()
    policy.allow_simulated = True
    trust = TrustStore.default().with_simulated(data_dir / "sim-tee" / "roots.pem")
    r = c.get(f"/state/{pid}")
    rep = verify_response(RawResponse(r.status_code, list(r.headers.items()), r.get_data()), doc, policy=policy,
                          trust=trust)
    assert rep.ok, rep.format_text()


def test_abandoned_and_refused_downloads_free_the_spooled_copy(node):
    app, _client, _sched, pid, data_dir = node
    c = app.test_client()
    r = c.get(f"/state/{pid}", buffered=False)
    first = next(iter(r.response))
    assert len(first) == CHUNK and len(list((data_dir / DIR).iterdir())) == 1
    r.close()                                        # the client went away after one chunk
    assert not list((data_dir / DIR).iterdir())
    # an ANS-104 reply signs its data whole: a streamed state is refused with 413, and nothing stays spooled
    r = c.get(f"/state/{pid}", headers={"accept-codec": "ans104@1.0"})
    assert r.status_code == 413        # the error itself answers as a signed ANS-104 item, as asked
    assert "too large for the ans104@1.0" in json.loads(DataItem.parse(r.get_data()).data)["error"]
    assert not list((data_dir / DIR).iterdir())
    # an export token that does not exist (expired, or another evaluator's) is a clean NotFound
    from cu.node.errors import NotFound
    with pytest.raises(NotFound, match="expired or unknown"):
        app.extensions["aocu"].evaluator.state_chunk("0" * 32, 0, CHUNK)


@pytest.mark.slow
def test_a_state_over_the_256_mib_frame_limit(node):
    app, client, sched, pid, data_dir = node
    out = _send(client, sched, pid, "Grow", "260")
    assert out["Output"]["held_mib"] >= 260, out
    body = _check_state(app, client, pid, data_dir)
    assert len(body) > 256 * 1024 * 1024


def test_an_unfinished_export_expires_and_open_exports_are_bounded(tmp_path):
    from cu.node.errors import NotFound, Unavailable
    from cu.node.eval.exports import StateExports
    ex = StateExports(tmp_path, inline_max=4096, chunk=4096, ttl_s=0.3, max_open=2)
    small = ex.offer(b"s" * 4096, {})
    assert small.export is None and small.body == b"s" * 4096
    data = bytes(range(256)) * 64
    a, b = ex.offer(data, {}), ex.offer(data, {})
    assert a.digest == hashlib.sha256(data).digest() and a.length == len(data) and a.body == b""
    with pytest.raises(Unavailable, match="2 large state downloads"):
        ex.offer(data, {})
    assert ex.read(a.export, 4096, 10_000) == data[4096:8192]        # at most one chunk per read
    deadline = time.monotonic() + 10
    while len(ex) and time.monotonic() < deadline:                   # nobody reads on: both expire
        time.sleep(0.05)
    assert len(ex) == 0 and not list((tmp_path / DIR).iterdir())
    with pytest.raises(NotFound, match="expired or unknown"):
        ex.read(b.export, 0, 4096)


def test_a_frame_over_the_limit_is_refused_before_it_is_sent(monkeypatch):
    import socket

    from cu.node import wire
    monkeypatch.setattr(wire, "MAX_FRAME", 1000)
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(ValueError, match="exceeds 1000"):
            wire.send_frame(a, b"x" * 2000)
        wire.send_frame(a, [True, b"y" * 500])          # nothing of the refused frame went out
        assert wire.recv_frame(b) == [True, b"y" * 500]
