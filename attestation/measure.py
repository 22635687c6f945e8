"""Expected launch measurements -> reference values (the policy file of docs/POLICY.md).

SEV-SNP: computed with sev-snp-measure's API, so the value equals what its own CLI prints for the same inputs
(OVMF, kernel/initrd/cmdline for measured direct boot, vCPU count and type, guest features, VMM type).
TDX: MRTD computed from the TDVF metadata of the firmware (TDH.MEM.PAGE.ADD records for every added page and
TDH.MR.EXTEND records + 256-byte chunks for sections marked MR.EXTEND), in the page order of the host's
KVM/QEMU. RTMR0-2 depend on the VMM's ACPI tables and firmware variables and are not computed here: take
them from a reference launch (a TD quote of a known-good boot) and add them to the policy by hand.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import AttestationError

PAGE = 0x1000
MR_EXTEND_CHUNK = 0x100
_FOOTER_GUID = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
_TDX_METADATA_GUID = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le
_ATTR_MR_EXTEND = 0x1
_ATTR_PAGE_AUG = 0x2
_MAX_FIRMWARE = 64 << 20  # firmware volumes are a few MiB; refuse anything absurd before hashing it


class MeasureError(AttestationError):
    """Inputs that cannot be measured (missing metadata, unsupported firmware, bad arguments)."""


@dataclass(frozen=True)
class TdvfSection:
    data_offset: int
    raw_size: int
    address: int
    memory_size: int
    kind: int
    attributes: int


def _guid_table(fw: bytes) -> dict[bytes, bytes]:
    """OVMF's footer GUID table (the last 0x20 bytes are the reset vector)."""
    end = len(fw) - 0x20
    if end < 18 or fw[end - 16 : end] != _FOOTER_GUID:
        raise MeasureError("firmware has no OVMF GUID table footer")
    (size,) = struct.unpack_from("<H", fw, end - 18)
    start = end - size
    if size < 18 or start < 0:
        raise MeasureError("firmware GUID table length is invalid")
    table: dict[bytes, bytes] = {}
    pos = end - 18
    while pos > start:
        if pos - 18 < start:
            raise MeasureError("firmware GUID table entry overruns the table")
        guid = fw[pos - 16 : pos]
        (length,) = struct.unpack_from("<H", fw, pos - 18)
        if length < 18 or pos - length < start:
            raise MeasureError("firmware GUID table entry has an invalid length")
        table[guid] = fw[pos - length : pos - 18]
        pos -= length
    return table


def tdvf_sections(fw: bytes) -> list[TdvfSection]:
    if len(fw) > _MAX_FIRMWARE:
        raise MeasureError(f"firmware of {len(fw)} bytes is larger than {_MAX_FIRMWARE}")
    entry = _guid_table(fw).get(_TDX_METADATA_GUID)
    if entry is None or len(entry) < 4:
        raise MeasureError("firmware has no TDVF metadata (not a TDX-capable OVMF/TDVF build)")
    (back,) = struct.unpack_from("<I", entry, len(entry) - 4)
    off = len(fw) - back
    if not 0 <= off <= len(fw) - 16 or fw[off : off + 4] != b"TDVF":
        raise MeasureError("TDVF descriptor signature not found")
    _, version, count = struct.unpack_from("<III", fw, off + 4)
    if version != 1:
        raise MeasureError(f"unsupported TDVF metadata version {version}")
    if count > 64 or off + 16 + 32 * count > len(fw):
        raise MeasureError(f"TDVF descriptor claims {count} sections")
    sections = []
    for i in range(count):
        s = TdvfSection(*struct.unpack_from("<IIQQII", fw, off + 16 + 32 * i))
        if s.address % PAGE or s.memory_size % PAGE or s.memory_size < s.raw_size:
            raise MeasureError(f"TDVF section {i} is not page aligned or smaller than its data")
        if s.attributes & _ATTR_MR_EXTEND and s.data_offset + s.memory_size > len(fw):
            raise MeasureError(f"TDVF section {i} extends past the end of the firmware")
        sections.append(s)
    return sections


