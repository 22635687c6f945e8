"""HTTP routes that need no evaluation: MU ingest, SU reads, gateway subset, errors, ops routes."""

from __future__ import annotations

import json

import pytest

from cu import hashing
from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet
from cu.http import create_app
from tests.test_metrics import prom_value

MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
               ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
               ("Compute-Limit", "9000000000000"), ("Content-Type", "application/wasm")]


@pytest.fixture(scope="module")
def wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()


@pytest.fixture(scope="module")
def node_wallet(tmp_path_factory, wallet) -> str:
    path = tmp_path_factory.mktemp("keys") / "node.json"
    path.write_text(json.dumps(wallet.to_jwk()))
    path.chmod(0o600)    # node key files must be private
    return str(path)


@pytest.fixture()
def client(tmp_path, node_wallet):
    # eager=False: these routes need no evaluation (the engine is exercised in test_node_e2e.py)
    app = create_app({"data_dir": tmp_path / "node", "tee": "sim", "max_body": 64 * 1024, "eager": False,
                      "wallet": node_wallet})
    yield app.test_client()
    app.extensions["aocu"].dispatcher.stop()


def _upload(client, wallet, tags=MODULE_TAGS, data=b"\0asm\1\0\0\0"):
    item = DataItem.create(wallet, data=data, tags=tags)
    r = client.post("/", data=item.to_bytes(), content_type="application/octet-stream")
    return item, r


def _spawn(client, wallet, module_id, extra=()):
    item = DataItem.create(wallet, data=b"proc data", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                             ("Module", module_id), *extra])
    return item, client.post("/", data=item.to_bytes())


def test_root_health_metrics_and_tee_notice(client):
    r = client.get("/")
    assert r.status_code == 200 and set(r.json) == {"address", "timestamp"}
    assert r.headers["X-Aocu-Tee"] == "sim (simulated, not a real TEE)"
    assert client.get("/health").json == {"status": "ok"}
    m = client.get("/metrics")
    assert m.status_code == 200 and m.mimetype == "text/plain"
    text = m.data.decode()
    assert prom_value(text, "aocu_http_requests_total", route="/health", method="GET", code="200") == 1
    assert prom_value(text, "aocu_tee_info", tee="sim") == 1


def test_post_processor_hook_sees_every_response(tmp_path, node_wallet):
    app = create_app({"data_dir": tmp_path, "tee": "none", "eager": False, "wallet": node_wallet})
    seen = []

    def post(req, resp):
        seen.append((req.path, resp.status_code))
        resp.headers["X-Test-Post"] = "1"
        return resp

    app.extensions["aocu"].post_processors.append(post)
    c = app.test_client()
    assert c.get("/health").headers["X-Test-Post"] == "1"
    assert c.get("/result/x").headers["X-Test-Post"] == "1"   # errors too
    assert seen == [("/health", 200), ("/result/x", 400)]
    assert c.get("/").headers["X-Aocu-Tee"].startswith("none")
    app.extensions["aocu"].dispatcher.stop()


