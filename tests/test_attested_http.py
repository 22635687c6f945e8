"""Signed, attested results over HTTP: a real `aocu serve --tee sim` (and one with --tee none) on loopback,
the Lua test module, and `aocu verify` (cu.cli.main) on what the node answered: every legacy and AO-Core
result route, both codecs, tampering of body / signed header / evidence / nonce, another node's key, the
AO-Core `/now` state read of a value a message just wrote (patch@1.0 cache), /~meta@1.0/info and the
evidence route."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tests.test_node_e2e as e2e
from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.hashing import b64url
from cu.node.eval.patches import merge_patch, patches_of
from cu.node.signer import signature_base, signature_params
from cu.verify.transport import fetch, parse_raw_response, to_curl_bytes

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

# Installs an AOS-style patch emitter: every `Action=Set` message writes Data under its `Key` tag into the
# process's state and reports it as a patch@1.0 patch (AOS's `Send({device = 'patch@1.0', ...})`).
PATCHER = """
local p = package.loaded[".process"]
local h = p.handle
p.handle = function(msg, env)
  local res = h(msg, env)
  local action, key
  for _, t in ipairs(msg.Tags or {}) do
    if t.name == "Action" then action = t.value end
    if t.name == "Key" then key = t.value end
  end
  if action == "Set" and key then
    Store = Store or {}
    Store[key] = msg.Data
    res.Output = "set " .. key
    res.Patches = { { device = "patch@1.0", store = { [key] = msg.Data } } }
  end
  return res
