"""SqliteStore's write transactions share one connection, whichever thread runs them (the evaluator's group commit
is led by whichever thread finds the store idle): a connection that finds the database changed by another one
drops its page cache and reads its pages again, so writers taking turns on their own connections would re-read
pages on every commit."""

from __future__ import annotations

import threading
from pathlib import Path

from cu.codec.ans104 import DataItem
from cu.codec.wallet import Ed25519Key
from cu.node.items import item_meta
from cu.node.store_sqlite import SqliteStore


def _read_calls() -> int:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["syscr"])


def test_writes_from_alternating_threads_do_not_reread_pages(tmp_path):
    store = SqliteStore(tmp_path / "db.sqlite")
    key = Ed25519Key.generate()
    items = [DataItem.create(key, data=f"{i}".encode(), tags=[("Data-Protocol", "ao"), ("Type", "Message")])
             for i in range(400)]
    for it in items[:100]:      # a few pages deep, so a dropped cache costs reads
        store.put_item(item_meta(it), it.to_bytes())

    # two long-lived threads taking turns, as the reading thread and the crank thread lead commits in turn
    turn = [threading.Semaphore(0), threading.Semaphore(0)]
    done = threading.Semaphore(0)

    def writer(me: int) -> None:
        for it in items[100 + me::2]:
            turn[me].acquire()
            store.put_item(item_meta(it), it.to_bytes())
            done.release()

    threads = [threading.Thread(target=writer, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    before = _read_calls()
    for i in range(300):
        turn[i % 2].release()
        done.acquire()
    for t in threads:
        t.join()
    reads = (_read_calls() - before) / 300
    assert reads < 1.0, f"{reads:.2f} read calls per write"
    assert all(store.item_meta(it.id) is not None for it in items)
