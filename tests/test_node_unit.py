"""Node pieces that need no engine: legacy normalisation, crons, limits, scheduling and the log."""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3

import pytest

from cu import hashing
from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.http.errors import status_for
from cu.node import cron, legacy
from cu.node.config import NodeConfig
from cu.node.errors import CoreError
from cu.node.ingest import Scheduler
from cu.node.items import Identity
from cu.node.limits import module_limits, parse_bytes
from cu.node.store_sqlite import SqliteStore

MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten4"),
               ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "1-gb"),
               ("Compute-Limit", "9000000000000")]


@pytest.fixture(scope="module")
def wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()


# --- docs/ABI.md (Message, env and result) normalisation ---------------------------------------------------------------------

def test_scheduled_message_key_order_and_from_rules():
    tags = [("Action", "Eval"), ("From", "spoof"), ("Owner", "spoof"), ("From-Process", "P2"), ("X", "é")]
    msg = legacy.scheduled_message(msg_id="M", signature="S", data=b"1+1", owner="O", target="P", anchor="0" * 32,
                                   tags=tags, epoch=0, nonce=7, timestamp=1730000000000, block_height=12,
                                   hash_chain="H")
    assert list(msg) == ["Id", "Signature", "Data", "Owner", "Target", "Anchor", "From", "Forwarded-By", "Tags",
                         "Epoch", "Nonce", "Timestamp", "Block-Height", "Hash-Chain", "Cron", "Read-Only"]
    assert msg["From"] == "P2" and msg["Forwarded-By"] == "O"
    assert [t["name"] for t in msg["Tags"]] == ["Action", "From-Process", "X"]
    raw = legacy.dumps(msg)
    assert raw.startswith(b'{"Id":"M","Signature":"S","Data":"1+1","Owner":"O","Target":"P"')
    assert "é".encode() in raw and b"\\u00e9" not in raw          # raw UTF-8 like JSON.stringify
    assert raw.endswith(b'"Hash-Chain":"H","Cron":false,"Read-Only":false}')


def test_message_without_from_process_and_without_anchor():
    msg = legacy.scheduled_message(msg_id="M", signature="S", data=b"\xff\x00", owner="O", target="P", anchor=None,
                                   tags=[("From-Process", "")], epoch=0, nonce=1, timestamp=1, block_height=0,
                                   hash_chain="H")
    assert "Anchor" not in msg
    assert msg["From"] == "O"                       # empty From-Process -> Owner
    assert msg["Forwarded-By"] == "O"               # the tag exists
    assert msg["Data"] == "\ufffd\x00"              # lossy UTF-8
    assert b'\\u0000' in legacy.dumps(msg)          # control characters escaped lowercase like JS


def test_cron_and_dry_run_shapes():
    c = legacy.cron_message(owner="O", target="P", tags=[("Action", "Tick")], timestamp=5, block_height=3)
    assert list(c) == ["Owner", "Target", "From", "Tags", "Timestamp", "Block-Height", "Cron", "Read-Only"]
    assert c["Cron"] is True and c["From"] == "O"
    body = {"Id": "1234", "Owner": "1234", "Target": "P", "Data": "x", "Anchor": "0", "Unknown": 1,
            "Tags": [{"name": "Action", "value": "Info"}, {"name": "From-Process", "value": "Q"}],
            "Block-Height": "17"}
    d = legacy.dry_run_message(body, pid="P", timestamp=99, block_height=3)
    assert list(d) == ["Id", "Data", "Owner", "Target", "Anchor", "From", "Tags", "Timestamp", "Block-Height",
                       "Cron", "Read-Only"]
    assert d["From"] == "Q" and d["Read-Only"] is True and d["Timestamp"] == 99 and d["Block-Height"] == 17
    with pytest.raises(ValueError):
        legacy.dry_run_message({"Tags": "nope"}, pid="P", timestamp=0, block_height=0)


