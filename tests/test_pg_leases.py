"""Leases and routing between nodes (cu/node/cluster.py, cu/http/forward.py) against a real PostgreSQL
(tests/pg.py), without starting nodes: two `Cluster` views of one database, as two nodes' evaluators."""

from __future__ import annotations

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import Ed25519Key
from cu.http.forward import request_pid
from cu.node.cluster import Cluster
from cu.node.errors import BadInput
from cu.node.items import Identity, item_meta
from cu.node.store_pg import PgStore

MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten4")]


def _spawn(store: PgStore, module: DataItem, name: str) -> str:
    p = DataItem.create(Ed25519Key.generate(), data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                               ("Module", module.id), ("Name", name)])
    ident = Identity(wallet=None, ed25519=Ed25519Key.generate())   # type: ignore[arg-type]
    store.spawn(item_meta(p), p.to_bytes(), module.id, 1, 0, ident.build_assignment)
    return p.id


def test_leases_route_take_over_and_sweep(pg_server):
    dsn = pg_server.database()
    sa, sb = PgStore(dsn), PgStore(dsn)
    a = Cluster(sa, "node-a", "http://a:1", 5.0)
    woken: list[str] = []
    b = Cluster(sb, "node-b", "http://b:2", 5.0, on_work=woken.append)
    a.register()
    b.register()
    module = DataItem.create(Ed25519Key.generate(), data=b"\0asm\1\0\0\0", tags=MODULE_TAGS)
    sa.put_item(item_meta(module), module.to_bytes())
    mine = [_spawn(sa, module, f"a{i}") for i in range(4)]     # spawned by a: leased to a
    theirs = _spawn(sb, module, "b0")
    assert a.route(mine[0]) is None and b.route(mine[0]) == "http://a:1"
    assert a.route(theirs) == "http://b:2" and b.mine(theirs) and not a.mine(theirs)
    assert a.route("no-such-process") is None                  # not the cluster's: answered here (404)
    # a second live node with a's id but another URL is refused
    with pytest.raises(BadInput):
        Cluster(PgStore(dsn), "node-a", "http://elsewhere:1", 5.0).register()
    # a stops heartbeating: its leases are free once it expired; b's next heartbeat takes them all (the only
    # live node), each once, with a new epoch
    b._elsewhere.clear()
    a._q("UPDATE nodes SET expires = clock_timestamp() - interval '1 second' WHERE id='node-a'")
    b.beat()
    assert sorted(woken) == sorted(mine)
    rows = dict(sa._conn().raw.execute("SELECT pid, epoch FROM leases WHERE owner='node-b'").fetchall())
    assert {p: rows[p] for p in mine} == dict.fromkeys(mine, 2) and rows[theirs] == 1
    assert b.metrics["leases_taken"] == 4
    # a comes back: it is live again but owns nothing; its requests go to b
    a._mine.clear()
    a.beat()
    assert a.route(mine[1]) == "http://b:2" and not a.take(mine[1], "node-a")
    # an orderly stop expires b's leases at once: a takes a process on first use
    b.leave()
    assert a.route(mine[2]) is None
    (epoch,) = sa._conn().raw.execute("SELECT epoch FROM leases WHERE pid=%s", (mine[2],)).fetchone()
    assert epoch == 3


def test_forwarded_request_paths():
    pid = "P" * 43
    assert request_pid("/result/MID", f"process-id={pid}") == pid
    assert request_pid("/dry-run", f"process-id={pid}&to=5") == pid
    for path in (f"/results/{pid}", f"/state/{pid}", f"/cron/{pid}", f"/monitor/{pid}",
                 f"/{pid}~process@1.0/compute", f"/{pid}~process@1.0/now/at-slot", f"/{pid}~process@1.0/push",
                 f"/{pid}/compute/results=5", f"/{pid}~process@1.0/slot/current"):
        assert request_pid(path, "") == pid, path
    # scheduling and log reads: any node, on the shared store
    for path in ("/", f"/{pid}", f"/{pid}~process@1.0/schedule", "/processes", f"/processes/{pid}", "/health",
                 "/result/MID"):
        assert request_pid(path, "") is None, path


def test_owner_hears_messages_scheduled_by_another_node(pg_server):
    """A message scheduled through node a for a process leased to b: b's listener is told at a's commit (b's
    crank then evaluates it), a's is not woken for it."""
    import time
    dsn = pg_server.database()
    sa, sb = PgStore(dsn), PgStore(dsn)
    heard_a: list[str] = []
    heard_b: list[str] = []
    a = Cluster(sa, "node-a", "http://a:1", 5.0, on_work=heard_a.append)
    b = Cluster(sb, "node-b", "http://b:2", 5.0, on_work=heard_b.append)
    module = DataItem.create(Ed25519Key.generate(), data=b"\0asm\1\0\0\0", tags=MODULE_TAGS)
    sa.put_item(item_meta(module), module.to_bytes())
    a.start()
    b.start()
    try:
        pid = _spawn(sb, module, "b")
        time.sleep(0.3)     # the spawn's own notification
        heard_b.clear()
        m = DataItem.create(Ed25519Key.generate(), data=b"x", target=pid,
                            tags=[("Data-Protocol", "ao"), ("Type", "Message")])
        ident = Identity(wallet=None, ed25519=Ed25519Key.generate())   # type: ignore[arg-type]
        entry, fresh = sa.schedule(pid, m.id, 5, 0, ident.build_assignment, (item_meta(m), m.to_bytes()))
        assert fresh and entry.nonce == 1
        deadline = time.monotonic() + 5
        while pid not in heard_b and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid in heard_b and pid not in heard_a
    finally:
        a.stop()
        b.stop()
