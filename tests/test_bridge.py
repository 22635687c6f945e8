"""Legacynet bridge end to end against the stand-in legacy SU + gateway (tests/standin): the bridge computes the
process exactly like the legacy CU stream evaluated directly with `aocu run`; checkpoint start == replay; an SU
outage in the middle gives clear errors, then exact continuation, no message evaluated twice, no orphaned files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cu.codec.wallet import Ed25519Key
from cu.http.errors import status_for
from cu.node.bridge import (
    AccessDenied,
    BridgeConfig,
    BridgeError,
    BridgeService,
    RetryPolicy,
    StreamError,
    UpstreamError,
)
from cu.node.bridge import checkpoint as ckpt
from cu.node.bridge.remote import Progress, RemoteProcess, load_process
from cu.node.bridge.su import SuClient
from tests.modules.build import MODULES, build
from tests.standin.reference import aocu_run
from tests.standin.server import StandIn
from tests.standin.world import World

FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, deadline_s=2.0, timeout_s=5.0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("module-cache")


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory, cache_dir):
    """The full legacy stream (to the SU's current timestamp) evaluated with `aocu run`."""
    stream = world.expected_stream()
    results, mem_hash = aocu_run(world, stream, tmp_path_factory.mktemp("aocu-run"), cache_dir)
    return stream, results, mem_hash


def service(standin, d: Path, cache_dir: Path, **kw) -> BridgeService:
    kw.setdefault("page_size", 100)
    signer = kw.pop("signer", None)
    cfg = BridgeConfig(gateway_url=standin.url, retry=FAST, cache_dir=cache_dir, **kw)
    return BridgeService(cfg, d, signer=signer)


def mem_hash(b: BridgeService, pid: str) -> str:
    return hashlib.sha256(b.memory(pid)).hexdigest()


def rows_as_dicts(b: BridgeService, pid: str) -> list[dict]:
    return [json.loads(r.body) for r in b.store.results(pid)]


def test_stream_is_the_legacy_cu_stream(world, standin):
    """Without evaluating: the normalised messages are byte-identical to the legacy CU's (independent model)."""
    su = SuClient(standin.url, FAST)
    from cu.node.bridge.gateway import GatewayClient
    gw = GatewayClient(standin.url, policy=FAST)
    rp = RemoteProcess(load_process(world.pid, su, gw), su, gw, page_size=77)
    seen: dict[str, int] = {}

    def dedup(key: str, nonce: int) -> bool:
        first = seen.setdefault(key, nonce)
        return first < nonce

    entries = list(rp.stream(Progress(), seen=dedup, horizon_ts=world.now_ts))
    got = [e for e in entries if e.kind != "duplicate"]
    exp = world.expected_stream()
    assert [json.dumps(e.msg, separators=(",", ":"), ensure_ascii=False) for e in got] == \
        world.jsonl(exp).decode().splitlines()
    assert [(e.kind == "cron", e.cron, e.nonce) for e in got] == [(x["kind"] == "cron", x["cron"], x["nonce"])
                                                                   for x in exp]
    dups = [e for e in entries if e.kind == "duplicate"]
    assert len(dups) == 2 and {e.nonce for e in dups} == {x.nonce for x in world.edges if x.duplicate}
    kinds = {e.kind for e in got}
    assert kinds == {"message", "assignment", "cron"}
    # several hundred messages, assignments (one with Exclude: Data), crons of both kinds
    assert len(world.edges) >= 300 and sum(e.kind == "assignment" for e in got) >= 3
    assert any(e.cron == "0-3-blocks" for e in got) and any(e.cron == "0-15-seconds" for e in got)
    assert any(e.kind == "assignment" and "Data" not in e.msg for e in got)


def test_bridge_equals_aocu_run(world, standin, reference, tmp_path, cache_dir):
    stream, results, ref_hash = reference
    b = service(standin, tmp_path, cache_dir)
    b.cron(world.pid)                                  # everything scheduled, then crons up to the SU timestamp
    assert rows_as_dicts(b, world.pid) == results
    assert mem_hash(b, world.pid) == ref_hash
    assert b.metrics["evaluations"] == len(stream)
    assert b.metrics["duplicates_skipped"] == 2
    # located through the process's Scheduler tag and the Scheduler-Location record (no --su-url)
    assert any(p == "/graphql" for _, p in standin.requests)
    # /result for a scheduled message, for a duplicate, and for an unknown id
    msg_idx = next(i for i, s in enumerate(stream) if s["kind"] == "message" and s["nonce"] == 42)
    assert json.loads(b.result(world.pid, stream[msg_idx]["id"])) == results[msg_idx]
    dup = next(e for e in world.edges if e.duplicate and e.message is not None)
    with pytest.raises(BridgeError) as ei:
        b.result(world.pid, dup.message.id)
    assert status_for(ei.value) == 404 and "duplicate" in ei.value.message
    with pytest.raises(BridgeError) as ei:
        b.result(world.pid, "A" * 43)
    assert status_for(ei.value) == 404
    # /results paging and cron-only pages come from the stored evaluations
    rows, more = b.results_page(world.pid, after=None, until=None, descending=False, limit=25, crons_only=True,
                                skip_errors=False)
    assert more and len(rows) == 25 and all(r.cron for r in rows)
    # /state and a dry-run (memory discarded)
    memory, headers = b.state(world.pid)
    assert hashlib.sha256(memory).hexdigest() == ref_hash
    assert headers["Last-Ordinate"] == str(len(world.edges) - 1)
    out = json.loads(b.dry_run(world.pid, {"Tags": [{"name": "Action", "value": "Count"}], "Owner": "someone"}))
    assert out["Output"] and mem_hash(b, world.pid) == ref_hash
    b.shutdown()


def test_result_evaluates_up_to_the_message(world, standin, reference, tmp_path, cache_dir):
    stream, results, _ = reference
    target = next(e for e in world.edges if e.nonce == 100)
    b = service(standin, tmp_path, cache_dir)
    body = json.loads(b.result(world.pid, target.message.id if target.message else target.assigned))
    n = len(world.expected_stream(to_nonce=100))
    assert body == results[n - 1]
    assert b.metrics["evaluations"] == n and len(b.store.results(world.pid)) == n
    b.shutdown()


def test_checkpoint_start_equals_replay(world, standin, reference, tmp_path, cache_dir):
    stream, results, ref_hash = reference
    wallet = Ed25519Key.generate()
    a = service(standin, tmp_path / "a", cache_dir, signer=wallet)
    k = 150          # after the original pushed message, before its re-pushed duplicate (nonce 181)
    a.compute(world.pid, to_nonce=k)
    item_id = a.write_checkpoint(world.pid)
    a.shutdown()
    item = standin.uploads[item_id]
    assert item.verify()
    names = [n.decode() for n, _ in item.tags]
    assert names[:13] == ["Data-Protocol", "Variant", "Type", "Module", "Process", "Nonce", "Timestamp",
                          "Block-Height", "Content-Type", "SHA-256", "Content-Encoding", "Unit-Identifier",
                          "Ordinate"]
    info = ckpt.parse_info([(n.decode(), v.decode()) for n, v in item.tags])
    assert info.nonce == k and info.assignment_id and info.hash_chain
    assert ckpt.read_checkpoint(item.data, info)[:4] and item.data[:2] == b"\x1f\x8b"

    b = service(standin, tmp_path / "b", cache_dir, checkpoint_owners=(item.owner_address,))
    b.cron(world.pid)
    n_before = len(world.expected_stream(to_nonce=k))
    assert b._warm[world.pid].origin == f"checkpoint:{item_id}"
    assert b.metrics["evaluations"] == len(stream) - n_before       # nothing before the checkpoint re-evaluated
    assert rows_as_dicts(b, world.pid) == results[n_before:]
    assert mem_hash(b, world.pid) == ref_hash
    assert b.metrics["duplicates_skipped"] == 2                     # dedup index rebuilt from SU metadata
    first_id = stream[0]["id"]
    with pytest.raises(BridgeError) as ei:
        b.result(world.pid, first_id)
    assert status_for(ei.value) == 425
    b.shutdown()


def test_checkpoint_sha256_is_verified(world):
    mem = bytes(65536 * 2)
    info = ckpt.CheckpointInfo(pid=world.pid, module=world.module.id, nonce=1, ordinate="1", timestamp=1,
                               block_height=1, sha256=hashlib.sha256(mem).hexdigest())
    data = ckpt.gzip9(mem)
    assert ckpt.read_checkpoint(data, info) == mem
    bad = ckpt.CheckpointInfo(**{**info.__dict__, "sha256": "00" * 32})
    with pytest.raises(BridgeError) as ei:
        ckpt.read_checkpoint(data, bad)
    assert status_for(ei.value) == 422 and "SHA-256" in ei.value.message
    with pytest.raises(BridgeError):
        ckpt.read_checkpoint(data[:-9], info)


def test_su_outage_in_the_middle(world, standin, reference, tmp_path, cache_dir):
    stream, results, ref_hash = reference
    b = service(standin, tmp_path, cache_dir, page_size=50)
    # served: /processes, /timestamp, two pages; then the SU answers 503
    standin.outage.start("su", after=4)
    try:
        with pytest.raises(UpstreamError) as ei:
            b.cron(world.pid)
        err = ei.value
        assert status_for(err) == 503 and err.service.startswith("scheduler") and "HTTP 503" in err.reason
        assert err.attempts == FAST.attempts and "unavailable" in err.message
        p1 = b.store.progress(world.pid)
        assert p1 is not None and p1.nonce == 99                  # everything of the two pages, committed
        n1 = len(b.store.results(world.pid))
        assert n1 == len(world.expected_stream(to_nonce=99))
        evals = b.metrics["evaluations"]
        # still down: the same clear error, no progress, nothing evaluated
        with pytest.raises(UpstreamError):
            b.cron(world.pid)
        assert b.store.progress(world.pid) == p1 and b.metrics["evaluations"] == evals
        # connection drops instead of 503s
        standin.outage.start("su", after=0, status=0)
        with pytest.raises(UpstreamError) as ei:
            b.cron(world.pid)
        assert status_for(ei.value) == 503
    finally:
        standin.outage.clear()
    b.cron(world.pid)
    assert b.metrics["evaluations"] == len(stream)                # no message evaluated twice
    assert rows_as_dicts(b, world.pid) == results
    assert mem_hash(b, world.pid) == ref_hash
    b.shutdown()
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert set(leftovers) <= {"bridge.sqlite", "bridge.sqlite-wal", "bridge.sqlite-shm"}, leftovers


def test_gateway_outage_and_restart_resume(world, standin, reference, tmp_path, cache_dir):
    stream, results, ref_hash = reference
    a = service(standin, tmp_path, cache_dir, snapshot_every=10_000)
    a.compute(world.pid, to_nonce=110)                  # before the first pure assignment (nonce 120)
    standin.outage.start("gateway")                     # hydration of the assignment needs the gateway
    try:
        with pytest.raises(UpstreamError) as ei:
            a.cron(world.pid)
        assert ei.value.service.startswith("gateway") and status_for(ei.value) == 503
    finally:
        standin.outage.clear()
    done = a.store.progress(world.pid)
    assert done is not None and 110 <= done.nonce < 120
    a.shutdown()                                        # snapshot at the exact position
    b = service(standin, tmp_path, cache_dir)
    b.cron(world.pid)
    assert b._warm[world.pid].origin == "snapshot"
    assert a.metrics["evaluations"] + b.metrics["evaluations"] == len(stream)
    assert rows_as_dicts(b, world.pid) == results
    assert mem_hash(b, world.pid) == ref_hash
    assert b.metrics["recompute_mismatch"] == 0
    b.shutdown()


def test_hash_chain_is_checked(tmp_path, cache_dir):
    w = World(build("lua32").read_bytes(), MODULES["lua32"].module_format, n_messages=30, seed=3)
    e = w.edges[10]
    tags = [(n.decode(), v.decode()) for n, v in e.assignment.tags]
    tags = [(n, "A" * 43 if n == "Hash-Chain" else v) for n, v in tags]
    from cu.codec.ans104 import DataItem
    e.assignment = DataItem.create(w.su_key, data=b"", tags=tags)
    with StandIn(w) as s:
        b = service(s, tmp_path, cache_dir, su_url=s.url)
        with pytest.raises(StreamError) as ei:
            b.compute(w.pid)
        assert status_for(ei.value) == 422
        assert ei.value.message == f"HashChain invalid on message {e.message.id if e.message else e.assigned}"
        assert b.store.progress(w.pid).nonce == 9
        b.shutdown()


def test_access_lists(world, standin, tmp_path, cache_dir):
    b = service(standin, tmp_path, cache_dir, deny=frozenset({world.pid}))
    with pytest.raises(AccessDenied) as ei:
        b.result(world.pid, "x")
    assert status_for(ei.value) == 403 and ei.value.message == f"Access denied for process {world.pid}"
    b2 = service(standin, tmp_path / "2", cache_dir, allow=frozenset({"other"}))
    assert not b2.allowed(world.pid) and b2.allowed("other")
    assert BridgeConfig.from_mapping({}) is None
    cfg = BridgeConfig.from_mapping({"gateway": standin.url, "su_url": standin.url, "bridge_deny": "a,b"})
    assert cfg is not None and cfg.deny == frozenset({"a", "b"}) and cfg.su_url == standin.url
    with pytest.raises(ValueError):
        BridgeConfig(gateway_url="file:///etc/passwd")
    cfg = BridgeConfig.from_mapping({"gateway": standin.url, "su_overrides": f"{world.pid}={standin.url}/"})
    assert cfg is not None and service(standin, tmp_path / "3", cache_dir,
                                       su_overrides=cfg.su_overrides).locate(world.pid) == standin.url
    with pytest.raises(ValueError):
        BridgeConfig(gateway_url=standin.url, su_overrides={"p": "ftp://x"})


def test_cold_start_injects_the_process_message(tmp_path, cache_dir):
    """Pre-aop-6 process: the SU log starts with an ordinary message, so the process message is evaluated first
    (from the gateway's /raw data) and not saved as a result."""
    w = World(build("lua32").read_bytes(), MODULES["lua32"].module_format, n_messages=40, seed=5, aop6=False)
    stream = w.expected_stream()
    assert stream[0]["kind"] == "process"
    results, ref_hash = aocu_run(w, stream, tmp_path / "run", cache_dir)
    with StandIn(w) as s:
        b = service(s, tmp_path / "b", cache_dir, su_url=s.url)
        b.cron(w.pid)
        assert b.metrics["evaluations"] == len(stream)
        assert rows_as_dicts(b, w.pid) == results[1:]
        assert mem_hash(b, w.pid) == ref_hash
        b.shutdown()


@pytest.mark.parametrize("seed", range(6))
def test_cron_walk_matches_ticking(seed):
    """The arithmetic cron walk equals the legacy CU's second-by-second loop (world model) on random spans."""
    import random

    from cu.node.bridge.crons import cron_fires, parse_crons
    from cu.node.bridge.gateway import Block
    from tests.standin.world import ORIGIN_HEIGHT, ORIGIN_TS

    w = World.__new__(World)                           # only the block list and the tick loop are used
    rng = random.Random(seed)
    w.blocks = []
    h, t = ORIGIN_HEIGHT - 1, ORIGIN_TS // 1000 - 30
    while len(w.blocks) < 200:
        w.blocks.append((h, t))
        h += 1
        t += rng.choice([1, 2, 60, 120, 121, 300])
    w.pid = "p"
    w.process = type("P", (), {"owner_address": "o"})()
    crons = parse_crons([("Cron-Interval", "15-seconds"), ("Cron-Tag-Action", "Count"),
                         ("Cron-Interval", "3-blocks"), ("Cron-Tag-Action", "Count"), ("Cron-Tag-Kind", "block")])
    blocks = [Block(hh, tt * 1000) for hh, tt in w.blocks]
    for _ in range(20):
        left = ORIGIN_TS + rng.randint(0, 5000_000)
        right = left + rng.randint(0, 900_000)
        left_h = max(hh for hh, tt in w.blocks if tt * 1000 <= left) if left >= w.blocks[0][1] * 1000 else ORIGIN_HEIGHT
        want = [(c["cron"], c["msg"]["Timestamp"], c["msg"]["Block-Height"]) for c in w._crons_between(left, left_h,
                                                                                                           right)]
        got = [(f.cron.id, f.timestamp, f.block_height) for f in cron_fires(
            crons, origin_ts=ORIGIN_TS, origin_height=ORIGIN_HEIGHT, left_ts=left, left_height=left_h,
            right_ts=right, blocks=blocks)]
        assert got == want


def test_node_hook(world, standin, tmp_path, cache_dir):
    from cu.node.bridge.node_hook import bridge_from_node
    from cu.node.config import NodeConfig

    plain = NodeConfig.from_mapping({"data_dir": tmp_path / "plain"})
    assert bridge_from_node(plain) is None and not plain.bridge_enabled
    cfg = NodeConfig.from_mapping({"data_dir": tmp_path / "n", "bridge": {"gateway": standin.url,
                                                                          "su_url": standin.url}})
    assert cfg.bridge_enabled
    # the evaluator process gets the settings as JSON: the round trip keeps them
    assert NodeConfig.from_mapping(json.loads(json.dumps(cfg.to_mapping()))).bridge == cfg.bridge
    b = bridge_from_node(cfg)
    assert b is not None and b.config.su_url == standin.url and b.config.memory_max == cfg.memory_max
    target = world.edges[5]
    assert json.loads(b.result(world.pid, target.message.id))["Output"] is not None
    rows, more = b.results_page(world.pid, after=None, until=None, descending=True, limit=2, crons_only=False,
                                skip_errors=False)
    assert len(rows) == 2 and more
    b.shutdown()


PEERS = Path(__file__).resolve().parent / "peers"


@pytest.mark.peers
@pytest.mark.skipif(shutil.which("node") is None or not (PEERS / "node_modules" / "arbundles").is_dir(),
                    reason="node + arbundles peer not installed (scripts/install.sh --test)")
def test_dedup_hash_and_checkpoint_gzip_match_the_legacy_peers(world, cache_dir):
    """The dedup deep hash equals arbundles' (as the legacy CU computes it, quirks included) and checkpoint data
    round-trips with Node's zlib (gzipSync level 9 / gunzipSync) for a real process memory."""
    import base64
    import subprocess

    from cu.engine import Instance, Module
    from cu.node.bridge import normalise

    scheduled = [normalise.map_edge(e.su_json()) for e in world.edges if e.message is not None]
    pushed = [s for s in scheduled if s.message.get("Forwarded-By")]
    assert len(pushed) >= 4
    msgs = [{"data": s.message.get("Data"), "tags": [{"name": n, "value": v} for n, v in s.tags],
             "target": s.message.get("Target"), "anchor": s.message.get("Anchor")} for s in pushed]
    inst = Instance(Module.load(world.module_wasm, world.module_format, cache_dir=cache_dir))
    inst.handle(world.jsonl(world.expected_stream(to_nonce=3)).splitlines()[1], world.env())
    memory = inst.memory()
    ours = ckpt.gzip9(memory)
    req = {"messages": msgs, "memory_b64": base64.b64encode(memory).decode(), "ours_b64": base64.b64encode(ours).decode()}
    proc = subprocess.run(["node", str(Path(__file__).parent / "standin" / "legacy_peer.js")],
                          input=json.dumps(req).encode(), capture_output=True, timeout=120, check=True)
    out = json.loads(proc.stdout)
    assert [normalise.deep_hash(s) for s in pushed] == out["hashes"]
    # Node's bundled zlib deflates differently from the system zlib, so the gzip bytes differ; the checkpoint
    # format is still interchangeable: the SHA-256 tag covers the uncompressed memory, both sides read both.
    sha = hashlib.sha256(memory).hexdigest()
    assert out["ours_sha256"] == sha
    info = ckpt.CheckpointInfo(pid=world.pid, module=world.module.id, nonce=0, ordinate="0", timestamp=0,
                               block_height=0, sha256=sha)
    assert ckpt.read_checkpoint(base64.b64decode(out["gz"]), info) == memory


def test_su_paging_variants_and_gaps(tmp_path, cache_dir):
    """An SU that repeats the `from` edge is read exactly once per nonce; an SU that loses a message is a clear
    error, never a silent skip."""
    w = World(build("lua32").read_bytes(), MODULES["lua32"].module_format, n_messages=60, seed=9)
    stream = w.expected_stream()
    with StandIn(w) as s:
        s.inclusive_from = True
        b = service(s, tmp_path / "a", cache_dir, su_url=s.url, page_size=10)
        b.cron(w.pid)
        assert b.metrics["evaluations"] == len(stream)
        assert [r.message_id for r in b.store.results(w.pid)] == [x["id"] for x in stream]
        b.shutdown()
        s.inclusive_from = False
        s.hide_nonces = {25}
        c = service(s, tmp_path / "b", cache_dir, su_url=s.url, page_size=10)
        with pytest.raises(StreamError) as ei:
            c.cron(w.pid)
        assert status_for(ei.value) == 502 and "nonce 26" in ei.value.message and "after nonce 24" in ei.value.message
        assert c.store.progress(w.pid).nonce == 24
        c.shutdown()


def test_concurrent_result_requests(world, standin, reference, tmp_path, cache_dir):
    """Readers racing for results of one remote process: each message is evaluated once, in order."""
    import threading

    stream, results, _ = reference
    b = service(standin, tmp_path, cache_dir)
    targets = [e for e in world.edges if e.nonce in (60, 120, 170, 200) and not e.duplicate]
    out: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def read(e) -> None:
        mid = e.message.id if e.message is not None else e.assigned
        try:
            out[mid] = b.result(world.pid, mid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(e,)) for e in reversed(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    index = {s["id"]: i for i, s in enumerate(stream) if s["kind"] != "cron"}
    for mid, body in out.items():
        assert json.loads(body) == results[index[mid]]
    assert b.metrics["evaluations"] == len(world.expected_stream(to_nonce=200))
    b.shutdown()


def test_format4_module(tmp_path, cache_dir):
    """The same bridge path on a lazily booted wasm32-unknown-emscripten4 module."""
    w = World(build("lua32-lazy").read_bytes(), MODULES["lua32-lazy"].module_format, n_messages=80, seed=13)
    stream = w.expected_stream()
    results, ref_hash = aocu_run(w, stream, tmp_path / "run", cache_dir)
    with StandIn(w) as s:
        b = service(s, tmp_path / "b", cache_dir, su_url=s.url)
        b.cron(w.pid)
        assert rows_as_dicts(b, w.pid) == results
        assert mem_hash(b, w.pid) == ref_hash
        b.shutdown()
