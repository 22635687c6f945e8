"""httpsig@1.0 (HyperBEAM dialect), the Message model, conversions between codecs, ids and hashpaths.

Interop: messages signed by ao-core-libs (the HyperBEAM client inside @permaweb/aoconnect) verify here;
converted items are checked by arbundles."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cu.codec import CodecError, DataItem
from cu.codec.commitment import accumulate, binary_hashpath, hashpath_first, hashpath_step
from cu.codec.httpsig import commit, decode_headers, hb_base, verify_commitment
from cu.codec.message import Message
from cu.codec.structured import decode, encode, parse_ao_types
from cu.codec.wallet import ArweaveWallet, Ed25519Key, Secp256k1Key
from cu.hashing import b64url, b64url_decode, sha256

PEERS = Path(__file__).resolve().parent / "peers"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None or not (PEERS / "node_modules").is_dir(), reason="node peers not installed")


def node(script: str, req: dict) -> dict:
    proc = subprocess.run([NODE, str(PEERS / script)], input=json.dumps(req).encode(), capture_output=True,
                          timeout=120, cwd=PEERS, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    if proc.returncode != 0:
        raise AssertionError(f"{script} failed: {proc.stderr.decode()[-2000:]}")
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()


# ------------------------------------------------------------------------------------------------
# ao-core-libs -> aocu


@needs_node
def test_ao_core_libs_signed_messages_verify(wallet):
    specs = [
        {"Type": "Message", "Action": "Eval", "data": "Send({Target = ao.id, Data = 'x'})", "Count": 5,
         "List": [1, "a"], "Pi": 3.5},
        {"Type": "Process", "Module": "m" * 43, "Scheduler": "s" * 43, "Authority": "a" * 43},
    ]
    out = node("aocore_peer.js", {"jwk": wallet.to_jwk(),
                                  "requests": [{"path": "/x~process@1.0/schedule", "fields": s} for s in specs]})
    for spec, r in zip(specs, out["requests"], strict=True):
        msg = Message.from_http(r["headers"], base64.b64decode(r["body"]))
        (c,) = msg.commitments
        assert c.type == "rsa-pss-sha512" and c.committer == wallet.address
        assert msg.verify() is True
        assert msg.id == b64url(sha256(c.signature))
        view = msg.structured()
        for k, v in spec.items():
            got = view[k.lower()]
            assert got == (v.encode() if isinstance(v, str) else [x.encode() if isinstance(x, str) else x for x in v]
                           if isinstance(v, list) else v)
        # the id and signature survive a trip through ANS-104 and back
        back = Message.from_ans104(DataItem.parse(msg.to_ans104().to_bytes()))
        assert back.id == msg.id and back.verify()
        # any change to a committed field is caught
        tampered = Message.from_http([(k, v + "x" if k == "type" else v) for k, v in r["headers"]])
        assert tampered.verify() is False


# ------------------------------------------------------------------------------------------------
# aocu httpsig commitments and the codec round trips


def test_commit_rsa_then_ans104_and_back_keeps_id_and_verifies(wallet):
    msg = Message({"Type": "Message", "Action": "Eval", "target-process": "p" * 43, "body": b"Hello\x00binary"})
    msg.commit(wallet, tag="hp/xyz")
    types = [c.type for c in msg.commitments]
    assert types == ["rsa-pss-sha512", "hmac-sha256"]
    rsa_c = msg.commitments[0]
    assert rsa_c.committer == wallet.address
    assert base64.b64decode(rsa_c.keyid) == wallet.owner  # standard base64 of the modulus
    assert msg.id == rsa_c.id == b64url(sha256(rsa_c.signature))
    assert msg.verify()
    # httpsig wire form and back
    headers, body = msg.to_http()
    again = Message.from_http(headers, body)
    assert again.id == msg.id and again.verify()
    # to ANS-104 (unsigned carrier) and back, through bytes
    item = again.to_ans104()
    assert not item.is_signed
    restored = Message.from_ans104(DataItem.parse(item.to_bytes()))
    assert restored.id == msg.id
    assert restored.verify()
    assert restored.get("body") == b"Hello\x00binary"
    # and back to HTTP once more
    h2, b2 = restored.to_http()
    assert Message.from_http(h2, b2).verify()
    # stored and reloaded
    assert Message.from_bytes(restored.to_bytes()).id == msg.id


@needs_node
def test_converted_message_signed_as_ans104_verifies_in_arbundles(wallet):
    msg = Message({"type": "Message", "data": b"abc"}).commit(wallet)
    ed = Ed25519Key.generate()
    item = msg.to_ans104(ed)
    assert item.verify()
    got = node("arbundles_peer.js", {"op": "verify", "items": [base64.b64encode(item.to_bytes()).decode()]})
    assert got["items"][0]["valid"] is True
    back = Message.from_ans104(item)
    assert back.verify()
    assert {c.type for c in back.commitments} == {"rsa-pss-sha512", "hmac-sha256", "ed25519-ans104"}
    # id = sum of the signed commitment ids (order-independent)
    ids = [c.raw_id for c in back.commitments if c.signed]
    assert back.id == b64url(accumulate(ids)) == b64url(accumulate(reversed(ids)))


@pytest.mark.parametrize("signer", ["rsa", "ed25519", "eth"])
def test_ans104_message_through_httpsig_rebuilds_the_item(signer, wallet):
    key = {"rsa": wallet, "ed25519": Ed25519Key.generate(), "eth": Secp256k1Key.generate()}[signer]
    item = DataItem.create(key, data=b"payload bytes", tags=[("Type", "Message"), ("Action", "Eval"), ("Type", "dup")],
                           target=bytes(range(32)), anchor="00000000000000000000000000000007")
    msg = Message.from_ans104(item.to_bytes())
    assert msg.id == item.id and msg.verify()
    headers, body = msg.to_http()
    back = Message.from_http(headers, body)
    assert back.id == item.id and back.verify()
    assert back.to_ans104().to_bytes() == item.to_bytes()
    # a field changed after the fact no longer matches the signed item
    back.fields["action"] = b"Other"
    assert back.verify() is False


def test_signed_item_with_look_alike_tags_is_still_a_message():
    key = Ed25519Key.from_seed(b"\x06" * 32)
    item = DataItem.create(key, data=b"d", tags=[("Signature", "not a dictionary ("), ("Signature-Input", "x")])
    msg = Message.from_ans104(item)
    assert msg.verify() and msg.id == item.id
    assert msg.get("signature") == b"not a dictionary ("
    assert msg.to_ans104().to_bytes() == item.to_bytes()
    with pytest.raises(CodecError, match="collides"):
        msg.to_http()
    with pytest.raises(CodecError):
        Message.from_ans104(DataItem.create(None, tags=[("signature", "("), ("signature-input", "(")]))


def test_ed25519_httpsig_commitment_and_hmac_only_ids():
    key = Ed25519Key.from_seed(bytes(32))
    msg = Message({"a": "1", "b": "2"}).commit(key)
    assert msg.commitments[0].type == "ed25519" and msg.verify()
    unsigned = Message({"a": "1", "b": "2"})
    uid = unsigned.unsigned_id()
    assert uid == unsigned.id == Message({"b": "2", "a": "1"}).id  # committed keys are sorted
    assert unsigned.commit(None).id == uid
    assert Message({"a": "1", "b": "2"}).unsigned_id("constant:ao") != uid
    # HMAC commitment id is the HMAC over the HyperBEAM base with key "ao" (docs/CODECS.md, httpsig@1.0: Committing)
    base = b'"a": 1\n"b": 2\n"@signature-params": ("a" "b");alg="hmac-sha256";keyid="ao"'
    assert uid == b64url(hmac.new(b"ao", base, hashlib.sha256).digest())


def test_hyperbeam_signature_base_shape():
    fields = {"path": b"/~process@1.0/schedule", "Method": b"POST", "zeta": b"z", "body": b"x"}
    fields2, made = commit(fields, None, created=5, nonce="n")
    base = hb_base(fields2, made[0].components, made[0].params)
    assert base == (b'"content-digest": sha-256=:LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=:\n'
                    b'"method": POST\n"path": /~process@1.0/schedule\n"zeta": z\n'
                    b'"@signature-params": ("content-digest" "@method" "@path" "zeta");alg="hmac-sha256";'
                    b'created=5;keyid="ao";nonce="n"')
    si, _ = __import__("cu.codec.httpsig", fromlist=["encode_headers"]).encode_headers(made)
    # on the wire the parameter order is alg, keyid, tag, created, expires, nonce (docs/CODECS.md, Header encoding)
    assert si.endswith('("content-digest" "method" "path" "zeta");alg="hmac-sha256";keyid="ao";created=5;nonce="n"')
    assert base64.b64decode("LXEWQrcmsEQBYnyp+6wy9chTD7GQPMTbAiWHF5IaSIE=") == hashlib.sha256(b"x").digest()


def test_body_tampering_breaks_content_digest(wallet):
    msg = Message({"k": "v", "body": b"original"}).commit(wallet)
    headers, _ = msg.to_http()
    assert Message.from_http(headers, b"original").verify()
    assert not Message.from_http(headers, b"changed").verify()


# ------------------------------------------------------------------------------------------------
# ids and hashpaths


def test_hashpaths():
    a, b, c = b64url(bytes(32)), b64url(b"\x01" * 32), b64url(b"\x02" * 32)
    hp = hashpath_first(a, b)
    assert hp == f"{a}/{b}"
    nxt = hashpath_step(hp, c)
    assert nxt == b64url(sha256(bytes(32) + b"\x01" * 32)) + "/" + c
    acc = hashpath_step(hp, c, "accumulate-256")
    assert acc == b64url(accumulate([bytes(32), b"\x01" * 32])) + "/" + c
    assert binary_hashpath(b"abc") == b64url(hashlib.sha256(b"abc").digest())
    assert accumulate([b"\xff" * 32, (1).to_bytes(32, "big")]) == bytes(32)  # wraps mod 2^256
    with pytest.raises(CodecError):
        hashpath_step("noslash", c)
    with pytest.raises(CodecError):
        accumulate([b"short"])
    assert b64url_decode(nxt.split("/")[0])


# ------------------------------------------------------------------------------------------------
# structured (ao-types) encoding


def test_structured_round_trip_and_multipart():
    value = {"Type": "Message", "count": 5, "f": 1.5, "ok": True, "nil": None, "lst": [1, "a", 2.5],
             "empty": "", "el": [], "nested": {"x": "y", "n": 3, "deep": {"z": "w"}}, "big": "q" * 5000,
             "body": "hello", "em": {}}
    fields, body = encode(value)
    assert parse_ao_types(fields["ao-types"])["count"] == "integer"
    assert fields["content-type"].startswith(b'multipart/form-data; boundary="')
    boundary = fields["content-type"].split(b'"')[1].decode()
    assert body.startswith(b"--" + boundary.encode() + b"\r\n") and body.endswith(b"\r\n--" + boundary.encode() + b"--")
    back = decode(fields, body)
    assert back == {"type": b"Message", "count": 5, "f": 1.5, "ok": True, "nil": None, "lst": [1, b"a", 2.5],
                    "empty": b"", "el": [], "nested": {"x": b"y", "n": 3, "deep": {"z": b"w"}}, "big": b"q" * 5000,
                    "body": b"hello", "em": {}}
    assert encode(value) == (fields, body)  # deterministic boundary
    msg = Message.from_structured(value).commit(None)
    assert msg.structured()["nested"]["deep"] == {"z": b"w"} and msg.verify()
    # ao-core-libs' unquoted list form and token-valued ao-types are read too
    assert decode({"ao-types": b"l=list,n=integer", "l": b"(ao-type-integer) 1,(ao-type-binary) a", "n": b"7"}) == \
        {"l": [1, b"a"], "n": 7}
    # main-era per-key type headers and HyperBEAM's relaxed `ao-ids` dictionary
    assert decode({"ao-type-n": b'"integer"', "n": b"9"}) == {"n": 9}
    ids = {"ao-ids": b'AbC' + b"x" * 40 + b'="v1", ' + b"Q" * 43 + b'="v2"'}
    assert decode(ids) == {"AbC" + "x" * 40: b"v1", "Q" * 43: b"v2"}
    # a list carried as a numbered map inside a multipart part
    b = "bnd"
    body = (f'--{b}\r\ncontent-disposition: form-data;name="items"\r\nao-types: .="list", 1="integer"\r\n'
            f'1: 5\r\n2: two\r\n\r\n\r\n--{b}--').encode()
    assert decode({"content-type": f'multipart/form-data; boundary="{b}"'.encode()}, body) == {"items": [5, b"two"]}


# ------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    ("si", "sg", "match"),
    [
        ('s=("a" "a");alg="hmac-sha256";keyid="ao"', "s=:AAAA:", "duplicate"),
        ('s=("@path" "path");alg="hmac-sha256";keyid="ao"', "s=:AAAA:", "duplicate"),
        ('s=("a");alg="hmac-sha256";keyid="ao"', "t=:AAAA:", "labels differ"),
        ('s=("a";x=1);alg="hmac-sha256"', "s=:AAAA:", "plain sf-strings"),
        ('s=("a")', "s=:AAAA:", "missing alg"),
        ('s="a";alg="x"', "s=:AAAA:", "inner list"),
        ('s=("a");alg="x"', 's="AAAA"', "byte sequence"),
        ('s=("a";alg="x"', "s=:AAAA:", "dictionary"),
        ("", "", "dictionary"),
    ],
)
def test_malformed_httpsig_headers(si, sg, match):
    with pytest.raises(CodecError, match=match):
        decode_headers(si, sg)


def test_unverifiable_commitments_say_so():
    (c,) = decode_headers('s=("a");alg="hmac-sha256";keyid="secret:abc"', "s=:" + "A" * 44 + ":")
    with pytest.raises(CodecError, match="unknown key"):
        verify_commitment({"a": b"1"}, c)
    (c,) = decode_headers('s=("a");alg="ecdsa-p256-sha256";keyid="' + "A" * 60 + '"', "s=:AAAA:")
    with pytest.raises(CodecError, match="not supported"):
        verify_commitment({"a": b"1"}, c)
    (c,) = decode_headers('s=("missing");alg="hmac-sha256";keyid="ao"', "s=:AAAA:")
    with pytest.raises(CodecError, match="not in the message"):
        verify_commitment({"a": b"1"}, c)
    with pytest.raises(CodecError):
        Message.from_http([("signature", "s=:AAAA:")])
    with pytest.raises(CodecError):
        Message({"a": "x\ny"}).to_http()


def test_malformed_multipart_and_types():
    f = {"content-type": b'multipart/form-data; boundary="b"'}
    for body in (b"nope", b"--b\r\nno-terminator", b"--b\r\ncontent-disposition: form-data\r\n\r\nx\r\n--b--",
                 b"--b\r\ncontent-disposition: form-data;name=\"a\"\r\n\r\nx"):
        with pytest.raises(CodecError):
            decode(f, body)
    with pytest.raises(CodecError):
        decode({"ao-types": b'n="integer"', "n": b"x"})
    with pytest.raises(CodecError):
        decode({"ao-types": b'n="bogus"', "n": b"x"})
    bomb = b"".join(b"--b\r\ncontent-disposition: form-data;name=\"a%d\"\r\n\r\nx\r\n" % i for i in range(1100)) + b"--b--"
    with pytest.raises(CodecError, match="too many"):
        decode(f, bomb)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text(max_size=300), st.text(max_size=300))
def test_fuzz_httpsig_header_decoder(si, sg):
    try:
        for c in decode_headers(si, sg):
            try:
                verify_commitment({"a": b"1"}, c)
            except CodecError:
                pass
    except CodecError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from(["content-type", "ao-types", "a", "b/c"]), st.binary(max_size=80), max_size=4),
       st.binary(max_size=400))
def test_fuzz_structured_decoder(fields, body):
    if "content-type" in fields and fields["content-type"][:1] == b"m":
        fields["content-type"] = b'multipart/form-data; boundary="b"'
    try:
        decode(fields, body)
    except CodecError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_stored_message_and_item_conversion(raw):
    try:
        Message.from_bytes(raw)
    except CodecError:
        pass
    try:
        Message.from_ans104(raw)
    except CodecError:
        pass


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["signature", "signature-input", "content-digest", "a", "body"]),
                          st.text(max_size=120)), max_size=5), st.binary(max_size=64))
def test_fuzz_message_from_http(headers, body):
    try:
        msg = Message.from_http(headers, body)
        msg.verify_all()
    except CodecError:
        pass


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_ao_types_and_relaxed_dictionary(text):
    try:
        parse_ao_types(text.encode("utf-8"))
    except CodecError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from(["kty", "crv", "n", "e", "d", "p", "q", "x", "y"]),
                       st.one_of(st.sampled_from(["RSA", "OKP", "EC", "Ed25519", "secp256k1", "AQAB"]),
                                 st.text(max_size=50), st.integers()), max_size=9))
def test_fuzz_jwk_loader(jwk):
    from cu.codec.wallet import key_from_jwk

    try:
        key_from_jwk(jwk)
    except CodecError:
        pass


def test_uncommitted_fields_are_reported_and_dropped():
    key = Ed25519Key.from_seed(b"\x05" * 32)
    msg = Message({"a": "1", "body": b"data"}).commit(key)
    headers, body = msg.to_http()
    got = Message.from_http(headers + [("x-injected", "evil")], body)
    assert got.verify()  # the signature itself is fine ...
    assert got.uncommitted_keys() == ["x-injected"]  # ... but this field is not covered by it
    clean = got.only_committed()
    assert "x-injected" not in clean.fields and clean.get("body") == b"data" and clean.verify()
    assert clean.id == msg.id


@needs_node
def test_generic_rfc9421_peer_verifies_aocu_rsa_commitment(wallet):
    """aocu's rsa-pss-sha512 commitment (keyid = base64 modulus, params alg+keyid) is also a valid
    RFC 9421 signature to the npm http-message-signatures verifier."""
    msg = Message({"type": "Message", "action": "Eval", "data-protocol": "ao"}).commit(wallet, with_hmac=False)
    headers, _ = msg.to_http()
    req = {"method": "POST", "url": "http://node.example/~process@1.0/schedule", "headers": dict(headers)}
    assert node("httpsig_peer.js", {"op": "verify", "message": req, "keys": {}})["result"] is True
    bad = dict(headers, action="Other")
    assert node("httpsig_peer.js", {"op": "verify", "message": {**req, "headers": bad}, "keys": {}})["result"] is False