def test_merge_result_normalises_like_the_legacy_cu():
    r = legacy.merge_result({"Output": 42, "Messages": {}, "Spawns": None, "Patches": [1], "GasUsed": 5})
    assert r == {"Output": "42", "Messages": [], "Spawns": [], "Assignments": [], "GasUsed": 5}
    e = legacy.merge_result({"Error": "boom", "GasUsed": 1})
    assert e["Error"] == "boom" and e["Messages"] == []
    view = legacy.result_view(e)
    assert list(view) == ["Messages", "Assignments", "Spawns", "Output", "GasUsed", "Error"]


# --- crons (docs/ABI.md, Crons) --------------------------------------------------------------------------

def test_cron_parsing_and_generation():
    crons = cron.parse_crons([("Cron-Interval", "5-seconds"), ("Cron-Tag-Action", "Tick"),
                              ("Cron-Interval", "1-minute"), ("Cron-Interval", "10-blocks")])
    assert [(c.id, c.unit, c.value) for c in crons] == [("0-10-blocks", "blocks", 10), ("0-5-seconds", "seconds", 5),
                                                        ("1-1-minute", "seconds", 60)]
    assert crons[1].tags == [("Action", "Tick")]
    with pytest.raises(cron.CronError):
        cron.parse_crons([("Cron-Tag-Action", "Tick")])
    with pytest.raises(cron.CronError):
        cron.parse_crons([("Cron-Interval", "500-ms")])
    fires = cron.crons_between(crons, process_ts=1_000_250, process_height=0, left_ts=1_000_250, left_height=0,
                               right_ts=1_012_250, height=0)
    # t = process ts + k s; fires when (sec - origin sec) % 5 == 0 and sec != origin sec
    assert [(f.cron.id, f.timestamp) for f in fires] == [("0-5-seconds", 1_005_250), ("0-5-seconds", 1_010_250)]
    # evaluating a span in two parts gives the same crons
    first = cron.crons_between(crons, process_ts=1_000_250, process_height=0, left_ts=1_000_250, left_height=0,
                               right_ts=1_007_000, height=0)
    rest = cron.crons_between(crons, process_ts=1_000_250, process_height=0, left_ts=1_000_250, left_height=0,
                              right_ts=1_012_250, height=0, after_ts=first[-1].timestamp)
    assert first + rest == fires


def test_block_crons_fire_on_a_new_block():
    crons = cron.parse_crons([("Cron-Interval", "2-blocks")])
    fires = cron.crons_between(crons, process_ts=0, process_height=10, left_ts=0, left_height=10,
                               right_ts=500, height=12)
    assert [(f.timestamp, f.block_height) for f in fires] == [(0, 12)]


# --- limits (docs/ABI.md, Limits and gas) ---------------------------------------------------------------------------

def test_limits():
    assert parse_bytes("1-gb") == 1 << 30
    assert parse_bytes("512-mb") == 512 << 20
    assert parse_bytes("4096") == 4096
    assert module_limits("P", [], MODULE_TAGS, memory_max=1 << 30, compute_max=9 * 10**12)[1:] == (1 << 30,
                                                                                                   9 * 10**12)
    with pytest.raises(CoreError) as e:
        module_limits("P", [("Memory-Limit", "2-gb")], MODULE_TAGS, memory_max=1 << 30, compute_max=9 * 10**12)
    assert status_for(e.value) == 413
    with pytest.raises(CoreError) as e:
        module_limits("P", [], [("Module-Format", "wasm128")], memory_max=1 << 30, compute_max=1)
    assert status_for(e.value) == 422


# --- scheduling, hash chain, durability of the log ---------------------------------------------------

def _node(tmp_path, wallet) -> tuple[Scheduler, SqliteStore, DataItem]:
    cfg = NodeConfig.from_mapping({"data_dir": tmp_path})
    store = SqliteStore(cfg.db_path)
    jwk = tmp_path / "node-wallet.json"
    jwk.write_text(json.dumps(wallet.to_jwk()))
    jwk.chmod(0o600)    # node key files must be private
    sch = Scheduler(cfg, store, Identity.load(tmp_path, jwk))
    module = DataItem.create(wallet, data=b"\0asm\1\0\0\0", tags=MODULE_TAGS)
    sch.ingest(module.to_bytes())
    proc = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                   ("Module", module.id)])
    sch.ingest(proc.to_bytes())
    return sch, store, proc


