"""`aocu measure`: expected launch measurement of a guest payload, with sev-snp-measure's flag names.

Like sev-snp-measure it prints the measurement on stdout (`--output-format hex|base64`); `-o FILE` writes
reference values (a policy file for `--policy`) instead, `-o -` prints them. `--mode snp` (default),
`snp:ovmf-hash` (the OVMF digest for `--snp-ovmf-hash`) or `tdx` (MRTD from the TDVF metadata; `--tdx` is the
older spelling). With both `--ovmf` and `--tdx` the SNP value is printed first, then the MRTD, one per line.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from .measure import MeasureError, reference_values, snp_measurement, tdx_mrtd

MODES = ("snp", "snp:ovmf-hash", "tdx")


def _int0(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "measure",
        help="expected SNP launch measurement / TDX MRTD of a payload (stdout, or reference values with -o)",
        description="SEV-SNP via sev-snp-measure (the value its CLI prints for the same flags); TDX MRTD from "
        "the TDVF metadata. RTMRs are not computed: take them from a reference launch.",
    )
    p.add_argument("--mode", choices=MODES, default=None,
                   help="snp (default with --ovmf), snp:ovmf-hash, tdx (default with --tdvf)")
    p.add_argument("--ovmf", type=Path, help="AmdSev OVMF (SNP, with SNP_KERNEL_HASHES for direct boot)")
    p.add_argument("--payload", type=Path, help="images/build.sh output dir: vmlinuz, initrd.img, cmdline")
    p.add_argument("--kernel", type=Path)
    p.add_argument("--initrd", type=Path)
    p.add_argument("--append", help="kernel command line (default: PAYLOAD/cmdline)")
    p.add_argument("--vcpus", type=int, default=None, metavar="N")
    p.add_argument("--vcpu-type", metavar="CPUTYPE", help="QEMU CPU model, e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa")
    p.add_argument("--vcpu-sig", type=_int0, metavar="VALUE", help="guest vCPU signature (CPUID 1 EAX)")
    p.add_argument("--vcpu-family", type=int, metavar="FAMILY", help="with --vcpu-model and --vcpu-stepping")
    p.add_argument("--vcpu-model", type=int, metavar="MODEL")
    p.add_argument("--vcpu-stepping", type=int, metavar="STEPPING")
    p.add_argument("--guest-features", type=_int0, default=0x1, metavar="VALUE", help="SNP guest features (0x1)")
    p.add_argument("--vmm-type", type=str.lower, choices=("qemu", "ec2", "gce"), default="qemu")
    p.add_argument("--snp-ovmf-hash", metavar="HASH", help="precomputed OVMF launch digest (hex) for --ovmf")
    p.add_argument("--output-format", choices=("hex", "base64"), default="hex", help="stdout format (hex)")
    p.add_argument("--tdx", action="store_true", help="also compute the TDX MRTD (same as --mode tdx)")
    p.add_argument("--tdvf", type=Path, help="TDX firmware (TDVF / TDX-capable OVMF)")
    p.add_argument("--tdx-two-pass", action="store_true",
                   help="MRTD page order of pre-guest_memfd KVM (all PAGE.ADDs of a section, then MR.EXTENDs)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write reference values (a --policy file) instead of printing the value ('-': stdout)")
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


def _vcpu_sig(a: argparse.Namespace) -> int | None:
    """As sev-snp-measure: family/model/stepping, else --vcpu-sig, else --vcpu-type (resolved by the caller)."""
    if a.vcpu_family is not None:
        if a.vcpu_model is None or a.vcpu_stepping is None:
            raise MeasureError("--vcpu-family needs --vcpu-model and --vcpu-stepping")
        from sevsnpmeasure import vcpu_types

        return vcpu_types.cpu_sig(a.vcpu_family, a.vcpu_model, a.vcpu_stepping)
    return a.vcpu_sig


def _measure(a: argparse.Namespace) -> tuple[list[bytes], list[bytes]]:
    mode = a.mode or ("tdx" if a.tdvf and not a.ovmf else "snp")
    want_tdx = a.tdx or mode == "tdx"
    snp: list[bytes] = []
    mrtd: list[bytes] = []
    if mode == "snp:ovmf-hash":
        if not a.ovmf:
            raise MeasureError("--mode snp:ovmf-hash needs --ovmf")
        from sevsnpmeasure import guest

        return [guest.calc_snp_ovmf_hash(str(a.ovmf))], []
    if a.ovmf and mode == "snp":
        if a.vcpus is None:
            raise MeasureError("--vcpus is required for SEV-SNP")
        kernel, initrd, append = _payload_inputs(a)
        print("[measure] SEV-SNP launch digest (sev-snp-measure)", file=sys.stderr)
        snp.append(snp_measurement(
            ovmf=a.ovmf, vcpus=a.vcpus, vcpu_type=a.vcpu_type, vcpu_sig=_vcpu_sig(a), kernel=kernel, initrd=initrd,
            append=append, guest_features=a.guest_features, vmm_type=a.vmm_type, ovmf_hash=a.snp_ovmf_hash,
        ))
    if want_tdx:
        if not a.tdvf:
            raise MeasureError("TDX needs --tdvf FIRMWARE")
        print("[measure] TDX MRTD from TDVF metadata (RTMRs: not computed, take them from a reference launch)",
              file=sys.stderr)
        mrtd.append(tdx_mrtd(a.tdvf.read_bytes(), two_pass=a.tdx_two_pass))
    if not snp and not mrtd:
        raise MeasureError("give --ovmf (SEV-SNP) and/or --mode tdx --tdvf F (TDX)")
    return snp, mrtd


def _run(a: argparse.Namespace) -> int:
    try:
        snp, mrtd = _measure(a)
        if a.output:
            if a.mode == "snp:ovmf-hash":
                raise MeasureError("--mode snp:ovmf-hash prints a firmware digest, not reference values: drop -o")
            text = json.dumps(reference_values(snp_measurements=snp, mrtd=mrtd), indent=2) + "\n"
    except (MeasureError, OSError) as exc:
        print(f"aocu measure: {exc}", file=sys.stderr)
        return 2
    if not a.output:
        for value in snp + mrtd:
            print(value.hex() if a.output_format == "hex" else base64.b64encode(value).decode())
    elif a.output == "-":
        sys.stdout.write(text)
    else:
        Path(a.output).write_text(text)
        for name, value in [("snp.measurement", v) for v in snp] + [("tdx.mrtd", v) for v in mrtd]:
            print(f"  {name} {value.hex()}", file=sys.stderr)
        print(f"[measure] wrote {a.output}", file=sys.stderr)
    return 0
