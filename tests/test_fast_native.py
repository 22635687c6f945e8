"""The native ANS-104 fast paths (native/fast_ans104.cpp, cu/node/fast.py) against the Python codec: the same
bytes, the same verdicts, the same errors (what the native path declines is left to the codec)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import cu.codec.hashes as codec_hashes
from cu import _native
from cu.codec import wallet
from cu.codec.ans104 import SIG_CONFIG, DataItem
from cu.codec.errors import CodecError
from cu.codec.hashes import deep_hash_py
from cu.codec.tags import encode_tags
from cu.codec.wallet import Ed25519Key
from cu.hashing import b64url
from cu.node import fast
from cu.node.items import Identity, item_meta

PEERS = Path(__file__).resolve().parent / "peers"
NODE = shutil.which("node")
needs_peer = pytest.mark.skipif(
    NODE is None or not (PEERS / "node_modules" / "arbundles").is_dir(),
    reason="node + arbundles peer not installed (scripts/install.sh --test)",
)


def peer(req: dict) -> dict:
    proc = subprocess.run([NODE, str(PEERS / "arbundles_peer.js")], input=json.dumps(req).encode(),
                          capture_output=True, timeout=120, cwd=PEERS, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture
def python_only(monkeypatch):
    """Turns both fast paths off for the duration (the reference answers)."""
    def off() -> None:
        monkeypatch.setattr(fast, "ENABLED", False)
        monkeypatch.setattr(codec_hashes, "_FAST_OFF", True)
    return off


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity(wallet=None, ed25519=Ed25519Key.generate())  # type: ignore[arg-type]


ASSIGNMENTS = [
    ("P" * 43, "M" * 43, 1, 1_700_000_000_000, 0, "H" * 43, 0, ()),
    ("a-b_c" * 8 + "xyz", "Q" * 43, 123456789, 1_800_000_000_123, 1_598_765, "h" * 43, 3, ("Data",)),
    ("P" * 43, "M" * 43, 7, 1, 2, "H" * 43, 0, ("Data", "Anchor", "ünï cødé ✓")),   # legacy exclude= values
]


@pytest.mark.parametrize("args", ASSIGNMENTS)
def test_assignment_is_byte_identical_to_the_codec(identity, python_only, args):
    raw, meta = identity.build_assignment(*args[:7], exclude=args[7])
    # the meta built without parsing equals the codec's view of the bytes
    assert item_meta(DataItem.parse(raw), now_ms=args[3]) == meta
    assert DataItem.parse(raw).verify()
    python_only()
    raw_py, meta_py = identity.build_assignment(*args[:7], exclude=args[7])
    assert raw == raw_py     # ed25519 is deterministic: equal bytes mean equal signature and layout
    assert meta == meta_py


def test_declined_tags_go_to_the_codec_and_its_errors(identity):
    key = identity.ed25519
    assert fast.ed25519_item(key, [("Name", "v" * 3073)]) is None            # value over the DEFAULT limit
    assert fast.ed25519_item(key, [("N" * 100, "v" * 3000)] * 2) is None      # tag block over 4096 bytes
    assert fast.ed25519_item(key, [("Name", "\udcff")]) is None               # not encodable as UTF-8
    assert fast.ed25519_item(Ed25519Key.generate(4), [("a", "b")]) is None    # type 4: the codec signs it
    with pytest.raises(CodecError, match="value of 3073 bytes exceeds 3072"):
        DataItem.create(key, tags=[("Name", "v" * 3073)])
    ok = fast.ed25519_item(key, [("N" * 100, "v" * 3000)])
    assert ok is not None and ok[0] == DataItem.create(key, tags=[("N" * 100, "v" * 3000)]).to_bytes()


@pytest.mark.parametrize("tags", [
    [], [("a", "b")], [(b"", b"")], [(b"\x00\xff", "ünï")], [(f"k{i}", "v" * i) for i in range(70)],
    [("x" * 3072, "y" * 1000)],
])
def test_native_tag_encoding_matches_the_codec(tags):
    assert _native.fast.encode_tags(tags) == encode_tags(tags)


def test_native_tag_encoder_declines_what_it_cannot_judge():
    assert _native.fast.encode_tags([("a", 1)]) is None           # the codec names the type
    assert _native.fast.encode_tags([("a", "b", "c")]) is None    # not a pair
    assert _native.fast.encode_tags("ab") is None
    with pytest.raises(CodecError, match="must be bytes or str, not int"):
        encode_tags([("a", 1)])


def _tampered(raw: bytes) -> list[bytes]:
    """The item with one bit flipped in the signature, the owner, the tags and the last data byte."""
    item = DataItem.parse(raw)
    sig_at, owner_at = 2, 2 + len(item.signature)
    tags_at = len(raw) - len(item.data) - len(item.raw_tags)
    spots = [sig_at + 5, owner_at + 3] + ([tags_at + 2] if item.raw_tags else []) + ([len(raw) - 1] if item.data else [])
    out = []
    for at in spots:
        b = bytearray(raw)
        b[at] ^= 0x01
        out.append(bytes(b))
    return out


def _verdicts(raws: list[bytes]) -> list[bool | str]:
    out: list[bool | str] = []
    for r in raws:
        try:
            out.append(DataItem.parse(r).verify())
        except CodecError as exc:
            out.append(f"CodecError: {exc}")
    return out


def _own_items() -> list[bytes]:
    k2, k4 = Ed25519Key.generate(), Ed25519Key.generate(4)
    return [DataItem.create(k, data=d, tags=t, target=tg, anchor=an).to_bytes() for k in (k2, k4) for d, t, tg, an in (
        (b"m1", [("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")], b64url(bytes(range(32))), None),
        (b"", [], None, "00000000000000000000000000000042"),
        (bytes(range(256)) * 40, [("ünï", "cødé ✓")], None, None))]


@pytest.mark.parametrize("sig_type", sorted(SIG_CONFIG))
def test_signature_data_equals_the_python_deep_hash(sig_type):
    for raw in _own_items():
        item = DataItem.parse(raw)
        unsigned = DataItem.create(None, data=item.data, tags=item.tags, target=item.target, anchor=item.anchor,
                                   signature_type=sig_type)
        for it in (item, unsigned):
            expect = deep_hash_py([b"dataitem", b"1", str(it.signature_type).encode(), it.owner, it.target or b"",
                                   it.anchor or b"", it.raw_tags, it.data])
            assert it.signature_data() == expect


def test_verify_verdicts_equal_the_codec_on_own_items(python_only):
    raws = [t for r in _own_items() for t in [r, *_tampered(r)]]
    native = _verdicts(raws)
    assert native.count(True) == 6 and set(native) == {True, False}
    python_only()
    assert _verdicts(raws) == native


@needs_peer
def test_verify_verdicts_equal_the_codec_on_arbundles_items(python_only, identity):
    keys = peer({"op": "keygen"})
    specs = [{"data": base64.b64encode(b"hello ao").decode(), "tags": [["Type", "Message"], ["Data-Protocol", "ao"]],
              "target": b64url(bytes(range(32))), "anchor": "00000000000000000000000000000042"},
             {"data": "", "tags": []}]
    raws = [base64.b64decode(i["raw"]) for t in (2, 4)
            for i in peer({"op": "create", "type": t, "key": keys["solana"], "items": specs})["items"]]
    # and arbundles accepts the assignments the native path signs
    assignment, _ = identity.build_assignment(*ASSIGNMENTS[1][:7], exclude=ASSIGNMENTS[1][7])
    theirs = peer({"op": "verify", "items": [base64.b64encode(assignment).decode()]})["items"]
    assert theirs[0]["valid"] is True
    raws = [t for r in raws for t in [r, *_tampered(r)]]
    native = _verdicts(raws)
    assert native.count(True) == 4
    python_only()
    assert _verdicts(raws) == native


# ed25519 encodings where verifiers differ (libsodium refuses them, OpenSSL and so the codec decide): the identity
# point as the key with R = identity, S = 0 satisfies the equation for any message; S = L is not canonical; a key
# with y = p (non-canonical encoding of y = 0); R of order 2 with the identity key
_L = 2**252 + 27742317777372353535851937790883648493
_P = 2**255 - 19
_IDENTITY = (1).to_bytes(32, "little")
EDGE_SIGNATURES = [
    (_IDENTITY, _IDENTITY + bytes(32)),
    (_IDENTITY, _IDENTITY + _L.to_bytes(32, "little")),
    (_P.to_bytes(32, "little"), _IDENTITY + bytes(32)),
    (_IDENTITY, (_P - 1).to_bytes(32, "little") + bytes(32)),
]


def test_edge_encodings_get_the_codecs_verdict(python_only):
    """The native verifier asks libsodium first; what libsodium refuses OpenSSL decides, so the verdicts are the
    codec's (cryptography's OpenSSL) on the encodings where the two libraries differ. Fails if the OpenSSL
    second opinion is dropped: OpenSSL accepts the identity key's trivial signature, libsodium does not."""
    items = []
    for owner, sig in EDGE_SIGNATURES:
        for data in (b"", b"hello ao"):
            item = DataItem.parse(DataItem.create(Ed25519Key.generate(), data=data, tags=[("Type", "Message")]).to_bytes())
            item.owner, item.signature = owner, sig
            items.append(item.to_bytes())
    # and plain signatures (httpsig@1.0 ed25519 commitments): cu.codec.wallet.ed25519_verify
    key = Ed25519Key.generate()
    plain = [(o, b"any message", sg) for o, sg in EDGE_SIGNATURES]
    plain += [(key.owner, b"signed", key.sign(b"signed")), (key.owner, b"other", key.sign(b"signed"))]
    native_plain = [wallet.ed25519_verify(o, m, sg) for o, m, sg in plain]
    assert native_plain == [_native.fast.ed25519_verify(o, m, sg) for o, m, sg in plain]
    native = _verdicts(items)
    python_only()
    assert _verdicts(items) == native
    assert [wallet.ed25519_verify(o, m, sg) for o, m, sg in plain] == native_plain
    assert native[:2] == [True, True]        # the trivial signature: accepted, as OpenSSL does
    assert native[2:4] == [False, False]     # S = L
    assert native_plain[0] is True and native_plain[-2:] == [True, False]


