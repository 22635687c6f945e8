"""Three nodes on one PostgreSQL database (issue 20, "Must show"): 50 processes spawned through random nodes,
Count messages sent to random nodes and results read through random nodes (forwarded to the lease owner) while
one node is killed with SIGKILL. Then: every acknowledged message is in its process's log exactly once, slots
contiguous and the hash chain continuous; every message was evaluated exactly once in slot order (the Lua
module's Count answers its position, so a message evaluated twice or out of order would shift every later
answer); the results are identical to a single SQLite node fed the same items in the same order; the killed
node's processes were taken over by the others within the lease time (restored from the checkpoints it wrote)
and their later results are signed by the new owner."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cu.codec.ans104 import DataItem
from tests.pg import free_port, node_wallets, seed_wallet
from tests.test_node_e2e import MODULE_CACHE, get, lua32, request, upload_module, wallet  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
LEASE_S = 3.0
PROCESSES = 50

pytestmark = pytest.mark.slow


class ClusterNode:
    def __init__(self, data_dir: Path, store: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.logfile = data_dir.parent / f"{data_dir.name}.log"
        extra = ["--store", store, "--node-url", self.url, "--lease", str(LEASE_S)] if store else []
        env = dict(os.environ, PYTHONPATH=str(REPO), AOCU_EVALUATORS="1")
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cu.cli", "serve", "--bind", f"127.0.0.1:{self.port}", "--data-dir",
                 str(data_dir), "--tee", "sim", "--workers", "1", "--threads", "6", "--quiet",
                 "--checkpoint-every", "4", "--module-cache", str(MODULE_CACHE), *extra],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO)

    def wait_up(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                if get(self.url + "/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"node did not start:\n{self.logfile.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)    # the whole node: master, workers, evaluator
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def term(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def _post(url: str, raw: bytes) -> int:
    try:
        return request("POST", url + "/", raw, {"Content-Type": "application/octet-stream"}, timeout=20)[0]
    except OSError:
        return 0


def _read(url: str, pid: str, mid: str, deadline_s: float = 30) -> tuple[int, bytes, dict]:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            status, body, headers = request("GET", f"{url}/result/{mid}?process-id={pid}", timeout=20)
        except OSError:
            status, body, headers = 0, b"", {}
        if status not in (0, 202, 503) or time.monotonic() > deadline:
            return status, body, headers
        time.sleep(0.1)


def _keyid(headers: dict) -> str:
    return re.search(r'keyid="([^"]+)"', headers.get("Signature-Input", "")).group(1)


def _log(url: str, pid: str) -> list[tuple[int, str, str, str]]:
    """(nonce, message id, assignment id, hash chain) of the process's log, from the SU route."""
    out = []
    page = json.loads(get(f"{url}/{pid}?limit=1000")[1])
    for e in page["edges"]:
        a = e["node"]["assignment"]
        tags = {t["name"]: t["value"] for t in a["tags"]}
        out.append((int(tags["Nonce"]), tags["Message"], a["id"], tags["Hash-Chain"]))
    assert not page["page_info"]["has_next_page"]
    return out


