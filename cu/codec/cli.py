"""`aocu item show|verify|sign` and `aocu wallet new|show` (README.md, "Using it").

Conventions shared by every aocu command: `-o -` is stdout wherever `-o` exists (what would have gone to stdout
then goes to stderr); `--json` prints one JSON object per input, one per line (JSON Lines)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cu.codec.ans104 import DataItem
from cu.codec.bundle import is_bundle, parse_bundle
from cu.codec.errors import CodecError
from cu.codec.hashes import b64url
from cu.codec.wallet import ArweaveWallet, Ed25519Key, Secp256k1Key, load_key


def register(subparsers: argparse._SubParsersAction) -> None:
    item = subparsers.add_parser("item", help="ANS-104 data items: show, verify, sign")
    isub = item.add_subparsers(dest="item_command", metavar="ACTION", required=True)

    show = isub.add_parser("show", help="decode a data item as JSON")
    show.add_argument("file")
    show.set_defaults(func=_item_show)

    verify = isub.add_parser("verify", help="exit 0 only if the item's signature verifies")
    verify.add_argument("file")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=_item_verify)

    sign = isub.add_parser("sign", help="create and sign a data item")
    sign.add_argument("--wallet", required=True, help="Arweave JWK, Ed25519 OKP JWK, secp256k1 EC JWK or hex key")
    sign.add_argument("--type", type=int, choices=(1, 2, 3, 4), help="signature type (default: the key's)")
    sign.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE")
    sign.add_argument("--target", help="43-character base64url id")
    sign.add_argument("--anchor", help="exactly 32 bytes of text (e.g. an AOS nonce)")
    sign.add_argument("--data", required=True, help="file with the item data ('-' for stdin)")
    sign.add_argument("-o", "--output", required=True, metavar="FILE", help="the signed item ('-': stdout)")
    sign.set_defaults(func=_item_sign)

    wallet = subparsers.add_parser("wallet", help="wallets: new, show")
    wsub = wallet.add_subparsers(dest="wallet_command", metavar="ACTION", required=True)
    new = wsub.add_parser("new", help="generate an Arweave RSA-4096 JWK wallet (or --type ed25519/secp256k1)")
    new.add_argument("-o", "--output", metavar="FILE", help="write the JWK here (mode 0600); default or '-': stdout")
    new.add_argument("--type", choices=("arweave", "ed25519", "secp256k1"), default="arweave")
    new.set_defaults(func=_wallet_new)
    wshow = wsub.add_parser("show", help="print a wallet's address and public key")
    wshow.add_argument("jwk")
    wshow.set_defaults(func=_wallet_show)


def _fail(msg: str, code: int = 1) -> int:
    print(f"aocu: error: {msg}", file=sys.stderr)
    return code


def write_output(path: str, data: bytes) -> bool:
    """`-o PATH`: write PATH, or stdout for '-' (then True: the caller's own stdout line goes to stderr)."""
    if path == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return True
    Path(path).write_bytes(data)
    return False


def _read(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def _load_item(path: str) -> DataItem:
    return DataItem.parse(_read(path))


def _item_show(args: argparse.Namespace) -> int:
    try:
        item = _load_item(args.file)
    except (OSError, CodecError) as exc:
        return _fail(str(exc))
    out = item.to_json()
    if is_bundle(item):
        try:
            out["bundle"] = [i.id for i in parse_bundle(item.data)]
        except CodecError as exc:
            out["bundle_error"] = str(exc)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


def _item_verify(args: argparse.Namespace) -> int:
    try:
        item = _load_item(args.file)
        ok = item.verify()
    except (OSError, CodecError) as exc:
        if args.json:
            print(json.dumps({"valid": False, "error": str(exc)}))
        return _fail(str(exc))
    if args.json:
        print(json.dumps({"valid": ok, "id": item.id, "signature_type": item.signature_type,
                          "owner_address": item.owner_address}))
    else:
        print(f"{'valid' if ok else 'INVALID'} {item.id} (type {item.signature_type}, owner {item.owner_address})")
    return 0 if ok else 1


def _item_sign(args: argparse.Namespace) -> int:
    try:
        key = load_key(args.wallet)
        if args.type is not None and args.type != key.signature_type:
            if isinstance(key, Ed25519Key) and args.type in (2, 4):
                key = Ed25519Key(key._key, args.type)  # same key, other ANS-104 type
            else:
                return _fail(f"--type {args.type} does not match the key (it signs type {key.signature_type})", 2)
        tags = []
        for t in args.tag:
            name, sep, value = t.partition("=")
            if not sep or not name:
                return _fail(f"--tag must be NAME=VALUE, got {t!r}", 2)
            tags.append((name, value))
        item = DataItem.create(key, data=_read(args.data), tags=tags, target=args.target, anchor=args.anchor)
        to_stdout = write_output(args.output, item.to_bytes())
    except (OSError, CodecError) as exc:
        return _fail(str(exc))
    print(item.id, file=sys.stderr if to_stdout else sys.stdout)
    return 0


def _wallet_new(args: argparse.Namespace) -> int:
    if args.output == "-":
        args.output = None
    if args.output and os.path.lexists(args.output):   # before the (slow) key generation
        return _fail(f"{args.output} already exists: not overwriting it (choose another -o path)")
    key = {"arweave": ArweaveWallet.generate, "ed25519": Ed25519Key.generate,
           "secp256k1": Secp256k1Key.generate}[args.type]()
    text = json.dumps(key.to_jwk())
    if args.output:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return _fail(f"{args.output} already exists: not overwriting it (choose another -o path)")
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        print(key.address)
    else:
        print(text)
        print(key.address, file=sys.stderr)
    return 0


def _wallet_show(args: argparse.Namespace) -> int:
    try:
        key = load_key(args.jwk)
    except (OSError, CodecError) as exc:
        return _fail(str(exc))
    out = {"address": key.address, "signature_type": key.signature_type, "owner": b64url(key.owner)}
    if isinstance(key, ArweaveWallet):
        out["public_jwk"] = key.public_jwk()
        out["bits"] = len(key.owner) * 8
    print(json.dumps(out, indent=2))
    return 0
