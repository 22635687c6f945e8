"""HTTP Message Signatures (RFC 9421): signature bases, signing and verification for plain HTTP messages.

HyperBEAM's httpsig@1.0 dialect (bare component names, sorted parameters) lives in `cu.codec.httpsig`;
this module is the standards form used for aocu's own result signatures and for generic peers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_plus, urlsplit

import http_sfv
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from cu.codec import sf
from cu.codec.errors import CodecError

DERIVED = ("@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query",
           "@query-param", "@status")
ALGORITHMS = ("rsa-pss-sha512", "rsa-v1_5-sha256", "hmac-sha256", "ecdsa-p256-sha256", "ecdsa-p384-sha384",
              "ed25519")
MAX_SIGNATURES = 32
MAX_COMPONENTS = 256


@dataclass
class HTTPMessage:
    """A request (method + url) or a response (status); header names are case-insensitive."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    method: str | None = None
    url: str | None = None
    status: int | None = None
    body: bytes | None = None
    request: HTTPMessage | None = None  # the request a response answers, for `;req` components

    def field_values(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def header(self, name: str) -> str | None:
        vals = self.field_values(name)
        return ", ".join(v.strip() for v in vals) if vals else None

    def set_header(self, name: str, value: str) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()] + [(name, value)]


@dataclass
class Component:
    name: str
    params: list[tuple[str, object]]

    @property
    def identifier(self) -> str:
        return sf.ser_string(self.name) + sf.ser_params(self.params)


def _component(item: object) -> Component:
    if not isinstance(item, http_sfv.Item) or not isinstance(item.value, str):
        raise CodecError("signature-input: component identifiers must be sf-strings")
    return Component(item.value, list(item.params.items()))


def _identified_component(label: str, item: http_sfv.Item) -> tuple[Component, str]:
    c = _component(item)
    return c, c.identifier


