"""What `aocu evidence verify` (attestation.cli) and `aocu verify` (cu.verify.cli) share: reading
input files, the `--at` time, and the policy and trust store built from `--policy`, `--allow-simulated` and
`--data-dir`.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from .errors import MAX_INPUT_BYTES, ParseError
from .policy import Policy
from .trust import TrustStore


def add_simulated_arguments(parser: argparse.ArgumentParser) -> None:
    """`--allow-simulated [ROOT.pem]` and the `--data-dir` its bare form looks in."""
    parser.add_argument(
        "--allow-simulated",
        nargs="?",
        const="",
        metavar="ROOT.pem",
        help="trust this simulated-TEE root (bare flag: DATA_DIR/sim-tee/roots.pem)",
    )
    parser.add_argument(
        "--data-dir", default="./data", help="data dir for a bare --allow-simulated (default ./data)"
    )


def read_input(
    path: str, what: str, limit: int = MAX_INPUT_BYTES, error: type[Exception] = ParseError
) -> bytes:
    """The bytes of `path`; `error` (naming `what`) when it is not a file or is larger than `limit`."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {path}: no such file")
    if p.stat().st_size > limit:
        raise error(f"{what} {path}: larger than {limit} bytes")
    return p.read_bytes()


def parse_time(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ParseError(f"--at {text!r}: not an ISO-8601 time") from None
    if t.tzinfo is None:
        raise ParseError(f"--at {text!r}: give a timezone (e.g. a trailing Z)")
    return t.astimezone(dt.UTC)


def trust_from_args(
    args: argparse.Namespace, error: type[Exception] = ParseError
) -> tuple[Policy, dt.datetime | None, TrustStore]:
    """(policy, verification time, trust store) from --policy, --at, --allow-simulated and --data-dir: strict
    defaults and the pinned roots, plus the simulated root (which also sets allow_simulated) when asked for.
    `error` is raised for an unreadable simulated root."""
    policy = Policy.from_file(args.policy) if args.policy else Policy.strict()
    at = parse_time(args.at) if args.at else None
    trust = TrustStore.default()
    if args.allow_simulated is not None:
        root = args.allow_simulated or str(Path(args.data_dir) / "sim-tee" / "roots.pem")
        trust = trust.with_simulated(read_input(root, "simulated root", error=error))
        policy.allow_simulated = True
    return policy, at, trust
