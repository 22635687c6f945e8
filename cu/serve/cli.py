"""`aocu serve`: gunicorn workers serving the Flask app (cu.http), next to the data dir's evaluator processes
(cu.node.service, one per shard: --evaluators, cu/node/shards.py; supervised by supervisor.py)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from cu.node.config import TEE_CHOICES, NodeConfig
from cu.node.logconf import FORMATS, LEVELS
from cu.node.logconf import configure as configure_logging
from cu.serve import settings
from cu.serve.gunicorn_app import run_gunicorn
from cu.serve.supervisor import Supervisor

log = logging.getLogger("aocu.serve")

METRICS_DIR = "metrics"     # DATA-DIR/metrics: prometheus_client's multi-process files
TEE_DEVICES = {"snp": ("/dev/sev-guest",), "tdx": ("/dev/tdx_guest", "/dev/tdx-guest")}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run the node (MU + SU + CU) under gunicorn")
    p.add_argument("--bind", default="127.0.0.1:6363", help="HOST:PORT (default 127.0.0.1:6363)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default 2)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    p.add_argument("--evaluators", type=int, default=None, metavar="N",
                   help="evaluator processes, each owning a shard of the processes (default: half the CPUs this "
                        "node may run on, at least 1)")
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
    p.add_argument("--max-memory", default="0", metavar="BYTES",
                   help="memory budget of the warm instances together (4G, 512M, bytes); beyond it the least recently "
                        "used are checkpointed out (default 0: half of physical memory)")
    p.add_argument("--max-outbox", type=int, default=NodeConfig.max_outbox, metavar="N",
                   help="messages + spawns one evaluation may send; more gives the evaluation an Error result and "
                        "sends none of them (default 100; 0: no limit)")
    p.add_argument("--retain-results", type=int, default=NodeConfig.retain_results, metavar="N",
                   help="keep the result bodies of each process's latest N evaluations; older ones are pruned in the "
                        "background and read as 410 (default 0: keep all; the message log is always kept)")
    p.add_argument("--retain-checkpoints", type=int, default=NodeConfig.retain_checkpoints, metavar="N",
                   help="checkpoints kept per process (default 2, at least 1)")
    p.add_argument("--block-height", type=int, default=None,
                   help="block height stamped on assignments and used for block crons (default: with --gateway the "
                        "gateway's current block, else 0)")
    p.add_argument("--eval-timeout", type=float, default=NodeConfig.eval_timeout_s,
                   help="wall-clock limit of one evaluation in seconds (the message gets an Error result)")
    p.add_argument("--busy-after", type=float, default=NodeConfig.busy_s,
                   help="seconds a /result waits for an evaluation before answering 202 'in progress'")
    p.add_argument("--crank-delay", type=float, default=NodeConfig.crank_delay_s,
                   help="seconds after its acknowledgement an unread message is evaluated (and its outbox "
                        "delivered); a /result request arriving first evaluates it itself (default 0.02)")
    p.add_argument("--quiet", action="store_true",
                   help="no per-request log lines (as --log-level warning, which an explicit --log-level overrides)")
    p.add_argument("--log-level", choices=LEVELS, default="info",
                   help="lines of this level and above, from workers and the evaluator (default info: one per request)")
    p.add_argument("--log-format", choices=FORMATS, default="text",
                   help="text, or json: one object per line with ts, level, logger, msg (and the request's fields)")
    p.add_argument("--config", metavar="FILE.toml",
                   help="serve flags from a TOML file (keys: flag names; docs/OPERATIONS.md); also AOCU_<FLAG> "
                        "environment variables. A flag given here wins over AOCU_<FLAG>, which wins over the file")
    a = p.add_argument_group("admission", "slow clients and dry-runs cannot hold every request thread "
                                          "(docs/HTTP-API.md, Admission)")
    a.add_argument("--header-timeout", type=float, default=NodeConfig.header_timeout_s, metavar="SECONDS",
                   help="a request head (and a body up to 64 KiB) must arrive within this, else 408 (default 10)")
    a.add_argument("--dry-run-timeout", type=float, default=NodeConfig.dry_run_timeout_s, metavar="SECONDS",
                   help="wall-clock limit of one dry-run evaluation (default 5; the result is an Error)")
    a.add_argument("--dry-run-rate", type=float, default=5.0, metavar="PER_SECOND",
                   help="dry-runs per second per client address, in bursts of up to 2x that (429 beyond; default "
                        "5; 0: no limit)")
    a.add_argument("--dry-run-slots", type=int, default=NodeConfig.dry_run_slots, metavar="N",
                   help="dry-runs evaluated at once per worker; as many more wait briefly, others get 503 "
                        "(default 0: a quarter of --threads, at least 1)")
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
    c = p.add_argument_group("cluster", "several nodes on one PostgreSQL database (docs/OPERATIONS.md, Cluster)")
    c.add_argument("--store", default="", metavar="postgresql://...",
                   help="PostgreSQL database shared with other nodes (default: SQLite in the data dir)")
    c.add_argument("--node-url", default="", metavar="URL",
                   help="this node's URL for the other nodes (default http://BIND)")
    c.add_argument("--lease", type=float, default=NodeConfig.lease_s, metavar="SECONDS",
                   help="a dead node's processes move to the others after this (default 10)")
    p.set_defaults(func=serve)
    settings.attach(p)     # --config and AOCU_<FLAG> can set every flag of p (read when parsing)


def fresh_metrics_dir(path: Path) -> None:
    """PROMETHEUS_MULTIPROC_DIR for the workers (cu/http/metrics.py), emptied: files of an earlier run's PIDs
    would otherwise be summed into this run's counters. Set before gunicorn forks (and before anything here
    imports prometheus_client, which reads it once)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.mkdir(mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def default_evaluators() -> int:
    """One evaluator per two CPUs this process may run on (a `taskset` or cgroup cpuset counts), at least one.
    The workers need about as much CPU per result as the evaluators (bench/node.py --scaling: 1.7 vs 1.4 ms);
    on 2 CPUs a second evaluator took results/s from 567 to 324 (fewer results per group commit, more CPU
    per result), so one evaluator per CPU only pays where the workers have CPUs of their own."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


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
    sources = settings.resolve(args)
    if args.quiet and not settings.was_set(args, "log_level"):
        args.log_level = "warning"      # --quiet is --log-level warning; a level asked for explicitly wins
    configure_logging(args.log_level, args.log_format)
    if sources:
        log.debug("settings from the environment / config file: %s",
                  ", ".join(f"{k} ({v})" for k, v in sorted(sources.items())))
    if args.crank_delay < 0:
        raise SystemExit("aocu serve: --crank-delay must not be negative")
    if args.workers < 1 or args.threads < 1:
        raise SystemExit("aocu serve: --workers and --threads must be at least 1")
    evaluators = args.evaluators if args.evaluators is not None else default_evaluators()
    if not 1 <= evaluators <= 256:
        raise SystemExit("aocu serve: --evaluators must be 1..256")
    if not args.outbox_retry_max > 0:
        raise SystemExit("aocu serve: --outbox-retry-max must be positive")
    if args.store and not args.node_url and args.bind.rsplit(":", 1)[0] in ("0.0.0.0", "::", "[::]", ""):
        raise SystemExit("aocu serve: --node-url is needed with --store when binding all interfaces "
                         "(the URL other nodes reach this one at)")
    tee = resolve_tee(args.tee)
    data_dir = Path(args.data_dir).resolve()
    try:
        config = NodeConfig.from_mapping({
            "data_dir": data_dir, "tee": tee, "tee_requested": args.tee,
            "wallet": Path(args.wallet).resolve() if args.wallet else None,
            "max_body": args.max_body, "checkpoint_every": args.checkpoint_every, "max_warm": args.max_warm,
            "block_height": args.block_height or 0,
            "follow_blocks": args.block_height is None and bool(args.gateway),
            "eval_timeout_s": args.eval_timeout, "busy_s": args.busy_after, "evaluator": "socket",
            "evaluators": evaluators,
            "crank_delay_s": args.crank_delay,
            "module_cache": Path(args.module_cache).resolve() if args.module_cache else None,
            "bridge": _bridge_settings(args),
            "peers": args.peer, "push_codec": args.push_codec, "deliver_bridged": args.deliver_bridged,
            "outbox_retry_max_s": args.outbox_retry_max,
            "max_memory": args.max_memory, "max_outbox": args.max_outbox,
            "retain_results": args.retain_results, "retain_checkpoints": args.retain_checkpoints,
            "cors_origins": args.cors_origin or ["*"],
            "log_level": args.log_level, "log_format": args.log_format,
            "header_timeout_s": args.header_timeout, "dry_run_timeout_s": args.dry_run_timeout,
            "dry_run_rate": args.dry_run_rate, "dry_run_burst": max(1, round(2 * args.dry_run_rate)),
            "dry_run_slots": args.dry_run_slots or max(1, args.threads // 4),
            "store": args.store, "node_url": args.node_url or (f"http://{args.bind}" if args.store else ""),
            "lease_s": args.lease,
        })
    except ValueError as exc:
        raise SystemExit(f"aocu serve: {exc}") from None
    # keys exist before the workers race to create them
    from cu.node.items import Identity
    Identity.load(config.data_dir, config.wallet)
    from cu.node.cluster import open_store
    from cu.node.store import StoreError
    try:
        open_store(config).close()      # the schema exists (SQLite file or PostgreSQL tables) before the workers
    except StoreError as exc:
        raise SystemExit(f"aocu serve: {exc}") from None
    sup = Supervisor(config)
    try:
        fresh_metrics_dir(config.data_dir / METRICS_DIR)
    except OSError:
        sup.stop()
        raise
    try:
        run_gunicorn(config, args)
    finally:
        sup.stop()
    return 0