def test_hash_chain_and_slots(tmp_path, wallet):
    sch, store, proc = _node(tmp_path, wallet)
    ids = []
    for i in range(5):
        m = DataItem.create(wallet, data=str(i).encode(), tags=[("Data-Protocol", "ao"), ("Type", "Message")],
                            target=proc.id)
        acc = sch.ingest(m.to_bytes())
        assert acc.entry is not None and acc.entry.nonce == i + 1 and acc.fresh
        ids.append(m.id)
    again = sch.ingest(DataItem.parse(store.item_raw(ids[2])).to_bytes())
    assert not again.fresh and again.entry.nonce == 3           # re-posting is idempotent
    entries = store.log_range(proc.id, 0, 10)
    assert [e.nonce for e in entries] == [0, 1, 2, 3, 4, 5]
    # docs/ABI.md (Hash chain): first HC = H(pid), next = H(prev assignment id || prev HC)
    assert entries[0].hash_chain == hashing.b64url(hashing.sha256(hashing.b64url_decode(proc.id)))
    for prev, cur in zip(entries, entries[1:], strict=False):
        expect = hashing.b64url(hashing.sha256(hashing.b64url_decode(prev.assignment_id)
                                               + hashing.b64url_decode(prev.hash_chain)))
        assert cur.hash_chain == expect
        assert cur.timestamp >= prev.timestamp
    # assignments are real signed items carrying the slot
    a = DataItem.parse(store.item_raw(entries[3].assignment_id))
    assert a.verify() and a.id == entries[3].assignment_id
    assert a.tag("Nonce") == "3" and a.tag("Message") == ids[2] and a.tag("Process") == proc.id


def test_bad_items_are_refused(tmp_path, wallet):
    sch, store, proc = _node(tmp_path, wallet)
    m = DataItem.create(wallet, data=b"x", tags=[("Data-Protocol", "ao"), ("Type", "Message")], target=proc.id)
    raw = bytearray(m.to_bytes())
    raw[-1] ^= 1
    for bad, status, text in [
        (b"", 400, "valid and signed"),
        (b"\x01\x00" + b"\x00" * 100, 400, "valid and signed"),
        (bytes(raw), 400, "signature verification failed"),
        (DataItem.create(None, data=b"x", tags=[("Type", "Message")]).to_bytes(), 400, "valid and signed"),
        (DataItem.create(wallet, data=b"x", tags=[("Data-Protocol", "ao"), ("Type", "Message")],
                         target=hashing.b64url(b"\x01" * 32)).to_bytes(), 404, "not found"),
        (DataItem.create(wallet, data=b"x", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                  ("Module", "nope")]).to_bytes(), 404, "Module nope"),
        (DataItem.create(wallet, data=b"x", tags=[("Data-Protocol", "ao"), ("Type", "Other")]).to_bytes(), 400,
         "Type"),
    ]:
        with pytest.raises(CoreError) as e:
            sch.ingest(bad)
        assert status_for(e.value) == status and text in e.value.message
    assert store.process(proc.id).nonce == 0


def _race(path: str, pid: str, n: int, q) -> None:
    import time

    from cu.codec.wallet import Ed25519Key as K
    store = SqliteStore(path)
    key = K.generate()
    ident = Identity(wallet=None, ed25519=K.generate())  # type: ignore[arg-type]
    got = []
    for i in range(n):
        m = DataItem.create(key, data=f"{i}".encode(), tags=[("Data-Protocol", "ao"), ("Type", "Message")],
                            target=pid)
        from cu.node.items import item_meta
        meta = item_meta(m)
        entry, _ = store.schedule(pid, m.id, int(time.time() * 1000), 0, ident.build_assignment,
                                  (meta, m.to_bytes()))
        got.append(entry.nonce)
    q.put(got)