def _authority(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError as exc:
        raise CodecError(f"bad target URI: {exc}") from exc
    if not host:
        raise CodecError("@authority needs an absolute target URI")
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    if ":" in host:
        host = f"[{host}]"
    return host if port is None or port == default else f"{host}:{port}"


# Field values outside visible ASCII (tab allowed) must be covered with ;bs. A compiled class keeps this check
# cheap on large headers such as Attestation (~1.6 KB per signed result).
_NON_VISIBLE = re.compile(r"[^\t\x20-\x7e]")


def component_value(msg: HTTPMessage, comp: Component) -> str:
    params = dict(comp.params)
    known = {"sf", "key", "bs", "req", "tr", "name"}
    for k in params:
        if k not in known:
            raise CodecError(f"component {comp.name}: unknown parameter {k}")
    src = msg
    if params.get("req"):
        if msg.request is None:
            raise CodecError(f"component {comp.name};req needs the request of this response")
        src = msg.request
    if params.get("tr"):
        raise CodecError("trailer components (;tr) are not supported")
    name = comp.name
    if name.startswith("@"):
        if name not in DERIVED:
            raise CodecError(f"unknown derived component {name}")
        if name == "@status":
            if src.status is None:
                raise CodecError("@status is only defined for responses")
            return f"{src.status:03d}"
        if name == "@method":
            if src.method is None:
                raise CodecError("@method needs a request")
            return src.method
        if src.url is None:
            raise CodecError(f"{name} needs a request target URI")
        try:
            parts = urlsplit(src.url)
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise CodecError(f"bad target URI: {exc}") from exc
        if name == "@target-uri":
            return src.url
        if name == "@authority":
            return _authority(src.url)
        if name == "@scheme":
            return parts.scheme.lower()
        if name == "@path":
            return parts.path or "/"
        if name == "@query":
            return "?" + parts.query
        if name == "@request-target":
            return (parts.path or "/") + ("?" + parts.query if parts.query else "")
        # @query-param: names and values are compared/output in their re-encoded form (§2.2.8)
        want = params.get("name")
        if not isinstance(want, str):
            raise CodecError("@query-param needs a name parameter")
        found = [unquote_plus(v) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
                 if quote(unquote_plus(k), safe="") == quote(unquote_plus(want), safe="")]
        if len(found) != 1:
            raise CodecError(f"@query-param {want!r}: expected exactly one occurrence, found {len(found)}")
        return quote(found[0], safe="")
    if name != name.lower():
        raise CodecError(f"component {name}: field names must be lowercase")
    lines = src.field_values(name)
    if not lines:
        raise CodecError(f"covered field {name!r} is absent")
    if params.get("bs"):
        if params.get("sf") or "key" in params:
            raise CodecError(f"component {name}: ;bs cannot be combined with ;sf or ;key")
        return ", ".join(":" + base64.b64encode(v.strip().encode("latin-1")).decode() + ":" for v in lines)
    value = ", ".join(v.strip() for v in lines)
    if "key" in params:
        d = sf.parse_dictionary(value, name)
        k = params["key"]
        if k not in d:
            raise CodecError(f"component {name};key={k!r}: member absent")
        return str(d[k])
    if params.get("sf"):
        for parser in (sf.parse_dictionary, sf.parse_list, sf.parse_item):
            try:
                return str(parser(value, name))
            except CodecError:
                continue
        raise CodecError(f"component {name};sf: value is not a structured field")
    if _NON_VISIBLE.search(value):
        raise CodecError(f"component {name}: value has characters outside visible ASCII (use ;bs)")
    return value


def signature_base(msg: HTTPMessage, components: Sequence[Component], params_line: str) -> bytes:
    seen: set[str] = set()
    lines = []
    for comp in components:
        ident = comp.identifier
        if ident in seen:
            raise CodecError(f"duplicate component identifier {ident}")
        seen.add(ident)
        if comp.name == "@signature-params":
            raise CodecError("@signature-params cannot be a covered component")
        value = component_value(msg, comp)
        if "\n" in value or "\r" in value:
            raise CodecError(f"component {comp.name}: value contains a newline")
        lines.append(f"{ident}: {value}")
    lines.append(f'"@signature-params": {params_line}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError as exc:
        raise CodecError("signature base must be ASCII (percent-encode URIs, use ;bs for binary fields)") from exc


def params_line(components: Sequence[Component], params: Sequence[tuple[str, object]]) -> str:
    return "(" + " ".join(c.identifier for c in components) + ")" + sf.ser_params(list(params))


# -- algorithms -----------------------------------------------------------------------------------
Key = rsa.RSAPrivateKey | rsa.RSAPublicKey | ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey | \
    ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey | bytes


def sign_bytes(alg: str, key: Key, data: bytes) -> bytes:
    if alg == "hmac-sha256":
        if not isinstance(key, bytes):
            raise CodecError("hmac-sha256 needs a shared secret (bytes)")
        return _hmac.new(key, data, hashlib.sha256).digest()
    if alg == "rsa-pss-sha512" and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(padding.MGF1(hashes.SHA512()), 64), hashes.SHA512())
    if alg == "rsa-v1_5-sha256" and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg in ("ecdsa-p256-sha256", "ecdsa-p384-sha384") and isinstance(key, ec.EllipticCurvePrivateKey):
        h, size = (hashes.SHA256(), 32) if alg == "ecdsa-p256-sha256" else (hashes.SHA384(), 48)
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(h)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise CodecError(f"algorithm {alg} cannot sign with a {type(key).__name__}")


def verify_bytes(alg: str, key: Key, data: bytes, sig: bytes) -> bool:
    try:
        if alg == "hmac-sha256":
            if not isinstance(key, bytes):
                raise CodecError("hmac-sha256 needs a shared secret (bytes)")
            return _hmac.compare_digest(_hmac.new(key, data, hashlib.sha256).digest(), sig)
        pub = key.public_key() if hasattr(key, "public_key") else key
        if alg == "rsa-pss-sha512" and isinstance(pub, rsa.RSAPublicKey):
            # RFC 9421 fixes salt 64; HyperBEAM verifies any salt, so do the same.
            pub.verify(sig, data, padding.PSS(padding.MGF1(hashes.SHA512()), padding.PSS.AUTO), hashes.SHA512())
            return True
        if alg == "rsa-v1_5-sha256" and isinstance(pub, rsa.RSAPublicKey):
            pub.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
            return True
        if alg in ("ecdsa-p256-sha256", "ecdsa-p384-sha384") and isinstance(pub, ec.EllipticCurvePublicKey):
            h, size = (hashes.SHA256(), 32) if alg == "ecdsa-p256-sha256" else (hashes.SHA384(), 48)
            if len(sig) != 2 * size:
                return False
            der = utils.encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            pub.verify(der, data, ec.ECDSA(h))
            return True
        if alg == "ed25519" and isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, data)
            return True
    except InvalidSignature:
        return False
    raise CodecError(f"algorithm {alg} cannot verify with a {type(key).__name__}")


