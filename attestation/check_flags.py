"""Inline reference values for `aocu evidence verify`, like go-sev-guest's `check` flags (`--measurement HEX`,
`--report-data HEX`, `--min-tcb ...`): each flag sets one policy key, on top of (and overriding) `--policy FILE`,
so a one-off check needs no file. Values the flags and the file leave unset are SKIP in the output."""

from __future__ import annotations

import argparse
import re

from .errors import PolicyError
from .policy import SNP_PRODUCTS, TCB_STATUSES, Policy
from .snp import TcbVersion

_TCB_PART = re.compile(r"(fmc|bl|tee|snp|ucode)=(\d{1,3})")


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "inline checks", "reference values given on the command line; each overrides the same key of --policy"
    )
    hexarg = {"metavar": "HEX", "default": None}
    g.add_argument("--measurement", action="append", help="SNP: allowed MEASUREMENT (48 bytes; repeatable)",
                   **hexarg)
    g.add_argument("--report-data", help="SNP/TDX: required REPORT_DATA (up to 64 bytes, zero-padded)", **hexarg)
    g.add_argument("--host-data", help="SNP: required HOST_DATA (32 bytes)", **hexarg)
    g.add_argument("--family-id", help="SNP: required FAMILY_ID (16 bytes)", **hexarg)
    g.add_argument("--image-id", help="SNP: required IMAGE_ID (16 bytes)", **hexarg)
    g.add_argument("--id-key-digest", action="append", help="SNP: allowed ID_KEY_DIGEST (48 bytes; repeatable)",
                   **hexarg)
    g.add_argument("--author-key-digest", action="append",
                   help="SNP: trusted AUTHOR_KEY_DIGEST (48 bytes; repeatable)", **hexarg)
    g.add_argument("--min-tcb", metavar="SPL",
                   help="SNP: minimum REPORTED_TCB, 'bl=2,tee=0,snp=5,ucode=68' (Turin also fmc=) or a TCB_VERSION "
                   "u64 in hex (0x4405000000000002)")
    g.add_argument("--min-build", type=int, metavar="N", help="SNP: minimum committed firmware build")
    g.add_argument("--min-guest-svn", type=int, metavar="N", help="SNP: minimum GUEST_SVN")
    g.add_argument("--min-abi", metavar="MAJOR.MINOR", help="SNP: minimum firmware ABI")
    g.add_argument("--vmpl", type=int, action="append", metavar="N", help="SNP: allowed VMPL (repeatable)")
    g.add_argument("--allow-debug", action="store_true", default=None, help="SNP/TDX: accept a debuggable guest")
    g.add_argument("--allow-migrate-ma", action="store_true", default=None, help="SNP: accept a migration agent")
    g.add_argument("--permit-provisional-firmware", "--provisional", action="store_true", default=None,
                   help="SNP: accept COMMITTED < CURRENT (provisional firmware)")
    g.add_argument("--mrtd", action="append", help="TDX: allowed MRTD (48 bytes; repeatable)", **hexarg)
    for i in range(4):
        g.add_argument(f"--rtmr{i}", help=f"TDX: required RTMR{i} (48 bytes)", **hexarg)
    g.add_argument("--mr-config-id", help="TDX: required MRCONFIGID (48 bytes)", **hexarg)
    g.add_argument("--accept-tcb-status", action="append", metavar="STATUS", choices=TCB_STATUSES,
                   help="TDX: accepted TCB status (repeatable; default UpToDate)")


def _hex(flag: str, text: str, size: int, *, pad: bool = False) -> bytes:
    t = text.strip().removeprefix("0x")
    try:
        b = bytes.fromhex(t)
    except ValueError:
        raise PolicyError(f"{flag}: not hex ({text!r})") from None
    if pad and len(b) <= size:
        return b.ljust(size, b"\0")
    if len(b) != size:
        raise PolicyError(f"{flag}: must be {size} bytes ({2 * size} hex digits), got {len(b)}")
    return b


