"""Certificate loading and the AMD VCEK/VLEK extension parser.

AMD VCEK/VLEK certificates have serial number 0, which `cryptography` accepts with a deprecation warning (a future
release may refuse). The warning is silenced locally so it does not leak into callers' logs.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from . import der
from .errors import ParseError

AMD_OID = "1.3.6.1.4.1.3704.1."
MAX_CERTS_IN_CHAIN = 8


def _strict_outer(data: bytes) -> None:
    """Certificate ::= SEQUENCE {tbs, signatureAlgorithm, BIT STRING with 0 unused bits}; nothing after it.

    cryptography ignores the unused-bits octet of the signature, which would let a certificate be altered outside
    its signed part without detection.
    """
    tag, content = der.read_single(data)
    items = der.read_sequence(content) if tag == der.SEQUENCE else []
    if len(items) != 3 or items[0][0] != der.SEQUENCE or items[1][0] != der.SEQUENCE or items[2][0] != 0x03:
        raise ParseError("certificate is not SEQUENCE {tbsCertificate, signatureAlgorithm, signature}")
    if not items[2][1] or items[2][1][0] != 0:
        raise ParseError("certificate signature BIT STRING has unused bits")


def _touch(cert: x509.Certificate) -> x509.Certificate:
    """cryptography parses fields lazily; force every field the verifiers use so errors surface at load time."""
    _strict_outer(cert.public_bytes(serialization.Encoding.DER))
    _ = (
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        list(cert.extensions),
        cert.public_key(),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        cert.signature_algorithm_oid,
        cert.signature_hash_algorithm,
        cert.signature_algorithm_parameters,
        cert.version,
    )
    return cert


_PARSED: OrderedDict[bytes, x509.Certificate] = OrderedDict()  # DER -> parsed certificate (immutable, shared)
_DIGEST: dict[int, tuple[x509.Certificate, bytes]] = {}  # id(cert) -> (cert, sha256(DER)), for cached certs
_CACHE_MAX = 256


def load_der(data: bytes) -> x509.Certificate:
    data = bytes(data)
    cert = _PARSED.get(data)
    if cert is not None:
        _PARSED.move_to_end(data)
        return cert
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cert = _touch(x509.load_der_x509_certificate(data))
    except Exception as exc:  # noqa: BLE001 - cryptography raises ValueError, InvalidVersion, KeyError, ...
        raise ParseError(f"not a valid DER X.509 certificate: {type(exc).__name__}: {exc}") from None
    _PARSED[data] = cert
    _DIGEST[id(cert)] = (cert, hashlib.sha256(data).digest())
    if len(_PARSED) > _CACHE_MAX:
        _, old = _PARSED.popitem(last=False)
        _DIGEST.pop(id(old), None)
    return cert


def clear_cache() -> None:
    _PARSED.clear()
    _DIGEST.clear()


def der_digest(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER (memoised for certificates loaded through load_der)."""
    hit = _DIGEST.get(id(cert))
    if hit is not None and hit[0] is cert:
        return hit[1]
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def _strict_pem(data: bytes) -> list[bytes]:
    """DER blocks of a PEM certificate list, strictly: only \n / \r\n line breaks and blank lines between blocks,
    canonical base64 (no stray characters, zero padding bits). Lenient PEM readers accept edits that leave the
    decoded DER unchanged, which would let bytes of a certificate change without detection."""
    blocks: list[bytes] = []
    current: list[bytes] | None = None
    lines = data.split(b"\n")
    for i, raw_line in enumerate(lines):
        # a CR is a line break only as part of CRLF
        line = raw_line[:-1] if raw_line.endswith(b"\r") and i < len(lines) - 1 else raw_line
        if current is None:
            if line == b"-----BEGIN CERTIFICATE-----":
                current = []
            elif line:
                raise ParseError("PEM: unexpected text outside a CERTIFICATE block")
        elif line == b"-----END CERTIFICATE-----":
            b64 = b"".join(current)
            try:
                der_ = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise ParseError("PEM: invalid base64") from None
            if base64.b64encode(der_) != b64:
                raise ParseError("PEM: non-canonical base64")
            blocks.append(der_)
            current = None
            if len(blocks) > MAX_CERTS_IN_CHAIN:
                raise ParseError(f"too many certificates (> {MAX_CERTS_IN_CHAIN})")
        else:
            current.append(line)
    if current is not None:
        raise ParseError("PEM: missing END CERTIFICATE line")
    return blocks


