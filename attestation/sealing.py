"""Sealing keys: 32-byte keys the host can neither read nor forge, bound to what runs in the guest.

`derive_key(tee, label, data_dir=...)` is the one entry point (the sealed data volume and the node's cache
authentication both call it). Per TEE (docs/SEALING.md has the reasoning and the spec table):

  snp   SNP_GET_DERIVED_KEY through /dev/sev-guest: MSG_KEY_REQ with ROOT_KEY_SELECT = VCEK (chip-unique),
        GUEST_FIELD_SELECT = guest policy | measurement | TCB version (FIELDS_DEFAULT), VMPL = the guest's own
        (0 in our images), TCB_VERSION = the REPORTED_TCB of a fresh report. Another image (measurement),
        a debug-enabled launch (policy) or another chip gets a different key.
  sim   the same MSG_KEY_REQ bytes, answered by the simulated firmware of attestation.sim (HMAC over a secret
        of the simulated chip and the selected fields of the simulated launch): exercises the same selection
        and parsing code, protects nothing (the "chip secret" is a file in DATA-DIR/sim-tee/).
  tdx   no local sealing key exists on TDX: SealingUnavailable, so callers use ephemeral storage (a key
        broker releasing a key after attestation is not built; see docs/SEALING.md).
  none  a random key in DATA-DIR/sealing.key (0600), created once: integrity against accidents only, no
        protection against the host.

The root from the TEE is never used directly: each label gets HKDF-SHA256(root, salt=SALT, info=label).
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import AttestationError, NotAvailable, ProviderError

if TYPE_CHECKING:
    from .providers.sevguest import SevGuestDevice

KEY_SIZE = 32
SALT = b"aocu/sealing/v1"
NONE_KEY_FILE = "sealing.key"

# MSG_KEY_REQ (SEV-SNP firmware ABI, guest messages; Linux struct snp_derived_key_req): 32 bytes, little-endian.
KEY_REQ_FORMAT = "<IIQIIQ"  # ROOT_KEY_SELECT, reserved, GUEST_FIELD_SELECT, VMPL, GUEST_SVN, TCB_VERSION
KEY_REQ_SIZE = struct.calcsize(KEY_REQ_FORMAT)
# MSG_KEY_RSP: STATUS u32 at 0x00, reserved 0x04-0x1F, DERIVED_KEY 0x20-0x3F (Linux struct snp_derived_key_resp).
KEY_RSP_SIZE = 64
KEY_RSP_KEY_OFFSET = 0x20
ROOT_KEY_VCEK = 0  # ROOT_KEY_SELECT bit 0: 0 = VCEK, 1 = VMRK (only with a migration agent; not ours)

FIELD_GUEST_POLICY = 1 << 0
FIELD_IMAGE_ID = 1 << 1
FIELD_FAMILY_ID = 1 << 2
FIELD_MEASUREMENT = 1 << 3
FIELD_GUEST_SVN = 1 << 4
FIELD_TCB_VERSION = 1 << 5
FIELDS_DEFINED = (1 << 6) - 1  # message version 1: bits 63:6 reserved, must be zero
# Measurement: another image derives another key. Policy: a debug-enabled (host-readable) launch of the same
# image does too. TCB version: firmware below the version we derive at cannot compute the key. Image/family
# id and guest SVN come from an ID block, which our launches do not use (they would be zero).
FIELDS_DEFAULT = FIELD_GUEST_POLICY | FIELD_MEASUREMENT | FIELD_TCB_VERSION

STATUS_NAMES = {0x00: "SUCCESS", 0x16: "INVALID_PARAM", 0x27: "INVALID_KEY"}


class SealingUnavailable(AttestationError):
    """No sealing key can be derived here (one-line reason); callers fall back to ephemeral storage."""


@dataclass(frozen=True)
class KeyRequest:
    """MSG_KEY_REQ."""

    root_key_select: int = ROOT_KEY_VCEK
    guest_field_select: int = FIELDS_DEFAULT
    vmpl: int = 0
    guest_svn: int = 0
    tcb_version: int = 0

    def pack(self) -> bytes:
        if self.root_key_select not in (0, 1):
            raise ValueError("ROOT_KEY_SELECT must be 0 (VCEK) or 1 (VMRK)")
        if self.guest_field_select & ~FIELDS_DEFINED:
            raise ValueError(f"GUEST_FIELD_SELECT 0x{self.guest_field_select:x} sets reserved bits 63:6")
        if not 0 <= self.vmpl <= 3:
            raise ValueError("VMPL must be 0-3")
        return struct.pack(
            KEY_REQ_FORMAT,
            self.root_key_select,
            0,
            self.guest_field_select,
            self.vmpl,
            self.guest_svn,
            self.tcb_version,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> KeyRequest:
        if len(raw) != KEY_REQ_SIZE:
            raise ValueError(f"MSG_KEY_REQ is {KEY_REQ_SIZE} bytes, got {len(raw)}")
        root, reserved, fields, vmpl, svn, tcb = struct.unpack(KEY_REQ_FORMAT, raw)
        if reserved:
            raise ValueError("MSG_KEY_REQ reserved field (0x04) is not zero")
        return cls(root, fields, vmpl, svn, tcb)


def parse_key_response(raw: bytes) -> bytes:
    """The 32-byte DERIVED_KEY of a MSG_KEY_RSP; ProviderError for a short message or a non-zero STATUS."""
    if len(raw) < KEY_RSP_SIZE:
        raise ProviderError(f"MSG_KEY_RSP is {KEY_RSP_SIZE} bytes, got {len(raw)}")
    status = struct.unpack_from("<I", raw, 0)[0]
    if status != 0:
        name = STATUS_NAMES.get(status, "unknown")
        raise ProviderError(f"SNP firmware MSG_KEY_RSP status 0x{status:x} ({name})")
    key = bytes(raw[KEY_RSP_KEY_OFFSET : KEY_RSP_KEY_OFFSET + KEY_SIZE])
    if not any(key):
        raise ProviderError("SNP firmware returned an all-zero derived key")
    return key


def request_root(answer: Callable[[bytes], bytes], request: KeyRequest) -> bytes:
    """Send one MSG_KEY_REQ to `answer` (the device ioctl or the simulated firmware) and parse the reply."""
    return parse_key_response(answer(request.pack()))


def hkdf(root: bytes, label: str) -> bytes:
    if not isinstance(label, str) or not label or len(label.encode()) > 255:
        raise ValueError("sealing key label must be a non-empty string of at most 255 bytes")
    return HKDF(hashes.SHA256(), KEY_SIZE, SALT, label.encode()).derive(root)


# -- per-TEE roots --------------------------------------------------------------------------------------------


def snp_root(
    *, root: str | Path = "/", vmpl: int = 0, fields: int = FIELDS_DEFAULT, device: SevGuestDevice | None = None
) -> bytes:
    """Root from the real firmware. The TCB version comes from a fresh report's REPORTED_TCB (what the host
    reports as this platform's TCB; the firmware refuses one above its COMMITTED_TCB)."""
    from .providers.sevguest import SevGuestDevice
    from .snp import parse_report

    dev = device or SevGuestDevice(str(Path(root) / "dev/sev-guest"))
    if not dev.available():
        raise SealingUnavailable(
            "SNP_GET_DERIVED_KEY needs /dev/sev-guest (sev-guest driver), which this machine does not have"
        )
    try:
        tcb = 0
        if fields & FIELD_TCB_VERSION:
            report, _ = dev.get_report(bytes(64), vmpl, extended=False)
            tcb = parse_report(report).reported_tcb_raw
        return request_root(dev.get_derived_key, KeyRequest(ROOT_KEY_VCEK, fields, vmpl, 0, tcb))
    except NotAvailable as exc:
        raise SealingUnavailable(f"SEV-SNP derived key: {exc}") from None
    except (ProviderError, OSError) as exc:
        raise SealingUnavailable(f"SEV-SNP derived key request failed: {exc}") from None


