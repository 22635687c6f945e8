"""AMD SEV-SNP ATTESTATION_REPORT (versions 2, 3, 4, 5): parsing, TCB layouts, product detection, cert tables.

Layout and rules: docs/ATTESTATION.md (SEV-SNP report). All fields little-endian; the signed range is [0, 0x2A0).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from .errors import ParseError

REPORT_SIZE = 0x4A0
SIGNED_LEN = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 4, 5)
PRODUCTS = ("Milan", "Genoa", "Turin")

POLICY_BITS = {
    16: "SMT",
    17: "RESERVED_1",
    18: "MIGRATE_MA",
    19: "DEBUG",
    20: "SINGLE_SOCKET",
    21: "CXL_ALLOW",
    22: "MEM_AES_256_XTS",
    23: "RAPL_DIS",
    24: "CIPHERTEXT_HIDING",
    25: "PAGE_SWAP_DISABLE",
}
PLATFORM_INFO_BITS = {
    0: "SMT_EN",
    1: "TSME_EN",
    2: "ECC_EN",
    3: "RAPL_DIS",
    4: "CIPHERTEXT_HIDING_DRAM_EN",
    5: "ALIAS_CHECK_COMPLETE",
    7: "SEV_TIO_EN",
}
SIGNING_KEYS = {0: "VCEK", 1: "VLEK", 7: "NONE"}

# (offset, size) of every reserved-must-be-zero range; v2 also reserves the CPUID bytes.
_MBZ_COMMON = ((0x04C, 4), (0x18B, 21), (0x1EB, 1), (0x1EF, 1), (0x208, 0x98), (0x330, 0x170))


@dataclass(frozen=True)
class TcbVersion:
    raw: int
    turin: bool
    fmc: int | None
    bl: int
    tee: int
    snp: int
    ucode: int

    @classmethod
    def decode(cls, raw: int, *, turin: bool) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        if turin:
            return cls(raw, True, b[0], b[1], b[2], b[3], b[7])
        return cls(raw, False, None, b[0], b[1], b[6], b[7])

    def components(self) -> dict[str, int]:
        out = {"bl": self.bl, "tee": self.tee, "snp": self.snp, "ucode": self.ucode}
        if self.fmc is not None:
            out = {"fmc": self.fmc, **out}
        return out

    def reserved_nonzero(self) -> bool:
        b = self.raw.to_bytes(8, "little")
        used = (0, 1, 2, 3, 7) if self.turin else (0, 1, 6, 7)
        return any(b[i] for i in range(8) if i not in used)

    def __str__(self) -> str:
        parts = " ".join(f"{k}={v}" for k, v in self.components().items())
        return f"0x{self.raw:016x} ({parts})"


@dataclass(frozen=True)
class SnpReport:
    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb_raw: int
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb_raw: int
    current_version: tuple[int, int, int]  # (major, minor, build)
    committed_version: tuple[int, int, int]
    launch_tcb_raw: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes
    signature_s: bytes
    mbz_violations: list[str] = field(default_factory=list)

    # -- derived fields -------------------------------------------------------------------------------------
    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_LEN]

    @property
    def abi_major(self) -> int:
        return (self.policy >> 8) & 0xFF

    @property
    def abi_minor(self) -> int:
        return self.policy & 0xFF

    def policy_flag(self, name: str) -> bool:
        for bit, n in POLICY_BITS.items():
            if n == name:
                return bool(self.policy >> bit & 1)
        raise KeyError(name)

    @property
    def author_key_en(self) -> bool:
        return bool(self.signer_info & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.signer_info >> 1 & 1)

    @property
    def signing_key(self) -> int:
        return (self.signer_info >> 2) & 7

    @property
    def chip_id_masked(self) -> bool:
        return not any(self.chip_id)

    def cpuid_product(self) -> tuple[str, int] | None:
        """(product, stepping) from the CPUID bytes of a v3+ report; None for v2 or an unknown CPU."""
        if self.cpuid_fam_id is None:
            return None
        product = product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id or 0)
        return None if product is None else (product, self.cpuid_step or 0)

    def tcb(self, which: str, product: str) -> TcbVersion:
        raw = {
            "current": self.current_tcb_raw,
            "reported": self.reported_tcb_raw,
            "committed": self.committed_tcb_raw,
            "launch": self.launch_tcb_raw,
        }[which]
        return TcbVersion.decode(raw, turin=product == "Turin")

    def signature_der(self) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        return encode_dss_signature(
            int.from_bytes(self.signature_r, "little"), int.from_bytes(self.signature_s, "little")
        )

    def describe(self, product: str | None = None) -> dict:
        """Decoded fields as JSON-friendly values (used by `aocu evidence show`)."""
        cp = self.cpuid_product()
        prod = product or (cp[0] if cp else None)
        out: dict = {
            "kind": "snp",
            "version": self.version,
            "product": prod,
            "product_source": "cpuid" if cp else ("caller/certificate" if product else "unknown (v2 report)"),
            "guest_svn": self.guest_svn,
            "policy": {
                "raw": f"0x{self.policy:016x}",
                "abi": f"{self.abi_major}.{self.abi_minor}",
                **{
                    n.lower(): bool(self.policy >> b & 1) for b, n in POLICY_BITS.items() if n != "RESERVED_1"
                },
                "unknown_bits": f"0x{self.policy & ~((1 << 26) - 1):x}",
            },
            "family_id": self.family_id.hex(),
            "image_id": self.image_id.hex(),
            "vmpl": self.vmpl,
            "signature_algo": self.signature_algo,
            "platform_info": {
                "raw": f"0x{self.platform_info:x}",
                **{n.lower(): bool(self.platform_info >> b & 1) for b, n in PLATFORM_INFO_BITS.items()},
                "unknown_bits": f"0x{self.platform_info & ~sum(1 << b for b in PLATFORM_INFO_BITS):x}",
            },
            "signer_info": {
                "author_key_en": self.author_key_en,
                "mask_chip_key": self.mask_chip_key,
                "signing_key": SIGNING_KEYS.get(self.signing_key, f"reserved({self.signing_key})"),
            },
            "report_data": self.report_data.hex(),
            "measurement": self.measurement.hex(),
            "host_data": self.host_data.hex(),
            "id_key_digest": self.id_key_digest.hex(),
            "author_key_digest": self.author_key_digest.hex(),
            "report_id": self.report_id.hex(),
            "report_id_ma": self.report_id_ma.hex(),
            "chip_id": self.chip_id.hex(),
            "cpuid": None
            if self.cpuid_fam_id is None
            else {
                "family": f"0x{self.cpuid_fam_id:02x}",
                "model": f"0x{self.cpuid_mod_id:02x}",
                "stepping": self.cpuid_step,
            },
            "current_firmware": fw(self.current_version),
            "committed_firmware": fw(self.committed_version),
            "mbz_violations": self.mbz_violations,
        }
        for which in ("current", "reported", "committed", "launch"):
            raw = getattr(self, f"{which}_tcb_raw")
            if prod in PRODUCTS:
                out[f"{which}_tcb"] = {"raw": f"0x{raw:016x}", **self.tcb(which, prod).components()}
            else:
                out[f"{which}_tcb"] = {"raw": f"0x{raw:016x}", "layout": "unknown product"}
        if self.version >= 5:
            out["launch_mit_vector"] = f"0x{self.launch_mit_vector:x}"
            out["current_mit_vector"] = f"0x{self.current_mit_vector:x}"
        return out


def fw(version: tuple[int, int, int]) -> str:
    return ".".join(str(v) for v in version)


def product_from_cpuid(family: int, model: int) -> str | None:
    """Model ranges as virtee `Generation::identify_cpu` (a superset of go-sev-guest's exact matches)."""
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    return None


def product_from_cpuid1_eax(eax: int) -> str | None:
    family = ((eax >> 8) & 0xF) + ((eax >> 20) & 0xFF)
    model = ((eax >> 16) & 0xF) << 4 | ((eax >> 4) & 0xF)
    return product_from_cpuid(family, model)


def parse_report(data: bytes) -> SnpReport:
    """Parse a 1184-byte report (or a firmware MSG_REPORT_RSP holding it at +0x20). Raises ParseError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParseError("SNP report must be bytes")
    data = bytes(data)
    if len(data) == REPORT_SIZE + 0x20 and struct.unpack_from("<II", data, 0) == (0, REPORT_SIZE):
        data = data[0x20:]
    if len(data) != REPORT_SIZE:
        raise ParseError(f"SNP report must be {REPORT_SIZE} bytes, got {len(data)}")
    u32 = lambda off: struct.unpack_from("<I", data, off)[0]  # noqa: E731
    u64 = lambda off: struct.unpack_from("<Q", data, off)[0]  # noqa: E731
    version = u32(0)
    if version not in SUPPORTED_VERSIONS:
        raise ParseError(f"unsupported SNP report version {version} (supported: 2, 3, 4, 5)")
    mbz = []
    ranges = list(_MBZ_COMMON)
    if version == 2:
        ranges.append((0x188, 3))
    if version < 5:
        ranges.append((0x1F8, 16))
    for off, size in ranges:
        if any(data[off : off + size]):
            mbz.append(f"0x{off:03x}+{size}")
    if any(data[0x2A0 + 48 : 0x2A0 + 72]) or any(data[0x2E8 + 48 : 0x2E8 + 72]):
        mbz.append("signature padding")
    cpuid = (None, None, None) if version == 2 else (data[0x188], data[0x189], data[0x18A])
    return SnpReport(
        raw=data,
        version=version,
        guest_svn=u32(0x04),
        policy=u64(0x08),
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=u32(0x30),
        signature_algo=u32(0x34),
        current_tcb_raw=u64(0x38),
        platform_info=u64(0x40),
        signer_info=u32(0x48),
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb_raw=u64(0x180),
        cpuid_fam_id=cpuid[0],
        cpuid_mod_id=cpuid[1],
        cpuid_step=cpuid[2],
        chip_id=data[0x1A0:0x1E0],
        committed_tcb_raw=u64(0x1E0),
        current_version=(data[0x1EA], data[0x1E9], data[0x1E8]),
        committed_version=(data[0x1EE], data[0x1ED], data[0x1EC]),
        launch_tcb_raw=u64(0x1F0),
        launch_mit_vector=u64(0x1F8) if version >= 5 else None,
        current_mit_vector=u64(0x200) if version >= 5 else None,
        signature_r=data[0x2A0:0x2E8],
        signature_s=data[0x2E8:0x330],
        mbz_violations=mbz,
    )


def format_errors(report: SnpReport) -> list[str]:
    """Structural rules of docs/ATTESTATION.md (SEV-SNP report, step 1) (beyond what parse_report already enforces)."""
    errs = []
    if report.signature_algo != 1:
        errs.append(f"SIGNATURE_ALGO {report.signature_algo} (only 1 = ECDSA P-384/SHA-384)")
    if not report.policy >> 17 & 1:
        errs.append("POLICY bit 17 (reserved, must be 1) is clear")
    if report.policy >> 26:
        errs.append(f"POLICY bits 63:26 not zero (0x{report.policy:x})")
    if report.signer_info >> 5:
        errs.append(f"signer info bits 31:5 not zero (0x{report.signer_info:x})")
    if report.signing_key not in SIGNING_KEYS:
        errs.append(f"SIGNING_KEY {report.signing_key} is reserved")
    if report.vmpl > 3:
        errs.append(f"VMPL {report.vmpl} out of range")
    if report.mbz_violations:
        errs.append("reserved (MBZ) bytes not zero at " + ", ".join(report.mbz_violations))
    return errs


# -- SNP public key format (ID / author keys) ------------------------------------------------------------------


def snp_public_key_digest(public_key: object) -> bytes:
    """SHA-384 over the 0x404-byte SNP ECDSA public key format (curve 2 = P-384, Qx/Qy 72-byte LE)."""
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp384r1":
        raise ValueError("SNP ID/author keys are ECDSA P-384")
    nums = public_key.public_numbers()
    blob = struct.pack("<I", 2) + nums.x.to_bytes(72, "little") + nums.y.to_bytes(72, "little")
    return hashlib.sha384(blob.ljust(0x404, b"\0")).digest()


# -- Extended-report certificate table (GHCB) --------------------------------------------------------------------

GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_VLEK = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
GUID_EXTRA_PLATFORM_INFO = uuid.UUID("ecae0c0f-9502-43b1-afa2-0ae2e0d565b6")
CERT_TABLE_NAMES = {
    GUID_VCEK: "vcek",
    GUID_VLEK: "vlek",
    GUID_ASK: "ask",
    GUID_ARK: "ark",
    GUID_EXTRA_PLATFORM_INFO: "extra_platform_info",
}


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """Parse a GHCB certificate table into {name: bytes}; unknown GUIDs are kept under their string form."""
    data = bytes(data)
    entries = []
    pos = 0
    while True:
        if pos + 24 > len(data):
            raise ParseError("certificate table: missing all-zero terminator entry")
        guid_b, off, length = data[pos : pos + 16], *struct.unpack_from("<II", data, pos + 16)
        pos += 24
        if not any(guid_b) and off == 0 and length == 0:
            break
        entries.append((uuid.UUID(bytes=guid_b), off, length))
        if len(entries) > 64:
            raise ParseError("certificate table: too many entries")
    out: dict[str, bytes] = {}
    for guid, off, length in entries:
        if off < pos or off + length > len(data):
            raise ParseError(
                f"certificate table: entry {guid} points outside the table (offset {off}, length {length})"
            )
        name = CERT_TABLE_NAMES.get(guid, str(guid))
        if name in out:
            raise ParseError(f"certificate table: duplicate entry {name}")
        out[name] = data[off : off + length]
    return out


def build_cert_table(certs: dict[str, bytes]) -> bytes:
    by_name = {v: k for k, v in CERT_TABLE_NAMES.items()}
    items = [(by_name[n] if n in by_name else uuid.UUID(n), blob) for n, blob in certs.items()]
    header_len = 24 * (len(items) + 1)
    header = bytearray()
    body = bytearray()
    for guid, blob in items:
        header += guid.bytes + struct.pack("<II", header_len + len(body), len(blob))
        body += blob
    header += bytes(24)
    return bytes(header + body)
