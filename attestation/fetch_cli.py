"""`aocu fetch vcek|chain|crl` (like `snpguest fetch`): the AMD KDS endorsements of an SEV-SNP report, checked
(attestation/kds.py: right chip and TCB, pinned ARK) and kept in the offline cache that `aocu evidence verify
--cache-dir` reads, and/or written with `-o FILE` (`-o -`: stdout). `aocu fetch collateral`: the Intel PCS
collateral of a TDX quote (attestation/pcs.py) into a directory for `aocu evidence verify --collateral DIR`.

The report comes from `--report FILE`, from a node (`--node URL`: its GET /~attestation@1.0/evidence), or from
this machine's SEV-SNP guest interface. `chain` and `crl` need only the product (`--product`, or the report's).
Every failure (HTTP 404, timeout, wrong content, offline and not cached) is one `aocu: error:` line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from .certs import load_any, parse_amd_extensions
from .errors import AttestationError, ParseError
from .evidence import Evidence, load_evidence
from .kds import KDS_BASE, KdsClient, KdsError, chain_path, crl_path, vcek_path
from .pcs import PCS_BASE, ROOT_CRL_URL, PcsClient, quote_fmspc_and_ca, write_dir
from .policy import SNP_PRODUCTS
from .snp import SnpReport, parse_report

DEFAULT_CACHE = Path(os.environ.get("AOCU_KDS_CACHE") or Path.home() / ".cache" / "aocu" / "kds")
MAX_DOCUMENT = 4 << 20
WHAT = {
    "vcek": "the VCEK of the report's chip at its REPORTED_TCB (DER)",
    "chain": "the ASK (ASVK for --vlek) + ARK chain of the product (PEM)",
    "crl": "the ARK-signed CRL of the product (DER)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    f = subparsers.add_parser(
        "fetch", help="fetch SEV-SNP endorsements (VCEK, ASK/ARK chain, CRL) from AMD KDS into the offline cache"
    )
    fsub = f.add_subparsers(dest="fetch_command", metavar="vcek|chain|crl", required=True)
    for what, text in WHAT.items():
        p = fsub.add_parser(what, help=f"fetch {text}")
        p.add_argument("--report", metavar="FILE", help="SNP report (binary or hex) or evidence bundle JSON")
        p.add_argument("--node", metavar="URL", help="use the node's own evidence (GET /~attestation@1.0/evidence)")
        p.add_argument("--product", help="Milan, Genoa or Turin: needed for a v2 report"
                       + ("" if what == "vcek" else "; alone, no report is needed"))
        if what != "vcek":
            p.add_argument("--vlek", action="store_true", help="the VLEK chain / CRL (default: VCEK's, or as the "
                           "report's signer)")
        if what != "chain":
            p.add_argument("--encoding", choices=("der", "pem"), default="der", help="output encoding (der)")
        p.add_argument("--kds-url", default=KDS_BASE, metavar="URL", help=f"KDS base URL (default {KDS_BASE})")
        p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, metavar="DIR",
                       help="offline cache (default $AOCU_KDS_CACHE or ~/.cache/aocu/kds)")
        p.add_argument("--offline", action="store_true", help="only the cache: never contact KDS")
        p.add_argument("--kds-interval", type=float, default=10.0, metavar="SECONDS",
                       help="spacing between KDS requests (AMD throttles to about one per 10 s; default 10)")
        p.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS", help="HTTP timeout (default 15)")
        p.add_argument("-o", "--output", metavar="FILE", help="also write it to FILE ('-': stdout)")
        p.set_defaults(func=cmd_fetch, fetch_what=what)
    c = fsub.add_parser("collateral", help="fetch a TDX quote's collateral (TCB info, QE identity, CRLs) from Intel PCS")
    c.add_argument("--report", metavar="FILE", help="TDX quote (binary or hex) or evidence bundle JSON")
    c.add_argument("--node", metavar="URL", help="use the node's own evidence (GET /~attestation@1.0/evidence)")
    c.add_argument("--pcs-url", default=PCS_BASE, metavar="URL", help=f"Intel PCS base URL (default {PCS_BASE})")
    c.add_argument("--root-crl-url", default=ROOT_CRL_URL, metavar="URL", help="the Intel SGX Root CA's CRL")
    c.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS", help="HTTP timeout (default 15)")
    c.add_argument("-o", "--output", metavar="DIR",
                   help="directory to write (default: CACHE/tdx-FMSPC under $AOCU_KDS_CACHE or ~/.cache/aocu/kds); "
                   "'-': an evidence bundle (the quote + its collateral) on stdout")
    c.set_defaults(func=cmd_collateral, fetch_what="collateral")


# -- where the report comes from ----------------------------------------------------------------------------------
def _evidence(args: argparse.Namespace) -> Evidence:
    if args.report and args.node:
        raise ParseError("give --report FILE or --node URL, not both")
    if args.report:
        from .cli_common import read_input

        return load_evidence(read_input(args.report, "report"))
    if args.node:
        return _node_evidence(args.node, args.timeout)
    from .providers import get_provider

    try:
        return get_provider("tdx" if args.fetch_what == "collateral" else "snp").get_evidence(bytes(64))
    except (AttestationError, OSError) as exc:
        alt = " (or --product)" if args.fetch_what in ("chain", "crl") else ""
        raise ParseError(f"no --report FILE or --node URL{alt}, and no report from this machine: {exc}") from None


def _node_evidence(url: str, timeout: float) -> Evidence:
    target = url.rstrip("/") + "/~attestation@1.0/evidence"
    req = urllib.request.Request(target, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the user's URL
            body = resp.read(MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:
        raise ParseError(f"{target}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise ParseError(f"{target}: {exc.reason}") from None
    except OSError as exc:
        raise ParseError(f"{target}: {exc}") from None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ParseError(f"{target}: not a JSON endorsement document") from None
    if not isinstance(doc, dict) or doc.get("evidence") is None:
        why = doc.get("no_evidence") if isinstance(doc, dict) else None
        raise ParseError(f"{target}: the node has no evidence" + (f" ({why})" if why else ""))
    return Evidence.from_json(doc["evidence"])


def report_product(report: SnpReport, given: str | None, ev: Evidence | None = None) -> str:
    """Milan / Genoa / Turin: `given` (a stepping suffix is dropped), the CPUID of a v3+ report, or the product
    name of a VCEK carried with the evidence."""
    if given:
        product = given.split("-")[0]
        if product not in SNP_PRODUCTS:
            raise ParseError(f"--product {given!r}: expected one of {', '.join(SNP_PRODUCTS)}")
        return product
    cp = report.cpuid_product()
    if cp is not None:
        return cp[0]
    leaf = (ev.endorsements.get("vcek") if ev is not None else None)
    if leaf is not None:
        family = parse_amd_extensions(load_any(leaf)[0]).product_family
        if family in SNP_PRODUCTS:
            return family
    raise ParseError(f"this v{report.version} report does not name its CPU: pass --product "
                     f"{'|'.join(SNP_PRODUCTS)}")


# -- the command --------------------------------------------------------------------------------------------------
def cmd_fetch(args: argparse.Namespace) -> int:
    what = args.fetch_what
    report: SnpReport | None = None
    ev: Evidence | None = None
    if what == "vcek" or args.report or args.node or not args.product:
        ev = _evidence(args)
        if ev.kind != "snp":
            raise ParseError(f"{ev.kind} evidence: AMD KDS serves SEV-SNP endorsements only")
        if ev.simulated:
            raise ParseError("simulated evidence: its certificates come from the node's sim-tee, not AMD KDS")
        report = parse_report(ev.raw)
    product = report_product(report, args.product, ev) if report is not None else report_product_name(args.product)
    vlek = getattr(args, "vlek", False) or (report is not None and report.signing_key == 1)
    kds = KdsClient(args.cache_dir, base_url=args.kds_url, min_interval=args.kds_interval, timeout=args.timeout,
                    offline=args.offline)
    if what == "vcek":
        assert report is not None
        path = vcek_path(report, product)
        cached = kds.cache_file(path).exists()
        data = kds.vcek(report, product)
        tcb = report.tcb("reported", product)
        label = f"VCEK {product} chip {report.chip_id.hex()[:16]}… TCB {tcb}"
    elif what == "chain":
        path = chain_path(product, vlek=vlek)
        cached = kds.cache_file(path).exists()
        data = kds.cert_chain(product, vlek=vlek)
        label = f"{'ASVK' if vlek else 'ASK'} + ARK chain {product}"
    else:
        path = crl_path(product, vlek=vlek)
        cached = args.offline
        data = kds.crl(product, vlek=vlek, keep=True)
        label = f"CRL {product}{' (VLEK)' if vlek else ''}"
    if what != "chain" and args.encoding == "pem":
        data = _to_pem(data, what)
    where = kds.cache_file(path)
    print(f"{label}: {'from the cache' if cached else 'fetched from ' + args.kds_url.rstrip('/')} -> {where}",
          file=sys.stderr)
    if args.output:
        write_output(args.output, data)
    else:
        print(where)
    return 0


def cmd_collateral(args: argparse.Namespace) -> int:
    ev = _evidence(args)
    if ev.kind != "tdx":
        raise ParseError(f"{ev.kind} evidence: Intel PCS serves TDX collateral only (SNP: aocu fetch vcek|chain|crl)")
    if ev.simulated:
        raise ParseError("simulated evidence: its collateral comes from the node's sim-tee, not Intel PCS")
    fmspc, _ = quote_fmspc_and_ca(ev.raw)
    coll = PcsClient(args.pcs_url, args.root_crl_url, args.timeout).collateral(ev.raw)
    if args.output == "-":  # one stream: the quote with its collateral, as `aocu evidence verify FILE` reads it
        write_output("-", Evidence("tdx", ev.tee, ev.raw, {"collateral": coll}).to_bytes())
        print(f"TDX collateral FMSPC {fmspc.hex()}: {len(coll)} items fetched from {args.pcs_url.rstrip('/')}",
              file=sys.stderr)
        return 0
    out = write_dir(args.output or DEFAULT_CACHE / f"tdx-{fmspc.hex()}", coll)
    print(f"TDX collateral FMSPC {fmspc.hex()}: {len(coll)} files fetched from {args.pcs_url.rstrip('/')} -> {out} "
          "(verify with --collateral DIR)", file=sys.stderr)
    print(out)
    return 0


def report_product_name(given: str | None) -> str:
    product = (given or "").split("-")[0]
    if product not in SNP_PRODUCTS:
        raise ParseError(f"--product {given!r}: expected one of {', '.join(SNP_PRODUCTS)}")
    return product


def _to_pem(data: bytes, what: str) -> bytes:
    from cryptography import x509

    if data.lstrip().startswith(b"-----"):
        return data
    if what == "crl":
        return x509.load_der_x509_crl(data).public_bytes(Encoding.PEM)
    return load_any(data)[0].public_bytes(Encoding.PEM)


def write_output(path: str, data: bytes) -> None:
    """`-o FILE` writes FILE; `-o -` writes stdout (binary as it is)."""
    if path == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(path).write_bytes(data)


# -- the offline cache, for `aocu evidence verify --cache-dir` ----------------------------------------------------
def cached_endorsements(ev: Evidence, cache_dir: str | Path, product: str | None) -> dict[str, bytes]:
    """VCEK, chain and the last kept CRL of an SNP report from the offline cache (what is there; never fetches)."""
    report = parse_report(ev.raw)
    try:
        prod = report_product(report, product, ev)
    except ParseError:
        return {}
    kds = KdsClient(cache_dir, offline=True)
    out: dict[str, bytes] = {}
    vlek = report.signing_key == 1
    for name, get in (
        ("vcek", lambda: kds.vcek(report, prod)),
        ("chain", lambda: kds.cert_chain(prod, vlek=vlek)),
        ("crl", lambda: kds.crl(prod, vlek=vlek)),
    ):
        if name == "vcek" and vlek:
            continue
        try:
            out[name] = get()
        except KdsError:
            pass
    return out
