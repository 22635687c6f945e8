"""Several nodes on one PostgreSQL store (`aocu serve --store postgresql://... --node-url URL`): each process is
owned by exactly one node at a time through a lease in the database.

- Nodes register in `nodes` (id = the node's wallet address, the URL other nodes forward to, `expires`). The
  owner's heartbeat renews `expires` every lease/3: one row per node, not one per process. A lease (`leases`:
  pid, owner, since, epoch) is live while its owner's row has not expired (the database's clock decides, so the
  nodes' clocks need not agree).
- The node that spawns a process owns it first (the lease row is written in the spawn's transaction). A node
  takes a lease only from a node whose heartbeat expired (compare-and-set on the owner; `epoch` counts
  owners); the sweep of each node's heartbeat does that for the dead node's processes, a share per survivor.
- Requests that evaluate or read results are forwarded by the workers to the owner (cu/http/forward.py);
  scheduling is done by whichever node receives the message: the store serializes a process's slots with a
  per-process lock, and the commit notifies every node (LISTEN/NOTIFY `aocu_sched`), so the owner's crank
  evaluates unread messages. A node evaluates only processes it owns (`mine`, the crank's gate).
- A node that takes a process over restores it from the latest checkpoint in the database and the log.
Evaluation is deterministic and results are stored once per (process, seq), so even a node that evaluates a
process it lost (a heartbeat gap longer than the lease) cannot store a second, different result or deliver an
outbox twice; the lease only keeps the work in one place."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from cu.node.errors import BadInput

log = logging.getLogger("aocu.cluster")

CHANNEL = "aocu_sched"


class Cluster:
    """One node's view of the cluster. After `start()` (the node's leader evaluator) it renews the node's
    registration (so its leases), takes over dead nodes' processes and listens for scheduled messages; other
    users (workers, other shards) only ask `route` / `mine`."""

    def __init__(self, store: Any, node_id: str, url: str, lease_s: float, *,
                 on_work: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self.url = url.rstrip("/")
        self.lease_s = float(lease_s)
        self.on_work = on_work or (lambda pid: None)
        self._mine: dict[str, float] = {}        # pid -> monotonic time until which it is known to be ours
        # pid -> (until when, URL): owned by another live node (only its death moves it: then forwarding fails
        # and the sweep of a survivor takes it; the entry is short-lived)
        self._elsewhere: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.metrics = {"leases_taken": 0, "heartbeats": 0}
        self._last_beat: float | None = None     # monotonic start of the last successful heartbeat
        store.node_id = node_id
        store.lease_s = self.lease_s

    # queries --------------------------------------------------------------------------------------------
    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        cur = self.store._conn().raw.execute(sql, args)
        return cur.fetchall() if cur.description else []

    def register(self) -> None:
        """Registers (or re-registers) this node with a fresh heartbeat. Refuses an id that another live node
        registered with a different URL (two nodes with one wallet would share leases)."""
        t0 = time.monotonic()
        rows = self._q("SELECT url, expires > clock_timestamp() FROM nodes WHERE id=%s", (self.node_id,))
        if rows and rows[0][1] and rows[0][0] != self.url:
            raise BadInput(f"node {self.node_id} is already live at {rows[0][0]}: each node of a cluster "
                           "needs its own wallet (--wallet / its data dir)")
        self._q("INSERT INTO nodes VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s), "
                "clock_timestamp()) ON CONFLICT (id) DO UPDATE SET url=excluded.url, expires=excluded.expires, "
                "started=excluded.started", (self.node_id, self.url, self.lease_s))
        if not (rows and rows[0][1]):
            self._mine.clear()      # registered anew after an expiry: what was ours may be another node's now
        self._last_beat = t0

    def route(self, pid: str) -> str | None:
        """Where `pid` is handled: None = here (this node owns it, has just taken it, or it is no process of
        the cluster), else the owner's URL."""
        until = self._mine.get(pid)
        if until is not None and until > time.monotonic():
            return None
        other = self._elsewhere.get(pid)
        if other is not None and other[0] > time.monotonic():
            return other[1]
        t0 = time.monotonic()
        rows = self._q("SELECT l.owner, n.url, coalesce(n.expires > clock_timestamp(), false) FROM leases l "
                       "LEFT JOIN nodes n ON n.id = l.owner WHERE l.pid=%s", (pid,))
        if not rows:
            # a process spawned without a lease (by a node before it joined a cluster): the first asker takes it
            got = self._q("INSERT INTO leases SELECT %s, %s, clock_timestamp(), 1 WHERE EXISTS (SELECT 1 FROM "
                          "processes WHERE id=%s) ON CONFLICT DO NOTHING RETURNING pid",
                          (pid, self.node_id, pid))
            if got:
                self._own(pid, t0)
                return None
            rows = self._q("SELECT l.owner, n.url, coalesce(n.expires > clock_timestamp(), false) FROM leases "
                           "l LEFT JOIN nodes n ON n.id = l.owner WHERE l.pid=%s", (pid,))
            if not rows:
                return None             # not a process of the cluster: handled here (404, or the bridge)
        owner, url, live = rows[0]
        if owner == self.node_id:
            self._own(pid, t0)
            return None
        if live:
            self._elsewhere[pid] = (t0 + self.lease_s / 3, url)
            return url
        if self.take(pid, owner):
            return None
        rows = self._q("SELECT n.url FROM leases l JOIN nodes n ON n.id = l.owner WHERE l.pid=%s", (pid,))
        return rows[0][0] if rows else None

    def mine(self, pid: str) -> bool:
        """Whether this node evaluates `pid` now (taking the lease when its owner is dead)."""
        return self.route(pid) is None

    def take(self, pid: str, old_owner: str) -> bool:
        """Compare-and-set: the lease of `pid` moves from `old_owner` (whose heartbeat expired) to this node."""
        t0 = time.monotonic()
        got = self._q("UPDATE leases l SET owner=%s, since=clock_timestamp(), epoch=l.epoch + 1 WHERE l.pid=%s "
                      "AND l.owner=%s AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id=l.owner AND "
                      "n.expires > clock_timestamp()) RETURNING l.epoch", (self.node_id, pid, old_owner))
        if not got:
            return False
        log.info("took over process %s from node %s (lease epoch %d)", pid, old_owner, got[0][0])
        self.metrics["leases_taken"] += 1
        self._own(pid, t0)
        return True

    def _own(self, pid: str, t0: float) -> None:
        # ours at least until our own heartbeat could have lapsed: nobody takes a live node's lease
        with self._lock:
            if len(self._mine) > 100_000:
                self._mine.clear()
            if len(self._elsewhere) > 100_000:
                self._elsewhere.clear()
            self._elsewhere.pop(pid, None)
            self._mine[pid] = t0 + self.lease_s / 3

    # the leader's background work -----------------------------------------------------------------------
    def start(self) -> None:
        self.register()
        for name, target in (("aocu-heartbeat", self._heartbeat), ("aocu-listen", self._listen)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def leave(self) -> None:
        """An orderly stop: the heartbeat ends and this node's leases expire now (its checkpoints are written)."""
        self.stop()
        try:
            self._q("UPDATE nodes SET expires = clock_timestamp() WHERE id=%s", (self.node_id,))
        except Exception as exc:  # noqa: BLE001 - the leases then expire on their own
            log.warning("cluster leave: %s", exc)

    def forget(self, pid: str) -> None:
        """The owner named for `pid` did not answer: ask the database again next time."""
        self._elsewhere.pop(pid, None)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - the database may be briefly unreachable; retried
                log.warning("cluster heartbeat failed: %s", exc)

    def beat(self) -> None:
        """Renews this node's leases, then takes a share of the processes of nodes whose heartbeat expired."""
        t0 = time.monotonic()
        lapsed = self._last_beat is None or t0 - self._last_beat > self.lease_s * 0.9
        if not self._q("UPDATE nodes SET expires = clock_timestamp() + make_interval(secs => %s), url=%s "
                       "WHERE id=%s RETURNING id", (self.lease_s, self.url, self.node_id)):
            self.register()
        self.metrics["heartbeats"] += 1
        self._last_beat = t0
        with self._lock:
            if lapsed:      # our registration may have expired meanwhile: others may own those now; ask again
                self._mine.clear()
            for pid in self._mine:      # otherwise everything known to be ours stays ours another lease/3
                self._mine[pid] = t0 + self.lease_s / 3
        orphans = self._q("SELECT l.pid, l.owner FROM leases l LEFT JOIN nodes n ON n.id = l.owner WHERE "
                          "l.owner <> %s AND (n.id IS NULL OR n.expires < clock_timestamp()) LIMIT 1000",
                          (self.node_id,))
        if not orphans:
            return
        live = self._q("SELECT count(*) FROM nodes WHERE expires > clock_timestamp()")[0][0] or 1
        random.shuffle(orphans)
        for pid, owner in orphans[:max(1, -(-len(orphans) // live))]:   # a share each: survivors split them
            if self.take(pid, owner):
                self.on_work(pid)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self.store.connect()
                conn.execute(f"LISTEN {CHANNEL}")
                while not self._stop.is_set():
                    for n in conn.notifies(timeout=0.5):
                        if n.payload and self.mine(n.payload):
                            self.on_work(n.payload)
            except Exception as exc:  # noqa: BLE001 - reconnect; a missed notification is caught by reads
                log.warning("cluster listener: %s; reconnecting", exc)
                self._stop.wait(1.0)


def open_store(config: Any) -> Any:
    """The node's store: PostgreSQL with `config.store`, else SQLite in the data dir."""
    if getattr(config, "store", ""):
        from cu.node.store_pg import PgStore
        return PgStore(config.store)
    from cu.node.store_sqlite import SqliteStore
    return SqliteStore(config.db_path)


def cluster_for(config: Any, store: Any, node_id: str, on_work: Callable[[str], None] | None = None, *,
                evaluator: bool = False) -> Cluster | None:
    """The node's cluster membership when it runs on a PostgreSQL store, else None. An evaluator registers the
    node at once: it may spawn (and lease) processes before its heartbeat starts, and a lease whose owner has
    no live registration is free for any node to take."""
    if not getattr(config, "store", "") or not hasattr(store, "connect"):
        return None
    cluster = Cluster(store, node_id, config.node_url, config.lease_s, on_work=on_work)
    if evaluator:
        cluster.register()
    return cluster
