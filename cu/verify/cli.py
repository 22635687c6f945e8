"""`aocu verify URL | --response FILE`: check a signed, attested node result (registered by cu/cli.py; `main`
runs it alone). Imports no native code: a client needs only the pure-Python dependencies.

Exit codes: 0 every check passed; 1 some check failed; 2 usage or input errors (unreadable file, no endorsements).
Endorsements come from the node's GET /~attestation@1.0/evidence (the URL's node, or --node URL for a
saved response), or from a saved document (--evidence FILE). `--allow-simulated [ROOT.pem]` trusts a
simulated-TEE root (bare: DATA_DIR/sim-tee/roots.pem) and sets the policy's allow_simulated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from attestation.cli_common import add_simulated_arguments, read_input, trust_from_args
from attestation.errors import MAX_INPUT_BYTES, AttestationError
from cu.verify.response import verify_response
from cu.verify.transport import (
    MAX_RESPONSE,
    ResponseFormatError,
    fetch,
    fetch_endorsements,
    load_document,
    parse_raw_response,
)
from cu.wire.response import ANS104_CODEC


def register(subparsers: argparse._SubParsersAction) -> None:
    v = subparsers.add_parser(
        "verify",
        help="verify a signed, attested result (URL or a `curl -si` file); exit 0 only if every check passes",
    )
    v.add_argument("url", nargs="?", metavar="URL", help="result URL to fetch (GET) and verify")
    v.add_argument("--response", metavar="FILE", help="raw HTTP response as `curl -si URL > FILE` saves it")
    v.add_argument("--evidence", metavar="FILE",
                   help="endorsement document saved from GET /~attestation@1.0/evidence (default: fetch it)")
    v.add_argument("--node", metavar="URL", help="node to fetch endorsements from, for --response FILE")
    v.add_argument("--vcek", help="SNP VCEK/VLEK certificate (DER or PEM) when the node's document has none")
    v.add_argument("--chain", help="SNP ASK/ASVK + ARK PEM (default: the document's, else the pinned chain)")
    v.add_argument("--crl", help="AMD ARK-signed CRL (DER or PEM)")
    v.add_argument("--policy", metavar="RV.json", help="reference values / policy file (strict defaults otherwise)")
    add_simulated_arguments(v)
    v.add_argument("--nonce", metavar="HEX",
                   help="the attest-nonce you sent: the response must carry fresh evidence bound to it "
                        "(with URL: added as ?attest-nonce= when the URL has none)")
    v.add_argument("--fresh", action="store_true", help="with URL: send a random attest-nonce and check it")
    v.add_argument("--live", action="store_true",
                   help="fetch the endorsements with a random ?nonce= and check the node's keys are live in its TEE")
    v.add_argument("--codec", choices=["httpsig", "ans104"], default="httpsig",
                   help="with URL: ans104 sends accept-codec: ans104@1.0")
    v.add_argument("--at", metavar="ISO-TIME", help="verification time for certificates (default: now)")
    v.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds (default 30)")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.add_argument("-v", "--verbose", action="store_true", help="list every evidence sub-check, not only failures")
    v.set_defaults(func=cmd_verify)


def _err(msg: str) -> int:
    print(f"aocu verify: error: {msg}", file=sys.stderr)
    return 2


def _read(path: str, what: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    return read_input(path, what, limit, ResponseFormatError)


def _nonce(text: str) -> bytes:
    t = text.strip()
    if not t or len(t) % 2 or len(t) > 128:
        raise ResponseFormatError("--nonce: 1..64 bytes of hex")
    try:
        return bytes.fromhex(t)
    except ValueError:
        raise ResponseFormatError("--nonce: not hex") from None


def _with_nonce(url: str, nonce: bytes | None, fresh: bool) -> tuple[str, bytes | None]:
    parts = urlsplit(url)
    q = parse_qs(parts.query, keep_blank_values=True)
    if "attest-nonce" in q:
        given = _nonce(q["attest-nonce"][0])
        if nonce is not None and nonce != given:
            raise ResponseFormatError("--nonce differs from the URL's attest-nonce")
        return url, given
    if nonce is None and fresh:
        nonce = os.urandom(32)
    if nonce is None:
        return url, None
    query = (parts.query + "&" if parts.query else "") + urlencode({"attest-nonce": nonce.hex()})
    return urlunsplit(parts._replace(query=query)), nonce


def cmd_verify(args: argparse.Namespace) -> int:
    # `--allow-simulated URL` (flag followed by the URL) means a bare flag
    if args.url is None and args.allow_simulated and args.allow_simulated.startswith(("http://", "https://")):
        args.url, args.allow_simulated = args.allow_simulated, ""
    if (args.url is None) == (args.response is None):
        return _err("give either URL or --response FILE")
    try:
        policy, at, trust = trust_from_args(args, ResponseFormatError)
        expected = _nonce(args.nonce) if args.nonce else None
        extra = {k: _read(getattr(args, k), k) for k in ("vcek", "chain", "crl") if getattr(args, k)}
        if args.url is not None:
            url, expected = _with_nonce(args.url, expected, args.fresh)
            headers = {"accept-codec": ANS104_CODEC} if args.codec == "ans104" else {}
            resp = fetch(url, headers=headers, timeout=args.timeout)
        else:
            if args.fresh:
                return _err("--fresh needs a URL (for a saved response pass the nonce you sent with --nonce)")
            resp = parse_raw_response(_read(args.response, "response", MAX_RESPONSE))
        live = os.urandom(32) if args.live else None
        if args.evidence:
            if live is not None:
                return _err("--live fetches the endorsements itself: drop --evidence")
            doc = load_document(_read(args.evidence, "endorsement document"))
        elif args.url is not None or args.node:
            doc = fetch_endorsements(args.url or args.node, nonce=live, timeout=args.timeout)
        else:
            return _err("a saved response needs its node's endorsements: --evidence FILE or --node URL")
    except (AttestationError, ValueError, OSError) as exc:
        return _err(str(exc))
    rep = verify_response(resp, doc, policy=policy, trust=trust, at=at, expected_nonce=expected,
                          endorsements=extra, live_nonce=live)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=1))
    else:
        print(rep.format_text(verbose=args.verbose))
    return 0 if rep.ok else 1


def main(argv: list[str] | None = None) -> int:
    """`aocu verify ...` on its own (same arguments and exit codes as through cu.cli)."""
    parser = argparse.ArgumentParser(prog="aocu")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["verify", *(sys.argv[1:] if argv is None else argv)])
    return cmd_verify(args)


if __name__ == "__main__":
    sys.exit(main())
