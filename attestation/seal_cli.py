"""`aocu seal key`: write a 32-byte sealing key (attestation.sealing.derive_key) to a file (0600) or a pipe.

Exit codes: 0 written; 1 no sealing key on this TEE (SealingUnavailable, one line); 2 usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .sealing import SealingUnavailable, derive_key


def register(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser("seal", help="sealing keys bound to this TEE (docs/SEALING.md)")
    ssub = s.add_subparsers(dest="seal_command", metavar="SUBCOMMAND")
    s.set_defaults(func=lambda a: (s.print_help(sys.stderr), 2)[1])
    k = ssub.add_parser("key", help="derive the sealing key for LABEL and write its 32 raw bytes")
    k.add_argument("--tee", required=True, choices=["auto", "snp", "tdx", "sim", "none"])
    k.add_argument("--label", required=True, help="what the key is for, e.g. aocu/volume/v1")
    k.add_argument("--data-dir", help="holds the root of --tee sim (sim-tee/) and --tee none (sealing.key)")
    k.add_argument("-o", "--output", required=True, metavar="FILE|-", help="file (created 0600) or - for stdout")
    k.set_defaults(func=cmd_key)


def cmd_key(args: argparse.Namespace) -> int:
    if args.output == "-" and sys.stdout.isatty():
        print("aocu seal key: error: refusing to write a raw key to a terminal (use -o FILE or a pipe)",
              file=sys.stderr)
        return 2
    try:
        key = derive_key(args.tee, args.label, data_dir=Path(args.data_dir) if args.data_dir else None)
    except SealingUnavailable as exc:
        print(f"aocu seal key: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"aocu seal key: error: {exc}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.flush()
        os.write(sys.stdout.fileno(), key)
        return 0
    path = Path(args.output)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return 0
