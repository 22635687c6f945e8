"""The PostgreSQL store against a real server (tests/pg.py): the same operations on a SqliteStore and a PgStore
give the same answers (the store contract, every ABC method plus the outbox, legacy and retention SQL), slots
are never assigned twice by concurrent writers in different processes, and a failing job is isolated."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import Ed25519Key
from cu.node import store_legacy
from cu.node.items import Identity, item_meta
from cu.node.retention import prune_checkpoints_job, prune_results_job
from cu.node.store import Checkpoint, Outgoing, ResultRow, ScheduleOp, StoreError
from cu.node.store_pg import PgStore, translate
from cu.node.store_sqlite import SqliteStore

TAGS_MSG = [("Data-Protocol", "ao"), ("Type", "Message")]
MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten4")]


def _items():
    key = Ed25519Key.generate()
    module = DataItem.create(key, data=b"\0asm\1\0\0\0", tags=MODULE_TAGS)
    procs = [DataItem.create(key, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                  ("Module", module.id), ("Cron-Interval", "1-minute")][:4 + i])
             for i in range(2)]
    msgs = [DataItem.create(key, data=f"m{i}".encode(), tags=TAGS_MSG, target=procs[i % 2].id) for i in range(8)]
    msgs.append(DataItem.create(key, data=b"r", tags=TAGS_MSG, target=procs[1].id))     # an outbox reply
    msgs.append(DataItem.create(key, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                      ("Module", "missing")]))          # an outbox spawn
    return module, procs, msgs


def _exercise(store, ident, module, procs, msgs) -> list:
    """Every store operation in a fixed order, with fixed clocks; returns what each answered."""
    b = ident.build_assignment
    out: list = []
    out.append(store.put_item(item_meta(module, now_ms=1), module.to_bytes()))
    out.append(store.put_item(item_meta(module, now_ms=1), module.to_bytes()))      # already stored: False
    for i, p in enumerate(procs):
        out.append(store.spawn(item_meta(p, now_ms=2), p.to_bytes(), module.id, 1000 + i, 7, b,
                               has_crons=bool(i)))
    ops = [ScheduleOp("message", procs[i % 2].id, m.id, (item_meta(m, now_ms=3), m.to_bytes()))
           for i, m in enumerate(msgs[:8])]
    out.append(store.schedule_batch(ops[:5], 2000, 8, b))
    for op in ops[5:]:
        out.append(store.schedule(op.pid, op.message_id, 1500, 9, b, op.item))    # clock never goes back
    out.append(store.schedule(procs[0].id, msgs[0].id, 3000, 9, b))                  # idempotent re-post
    with pytest.raises(StoreError):
        store.schedule("nope", msgs[0].id, 3000, 9, b)
    bad = store.schedule_batch([ScheduleOp("message", "nope", msgs[1].id)], 3000, 9, b)
    out.append(type(bad[0]).__name__)
    out.append(store.advance_time(procs[1].id, 5000))
    out.append(store.advance_time(procs[1].id, 10))
    p0 = procs[0].id
    out += [store.process(p0), store.process("nope"), sorted(store.processes_with_crons()),
            store.log_entry(p0, 2), store.log_entry(p0, 1 << 70), store.log_entry_by_message(p0, msgs[2].id),
            store.log_page(p0, from_nonce=0, from_ts=None, to_ts=None, limit=2),
            store.log_page(p0, from_nonce=None, from_ts=1000, to_ts=2000, limit=10),
            store.log_range(p0, 1, 3), store.item_meta(msgs[0].id), store.item_raw(msgs[0].id),
            store.item_data(msgs[3].id), store.item_with_data(msgs[3].id), store.item_meta("nope"),
            sorted(store.all_processes()), store.process_ids(after="", limit=1)]
    # results: write-behind and with outbox effects (a local Message target, a remote one, a failing spawn)
    rows = [ResultRow(p0, s, s, None if s % 3 else "1-minute", msgs[0].id if s == 1 else None, 1000 + s, 7,
                      s == 4, f'{{"Output":{s}}}'.encode()) for s in range(1, 7)]
    done: list = []
    store.put_results_async(rows[:2], done.append)
    out.append(done)
    reply, spawn = msgs[8], msgs[9]
    outgoing = {3: [Outgoing(0, "Message", procs[1].id, reply.id, reply.to_bytes(), item_meta(reply, now_ms=4)),
                    Outgoing(1, "Message", "far" * 14 + "x", reply.id, None, None),
                    Outgoing(2, "Spawn", spawn.id, spawn.id, spawn.to_bytes(), item_meta(spawn, now_ms=4))]}
    out.append(store.put_results(rows[2:], outgoing, 6000, 9, b))
    out.append(store.put_results(rows[2:], outgoing, 6000, 9, b))        # recomputed: nothing new
    out += [store.last_result(p0), store.last_result_nonce(p0), store.last_result_nonce("none"),
            store.result_by_message(p0, msgs[0].id), store.result_by_seq(p0, 4),
            store.seq_for(p0, 1003, 3, "1-minute"), store.seq_for(p0, 1002, 2, None)]
    for kw in ({"after": None, "until": None, "descending": False, "limit": 2, "crons_only": False,
                "skip_errors": False},
               {"after": (1001, 1), "until": (1005, 5), "descending": True, "limit": 10, "crons_only": False,
                "skip_errors": True},
               {"after": None, "until": None, "descending": False, "limit": 10, "crons_only": True,
                "skip_errors": False}):
        out.append(store.results_page(p0, **kw))
    # the outbox deliverer's side
    out += [store.outbox_entries(p0), store.outbox_entries(p0, 3), store.outbox_due(10_000),
            store.outbox_next_due(), store.outbox_counts(), store.outbox_oldest_pending(), store.outbox_rows(p0)]
    store.outbox_update((p0, 3, 1), state="pending", attempts=1, next_at=7000, remote=None, reason="down",
                        now_ms=6500)
    out += [store.outbox_due(6900), store.outbox_entries(p0, 3)]
    out.append(store.put_source_outbox("bridged", 5, {2: [Outgoing(0, "Message", procs[1].id, msgs[7].id,
                                                                   None, None)]}, 7000, 9, b))
    out.append(store.put_source_outbox("bridged", 3, {}, 7000, 9, b))
    out += [store.outbox_source_seq("bridged"), store.outbox_sources()]
    # checkpoints (keep the latest 2), retention, the legacy reads
    for s in (1, 3, 5):
        store.put_checkpoint(Checkpoint(p0, s, s, None if s < 5 else 77, 1000 + s, "mh", b"\1" * 32, b"snap%d" % s))
    store.put_checkpoint(Checkpoint(p0, 5, 5, 78, 1005, "mh", b"\2" * 32, b"again"))   # replaced
    out += [store.latest_checkpoint(p0), store.latest_checkpoint("nope"), store_legacy.checkpoints_of(store, p0)]
    if hasattr(store, "checkpoint_deltas"):     # incremental checkpoints: a chain of deltas on one full one
        for s, base in ((6, 5), (7, 5), (8, 7), (9, 7)):
            store.put_checkpoint_delta(Checkpoint(p0, s, s, None, 1000 + s, "mh", b"\3" * 32, b"d%d" % s), base)
        out += [store.checkpoint_deltas(p0, 5), store.checkpoint_deltas(p0, 7), store.checkpoint_deltas("x", 7)]
    out.append(store.writer([prune_results_job(p0, 2, 10), prune_checkpoints_job(p0, 1)], False))
    out += [store.pruned_nonce(p0), store.pruned_nonce("nope"), store.result_by_seq(p0, 1),
            store_legacy.checkpoints_of(store, p0)]
    out.append(store.put_results([rows[0]], {}, 6000, 9, b))              # a pruned seq is not stored again
    e = store.log_entry(p0, 2)
    out += [store_legacy.log_entry_by_assignment(store, p0, e.assignment_id),
            store_legacy.last_log_entry_at(store, p0, 1500), store_legacy.last_log_entry_at(store, p0, 1 << 64),
            store.processes_page(None, 1), store.processes_page((10**13, "~"), 5), store.stats()]
    store.flush()
    return out


def test_pg_store_matches_sqlite(pg_server, tmp_path):
    module, procs, msgs = _items()
    ident = Identity(wallet=None, ed25519=Ed25519Key.generate())   # type: ignore[arg-type]
    lite = _exercise(SqliteStore(tmp_path / "s.sqlite"), ident, module, procs, msgs)
    pg = _exercise(PgStore(pg_server.database()), ident, module, procs, msgs)
    assert len(lite) == len(pg)
    for i, (a, b) in enumerate(zip(lite, pg, strict=True)):
        assert a == b, f"answer {i} differs: sqlite {a!r} != postgresql {b!r}"


def _race(dsn: str, pid: str, n: int, q) -> None:
    import time
    store = PgStore(dsn)
    key = Ed25519Key.generate()
    ident = Identity(wallet=None, ed25519=Ed25519Key.generate())  # type: ignore[arg-type]
    got = []
    for i in range(n):
        m = DataItem.create(key, data=f"{i}".encode(), tags=TAGS_MSG, target=pid)
        entry, _ = store.schedule(pid, m.id, int(time.time() * 1000), 0, ident.build_assignment,
                                  (item_meta(m), m.to_bytes()))
        got.append(entry.nonce)
    q.put(got)


def test_no_slot_assigned_twice_across_writers(pg_server):
    """Four processes (as four nodes would) schedule on one process at once: every slot once, the hash chain
    continuous (each entry chains on the previous assignment, whoever signed it)."""
    from cu import hashing
    dsn = pg_server.database()
    store = PgStore(dsn)
    module, procs, _ = _items()
    ident = Identity(wallet=None, ed25519=Ed25519Key.generate())   # type: ignore[arg-type]
    store.put_item(item_meta(module), module.to_bytes())
    store.spawn(item_meta(procs[0]), procs[0].to_bytes(), module.id, 1, 0, ident.build_assignment)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    workers = [ctx.Process(target=_race, args=(dsn, procs[0].id, 25, q)) for _ in range(4)]
    for w in workers:
        w.start()
    nonces = sorted(n for _ in workers for n in q.get(timeout=60))
    for w in workers:
        w.join(timeout=30)
    assert nonces == list(range(1, 101))
    entries = store.log_range(procs[0].id, 0, 1000)
    assert [e.nonce for e in entries] == list(range(101))
    for prev, cur in zip(entries, entries[1:], strict=False):
        assert cur.hash_chain == hashing.su_hash_chain(prev.assignment_id, prev.hash_chain, procs[0].id)
        assert cur.timestamp >= prev.timestamp


def test_failing_job_is_isolated_and_dialect(pg_server):
    store = PgStore(pg_server.database())
    ins = "INSERT INTO outbox (pid, seq, idx, kind, target, item_id, delivered) VALUES (?,?,?,?,?,?,?)"

    def put(n: int):
        return lambda c: (c.execute(ins, ("P", n, 0, "Message", "T", f"i{n}", 0)), n)[1]

    def failing(c):
        c.execute(ins, ("P", 99, 0, "Message", "T", "bad", 0))
        raise ValueError("refused")

    out = store.transact([put(1), failing, put(2)], True)
    assert out[0] == 1 and out[2] == 2 and isinstance(out[1], ValueError)
    out = store.transact([put(5), put(1)], True)
    assert out[0] == 5 and type(out[1]).__name__ == "UniqueViolation"
    assert [r[1] for r in store.outbox_rows("P")] == [1, 2, 5]
    assert translate("PRAGMA synchronous=NORMAL")[0] == "SET synchronous_commit = off"
    assert translate("SELECT 1 FROM t WHERE a LIKE '5%' AND b=?")[0] == "SELECT 1 FROM t WHERE a LIKE '5%%' AND b=%s"
