"""`aocu serve`: gunicorn workers serving the Flask app (cu.http), next to one evaluator process for the data dir
(cu.node.service, supervised by supervisor.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cu.node.config import TEE_CHOICES, NodeConfig
from cu.serve.gunicorn_app import run_gunicorn
from cu.serve.supervisor import Supervisor

log = logging.getLogger("aocu.serve")

TEE_DEVICES = {"snp": ("/dev/sev-guest",), "tdx": ("/dev/tdx_guest", "/dev/tdx-guest")}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the node (MU + SU + CU) under gunicorn")
    p.add_argument("--bind", default="127.0.0.1:6363", help="HOST:PORT (default 127.0.0.1:6363)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    p.add_argument("--data-dir", default="./data", help="SQLite store, keys and caches (default ./data)")
    p.add_argument("--tee", choices=TEE_CHOICES, default="auto",
                   help="auto uses SNP/TDX when present, otherwise serves with none (said on every response)")
    p.add_argument("--wallet", help="Arweave JWK of the node (default: DATA-DIR/wallet.json, created if absent)")
    p.add_argument("--module-cache", help="compiled-module cache directory (default DATA-DIR/module-cache)")
    p.add_argument("--max-body", type=int, default=NodeConfig.max_body, help="POST / body limit in bytes")
    p.add_argument("--checkpoint-every", type=int, default=NodeConfig.checkpoint_every,
                   help="evaluations between checkpoints")
    p.add_argument("--max-warm", type=int, default=NodeConfig.max_warm,
                   help="warm process instances kept in memory (least recently used are checkpointed out)")
    p.add_argument("--block-height", type=int, default=0, help="block height stamped on assignments")
    p.add_argument("--eval-timeout", type=float, default=NodeConfig.eval_timeout_s,
                   help="wall-clock limit of one evaluation in seconds (the message gets an Error result)")
    p.add_argument("--busy-after", type=float, default=NodeConfig.busy_s,
                   help="seconds a /result waits for an evaluation before answering 202 'in progress'")
    p.add_argument("--crank-delay", type=float, default=NodeConfig.crank_delay_s,
                   help="seconds after its acknowledgement an unread message is evaluated (and its outbox "
                        "delivered); a /result request arriving first evaluates it itself (default 0.02)")
    p.add_argument("--quiet", action="store_true", help="no per-request log lines")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="browser origin allowed to call the node (repeatable; default: any, *)")
    b = p.add_argument_group("legacynet bridge", "compute processes scheduled on a legacy SU (off without --gateway)")
    b.add_argument("--gateway", help="Arweave gateway URL (GraphQL at /graphql, data at /raw/{id})")
    b.add_argument("--graphql", help="GraphQL URL when it is not GATEWAY/graphql")
    b.add_argument("--su-url", help="scheduler URL for every remote process (overrides Scheduler-Location)")
    b.add_argument("--bridge-allow", action="append", default=[], metavar="PID",
                   help="only these remote processes (repeatable; default: any)")
    b.add_argument("--bridge-deny", action="append", default=[], metavar="PID", help="never these (repeatable)")
    b.add_argument("--checkpoint-owners", action="append", default=[], metavar="ADDRESS",
                   help="trust Arweave checkpoints uploaded by these addresses (repeatable)")
    b.add_argument("--deliver-bridged", action="store_true",
                   help="deliver bridged processes' outbox messages to processes on this node (off: on legacynet "
                        "the legacy MU cranks those outboxes)")
    x = p.add_argument_group("outbox delivery", "push outbox messages to processes scheduled elsewhere "
                                                "(docs/EXCHANGE.md)")
    x.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="an AO-Core / aocu node whose processes this node's processes message (repeatable)")
    x.add_argument("--push-codec", choices=("ans104", "httpsig"), default=NodeConfig.push_codec,
                   help="form outbox messages are signed in: ANS-104 items (default) or httpsig@1.0 (peers only; "
                        "legacy SUs take ANS-104)")
    x.add_argument("--outbox-retry-max", type=float, default=NodeConfig.outbox_retry_max_s, metavar="SECONDS",
                   help="cap of the delivery retry backoff (1 s doubling; default 300)")
    p.set_defaults(func=serve)


def resolve_tee(requested: str) -> str:
    present = [t for t, devs in TEE_DEVICES.items() if any(os.path.exists(d) for d in devs)]
    if requested == "auto":
        if present:
            return present[0]
        log.warning("=" * 72)
        log.warning("--tee auto: no SEV-SNP or TDX guest device found. Serving WITHOUT a TEE (tee=none);")
        log.warning("results are not attested. Every response says so (X-Aocu-Tee).")
        log.warning("=" * 72)
        return "none"
    if requested in TEE_DEVICES and requested not in present:
        raise SystemExit(f"aocu serve: --tee {requested} asked for, but {TEE_DEVICES[requested][0]} is absent")
    if requested == "sim":
        log.warning("--tee sim: SIMULATED TEE, not a real one; every response says so")
    return requested


def _bridge_settings(args: argparse.Namespace) -> dict | None:
    if not args.gateway:
        if args.graphql or args.su_url or args.bridge_allow or args.bridge_deny or args.checkpoint_owners \
                or args.deliver_bridged:
            raise SystemExit("aocu serve: the bridge flags need --gateway URL")
        return None
    out: dict = {"gateway": args.gateway.rstrip("/")}
    for key, value in (("graphql", args.graphql), ("su_url", args.su_url), ("bridge_allow", args.bridge_allow),
                       ("bridge_deny", args.bridge_deny), ("checkpoint_owners", args.checkpoint_owners)):
        if value:
            out[key] = value
    return out


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(message)s")
    if args.crank_delay < 0:
        raise SystemExit("aocu serve: --crank-delay must not be negative")
    if args.workers < 1 or args.threads < 1:
        raise SystemExit("aocu serve: --workers and --threads must be at least 1")
    if not args.outbox_retry_max > 0:
        raise SystemExit("aocu serve: --outbox-retry-max must be positive")
    tee = resolve_tee(args.tee)
    data_dir = Path(args.data_dir).resolve()
    try:
        config = NodeConfig.from_mapping({
            "data_dir": data_dir, "tee": tee, "tee_requested": args.tee,
            "wallet": Path(args.wallet).resolve() if args.wallet else None,
            "max_body": args.max_body, "checkpoint_every": args.checkpoint_every, "max_warm": args.max_warm,
            "block_height": args.block_height,
            "eval_timeout_s": args.eval_timeout, "busy_s": args.busy_after, "evaluator": "socket",
            "crank_delay_s": args.crank_delay,
            "module_cache": Path(args.module_cache).resolve() if args.module_cache else None,
            "bridge": _bridge_settings(args),
            "peers": args.peer, "push_codec": args.push_codec, "deliver_bridged": args.deliver_bridged,
            "outbox_retry_max_s": args.outbox_retry_max,
            "cors_origins": args.cors_origin or ["*"],
        })
    except ValueError as exc:
        raise SystemExit(f"aocu serve: {exc}") from None
    # keys exist before the workers race to create them
    from cu.node.items import Identity
    Identity.load(config.data_dir, config.wallet)
    from cu.node.store_sqlite import SqliteStore
    SqliteStore(config.db_path).close()
    sup = Supervisor(config)
    try:
        run_gunicorn(config, args)
    finally:
        sup.stop()
    return 0
