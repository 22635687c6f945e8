"""`aocu verify URL | --response FILE`: check a signed, attested node result (registered by cu/cli.py; `main`
runs it alone). Imports no native code: a client needs only the pure-Python dependencies.

Exit codes: 0 every check passed (and the answer is a 2xx result); 1 some check failed; 2 usage or input errors
(unreadable file, no endorsements); 3 every check passed but the node answered an error status (a signed 404
is the node's genuine answer, not a result): `--allow-error-status` makes that 0.
The output starts with the HTTP status and what was verified (process, message / slot, an Output excerpt).
POST routes (the legacy dry-run, AO-Core push/compute) with `--method POST --data STRING|@FILE [--header ...]`.
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

EXIT_ERROR_STATUS = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    v = subparsers.add_parser(
        "verify",
        help="verify a signed, attested result (URL or a `curl -si` file); exit 0 only if every check passes "
             "and the answer is a 2xx result (3: a verified error answer)",
    )
    v.add_argument("url", nargs="?", metavar="URL", help="result URL to fetch (GET, or --method) and verify")
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
    v.add_argument("--method", metavar="METHOD", help="with URL: the request method (default GET, or POST with --data)")
    v.add_argument("--data", metavar="STRING|@FILE",
                   help="with URL: request body (@FILE reads a file, @- stdin); e.g. a dry-run's JSON message")
    v.add_argument("--header", action="append", default=[], metavar="'Name: value'",
                   help="with URL: a request header (repeatable)")
    v.add_argument("--allow-error-status", action="store_true",
                   help="exit 0 for a verified answer with an error status (4xx/5xx) too (default: exit 3)")
    v.add_argument("--at", metavar="ISO-TIME", help="verification time for certificates (default: now)")
    v.add_argument("--timeout", type=float, default=30.0, help="HTTP timeout in seconds (default 30)")
    v.add_argument("--json", action="store_true", help="machine-readable output: one JSON object on one line")
    v.add_argument("-v", "--verbose", action="store_true", help="list every evidence sub-check, not only failures")
    v.set_defaults(func=cmd_verify)


def _err(msg: str) -> int:
    print(f"aocu: error: {msg}", file=sys.stderr)
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


def _request_body(spec: str | None) -> bytes | None:
    if spec is None:
        return None
    if spec == "@-":
        data = sys.stdin.buffer.read(MAX_RESPONSE + 1)
        if len(data) > MAX_RESPONSE:
            raise ResponseFormatError(f"--data @-: more than {MAX_RESPONSE} bytes")
        return data
    if spec.startswith("@"):
        return _read(spec[1:], "--data file", MAX_RESPONSE)
    return spec.encode()


def _request_headers(specs: list[str], body: bytes | None, codec: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        if not sep or not name.strip() or name != name.strip() or any(c in name for c in " \t\r\n"):
            raise ResponseFormatError(f"--header must be 'Name: value', got {spec!r}")
        if "\r" in value or "\n" in value:
            raise ResponseFormatError(f"--header {name}: the value must be one line")
        headers[name] = value.strip()
    lower = {k.lower() for k in headers}
    if codec == "ans104" and "accept-codec" not in lower:
        headers["accept-codec"] = ANS104_CODEC
    if body is not None and "content-type" not in lower:
        try:
            json.loads(body)
            headers["Content-Type"] = "application/json"
        except ValueError:
            headers["Content-Type"] = "application/octet-stream"
    return headers


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
    if args.url is None and (args.method or args.data is not None or args.header):
        return _err("--method, --data and --header need a URL (they shape the request)")
    try:
        policy, at, trust = trust_from_args(args, ResponseFormatError)
        expected = _nonce(args.nonce) if args.nonce else None
        extra = {k: _read(getattr(args, k), k) for k in ("vcek", "chain", "crl") if getattr(args, k)}
        if args.url is not None:
            url, expected = _with_nonce(args.url, expected, args.fresh)
            body = _request_body(args.data)
            headers = _request_headers(args.header, body, args.codec)
            method = (args.method or ("POST" if body is not None else "GET")).upper()
            if not method.isalpha():
                return _err(f"--method: not an HTTP method: {args.method!r}")
            resp = fetch(url, headers=headers, timeout=args.timeout, method=method, data=body)
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
        print(json.dumps(rep.to_dict()))   # one object on one line, as every aocu --json (JSON Lines)
    else:
        print(rep.format_text(verbose=args.verbose))
    if not rep.ok:
        return 1
    if not rep.status_ok and not args.allow_error_status:
        print(f"aocu verify: the verified answer is HTTP {rep.status}, not a successful result "
              "(exit 3; --allow-error-status accepts signed error answers)", file=sys.stderr)
        return EXIT_ERROR_STATUS
    return 0


def main(argv: list[str] | None = None) -> int:
    """`aocu verify ...` on its own (same arguments and exit codes as through cu.cli)."""
    parser = argparse.ArgumentParser(prog="aocu")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(["verify", *(sys.argv[1:] if argv is None else argv)])
    return cmd_verify(args)


if __name__ == "__main__":
    sys.exit(main())
