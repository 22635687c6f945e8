"""Prometheus metrics of the node (`GET /metrics`), made with prometheus_client.

Under `aocu serve` several gunicorn workers answer requests, so the HTTP metrics use prometheus_client's
multi-process mode: PROMETHEUS_MULTIPROC_DIR (DATA-DIR/metrics, emptied at every start by cu/serve/cli.py) holds
one file per worker, and a scrape sums them: counters and histograms carry no PID or worker label, and a worker
that died keeps its counts. In one process (create_app without that variable: tests, embedded use) the same
metrics live in a registry of their own per app.

Everything else is read when scraped, in the answering worker: the node's build and TEE, store and outbox
gauges, the evaluator's counters over its RPC (`EVALUATOR_FAMILIES` maps the evaluator's metrics dict to
families: a new key needs one line there), and `process_*` of the `aocu serve` main process (the gunicorn
master, parent of every worker) plus `aocu_evaluator_process_*` of the evaluator process."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector

from cu.node.store import OUTBOX_STATES

log = logging.getLogger("aocu.http")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# `_created` series would double the families and mean nothing across worker restarts
disable_created_metrics()

# The evaluator's metrics dict (cu/node/eval/loop.py, core.py, exchange/deliverer.py) as families:
# (dict key, family, type, help, label). Type "counter" (the name ends in _total) or "gauge" (a value the
# evaluator sets). A key ending in "*" is a prefix: the rest of each such key is the label's value.
EVALUATOR_FAMILIES: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("evaluations", "aocu_evaluations_total", "counter", "messages evaluated", None),
    ("eval_seconds", "aocu_evaluation_seconds_total", "counter", "wall-clock seconds spent evaluating", None),
    ("checkpoints", "aocu_checkpoints_total", "counter", "process checkpoints written", None),
    ("commits", "aocu_store_commits_total", "counter", "store group commits", None),
    ("commit_writes", "aocu_store_commit_writes_total", "counter", "writes carried by the group commits", None),
    ("commit_seconds", "aocu_store_commit_seconds_total", "counter", "seconds spent in group commits", None),
    ("dry_runs", "aocu_dry_runs_total", "counter", "dry-run evaluations", None),
    ("outbox_delivered", "aocu_outbox_delivered_total", "counter",
     "outbox messages delivered to processes on this node", None),
    ("outbox_deliveries_*", "aocu_outbox_deliveries_total", "counter",
     "outbox delivery attempts to other units, by outcome", "outcome"),
    ("recompute_mismatch", "aocu_recompute_mismatch_total", "counter",
     "re-evaluations whose result differed from the stored one", None),
    ("restores", "aocu_checkpoint_restores_total", "counter", "processes restored from a checkpoint", None),
    ("restore_failures", "aocu_checkpoint_restore_failures_total", "counter",
     "checkpoints that could not be restored (the process was rebuilt from its log)", None),
    ("restores_evicted", "aocu_checkpoint_restores_in_memory_total", "counter",
     "evicted processes restored from their compressed state still held in memory", None),
    ("crank_idle", "aocu_crank_idle_total", "counter",
     "crank turns for an evicted process with nothing to evaluate (answered from the store, not restored)", None),
    ("checkpoint_deltas", "aocu_checkpoint_deltas_total", "counter",
     "incremental checkpoints written (pages changed since the last one)", None),
    ("checkpoint_bytes", "aocu_checkpoint_bytes_total", "counter",
     "bytes of checkpoints written, full and incremental", None),
    ("retire_failures", "aocu_eviction_checkpoint_failures_total", "counter",
     "background eviction checkpoints that failed (the process stays recoverable from its log)", None),
    ("init_images", "aocu_init_images_total", "counter",
     "module initial-state images taken (one per module and memory limit)", None),
    ("init_image_starts", "aocu_init_image_starts_total", "counter",
     "new processes started from a module's initial-state image", None),
    ("cache_rejected", "aocu_cache_rejected_total", "counter",
     "cache entries (compiled modules, checkpoints, patch caches) whose HMAC failed: rebuilt, not used", None),
    ("warm_bytes", "aocu_warm_memory_bytes", "gauge", "linear memory held by the warm process instances", None),
    ("memory_budget", "aocu_warm_memory_budget_bytes", "gauge",
     "budget of the warm instances' memory (--max-memory); beyond it the least recently used are evicted", None),
    ("evictions_*", "aocu_warm_evictions_total", "counter",
     "warm processes checkpointed out, by reason (count: --max-warm, memory: --max-memory)", "reason"),
    ("outbox_limited", "aocu_outbox_limited_total", "counter",
     "evaluations given an Error result for an outbox over --max-outbox", None),
    ("pruned_*", "aocu_pruned_rows_total", "counter",
     "store rows removed by the retention policy (--retain-results/--retain-checkpoints), by table", "table"),
    ("monitors", "aocu_cron_monitors", "gauge", "processes whose crons run unread (POST /monitor/{pid})", None),
    ("monitor_passes", "aocu_cron_monitor_passes_total", "counter", "passes of the cron monitor ticker", None),
    ("monitor_runs", "aocu_cron_monitor_runs_total", "counter",
     "monitored processes evaluated up to now (crons, outbox) by the ticker", None),
    ("monitor_failures", "aocu_cron_monitor_failures_total", "counter",
     "monitored processes whose evaluation by the ticker failed", None),
    ("replays_at", "aocu_reads_at_point_total", "counter",
     "local /state and /dry-run reads at a point in time (to=)", None),
)


_FAMILY_TYPES: dict[str, Callable[..., Metric]] = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def mark_worker_dead(pid: int) -> None:
    """gunicorn's child_exit hook: drops the live gauges of a worker that exited (its counters stay summed)."""
    mp = multiproc_dir()
    if mp:
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid, mp)