# -- sign / verify --------------------------------------------------------------------------------
@dataclass
class SignatureHeaders:
    label: str
    signature_input: str  # the member value for Signature-Input (without the label)
    signature: bytes
    base: bytes

    def apply(self, msg: HTTPMessage) -> None:
        """Add (or extend) the Signature-Input and Signature headers of `msg`."""
        for hname, member in (("Signature-Input", f"{self.label}={self.signature_input}"),
                              ("Signature", f"{self.label}=:{base64.b64encode(self.signature).decode()}:")):
            old = msg.header(hname)
            msg.set_header(hname, f"{old}, {member}" if old else member)


def _parse_components(names: Iterable[str | Component]) -> list[Component]:
    out = []
    for n in names:
        if isinstance(n, Component):
            out.append(n)
        elif n.startswith('"'):
            out.append(_component(sf.parse_item(n, "component")))
        else:
            out.append(Component(n, []))
    return out


def sign_message(
    msg: HTTPMessage,
    *,
    label: str,
    components: Iterable[str | Component],
    key: Key,
    alg: str,
    keyid: str | None = None,
    created: int | None = None,
    expires: int | None = None,
    nonce: str | None = None,
    tag: str | None = None,
    include_alg: bool = False,
    apply: bool = True,
) -> SignatureHeaders:
    """Sign `msg` (RFC 9421 §3.1). Parameters are emitted in the order created, expires, keyid, alg,
    nonce, tag (as the RFC's examples do); `created` defaults to now, pass -1 to omit it."""
    if alg not in ALGORITHMS:
        raise CodecError(f"unknown algorithm {alg}")
    comps = _parse_components(components)
    params: list[tuple[str, object]] = []
    if created != -1:
        params.append(("created", int(time.time()) if created is None else created))
    if expires is not None:
        params.append(("expires", expires))
    if keyid is not None:
        params.append(("keyid", keyid))
    if include_alg:
        params.append(("alg", alg))
    if nonce is not None:
        params.append(("nonce", nonce))
    if tag is not None:
        params.append(("tag", tag))
    line = params_line(comps, params)
    base = signature_base(msg, comps, line)
    out = SignatureHeaders(label, line, sign_bytes(alg, key, base), base)
    if apply:
        out.apply(msg)
    return out


@dataclass
class Verified:
    label: str
    valid: bool
    alg: str
    keyid: str | None
    components: list[str]
    params: dict
    base: bytes


def parse_signature_headers(msg: HTTPMessage) -> list[tuple[str, list[Component], list[tuple[str, object]], bytes]]:
    """(label, components, params, signature) for every signature; CodecError on malformed headers,
    labels present in only one header, duplicate components, or too many signatures."""
    si = msg.header("signature-input")
    sg = msg.header("signature")
    if si is None or sg is None:
        raise CodecError("message has no Signature-Input/Signature headers")
    members = sf.signature_members(si, sg, _identified_component, max_members=MAX_SIGNATURES,
                                   too_many="too many signatures", max_components=MAX_COMPONENTS)
    return [(label, comps, list(inner.params.items()), sig) for label, inner, comps, _, sig in members]


KeyResolver = Callable[[str | None, str | None], tuple[str, Key]]


def verify_message(
    msg: HTTPMessage,
    resolve: KeyResolver,
    *,
    label: str | None = None,
    required: Iterable[str] = (),
    now: int | None = None,
    max_age: int | None = None,
) -> list[Verified]:
    """Verify the signatures of `msg` (or only `label`). `resolve(keyid, alg)` returns (alg, key).
    Returns one result per signature checked; structural problems raise CodecError."""
    results = []
    need = list(required)
    for lab, comps, params, sig in parse_signature_headers(msg):
        if label is not None and lab != label:
            continue
        pd = dict(params)
        keyid, alg_param = pd.get("keyid"), pd.get("alg")
        alg, key = resolve(keyid if isinstance(keyid, str) else None, alg_param if isinstance(alg_param, str) else None)
        if isinstance(alg_param, str) and alg_param != alg:
            raise CodecError(f"signature {lab}: alg {alg_param} does not match the key's {alg}")
        names = [c.name if not c.params else c.identifier for c in comps]
        base = signature_base(msg, comps, params_line(comps, params))  # params in received order
        ok = verify_bytes(alg, key, base, sig)
        t = int(time.time()) if now is None else now
        if ok and isinstance(pd.get("expires"), int) and t > pd["expires"]:
            ok = False
        if ok and max_age is not None and isinstance(pd.get("created"), int) and t - pd["created"] > max_age:
            ok = False
        if ok and any(r not in names for r in need):
            ok = False
        results.append(Verified(lab, ok, alg, keyid if isinstance(keyid, str) else None, names, pd, base))
    if label is not None and not results:
        raise CodecError(f"no signature labelled {label}")
    return results
