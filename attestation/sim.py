"""Simulated SEV-SNP and TDX evidence for QEMU/CI setups without TEE hardware.

Byte-exact report/quote structures signed by locally generated chains whose every name starts with "SIMULATED-".
No verifier trusts them unless the root is added with TrustStore.with_simulated() and the policy allows simulated
evidence. The builders are parametrised by name prefix so tests can also forge look-alike (unprefixed) chains and
show that the pins reject them.

Simulation support, kept apart from verification: only the `sim` providers (lazily, for `--tee sim`) and the
tests import this module; no verifier does (tests/test_verify_standalone.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from . import der
from .certs import AMD_OID, load_any, load_der
from .snp import REPORT_SIZE, SIGNED_LEN
from .tdx import BODY_V4_SIZE, INTEL_QE_VENDOR_ID, QE_REPORT_SIZE, SGX_EXT_OID
from .trust import SIM_PREFIX

SIM_ORG = "aocu SIMULATED TEE (not AMD or Intel hardware)"
PSS384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
SIM_TCB = {
    "Milan": {"bl": 3, "tee": 0, "snp": 8, "ucode": 115},
    "Genoa": {"bl": 7, "tee": 0, "snp": 14, "ucode": 72},
    "Turin": {"fmc": 1, "bl": 3, "tee": 2, "snp": 5, "ucode": 97},
}
SIM_CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01), "Turin": (0x1A, 0x02, 0x00)}
SIM_FMSPC = bytes.fromhex("00a06f000000")
SIM_QE_MRSIGNER = hashlib.sha256(b"aocu simulated quoting enclave signer").digest()


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    )


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    pub: object,
    key: object,
    *,
    ca: bool,
    days: int,
    now: dt.datetime,
    serial: int | None = None,
    exts: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(pub)  # type: ignore[arg-type]
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for oid, value in exts:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    if isinstance(key, rsa.RSAPrivateKey):
        return b.sign(key, hashes.SHA384(), rsa_padding=PSS384)
    return b.sign(key, hashes.SHA256())  # type: ignore[arg-type]


def _le72(v: int) -> bytes:
    return v.to_bytes(72, "little")


# -- SEV-SNP ----------------------------------------------------------------------------------------------------


@dataclass
class SnpChain:
    product: str
    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey
    vcek: x509.Certificate
    chip_id: bytes

    @property
    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.ask, self.ark))

    @property
    def vcek_der(self) -> bytes:
        return self.vcek.public_bytes(serialization.Encoding.DER)


def make_snp_chain(
    product: str = "Milan",
    *,
    prefix: str = SIM_PREFIX,
    org: str = SIM_ORG,
    rsa_bits: int = 2048,
    now: dt.datetime | None = None,
    chip_id: bytes | None = None,
    tcb: dict[str, int] | None = None,
) -> SnpChain:
    """root (ARK) -> intermediate (ASK) -> P-384 VCEK with the KDS extensions (Turin: structVersion 1, fmcSPL,
    8-byte hwID)."""
    now = now or dt.datetime.now(dt.UTC)
    turin = product == "Turin"
    if chip_id is None:
        chip_id = os.urandom(8) + bytes(56) if turin else os.urandom(64)
    tcb = tcb or SIM_TCB[product]
    ark_key = rsa.generate_private_key(65537, rsa_bits)
    ask_key = rsa.generate_private_key(65537, rsa_bits)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark_n, ask_n = _name(f"{prefix}ARK-{product}", org), _name(f"{prefix}SEV-{product}", org)
    ark = _cert(ark_n, ark_n, ark_key.public_key(), ark_key, ca=True, days=25 * 365, now=now)
    ask = _cert(ask_n, ark_n, ask_key.public_key(), ark_key, ca=True, days=25 * 365, now=now)
    exts = [
        (AMD_OID + "1", der.encode_integer(1 if turin else 0)),
        (AMD_OID + "2", der.encode(der.IA5STRING, f"{prefix}{product}{'' if turin else '-B0'}".encode())),
        (AMD_OID + "3.1", der.encode_integer(tcb["bl"])),
        (AMD_OID + "3.2", der.encode_integer(tcb["tee"])),
        (AMD_OID + "3.3", der.encode_integer(tcb["snp"])),
        (AMD_OID + "3.8", der.encode_integer(tcb["ucode"])),
    ]
    if turin:
        exts.append((AMD_OID + "3.9", der.encode_integer(tcb["fmc"])))
        exts.append((AMD_OID + "4", chip_id[:8]))
    else:
        exts += [(AMD_OID + f"3.{i}", der.encode_integer(0)) for i in range(4, 8)]
        exts.append((AMD_OID + "4", chip_id))
    vcek = _cert(
        _name(f"{prefix}SEV-VCEK", org),
        ask_n,
        vcek_key.public_key(),
        ask_key,
        ca=False,
        days=7 * 365,
        now=now,
        exts=exts,
    )
    return SnpChain(product, ark_key, ark, ask_key, ask, vcek_key, vcek, chip_id)


def tcb_u64(product: str, tcb: dict[str, int]) -> int:
    b = bytearray(8)
    if product == "Turin":
        b[0], b[1], b[2], b[3], b[7] = tcb["fmc"], tcb["bl"], tcb["tee"], tcb["snp"], tcb["ucode"]
    else:
        b[0], b[1], b[6], b[7] = tcb["bl"], tcb["tee"], tcb["snp"], tcb["ucode"]
    return int.from_bytes(b, "little")


def build_snp_report(
    chain: SnpChain,
    report_data: bytes,
    *,
    measurement: bytes | None = None,
    host_data: bytes = bytes(32),
    vmpl: int = 0,
    debug: bool = False,
    policy: int | None = None,
    version: int | None = None,
    guest_svn: int = 0,
    current_tcb: dict[str, int] | None = None,
    id_key_digest: bytes = bytes(48),
) -> bytes:
    """A byte-exact ATTESTATION_REPORT signed with the chain's VCEK (ECDSA P-384, R/S little-endian)."""
    if len(report_data) != 64:
        raise ValueError("REPORT_DATA must be 64 bytes")
    product = chain.product
    version = version or (5 if product == "Turin" else 3)
    measurement = (
        measurement if measurement is not None else hashlib.sha384(b"aocu simulated launch").digest()
    )
    if len(measurement) != 48 or len(host_data) != 32:
        raise ValueError("measurement must be 48 bytes and host_data 32 bytes")
    pol = policy if policy is not None else (0x30000 | (1 << 19 if debug else 0))
    tcb = SIM_TCB[product] if product in SIM_TCB else None
    reported = tcb_u64(product, tcb or {})
    current = tcb_u64(product, current_tcb) if current_tcb else reported
    r = bytearray(REPORT_SIZE)
    struct.pack_into("<IIQ", r, 0, version, guest_svn, pol)
    struct.pack_into("<II", r, 0x30, vmpl, 1)
    struct.pack_into("<QQI", r, 0x38, current, 0x1, 0)  # platform_info SMT_EN; signer info: VCEK
    r[0x50:0x90] = report_data
    r[0x90:0xC0] = measurement
    r[0xC0:0xE0] = host_data
    r[0xE0:0x110] = id_key_digest
    r[0x140:0x160] = hashlib.sha256(report_data + b"report-id").digest()
    r[0x160:0x180] = b"\xff" * 32
    struct.pack_into("<Q", r, 0x180, reported)
    if version >= 3:
        r[0x188:0x18B] = bytes(SIM_CPUID[product])
    r[0x1A0:0x1E0] = chain.chip_id
    struct.pack_into("<Q", r, 0x1E0, current)
    r[0x1E8:0x1EB] = bytes([0, 55, 1])  # firmware 1.55.0 (build, minor, major)
    r[0x1EC:0x1EF] = bytes([0, 55, 1])
    struct.pack_into("<Q", r, 0x1F0, reported)
    return sign_snp_report(bytes(r), chain.vcek_key)


