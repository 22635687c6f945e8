"""`aocu keys rotate` (issue 16): a real node (embedded evaluator, simulated SNP) signs a result, is stopped, its
key is rotated, and it is started again. The result fetched before the rotation still verifies offline against
the document fetched after it (through the past key and its evidence); new results are signed by the new key
with fresh key-binding evidence; `/~meta@1.0/info` and the endorsement document list both keys."""

from __future__ import annotations

import json
import stat

import pytest

from attestation.policy import Policy
from attestation.trust import TrustStore
from cu.cli import main as aocu
from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.http import create_app
from cu.verify.response import verify_response
from cu.verify.transport import RawResponse
from cu.wire.response import parse_attestation_header
from tests.lua_process import spawn_lua32
from tests.test_signing import wallet_jwks  # noqa: F401 - RSA-4096 wallets generated once per cache


def _app(data_dir):
    return create_app({"data_dir": data_dir, "tee": "sim", "evaluator": "embedded",
                       "wallet": data_dir.parent / "wallet.json"})


def _count(app, pid: str) -> RawResponse:
    st = app.extensions["aocu"]
    m = DataItem.create(Ed25519Key.generate(), data=b"", target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Count")])
    acc = st.scheduler.ingest(m.to_bytes())
    r = app.test_client().get(f"/result/{acc.id}?process-id={pid}")
    assert r.status_code == 200, r.get_data()[:300]
    return RawResponse(r.status_code, list(r.headers.items()), r.get_data())


def _verify(resp: RawResponse, doc: dict, data_dir):
    policy = Policy.strict()
    policy.allow_simulated = True
    trust = TrustStore.default().with_simulated(data_dir / "sim-tee" / "roots.pem")
    return verify_response(resp, doc, policy=policy, trust=trust)


def _keyid(resp: RawResponse) -> str:
    return resp.header("signature-input").split('keyid="')[1].split('"')[0]


@pytest.fixture(scope="module")
def rotated(tmp_path_factory, wallet_jwks):  # noqa: F811
    data = tmp_path_factory.mktemp("rotate") / "node"
    (data.parent / "wallet.json").write_text(json.dumps(wallet_jwks[0]))
    (data.parent / "wallet.json").chmod(0o600)
    app = _app(data)
    st = app.extensions["aocu"]
    owner = ArweaveWallet.from_jwk(wallet_jwks[1])
    pid = spawn_lua32(st.scheduler.ingest, owner)
    before = _count(app, pid)
    doc_before = app.test_client().get("/~attestation@1.0/evidence").get_json()
    st.dispatcher.stop()

    assert aocu(["keys", "rotate", "--data-dir", str(data), "--wallet", str(data.parent / "wallet.json")]) == 0
    app2 = _app(data)
    yield app2, pid, before, doc_before, data
    app2.extensions["aocu"].dispatcher.stop()


def test_old_result_verifies_after_rotation_through_its_past_key(rotated):
    app, _pid, before, doc_before, data = rotated
    doc = app.test_client().get("/~attestation@1.0/evidence").get_json()
    assert doc["node"]["epoch"] == doc_before["node"]["epoch"] + 1
    assert doc["node"]["ed25519"] != doc_before["node"]["ed25519"]
    rep = _verify(before, doc, data)
    assert rep.ok, rep.format_text()
    assert any(c.name == "endorsements.past_key" and c.ok for c in rep.checks)
    # what makes it verify is the past key the node lists: without it, the rotation is all the verifier sees
    bare = {k: v for k, v in doc.items() if k != "keys"}
    rep = _verify(before, bare, data)
    assert not rep.ok and "not the endorsed node's key" in rep.format_text()


def test_new_results_use_the_new_key_with_fresh_evidence(rotated):
    app, pid, before, doc_before, data = rotated
    after = _count(app, pid)
    assert json.loads(after.body)["Output"] == "2"          # same process state, new key
    doc = app.test_client().get("/~attestation@1.0/evidence").get_json()
    assert _keyid(after) == doc["node"]["ed25519"] != _keyid(before)
    att_old = parse_attestation_header(before.header("attestation"))
    att_new = parse_attestation_header(after.header("attestation"))
    assert att_new.epoch == att_old.epoch + 1 and att_new.evidence != att_old.evidence
    rep = _verify(after, doc, data)
    assert rep.ok, rep.format_text()
    assert not any(c.name == "endorsements.past_key" for c in rep.checks)
    # the old document does not vouch for the new key
    assert not _verify(after, doc_before, data).ok


def test_info_and_document_list_current_and_past_keys(rotated):
    app, _pid, _before, doc_before, data = rotated
    info = app.test_client().get("/~meta@1.0/info").get_json()
    keys = info["keys"]
    assert [k["status"] for k in keys] == ["current", "past"]
    cur, past = keys
    assert cur["ed25519"] == info["ed25519"] and cur["epoch"] == info["epoch"]
    assert past["ed25519"] == doc_before["node"]["ed25519"] and past["epoch"] == info["epoch"] - 1
    assert past["evidence"] == doc_before["evidence"] and isinstance(past["retired_at"], int)
    assert cur["evidence"] is not None and cur["evidence"] != past["evidence"]
    doc = app.test_client().get("/~attestation@1.0/evidence").get_json()
    assert [k["ed25519"] for k in doc["keys"]] == [k["ed25519"] for k in keys]
    assert stat.S_IMODE((data / "key-history.json").stat().st_mode) == 0o600


def test_rotate_refuses_while_a_node_holds_the_data_dir(rotated, capsys):
    *_, data = rotated
    from cu.node.service import acquire_lock
    fd = acquire_lock(data)
    try:
        assert aocu(["keys", "rotate", "--data-dir", str(data), "--wallet", str(data.parent / "wallet.json")]) == 1
    finally:
        import os
        os.close(fd)
    assert "a node is running" in capsys.readouterr().err
