"""ANS-104 data items, tags, bundles and wallets, checked against the real arbundles peer."""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cu.codec import CodecError, DataItem
from cu.codec.bundle import build_bundle, bundle_item, is_bundle, parse_bundle, walk
from cu.codec.secp256k1 import HALF_N, N, eth_address
from cu.codec.tags import STRICT, decode_tags, encode_tags
from cu.codec.wallet import ArweaveWallet, Ed25519Key, Secp256k1Key, load_key, owner_address
from cu.hashing import b64url, b64url_decode, keccak256, sha256

PEERS = Path(__file__).resolve().parent / "peers"
NODE = shutil.which("node")
needs_peer = pytest.mark.skipif(
    NODE is None or not (PEERS / "node_modules" / "arbundles").is_dir(),
    reason="node + arbundles peer not installed (scripts/install.sh --test)",
)


def peer(req: dict, timeout: float = 120) -> dict:
    proc = subprocess.run(
        [NODE, str(PEERS / "arbundles_peer.js")], input=json.dumps(req).encode(), capture_output=True,
        timeout=timeout, cwd=PEERS, env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    if proc.returncode != 0:
        raise AssertionError(f"arbundles peer failed: {proc.stderr.decode()[-2000:]}")
    return json.loads(proc.stdout)


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def ub64(s: str) -> bytes:
    return base64.b64decode(s)


@pytest.fixture(scope="session")
def rsa_wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()  # RSA-4096 keygen: once per session


@pytest.fixture(scope="session")
def peer_keys(rsa_wallet) -> dict:
    keys = peer({"op": "keygen"})
    keys["jwk"] = rsa_wallet.to_jwk()
    return keys


SPECS = [
    {"data": b"hello ao", "tags": [["Type", "Message"], ["Action", "Eval"], ["Data-Protocol", "ao"]],
     "target": b64url(bytes(range(32))), "anchor": "00000000000000000000000000000042"},
    {"data": b"", "tags": []},
    {"data": bytes(range(256)) * 20, "tags": [["Content-Type", "application/octet-stream"], ["ünï", "cødé ✓"]]},
]


def _spec_json(spec: dict) -> dict:
    return {**spec, "data": b64(spec["data"])}


# ------------------------------------------------------------------------------------------------
# arbundles -> aocu


@needs_peer
@pytest.mark.parametrize("sig_type", [1, 2, 3, 4])
def test_arbundles_items_parse_and_verify_in_aocu(sig_type, peer_keys):
    key = {1: peer_keys["jwk"], 2: peer_keys["solana"], 3: peer_keys["eth"], 4: peer_keys["solana"]}[sig_type]
    out = peer({"op": "create", "type": sig_type, "key": key, "items": [_spec_json(s) for s in SPECS]})
    for spec, got in zip(SPECS, out["items"], strict=True):
        assert got["valid"] is True
        item = DataItem.parse(ub64(got["raw"]))
        assert item.verify() is True
        assert item.signature_type == sig_type == got["signatureType"]
        assert item.id == got["id"]
        assert b64url(item.owner) == got["owner"]
        assert (b64url(item.target) if item.target else "") == got["target"]
        assert (item.anchor or b"") == ub64(got["anchor"])
        assert [[b64(n), b64(v)] for n, v in item.tags] == got["tags"]
        assert item.data == ub64(got["data"]) == spec["data"]
        assert item.to_bytes() == ub64(got["raw"])  # byte-exact re-serialization
        if sig_type == 3:
            assert item.owner_address == got["ethAddress"]  # EIP-55, as ethers computes it
        if spec.get("anchor"):
            assert item.anchor == spec["anchor"].encode()
        # tampering with the data breaks the signature
        raw = bytearray(ub64(got["raw"]))
        raw[-1 if spec["data"] else 2 + len(item.signature) + 5] ^= 1
        assert DataItem.parse(bytes(raw)).verify() is False


# ------------------------------------------------------------------------------------------------
# aocu -> arbundles


@needs_peer
def test_aocu_items_verify_in_arbundles(rsa_wallet):
    signers = [rsa_wallet, Ed25519Key.generate(), Secp256k1Key.generate(), Ed25519Key.generate(4)]
    made = []
    for signer in signers:
        for spec in SPECS:
            tags = [(n, v) for n, v in spec["tags"]]
            made.append(DataItem.create(signer, data=spec["data"], tags=tags, target=spec.get("target"),
                                        anchor=spec.get("anchor")))
    out = peer({"op": "verify", "items": [b64(i.to_bytes()) for i in made]})
    for item, got in zip(made, out["items"], strict=True):
        assert got["valid"] is True, (item, got)
        assert got["id"] == item.id
        assert got["owner"] == b64url(item.owner)
        assert ub64(got["data"]) == item.data
        assert got["tags"] == [[b64(n), b64(v)] for n, v in item.tags]
        assert item.verify()
    # a corrupted aocu item is refused by arbundles too
    bad = bytearray(made[1].to_bytes())
    bad[-1] ^= 0xFF
    assert peer({"op": "verify", "items": [b64(bytes(bad))]})["items"][0]["valid"] is False


@needs_peer
def test_bundles_round_trip_both_ways(rsa_wallet, peer_keys):
    ed = Ed25519Key.generate()
    eth = Secp256k1Key.generate()
    ours = [DataItem.create(ed, data=b"one", tags=[("A", "1")]), DataItem.create(eth, data=b"two"),
            DataItem.create(rsa_wallet, data=b"three" * 100, tags=[("B", "2")])]
    nested = bundle_item(ed, ours[:2], tags=[("Nested", "yes")])
    body = build_bundle(ours + [nested])
    # aocu -> arbundles
    out = peer({"op": "unbundle", "bundle": b64(body)})
    assert out["valid"] is True
    assert out["ids"] == [i.id for i in ours + [nested]]
    inner = ub64(out["items"][3])
    assert is_bundle(DataItem.parse(inner))
    inner_out = peer({"op": "unbundle", "bundle": b64(DataItem.parse(inner).data)})
    assert inner_out["valid"] is True and inner_out["ids"] == [i.id for i in ours[:2]]
    # arbundles -> aocu
    theirs = peer({"op": "create", "type": 2, "key": peer_keys["solana"], "items": [_spec_json(s) for s in SPECS]})
    raws = [ub64(i["raw"]) for i in theirs["items"]]
    their_body = ub64(peer({"op": "bundle", "items": [b64(r) for r in raws]})["bundle"])
    items = parse_bundle(their_body)
    assert [i.id for i in items] == [i["id"] for i in theirs["items"]]
    assert all(i.verify() for i in items)
    assert build_bundle(items) == their_body  # same bytes when rebuilt
    # nested walk
    depths = [(d, i.id) for d, i in walk(parse_bundle(body))]
    assert depths == [(0, ours[0].id), (0, ours[1].id), (0, ours[2].id), (0, nested.id),
                      (1, ours[0].id), (1, ours[1].id)]


# ------------------------------------------------------------------------------------------------
# layout, tags, ids, addresses


def test_tag_encoding_known_answer():
    assert encode_tags([(b"Type", b"Process")]) == b"\x02\x08Type\x0eProcess\x00"
    assert encode_tags([]) == b""
    assert decode_tags(b"\x02\x08Type\x0eProcess\x00", 1) == [(b"Type", b"Process")]
    # negative block count with a byte size (Avro allows it; decoders must accept)
    assert decode_tags(b"\x01\x1a\x08Type\x0eProcess\x00") == [(b"Type", b"Process")]
    with pytest.raises(CodecError):
        encode_tags([(b"", b"x")], STRICT)
    with pytest.raises(CodecError):
        encode_tags([(b"n", b"v")] * 129, STRICT)
    with pytest.raises(CodecError):
        encode_tags([(b"n", b"v" * 5000)])


def test_item_layout_and_identity():
    key = Ed25519Key.from_seed(bytes(range(32)))
    item = DataItem.create(key, data=b"d", tags=[("Type", "Process")], target=bytes(32), anchor=b"a" * 32)
    raw = item.to_bytes()
    assert raw[:2] == b"\x02\x00"
    assert raw[2 + 64 : 2 + 64 + 32] == key.owner
    assert raw[98] == 1 and raw[99:131] == bytes(32) and raw[131] == 1 and raw[132:164] == b"a" * 32
    assert struct.unpack_from("<QQ", raw, 164) == (1, 15)
    assert item.id == b64url(sha256(item.signature))
    assert item.owner_address == b64url(sha256(key.owner))
    assert item.tag("Type") == "Process" and item.tag("Nope") is None
    # ed25519 is deterministic: same inputs give the same id
    assert DataItem.create(key, data=b"d", tags=[("Type", "Process")], target=bytes(32), anchor=b"a" * 32).id == item.id


def test_ethereum_owner_address_is_eip55_and_signatures_are_canonical():
    key = Secp256k1Key.from_private_bytes(bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))
    # Known address for this private key (web3.js docs example).
    assert key.address == "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    item = DataItem.create(key, data=b"x")
    assert item.owner_address == key.address == eth_address(item.owner) == owner_address(3, item.owner)
    r, s, v = item.signature[:32], int.from_bytes(item.signature[32:64], "big"), item.signature[64]
    assert s <= HALF_N and v in (27, 28)
    assert item.verify()
    # the high-S twin of a valid signature (a malleated copy with another id) is refused
    high = r + (N - s).to_bytes(32, "big") + bytes([55 - v])
    twin = DataItem(3, high, item.owner, None, None, [], b"x")
    assert twin.verify() is False
    # a wrong recovery byte is refused
    wrong_v = DataItem(3, item.signature[:64] + bytes([55 - v]), item.owner, None, None, [], b"x")
    assert wrong_v.verify() is False
    # the message really is EIP-191 personal_sign over the 48-byte deep hash
    assert keccak256(b"\x19Ethereum Signed Message:\n48" + item.signature_data()) is not None