def sign_snp_report(report: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    sig = key.sign(report[:SIGNED_LEN], ec.ECDSA(hashes.SHA384()))
    rr, ss = decode_dss_signature(sig)
    return report[:SIGNED_LEN] + _le72(rr) + _le72(ss) + bytes(REPORT_SIZE - SIGNED_LEN - 144)


def snp_derived_key_response(chain: SnpChain, req: bytes, *, measurement: bytes | None = None,
                             policy: int | None = None, vmpl: int = 0, guest_svn: int = 0) -> bytes:
    """Simulated firmware answer to a 32-byte MSG_KEY_REQ (layout: attestation.sealing): a 64-byte MSG_KEY_RSP
    whose key is HMAC-SHA256(secret of the simulated chip's VCEK, VMPL + the selected launch fields);
    STATUS 0x16 (INVALID_PARAM) where real firmware refuses (VMRK, reserved bits, VMPL/SVN/TCB too high)."""
    root, rsvd, sel, rvmpl, svn, tcb = struct.unpack("<IIQIIQ", req)
    committed = tcb_u64(chain.product, SIM_TCB[chain.product]).to_bytes(8, "little")
    if root or rsvd or sel >> 6 or not vmpl <= rvmpl <= 3 or svn > guest_svn or any(
            a > b for a, b in zip(tcb.to_bytes(8, "little"), committed, strict=True)):
        return struct.pack("<I", 0x16) + bytes(60)
    m = measurement if measurement is not None else hashlib.sha384(b"aocu simulated launch").digest()
    fields = [struct.pack("<QI", sel, rvmpl), struct.pack("<Q", 0x30000 if policy is None else policy),
              bytes(16), bytes(16), m, struct.pack("<I", svn), struct.pack("<Q", tcb)]  # policy, image, family..
    msg = b"".join(f for i, f in enumerate(fields) if i == 0 or sel >> (i - 1) & 1)
    secret = hashlib.sha256(b"aocu sim VCEK root" + _key_pem(chain.vcek_key)).digest()
    return bytes(32) + hmac.new(secret, msg, hashlib.sha256).digest()


# -- TDX --------------------------------------------------------------------------------------------------------


@dataclass
class TdxChain:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck: x509.Certificate
    tcb_signing_key: ec.EllipticCurvePrivateKey
    tcb_signing: x509.Certificate
    ak_key: ec.EllipticCurvePrivateKey

    @property
    def pck_chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.pck, self.ca, self.root))

    @property
    def tcb_signing_chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.tcb_signing, self.root))


