"""`aocu verify` against a real `aocu serve --tee sim` (the CLI in its own process): the HTTP status and a
summary of what was verified; a signed 404 verifies but exits 3 unless --allow-error-status; POST requests
(the legacy dry-run, AO-Core routes) with --method / --data / --header; CORS headers do not disturb the check."""

# ruff: noqa: F811 - the node fixtures are imported from tests/test_attested_http.py and used as parameters
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import tests.test_node_e2e as e2e
from tests.test_attested_http import REPO, client_wallet, lua32, node_wallet_0600, sim  # noqa: F401

pytestmark = pytest.mark.slow

UNKNOWN = "U" * 43


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cu.cli", "verify", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), input=stdin)


def sim_args(sim) -> tuple[str, ...]:
    return ("--allow-simulated", "--data-dir", str(sim["data"]))


def as_json(p: subprocess.CompletedProcess) -> dict:
    assert p.stdout.strip(), p.stderr
    return json.loads(p.stdout)


def test_result_shows_status_and_summary(sim):
    url = f"{sim['node'].url}/result/{sim['mid']}?process-id={sim['pid']}"
    p = run(url, *sim_args(sim))
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "status    HTTP 200 OK"
    assert f"process   {sim['pid']}" in lines and f"message   {sim['mid']}" in lines and "output    1" in lines
    assert lines[-1].startswith("VERIFIED")
    doc = as_json(run(url, *sim_args(sim), "--json"))
    assert doc["verified"] is True and doc["status"] == 200
    assert doc["summary"] == {"status": 200, "reason": "HTTP 200 OK", "process": sim["pid"], "message": sim["mid"],
                              "output": "1", "messages": 0}
    # AO-Core compute: the slot is part of the signed identity
    doc = as_json(run(f"{sim['node'].url}/{sim['pid']}~process@1.0/compute?slot=1", *sim_args(sim), "--json"))
    assert doc["summary"]["slot"] == "1" and doc["summary"]["output"] == "1"


def test_signed_404_verifies_but_exits_nonzero(sim):
    url = f"{sim['node'].url}/result/{UNKNOWN}?process-id={sim['pid']}"
    p = run(url, *sim_args(sim))
    assert p.returncode == 3, p.stdout + p.stderr
    assert p.stdout.splitlines()[0] == "status    HTTP 404 Not Found"
    verdict = p.stdout.splitlines()[-1]
    assert verdict.startswith("VERIFIED") and "HTTP 404 Not Found" in verdict and "not a result" in verdict
    assert "404" in p.stderr and "--allow-error-status" in p.stderr and "Traceback" not in p.stderr
    doc = as_json(run(url, *sim_args(sim), "--json"))
    assert doc["verified"] is True and doc["status"] == 404 and doc["summary"]["status"] == 404
    assert doc["summary"]["process"] == sim["pid"] and doc["summary"]["message"] == UNKNOWN
    assert "is not scheduled" in doc["summary"]["error"]
    # accepted on request
    p = run(url, *sim_args(sim), "--allow-error-status")
    assert p.returncode == 0 and "HTTP 404" in p.stdout
    # a broken signature still fails as before (exit 1), whatever the status
    p = run(url, "--json")   # no --allow-simulated: the evidence check fails
    assert p.returncode == 1 and json.loads(p.stdout)["failed"] == ["evidence"]


def test_post_dry_run_verifies(sim, tmp_path):
    url = f"{sim['node'].url}/dry-run?process-id={sim['pid']}"
    body = json.dumps({"Tags": [{"name": "Action", "value": "Eval"}], "Data": "Count"})
    doc = as_json(run(url, "--data", body, *sim_args(sim), "--json"))
    assert doc["verified"] is True and doc["status"] == 200, doc["failed"]
    assert doc["summary"]["process"] == sim["pid"] and '"data":"1"' not in doc["summary"]["output"]
    assert doc["summary"]["output"] == "1"          # AOS-style Output.data of the Eval
    # --data @FILE, explicit --method and a header; the fresh-nonce binding covers the POST answer too
    f = tmp_path / "msg.json"
    f.write_text(json.dumps({"Tags": [{"name": "Action", "value": "Count"}]}))
    p = run(url, "--method", "POST", "--data", f"@{f}", "--header", "Content-Type: application/json", "--fresh",
            *sim_args(sim))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "PASS  binding.fresh" in p.stdout and "output    2" in p.stdout
    # stdin
    p = run(url, "--data", "@-", *sim_args(sim), stdin=body)
    assert p.returncode == 0, p.stdout + p.stderr
    # an unknown process answers a signed 404
    p = run(f"{sim['node'].url}/dry-run?process-id={UNKNOWN}", "--data", body, *sim_args(sim))
    assert p.returncode == 3 and "HTTP 404" in p.stdout


def test_post_aocore_dry_run_route(sim):
    url = f"{sim['node'].url}/{sim['pid']}~process@1.0/as=execution/compute&Action=Count"
    doc = as_json(run(url, "--method", "POST", "--header", "Data-Protocol: ao", *sim_args(sim), "--json"))
    assert doc["verified"] is True and doc["status"] == 200, (doc["failed"], doc["summary"])
    assert doc["summary"]["process"] == sim["pid"] and doc["summary"]["output"] == "2"


def test_request_option_errors(sim, tmp_path):
    url = f"{sim['node'].url}/dry-run?process-id={sim['pid']}"
    for args in (("--header", "no colon"), ("--header", " Bad: x"), ("--method", "P O", "--data", "{}"),
                 ("--data", f"@{tmp_path / 'absent.json'}")):
        p = run(url, *args, *sim_args(sim))
        assert p.returncode == 2 and p.stderr.startswith("aocu: error: ") and p.stderr.count("\n") == 1, (args, p)
    (tmp_path / "r.http").write_bytes(b"HTTP/1.1 200 OK\r\n\r\n")
    p = run("--response", str(tmp_path / "r.http"), "--node", sim["node"].url, "--data", "{}")
    assert p.returncode == 2 and "need a URL" in p.stderr


def test_cors_headers_do_not_disturb_verification(sim):
    url = f"{sim['node'].url}/result/{sim['mid']}?process-id={sim['pid']}"
    status, _, headers = e2e.request("GET", url, headers={"Origin": "https://app.example"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*" and "Signature" in headers
    assert "Signature" in headers["Access-Control-Expose-Headers"]
    p = run(url, "--header", "Origin: https://app.example", *sim_args(sim))
    assert p.returncode == 0, p.stdout + p.stderr
    status, _, headers = e2e.request("OPTIONS", url, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "accept-codec"})
    assert status == 204 and headers["Access-Control-Allow-Headers"] == "accept-codec"
