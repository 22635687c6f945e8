"""End to end: `aocu serve` (gunicorn + evaluator process) on loopback with the project's Lua test module,
driven by @permaweb/aoconnect and by raw HTTP; restarts after SIGTERM and kill -9; bad input."""

from __future__ import annotations

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet

REPO = Path(__file__).resolve().parent.parent
PEERS = REPO / "tests" / "peers"

pytestmark = pytest.mark.slow


# --- harness ---------------------------------------------------------------------------------------

def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_WALLET: Path | None = None      # one node wallet per session: RSA-4096 generation is slow
MODULE_CACHE = Path(os.environ.get("AOCU_TEST_CACHE", REPO / "tests" / ".cache")) / "node-module-cache"


def node_wallet() -> Path:
    global NODE_WALLET
    if NODE_WALLET is None:
        import tempfile
        d = Path(tempfile.mkdtemp(prefix="aocu-node-wallet-"))
        NODE_WALLET = d / "wallet.json"
        NODE_WALLET.write_text(json.dumps(ArweaveWallet.generate().to_jwk()))
        NODE_WALLET.chmod(0o600)  # the node refuses key files readable by group/others
    return NODE_WALLET


class Node:
    def __init__(self, data_dir: Path, *, workers: int = 2, extra: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir.parent / f"node-{self.port}.log", "wb")  # noqa: SIM115
        # one evaluator unless a test asks for shards (`extra=("--evaluators", "N")`, tests/test_shards.py)
        env = dict(os.environ, PYTHONPATH=str(REPO), AOCU_EVALUATORS=os.environ.get("AOCU_EVALUATORS", "1"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cu.cli", "serve", "--bind", f"127.0.0.1:{self.port}", "--data-dir",
             str(data_dir), "--tee", "none", "--workers", str(workers), "--quiet", "--wallet", str(node_wallet()),
             "--module-cache", str(MODULE_CACHE), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=REPO)
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(self.url + "/health")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop_kill()
                raise RuntimeError(f"node did not start:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.data_dir.parent / f"node-{self.port}.log").read_text(errors="replace")[-4000:]

    def stop_term(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._reap()

    def stop_kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the whole node: master, workers, evaluator
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self._reap()

    def _reap(self) -> None:
        # wait until every process of the session is gone (the evaluator may still be checkpointing)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.log.close()


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def get(url: str) -> tuple[int, bytes, dict]:
    return request("GET", url)


def post_item(url: str, item: DataItem) -> tuple[int, dict]:
    status, body, _ = request("POST", url + "/", item.to_bytes(), {"Content-Type": "application/octet-stream"})
    return status, json.loads(body)


@pytest.fixture(scope="module")
def lua32() -> Path:
    override = os.environ.get("AOCU_NODE_TEST_WASM")   # a prebuilt lua32 while iterating
    if override:
        return Path(override)
    from tests.modules.build import build
    return build("lua32")


@pytest.fixture(scope="module")
def wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()


MODULE_TAGS = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Module"),
               ("Module-Format", "wasm32-unknown-emscripten2"), ("Input-Encoding", "JSON-1"),
               ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"), ("Compute-Limit", "9000000000000")]


def upload_module(url: str, wallet: ArweaveWallet, wasm: bytes, fmt: str = "wasm32-unknown-emscripten2",
                  compute: str = "9000000000000") -> str:
    tags = [(n, fmt if n == "Module-Format" else compute if n == "Compute-Limit" else v) for n, v in MODULE_TAGS]
    item = DataItem.create(wallet, data=wasm, tags=tags)
    status, body = post_item(url, item)
    assert status == 202, body
    return item.id


def spawn(url: str, wallet: ArweaveWallet, module_id: str, tags: tuple = ()) -> str:
    item = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Variant", "ao.TN.1"),
                                                   ("Type", "Process"), ("Module", module_id), *tags])
    status, body = post_item(url, item)
    assert status == 202, body
    return item.id


def send(url: str, wallet: ArweaveWallet, pid: str, action: str, data: str = "", tags: tuple = ()) -> str:
    item = DataItem.create(wallet, data=data.encode(), target=pid,
                           tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action), *tags])
    status, body = post_item(url, item)
    assert status == 202, body
    return item.id