def version() -> str:
    try:
        return importlib.metadata.version("aocu")
    except importlib.metadata.PackageNotFoundError:
        import cu
        return cu.__version__


class HttpMetrics:
    """The per-request metrics of one app (one worker)."""

    def __init__(self) -> None:
        mp = multiproc_dir()
        if mp and not getattr(values.ValueClass, "_multiprocess", False):
            # prometheus_client picks its value store when first imported: too late to change it here
            raise RuntimeError(f"prometheus_client was imported before {MULTIPROC_ENV} was set")
        # multi-process: values go to the worker's files, collected from there (no registry of their own)
        self.registry = None if mp else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("aocu_http_requests", "HTTP requests answered, by route template, method and "
                                "status code", ("route", "method", "code"), registry=reg)
        self.duration = Histogram("aocu_http_request_duration_seconds", "time from the request's arrival to its "
                                  "response (signing included), by route template and method",
                                  ("route", "method"), buckets=LATENCY_BUCKETS, registry=reg)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self.in_flight = Gauge("aocu_http_requests_in_flight", "requests being answered now",
                               multiprocess_mode="livesum", registry=reg)

    def observe(self, route: str, method: str, code: int, seconds: float) -> None:
        # any method name a client sends would be a new series: unknown ones count as "other"
        method = method if method in HTTP_METHODS else "other"
        # the labelled children are cached: .labels() costs as much as the update itself
        key = (route, method, code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(route, method, str(code)),
                                           self.duration.labels(route, method))
        child[0].inc()
        child[1].observe(seconds)

    def render(self, node_collector: Any, *, evaluator_pid: Callable[[], int | None] | None = None) -> bytes:
        """The exposition text: HTTP metrics of every worker, the node's families, process metrics."""
        mp = multiproc_dir()
        reg = CollectorRegistry(auto_describe=False)
        if mp:
            reg.register(MultiProcessCollector(None, path=mp))
        else:
            assert self.registry is not None
            reg.register(_Collected(self.registry.collect))
        reg.register(node_collector)
        # process_*: the `aocu serve` main process (a worker's parent) under gunicorn, else this process
        serve_pid: Callable[[], int | str] = (lambda: os.getppid()) if mp else (lambda: "self")
        ProcessCollector(pid=serve_pid, registry=reg)
        if evaluator_pid is not None:
            ProcessCollector(namespace="aocu_evaluator", pid=lambda: evaluator_pid() or "0", registry=reg)
        return generate_latest(reg)


def log_request(method: str, path: str, route: str, status: int, seconds: float, nbytes: int,
                remote: str | None) -> None:
    """The one line per request (INFO); its fields are separate keys under --log-format json (cu/node/logconf.py)."""
    if log.isEnabledFor(logging.INFO):
        fields = {"method": method, "path": path, "route": route, "status": status, "ms": round(seconds * 1000, 3),
                  "bytes": nbytes, "remote": remote}
        log.info("%s %s %d %.3f ms", method, path, status, seconds * 1000, extra={"fields": fields})


class _Collected:
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.collect = collect


def _gauge(name: str, doc: str, value: float | None = None, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value) if value is not None else GaugeMetricFamily(name, doc,
                                                                                                 labels=labels)