def test_three_nodes_one_database_kill9(pg_server, tmp_path, lua32, wallet, cache_dir):  # noqa: F811 (fixtures)
    import psycopg

    from attestation.sim import SimulatedTee
    from cu import hashing
    from cu.node.store_pg import PgStore
    dsn = pg_server.database()
    PgStore(dsn).close()
    # one simulated chip for the three nodes: they derive the same cache key, so each can restore the
    # checkpoints the others wrote (docs/OPERATIONS.md, Cluster)
    dirs = [tmp_path / f"n{i}" for i in range(3)]
    SimulatedTee(dirs[0]).snp_chain()
    for d in dirs[1:]:
        shutil.copytree(dirs[0] / "sim-tee", d / "sim-tee")
    for d, jwk in zip(dirs, node_wallets(cache_dir, 4), strict=False):
        seed_wallet(d, jwk)
    nodes = [ClusterNode(d, dsn) for d in dirs]
    t_start = time.monotonic()
    try:
        for n in nodes:
            n.wait_up()
        t_up = time.monotonic() - t_start
        module = upload_module(nodes[0].url, wallet, lua32.read_bytes())
        pids, spawned_by = [], {}
        for i in range(PROCESSES):
            item = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Variant", "ao.TN.1"),
                                                           ("Type", "Process"), ("Module", module),
                                                           ("Name", f"p{i}")])
            assert _post(nodes[i % 3].url, item.to_bytes()) == 202
            pids.append(item.id)
            spawned_by[item.id] = i % 3
        db = psycopg.connect(dsn, autocommit=True)
        owners = dict(db.execute("SELECT pid, owner FROM leases").fetchall())
        node_ids = [json.loads(get(n.url + "/")[1])["address"] for n in nodes]
        assert len(set(node_ids)) == 3
        assert {owners[p] for p in pids} == set(node_ids)      # spread: each node owns the ones it spawned
        wrong = [(node_ids.index(owners[p]), spawned_by[p]) for p in pids if owners[p] != node_ids[spawned_by[p]]]
        assert not wrong, wrong

        # a read through a node that does not own the process is forwarded: the owner computes and signs it
        p0 = next(p for p in pids if owners[p] == node_ids[0])
        first = DataItem.create(wallet, data=b"", target=p0, tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                  ("Action", "Count")])
        assert _post(nodes[2].url, first.to_bytes()) == 202
        status, body, via2 = _read(nodes[2].url, p0, first.id)
        assert status == 200 and json.loads(body)["Output"] == "1"
        assert via2.get("X-Aocu-Forwarded-By") == node_ids[2]
        status, _, via0 = _read(nodes[0].url, p0, first.id)
        assert status == 200 and "X-Aocu-Forwarded-By" not in via0 and _keyid(via0) == _keyid(via2)
        assert all(get(n.url + "/ready")[0] == 200 for n in nodes)

        acked: list[tuple[str, str]] = [(p0, first.id)]
        reads: dict[str, list[tuple[float, str]]] = {p: [] for p in pids}    # pid -> (time, signing key)
        alive = [0, 1, 2]
        stop = threading.Event()

        def load(seed: int) -> None:
            r = random.Random(seed)
            while not stop.is_set():
                pid = r.choice(pids)
                url = nodes[r.choice(alive)].url
                item = DataItem.create(wallet, data=b"", target=pid,
                                       tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Count")])
                if _post(url, item.to_bytes()) != 202:
                    continue        # not acknowledged (the node died mid-request)
                acked.append((pid, item.id))
                if r.random() < 0.5:    # read it through any node: forwarded to the owner
                    status, _, headers = _read(nodes[r.choice(alive)].url, pid, item.id, deadline_s=0)
                    if status == 200:
                        reads[pid].append((time.monotonic(), _keyid(headers)))

        threads = [threading.Thread(target=load, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        time.sleep(3)
        victim = 1
        victim_pids = [p for p in pids if owners[p] == node_ids[victim]]
        (db_kill,) = db.execute("SELECT clock_timestamp()").fetchone()
        nodes[victim].kill()
        t_kill = time.monotonic()
        alive.remove(victim)
        # within the lease the dead owner's processes answer 503 + Retry-After on the others
        probe = next((p, m) for p, m in acked if p in victim_pids)
        status, _, headers = request("GET", f"{nodes[0].url}/result/{probe[1]}?process-id={probe[0]}")
        assert status == 503 and "Retry-After" in headers, status
        time.sleep(LEASE_S + 3)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        survivors = [nodes[i] for i in alive]
        assert len(acked) > 100, len(acked)

        # the victim's processes moved to the survivors once its lease expired
        rows = db.execute("SELECT pid, owner, since, epoch FROM leases").fetchall()
        moved = {p: (o, since, epoch) for p, o, since, epoch in rows if p in victim_pids}
        assert all(o in (node_ids[0], node_ids[2]) and epoch == 2 for o, _, epoch in moved.values())
        lag = max((since - db_kill).total_seconds() for _, since, _ in moved.values())
        # by design: the lease, then the next heartbeat of a survivor (lease/3); slack for a loaded machine
        assert lag <= LEASE_S + LEASE_S / 3 + 3, lag
        # and not before: its last heartbeat kept them until its registration expired
        (expired,) = db.execute("SELECT expires FROM nodes WHERE id=%s", (node_ids[victim],)).fetchone()
        assert all(since >= expired for _, since, _ in moved.values())
        early = min((since - db_kill).total_seconds() for _, since, _ in moved.values())

        # every acknowledged message exactly once in its process's log; slots contiguous, chain continuous
        logs = {p: _log(survivors[0].url, p) for p in pids}
        for p, log in logs.items():
            assert [n for n, *_ in log] == list(range(len(log)))
            assert len({m for _, m, _, _ in log}) == len(log)
            assert log[0][3] == hashing.su_hash_chain(None, None, p)
            for prev, cur in zip(log, log[1:], strict=False):
                assert cur[3] == hashing.su_hash_chain(prev[2], prev[3], p)
        in_log = {(p, m) for p, log in logs.items() for _, m, _, _ in log[1:]}
        assert set(acked) <= in_log

        # every message evaluated exactly once, in slot order: Count answers its own slot
        bodies: dict[str, bytes] = {}
        keys_after: dict[str, str] = {}

        def check(p: str) -> None:
            r = random.Random(p)
            for nonce, m, _, _ in logs[p][1:]:
                status, body, headers = _read(r.choice(survivors).url, p, m)
                assert status == 200, (p, m, body)
                assert json.loads(body)["Output"] == str(nonce), (p, nonce, body)
                bodies[m] = body
                keys_after[p] = _keyid(headers)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(check, pids))
        # the victim's processes: read before the kill signed by the victim, after it by their new owner
        for p in victim_pids:
            before = {k for t, k in reads[p] if t < t_kill}
            after = {k for t, k in reads[p] if t > t_kill} | {keys_after[p]}
            assert not before & after, (before, after)
        for n in survivors:
            metrics = {line.split()[0]: float(line.split()[1]) for line in get(n.url + "/metrics")[1].decode()
                       .splitlines() if line.startswith("aocu_") and "{" not in line}
            assert metrics["aocu_recompute_mismatch_total"] == 0
            assert metrics["aocu_checkpoint_restore_failures_total"] == 0
        restores = sum(float(line.split()[1]) for n in survivors for line in get(n.url + "/metrics")[1].decode()
                       .splitlines() if line.startswith("aocu_checkpoint_restores_total"))
        assert restores >= 1         # a taken-over process continued from the victim's checkpoint
        (results_per_message,) = db.execute(
            "SELECT max(c) FROM (SELECT count(*) AS c FROM results WHERE message_id IS NOT NULL "
            "GROUP BY pid, message_id) t").fetchone()
        assert results_per_message == 1
        raw = dict(db.execute("SELECT id, raw FROM items").fetchall())
        db.close()
        cluster_s = time.monotonic() - t_start

        # the same items in the same order on one SQLite node: the same results
        # an outbox message between processes leased to different nodes: scheduled by the sender's node in the
        # result's transaction, evaluated by the target's owner, delivered once
        sender = next(p for p in pids if owners[p] == node_ids[0])
        target = next(p for p in pids if owners[p] == node_ids[2])
        send = DataItem.create(wallet, data=b"hello b", target=sender, tags=[
            ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Send"), ("Send-To", target)])
        assert _post(nodes[2].url, send.to_bytes()) == 202
        status, body, _ = _read(nodes[2].url, sender, send.id)
        assert status == 200 and json.loads(body)["Messages"][0]["Target"] == target, body
        deadline = time.monotonic() + 20
        while True:
            page = json.loads(get(f"{nodes[0].url}/{target}?limit=1000")[1])
            echoes = [e["node"]["message"]["id"] for e in page["edges"] if e["node"]["message"]
                      and {"name": "From-Process", "value": sender} in e["node"]["message"]["tags"]]
            if echoes or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(echoes) == 1
        # evaluated unread by the owner's crank (told by the database at the sender's commit): node 0 scheduled
        # it but does not evaluate another node's process
        with psycopg.connect(dsn, autocommit=True) as db2:
            while not db2.execute("SELECT 1 FROM results WHERE pid=%s AND message_id=%s",
                                  (target, echoes[0])).fetchone():
                assert time.monotonic() < deadline, "the owner did not crank the delivered message"
                time.sleep(0.05)
        status, body, headers = _read(nodes[0].url, target, echoes[0])
        assert status == 200 and json.loads(body)["Output"] == "hello b"
        assert headers.get("X-Aocu-Forwarded-By") == node_ids[0]      # computed by the target's owner
        t_single = time.monotonic()
        for n in nodes:
            n.term()
        from cu.http import create_app
        seed_wallet(tmp_path / "single", node_wallets(cache_dir, 4)[3])
        app = create_app({"data_dir": tmp_path / "single", "tee": "none", "evaluator": "embedded",
                          "module_cache": MODULE_CACHE})
        try:
            client = app.test_client()
            for i in [module, *pids, *(m for p in pids for _, m, _, _ in logs[p][1:])]:
                got = client.post("/", data=bytes(raw[i]), content_type="application/octet-stream")
                assert got.status_code == 202, got.data
            for p in pids:
                for _, m, _, _ in logs[p][1:]:
                    r = client.get(f"/result/{m}?process-id={p}")
                    assert r.status_code == 200 and r.get_json() == json.loads(bodies[m]), (p, m)
        finally:
            app.extensions["aocu"].dispatcher.stop()
        print(f"\n[pg-cluster] {len(acked)} acknowledged, {len(bodies)} results checked, "
              f"{len(victim_pids)} processes taken over {early:.1f}..{lag:.1f} s after the kill; nodes up in "
              f"{t_up:.0f} s, cluster part {cluster_s:.0f} s, single-node replay {time.monotonic() - t_single:.0f} s")
    finally:
        for n in nodes:
            n.term()