def _sgx_extension(cpusvn: bytes, pcesvn: int, fmspc: bytes, pceid: bytes) -> bytes:
    base = SGX_EXT_OID + "."

    def entry(sub: str, value: bytes) -> bytes:
        return der.encode_sequence(der.encode_oid(base + sub), value)

    tcb = [entry(f"2.{i + 1}", der.encode_integer(cpusvn[i])) for i in range(16)]
    tcb.append(entry("2.17", der.encode_integer(pcesvn)))
    tcb.append(entry("2.18", der.encode(der.OCTET_STRING, cpusvn)))
    return der.encode_sequence(
        entry("1", der.encode(der.OCTET_STRING, hashlib.sha256(b"ppid").digest()[:16])),
        der.encode_sequence(der.encode_oid(base + "2"), der.encode_sequence(*tcb)),
        entry("3", der.encode(der.OCTET_STRING, pceid)),
        entry("4", der.encode(der.OCTET_STRING, fmspc)),
        entry("5", der.encode(der.ENUMERATED, b"\x00")),
    )


SIM_CPUSVN = bytes([4, 4, 2, 2, 3, 1, 0, 5] + [0] * 8)
SIM_PCESVN = 13


def make_tdx_chain(
    *, prefix: str = SIM_PREFIX, org: str = SIM_ORG, now: dt.datetime | None = None, fmspc: bytes = SIM_FMSPC
) -> TdxChain:
    """root -> PCK Platform CA -> PCK (SGX extension) plus a TCB-signing cert, and the quoting (attestation) key."""
    now = now or dt.datetime.now(dt.UTC)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
    root_key, ca_key, pck_key, tcb_key, ak_key = keys
    root_n = _name(f"{prefix}Intel SGX Root CA", org)
    ca_n = _name(f"{prefix}Intel SGX PCK Platform CA", org)
    root = _cert(root_n, root_n, root_key.public_key(), root_key, ca=True, days=25 * 365, now=now)
    ca = _cert(ca_n, root_n, ca_key.public_key(), root_key, ca=True, days=15 * 365, now=now)
    pck = _cert(
        _name(f"{prefix}Intel SGX PCK Certificate", org),
        ca_n,
        pck_key.public_key(),
        ca_key,
        ca=False,
        days=7 * 365,
        now=now,
        exts=[(SGX_EXT_OID, _sgx_extension(SIM_CPUSVN, SIM_PCESVN, fmspc, b"\0\0"))],
    )
    tcb = _cert(
        _name(f"{prefix}Intel SGX TCB Signing", org),
        root_n,
        tcb_key.public_key(),
        root_key,
        ca=False,
        days=7 * 365,
        now=now,
    )
    return TdxChain(root_key, root, ca_key, ca, pck_key, pck, tcb_key, tcb, ak_key)


