"""TDX RTMR[1] and RTMR[2] of a measured direct boot (QEMU -kernel/-initrd/-append with an OVMF/TDVF build).

What the firmware and the kernel's EFI stub extend, in order (edk2 OvmfPkg TdTcg2Dxe and
SecurityPkg DxeTpm2MeasureBootLib, Linux drivers/firmware/efi/libstub); each event digest is SHA-384 of the
measured bytes and each extend is RTMR = SHA-384(RTMR || digest), starting from 48 zero bytes:

RTMR[1] (PCR 2-6 map to it)
  1. EV_EFI_BOOT_SERVICES_APPLICATION (PCR 4): the kernel, LoadImage'd from QemuKernelLoaderFs; the digest
     is the PE/COFF Authenticode SHA-384 of the file (MeasurePeImageAndExtend: headers without CheckSum and
     the security directory entry, sections by file offset, then trailing data less the certificate table).
     QEMU >= 10.1 hands a confidential guest the kernel file unpatched (no setup-header edits), so this is
     the digest of vmlinuz itself.
  2. EV_EFI_ACTION "Calling EFI Application from Boot Option" (ReadyToBoot)
  3. EV_SEPARATOR 00000000
  4. EV_EFI_ACTION "Exit Boot Services Invocation"
  5. EV_EFI_ACTION "Exit Boot Services Returned with Success"
RTMR[2] (PCR 8-15), by the Linux EFI stub (>= 6.10 measures through the CC protocol):
  1. EV_EVENT_TAG "LOADED_IMAGE::LoadOptions": the raw LoadOptions OVMF built, i.e. the command line widened
     byte by byte to UTF-16LE with " initrd=initrd" appended when an initrd is given (edk2 <= 2025.02,
     X86QemuLoadImageLib; newer edk2 puts "initrd=initrd " first: layout "prefix"), NUL-terminated
  2. EV_EVENT_TAG "Linux initrd": the initrd bytes as loaded through LoadFile2 (the file, unchanged)

Host-dependent, so not computed here (take them from a reference launch): all of RTMR[0] (TD HOB with the
memory map, the CFV/variable store, QEMU's ACPI tables which follow -smp/-m/devices, BootOrder/Boot####
and Secure Boot variables, the separator), and RTMR[1] only as long as nothing else is measured into
PCR 2-6: a PCI option ROM (launch.sh disables the NIC's with romfile=), a GPT or another EFI application
would add events. RTMR[3] is the guest's own (runtime).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import AttestationError

DIGEST = 48
EV_SEPARATOR = 0x4
EV_EFI_ACTION = 0x80000007
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EVENT_TAG = 0x6
LAYOUTS = ("suffix", "prefix")
_SECURITY_DIR = 4  # EFI_IMAGE_DIRECTORY_ENTRY_SECURITY
_MAX_KERNEL = 256 << 20

RTMR1_BOOT_EVENTS: tuple[tuple[int, bytes], ...] = (
    (EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
    (EV_SEPARATOR, b"\0\0\0\0"),
    (EV_EFI_ACTION, b"Exit Boot Services Invocation"),
    (EV_EFI_ACTION, b"Exit Boot Services Returned with Success"),
)


class RtmrError(AttestationError):
    """Inputs whose RTMRs cannot be predicted (not a PE/COFF kernel, bad layout)."""


@dataclass(frozen=True)
class BootEvent:
    rtmr: int
    event_type: int
    what: str
    digest: bytes


def extend(register: bytes, digest: bytes) -> bytes:
    return hashlib.sha384(register + digest).digest()


def replay(digests: list[bytes]) -> bytes:
    register = bytes(DIGEST)
    for d in digests:
        register = extend(register, d)
    return register


def _u16(b: bytes, at: int) -> int:
    if at + 2 > len(b):
        raise RtmrError(f"kernel image truncated at offset {at:#x}")
    return struct.unpack_from("<H", b, at)[0]


def _u32(b: bytes, at: int) -> int:
    if at + 4 > len(b):
        raise RtmrError(f"kernel image truncated at offset {at:#x}")
    return struct.unpack_from("<I", b, at)[0]


def authenticode_sha384(pe: bytes) -> bytes:
    """edk2 MeasurePeImageAndExtend's digest of a PE/COFF file (TDX: SHA-384)."""
    return authenticode_digest(pe, "sha384")


