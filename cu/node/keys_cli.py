"""`aocu keys rotate --data-dir D`: a new result-signing (ed25519) key and epoch; the old key stays listed as a
past key with the key-binding evidence the node produced for it (cu/node/keys.py), so results it signed keep
verifying. The wallet (the node's address) is not rotated. Run it with the node stopped: a running evaluator
holds the data dir and the command refuses; the new key is bound by fresh evidence when the node starts."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    k = subparsers.add_parser("keys", help="the node's result-signing keys (docs/SEALING.md)")
    ksub = k.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    k.set_defaults(func=lambda a: (k.print_help(sys.stderr), 2)[1])
    r = ksub.add_parser("rotate", help="new ed25519 key and epoch; the old key is kept as a past key")
    r.add_argument("--data-dir", required=True, help="the node's data dir")
    r.add_argument("--wallet", metavar="JWK", help="the node's wallet if not DATA-DIR/wallet.json")
    r.set_defaults(func=cmd_rotate)


def _node_running(data_dir: Path) -> bool:
    lock = data_dir / "evaluator.lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def cmd_rotate(args: argparse.Namespace) -> int:
    from cu.hashing import b64url
    from cu.node.identity import NodeIdentity
    from cu.node.keys import KeyHistory

    d = Path(args.data_dir)
    if not d.is_dir():
        raise SystemExit(f"aocu keys rotate: data dir {d} does not exist")
    if _node_running(d):
        raise SystemExit(f"aocu keys rotate: a node is running on {d}; stop it first (its workers hold the "
                         "current key in memory)")
    ident = NodeIdentity.load(d, wallet_path=args.wallet, create=False)
    old_epoch, old_pub = ident.epoch, b64url(ident.ed25519_pub)
    new_epoch = ident.rotate()
    retired = KeyHistory(d).retire_current()
    note = "with its key-binding evidence" if retired and retired.get("evidence") else "without evidence"
    print(f"epoch {old_epoch} -> {new_epoch}: ed25519 {old_pub} -> {b64url(ident.ed25519_pub)}")
    print(f"the old key is listed as a past key ({note}); start the node to bind the new key with fresh evidence")
    return 0