def _der_extent(data: bytes) -> int | None:
    """Length of the DER SEQUENCE at the start of `data` (tag, length and content), or None if malformed."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if n == 0 or n > 4 or len(data) < 2 + n:
        return None
    return 2 + n + int.from_bytes(data[2 : 2 + n], "big")


def load_any(data: bytes) -> list[x509.Certificate]:
    """Load one DER certificate or one or more PEM certificates. Zero padding after a DER certificate (SNP
    certificate-table entries are padded) is tolerated; the certificate itself is taken by its encoded length,
    never by stripping bytes, because a signature can end in zero bytes."""
    data = bytes(data)
    if data.rstrip(b"\0").lstrip(b"\r\n").startswith(b"-----BEGIN"):
        blocks = _strict_pem(data.rstrip(b"\0"))
        if not blocks:
            raise ParseError("PEM: no certificate")
        return [load_der(b) for b in blocks]
    if not data.rstrip(b"\0"):
        raise ParseError("empty certificate input")
    end = _der_extent(data)
    if end is not None and end <= len(data) and not data[end:].strip(b"\0"):
        data = data[:end]
    return [load_der(data)]


def serial(cert: x509.Certificate) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cert.serial_number


def spki_sha256(cert: x509.Certificate) -> str:
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def cn(name: x509.Name) -> str:
    for attr in name:
        if attr.oid == NameOID.COMMON_NAME:
            return str(attr.value)
    return ""


def der_bytes(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def check_validity(cert: x509.Certificate, at: dt.datetime) -> str | None:
    """None if `at` is inside the validity window, else a message."""
    if at < cert.not_valid_before_utc:
        return f"{cn(cert.subject)!r} not yet valid at {at.isoformat()} (from {cert.not_valid_before_utc.isoformat()})"
    if at > cert.not_valid_after_utc:
        return f"{cn(cert.subject)!r} expired at {at.isoformat()} (valid until {cert.not_valid_after_utc.isoformat()})"
    return None


def verify_signed_by(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """None if `child` carries a valid signature by `issuer` (RSA-PSS, RSA PKCS#1 or ECDSA), else a message."""
    try:
        if child.issuer != issuer.subject:
            return f"issuer name of {cn(child.subject)!r} is not the subject of {cn(issuer.subject)!r}"
        child.verify_directly_issued_by(issuer)
        return None
    except Exception as exc:  # noqa: BLE001 - cryptography raises several types; any is a failed signature
        return f"signature of {cn(child.subject)!r} by {cn(issuer.subject)!r} invalid ({type(exc).__name__}: {exc})"


def pss_profile_error(cert: x509.Certificate) -> str | None:
    """AMD certificates are signed RSASSA-PSS / SHA-384 / MGF1-SHA-384 / salt 48."""
    params = cert.signature_algorithm_parameters
    if not isinstance(params, padding.PSS):
        return f"{cn(cert.subject)!r} is not signed with RSASSA-PSS"
    if not isinstance(cert.signature_hash_algorithm, hashes.SHA384):
        return f"{cn(cert.subject)!r} PSS hash is not SHA-384"
    mgf = params.mgf
    if not isinstance(mgf, padding.MGF1) or not isinstance(mgf._algorithm, hashes.SHA384):
        return f"{cn(cert.subject)!r} PSS MGF is not MGF1-SHA-384"
    if params._salt_length != 48:
        return f"{cn(cert.subject)!r} PSS salt length {params._salt_length} != 48"
    return None


def key_description(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__


# -- AMD VCEK / VLEK extensions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AmdExtensions:
    struct_version: int | None
    product_name: str | None
    bl: int | None
    tee: int | None
    snp: int | None
    ucode: int | None
    fmc: int | None
    spl_4_7: tuple[int | None, ...]
    hwid: bytes | None
    csp_id: str | None

    def tcb_components(self, turin: bool) -> dict[str, int | None]:
        out = {"bl": self.bl, "tee": self.tee, "snp": self.snp, "ucode": self.ucode}
        if turin:
            out = {"fmc": self.fmc, **out}
        return out

    @property
    def product_family(self) -> str | None:
        if not self.product_name:
            return None
        return self.product_name.removeprefix("SIMULATED-").split("-")[0]


def _int_ext(value: bytes, name: str) -> int:
    tag, content = der.read_single(value)
    if tag != der.INTEGER:
        raise ParseError(f"AMD extension {name}: expected INTEGER")
    v = der.decode_integer(content)
    if v < 0 or v > 0xFF and name != "structVersion":
        raise ParseError(f"AMD extension {name}: value {v} out of range")
    return v


def _ia5_ext(value: bytes, name: str) -> str:
    tag, content = der.read_single(value)
    if tag != der.IA5STRING:
        raise ParseError(f"AMD extension {name}: expected IA5String")
    try:
        return content.decode("ascii")
    except UnicodeDecodeError:
        raise ParseError(f"AMD extension {name}: not ASCII") from None


def parse_amd_extensions(cert: x509.Certificate) -> AmdExtensions:
    """Parse the 1.3.6.1.4.1.3704.1.* extensions. Turin: structVersion 1, fmcSPL (.3.9), 8-byte hwID, no spl4."""
    vals: dict[str, bytes] = {}
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if oid.startswith(AMD_OID):
            if not isinstance(ext.value, x509.UnrecognizedExtension):
                raise ParseError(f"AMD extension {oid} has an unexpected type")
            vals[oid[len(AMD_OID) :]] = ext.value.value
    known = {"1", "2", "4", "5"} | {f"3.{i}" for i in range(1, 10)}
    unknown = sorted(set(vals) - known)
    if unknown:
        raise ParseError("unknown AMD certificate extensions: " + ", ".join(AMD_OID + u for u in unknown))
    hwid = vals.get("4")
    if (
        hwid is not None
        and len(hwid) in (2 + 64, 2 + 8)
        and hwid[0] == der.OCTET_STRING
        and hwid[1] == len(hwid) - 2
    ):
        hwid = hwid[2:]  # some issuers wrap the hwID in an OCTET STRING; accept both
    if hwid is not None and len(hwid) not in (64, 8):
        raise ParseError(f"AMD hwID extension has {len(hwid)} bytes (expected 64, or 8 on Turin)")
    if hwid is not None and "5" in vals:
        raise ParseError("AMD certificate carries both hwID and cspID")

    def opt_int(key: str, name: str) -> int | None:
        return _int_ext(vals[key], name) if key in vals else None

    return AmdExtensions(
        struct_version=opt_int("1", "structVersion"),
        product_name=_ia5_ext(vals["2"], "productName") if "2" in vals else None,
        bl=opt_int("3.1", "blSPL"),
        tee=opt_int("3.2", "teeSPL"),
        snp=opt_int("3.3", "snpSPL"),
        ucode=opt_int("3.8", "ucodeSPL"),
        fmc=opt_int("3.9", "fmcSPL"),
        spl_4_7=tuple(opt_int(f"3.{i}", f"spl_{i}") for i in range(4, 8)),
        hwid=hwid,
        csp_id=_ia5_ext(vals["5"], "cspID") if "5" in vals else None,
    )