def authenticode_digest(pe: bytes, algorithm: str) -> bytes:
    """The PE/COFF Authenticode digest, step by step as edk2's MeasurePeImageAndExtend takes it (with SHA-256 it
    is the digest a signed image's Authenticode signature carries)."""
    if len(pe) < 0x40 or pe[:2] != b"MZ":
        raise RtmrError("kernel is not a PE/COFF image (no MZ header): an EFI-stub bzImage is needed")
    nt = _u32(pe, 0x3C)
    if pe[nt : nt + 4] != b"PE\0\0":
        raise RtmrError("kernel is not a PE/COFF image (no PE signature): an EFI-stub bzImage is needed")
    sections_n = _u16(pe, nt + 6)
    opt_size = _u16(pe, nt + 20)
    opt = nt + 24
    magic = _u16(pe, opt)
    if magic not in (0x10B, 0x20B):
        raise RtmrError(f"unknown PE optional header magic {magic:#x}")
    plus = magic == 0x20B
    checksum = opt + 64
    size_of_headers = _u32(pe, opt + 60)
    rva_count = _u32(pe, opt + (108 if plus else 92))
    security = opt + (112 if plus else 96) + 8 * _SECURITY_DIR
    if size_of_headers > len(pe):
        raise RtmrError("PE SizeOfHeaders is larger than the image")
    h = hashlib.new(algorithm, pe[:checksum])
    if rva_count <= _SECURITY_DIR:  # no certificate directory: everything after the checksum
        if size_of_headers < checksum + 4:
            raise RtmrError("PE SizeOfHeaders ends inside the optional header")
        h.update(pe[checksum + 4 : size_of_headers])
        cert_size = 0
    else:
        if size_of_headers < security + 8:
            raise RtmrError("PE SizeOfHeaders ends inside the data directory")
        h.update(pe[checksum + 4 : security])
        h.update(pe[security + 8 : size_of_headers])
        cert_size = _u32(pe, security + 4)
    table = opt + opt_size
    raw = []
    for i in range(sections_n):
        size, ptr = _u32(pe, table + 40 * i + 16), _u32(pe, table + 40 * i + 20)
        if size:
            raw.append((ptr, size))
    hashed = size_of_headers
    for ptr, size in sorted(raw, key=lambda s: s[0]):  # stable, like edk2's insertion sort
        if ptr + size > len(pe):
            raise RtmrError("a PE section extends past the end of the kernel image")
        h.update(pe[ptr : ptr + size])
        hashed += size
    if len(pe) > hashed:
        if hashed + cert_size > len(pe):
            raise RtmrError("PE certificate table is larger than the data after the sections")
        h.update(pe[hashed : len(pe) - cert_size])
    return h.digest()


def load_options(cmdline: str, *, initrd: bool, layout: str = "suffix") -> bytes:
    """The LoadOptions bytes OVMF gives the kernel: each command-line byte widened to UTF-16LE, NUL at the end.
    Empty when there is neither a command line nor an initrd (the stub then measures nothing)."""
    if layout not in LAYOUTS:
        raise RtmrError(f"unknown LoadOptions layout {layout!r} (suffix: edk2 <= 2025.02, prefix: newer)")
    raw = cmdline.encode()  # QEMU passes the bytes; UnicodeSPrintAsciiFormat widens each one
    if initrd:
        raw = raw + b" initrd=initrd" if layout == "suffix" else b"initrd=initrd " + raw
    if not raw:
        return b""
    return raw.decode("latin-1").encode("utf-16-le") + b"\0\0"


def _sha384_file(src: bytes | str | Path) -> tuple[bytes, int]:
    if isinstance(src, bytes):
        return hashlib.sha384(src).digest(), len(src)
    h, n = hashlib.sha384(), 0
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    return h.digest(), n


def direct_boot_events(
    kernel: bytes | str | Path, initrd: bytes | str | Path | None, cmdline: str, *, layout: str = "suffix",
) -> list[BootEvent]:
    """The RTMR[1]/RTMR[2] events of a direct boot, in extend order."""
    if not isinstance(kernel, bytes):
        if Path(kernel).stat().st_size > _MAX_KERNEL:
            raise RtmrError(f"kernel {kernel} is larger than {_MAX_KERNEL} bytes")
        kernel = Path(kernel).read_bytes()
    events = [BootEvent(1, EV_EFI_BOOT_SERVICES_APPLICATION, "kernel (PE/COFF Authenticode)",
                        authenticode_sha384(kernel))]
    events += [BootEvent(1, t, data.decode() if t == EV_EFI_ACTION else "separator", hashlib.sha384(data).digest())
               for t, data in RTMR1_BOOT_EVENTS]
    initrd_digest, initrd_size = _sha384_file(initrd) if initrd is not None else (b"", 0)
    opts = load_options(cmdline, initrd=initrd_size > 0, layout=layout)
    if opts:
        events.append(BootEvent(2, EV_EVENT_TAG, "LOADED_IMAGE::LoadOptions", hashlib.sha384(opts).digest()))
    if initrd_size:
        events.append(BootEvent(2, EV_EVENT_TAG, "Linux initrd", initrd_digest))
    return events


def rtmrs(events: list[BootEvent]) -> dict[int, bytes]:
    """Replay events into their registers (only the registers that have events)."""
    out: dict[int, bytes] = {}
    for e in events:
        out[e.rtmr] = extend(out.get(e.rtmr, bytes(DIGEST)), e.digest)
    return out


def tdx_rtmr12(
    kernel: bytes | str | Path, initrd: bytes | str | Path | None, cmdline: str, *, layout: str = "suffix",
) -> tuple[bytes, bytes]:
    """(RTMR[1], RTMR[2]) expected after a direct boot of this kernel, initrd and command line."""
    regs = rtmrs(direct_boot_events(kernel, initrd, cmdline, layout=layout))
    return regs[1], regs.get(2, bytes(DIGEST))
