"""`aocu measure`: expected launch measurement of a guest payload, with sev-snp-measure's flag names.

Like sev-snp-measure it prints the measurement on stdout (`--output-format hex|base64`); `-o FILE` writes
reference values (a policy file for `--policy`) instead, `-o -` prints them. `--mode snp` (default),
`snp:ovmf-hash` (the OVMF digest for `--snp-ovmf-hash`) or `tdx` (MRTD from the TDVF metadata; `--tdx` is the
older spelling). With both `--ovmf` and `--tdx` the SNP value is printed first, then the MRTD, one per line.
TDX with a kernel (`--payload`, `--kernel`) also gives RTMR[1] and RTMR[2] of the direct boot (after the MRTD;
`tdx.rtmr1`/`tdx.rtmr2` in reference values): attestation/tdx_rtmr.py says what they cover.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

from .measure import MeasureError, reference_values, snp_measurement, tdx_mrtd
from .measure_payload import load_payload, parse_counts, vcpu_configs
from .tdx_rtmr import LAYOUTS, RtmrError, tdx_rtmr12

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
        "the TDVF metadata, and with a kernel (--payload/--kernel) RTMR[1]/RTMR[2] of the direct boot; RTMR[0] "
        "depends on the host: take it from a reference launch.",
    )
    p.add_argument("--mode", choices=MODES, default=None,
                   help="snp (default with --ovmf), snp:ovmf-hash, tdx (default with --tdvf)")
    p.add_argument("--ovmf", type=Path, help="AmdSev OVMF (SNP, with SNP_KERNEL_HASHES for direct boot)")
    p.add_argument("--payload", type=Path, help="images/build.sh output dir: vmlinuz, initrd.img, cmdline "
                   "(checked against its manifest.json; its firmware is the default --ovmf)")
    p.add_argument("--kernel", type=Path)
    p.add_argument("--initrd", type=Path)
    p.add_argument("--append", help="kernel command line (default: PAYLOAD/cmdline)")
    p.add_argument("--vcpus", default=None, metavar="N", help="vCPU count, or counts: 1,2,4 (one digest each)")
    p.add_argument("--vcpu-type", metavar="CPUTYPE",
                   help="QEMU CPU model, e.g. EPYC-v4, EPYC-Milan, EPYC-Genoa; a comma list measures each")
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
    p.add_argument("--tdx-load-options", choices=LAYOUTS, default="suffix",
                   help="TDX RTMR[2]: where OVMF puts initrd=initrd in the kernel's LoadOptions: suffix "
                   "(edk2 <= 2025.02, Debian 13's ovmf) or prefix (newer edk2)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write reference values (a --policy file) instead of printing the value ('-': stdout)")
    p.set_defaults(func=_run)


def _payload_inputs(a: argparse.Namespace) -> tuple[Path | None, Path | None, str | None]:
    kernel, initrd, append = a.kernel, a.initrd, a.append
    if a.payload:
        payload = load_payload(a.payload, a.ovmf)
        kernel = kernel or payload.kernel
        initrd = initrd or payload.initrd
        append = append if append is not None else payload.cmdline
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
    if a.payload and not a.ovmf and not a.tdvf:  # images/build.sh --firmware: measure with its firmware
        a.ovmf = load_payload(a.payload).firmware
    if mode == "snp:ovmf-hash":
        if not a.ovmf:
            raise MeasureError("--mode snp:ovmf-hash needs --ovmf")
        from sevsnpmeasure import guest

        return [guest.calc_snp_ovmf_hash(str(a.ovmf))], []
    if a.ovmf and mode == "snp":
        if a.vcpus is None:
            raise MeasureError("--vcpus is required for SEV-SNP")
        kernel, initrd, append = _payload_inputs(a)
        sig = _vcpu_sig(a)
        types = a.vcpu_type.split(",") if a.vcpu_type and sig is None else [a.vcpu_type]
        configs = vcpu_configs(parse_counts(a.vcpus), types)
        what = "firmware + kernel hashes table" if kernel else "firmware only"
        print(f"[measure] SEV-SNP launch digest (sev-snp-measure, {what})", file=sys.stderr)
        for vcpus, vcpu_type in configs:
            snp.append(snp_measurement(
                ovmf=a.ovmf, vcpus=vcpus, vcpu_type=vcpu_type, vcpu_sig=sig, kernel=kernel, initrd=initrd,
                append=append, guest_features=a.guest_features, vmm_type=a.vmm_type, ovmf_hash=a.snp_ovmf_hash,
            ))
            if len(configs) > 1:
                print(f"  vcpus={vcpus} type={vcpu_type or hex(sig or 0)} {snp[-1].hex()}", file=sys.stderr)
    if want_tdx:
        if not a.tdvf:
            raise MeasureError("TDX needs --tdvf FIRMWARE")
        print("[measure] TDX MRTD from TDVF metadata; with a kernel also RTMR[1] and RTMR[2] of the direct boot "
              "(RTMR[0] depends on the host: take it from a reference launch)", file=sys.stderr)
        mrtd.append(tdx_mrtd(a.tdvf.read_bytes(), two_pass=a.tdx_two_pass))
    if not snp and not mrtd:
        raise MeasureError("give --ovmf (SEV-SNP) and/or --mode tdx --tdvf F (TDX)")
    return snp, mrtd


def _tdx_rtmrs(a: argparse.Namespace) -> list[bytes]:
    """[RTMR[1], RTMR[2]] of a direct boot of the payload/--kernel (attestation/tdx_rtmr.py); [] without one."""
    kernel, initrd, append = _payload_inputs(a)
    if kernel is None:
        return []
    return list(tdx_rtmr12(kernel, initrd, append or "", layout=a.tdx_load_options))


def _run(a: argparse.Namespace) -> int:
    try:
        snp, mrtd = _measure(a)
        rtmrs = _tdx_rtmrs(a) if mrtd else []
        if a.output:
            if a.mode == "snp:ovmf-hash":
                raise MeasureError("--mode snp:ovmf-hash prints a firmware digest, not reference values: drop -o")
            doc = reference_values(snp_measurements=snp, mrtd=mrtd)
            for i, value in enumerate(rtmrs, start=1):
                doc["tdx"][f"rtmr{i}"] = value.hex()
            text = json.dumps(doc, indent=2) + "\n"
    except (MeasureError, RtmrError, OSError) as exc:
        print(f"aocu measure: {exc}", file=sys.stderr)
        return 2
    if not a.output:
        for value in snp + mrtd + rtmrs:  # RTMR[1], RTMR[2] follow the MRTD
            print(value.hex() if a.output_format == "hex" else base64.b64encode(value).decode())
    elif a.output == "-":
        sys.stdout.write(text)
    else:
        Path(a.output).write_text(text)
        for name, value in ([("snp.measurement", v) for v in snp] + [("tdx.mrtd", v) for v in mrtd]
                            + [(f"tdx.rtmr{i}", v) for i, v in enumerate(rtmrs, start=1)]):
            print(f"  {name} {value.hex()}", file=sys.stderr)
        print(f"[measure] wrote {a.output}", file=sys.stderr)
    return 0