end
return "patched"
"""


@pytest.fixture(scope="module")
def node_wallet_0600(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("attested-keys") / "wallet.json"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(ArweaveWallet.generate().to_jwk()))
    e2e.NODE_WALLET = p          # the e2e harness starts nodes with this wallet (key files must be 0600)
    return p


@pytest.fixture(scope="module")
def lua32() -> Path:
    override = os.environ.get("AOCU_NODE_TEST_WASM")
    if override:
        return Path(override)
    from tests.modules.build import build
    return build("lua32")


@pytest.fixture(scope="module")
def client_wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()


@pytest.fixture(scope="module")
def sim(tmp_path_factory, node_wallet_0600, lua32, client_wallet):
    d = tmp_path_factory.mktemp("attested-sim")
    node = e2e.Node(d / "data", workers=2, extra=("--tee", "sim"))
    try:
        mod = e2e.upload_module(node.url, client_wallet, lua32.read_bytes())
        pid = e2e.spawn(node.url, client_wallet, mod)
        mid = e2e.send(node.url, client_wallet, pid, "Count")
        assert e2e.result(node.url, pid, mid)["Output"] == "1"
        yield {"node": node, "pid": pid, "mid": mid, "module": mod, "data": d / "data"}
    finally:
        node.stop_term()


def verify(*args: str) -> tuple[int, dict]:
    """`aocu verify ... --json` in its own process, as a client runs it (no state shared with other tests)."""
    proc = subprocess.run([sys.executable, "-m", "cu.cli", "verify", *args, "--json"], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    rep = json.loads(proc.stdout) if proc.stdout.strip() else {}
    if proc.returncode != 0 and rep.get("evidence"):
        rep.setdefault("failed_evidence_checks", [c["name"] for c in rep["evidence"].get("evidence", {}).get(
            "checks", []) if not c.get("ok")])
    return proc.returncode, rep


def verify_saved(sim, resp_bytes: bytes, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    f = tmp_path / f"resp-{len(list(tmp_path.iterdir()))}.http"
    f.write_bytes(resp_bytes)
    return verify("--response", str(f), "--node", sim["node"].url, "--allow-simulated",
                  "--data-dir", str(sim["data"]), *extra)


def curl_si(url: str, headers: dict | None = None) -> bytes:
    return to_curl_bytes(fetch(url, headers=headers))


def test_every_result_route_is_signed_and_verifies(sim, tmp_path):
    url, pid, mid = sim["node"].url, sim["pid"], sim["mid"]
    routes = [f"/result/{mid}?process-id={pid}", f"/results/{pid}", f"/cron/{pid}", f"/state/{pid}",
              f"/{pid}~process@1.0/compute?slot=1", f"/{pid}~process@1.0/compute/Output?slot=1",
              f"/{pid}~process@1.0/now", f"/{pid}~process@1.0/now/results/Output"]
    for route in routes:
        raw = curl_si(url + route)
        resp = parse_raw_response(raw)
        assert resp.status == 200, (route, resp.body[:200])
        assert resp.header("Attestation").startswith('tee="sim-'), route
        assert resp.header("X-Aocu-Tee").startswith("sim"), route
        rc, rep = verify_saved(sim, raw, tmp_path)
        assert rc == 0 and rep["verified"], (route, rep["failed"], rep["checks"], rep.get("evidence"))
    # the URL form (fetches the endorsements itself) on the AO-Core compute route: slot and message identity
    rc, rep = verify(url + f"/{pid}~process@1.0/compute?slot=1", "--allow-simulated", "--data-dir", str(sim["data"]))
    assert rc == 0, rep["failed"]
    resp = fetch(url + f"/{pid}~process@1.0/compute?slot=1")
    assert resp.header("Ao-Slot") == "1" and resp.header("Ao-Message") == mid and resp.header("Ao-Process") == pid
    assert json.loads(resp.body)["Output"] == "1"
    sig_input = resp.header("Signature-Input")
    for comp in ('"@status"', '"content-digest"', '"ao-process"', '"ao-slot"', '"ao-message"', '"attestation"'):
        assert comp in sig_input
    # the dry-run answer is a result too
    body = json.dumps({"Tags": [{"name": "Action", "value": "Count"}]}).encode()
    r = e2e.request("POST", url + f"/dry-run?process-id={pid}", body, {"Content-Type": "application/json"})
    assert r[0] == 200 and "Signature" in r[2] and "Content-Digest" in r[2]
    # non-result routes are not signed
    status, _, headers = e2e.get(url + "/health")
    assert status == 200 and "Signature" not in headers and headers["X-Aocu-Tee"].startswith("sim")


def test_tampering_fails_the_named_check(sim, tmp_path):
    url, pid, mid = sim["node"].url, sim["pid"], sim["mid"]
    raw = curl_si(url + f"/result/{mid}?process-id={pid}")
    rc, rep = verify_saved(sim, raw, tmp_path)
    assert rc == 0, rep["failed"]
    head, _, body = raw.partition(b"\r\n\r\n")
    # one byte of the body
    bad_body = bytearray(body)
    bad_body[body.index(b'"1"') + 1] = ord("2")
    rc, rep = verify_saved(sim, head + b"\r\n\r\n" + bytes(bad_body), tmp_path)
    assert rc == 1 and "content_digest" in rep["failed"]
    # a signed header (the result identity)
    forged = head.replace(f"Ao-Message: {mid}".encode(), f"Ao-Message: {mid[:-1]}{'A' if mid[-1] != 'A' else 'B'}".encode())
    assert forged != head
    rc, rep = verify_saved(sim, forged + b"\r\n\r\n" + body, tmp_path)
    assert rc == 1 and "signature" in rep["failed"]
    # the evidence inside the Attestation header (one byte of the report)
    m = re.search(rb"evidence=:([A-Za-z0-9+/=]+):", head)
    ev = bytearray(base64.b64decode(m.group(1)))
    ev[len(ev) // 2] ^= 1
    forged = head.replace(m.group(1), base64.b64encode(bytes(ev)))
    rc, rep = verify_saved(sim, forged + b"\r\n\r\n" + body, tmp_path)
    assert rc == 1 and "signature" in rep["failed"]
    assert {"evidence", "binding.key"} & set(rep["failed"]), rep["failed"]


def test_fresh_nonce_binding(sim, tmp_path):
    url, pid = sim["node"].url, sim["pid"]
    nonce = os.urandom(32).hex()
    raw = curl_si(url + f"/{pid}~process@1.0/compute?slot=1&attest-nonce={nonce}")
    assert b'binding="fresh"' in raw
    rc, rep = verify_saved(sim, raw, tmp_path, "--nonce", nonce)
    assert rc == 0, rep["failed"]
    other = os.urandom(32).hex()
    rc, rep = verify_saved(sim, raw, tmp_path, "--nonce", other)
    assert rc == 1 and "binding.fresh" in rep["failed"]
    # bad nonce: 400, still signed
    status, body, headers = e2e.get(url + f"/{pid}~process@1.0/compute?slot=1&attest-nonce=xyz")
    assert status == 400 and "hex" in json.loads(body)["error"] and "Signature" in headers


def test_another_nodes_key_fails_the_binding(sim, tmp_path):
    url, pid, mid = sim["node"].url, sim["pid"], sim["mid"]
    resp = fetch(url + f"/result/{mid}?process-id={pid}")
    other = Ed25519Key.generate()
    keep = [(k, v) for k, v in resp.headers if k.lower() not in ("signature", "signature-input")]
    signed = [(k, resp.header(k)) for k in ("Content-Digest", "Ao-Process", "Ao-Message", "Attestation")]
    line = signature_params(["@status", "content-digest", "ao-process", "ao-message", "attestation"],
                            1_700_000_000, b64url(other.owner), "ed25519")
    sig = other.sign(signature_base(resp.status, signed, line))
    resp.headers = [*keep, ("Signature-Input", f"sig={line}"),
                    ("Signature", f"sig=:{base64.b64encode(sig).decode()}:")]
    rc, rep = verify_saved(sim, to_curl_bytes(resp), tmp_path)
    assert rc == 1 and "binding.key" in rep["failed"], rep["failed"]


def test_same_result_in_both_codecs(sim, tmp_path):
    url, pid = sim["node"].url, sim["pid"]
    route = url + f"/{pid}~process@1.0/compute?slot=1"
    plain = fetch(route)
    raw = curl_si(route, {"accept-codec": "ans104@1.0"})
    resp = parse_raw_response(raw)
    assert resp.header("Content-Type") == "application/ans104"
    item = DataItem.parse(resp.body)
    assert item.verify() and item.data == plain.body
    rc, rep = verify_saved(sim, raw, tmp_path)
    assert rc == 0, rep["failed"]
    rc, rep = verify(route, "--codec", "ans104", "--allow-simulated", "--data-dir", str(sim["data"]))
    assert rc == 0, rep["failed"]


def test_now_reads_the_value_a_message_just_wrote(sim, client_wallet):
    url, pid = sim["node"].url, sim["pid"]
    w = client_wallet
    mid = e2e.send(url, w, pid, "Eval", PATCHER)
    assert e2e.result(url, pid, mid)["Output"]["data"] == "patched"
    value = "v-" + os.urandom(6).hex()
    # scheduled through the AO-Core route (ANS-104 body), then read at once with /now: no /result, no dry-run
    item = DataItem.create(w, data=value.encode(), target=pid, tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Set"), ("Key", "greeting")])
    status, body, _ = e2e.request("POST", url + f"/{pid}~process@1.0/schedule", item.to_bytes(),
                                  {"codec-device": "ans104@1.0", "Content-Type": "application/ans104"})
    assert status == 201, body
    slot = json.loads(body)["slot"]
    status, body, headers = e2e.get(url + f"/{pid}~process@1.0/now/cache/store/greeting")
    assert status == 200 and body.decode() == value, e2e.get(url + f"/{pid}~process@1.0/now")[1]
    assert headers["Ao-Slot"] == str(slot) and "Signature" in headers
    status, body, _ = e2e.get(url + f"/{pid}~process@1.0/now")
    doc = json.loads(body)
    assert doc["slot"] == slot and doc["cache"]["store"]["greeting"] == value
    assert doc["results"]["Output"] == "set greeting"
    # a second write merges into the cache
    item2 = DataItem.create(w, data=b"2", target=pid, tags=[
        ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Set"), ("Key", "other")])
    assert e2e.request("POST", url + f"/{pid}~process@1.0/schedule", item2.to_bytes(),
                       {"codec-device": "ans104@1.0"})[0] == 201
    doc = json.loads(e2e.get(url + f"/{pid}~process@1.0/now")[1])
    assert doc["cache"]["store"] == {"greeting": value, "other": "2"}
    # compute at the Set slot, a path inside the result
    status, body, _ = e2e.get(url + f"/{pid}~process@1.0/compute/Output?slot={slot}")
    assert status == 200 and body == b"set greeting"
    assert e2e.get(url + f"/{pid}~process@1.0/now/cache/nope")[0] == 404
    assert e2e.get(url + f"/{pid}~process@1.0/compute?slot=99999")[0] == 404
    assert e2e.get(url + f"/{pid}~process@1.0/compute")[0] == 400
    # wrong target, httpsig body
    wrong = DataItem.create(w, data=b"", target=sim["module"], tags=[("Data-Protocol", "ao"), ("Type", "Message")])
    assert e2e.request("POST", url + f"/{pid}~process@1.0/schedule", wrong.to_bytes(),
                       {"codec-device": "ans104@1.0"})[0] == 400
    status, body, _ = e2e.request("POST", url + f"/{pid}~process@1.0/schedule", b"{}",
                                  {"codec-device": "httpsig@1.0"})
    assert status == 400 and "not signed" in json.loads(body)["error"]     # httpsig is scheduled when signed
    status, body, _ = e2e.request("POST", url + f"/{pid}~process@1.0/schedule", b"junk", {"codec-device": "ans104@1.0"})
    assert status == 400 and "data item" in json.loads(body)["error"]
    assert e2e.request("POST", url + f"/{pid}~process@1.0/schedule", b"x", {"codec-device": "json@1.0"})[0] == 400
    unknown = "U" * 43
    assert e2e.get(url + f"/{unknown}~process@1.0/now")[0] == 404
    assert e2e.get(url + f"/{pid}~process@1.0/compute?slot=-1")[0] == 400


def test_meta_info_and_evidence_route(sim):
    url = sim["node"].url
    status, body, _ = e2e.get(url + "/~meta@1.0/info")
    info = json.loads(body)
    assert status == 200 and info["tee"].startswith("sim") and info["address"] == json.loads(e2e.get(url + "/")[1])["address"]
    assert info["version"] and any("now" in r for r in info["routes"])
    status, body, _ = e2e.get(url + "/~attestation@1.0/evidence")
    doc = json.loads(body)
    assert status == 200 and doc["format"] == "aocu-endorsements/1" and doc["evidence"]
    assert doc["node"]["ed25519"] == info["ed25519"]
    nonce = os.urandom(16).hex()
    doc = json.loads(e2e.get(url + f"/~attestation@1.0/evidence?nonce={nonce}")[1])
    assert doc["nonce"] == nonce and doc["nonce_evidence"]["evidence"]
    assert e2e.get(url + "/~attestation@1.0/evidence?nonce=zz")[0] == 400
    # --live: fresh evidence for the endorsed keys
    rc, rep = verify(url + f"/result/{sim['mid']}?process-id={sim['pid']}", "--live", "--allow-simulated",
                     "--data-dir", str(sim["data"]))
    assert rc == 0, rep["failed"]


def test_tee_none_node_states_it_and_fails_evidence(tmp_path, node_wallet_0600, lua32, client_wallet):
    node = e2e.Node(tmp_path / "data", workers=1)      # the harness default: --tee none
    try:
        mod = e2e.upload_module(node.url, client_wallet, lua32.read_bytes())
        pid = e2e.spawn(node.url, client_wallet, mod)
        mid = e2e.send(node.url, client_wallet, pid, "Echo", "hi")
        assert e2e.result(node.url, pid, mid)["Output"] == "hi"
        for route in ("/health", "/", f"/result/{mid}?process-id={pid}", f"/{pid}~process@1.0/now",
                      "/~meta@1.0/info"):
            status, _, headers = e2e.get(node.url + route)
            assert status == 200 and headers["X-Aocu-Tee"].startswith("none"), route
        resp = fetch(node.url + f"/result/{mid}?process-id={pid}")
        assert resp.header("Attestation") == 'tee="none"' and resp.header("Signature")
        doc = json.loads(e2e.get(node.url + "/~attestation@1.0/evidence")[1])
        assert doc["tee"] == "none" and doc["evidence"] is None and doc["no_evidence"]
        rc, rep = verify(node.url + f"/result/{mid}?process-id={pid}")
        assert rc == 1 and "evidence" in rep["failed"] and "signature" not in rep["failed"]
        # the patch cache survives a restart (saved with the shutdown checkpoint)
        assert e2e.result(node.url, pid, e2e.send(node.url, client_wallet, pid, "Eval", PATCHER))
        e2e.send(node.url, client_wallet, pid, "Set", "kept", tags=(("Key", "k"),))
        assert e2e.get(node.url + f"/{pid}~process@1.0/now/cache/store/k")[1] == b"kept"
        assert node.stop_term() == 0
        saved = json.loads(json.loads((tmp_path / "data" / "patch-cache" / f"{pid}.json").read_text())["body"])
        assert saved["cache"] == {"store": {"k": "kept"}}
        node = e2e.Node(tmp_path / "data", workers=1)
        status, body, _ = e2e.get(node.url + f"/{pid}~process@1.0/now/cache/store/k")
        assert status == 200 and body == b"kept"
    finally:
        node.stop_term()


def test_patch_extraction_forms():
    raw = {"Patches": [{"device": "patch@1.0", "balances": {"a": "1"}}],
           "Messages": [{"Target": "x", "Tags": [{"name": "device", "value": "patch@1.0"},
                                                  {"name": "ticker", "value": "TOK"}]},
                        {"Target": "y", "Tags": [{"name": "Action", "value": "Transfer"}]},
                        {"device": "patch@1.0", "balances": {"b": "2"}}]}
    cache: dict = {}
    for p in patches_of(raw):
        merge_patch(cache, p)
    assert cache == {"balances": {"a": "1", "b": "2"}, "ticker": "TOK"}