def test_no_slot_assigned_twice_across_processes(tmp_path, wallet):
    sch, store, proc = _node(tmp_path, wallet)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(store.path), proc.id, 40, q)) for _ in range(4)]
    for p in procs:
        p.start()
    nonces = sorted(n for _ in procs for n in q.get(timeout=60))
    for p in procs:
        p.join(timeout=30)
    assert nonces == list(range(1, 161))
    entries = store.log_range(proc.id, 0, 1000)
    assert [e.nonce for e in entries] == list(range(0, 161))
    assert len({e.message_id for e in entries}) == 161


def test_identity_persists(tmp_path):
    a = Identity.load(tmp_path)
    b = Identity.load(tmp_path)
    assert a.address == b.address and a.ed25519.owner == b.ed25519.owner
    assert isinstance(b.ed25519, Ed25519Key)
    assert json.loads((tmp_path / "wallet.json").read_text())["kty"] == "RSA"
    assert (tmp_path / "wallet.json").stat().st_mode & 0o077 == 0


def test_tee_resolution(monkeypatch):
    from cu.serve import cli
    monkeypatch.setattr(cli, "TEE_DEVICES", {"snp": ("/nonexistent/sev-guest",), "tdx": ("/nonexistent/tdx",)})
    assert cli.resolve_tee("auto") == "none"          # refuses to pretend
    assert cli.resolve_tee("sim") == "sim"
    assert cli.resolve_tee("none") == "none"
    with pytest.raises(SystemExit):
        cli.resolve_tee("snp")
    monkeypatch.setattr(cli, "TEE_DEVICES", {"snp": ("/dev/null",), "tdx": ("/nonexistent/tdx",)})
    assert cli.resolve_tee("auto") == "snp"


def test_assignment_builder_matches_the_generic_item_path(tmp_path):
    """Identity.build_assignment builds the item directly; it must be the item DataItem.create makes."""
    ident = Identity.load(tmp_path)
    raw, meta = ident.build_assignment("P" * 43, "M" * 43, 5, 1_700_000_000_000, 7, "H" * 43, 0)
    tags = [("Process", "P" * 43), ("Message", "M" * 43), ("Epoch", "0"), ("Nonce", "5"), ("Hash-Chain", "H" * 43),
            ("Block-Height", "000000000007"), ("Timestamp", "1700000000000"), ("Data-Protocol", "ao"),
            ("Type", "Assignment"), ("Variant", "ao.TN.1")]
    ref = DataItem.create(ident.ed25519, data=b"", tags=tags)
    assert raw == ref.to_bytes()       # ed25519 signatures are deterministic
    from cu.node.items import item_meta
    assert meta == item_meta(ref, now_ms=1_700_000_000_000)
    assert DataItem.parse(raw).verify()


OUTBOX_INSERT = "INSERT INTO outbox (pid, seq, idx, kind, target, item_id, delivered) VALUES (?,?,?,?,?,?,?)"


def test_group_transaction_isolates_a_failing_job(tmp_path):
    """SqliteStore.transact runs a batch optimistically; a failing job is redone alone in a savepoint: it
    returns its exception and writes nothing, the others commit."""
    store = SqliteStore(tmp_path / "s.sqlite")

    def put(n: int):
        def job(c):
            c.execute(OUTBOX_INSERT, ("P", n, 0, "Message", "T", f"i{n}", 0))
            return n
        return job

    def failing(c):
        c.execute(OUTBOX_INSERT, ("P", 99, 0, "Message", "T", "bad", 0))
        raise ValueError("refused")

    out = store.transact([put(1), failing, put(2)], True)
    assert out[0] == 1 and out[2] == 2 and isinstance(out[1], ValueError)
    assert [r[1] for r in store.outbox_rows("P")] == [1, 2]      # the failing job's write was rolled back
    assert store.transact([put(3), put(4)], False) == [3, 4]
    assert [r[1] for r in store.outbox_rows("P")] == [1, 2, 3, 4]
    # a duplicate key fails its own job only
    out = store.transact([put(5), put(1)], True)
    assert out[0] == 5 and isinstance(out[1], sqlite3.IntegrityError)
    assert [r[1] for r in store.outbox_rows("P")] == [1, 2, 3, 4, 5]