def result(url: str, pid: str, mid: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        status, body, _ = get(f"{url}/result/{mid}?process-id={pid}")
        if status != 202 or time.monotonic() > deadline:
            break           # 202 = still evaluating (the legacy CU's busy answer): ask again, as the MU does
    assert status == 200, body
    return json.loads(body)


# --- aoconnect, unchanged ------------------------------------------------------------------------------

@pytest.mark.peers
def test_aoconnect_legacy_client_end_to_end(tmp_path, lua32, wallet):
    jwk = tmp_path / "wallet.json"
    jwk.write_text(json.dumps(wallet.to_jwk()))
    node = Node(tmp_path / "data")
    try:
        address = json.loads(get(node.url + "/")[1])["address"]
        proc = subprocess.run(["node", "aoconnect_e2e.js", node.url, str(jwk), str(lua32),
                               "wasm32-unknown-emscripten2", address],
                              cwd=PEERS, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr + node.logs()
        out = json.loads(proc.stdout)
    finally:
        node.stop_term()
    assert out["upload"] == {"message": "Processing DataItem", "id": out["moduleId"]}
    r = {m["action"] + str(i): m["result"] for i, m in enumerate(out["messages"])}
    assert r["Eval0"]["Output"]["data"] == "2"
    assert r["Count1"]["Output"] == "1" and r["Count2"]["Output"] == "2"
    assert r["Echo3"]["Output"] == "héllo"
    assert "Fail requested: on purpose" in r["Fail4"]["Error"]
    assert r["Count5"]["Output"] == "3"                       # the failed message left no trace
    for res in r.values():
        assert list(res)[:4] == ["Messages", "Assignments", "Spawns", "Output"]
    edges = out["results"]["edges"]    # aoconnect returns {edges} with nodes {Output, Messages, Spawns, Error}
    # the spawn's own evaluation + 6 messages, the Error one filtered out as the legacy CU does
    assert len(edges) == 6
    assert [e["node"]["Output"] for e in edges[2:5]] == ["1", "2", "héllo"]
    assert all(isinstance(e["cursor"], str) and e["cursor"] for e in edges)
    desc = out["resultsDesc"]["edges"]
    assert [e["node"]["Output"] for e in desc] == ["3", "héllo"]
    assert out["dryrun"]["Output"]["count"] == 3
    assert out["dryrunEval"]["Output"]["data"] == "3"
    assert out["dryrunCount"]["Output"] == "4"
    assert out["afterDryrun"]["Output"] == "4"                # dry-runs did not change the state


# --- restart: SIGTERM and kill -9 in the middle of a stream --------------------------------------------

def _stream(url: str, wallet: ArweaveWallet, pid: str, acked: list[str], stop: threading.Event) -> None:
    while not stop.is_set():
        item = DataItem.create(wallet, data=b"", target=pid,
                               tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Count")])
        try:
            status, _, _ = request("POST", url + "/", item.to_bytes(), timeout=10)
        except (OSError, http.client.HTTPException):
            return              # the node went away mid-request: not acknowledged
        if status == 202:
            acked.append(item.id)


def _log_ids(url: str, pid: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    cursor = None
    while True:
        q = f"{url}/{pid}?limit=1000" + (f"&from={cursor}" if cursor is not None else "")
        page = json.loads(get(q)[1])
        for e in page["edges"]:
            tags = {t["name"]: t["value"] for t in e["node"]["assignment"]["tags"]}
            out.append((int(tags["Nonce"]), tags["Message"]))
            cursor = e["cursor"]
        if not page["page_info"]["has_next_page"]:
            return out


def _metrics(url: str) -> dict[str, float]:
    out = {}
    for line in get(url + "/metrics")[1].decode().splitlines():
        if line.startswith("aocu_") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


@pytest.mark.parametrize("how", ["term", "kill9"])
def test_restart_keeps_every_acknowledged_message(tmp_path, lua32, wallet, how):
    data = tmp_path / "data"
    node = Node(data, extra=("--checkpoint-every", "7"))
    module = upload_module(node.url, wallet, lua32.read_bytes())
    pid = spawn(node.url, wallet, module)
    first = [send(node.url, wallet, pid, "Count") for _ in range(5)]
    before = {m: result(node.url, pid, m) for m in first}
    acked: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_stream, args=(node.url, wallet, pid, acked, stop)) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    if how == "term":
        assert node.stop_term() == 0
        db = sqlite3.connect(data / "node.sqlite")
        # the shutdown checkpoint is a full one or, in the fast lifecycle, a delta link on one
        (cp_seq,), (res_seq,) = (db.execute("SELECT max(seq) FROM (SELECT seq FROM checkpoints WHERE pid=?1 "
                                            "UNION ALL SELECT seq FROM checkpoint_deltas WHERE pid=?1)",
                                            (pid,)).fetchall(),
                                 db.execute("SELECT max(seq) FROM results WHERE pid=?", (pid,)).fetchall())
        db.close()
        assert cp_seq is not None and cp_seq == res_seq          # checkpointed at shutdown
    else:
        node.stop_kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) > 10

    node = Node(data)
    try:
        log = _log_ids(node.url, pid)
        nonces = [n for n, _ in log]
        ids = [m for _, m in log]
        assert nonces == list(range(len(log)))                  # contiguous slots, none assigned twice
        assert len(set(ids)) == len(ids)                        # each message once
        for m in first + acked:
            assert ids.count(m) == 1                            # nothing acknowledged lost
        for m in first:
            assert result(node.url, pid, m) == before[m]
        # Count is the message's position among Counts: results follow slot order
        last = ids[-1]
        assert result(node.url, pid, last)["Output"] == str(len(log) - 1)
        bodies = {m: get(f"{node.url}/result/{m}?process-id={pid}")[1] for m in ids[1:]}
        # a new message continues the state (from the shutdown checkpoint, or replayed after kill -9)
        assert result(node.url, pid, send(node.url, wallet, pid, "Count"))["Output"] == str(len(log))
        metrics = _metrics(node.url)
        assert metrics["aocu_recompute_mismatch_total"] == 0
        assert metrics["aocu_checkpoint_restore_failures_total"] == 0
        if how == "term":
            assert metrics["aocu_checkpoint_restores_total"] >= 1    # continued from the shutdown checkpoint
    finally:
        assert node.stop_term() == 0

    # recomputed from the log alone (no stored results or checkpoints): byte-identical results
    db = sqlite3.connect(data / "node.sqlite")
    db.execute("DELETE FROM results")
    db.execute("DELETE FROM checkpoints")
    db.execute("DELETE FROM outbox")
    db.commit()
    db.close()
    node = Node(data)
    try:
        for m, body in bodies.items():
            assert get(f"{node.url}/result/{m}?process-id={pid}")[1] == body
        assert _metrics(node.url)["aocu_checkpoint_restores_total"] == 0     # really from the log alone
    finally:
        node.stop_term()


# --- bad processes do not disturb good ones --------------------------------------------------------

def test_trap_gas_and_bad_module_leave_other_processes_working(tmp_path, lua32, wallet):
    # --max-warm 1: every switch between processes checkpoints one out and restores the other
    node = Node(tmp_path / "data", extra=("--eval-timeout", "3", "--busy-after", "1", "--max-warm", "1"))
    try:
        wasm = lua32.read_bytes()
        good_mod = upload_module(node.url, wallet, wasm)
        metered = upload_module(node.url, wallet, wasm, fmt="wasm32-unknown-emscripten-metering",
                                compute="5000000000")
        junk = upload_module(node.url, wallet, b"\0asm\1\0\0\0\xff\xff garbage")
        good = spawn(node.url, wallet, good_mod)
        gas = spawn(node.url, wallet, metered)
        broken = spawn(node.url, wallet, junk)

        fail = result(node.url, good, send(node.url, wallet, good, "Fail", "x"))
        assert "Fail requested: x" in fail["Error"]
        out_of_gas = result(node.url, gas, send(node.url, wallet, gas, "Loop"))
        assert "gas" in out_of_gas["Error"].lower()
        loop_id = send(node.url, wallet, good, "Loop")
        status, body, _ = get(f"{node.url}/result/{loop_id}?process-id={good}")
        assert status == 202 and json.loads(body) == {
            "message": f'Evaluation of process "{good}" to "{loop_id}" is in progress.'}
        deadline = time.monotonic() + 30
        while (got := get(f"{node.url}/result/{loop_id}?process-id={good}"))[0] == 202:
            assert time.monotonic() < deadline
        assert got[0] == 200
        loop = json.loads(got[1])
        assert loop["Error"]                                    # wall-clock limit, as a result Error
        status, body, _ = get(f"{node.url}/result/{send(node.url, wallet, broken, 'Count')}?process-id={broken}")
        assert status == 422 and "cannot be loaded" in json.loads(body)["error"]
        # everything else still works
        assert result(node.url, good, send(node.url, wallet, good, "Count"))["Output"] == "1"
        assert result(node.url, gas, send(node.url, wallet, gas, "Count"))["Output"] == "1"
        status, body, _ = request("POST", f"{node.url}/dry-run?process-id={good}",
                                  json.dumps({"Tags": [{"name": "Action", "value": "Info"}]}).encode(),
                                  {"Content-Type": "application/json"})
        assert status == 200 and json.loads(body)["Output"]["count"] == 1
        for i in range(2, 5):
            assert result(node.url, good, send(node.url, wallet, good, "Count"))["Output"] == str(i)
            assert result(node.url, gas, send(node.url, wallet, gas, "Count"))["Output"] == str(i)
        assert _metrics(node.url)["aocu_checkpoint_restores_total"] >= 6
    finally:
        node.stop_term()


def test_outbox_delivery_crons_and_state(tmp_path, lua32, wallet):
    node = Node(tmp_path / "data")
    try:
        module = upload_module(node.url, wallet, lua32.read_bytes())
        a = spawn(node.url, wallet, module)
        b = spawn(node.url, wallet, module, (("Cron-Interval", "1-second"), ("Cron-Tag-Action", "Count")))
        mid = send(node.url, wallet, a, "Send", "hello b", (("Send-To", b),))
        res = result(node.url, a, mid)
        assert res["Messages"][0]["Target"] == b and len(res["Spawns"]) == 1
        # the outbox message was scheduled on b, with From-Process = a, and evaluated
        deadline = time.monotonic() + 20
        while True:
            page = json.loads(get(f"{node.url}/{b}")[1])
            echoes = [e for e in page["edges"] if e["node"]["message"] and
                      {"name": "From-Process", "value": a} in e["node"]["message"]["tags"]]
            if echoes or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert echoes and echoes[0]["node"]["message"]["data"] == "hello b"
        echo_id = echoes[0]["node"]["message"]["id"]
        assert result(node.url, b, echo_id)["Output"] == "hello b"
        # the Assignments entry scheduled a's own message on b too (message null: a pure assignment)
        assigned = [e for e in page["edges"]
                    if {"name": "Message", "value": mid} in e["node"]["assignment"]["tags"]]
        assert len(assigned) == 1 and assigned[0]["node"]["message"] is None
        assert "sent" in result(node.url, b, mid)["Output"]["data"]
        # the spawns (one from a, one from b's copy) became processes on this node, evaluated at nonce 0
        db = sqlite3.connect(node.data_dir / "node.sqlite")
        children = [r[0] for r in db.execute("SELECT id FROM processes WHERE tags LIKE ?",
                                              (f'%["From-Process","{a}"]%',))]
        db.close()
        assert len(children) == 1
        status, body, _ = get(f"{node.url}/processes/{children[0]}")
        assert status == 200 and {"name": "Module", "value": module} in json.loads(body)["tags"]
        deadline = time.monotonic() + 10
        while not json.loads(get(f"{node.url}/results/{children[0]}")[1])["edges"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2.2)
        crons = json.loads(get(f"{node.url}/cron/{b}")[1])
        assert len(crons["edges"]) >= 2
        counts = [int(e["node"]["Output"]) for e in crons["edges"]]
        assert counts == list(range(counts[0], counts[0] + len(counts)))
        status, mem, headers = get(f"{node.url}/state/{b}")
        assert status == 200 and len(mem) >= 16 * 1024 * 1024 and int(headers["Last-Ordinate"]) >= 1
    finally:
        node.stop_term()


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_concurrent_reads_and_evaluator_crash(tmp_path, lua32, wallet):
    node = Node(tmp_path / "data", workers=1)
    try:
        module = upload_module(node.url, wallet, lua32.read_bytes())
        pid = spawn(node.url, wallet, module)

        def evaluations() -> int:
            text = get(node.url + "/metrics")[1].decode()
            return int(float(next(ln.split()[1] for ln in text.splitlines() if ln.startswith("aocu_evaluations_total"))))

        # concurrent requests for one result wait for one evaluation and all get it
        result(node.url, pid, send(node.url, wallet, pid, "Echo", "warm"))
        before = evaluations()
        mid = send(node.url, wallet, pid, "Count")
        bodies: list[bytes] = []
        threads = [threading.Thread(target=lambda: bodies.append(get(f"{node.url}/result/{mid}?process-id={pid}")[1]))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(bodies) == 8 and len(set(bodies)) == 1 and json.loads(bodies[0])["Output"] == "1"
        assert evaluations() - before == 1
        evaluators = [c for c in _children(node.proc.pid)
                      if b"cu.node.service" in (Path("/proc") / str(c) / "cmdline").read_bytes()]
        assert len(evaluators) == 1
        os.kill(evaluators[0], signal.SIGKILL)
        # the supervisor restarts it; the next message waits for it and is evaluated from the store
        mid = send(node.url, wallet, pid, "Count")
        assert result(node.url, pid, mid)["Output"] == "2"
        assert evaluators[0] not in _children(node.proc.pid)
    finally:
        node.stop_term()