def tdx_mrtd(fw: bytes, *, two_pass: bool = False) -> bytes:
    """MRTD of a TD launched with this TDVF. two_pass: all PAGE.ADDs of a section before its MR.EXTENDs, as
    QEMU/KVM did before guest_memfd-based TDX (upstream KVM, QEMU >= 10.1, adds and extends page by page)."""
    h = hashlib.sha384()

    def page_add(s: TdvfSection, page: int) -> None:
        if not s.attributes & _ATTR_PAGE_AUG:  # PAGE.AUG pages are accepted later, never measured
            h.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + struct.pack("<Q", s.address + page * PAGE) + bytes(104))

    def extend(s: TdvfSection, page: int) -> None:
        if not s.attributes & _ATTR_MR_EXTEND:
            return
        for i in range(PAGE // MR_EXTEND_CHUNK):
            gpa = s.address + page * PAGE + i * MR_EXTEND_CHUNK
            h.update(b"MR.EXTEND".ljust(16, b"\0") + struct.pack("<Q", gpa) + bytes(104))
            at = s.data_offset + page * PAGE + i * MR_EXTEND_CHUNK
            h.update(fw[at : at + MR_EXTEND_CHUNK])

    for s in tdvf_sections(fw):
        pages = s.memory_size // PAGE
        if two_pass:
            for p in range(pages):
                page_add(s, p)
            for p in range(pages):
                extend(s, p)
        else:
            for p in range(pages):
                page_add(s, p)
                extend(s, p)
    return h.digest()


def snp_measurement(
    *,
    ovmf: str | Path,
    vcpus: int,
    vcpu_type: str | None = None,
    vcpu_sig: int | None = None,
    kernel: str | Path | None = None,
    initrd: str | Path | None = None,
    append: str | None = None,
    guest_features: int = 0x1,
    vmm_type: str = "qemu",
    ovmf_hash: str | None = None,
) -> bytes:
    """SNP launch digest through sev-snp-measure (same inputs -> the same value its CLI prints)."""
    from sevsnpmeasure import guest, vcpu_types
    from sevsnpmeasure.sev_mode import SevMode
    from sevsnpmeasure.vmm_types import VMMType

    if vcpus < 1:
        raise MeasureError("--vcpus must be at least 1")
    if vcpu_sig is None:
        if vcpu_type is None:
            raise MeasureError("give --vcpu-type (e.g. EPYC-v4) or a vCPU signature")
        if vcpu_type not in vcpu_types.CPU_SIGS:
            raise MeasureError(f"unknown vCPU type {vcpu_type!r}; known: {', '.join(sorted(vcpu_types.CPU_SIGS))}")
        vcpu_sig = vcpu_types.CPU_SIGS[vcpu_type]
    if (initrd or append) and not kernel:
        raise MeasureError("--initrd/--append need --kernel (measured direct boot)")
    try:
        vmm = {"qemu": VMMType.QEMU, "ec2": VMMType.ec2, "gce": VMMType.gce}[vmm_type.lower()]
    except KeyError:
        raise MeasureError("--vmm-type must be qemu, ec2 or gce") from None
    try:
        return guest.calc_launch_digest(
            SevMode.SEV_SNP, vcpus, vcpu_sig, str(ovmf), str(kernel) if kernel else None,
            str(initrd) if initrd else None, append or "", guest_features, ovmf_hash or "", vmm,
        )
    except (RuntimeError, ValueError, AssertionError, OSError) as exc:
        raise MeasureError(f"sev-snp-measure: {exc}") from exc


def reference_values(*, snp_measurements: list[bytes] | None = None, mrtd: list[bytes] | None = None) -> dict:
    """A policy document (docs/POLICY.md format) pinning the measurements; every other key keeps its strict
    default, so the file is ready for `aocu verify --policy` and `aocu evidence verify --policy`."""
    doc: dict = {}
    if snp_measurements:
        doc["snp"] = {"measurement": [m.hex() for m in snp_measurements]}
    if mrtd:
        doc["tdx"] = {"mrtd": [m.hex() for m in mrtd]}
    if not doc:
        raise MeasureError("nothing to write: no SNP measurement and no MRTD")
    return doc
