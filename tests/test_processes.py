"""`GET /processes` (bounded pages, cursor, local and bridged origins), `GET /` content negotiation (JSON for
clients as before, the status page for browsers) and `aocu processes` against a node served over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet
from cu.http import create_app
from cu.http.processes import ProcessPage, latest_result_path
from cu.http.routes_attestation import SIGNER_KEY
from cu.http.status_page import StatusCache, gather, render
from cu.node.bridge.remote import Progress
from cu.node.bridge.store import BridgeStore

REPO = Path(__file__).resolve().parent.parent
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
               ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
               ("Compute-Limit", "9000000000000")]


@pytest.fixture(scope="module")
def wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()


@pytest.fixture(scope="module")
def node(tmp_path_factory, wallet):
    """A node (evaluator embedded; eager off: nothing here needs evaluation) with three processes: the first
    spawned got two messages after the others were spawned, so it is the most recently active."""
    keys = tmp_path_factory.mktemp("keys") / "node.json"
    keys.write_text(json.dumps(wallet.to_jwk()))
    keys.chmod(0o600)
    app = create_app({"data_dir": tmp_path_factory.mktemp("node"), "tee": "sim", "eager": False,
                      "wallet": str(keys)})
    c = app.test_client()

    def post(item: DataItem) -> str:
        r = c.post("/", data=item.to_bytes(), content_type="application/octet-stream")
        assert r.status_code == 202, r.data
        return item.id

    module = post(DataItem.create(wallet, data=b"\0asm\1\0\0\0", tags=MODULE_TAGS))
    pids = []
    for i in range(3):
        pids.append(post(DataItem.create(wallet, data=f"p{i}".encode(), tags=[
            ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module)])))
        time.sleep(0.005)   # distinct activity times
    for action in ("One", "Two"):
        time.sleep(0.005)
        post(DataItem.create(wallet, data=b"", target=pids[0], tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                    ("Action", action)]))
    yield app, module, pids
    app.extensions["aocu"].dispatcher.stop()


def test_processes_newest_first_with_slots_and_links(node):
    app, module, pids = node
    r = app.test_client().get("/processes")
    assert r.status_code == 200 and r.mimetype == "application/json"
    doc = r.json
    assert doc["next"] is None and doc["has_next_page"] is False and "evaluator" not in doc
    got = doc["processes"]
    assert [p["id"] for p in got] == [pids[0], pids[2], pids[1]]
    first = got[0]
    assert first["origin"] == "local" and first["module"] == module
    assert (first["slot"], first["slots"]) == (2, 3)          # spawn at slot 0, two messages
    assert [p["slots"] for p in got[1:]] == [1, 1]
    assert first["last_activity"] > got[1]["last_activity"] > got[2]["last_activity"]
    assert all(p["warm"] is False for p in got)                 # the evaluator answered: none evaluated yet
    assert all(p["evaluated_slot"] is None for p in got)
    assert first["latest_result"] == f"/{pids[0]}~process@1.0/compute?slot=2"


def test_processes_pages_by_cursor(node):
    app, _, pids = node
    c = app.test_client()
    seen: list[str] = []
    url = "/processes?limit=2"
    for _ in range(3):
        doc = c.get(url).json
        seen += [p["id"] for p in doc["processes"]]
        if doc["next"] is None:
            break
        assert len(doc["processes"]) == 2
        url = f"/processes?limit=2&cursor={doc['next']}"
    assert seen == [pids[0], pids[2], pids[1]]
    one = c.get("/processes?limit=1").json
    assert one["has_next_page"] and [p["id"] for p in one["processes"]] == [pids[0]]


@pytest.mark.parametrize("query, message", [
    ("limit=0", "limit must be an integer from 1 to 500"),
    ("limit=501", "limit must be an integer from 1 to 500"),
    ("limit=-3", "limit must be an integer from 1 to 500"),
    ("limit=1e3", "limit must be an integer from 1 to 500"),
    ("cursor=%00%ff", "invalid cursor"),
    ("cursor=bm9jb2xvbg", "invalid cursor"),                               # "nocolon"
    ("cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5Onh4", "out of range"),     # a timestamp over int64
    ("cursor=" + "A" * 400, "cursor too long"),
])
def test_processes_bad_query_is_a_clear_400(node, query, message):
    r = node[0].test_client().get(f"/processes?{query}")
    assert r.status_code == 400 and message in r.json["error"], r.data


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, text/plain, */*",
                                    "application/json, text/html", "text/html;q=0.5, application/json"])
def test_root_stays_json_for_clients(node, accept):
    headers = {"Accept": accept} if accept else {}
    r = node[0].test_client().get("/", headers=headers)
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert set(r.json) == {"address", "timestamp"} and r.headers["Vary"] == "Accept"


def test_root_is_the_status_page_for_browsers(node):
    app, _, pids = node
    r = app.test_client().get("/", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "<script" not in page and "script-src" not in r.headers["Content-Security-Policy"]
    assert r.headers["Vary"] == "Accept" and r.headers["Cache-Control"] == "no-store"
    assert "SIMULATED TEE" in page and all(p in page for p in pids)
    assert f'href="/{pids[0]}~process@1.0/compute?slot=2"' in page


def test_status_page_of_a_node_without_tee(tmp_path, wallet):
    keys = tmp_path / "node.json"
    keys.write_text(json.dumps(wallet.to_jwk()))
    keys.chmod(0o600)
    app = create_app({"data_dir": tmp_path / "n", "tee": "none", "eager": False, "wallet": str(keys)})
    try:
        page = app.test_client().get("/", headers={"Accept": BROWSER_ACCEPT}).get_data(as_text=True)
    finally:
        app.extensions["aocu"].dispatcher.stop()
    assert "NO TEE: results are signed by the node key but not attested" in page and "SIMULATED" not in page
    assert "NOT ATTESTED" in page and "no processes yet" in page and "--policy" not in page


def test_status_page_escapes_what_clients_and_remotes_chose(node):
    """Bridged process ids and module ids come from remote schedulers: the page shows them as text."""
    app, _, _ = node
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    row = {"id": evil, "origin": "bridged", "module": evil, "slot": 4, "slots": 5, "evaluated_slot": 4,
           "last_activity": 1, "warm": True, "evaluating": True, "latest_result": latest_result_path(evil, "bridged", 4)}
    with app.test_request_context("/", base_url="http://node.example:6363"):
        st = app.extensions["aocu"]
        html = render(gather(st, app.extensions[SIGNER_KEY], StatusCache(), ProcessPage([row], evil), "http://x/"))
    assert "<img" not in html and "<script" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "%3Cimg" in html    # text, and a quoted link


def test_bridge_store_pages_remote_processes_by_last_activity(tmp_path):
    store = BridgeStore(tmp_path / "bridge.sqlite")
    for pid, ts, nonce in (("pa", 3000, 7), ("pb", 1000, 2), ("pc", 3000, 1)):
        store.put_process_meta(pid, json.dumps({"pid": pid}))
        store.commit(pid, Progress(seq=nonce, nonce=nonce, last_ts=ts), [], {}, [])
    store.put_process_meta("pd", json.dumps({"pid": "pd"}))           # known, nothing evaluated yet
    rows = store.processes_page(None, 10)
    assert [r[0] for r in rows] == ["pc", "pa", "pb", "pd"]
    assert Progress.from_json(rows[1][2]).nonce == 7 and rows[3][2] is None
    assert [r[0] for r in store.processes_page((3000, "pc"), 1)] == ["pa", "pb"]   # limit + 1: is there more
    assert store.process_count() == 4


@pytest.fixture(scope="module")
def served(node):
    server = make_server("127.0.0.1", 0, node[0], threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _aocu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cu.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def test_aocu_processes_table_json_and_errors(node, served, capsys):
    from cu.cli import main
    _, module, pids = node
    out = _aocu("processes", "--url", served, "--limit", "2")       # the real command line, once
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["PROCESS", "ORIGIN", "SLOT"]
    assert lines[1].split()[:4] == [pids[0], "local", "2", "-"] and lines[1].split()[-2:] == ["no", module]
    assert len(lines) == 3 and "--cursor" in out.stderr                   # a second page exists
    assert main(["processes", "--node", served, "--json"]) == 0
    assert [p["id"] for p in json.loads(capsys.readouterr().out)["processes"]] == [pids[0], pids[2], pids[1]]
    assert main(["processes", "--url", served, "--cursor", "nonsense"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aocu: error:") and "HTTP 400: invalid cursor" in err and len(err.splitlines()) == 1
    assert main(["processes", "--url", "http://127.0.0.1:9"]) == 1
    assert capsys.readouterr().err.startswith("aocu: error: http://127.0.0.1:9/processes")


@pytest.mark.slow
def test_bridged_process_listed_over_the_evaluator_socket(world, standin, tmp_path):
    """`aocu serve --gateway`: a process computed from the stand-in legacy SU is listed as bridged, with the
    position its evaluation reached, and the status page shows the bridge."""
    from tests.test_node_e2e import Node, get, request
    d = tmp_path / "data"
    d.mkdir()
    node = Node(d, workers=1, extra=("--gateway", standin.url))
    try:
        stream = world.expected_stream()
        target = next(s for s in stream if s["kind"] == "message" and s["nonce"] == 5)
        status, body, _ = get(f"{node.url}/result/{target['id']}?process-id={world.pid}")
        assert status == 200, body
        status, body, _ = get(node.url + "/processes")
        doc = json.loads(body)
        assert status == 200 and "evaluator" not in doc
        [p] = doc["processes"]
        assert (p["id"], p["origin"], p["module"], p["warm"], p["evaluating"]) == (
            world.pid, "bridged", world.module.id, True, False)
        assert p["slot"] >= 5 and p["slots"] == p["slot"] + 1 and p["evaluated_slot"] == p["slot"]
        assert p["last_activity"] > 0 and p["latest_result"] == f"/results/{world.pid}?sort=DESC&limit=1"
        status, body, _ = get(node.url + p["latest_result"])
        assert status == 200 and json.loads(body)["edges"]
        status, page, _ = request("GET", node.url + "/", headers={"Accept": BROWSER_ACCEPT})
        text = page.decode()
        assert status == 200 and standin.url in text and "1 (1 warm)" in text and world.pid in text
    finally:
        node.stop_term()