def test_ingest_su_reads_and_gateway(client, wallet):
    module, r = _upload(client, wallet)
    assert r.status_code == 202 and r.json == {"message": "Processing DataItem", "id": module.id}
    proc, r = _spawn(client, wallet, module.id)
    assert r.status_code == 202 and r.json["id"] == proc.id
    ids = []
    for i in range(3):
        m = DataItem.create(wallet, data=f"msg {i}".encode(), tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                    ("Action", "Echo")], target=proc.id)
        r = client.post("/", data=m.to_bytes())
        assert r.status_code == 202 and r.json["id"] == m.id
        ids.append(m.id)

    page = client.get(f"/{proc.id}").json
    assert page["page_info"] == {"has_next_page": False}
    assert [e["cursor"] for e in page["edges"]] == ["0", "1", "2", "3"]
    first = page["edges"][0]["node"]
    assert first["message"]["id"] == proc.id
    tags = {t["name"]: t["value"] for t in first["assignment"]["tags"]}
    assert tags["Nonce"] == "0" and tags["Process"] == proc.id and tags["Type"] == "Assignment"
    assert tags["Hash-Chain"] == hashing.b64url(hashing.sha256(hashing.b64url_decode(proc.id)))
    assert page["edges"][2]["node"]["message"]["data"] == "msg 1"
    assert page["edges"][2]["node"]["message"]["owner"]["address"] == wallet.address

    p2 = client.get(f"/{proc.id}?from=1&limit=1").json
    assert [e["cursor"] for e in p2["edges"]] == ["2"] and p2["page_info"]["has_next_page"] is True

    one = client.get(f"/{ids[1]}?process-id={proc.id}").json
    assert {t["name"]: t["value"] for t in one["assignment"]["tags"]}["Nonce"] == "2"
    latest = client.get(f"/{proc.id}/latest").json
    assert latest["message"]["id"] == ids[2]

    pj = client.get(f"/processes/{proc.id}").json
    assert pj["process_id"] == proc.id and pj["data"] == "proc data" and pj["block"] == "000000000000"
    assert {"name": "Module", "value": module.id} in pj["tags"]
    ts = client.get(f"/timestamp?process-id={proc.id}").json
    assert set(ts) == {"timestamp", "block_height"}

    # the gateway subset aoconnect's spawn uses
    q = {"query": "query GetTransactions ($transactionIds: [ID!]!) { transactions(ids: $transactionIds) "
                  "{ edges { node { owner { address } tags { name value } block { id height timestamp } } } } }",
         "variables": {"transactionIds": [module.id]}}
    g = client.post("/graphql", json=q).json
    node = g["data"]["transactions"]["edges"][0]["node"]
    assert node["owner"]["address"] == wallet.address
    assert {"name": "Module-Format", "value": "wasm32-unknown-emscripten2"} in node["tags"]
    lit = client.post("/graphql", json={"query": f'{{ transactions(ids: ["{proc.id}", "missing"]) '
                                                  '{ edges { node { id } } } }'}).json
    assert [e["node"]["id"] for e in lit["data"]["transactions"]["edges"]] == [proc.id]
    bad = client.post("/graphql", json={"query": "{ blocks { edges { node { id } } } }"})
    assert bad.status_code == 400 and "transactions(ids" in bad.json["errors"][0]["message"]

    raw = client.get(f"/raw/{module.id}")
    assert raw.data == b"\0asm\1\0\0\0" and raw.headers["Content-Type"] == "application/wasm"
    assert raw.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/raw/nothing").status_code == 404


def test_bad_input_gets_json_errors(client, wallet):
    module, _ = _upload(client, wallet)
    cases = []
    cases.append(client.post("/", data=b"not a data item"))
    m = DataItem.create(wallet, data=b"x", tags=[("Data-Protocol", "ao"), ("Type", "Message")],
                        target=hashing.b64url(b"\x02" * 32))
    cases.append(client.post("/", data=m.to_bytes()))
    raw = bytearray(m.to_bytes())
    raw[-1] ^= 0xFF
    cases.append(client.post("/", data=bytes(raw)))
    cases.append(client.post("/", data=b"x" * (65 * 1024)))                   # over max_body
    cases.append(client.get("/result/abc"))                                   # no process-id
    cases.append(client.get("/result/abc?process-id=unknown"))
    cases.append(client.get("/results/unknown"))
    cases.append(client.post("/dry-run?process-id=unknown", json={}))
    cases.append(client.get("/unknown-process"))
    cases.append(client.post("/?process-id=x"))
    cases.append(client.post("/monitor/x"))                                   # no signed data item
    statuses = [r.status_code for r in cases]
    assert statuses == [400, 404, 400, 413, 400, 404, 404, 404, 404, 400, 400]
    for r in cases:
        assert r.mimetype == "application/json" and isinstance(r.json["error"], str) and r.json["error"]
    # limits and formats are checked at spawn, as the legacy CU does at load
    _, r = _spawn(client, wallet, module.id, [("Memory-Limit", "2-gb")])
    assert r.status_code == 413 and "Memory-Limit" in r.json["error"]
    odd, _ = _upload(client, wallet, tags=[t if t[0] != "Module-Format" else ("Module-Format", "wasm128")
                                           for t in MODULE_TAGS])
    _, r = _spawn(client, wallet, odd.id)
    assert r.status_code == 422
    _, r = _spawn(client, wallet, module.id, [("Cron-Tag-Action", "Tick")])
    assert r.status_code == 400 and "Cron-Tag" in r.json["error"]


def test_results_pagination_shape_on_empty_process(client, wallet):
    module, _ = _upload(client, wallet)
    proc, _ = _spawn(client, wallet, module.id)
    r = client.get(f"/results/{proc.id}?sort=SIDEWAYS")
    assert r.status_code == 400
    r = client.get(f"/results/{proc.id}?limit=0")
    assert r.status_code == 400
    assert json.loads(client.get(f"/results/{proc.id}?from=garbage!").data)["error"].startswith("invalid cursor")