def test_native_ed25519_signatures_are_openssls(python_only):
    """Ed25519Key.sign goes through the extension's libsodium signer once it is loaded: the same (deterministic)
    signature bytes as cryptography's OpenSSL key, for any message."""
    key = Ed25519Key.generate()
    assert key.native_signer() is not None
    for msg in (b"", b"x", os.urandom(48), os.urandom(10_000)):
        sig = key.sign(msg)
        assert sig == key._key.sign(msg) and key.verify(msg, sig)
        assert _native.fast.verify_item(2, sig, key.owner, None, None, b"", b"") is False    # not an item's
    python_only()
    assert key.native_signer() is None and key.sign(b"x") == key._key.sign(b"x")


def test_malformed_input_to_the_native_calls_is_one_line_errors():
    with pytest.raises(ValueError, match="only ed25519 items"):
        _native.fast.verify_item(1, b"s" * 512, b"o" * 512, None, None, b"", b"")
    with pytest.raises(ValueError, match="private key must be 32 raw bytes"):
        _native.fast.Ed25519ItemSigner(b"short")
    signer = fast.item_signer(Ed25519Key.generate())
    assert signer is not None
    with pytest.raises(ValueError, match="target and anchor must be 32 bytes or None"):
        signer.build_item([("a", "b")], b"x" * 31, None, b"")
    with pytest.raises(TypeError):
        signer.build_item([("a", "b")], "not bytes", None, b"")
    # a wrong-length owner or signature is simply not valid, as in the codec
    assert _native.fast.verify_item(2, b"s" * 63, b"o" * 32, None, None, b"", b"") is False
    assert _native.fast.verify_item(2, b"s" * 64, b"o" * 31, None, None, b"", b"") is False


def test_rpc_frames_round_trip_around_the_one_write_size():
    import socket
    import threading

    from cu.node import wire
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    values = [[True, b"x" * n] for n in (0, 100, wire.SMALL_FRAME - 20, wire.SMALL_FRAME + 1, 3 * wire.SMALL_FRAME)]
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(wire.recv_frame(b) for _ in values))
    reader.start()
    for v in values:
        wire.send_frame(a, v)
    reader.join(30)
    a.close()
    assert wire.recv_frame(b) is None      # the peer closed between frames
    b.close()
    assert got == values