def sim_root(
    data_dir: str | Path,
    *,
    fields: int = FIELDS_DEFAULT,
    vmpl: int = 0,
    measurement: bytes | None = None,
    policy: int | None = None,
    tcb_version: int | None = None,
) -> bytes:
    """Root from the simulated firmware of DATA-DIR/sim-tee (the launch values default to those of the
    simulated reports the node's `--tee sim` provider produces)."""
    from .sim import SimulatedTee, build_snp_report, snp_derived_key_response
    from .snp import parse_report

    chain = SimulatedTee(data_dir).snp_chain()
    if tcb_version is None:
        tcb_version = 0
        if fields & FIELD_TCB_VERSION:  # as on hardware: read it from a fresh (simulated) report
            tcb_version = parse_report(build_snp_report(chain, bytes(64))).reported_tcb_raw

    def answer(req: bytes) -> bytes:
        return snp_derived_key_response(chain, req, measurement=measurement, policy=policy)

    return request_root(answer, KeyRequest(ROOT_KEY_VCEK, fields, vmpl, 0, tcb_version))


def none_root(data_dir: str | Path) -> bytes:
    """DATA-DIR/sealing.key: 32 random bytes, created once with mode 0600 (a file readable by group/others or
    of another size is refused, not repaired)."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / NONE_KEY_FILE
    if not path.exists():
        tmp = d / f".{NONE_KEY_FILE}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, os.urandom(KEY_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic publish; another process may have won the race: use its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    st = path.stat()
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        raise SealingUnavailable(
            f"{path} is not a private regular file (mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it"
        )
    data = path.read_bytes()
    if len(data) != KEY_SIZE:
        raise SealingUnavailable(f"{path} holds {len(data)} bytes, not a {KEY_SIZE}-byte key")
    return data


def resolve_tee(tee: str, root: str | Path = "/") -> str:
    """'auto' -> the detected hardware TEE or 'none'; 'sim-snp' -> 'sim'; others unchanged."""
    if tee == "auto":
        from .providers import detect

        return detect(root) or "none"
    return "sim" if tee == "sim-snp" else tee


def derive_key(tee: str, label: str, *, data_dir: Path | str | None = None) -> bytes:
    """A 32-byte key for `label` (different per label), from the sealing root of `tee`.

    tee: snp | sim | none | tdx (and auto, sim-snp, sim-tdx). SealingUnavailable (one line) when this TEE
    gives no sealing key (tdx, sim-tdx, an SNP guest without /dev/sev-guest); ValueError for bad arguments.
    """
    kind = resolve_tee(tee)
    hkdf(bytes(KEY_SIZE), label)  # validate the label before touching any device
    if kind == "snp":
        root = snp_root()
    elif kind in ("tdx", "sim-tdx"):
        raise SealingUnavailable(
            "no sealing key on TDX: the TDX module offers no local key derivation; use ephemeral storage "
            "(state lost at reboot) or a key broker that releases a key after attestation"
        )
    elif kind in ("sim", "none"):
        if data_dir is None:
            raise ValueError(f"--tee {kind} keeps its sealing root in the data dir: data_dir is required")
        root = sim_root(data_dir) if kind == "sim" else none_root(data_dir)
    else:
        raise ValueError(f"unknown TEE kind {tee!r} (auto, snp, tdx, sim, sim-snp, sim-tdx, none)")
    return hkdf(root, label)