def _rs(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def build_tdx_quote(
    chain: TdxChain,
    report_data: bytes,
    *,
    mrtd: bytes | None = None,
    rtmrs: tuple[bytes, bytes, bytes, bytes] | None = None,
    debug: bool = False,
    tee_tcb_svn: bytes | None = None,
    mr_config_id: bytes = bytes(48),
    qe_isv_svn: int = 8,
    bind_ak: bool = True,
    version: int = 4,
    body_type: int = 2,
    tee_tcb_svn_2: bytes = bytes(16),
) -> bytes:
    """A TDX quote v4: header, TD report body, ECDSA signature by the attestation key, QE report signed by the
    PCK key with REPORTDATA = SHA-256(AK || auth data) || 0^32, and the PEM PCK chain."""
    if len(report_data) != 64:
        raise ValueError("REPORTDATA must be 64 bytes")
    mrtd = mrtd if mrtd is not None else hashlib.sha384(b"aocu simulated TD").digest()
    rtmrs = rtmrs or (bytes(48),) * 4  # type: ignore[assignment]
    tee_tcb_svn = tee_tcb_svn or bytes([3, 0, 5] + [0] * 13)
    if version not in (4, 5) or body_type not in (2, 3) or (version == 4 and body_type != 2):
        raise ValueError("quote version 4 (TDX 1.0 body) or 5 (body type 2 or 3)")
    header = struct.pack("<HHI", version, 2, 0x81) + bytes(4) + INTEL_QE_VENDOR_ID + bytes(20)
    body = bytearray(BODY_V4_SIZE + (64 if body_type == 3 else 0))
    body[0:16] = tee_tcb_svn
    body[16:64] = hashlib.sha384(b"aocu simulated TDX module").digest()
    body[120:128] = ((1 << 28) | (1 if debug else 0)).to_bytes(8, "little")
    body[128:136] = (0xE7 | 0x1A << 8 | 0x06 << 16).to_bytes(8, "little")
    body[136:184] = mrtd
    body[184:232] = mr_config_id
    for i, r in enumerate(rtmrs):  # type: ignore[arg-type]
        body[328 + 48 * i : 376 + 48 * i] = r
    body[520:584] = report_data
    if body_type == 3:
        body[584:600] = tee_tcb_svn_2
        body[600:648] = hashlib.sha384(b"aocu simulated service TD").digest()
    signed = header + (struct.pack("<HI", body_type, len(body)) if version == 5 else b"") + bytes(body)
    ak_pub = chain.ak_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )[1:]
    auth = hashlib.sha256(b"aocu simulated QE auth data").digest()
    qe = bytearray(QE_REPORT_SIZE)
    qe[0:16] = SIM_CPUSVN
    qe[0x30:0x40] = bytes.fromhex("11000000000000000000000000000000")
    qe[0x40:0x60] = hashlib.sha256(b"aocu simulated QE").digest()
    qe[0x80:0xA0] = SIM_QE_MRSIGNER
    struct.pack_into("<HH", qe, 0x100, 2, qe_isv_svn)
    binding = hashlib.sha256(ak_pub + auth).digest() if bind_ak else os.urandom(32)
    qe[0x140:0x180] = binding + bytes(32)
    pem = chain.pck_chain_pem + b"\0"
    inner = struct.pack("<HI", 5, len(pem)) + pem
    cert_data = bytes(qe) + _rs(chain.pck_key, bytes(qe)) + struct.pack("<H", len(auth)) + auth + inner
    sd = _rs(chain.ak_key, signed) + ak_pub + struct.pack("<HI", 6, len(cert_data)) + cert_data
    return signed + struct.pack("<I", len(sd)) + sd


