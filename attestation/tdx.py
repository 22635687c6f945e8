"""Intel TDX quote v4/v5 parsing and the PCK certificate SGX extension (docs/ATTESTATION.md, TDX quote)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography import x509

from . import der
from .errors import MAX_INPUT_BYTES, ParseError

TEE_TYPE_TDX = 0x81
AK_TYPE_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
HEADER_SIZE = 48
BODY_V4_SIZE = 584  # TDX 1.0 TD report body
BODY_15_SIZE = 648  # TDX 1.5 body (adds TEE_TCB_SVN_2 and MRSERVICETD)
QE_REPORT_SIZE = 384
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_PCK_CHAIN = 5
TD_ATTR_BITS = {0: "DEBUG", 28: "SEPT_VE_DISABLE", 30: "PKS", 31: "KL", 63: "PERFMON"}
SGX_EXT_OID = "1.2.840.113741.1.13.1"


@dataclass(frozen=True)
class TdBody:
    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn_2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & 1)

    @property
    def td_attributes_int(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def xfam_int(self) -> int:
        return int.from_bytes(self.xfam, "little")


@dataclass(frozen=True)
class QeReport:
    raw: bytes
    cpu_svn: bytes
    misc_select: int
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes


@dataclass(frozen=True)
class TdxQuote:
    raw: bytes
    version: int
    ak_type: int
    tee_type: int
    qe_svn_field: bytes
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int  # 2 = TDX 1.0, 3 = TDX 1.5 (v4 quotes are always 2)
    body: TdBody
    signed_end: int  # the quote signature covers raw[0:signed_end]
    signature: bytes  # r || s, big-endian
    attestation_key: bytes  # x || y
    qe_report: QeReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    trailing: int

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[: self.signed_end]

    def describe(self) -> dict:
        b = self.body
        out = {
            "kind": "tdx",
            "version": self.version,
            "attestation_key_type": self.ak_type,
            "tee_type": f"0x{self.tee_type:x}",
            "qe_vendor_id": self.qe_vendor_id.hex(),
            "body_type": {2: "TDX 1.0", 3: "TDX 1.5"}.get(self.body_type, str(self.body_type)),
            "tee_tcb_svn": b.tee_tcb_svn.hex(),
            "tdx_module": f"{b.tee_tcb_svn[1]}.{b.tee_tcb_svn[0]}",
            "mr_seam": b.mr_seam.hex(),
            "mr_signer_seam": b.mr_signer_seam.hex(),
            "seam_attributes": b.seam_attributes.hex(),
            "td_attributes": {
                "raw": b.td_attributes.hex(),
                **{n.lower(): bool(b.td_attributes_int >> bit & 1) for bit, n in TD_ATTR_BITS.items()},
            },
            "xfam": b.xfam.hex(),
            "mr_td": b.mr_td.hex(),
            "mr_config_id": b.mr_config_id.hex(),
            "mr_owner": b.mr_owner.hex(),
            "mr_owner_config": b.mr_owner_config.hex(),
            **{f"rtmr{i}": r.hex() for i, r in enumerate(b.rtmrs)},
            "report_data": b.report_data.hex(),
            "qe_report": {
                "misc_select": f"0x{self.qe_report.misc_select:08x}",
                "attributes": self.qe_report.attributes.hex(),
                "mr_enclave": self.qe_report.mr_enclave.hex(),
                "mr_signer": self.qe_report.mr_signer.hex(),
                "isv_prod_id": self.qe_report.isv_prod_id,
                "isv_svn": self.qe_report.isv_svn,
            },
            "qe_auth_data_size": len(self.qe_auth_data),
            "trailing_bytes": self.trailing,
        }
        if b.tee_tcb_svn_2 is not None:
            out["tee_tcb_svn_2"] = b.tee_tcb_svn_2.hex()
            out["mr_service_td"] = (b.mr_service_td or b"").hex()
        return out


def _parse_body(data: bytes, off: int, size: int) -> TdBody:
    g = lambda o, n: data[off + o : off + o + n]  # noqa: E731
    return TdBody(
        tee_tcb_svn=g(0, 16),
        mr_seam=g(16, 48),
        mr_signer_seam=g(64, 48),
        seam_attributes=g(112, 8),
        td_attributes=g(120, 8),
        xfam=g(128, 8),
        mr_td=g(136, 48),
        mr_config_id=g(184, 48),
        mr_owner=g(232, 48),
        mr_owner_config=g(280, 48),
        rtmrs=(g(328, 48), g(376, 48), g(424, 48), g(472, 48)),
        report_data=g(520, 64),
        tee_tcb_svn_2=g(584, 16) if size == BODY_15_SIZE else None,
        mr_service_td=g(600, 48) if size == BODY_15_SIZE else None,
    )


def parse_qe_report(raw: bytes) -> QeReport:
    if len(raw) != QE_REPORT_SIZE:
        raise ParseError("QE report must be 384 bytes")
    return QeReport(
        raw=raw,
        cpu_svn=raw[0:16],
        misc_select=struct.unpack_from("<I", raw, 0x10)[0],
        attributes=raw[0x30:0x40],
        mr_enclave=raw[0x40:0x60],
        mr_signer=raw[0x80:0xA0],
        isv_prod_id=struct.unpack_from("<H", raw, 0x100)[0],
        isv_svn=struct.unpack_from("<H", raw, 0x102)[0],
        report_data=raw[0x140:0x180],
    )


def parse_quote(data: bytes) -> TdxQuote:
    """Parse a TDX quote v4 or v5; raises ParseError naming the inconsistent field."""
    data = bytes(data)
    if len(data) > MAX_INPUT_BYTES:
        raise ParseError(f"TDX quote larger than {MAX_INPUT_BYTES} bytes")
    if len(data) < HEADER_SIZE + BODY_V4_SIZE + 4:
        raise ParseError(f"TDX quote too short ({len(data)} bytes)")
    version, ak_type, tee_type = struct.unpack_from("<HHI", data, 0)
    if version not in (4, 5):
        raise ParseError(f"TDX quote format not supported: version {version} (supported: 4, 5)")
    if ak_type != AK_TYPE_ECDSA_P256:
        raise ParseError(f"attestation key type {ak_type} not supported (2 = ECDSA P-256)")
    if tee_type != TEE_TYPE_TDX:
        raise ParseError(f"TEE type 0x{tee_type:x} is not TDX (0x81)")
    if version == 4:
        body_type, body_off, body_size = 2, HEADER_SIZE, BODY_V4_SIZE
    else:
        body_type, body_size = struct.unpack_from("<HI", data, HEADER_SIZE)
        body_off = HEADER_SIZE + 6
        expected = {2: BODY_V4_SIZE, 3: BODY_15_SIZE}.get(body_type)
        if expected is None:
            raise ParseError(f"TDX v5 body type {body_type} not supported (2 = TDX 1.0, 3 = TDX 1.5)")
        if body_size != expected:
            raise ParseError(f"TDX v5 body size {body_size} does not match type {body_type} ({expected})")
    signed_end = body_off + body_size
    if len(data) < signed_end + 4:
        raise ParseError("TDX quote truncated before the signed-data length")
    (sig_len,) = struct.unpack_from("<I", data, signed_end)
    sd_off = signed_end + 4
    if sig_len > len(data) - sd_off:
        raise ParseError(f"signed-data length {sig_len} exceeds the {len(data) - sd_off} bytes present")
    sd = data[sd_off : sd_off + sig_len]
    if len(sd) < 64 + 64 + 6:
        raise ParseError("signed data too short")
    signature, ak = sd[:64], sd[64:128]
    cd_type, cd_size = struct.unpack_from("<HI", sd, 128)
    if cd_type != CERT_TYPE_QE_REPORT:
        raise ParseError(f"certification data type {cd_type} (expected 6, QE report certification data)")
    if cd_size != len(sd) - 134:
        raise ParseError(f"size of certificate data is 0x{len(sd) - 134:x}. Expected size 0x{cd_size:x}")
    cd = sd[134:]
    if len(cd) < QE_REPORT_SIZE + 64 + 2:
        raise ParseError("QE report certification data truncated")
    qe_raw, qe_sig = cd[:QE_REPORT_SIZE], cd[QE_REPORT_SIZE : QE_REPORT_SIZE + 64]
    pos = QE_REPORT_SIZE + 64
    (auth_len,) = struct.unpack_from("<H", cd, pos)
    pos += 2
    if pos + auth_len + 6 > len(cd):
        raise ParseError("QE auth data runs past the certification data")
    auth = cd[pos : pos + auth_len]
    pos += auth_len
    inner_type, inner_size = struct.unpack_from("<HI", cd, pos)
    pos += 6
    if inner_type != CERT_TYPE_PCK_CHAIN:
        raise ParseError(f"inner certification data type {inner_type} (expected 5, PCK certificate chain)")
    if inner_size != len(cd) - pos:
        raise ParseError(f"PCK chain size {inner_size} != {len(cd) - pos} bytes present")
    return TdxQuote(
        raw=data,
        version=version,
        ak_type=ak_type,
        tee_type=tee_type,
        qe_svn_field=data[8:12],
        qe_vendor_id=data[12:28],
        user_data=data[28:48],
        body_type=body_type,
        body=_parse_body(data, body_off, body_size),
        signed_end=signed_end,
        signature=signature,
        attestation_key=ak,
        qe_report=parse_qe_report(qe_raw),
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain_pem=cd[pos : pos + inner_size],
        trailing=len(data) - sd_off - sig_len,
    )


# -- PCK certificate SGX extension -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PckExtensions:
    ppid: bytes
    cpu_svn_components: tuple[int, ...]  # 16 values (.2.1 … .2.16)
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXT_OID)).value
    except x509.ExtensionNotFound:
        raise ParseError("PCK certificate lacks the SGX extension 1.2.840.113741.1.13.1") from None
    raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
    tag, content = der.read_single(raw)
    if tag != der.SEQUENCE:
        raise ParseError("SGX extension: expected SEQUENCE")
    fields: dict[str, tuple[int, bytes]] = {}
    for t, item in der.read_sequence(content):
        if t != der.SEQUENCE:
            raise ParseError("SGX extension: expected SEQUENCE entries")
        parts = der.read_sequence(item)
        if len(parts) != 2 or parts[0][0] != der.OID:
            raise ParseError("SGX extension: malformed entry")
        fields[der.decode_oid(parts[0][1])] = parts[1]
    base = SGX_EXT_OID + "."

    def get(sub: str, tag_: int) -> bytes:
        if base + sub not in fields or fields[base + sub][0] != tag_:
            raise ParseError(f"SGX extension: missing or mistyped {base + sub}")
        return fields[base + sub][1]

    tcb_tag, tcb_content = fields.get(base + "2", (0, b""))
    if tcb_tag != der.SEQUENCE:
        raise ParseError("SGX extension: missing TCB sequence")
    tcb: dict[str, tuple[int, bytes]] = {}
    for t, item in der.read_sequence(tcb_content):
        parts = der.read_sequence(item)
        if t != der.SEQUENCE or len(parts) != 2 or parts[0][0] != der.OID:
            raise ParseError("SGX extension: malformed TCB entry")
        tcb[der.decode_oid(parts[0][1])] = parts[1]
    comps = []
    for i in range(1, 17):
        t, v = tcb.get(f"{base}2.{i}", (0, b""))
        if t != der.INTEGER:
            raise ParseError(f"SGX extension: missing TCB component {i}")
        comps.append(der.decode_integer(v))
    t, v = tcb.get(base + "2.17", (0, b""))
    if t != der.INTEGER:
        raise ParseError("SGX extension: missing PCESVN")
    pcesvn = der.decode_integer(v)
    t, cpusvn = tcb.get(base + "2.18", (0, b""))
    if t != der.OCTET_STRING or len(cpusvn) != 16:
        raise ParseError("SGX extension: missing CPUSVN")
    fmspc = get("4", der.OCTET_STRING)
    pceid = get("3", der.OCTET_STRING)
    if len(fmspc) != 6 or len(pceid) != 2:
        raise ParseError("SGX extension: FMSPC must be 6 bytes and PCEID 2 bytes")
    sgx_type = fields.get(base + "5", (der.ENUMERATED, b"\0"))
    return PckExtensions(
        ppid=get("1", der.OCTET_STRING),
        cpu_svn_components=tuple(comps),
        pce_svn=pcesvn,
        cpu_svn=cpusvn,
        pce_id=pceid,
        fmspc=fmspc,
        sgx_type=der.decode_integer(sgx_type[1]) if sgx_type[1] else 0,
    )


def looks_like_quote(data: bytes) -> bool:
    return (
        len(data) >= 8
        and struct.unpack_from("<HHI", data, 0)[0] in (4, 5)
        and data[2:8] == b"\x02\x00\x81\x00\x00\x00"
    )
