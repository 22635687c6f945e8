"""Node identity, evidence service and result signer (issue 6, library layer), with the simulated TEE.

RSA-4096 key generation is slow: two wallets are generated once (cached under tests/.cache) and copied.
The fixtures here are shared with tests/test_verify_response.py.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from attestation.binding import fresh_report_data, key_binding_report_data
from attestation.providers import get_provider
from cu.codec import rfc9421
from cu.codec.ans104 import DataItem
from cu.codec.digest import verify_content_digest
from cu.codec.wallet import ArweaveWallet, Ed25519Key, rsa_public_key
from cu.hashing import b64url
from cu.node.config import NodeConfig
from cu.node.evidence_service import EvidenceService, NoEvidence, parse_nonce
from cu.node.identity import (
    ED25519_FILE,
    WALLET_FILE,
    IdentityError,
    NodeIdentity,
    config_from_node_config,
    security_config,
)
from cu.node.signer import ResultId, ResultSigner
from cu.verify.endorsements import EndorsedNode, report_data_of
from cu.wire.response import ANS104_LIMITS, canonical_json, parse_attestation_header

BODY = json.dumps({"Output": {"data": "hello"}, "Messages": [], "Spawns": [], "Assignments": [],
                   "GasUsed": 1234}).encode()
PID = "Xn" + "a" * 41
MID = "Mm" + "b" * 41


@pytest.fixture(scope="session")
def wallet_jwks(cache_dir: Path) -> list[dict]:
    """Two RSA-4096 wallets, generated once and cached (0600)."""
    path = cache_dir / "signing-wallets.json"
    if path.exists():
        jwks = json.loads(path.read_text())
        if isinstance(jwks, list) and len(jwks) == 2:
            return jwks
    jwks = [ArweaveWallet.generate().to_jwk() for _ in range(2)]
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(jwks, f)
    os.replace(path.with_suffix(".tmp"), path)
    return jwks


def seed_data_dir(d: Path, jwk: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / WALLET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(jwk, f)
    return d


@dataclass
class SimNode:
    data_dir: Path
    identity: NodeIdentity
    service: EvidenceService
    signer: ResultSigner

    @property
    def roots(self) -> Path:
        return self.data_dir / "sim-tee" / "roots.pem"

    def document(self, nonce: bytes | None = None) -> dict:
        """As a client receives it (through JSON)."""
        return json.loads(json.dumps(self.service.endorsements_document(nonce)))


def make_node(d: Path, jwk: dict, tee: str = "sim") -> SimNode:
    seed_data_dir(d, jwk)
    ident = NodeIdentity.load(d, node_config=security_config(tee if not tee.startswith("sim") else "sim",
                                                              {"memory_max": 1 << 30}))
    service = EvidenceService(get_provider(tee, d), ident)
    return SimNode(d, ident, service, ResultSigner(service))


@pytest.fixture(scope="session")
def node_a(tmp_path_factory: pytest.TempPathFactory, wallet_jwks: list[dict]) -> SimNode:
    return make_node(tmp_path_factory.mktemp("node-a"), wallet_jwks[0])


@pytest.fixture(scope="session")
def node_b(tmp_path_factory: pytest.TempPathFactory, wallet_jwks: list[dict]) -> SimNode:
    return make_node(tmp_path_factory.mktemp("node-b"), wallet_jwks[1])


@pytest.fixture(scope="session")
def node_none(tmp_path_factory: pytest.TempPathFactory, wallet_jwks: list[dict]) -> SimNode:
    return make_node(tmp_path_factory.mktemp("node-none"), wallet_jwks[0], "none")


@pytest.fixture(scope="session")
def node_tdx(tmp_path_factory: pytest.TempPathFactory, wallet_jwks: list[dict]) -> SimNode:
    return make_node(tmp_path_factory.mktemp("node-tdx"), wallet_jwks[1], "sim-tdx")


# -- identity -----------------------------------------------------------------------------------------
def test_identity_generated_private_and_reloaded(tmp_path: Path, wallet_jwks: list[dict],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cached = ArweaveWallet.from_jwk(wallet_jwks[0])
    monkeypatch.setattr(ArweaveWallet, "generate", classmethod(lambda cls, bits=4096: cached))
    a = NodeIdentity.load(tmp_path / "d")
    for name in (WALLET_FILE, ED25519_FILE):
        assert (tmp_path / "d" / name).stat().st_mode & 0o777 == 0o600
    assert a.address == b64url(hashlib.sha256(a.n).digest()) == cached.address
    assert len(a.n) == 512 and len(a.ed25519_pub) == 32 and a.epoch == 0
    b = NodeIdentity.load(tmp_path / "d")
    assert (b.address, b.ed25519_pub) == (a.address, a.ed25519_pub)
    # the node's existing Identity (cu.node.items) reads the same files, so both sign with the same keys
    from cu.node.items import Identity
    assert Identity.load(tmp_path / "d").ed25519.owner == a.ed25519_pub


@pytest.mark.parametrize("name", [WALLET_FILE, ED25519_FILE])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_identity_refuses_key_files_readable_by_others(tmp_path: Path, wallet_jwks: list[dict], name: str,
                                                      mode: int) -> None:
    d = seed_data_dir(tmp_path / "d", wallet_jwks[0])
    (d / ED25519_FILE).write_text(json.dumps(Ed25519Key.generate().to_jwk()))
    os.chmod(d / ED25519_FILE, 0o600)
    os.chmod(d / name, mode)
    with pytest.raises(IdentityError, match=rf"{name}.*{mode:04o}.*chmod 600"):
        NodeIdentity.load(d)


def test_identity_wallet_override(tmp_path: Path, wallet_jwks: list[dict]) -> None:
    w = seed_data_dir(tmp_path / "keys", wallet_jwks[1]) / WALLET_FILE
    ident = NodeIdentity.load(tmp_path / "d", wallet_path=w)
    assert ident.address == ArweaveWallet.from_jwk(wallet_jwks[1]).address
    assert not (tmp_path / "d" / WALLET_FILE).exists()  # an override never creates the default wallet
    with pytest.raises(IdentityError, match="not found"):
        NodeIdentity.load(tmp_path / "d", wallet_path=tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    os.chmod(tmp_path / "bad.json", 0o600)
    with pytest.raises(IdentityError, match="not a JSON JWK"):
        NodeIdentity.load(tmp_path / "d", wallet_path=tmp_path / "bad.json")
    (tmp_path / "pub.json").write_text(json.dumps(ArweaveWallet.from_jwk(wallet_jwks[1]).public_jwk()))
    os.chmod(tmp_path / "pub.json", 0o600)
    with pytest.raises(IdentityError, match="public JWK cannot sign"):
        NodeIdentity.load(tmp_path / "d", wallet_path=tmp_path / "pub.json")


def test_identity_rotation_persists_epoch_and_key(tmp_path: Path, wallet_jwks: list[dict]) -> None:
    d = seed_data_dir(tmp_path / "d", wallet_jwks[0])
    a = NodeIdentity.load(d)
    old = a.ed25519_pub
    assert a.rotate() == 1 and a.rotate() == 2
    assert a.ed25519_pub != old
    b = NodeIdentity.load(d)
    assert b.epoch == 2 and b.ed25519_pub == a.ed25519_pub
    assert (d / "identity.json").stat().st_mode & 0o777 == 0o600
    (d / "identity.json").write_text('{"epoch": -1}')
    with pytest.raises(IdentityError, match="epoch"):
        NodeIdentity.load(d)


def test_node_config_sha256_is_canonical(tmp_path: Path, wallet_jwks: list[dict]) -> None:
    d = seed_data_dir(tmp_path / "d", wallet_jwks[0])
    cfg1 = security_config("sim", {"b": 1, "a": [1, 2]})
    cfg2 = dict(reversed(list(cfg1.items())))
    i1 = NodeIdentity.load(d, node_config=cfg1)
    i2 = NodeIdentity.load(d, node_config=cfg2)
    assert i1.node_config_sha256 == i2.node_config_sha256 == hashlib.sha256(canonical_json(cfg1)).digest()
    assert canonical_json(cfg1) == json.dumps(cfg1, sort_keys=True, separators=(",", ":")).encode()
    i3 = NodeIdentity.load(d, node_config=security_config("none", {"b": 1, "a": [1, 2]}))
    assert i3.node_config_sha256 != i1.node_config_sha256  # the tee mode is security-relevant
    nc = config_from_node_config(NodeConfig(tee="sim", memory_max=1 << 20))
    assert nc["tee"] == "sim" and nc["memory_max"] == 1 << 20 and nc["software"] == "aocu" and "version" in nc
    with pytest.raises(ValueError, match="fixed"):
        security_config("sim", {"tee": "snp"})


# -- evidence service ---------------------------------------------------------------------------------
def test_key_evidence_binds_both_keys_epoch_and_config(node_a: SimNode) -> None:
    ev = node_a.service.key_evidence()
    assert ev is not None and ev.tee == "sim-snp" and node_a.service.tee == "sim-snp"
    i = node_a.identity
    want = key_binding_report_data(i.n, i.ed25519_pub, i.epoch, i.node_config_sha256)
    assert report_data_of("snp", ev.raw) == want
    assert node_a.service.key_evidence() is ev  # cached, not re-produced per result


def test_fresh_evidence_binds_digest_and_nonce(node_a: SimNode) -> None:
    digest = hashlib.sha256(BODY).digest()
    ev = node_a.service.fresh(digest, b"\x07" * 16)
    assert report_data_of("snp", ev.raw) == fresh_report_data(digest, b"\x07" * 16)
    with pytest.raises(ValueError, match="nonce"):
        node_a.service.fresh(digest, b"")
    with pytest.raises(ValueError, match="nonce"):
        node_a.service.fresh(digest, b"x" * 65)
    with pytest.raises(ValueError, match="32-byte"):
        node_a.service.fresh(b"short", b"n")


def test_rotation_produces_new_evidence(tmp_path: Path, wallet_jwks: list[dict]) -> None:
    n = make_node(tmp_path / "r", wallet_jwks[0])
    before = n.service.key_evidence()
    assert n.service.rotate() == 1
    after = n.service.key_evidence()
    assert after is not None and before is not None and after.raw != before.raw
    i = n.identity
    assert report_data_of("snp", after.raw) == key_binding_report_data(i.n, i.ed25519_pub, 1, i.node_config_sha256)
    assert n.document()["node"]["epoch"] == 1


def test_endorsements_document(node_a: SimNode) -> None:
    doc = node_a.document()
    node = EndorsedNode.from_document(doc)  # consistent: address, config digest, evidence label
    assert doc["tee"] == "sim-snp" and doc["evidence"]["format"] == "aocu-evidence/1"
    assert set(doc["evidence"]["endorsements"]) >= {"vcek", "chain"}
    assert node.n == node_a.identity.n and node.ed25519_pub == node_a.identity.ed25519_pub
    assert doc["binding"]["report_data"] == node.key_report_data().hex()
    nonce = bytes(range(32))
    doc = node_a.document(nonce)
    ne = doc["nonce_evidence"]
    from attestation.evidence import Evidence
    raw = Evidence.from_json(ne["evidence"]).raw
    assert report_data_of("snp", raw) == fresh_report_data(hashlib.sha256(node.key_report_data()).digest(), nonce)


def test_tee_none_has_no_evidence_and_says_so(node_none: SimNode) -> None:
    s = node_none.service
    assert s.tee == "none" and not s.has_tee and s.key_evidence() is None
    with pytest.raises(NoEvidence, match="no TEE|produces no attestation"):
        s.fresh(hashlib.sha256(b"").digest(), b"n")
    doc = node_none.document(b"\x01")
    assert doc["evidence"] is None and doc["tee"] == "none"
    assert "no attestation evidence" in doc["no_evidence"]
    assert "nonce_evidence" not in doc


def test_parse_nonce() -> None:
    assert parse_nonce("00ff") == b"\x00\xff"
    for bad in ("", "0", "zz", "ab" * 65):
        with pytest.raises(ValueError, match="nonce"):
            parse_nonce(bad)


# -- signer -------------------------------------------------------------------------------------------
def _msg(status: int, headers: list[tuple[str, str]]) -> rfc9421.HTTPMessage:
    return rfc9421.HTTPMessage(headers=headers, status=status)


@pytest.mark.parametrize("alg", ["ed25519", "rsa-pss-sha512"])
def test_signed_headers_verify_with_rfc9421(node_a: SimNode, alg: str) -> None:
    h = node_a.signer.sign(200, BODY, ResultId(process=PID, message=MID), alg=alg)
    names = [k for k, _ in h]
    assert names == ["Content-Digest", "Ao-Process", "Ao-Message", "Attestation", "Signature-Input", "Signature"]
    hd = dict(h)
    assert verify_content_digest(hd["Content-Digest"], BODY)
    i = node_a.identity
    key = i.ed25519._key.public_key() if alg == "ed25519" else rsa_public_key(i.n)  # noqa: SLF001
    (v,) = rfc9421.verify_message(_msg(200, h), lambda keyid, a: (alg, key), label="aocu",
                                  required=["@status", "content-digest", "ao-process", "ao-message", "attestation"])
    assert v.valid and v.keyid == (i.keyid_ed25519 if alg == "ed25519" else i.address) and v.alg == alg
    assert isinstance(v.params["created"], int)
    # status is covered: the same headers do not verify for another status
    (v,) = rfc9421.verify_message(_msg(500, h), lambda keyid, a: (alg, key), label="aocu")
    assert not v.valid
    att = parse_attestation_header(hd["Attestation"])
    assert (att.tee, att.binding, att.kind, att.epoch) == ("sim-snp", "key", "snp", 0)
    assert att.evidence == node_a.service.key_evidence().raw


def test_signed_fresh_headers(node_a: SimNode) -> None:
    nonce = b"\xaa" * 32
    h = dict(node_a.signer.sign(200, BODY, ResultId(process=PID, slot=7), attest_nonce=nonce))
    assert h["Ao-Slot"] == "7"
    att = parse_attestation_header(h["Attestation"])
    assert att.binding == "fresh" and att.nonce == nonce
    assert report_data_of("snp", att.evidence) == fresh_report_data(hashlib.sha256(BODY).digest(), nonce)


def test_signer_without_tee_states_none_under_the_signature(node_none: SimNode) -> None:
    h = node_none.signer.sign(200, BODY, ResultId(process=PID))
    hd = dict(h)
    assert hd["Attestation"] == 'tee="none"'
    assert '"attestation"' in hd["Signature-Input"]
    # asked for fresh evidence, a node without a TEE still answers tee="none" (stated, never faked)
    hd = dict(node_none.signer.sign(200, BODY, ResultId(process=PID), attest_nonce=b"n"))
    assert hd["Attestation"] == 'tee="none"'
    item_bytes, _ = node_none.signer.ans104_result(200, BODY, ResultId(process=PID))
    assert DataItem.parse(item_bytes).tag("Attestation") == 'tee="none"'


def test_signer_rejects_bad_input(node_a: SimNode) -> None:
    with pytest.raises(ValueError, match="identity"):
        node_a.signer.sign(200, BODY, ResultId())
    with pytest.raises(ValueError, match="Ao-Process"):
        node_a.signer.sign(200, BODY, ResultId(process="bad id\r\nX-Injected: 1"))
    with pytest.raises(ValueError, match="not 'hmac-sha256'"):
        node_a.signer.sign(200, BODY, ResultId(process=PID), alg="hmac-sha256")
    with pytest.raises(ValueError, match="status"):
        node_a.signer.sign(99, BODY, ResultId(process=PID))


def test_ans104_result_is_wallet_signed_with_evidence_tags(node_a: SimNode) -> None:
    item_bytes, headers = node_a.signer.ans104_result(200, BODY, ResultId(process=PID, slot=3))
    hd = dict(headers)
    assert hd["Content-Type"] == "application/ans104" and hd["Codec-Device"] == "ans104@1.0"
    assert verify_content_digest(hd["Content-Digest"], item_bytes)
    item = DataItem.parse(item_bytes)  # SNP evidence fits the default (arbundles-compatible) tag limits
    assert item.verify() and item.signature_type == 1 and item.owner == node_a.identity.n
    assert item.data == BODY
    assert (item.tag("Ao-Process"), item.tag("Ao-Slot"), item.tag("Ao-Status")) == (PID, "3", "200")
    att = parse_attestation_header(item.tag("Attestation"))
    assert att.evidence == node_a.service.key_evidence().raw


def test_tdx_evidence_in_headers_and_items(node_tdx: SimNode) -> None:
    h = dict(node_tdx.signer.sign(200, BODY, ResultId(process=PID)))
    att = parse_attestation_header(h["Attestation"])
    assert att.tee == "sim-tdx" and att.kind == "tdx"
    i = node_tdx.identity
    assert report_data_of("tdx", att.evidence) == key_binding_report_data(i.n, i.ed25519_pub, i.epoch,
                                                                          i.node_config_sha256)
    item_bytes, _ = node_tdx.signer.ans104_result(200, BODY, ResultId(process=PID))
    item = DataItem.parse(item_bytes, limits=ANS104_LIMITS)  # a TDX quote needs the larger tag limits
    assert item.verify()


def test_data_dirs_are_independent(node_a: SimNode, node_b: SimNode) -> None:
    assert node_a.identity.address != node_b.identity.address
    assert node_a.identity.ed25519_pub != node_b.identity.ed25519_pub


def test_sign_result_picks_codec_and_nonce(node_a: SimNode) -> None:
    from cu.node.signer import sign_result

    r = sign_result(node_a.signer, 200, BODY, ResultId(process=PID, slot=1))
    assert r.body == BODY and dict(r.headers)["Attestation"].startswith('tee="sim-snp", binding="key"')
    r = sign_result(node_a.signer, 200, BODY, ResultId(process=PID, slot=1), attest_nonce="ab" * 8,
                    accept_codec="application/json, ans104@1.0")
    item = DataItem.parse(r.body)
    assert item.verify() and item.data == BODY and dict(r.headers)["Codec-Device"] == "ans104@1.0"
    assert parse_attestation_header(item.tag("Attestation")).nonce == b"\xab" * 8
    with pytest.raises(ValueError, match="nonce"):
        sign_result(node_a.signer, 200, BODY, ResultId(process=PID), attest_nonce="not-hex")


def test_build_signer(tmp_path: Path, wallet_jwks: list[dict]) -> None:
    from cu.node.signer import build_signer

    d = seed_data_dir(tmp_path / "d", wallet_jwks[0])
    s = build_signer(d, "sim-tdx", node_config=config_from_node_config(NodeConfig(tee="sim")))
    assert s.evidence.tee == "sim-tdx" and s.identity.node_config["tee"] == "sim"
    assert build_signer(d, "none").evidence.tee == "none"
    with pytest.raises(ValueError, match="unknown TEE kind"):
        build_signer(d, "sgx")


def test_concurrent_first_start_agrees_on_keys(tmp_path: Path, wallet_jwks: list[dict],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers starting together: one creates each key, none reads a partial file, all get the same keys."""
    import threading

    wallets = [ArweaveWallet.from_jwk(j) for j in wallet_jwks]
    picks = iter(wallets * 8)
    monkeypatch.setattr(ArweaveWallet, "generate", classmethod(lambda cls, bits=4096: next(picks)))
    out: list[object] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        try:
            i = NodeIdentity.load(tmp_path / "d")
            out.append((i.address, i.ed25519_pub))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            out.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 6 and len(set(out)) == 1, out
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.endswith(".tmp")]