def _tcb_level(sgx: bytes, pcesvn: int, tdx: bytes, status: str, date: str) -> dict:
    return {
        "tcb": {
            "sgxtcbcomponents": [{"svn": v} for v in sgx],
            "pcesvn": pcesvn,
            "tdxtcbcomponents": [{"svn": v} for v in tdx],
        },
        "tcbDate": date,
        "tcbStatus": status,
    }


def build_tdx_collateral(
    chain: TdxChain,
    *,
    now: dt.datetime | None = None,
    platform_status: str = "UpToDate",
    module_levels: list[tuple[int, str]] | None = None,
    module_major: int = 1,
    qe_status: str = "UpToDate",
    fmspc: bytes = SIM_FMSPC,
    days: int = 30,
) -> dict[str, bytes]:
    """tcbInfo (v3, id TDX) and QE identity (v2, TD_QE) documents signed by the chain's TCB-signing key."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    ts = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    issue, nxt = ts(now - dt.timedelta(hours=1)), ts(now + dt.timedelta(days=days))
    tdx_req = bytes([3, 0, 5] + [0] * 13)
    tcb_info: dict = {
        "id": "TDX",
        "version": 3,
        "issueDate": issue,
        "nextUpdate": nxt,
        "fmspc": fmspc.hex(),
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": {
            "mrsigner": "00" * 48,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tcbLevels": [
            _tcb_level(SIM_CPUSVN, SIM_PCESVN, tdx_req, platform_status, "2024-11-13T00:00:00Z"),
            _tcb_level(bytes(16), 0, bytes(16), "OutOfDate", "2018-01-04T00:00:00Z"),
        ],
    }
    if module_levels is not None:
        tcb_info["tdxModuleIdentities"] = [
            {
                "id": f"TDX_{module_major:02X}",
                "mrsigner": "00" * 48,
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
                "tcbLevels": [
                    {"tcb": {"isvsvn": s}, "tcbDate": "2024-11-13T00:00:00Z", "tcbStatus": st}
                    for s, st in module_levels
                ],
            }
        ]
    qe_identity = {
        "id": "TD_QE",
        "version": 2,
        "issueDate": issue,
        "nextUpdate": nxt,
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": SIM_QE_MRSIGNER.hex().upper(),
        "isvprodid": 2,
        "tcbLevels": [{"tcb": {"isvsvn": 8}, "tcbDate": "2024-11-13T00:00:00Z", "tcbStatus": qe_status}],
    }

    def signed(member: str, value: dict) -> bytes:
        inner = json.dumps(value, separators=(",", ":")).encode()
        return (
            b'{"'
            + member.encode()
            + b'":'
            + inner
            + b',"signature":"'
            + _rs(chain.tcb_signing_key, inner).hex().encode()
            + b'"}'
        )

    return {
        "tcb_info": signed("tcbInfo", tcb_info),
        "tcb_info_issuer_chain": chain.tcb_signing_chain_pem,
        "qe_identity": signed("enclaveIdentity", qe_identity),
        "qe_identity_issuer_chain": chain.tcb_signing_chain_pem,
    }


# -- persistence ------------------------------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _key_pem(key: object) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> object:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


class SimulatedTee:
    """Per-data-dir simulated TEE state in DATA_DIR/sim-tee/ (keys 0600). `roots_path` is the file to trust."""

    def __init__(self, data_dir: str | Path, *, product: str = "Milan") -> None:
        if product not in SIM_TCB:
            raise ValueError(f"simulated SNP product must be one of {sorted(SIM_TCB)}")
        self.dir = Path(data_dir) / "sim-tee"
        self.product = product
        self._snp: SnpChain | None = None
        self._tdx: TdxChain | None = None

    @property
    def roots_path(self) -> Path:
        return self.dir / "roots.pem"

    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def _add_root(self, cert: x509.Certificate) -> None:
        existing = load_any(self.roots_path.read_bytes()) if self.roots_path.exists() else []
        if any(c == cert for c in existing):
            return
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [*existing, cert])
        _write_private(self.roots_path, pem)  # 0600 like everything in the data dir (public, but no exception)

    def snp_chain(self) -> SnpChain:
        if self._snp is not None:
            return self._snp
        d = self.dir / f"snp-{self.product.lower()}"
        files = ["ark.key", "ask.key", "vcek.key", "ark.der", "ask.der", "vcek.der", "chip_id"]
        if all((d / f).exists() for f in files):
            self._snp = SnpChain(
                self.product,
                _load_key(d / "ark.key"),  # type: ignore[arg-type]
                load_der((d / "ark.der").read_bytes()),
                _load_key(d / "ask.key"),  # type: ignore[arg-type]
                load_der((d / "ask.der").read_bytes()),
                _load_key(d / "vcek.key"),  # type: ignore[arg-type]
                load_der((d / "vcek.der").read_bytes()),
                (d / "chip_id").read_bytes(),
            )
            return self._snp
        self._ensure_dir()
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)
        c = make_snp_chain(self.product)
        for name, key in (("ark", c.ark_key), ("ask", c.ask_key), ("vcek", c.vcek_key)):
            _write_private(d / f"{name}.key", _key_pem(key))
        for name, cert in (("ark", c.ark), ("ask", c.ask), ("vcek", c.vcek)):
            _write_private(d / f"{name}.der", cert.public_bytes(serialization.Encoding.DER))
        _write_private(d / "chip_id", c.chip_id)
        self._add_root(c.ark)
        self._snp = c
        return c

    def tdx_chain(self) -> TdxChain:
        if self._tdx is not None:
            return self._tdx
        d = self.dir / "tdx"
        names = ("root", "ca", "pck", "tcb_signing")
        if (
            all((d / f"{n}.key").exists() and (d / f"{n}.der").exists() for n in names)
            and (d / "ak.key").exists()
        ):
            k = {n: _load_key(d / f"{n}.key") for n in (*names, "ak")}
            c = {n: load_der((d / f"{n}.der").read_bytes()) for n in names}
            self._tdx = TdxChain(
                k["root"],
                c["root"],
                k["ca"],
                c["ca"],
                k["pck"],
                c["pck"],
                k["tcb_signing"],  # type: ignore[arg-type]
                c["tcb_signing"],
                k["ak"],
            )  # type: ignore[arg-type]
            return self._tdx
        self._ensure_dir()
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o700)
        t = make_tdx_chain()
        for n, key, cert in (
            ("root", t.root_key, t.root),
            ("ca", t.ca_key, t.ca),
            ("pck", t.pck_key, t.pck),
            ("tcb_signing", t.tcb_signing_key, t.tcb_signing),
        ):
            _write_private(d / f"{n}.key", _key_pem(key))
            _write_private(d / f"{n}.der", cert.public_bytes(serialization.Encoding.DER))
        _write_private(d / "ak.key", _key_pem(t.ak_key))
        self._add_root(t.root)
        self._tdx = t
        return t