def evaluator_families(counters: dict[str, float], warm: int, queued: int) -> Iterator[Metric]:
    """Families from the evaluator's metrics dict, as mapped by EVALUATOR_FAMILIES (absent keys read 0)."""
    seen: set[str] = set()
    for key, name, kind, doc, label in EVALUATOR_FAMILIES:
        family = _FAMILY_TYPES.get(kind)
        if family is None:
            raise ValueError(f"{name}: evaluator metrics are counters or gauges (got {kind!r})")
        if key.endswith("*"):
            fam = family(name, doc, labels=(label or "kind",))
            prefix = key[:-1]
            for k in sorted(counters):
                if k.startswith(prefix):
                    fam.add_metric((k[len(prefix):],), float(counters[k]))
                    seen.add(k)
        else:
            fam = family(name, doc, value=float(counters.get(key, 0)))
            seen.add(key)
        yield fam
    unmapped = sorted(set(counters) - seen)
    if unmapped:
        log.debug("evaluator metrics without a family in EVALUATOR_FAMILIES: %s", ", ".join(unmapped))
    yield _gauge("aocu_warm_processes", "process instances kept warm in the evaluator", warm)
    yield _gauge("aocu_crank_queue", "processes queued for the crank", queued)


def unmapped_keys(counters: Iterable[str]) -> list[str]:
    """Keys of the evaluator's metrics dict that no EVALUATOR_FAMILIES line maps."""
    exact = {k for k, *_ in EVALUATOR_FAMILIES if not k.endswith("*")}
    prefixes = tuple(k[:-1] for k, *_ in EVALUATOR_FAMILIES if k.endswith("*"))
    return sorted(k for k in counters if k not in exact and not k.startswith(prefixes))


def store_families(store: Any) -> Iterator[Metric]:
    rows = GaugeMetricFamily("aocu_store_rows", "rows in the node's store, by table", labels=("table",))
    for table, n in sorted(store.stats().items()):
        rows.add_metric((table,), float(n))
    yield rows
    counts = store.outbox_counts()
    entries = GaugeMetricFamily("aocu_outbox_entries", "outbox entries by delivery state", labels=("state",))
    for s in OUTBOX_STATES:
        entries.add_metric((s,), float(counts.get(s, 0)))
    yield entries
    oldest = store.outbox_oldest_pending()
    age = max(0.0, time.time() - oldest / 1000) if oldest else 0.0
    yield _gauge("aocu_outbox_oldest_pending_seconds", "age of the oldest pending outbox entry (0: none)", age)


def build_families(tee: str) -> Iterator[Metric]:
    info = GaugeMetricFamily("aocu_build_info", "aocu version and TEE kind of this node (always 1)",
                             labels=("version", "tee"))
    info.add_metric((version(), tee), 1.0)
    yield info
    tee_info = GaugeMetricFamily("aocu_tee_info", "TEE kind this node serves with (always 1)", labels=("tee",))
    tee_info.add_metric((tee,), 1.0)
    yield tee_info


def shard_families(replies: list[Any], cpu_seconds: list[float | None]) -> Iterator[Metric]:
    """Per evaluator shard (`--evaluators`, label `shard`): whether it answered, and its evaluations, warm
    instances, crank queue and CPU seconds (`replies[i]`: shard i's MetricsReply or the error it failed with)."""
    up = GaugeMetricFamily("aocu_evaluator_shard_up", "1 when the evaluator shard answered this scrape",
                           labels=("shard",))
    evals = CounterMetricFamily("aocu_shard_evaluations", "messages evaluated, by evaluator shard", labels=("shard",))
    warm = GaugeMetricFamily("aocu_shard_warm_processes", "warm process instances, by evaluator shard",
                             labels=("shard",))
    queued = GaugeMetricFamily("aocu_shard_crank_queue", "processes queued for the crank, by evaluator shard",
                               labels=("shard",))
    cpu = CounterMetricFamily("aocu_shard_cpu_seconds", "CPU seconds (user + system) of the evaluator shard's "
                              "current process", labels=("shard",))
    for i, r in enumerate(replies):
        label = (str(i),)
        ok = hasattr(r, "metrics")
        up.add_metric(label, 1.0 if ok else 0.0)
        if ok:
            evals.add_metric(label, float(r.metrics.get("evaluations", 0)))
            warm.add_metric(label, float(r.warm))
            queued.add_metric(label, float(r.queued))
        if i < len(cpu_seconds) and cpu_seconds[i] is not None:
            cpu.add_metric(label, float(cpu_seconds[i] or 0.0))
    yield from (up, evals, warm, queued, cpu)


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a live process from /proc (None when it cannot be read)."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def evaluator_lock_pid(data_dir: Path) -> int | None:
    """The evaluator process's PID (shard 0's), as it wrote it into DATA-DIR/evaluator.lock (cu/node/service.py)."""
    return lock_file_pid(Path(data_dir) / "evaluator.lock")


def lock_file_pid(path: Path) -> int | None:
    """The PID an evaluator shard wrote into its lock file."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