def parse_min_tcb(text: str, product: str | None) -> dict[str, int]:
    """'bl=2,snp=5' (unnamed parts 0) or a TCB_VERSION u64 (decoded with the Turin layout for --product Turin)."""
    t = text.strip()
    if t.lower().startswith("0x"):
        try:
            raw = int(t, 16)
        except ValueError:
            raise PolicyError(f"--min-tcb: not a hex u64 ({text!r})") from None
        if raw >= 1 << 64:
            raise PolicyError("--min-tcb: more than 64 bits")
        tcb = TcbVersion.decode(raw, turin=(product or "").startswith("Turin"))
        return {"fmc": 0, **tcb.components()}
    out = {"fmc": 0, "bl": 0, "tee": 0, "snp": 0, "ucode": 0}
    for part in t.split(","):
        m = _TCB_PART.fullmatch(part.strip())
        if m is None or int(m.group(2)) > 255:
            raise PolicyError(f"--min-tcb: {part.strip()!r} is not NAME=0..255 with NAME one of fmc, bl, tee, snp, "
                              "ucode (or give a 0x... u64)")
        out[m.group(1)] = int(m.group(2))
    return out


def apply_check_flags(policy: Policy, args: argparse.Namespace) -> Policy:
    """`policy` with every inline check flag applied (the flag wins over the file's key)."""
    snp, tdx = policy.snp, policy.tdx
    if args.measurement:
        snp.measurement = [_hex("--measurement", m, 48) for m in args.measurement]
    if args.report_data is not None:
        snp.report_data = tdx.report_data = _hex("--report-data", args.report_data, 64, pad=True)
    for flag, attr, size in (("--host-data", "host_data", 32), ("--family-id", "family_id", 16),
                             ("--image-id", "image_id", 16)):
        if (v := getattr(args, attr)) is not None:
            setattr(snp, attr, _hex(flag, v, size))
    if args.id_key_digest:
        snp.id_key_digests = [_hex("--id-key-digest", d, 48) for d in args.id_key_digest]
    if args.author_key_digest:
        snp.author_key_digests = [_hex("--author-key-digest", d, 48) for d in args.author_key_digest]
    if args.min_tcb is not None:
        snp.minimum_tcb = parse_min_tcb(args.min_tcb, args.product)
    for flag, attr, key, hi in (("--min-build", "min_build", "minimum_build", 255),
                                ("--min-guest-svn", "min_guest_svn", "minimum_guest_svn", 2**32 - 1)):
        if (v := getattr(args, attr)) is not None:
            if not 0 <= v <= hi:
                raise PolicyError(f"{flag}: must be in [0, {hi}]")
            setattr(snp, key, v)
    if args.min_abi is not None:
        m = re.fullmatch(r"(\d{1,3})\.(\d{1,3})", args.min_abi.strip())
        if m is None:
            raise PolicyError(f"--min-abi: must be MAJOR.MINOR, got {args.min_abi!r}")
        snp.minimum_abi = (int(m.group(1)), int(m.group(2)))
    if args.vmpl:
        if not all(0 <= v <= 3 for v in args.vmpl):
            raise PolicyError("--vmpl: 0-3")
        snp.vmpl = list(args.vmpl)
    if args.allow_debug:
        snp.allow_debug = tdx.allow_debug = True
    if args.allow_migrate_ma:
        snp.allow_migrate_ma = True
    if args.permit_provisional_firmware:
        snp.permit_provisional_firmware = True
    if args.product:
        product = args.product.split("-")[0]
        if product not in SNP_PRODUCTS:
            raise PolicyError(f"--product {args.product!r}: expected one of {', '.join(SNP_PRODUCTS)}")
        snp.products = [product]
    if args.mrtd:
        tdx.mrtd = [_hex("--mrtd", m, 48) for m in args.mrtd]
    for i in range(4):
        if (v := getattr(args, f"rtmr{i}")) is not None:
            setattr(tdx, f"rtmr{i}", _hex(f"--rtmr{i}", v, 48))
    if args.mr_config_id is not None:
        tdx.mr_config_id = _hex("--mr-config-id", args.mr_config_id, 48)
    if args.accept_tcb_status:
        tdx.accepted_tcb_status = list(args.accept_tcb_status)
    return policy
