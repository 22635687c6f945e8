"""`aocu evidence verify|show` and `aocu attest` (registered by cu/cli.py through `register(subparsers)`).

Exit codes: 0 verified / success; 1 evidence not verified (or not obtainable); 2 usage or input errors.
`evidence verify` takes inline reference values (`--measurement HEX`, `--report-data HEX`, `--min-tcb ...`:
attestation/check_flags.py) over an optional `--policy` file; unconstrained values print as SKIP. `--json` prints
one object per FILE per line (JSON Lines) whether one FILE is given or many.
Simulated roots: `--allow-simulated ROOT.pem` trusts that PEM (the `roots.pem` that `aocu attest --tee sim`
reports, DATA_DIR/sim-tee/roots.pem); a bare `--allow-simulated` uses DATA_DIR/sim-tee/roots.pem with
DATA_DIR from `--data-dir` (default ./data). Either also sets the policy's allow_simulated.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .check_flags import add_check_arguments, apply_check_flags
from .cli_common import (
    add_simulated_arguments,
    parse_time,  # noqa: F401 - re-exported (was defined here)
    read_input,
    trust_from_args,
)
from .collateral import load_collateral_dir
from .errors import AttestationError, ParseError
from .evidence import Evidence, load_evidence, verify_evidence
from .fetch_cli import DEFAULT_CACHE as DEFAULT_KDS_CACHE
from .fetch_cli import cached_endorsements


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("evidence", help="verify or decode SEV-SNP reports and TDX quotes")
    evsub = ev.add_subparsers(dest="evidence_command", metavar="SUBCOMMAND")
    ev.set_defaults(func=lambda a: (ev.print_help(sys.stderr), 2)[1])

    v = evsub.add_parser(
        "verify", help="verify evidence offline; prints every check; exit 0 only if verified"
    )
    v.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="SNP report (binary or hex), TDX quote, or evidence bundle JSON from `aocu attest`",
    )
    v.add_argument("--vcek", help="VCEK or VLEK certificate (DER or PEM)")
    v.add_argument("--chain", help="ASK/ASVK + ARK PEM (KDS cert_chain); default: the pinned shipped chain")
    v.add_argument("--cert-table", help="extended-report GHCB certificate table")
    v.add_argument("--crl", help="AMD ARK-signed CRL (DER or PEM)")
    v.add_argument(
        "--collateral",
        metavar="DIR",
        help="TDX collateral directory (tcbInfo / QE identity JSON, issuer chains, CRLs; found by content)",
    )
    v.add_argument(
        "--policy", metavar="RV.json", help="reference values / policy file (strict defaults otherwise)"
    )
    v.add_argument(
        "--at", metavar="ISO-TIME", help="verification time, e.g. 2025-06-01T00:00:00Z (default: now)"
    )
    v.add_argument(
        "--product", help="Milan, Genoa or Turin (optionally with stepping, Milan-B0) for v2 reports"
    )
    v.add_argument(
        "--cache-dir",
        nargs="?",
        const=str(DEFAULT_KDS_CACHE),
        metavar="DIR",
        help="SNP: take a missing VCEK / chain / CRL from the offline KDS cache that `aocu fetch` fills "
        "(bare flag: $AOCU_KDS_CACHE or ~/.cache/aocu/kds); never contacts KDS",
    )
    add_simulated_arguments(v)
    add_check_arguments(v)
    v.add_argument("--json", action="store_true", help="one JSON object per FILE, one per line (JSON Lines)")
    v.set_defaults(func=cmd_verify)

    s = evsub.add_parser("show", help="print decoded fields of a report / quote")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--product", help="product for decoding a v2 report's TCB (default: from its certificate)")
    s.set_defaults(func=cmd_show)

    a = subparsers.add_parser("attest", help="produce attestation evidence on this machine")
    a.add_argument(
        "--tee", default="auto", choices=["auto", "snp", "tdx", "sim", "sim-snp", "sim-tdx", "none"]
    )
    a.add_argument(
        "--nonce",
        default="",
        metavar="HEX",
        help="up to 64 bytes placed in REPORT_DATA, zero-padded (default: all zero)",
    )
    a.add_argument(
        "--data-dir", default="./data", help="where the simulated TEE keeps its keys (default ./data)"
    )
    a.add_argument("--vmpl", type=int, default=0, help="SNP VMPL to request (0-3)")
    a.add_argument("--product", default="Milan", help="simulated SNP product: Milan, Genoa, Turin")
    a.add_argument(
        "--root", default="/", help=argparse.SUPPRESS
    )  # filesystem root of the TEE interfaces (tests)
    a.add_argument("--raw", action="store_true", help="write only the report/quote bytes, not the bundle")
    a.add_argument("-o", "--output", metavar="FILE", help="output file (default or '-': stdout)")
    a.set_defaults(func=cmd_attest)


def _err(msg: str) -> int:
    print(f"aocu: error: {msg}", file=sys.stderr)
    return 2


def _read(path: str, what: str) -> bytes:
    return read_input(path, what)


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        policy, at, trust = trust_from_args(args)
        policy = apply_check_flags(policy, args)
        kw: dict = {
            "vcek": _read(args.vcek, "VCEK") if args.vcek else None,
            "chain": _read(args.chain, "chain") if args.chain else None,
            "cert_table": _read(args.cert_table, "cert table") if args.cert_table else None,
            "crl": _read(args.crl, "CRL") if args.crl else None,
            "product": args.product,
        }
        blobs = [(f, _read(f, "evidence")) for f in args.files]
    except (AttestationError, ValueError, OSError) as exc:
        return _err(str(exc))
    all_ok = True
    many = len(blobs) > 1
    for i, (name, blob) in enumerate(blobs, 1):
        if many:
            print(f"[{i}/{len(blobs)}] {name}", file=sys.stderr, flush=True)
        collateral = None
        if args.collateral:
            fmspc = _fmspc_of(blob)
            collateral = load_collateral_dir(args.collateral, fmspc)
        rep = verify_evidence(
            blob, policy=policy, at=at, trust=trust, collateral=collateral, **_with_cache(args, blob, kw)
        )
        all_ok &= rep.ok
        if args.json:  # JSON Lines: the same shape for one FILE or many
            print(json.dumps({"file": name, **rep.to_dict()}), flush=True)
        else:
            if many:
                print(f"== {name}")
            print(rep.format_text())
    return 0 if all_ok else 1


def _with_cache(args: argparse.Namespace, blob: bytes, kw: dict) -> dict:
    """kw plus what the offline KDS cache holds for an SNP report that lacks it (explicit flags and the
    bundle's own endorsements win)."""
    if not args.cache_dir:
        return kw
    try:
        ev = load_evidence(blob)
    except AttestationError:
        return kw
    if ev.kind != "snp" or ev.simulated:
        return kw
    found = cached_endorsements(ev, args.cache_dir, args.product)
    out = dict(kw)
    for name, data in found.items():
        if name == "vcek" and "cert_table" in ev.endorsements:
            continue  # the extended report carries its own VCEK
        if out.get(name) is None and name not in ev.endorsements:
            out[name] = data
    return out


def _fmspc_of(blob: bytes) -> bytes | None:
    try:
        ev = load_evidence(blob)
        if ev.kind != "tdx":
            return None
        from .certs import load_any
        from .tdx import parse_pck_extensions, parse_quote

        return parse_pck_extensions(load_any(parse_quote(ev.raw).pck_chain_pem)[0]).fmspc
    except (AttestationError, ValueError, IndexError):
        return None


def cmd_show(args: argparse.Namespace) -> int:
    try:
        ev = load_evidence(_read(args.file, "evidence"))
        out = describe(ev, args.product)
    except (AttestationError, ValueError, OSError) as exc:
        return (
            _err(str(exc))
            if not isinstance(exc, ParseError)
            else (print(f"aocu: invalid evidence: {exc}", file=sys.stderr) or 1)
        )
    print(json.dumps(out, indent=1))
    return 0


def describe(ev: Evidence, product: str | None = None) -> dict:
    from .certs import cn, load_any, parse_amd_extensions

    if ev.kind == "tdx":
        from .tdx import parse_pck_extensions, parse_quote

        q = parse_quote(ev.raw)
        out = q.describe()
        try:
            chain = load_any(q.pck_chain_pem)
            p = parse_pck_extensions(chain[0])
            out["pck_chain"] = [cn(c.subject) for c in chain]
            out["pck"] = {
                "fmspc": p.fmspc.hex(),
                "pce_id": p.pce_id.hex(),
                "pce_svn": p.pce_svn,
                "cpu_svn": p.cpu_svn.hex(),
            }
        except (AttestationError, ValueError) as exc:
            out["pck_chain_error"] = str(exc)
    else:
        from .snp import parse_cert_table, parse_report

        r = parse_report(ev.raw)
        leaf = ev.endorsements.get("vcek")
        if leaf is None and "cert_table" in ev.endorsements:
            t = parse_cert_table(ev.endorsements["cert_table"])
            leaf = t.get("vcek") or t.get("vlek")
        ext = None
        if leaf is not None:
            ext = parse_amd_extensions(load_any(leaf)[0])
        if product is None and r.cpuid_product() is None and ext is not None:
            product = ext.product_family
        out = r.describe(product.split("-")[0] if product else None)
        if ext is not None:
            out["certificate"] = {
                "product_name": ext.product_name,
                "struct_version": ext.struct_version,
                "hwid": ext.hwid.hex() if ext.hwid else None,
                "csp_id": ext.csp_id,
            }
    out["tee"] = ev.tee
    return out


def cmd_attest(args: argparse.Namespace) -> int:
    from .providers import SimProvider, get_provider

    try:
        nonce = bytes.fromhex(args.nonce)
    except ValueError:
        return _err("--nonce must be hex")
    if len(nonce) > 64:
        return _err("--nonce is at most 64 bytes")
    try:
        provider = get_provider(args.tee, args.data_dir, root=args.root, vmpl=args.vmpl, product=args.product)
        ev = provider.get_evidence(nonce.ljust(64, b"\0"))
    except ValueError as exc:
        return _err(str(exc))
    except (AttestationError, OSError) as exc:
        print(f"aocu: cannot produce evidence: {exc}", file=sys.stderr)
        return 1
    data = ev.raw if args.raw else ev.to_bytes()
    if args.output == "-":
        args.output = None
    if args.output:
        try:
            Path(args.output).write_bytes(data)
        except OSError as exc:
            return _err(f"cannot write {args.output}: {exc}")
    elif args.raw:
        sys.stdout.write(ev.raw.hex() + "\n")
    else:
        sys.stdout.write(data.decode())
    msg = f"{ev.tee} evidence ({len(ev.raw)} bytes)" + (f" written to {args.output}" if args.output else "")
    if isinstance(provider, SimProvider):
        msg += f"; SIMULATED — verify with: aocu evidence verify FILE --allow-simulated {provider.roots_path}"
    print(msg, file=sys.stderr)
    return 0