def test_rsa_wallet_jwk_round_trip(rsa_wallet, tmp_path):
    jwk = rsa_wallet.to_jwk()
    assert len(b64url_decode(jwk["n"])) == 512 and jwk["e"] == "AQAB"
    again = ArweaveWallet.from_jwk(jwk)
    assert again.address == rsa_wallet.address == b64url(sha256(b64url_decode(jwk["n"])))
    path = tmp_path / "w.json"
    path.write_text(json.dumps(jwk))
    assert load_key(path).address == rsa_wallet.address
    item = DataItem.create(rsa_wallet, data=b"z")
    assert item.owner == b64url_decode(jwk["n"]) and item.verify()
    # Node signs PSS with the maximum salt (478): verification must recover any salt length
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = rsa_wallet.private_key.sign(
        item.signature_data(), padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256()
    )
    assert DataItem(1, sig, item.owner, None, None, [], b"z").verify()
    with pytest.raises(CodecError):
        ArweaveWallet.from_jwk({"kty": "RSA", "n": jwk["n"], "e": "AQAB"})


def test_unsigned_items_do_not_verify():
    for t in (1, 2, 3, 4):
        item = DataItem.create(None, data=b"x", signature_type=t)
        assert not item.is_signed and item.verify() is False


def test_unimplemented_types_say_so():
    item = DataItem(5, bytes(64), bytes(32), None, None, [], b"")
    with pytest.raises(CodecError, match="not implemented"):
        item.verify()


