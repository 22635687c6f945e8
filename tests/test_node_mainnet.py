"""The AO-Core interface the HyperBEAM client uses: the unchanged `@permaweb/aoconnect` 0.0.98 in MODE "mainnet"
(ao-core-libs underneath) against `aocu serve --tee sim` with the project's Lua test module: spawn, message,
result (by slot and by message id), results, dryrun, and `request()` with `signing-format: httpsig` for a push.
Every signed reply the client received is checked with `aocu verify` in its own process; processes spawned in
one dialect are read in the other; tampered httpsig requests are refused and schedule nothing."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

import tests.test_attested_http as ah
import tests.test_node_e2e as e2e
from cu.verify.transport import RawResponse, parse_raw_response, to_curl_bytes

PEERS = Path(__file__).resolve().parent / "peers"

pytestmark = [pytest.mark.slow, pytest.mark.peers, pytest.mark.skipif(
    shutil.which("node") is None or not (PEERS / "node_modules" / "@permaweb" / "aoconnect").is_dir(),
    reason="node + aoconnect peer not installed (scripts/install.sh --test)")]

lua32 = ah.lua32
node_wallet_0600 = ah.node_wallet_0600
client_wallet = ah.client_wallet


@pytest.fixture(scope="module")
def sim(tmp_path_factory, node_wallet_0600, lua32):
    d = tmp_path_factory.mktemp("mainnet-sim")
    box = {"node": e2e.Node(d / "data", workers=2, extra=("--tee", "sim")), "data": d / "data", "dir": d}
    try:
        yield box
    finally:
        box["node"].stop_term()      # the node running now: the restart test replaces it


@pytest.fixture(scope="module")
def mainnet(sim, lua32, client_wallet):
    jwk = sim["dir"] / "client.json"
    jwk.write_text(json.dumps(client_wallet.to_jwk()))
    proc = subprocess.run(["node", "aoconnect_mainnet_e2e.mjs", sim["node"].url, str(jwk), str(lua32),
                           "wasm32-unknown-emscripten2"], cwd=PEERS, capture_output=True, text=True, timeout=300)
    out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    assert proc.returncode == 0, (out.get("error") or proc.stderr) + sim["node"].logs()
    return out


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_aoconnect_mainnet_client_end_to_end(sim, mainnet, client_wallet):
    out = mainnet
    pid = out["processId"]
    assert len(pid) == 43
    r = {m["action"] + str(i): m for i, m in enumerate(out["messages"])}
    assert [m["slot"] for m in out["messages"]] == [1, 2, 3, 4, 5]      # slot 0 is the process itself
    assert r["Eval0"]["result"]["Output"]["data"] == "2"
    assert r["Count1"]["result"]["Output"] == "1" and r["Count2"]["result"]["Output"] == "2"
    assert r["Echo3"]["result"]["Output"] == "héllo"
    assert "Fail requested: on purpose" in r["Fail4"]["result"]["Error"]
    # returnMessageId + returnAssignmentSlot, then result({message: id})
    assert out["byId"]["sent"]["slot"] == 6 and len(out["byId"]["sent"]["id"]) == 43
    assert out["byId"]["result"]["Output"] == "3"                     # the failed message left no trace
    (edge,) = out["results"]["edges"]                                 # the client asks for the current slot
    assert edge["cursor"] == "6" and edge["node"]["Output"] == "3"
    assert out["dryrun"]["Output"]["count"] == 3
    assert out["dryrunEval"]["Output"]["data"] == "3"
    assert out["dryrunCount"]["Output"] == "4"                         # evaluated, then discarded
    assert out["afterDryrun"]["Output"] == "4"
    # the httpsig-signed push: scheduled as the next slot, evaluated, its result readable by slot
    push = out["httpsigPush"]
    assert push["status"] == 200 and push["body"]["slot"] == 8, push
    assert push["body"]["raw"]["Output"] == "via httpsig"
    assert out["httpsigResult"]["Output"] == "via httpsig"
    # the node's address (what the client used as Scheduler and Authority) is the wallet's
    ex = [e for e in out["exchanges"] if e["url"].endswith("/~meta@1.0/info/address")]
    address = json.loads(e2e.get(sim["node"].url + "/")[1])["address"]
    assert ex and base64.b64decode(ex[0]["body"]).decode() == address


def _raw(exchange: dict) -> bytes:
    return to_curl_bytes(RawResponse(exchange["status"], [tuple(h) for h in exchange["headers"]],
                                     base64.b64decode(exchange["body"])))


def test_every_reply_the_mainnet_client_got_is_signed_and_verifies(sim, mainnet, tmp_path):
    routes = ("/push", "/compute/results=", "/as=execution/compute", "/slot/current")
    checked = {r: 0 for r in routes}
    for ex in mainnet["exchanges"]:
        route = next((r for r in routes if r in ex["url"]), None)
        if route is None or ex["status"] != 200:
            continue
        raw = _raw(ex)
        resp = parse_raw_response(raw)
        assert resp.header("Attestation") and resp.header("Signature"), ex["url"]
        rc, rep = ah.verify_saved(sim, raw, tmp_path)
        assert rc == 0 and rep["verified"], (ex["url"], rep.get("failed"), rep.get("checks"))
        checked[route] += 1
    assert all(checked.values()), checked
    # and a tampered body does not verify
    ex = next(e for e in mainnet["exchanges"] if "/compute/results=" in e["url"] and e["status"] == 200)
    raw = _raw(ex).replace(b'"raw":', b'"raw" :', 1)
    rc, rep = ah.verify_saved(sim, raw, tmp_path)
    assert rc != 0 and not rep.get("verified")


def test_cross_dialect_legacy_spawn_read_as_mainnet_and_back(sim, mainnet, client_wallet, lua32):
    url = sim["node"].url
    # spawned and messaged in the legacy dialect (ANS-104 on POST /), read through the AO-Core routes
    mod = mainnet["moduleId"]
    pid = e2e.spawn(url, client_wallet, mod)
    mid = e2e.send(url, client_wallet, pid, "Count")
    status, body, _ = _post(f"{url}/{pid}~process@1.0/compute/results={mid}", b"", {})
    assert status == 200, body
    assert json.loads(body)["raw"]["Output"] == "1" and json.loads(body)["slot"] == 1
    status, body, _ = _post(f"{url}/{pid}/slot/current", b"", {})
    assert status == 200 and body == b"1"
    # spawned and messaged by the mainnet client, read through the legacy CU and SU routes
    mpid = mainnet["processId"]
    mmid = mainnet["byId"]["sent"]["id"]
    assert e2e.result(url, mpid, mmid)["Output"] == "3"
    status, page, _ = e2e.get(f"{url}/results/{mpid}?sort=DESC&limit=1")
    assert status == 200 and json.loads(page)["edges"][0]["node"]["Output"] == "via httpsig"
    status, su, _ = e2e.get(f"{url}/{mpid}")
    assert status == 200
    edges = json.loads(su)["edges"]
    assert len(edges) == 9 and edges[-1]["node"]["message"]["data"] == "via httpsig"


def test_unsigned_and_unknown_requests_get_clear_errors(sim, mainnet):
    url = sim["node"].url
    pid = mainnet["processId"]
    status, body, _ = _post(f"{url}/{pid}~process@1.0/push", b"", {"action": "Eval", "type": "Message"})
    assert status == 400 and b"must be signed" in body
    status, body, _ = _post(f"{url}/{'x' * 43}~process@1.0/compute/results=1", b"", {})
    assert status == 404 and b"not found" in body
    status, body, _ = _post(f"{url}/{pid}~process@1.0/compute/results=999", b"", {})
    assert status == 404 and b"slot 999" in body
    status, body, _ = _post(f"{url}/{pid}~process@1.0/push", b"garbage", {"codec-device": "ans104@1.0"})
    assert status == 400 and b"data item" in body


def _peer_request(wallet, path: str, fields: dict) -> tuple[list[tuple[str, str]], bytes]:
    """One request exactly as ao-core-libs signs it (fetch recorded, nothing sent)."""
    from tests.test_codec_httpsig import node as run_peer
    out = run_peer("aocore_peer.js", {"jwk": wallet.to_jwk(), "requests": [{"path": path, "fields": fields}]})
    (r,) = out["requests"]
    return [(k, v) for k, v in r["headers"]], base64.b64decode(r["body"])


def _slot(url: str, pid: str) -> int:
    return int(_post(f"{url}/{pid}/slot/current", b"", {})[1])


def test_tampered_httpsig_push_is_refused_over_http_and_schedules_nothing(sim, mainnet, client_wallet):
    url, pid = sim["node"].url, mainnet["processId"]
    fields = {"Type": "Message", "Data-Protocol": "ao", "Variant": "ao.N.1", "target": pid, "Action": "Echo",
              "data": "signed once", "require-codec": "application/json", "signing-format": "httpsig"}
    headers, body = _peer_request(client_wallet, f"/{pid}~process@1.0/push", fields)
    before = _slot(url, pid)
    cases = {
        "a signed header": [(k, v + "x" if k.lower() == "action" else v) for k, v in headers],
        "the signature": [(k, v[:-6] + ("AAAA=:" if not v.endswith("AAAA=:") else "BBBB=:")
                           if k.lower() == "signature" else v) for k, v in headers],
        "a covered header removed": [(k, v) for k, v in headers if k.lower() != "data"],
    }
    for what, hs in cases.items():
        status, reply, _ = _post(f"{url}/{pid}~process@1.0/push", body, dict(hs))
        assert status == 400, (what, status, reply)
        assert json.loads(reply)["error"], what
    # a body added under a covered content-digest that does not match it
    hs = dict(headers) | {"content-digest": "sha-256=:" + base64.b64encode(b"\0" * 32).decode() + ":"}
    status, reply, _ = _post(f"{url}/{pid}~process@1.0/push", b"tampered body", hs)
    assert status == 400, reply
    assert _slot(url, pid) == before                               # nothing was scheduled
    status, reply, _ = _post(f"{url}/{pid}~process@1.0/push", body, dict(headers))
    assert status == 200 and json.loads(reply)["raw"]["Output"] == "signed once", reply
    assert json.loads(reply)["slot"] == before + 1


def test_reply_codec_from_a_signed_tag_gives_an_ans104_result(sim, mainnet, client_wallet, tmp_path):
    """`accept-codec: ans104@1.0` travels as a signed tag of the request item: the result comes back as an
    ANS-104 item signed by the node (with the evidence), and aocu verify accepts it."""
    from cu.codec.ans104 import DataItem
    pid = mainnet["processId"]
    req = DataItem.create(client_wallet, data=b"1984", target=pid, tags=[
        ("signing-format", "ans104"), ("accept-bundle", "true"), ("accept-codec", "ans104@1.0"),
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Variant", "ao.N.1")])
    url = f"{sim['node'].url}/{pid}~process@1.0/compute/results=2"
    status, body, headers = _post(url, req.to_bytes(), {"codec-device": "ans104@1.0",
                                                        "Content-Type": "application/ans104"})
    assert status == 200 and headers["Content-Type"].startswith("application/ans104"), (status, body[:200])
    item = DataItem.parse(body)
    assert item.verify() and json.loads(item.data)["raw"]["Output"] == "1"
    raw = to_curl_bytes(RawResponse(status, list(headers.items()), body))
    rc, rep = ah.verify_saved(sim, raw, tmp_path)
    assert rc == 0 and rep["verified"], (rep.get("failed"), rep.get("checks"))


def test_stored_messages_are_served_in_either_codec_after_a_restart(sim, mainnet, tmp_path):
    """Last in this module: restarts the node on the same data dir."""
    from cu.codec.message import Message
    sim["node"].stop_term()
    node = e2e.Node(sim["data"], workers=1, extra=("--tee", "sim"))
    sim["node"] = node
    url = node.url
    hid = mainnet["httpsigPush"]["body"]["id"]
    # the httpsig push, exactly as received: it re-verifies, and it is the same message
    resp = urllib.request.urlopen(urllib.request.Request(f"{url}/~message@1.0/{hid}",
                                                         headers={"accept-codec": "httpsig@1.0"}), timeout=30)
    body = resp.read()
    wire = [(k, v) for k, v in resp.headers.items()
            if k.lower() not in ("server", "date", "content-length", "connection", "codec-device", "x-aocu-tee",
                                 "content-type", "keep-alive")]
    msg = Message.from_http(wire, body)
    assert msg.id == hid and msg.verify(absent_body_ok=True)
    # an ANS-104 message of the mainnet client, as its original item, and as httpsig carrying the item signature
    aid = mainnet["byId"]["sent"]["id"]
    raw = urllib.request.urlopen(f"{url}/~message@1.0/{aid}?codec=ans104@1.0", timeout=30).read()
    from cu.codec.ans104 import DataItem
    item = DataItem.parse(raw)
    assert item.id == aid and item.verify()
    # and the results computed before the restart are still served (and signed)
    status, body, _ = _post(f"{url}/{mainnet['processId']}~process@1.0/compute/results={hid}", b"", {})
    assert status == 200 and json.loads(body)["raw"]["Output"] == "via httpsig"
