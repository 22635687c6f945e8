"""`aocu measure`: expected launch measurement of a guest payload -> reference-values JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .measure import MeasureError, reference_values, snp_measurement, tdx_mrtd


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "measure",
        help="expected SNP launch measurement / TDX MRTD of a payload, written as reference values",
        description="SEV-SNP via sev-snp-measure (the value its CLI prints for the same inputs); TDX MRTD from "
        "the TDVF metadata. RTMRs are not computed: take them from a reference launch.",
    )
    p.add_argument("--ovmf", type=Path, help="AmdSev OVMF (SNP, with SNP_KERNEL_HASHES for direct boot)")
    p.add_argument("--payload", type=Path, help="images/build.sh output dir: vmlinuz, initrd.img, cmdline")
    p.add_argument("--kernel", type=Path)
    p.add_argument("--initrd", type=Path)
    p.add_argument("--append", help="kernel command line (default: PAYLOAD/cmdline)")
    p.add_argument("--vcpus", type=int, default=None)
    p.add_argument("--vcpu-type", help="QEMU CPU model, e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa")
    p.add_argument("--guest-features", type=lambda v: int(v, 0), default=0x1, help="SNP guest features (0x1)")
    p.add_argument("--vmm-type", choices=("qemu", "ec2"), default="qemu")
    p.add_argument("--snp-ovmf-hash", help="precomputed OVMF launch digest (hex) instead of hashing --ovmf")
    p.add_argument("--tdx", action="store_true", help="also compute the TDX MRTD")
    p.add_argument("--tdvf", type=Path, help="TDX firmware (TDVF / TDX-capable OVMF)")
    p.add_argument("--tdx-two-pass", action="store_true",
                   help="MRTD page order of pre-guest_memfd KVM (all PAGE.ADDs of a section, then MR.EXTENDs)")
    p.add_argument("-o", "--output", type=Path, required=True, help="reference-values JSON to write")
    p.set_defaults(func=_run)


def _payload_inputs(a: argparse.Namespace) -> tuple[Path | None, Path | None, str | None]:
    kernel, initrd, append = a.kernel, a.initrd, a.append
    if a.payload:
        for name in ("vmlinuz", "initrd.img", "cmdline"):
            if not (a.payload / name).is_file():
                raise MeasureError(f"{a.payload}/{name} missing (run images/build.sh first)")
        kernel = kernel or a.payload / "vmlinuz"
        initrd = initrd or a.payload / "initrd.img"
        append = append if append is not None else (a.payload / "cmdline").read_text()
    return kernel, initrd, append


def _run(a: argparse.Namespace) -> int:
    try:
        snp: list[bytes] = []
        mrtd: list[bytes] = []
        if a.ovmf:
            if a.vcpus is None:
                raise MeasureError("--vcpus is required for SEV-SNP")
            kernel, initrd, append = _payload_inputs(a)
            print("[measure] SEV-SNP launch digest (sev-snp-measure)", file=sys.stderr)
            snp.append(snp_measurement(
                ovmf=a.ovmf, vcpus=a.vcpus, vcpu_type=a.vcpu_type, kernel=kernel, initrd=initrd, append=append,
                guest_features=a.guest_features, vmm_type=a.vmm_type, ovmf_hash=a.snp_ovmf_hash,
            ))
            print(f"  snp.measurement {snp[0].hex()}", file=sys.stderr)
        if a.tdx:
            if not a.tdvf:
                raise MeasureError("--tdx needs --tdvf")
            print("[measure] TDX MRTD from TDVF metadata (RTMRs: not computed, take them from a reference "
                  "launch)", file=sys.stderr)
            mrtd.append(tdx_mrtd(a.tdvf.read_bytes(), two_pass=a.tdx_two_pass))
            print(f"  tdx.mrtd {mrtd[0].hex()}", file=sys.stderr)
        if not snp and not mrtd:
            raise MeasureError("give --ovmf (SEV-SNP) and/or --tdx --tdvf F (TDX)")
        doc = reference_values(snp_measurements=snp, mrtd=mrtd)
    except (MeasureError, OSError) as exc:
        print(f"aocu measure: {exc}", file=sys.stderr)
        return 2
    a.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"[measure] wrote {a.output}", file=sys.stderr)
    return 0