# ------------------------------------------------------------------------------------------------
# bad input


def _good_raw() -> bytes:
    return DataItem.create(Ed25519Key.from_seed(b"\x07" * 32), data=b"payload", tags=[("A", "B"), ("C", "D")]).to_bytes()


TAGS_AT = 2 + 64 + 32 + 1 + 1  # ed25519 item without target/anchor


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r[:50], "shorter"),
        (lambda r: r[:TAGS_AT + 10], "truncated"),
        (lambda r: b"\x09\x00" + r[2:], "unknown signature type"),
        (lambda r: r[:98] + b"\x02" + r[99:], "presence byte"),
        (lambda r: r[:TAGS_AT] + struct.pack("<Q", 2) + struct.pack("<Q", 1 << 40) + r[TAGS_AT + 16:], "exceeds"),
        (lambda r: r[:TAGS_AT] + struct.pack("<Q", 1 << 62) + r[TAGS_AT + 8:], "cannot fit"),
        (lambda r: r[:TAGS_AT] + struct.pack("<Q", 3) + r[TAGS_AT + 8:], "header says"),
        (lambda r: r[:TAGS_AT + 16] + b"\x80" * 11 + r[TAGS_AT + 27:], "Avro long"),
        (lambda r: r[:TAGS_AT + 16] + b"\xfe\xff\xff\xff\x0f" + r[TAGS_AT + 21:], "tags"),
    ],
)
def test_malformed_items_raise_codec_error(mutate, match):
    with pytest.raises(CodecError, match=match):
        DataItem.parse(mutate(_good_raw()))


