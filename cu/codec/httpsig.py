"""httpsig@1.0 as HyperBEAM implements it (docs/CODECS.md, httpsig@1.0): commitments over message fields, the
HyperBEAM signature base, and the Signature/Signature-Input header encoding.

Also re-exports the standards form (`sign_message` / `verify_message` over `HTTPMessage`) from
`cu.codec.rfc9421`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
from collections.abc import Iterable, Mapping

import http_sfv

from cu.codec import sf
from cu.codec.commitment import DEVICE_ANS104, DEVICE_HTTPSIG, HMAC_TYPE, Commitment
from cu.codec.digest import content_digest, verify_content_digest
from cu.codec.errors import CodecError
from cu.codec.hashes import b64url, sha256
from cu.codec.rfc9421 import HTTPMessage, sign_message, verify_message  # noqa: F401 - re-exported
from cu.codec.wallet import ArweaveWallet, Ed25519Key, ed25519_verify, rsa_pss_verify

DERIVED_NAMES = frozenset({"method", "target-uri", "authority", "scheme", "request-target", "path", "query",
                           "query-param"})
BASE_PARAMS = ("alg", "bundle", "created", "expires", "keyid", "nonce", "tag")
WIRE_ORDER = ("alg", "keyid", "tag", "created", "expires", "nonce")
NOT_COMMITTABLE = frozenset({"signature", "signature-input", "commitments", "priv"})
HMAC_KEYS = ("ao", "constant:ao")  # 2025 and 2026 HyperBEAM (docs/CODECS.md, httpsig@1.0: Committing)
MAX_COMMITMENTS = 32
MAX_COMPONENTS = 1024
SIG_TYPES = ("rsa-pss-sha512", "ed25519", HMAC_TYPE)


def lower_fields(fields: Mapping[str, bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for k, v in fields.items():
        lk = k.lower()
        if lk in out and out[lk] != v:
            raise CodecError(f"fields {k!r} differ only by case: not representable in httpsig")
        out[lk] = v
    return out


def _value_line(value: bytes, name: str) -> bytes:
    if b"\n" in value or b"\r" in value:
        raise CodecError(f"component {name}: value contains a newline")
    return value


def _params_for_base(params: Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    return sorted(((k, v) for k, v in params if k in BASE_PARAMS), key=lambda kv: kv[0])


def hb_base(fields: Mapping[str, bytes], components: Iterable[str], params: Iterable[tuple[str, object]]) -> bytes:
    """HyperBEAM's base: bare lowercase names on the lines, '@' only for derived names in the params
    list, parameters sorted alphabetically (docs/CODECS.md, httpsig@1.0: Committing)."""
    low = lower_fields(fields)
    names = [c.lstrip("@").lower() for c in components]
    lines = []
    for n in names:
        if n not in low:
            raise CodecError(f"committed key {n!r} is not in the message")
        lines.append(b'"' + n.encode() + b'": ' + _value_line(low[n], n))
    comp_list = " ".join(sf.ser_string("@" + n if n in DERIVED_NAMES else n) for n in names)
    lines.append(b'"@signature-params": (' + comp_list.encode() + b")" +
                 sf.ser_params(_params_for_base(params)).encode())
    return b"\n".join(lines)


def rfc_base(fields: Mapping[str, bytes], components: Iterable[str], params: Iterable[tuple[str, object]]) -> bytes:
    """RFC 9421 form over message values: identifiers as on the wire, parameters in wire order (what
    generic RFC 9421 signers such as ao-core-libs produce)."""
    low = lower_fields(fields)
    comps = list(components)
    lines = []
    for c in comps:
        n = c.lstrip("@").lower()
        if n not in low:
            raise CodecError(f"committed key {n!r} is not in the message")
        lines.append(sf.ser_string(c).encode() + b": " + _value_line(low[n], n))
    lines.append(b'"@signature-params": (' + " ".join(sf.ser_string(c) for c in comps).encode() + b")" +
                 sf.ser_params(list(params)).encode())
    return b"\n".join(lines)


def hmac_key_for(keyid: str | None) -> bytes:
    """HyperBEAM's `constant` keyid scheme: the HMAC key is the keyid itself, prefix included ("ao" in
    2025, "constant:ao" since); no keyid means "constant:ao". Secret keys cannot be checked here."""
    if keyid is None:
        return b"constant:ao"
    scheme, sep, _ = keyid.partition(":")
    if sep and scheme != "constant":
        raise CodecError(f"hmac-sha256 commitment with keyid scheme {scheme!r}: unknown key, cannot verify")
    return keyid.encode()


def _decode_key(keyid: str) -> bytes:
    k = keyid.split(":", 1)[1] if keyid.startswith(("publickey:", "public-key:")) else keyid
    return sf.relaxed_byteseq(k, "keyid")


def public_key(keyid: str) -> bytes:
    """The key bytes a signature commitment's keyid names (standard or url-safe base64, optional
    `publickey:` prefix): the RSA modulus or the ed25519 public key."""
    return _decode_key(keyid)


def committed_keys(fields: Mapping[str, bytes], committed: Iterable[str] | None = None) -> list[str]:
    """Explicit list, else every key sorted (lowercase); `body` is represented by `content-digest`."""
    keys = [k.lower() for k in committed] if committed is not None else sorted(k.lower() for k in fields)
    out = []
    for k in keys:
        k = k.lstrip("@")
        if k in NOT_COMMITTABLE:
            continue
        if k == "body":
            k = "content-digest"
        if k not in out:
            out.append(k)
    return out


def with_content_digest(fields: Mapping[str, bytes]) -> dict[str, bytes]:
    """A copy with `content-digest` set from `body` (sha-256, RFC 9530) when there is a body."""
    out = dict(fields)
    low = {k.lower(): k for k in out}
    if "body" in low:
        out[low.get("content-digest", "content-digest")] = content_digest(out[low["body"]]).encode()
    return out


def label_for(signature: bytes) -> str:
    return "sig-" + b64url(sha256(signature)).lower()


def commit(
    fields: Mapping[str, bytes],
    key: ArweaveWallet | Ed25519Key | None,
    *,
    committed: Iterable[str] | None = None,
    tag: str | None = None,
    created: int | None = None,
    expires: int | None = None,
    nonce: str | None = None,
    bundle: bool = False,
    hmac_key: str = "ao",
    with_hmac: bool = True,
) -> tuple[dict[str, bytes], list[Commitment]]:
    """Commit to `fields` as HyperBEAM does: a signed commitment (RSA wallet: rsa-pss-sha512; ed25519 key:
    ed25519) followed by the hmac-sha256 commitment; key None gives only the hmac ("unsigned") one.
    Returns the fields (with content-digest added when there is a body) and the new commitments."""
    hmac_key_for(hmac_key)  # only public (`constant`) keys: anything else is not HyperBEAM's scheme
    out = with_content_digest(fields)
    comps = committed_keys(out, committed)
    if not comps:
        raise CodecError("nothing to commit")
    extra: list[tuple[str, object]] = []
    for k, v in (("tag", tag), ("created", created), ("expires", expires), ("nonce", nonce)):
        if v is not None:
            extra.append((k, v))
    if bundle:
        extra.append(("bundle", "true"))
    made: list[Commitment] = []
    if key is not None:
        if isinstance(key, ArweaveWallet):
            typ, pub = "rsa-pss-sha512", key.owner
        elif isinstance(key, Ed25519Key):
            typ, pub = "ed25519", key.owner
        else:
            raise CodecError(f"httpsig cannot commit with a {type(key).__name__} (RSA or ed25519 only)")
        keyid = base64.b64encode(pub).decode()
        params = _wire_params([("alg", typ), ("keyid", keyid), *extra])
        base = hb_base(out, comps, params)
        sig = key.sign(base, "sha512") if isinstance(key, ArweaveWallet) else key.sign(base)
        made.append(Commitment(DEVICE_HTTPSIG, typ, sig, list(comps), keyid=keyid, committer=b64url(sha256(pub)),
                               params=params, components=list(comps), label=label_for(sig)))
    if with_hmac or key is None:
        params = _wire_params([("alg", HMAC_TYPE), ("keyid", hmac_key), *[(k, v) for k, v in extra if k != "tag"]])
        base = hb_base(out, comps, params)
        mac = _hmac.new(hmac_key.encode(), base, hashlib.sha256).digest()
        made.append(Commitment(DEVICE_HTTPSIG, HMAC_TYPE, mac, list(comps), keyid=hmac_key, params=params,
                               components=list(comps), label=label_for(mac)))
    return out, made


def _wire_params(params: Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    """Wire order: alg, keyid, tag, created, expires, nonce, then the rest (docs/CODECS.md, Header encoding)."""
    params = list(params)
    rank = {k: i for i, k in enumerate(WIRE_ORDER)}
    return sorted(params, key=lambda kv: rank.get(kv[0], len(WIRE_ORDER)))


def verify_commitment(fields: Mapping[str, bytes], c: Commitment, *, absent_body_ok: bool = False) -> bool:
    """Verify one httpsig commitment against the message fields (content-digest checked against body).

    `absent_body_ok`: a covered content-digest with no (or an empty) body is not checked against the body;
    the signature still covers the content-digest value. ao-core-libs 0.0.9 sends signed requests without
    their body although it signs a content-digest of it; a receiver that accepts them opts in here."""
    if c.device != DEVICE_HTTPSIG:
        raise CodecError(f"not an httpsig commitment: {c.device}")
    low = lower_fields(fields)
    names = [x.lstrip("@").lower() for x in c.components]
    if len(set(names)) != len(names):
        raise CodecError("duplicate component identifiers")
    if "content-digest" in names and "content-digest" in low and not (absent_body_ok and not low.get("body")):
        if not verify_content_digest(low["content-digest"].decode("latin-1"), low.get("body", b"")):
            return False
    bases = [hb_base(fields, c.components, c.params)]
    alt = rfc_base(fields, c.components, c.params)
    if alt != bases[0]:
        bases.append(alt)
    for base in bases:
        if _check(c, base):
            return True
    return False


def _check(c: Commitment, base: bytes) -> bool:
    if c.type == HMAC_TYPE:
        key = hmac_key_for(c.keyid)
        return _hmac.compare_digest(_hmac.new(key, base, hashlib.sha256).digest(), c.signature)
    if c.keyid is None:
        raise CodecError(f"{c.type} commitment has no keyid")
    pub = _decode_key(c.keyid)
    if c.type == "rsa-pss-sha512":
        return 256 <= len(pub) <= 1024 and rsa_pss_verify(pub, base, c.signature, "sha512")
    if c.type == "ed25519":
        return ed25519_verify(pub, base, c.signature)
    raise CodecError(f"httpsig commitment type {c.type!r} is not supported")


# -- header encoding ------------------------------------------------------------------------------
def encode_headers(commitments: Iterable[Commitment]) -> tuple[str, str]:
    """(Signature-Input, Signature) values for the commitments. ans104@1.0 commitments travel as members
    with `commitment-device="ans104@1.0"` and the fields needed to rebuild the item."""
    inputs, sigs = [], []
    for c in commitments:
        label = c.label or label_for(c.signature)
        params = list(c.params)
        comps = c.components
        if c.device == DEVICE_ANS104:
            params, comps = _ans104_params(c), []
        for k, v in params:
            if not isinstance(v, (str, int, bool, bytes)):
                raise CodecError(f"commitment parameter {k} has unsupported type {type(v).__name__}")
        inputs.append(f"{label}=(" + " ".join(sf.ser_string(x) for x in comps) + ")" + sf.ser_params(params))
        sigs.append(f"{label}=:{base64.b64encode(c.signature).decode()}:")
    if not inputs:
        raise CodecError("no commitments to encode")
    return ", ".join(inputs), ", ".join(sigs)


def _ans104_params(c: Commitment) -> list[tuple[str, object]]:
    item = c.item
    if item is None:
        raise CodecError("ans104 commitment without its item")
    params: list[tuple[str, object]] = [
        ("alg", c.type), ("keyid", base64.b64encode(item.owner).decode()),
        ("commitment-device", DEVICE_ANS104), ("signature-type", item.signature_type),
        ("original-tags", b64url(item.raw_tags)),
    ]
    if item.target:
        params.append(("target", b64url(item.target)))
    if item.anchor:
        params.append(("anchor", b64url(item.anchor)))
    for k, v in c.params:
        if k == "data-key":
            params.append((k, v))
    return params


def _plain_component(label: str, item: http_sfv.Item) -> tuple[str, str]:
    """A component as HyperBEAM writes it: a plain sf-string; identified by its name without `@`, lower-cased."""
    if not isinstance(item.value, str) or item.params:
        raise CodecError(f"signature-input {label}: components must be plain sf-strings")
    return item.value, item.value.lstrip("@").lower()


def decode_headers(signature_input: str, signature: str) -> list[Commitment]:
    """Commitments from Signature-Input/Signature. Labels must pair up; duplicate components, a wrong
    shape or too many members raise CodecError. ans104@1.0 members come back with `item` unset
    (rebuilt by `cu.codec.message` once the data field is known)."""
    out = []
    members = sf.signature_members(signature_input, signature, _plain_component, max_members=MAX_COMMITMENTS,
                                   too_many="too many commitments", max_components=MAX_COMPONENTS)
    for label, inner, comps, bare, sig in members:
        params = list(inner.params.items())  # tokens stay tokens so the base re-serializes identically
        for k, v in params:
            if not isinstance(v, (str, int, bool, bytes)):
                raise CodecError(f"signature-input {label}: parameter {k} has an unsupported type")
        pd = dict(params)
        alg = pd.get("alg")
        if not isinstance(alg, str):
            raise CodecError(f"signature-input {label}: missing alg")
        keyid = str(pd["keyid"]) if isinstance(pd.get("keyid"), str) else None
        device = pd.get("commitment-device", DEVICE_HTTPSIG)
        committer = None
        if keyid is not None and len(keyid) > 43 and alg != HMAC_TYPE:
            committer = b64url(sha256(_decode_key(keyid)))
        out.append(Commitment(str(device) if isinstance(device, str) else DEVICE_HTTPSIG, str(alg), sig, bare,
                              keyid=keyid, committer=committer, params=params, components=comps, label=label))
    return out