def test_tag_size_bomb_and_wrong_lengths():
    # a tag block that claims a 2^40-byte name
    bomb = b"\x02" + b"\x80\x80\x80\x80\x80\x80\x01" + b"x"
    with pytest.raises(CodecError):
        decode_tags(bomb, 1)
    # count bomb in the Avro block itself
    with pytest.raises(CodecError, match="claims"):
        decode_tags(b"\xfe\xff\xff\xff\x0f\x00\x00", None)
    with pytest.raises(CodecError):
        decode_tags(b"\x00extra")
    with pytest.raises(CodecError, match="4096"):
        DataItem.create(None, tags=[("n", "v" * 3000), ("m", "w" * 3000)], signature_type=2)
    with pytest.raises(CodecError, match="64-byte signature"):
        DataItem(2, bytes(63), bytes(32), None, None, [], b"")
    with pytest.raises(CodecError, match="32 bytes"):
        DataItem.create(Ed25519Key.generate(), anchor="short")


def test_malformed_bundles():
    items = [DataItem.create(Ed25519Key.from_seed(b"\x01" * 32), data=b"x")]
    body = build_bundle(items)
    with pytest.raises(CodecError, match="room"):
        parse_bundle((10**6).to_bytes(32, "little") + body[32:])
    with pytest.raises(CodecError, match="remain"):
        parse_bundle(body[:32] + (1 << 200).to_bytes(32, "little") + body[64:])
    with pytest.raises(CodecError, match="header id"):
        parse_bundle(body[:64] + bytes(32) + body[96:])
    with pytest.raises(CodecError, match="trailing"):
        parse_bundle(body + b"\0")
    with pytest.raises(CodecError):
        parse_bundle(b"\x01")


# ------------------------------------------------------------------------------------------------
# fuzz: every parser returns or raises CodecError, never anything else

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD = _good_raw()


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_item_parse_random(raw):
    try:
        item = DataItem.parse(raw)
    except CodecError:
        return
    try:
        item.verify()
    except CodecError:
        pass


@FUZZ
@given(st.integers(0, len(GOOD) - 1), st.integers(0, 255), st.integers(0, len(GOOD)))
def test_fuzz_item_parse_mutated(pos, value, cut):
    raw = bytearray(GOOD)
    raw[pos] = value
    for candidate in (bytes(raw), bytes(raw[:cut])):
        try:
            item = DataItem.parse(candidate)
        except CodecError:
            continue
        try:
            assert isinstance(item.verify(), bool)
        except CodecError as exc:      # a signature type that parses but that this node cannot verify
            assert "is not implemented" in str(exc)
        assert DataItem.parse(item.to_bytes()).to_bytes() == item.to_bytes()


@FUZZ
@given(st.binary(max_size=512), st.one_of(st.none(), st.integers(0, 64)))
def test_fuzz_tag_decoder(raw, count):
    try:
        tags = decode_tags(raw, count)
    except CodecError:
        return
    assert decode_tags(encode_tags(tags), len(tags)) == tags


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=20))
def test_fuzz_tag_round_trip(tags):
    assert decode_tags(encode_tags(tags), len(tags)) == tags


@FUZZ
@given(st.binary(max_size=1024))
def test_fuzz_bundle_parse(raw):
    try:
        parse_bundle(raw)
    except CodecError:
        pass
