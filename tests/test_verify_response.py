"""`aocu verify` and cu.verify: signed, attested results from a simulated node (signer + evidence
service with the simulated TEE) verify; every tampering fails with the failing check named.
HTTP end to end through the node's routes is added with the route wiring (node engineer)."""

# ruff: noqa: F811 - the shared fixtures are imported from tests/test_signing.py and used as parameters
from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from attestation.policy import Policy
from attestation.trust import TrustStore
from cu.cli import main as aocu
from cu.codec import rfc9421
from cu.codec.ans104 import DataItem
from cu.node.signer import ResultId
from cu.verify.response import verify_response
from cu.verify.transport import RawResponse, parse_raw_response, to_curl_bytes
from cu.wire.response import attestation_header, canonical_json, parse_attestation_header
from tests.test_signing import BODY, MID, PID, SimNode, node_a, node_b, node_none, node_tdx, wallet_jwks  # noqa: F401

NONCE = bytes.fromhex("5eed" * 16)


def allow(node: SimNode) -> dict:
    policy = Policy.strict()
    policy.allow_simulated = True
    return {"policy": policy, "trust": TrustStore.default().with_simulated(node.roots)}


def response(node: SimNode, body: bytes = BODY, status: int = 200, nonce: bytes | None = None,
             result: ResultId | None = None) -> RawResponse:
    h = node.signer.sign(status, body, result or ResultId(process=PID, message=MID), attest_nonce=nonce)
    return RawResponse(status, [("Content-Type", "application/json"), *h], body)


def ans104_response(node: SimNode, nonce: bytes | None = None) -> RawResponse:
    item, h = node.signer.ans104_result(200, BODY, ResultId(process=PID, slot=5), attest_nonce=nonce)
    return RawResponse(200, h, item)


def failed(rep: object) -> set[str]:
    return {c.name for c in rep.failed()}  # type: ignore[attr-defined]


def set_header(resp: RawResponse, name: str, value: str) -> RawResponse:
    return RawResponse(resp.status, [(k, value if k.lower() == name.lower() else v) for k, v in resp.headers],
                       resp.body)


def hdr(resp: RawResponse, name: str) -> str:
    v = resp.header(name)
    assert v is not None
    return v


def resign(resp: RawResponse, key: object, keyid: str, alg: str = "ed25519") -> RawResponse:
    """Replace the signature: what a node holding `key` (but not the endorsed one) would send."""
    headers = [(k, v) for k, v in resp.headers if k.lower() not in ("signature", "signature-input")]
    msg = rfc9421.HTTPMessage(headers=headers, status=resp.status)
    comps = ["@status", "content-digest", "ao-process", "ao-message", "attestation"]
    rfc9421.sign_message(msg, label="aocu", components=comps, key=key, alg=alg, keyid=keyid, include_alg=True)
    return RawResponse(resp.status, msg.headers, resp.body)


# -- verifies ---------------------------------------------------------------------------------------
CHECKS_KEY = {"endorsements", "content_digest", "signature", "signature.components", "attestation", "binding.key",
              "evidence"}


def test_signed_response_verifies_with_allow_simulated(node_a: SimNode) -> None:
    rep = verify_response(response(node_a), node_a.document(), **allow(node_a))
    assert rep.ok, rep.format_text()
    assert {c.name for c in rep.checks} == CHECKS_KEY
    assert rep.fields["simulated"] and rep.fields["result"] == {"Ao-Process": PID, "Ao-Message": MID}
    assert "SIMULATED" in rep.format_text()


def test_error_status_results_are_signed_too(node_a: SimNode) -> None:
    body = b'{"error":"process not found"}'
    rep = verify_response(response(node_a, body, status=404), node_a.document(), **allow(node_a))
    assert rep.ok, rep.format_text()
    rep = verify_response(RawResponse(200, response(node_a, body, status=404).headers, body), node_a.document(),
                          **allow(node_a))
    assert failed(rep) == {"signature", "binding.key"}


def test_fresh_nonce_response_verifies(node_a: SimNode) -> None:
    rep = verify_response(response(node_a, nonce=NONCE), node_a.document(), expected_nonce=NONCE,
                          **allow(node_a))
    assert rep.ok, rep.format_text()
    assert {"binding.fresh", "evidence", "evidence.endorsed"} <= {c.name for c in rep.checks}


def test_without_allow_simulated_the_evidence_check_fails(node_a: SimNode, node_b: SimNode) -> None:
    rep = verify_response(response(node_a), node_a.document())
    assert failed(rep) == {"evidence"}
    assert "snp.ark_pinned" in rep.check("evidence").detail and "snp.simulated" in rep.check("evidence").detail
    # trusting the root alone is not enough: the policy must allow simulated evidence too
    rep = verify_response(response(node_a), node_a.document(),
                          trust=TrustStore.default().with_simulated(node_a.roots))
    assert failed(rep) == {"evidence"} and "snp.simulated" in rep.check("evidence").detail
    # and another simulated TEE's root does not vouch for this node
    rep = verify_response(response(node_a), node_a.document(), **allow(node_b))
    assert failed(rep) == {"evidence"} and "snp.ark_pinned" in rep.check("evidence").detail


def test_policy_reference_values_are_applied(node_a: SimNode, tmp_path: Path) -> None:
    rv = tmp_path / "rv.json"
    rv.write_text(json.dumps({"snp": {"measurement": ["00" * 48]}, "allow_simulated": True}))
    kw = allow(node_a)
    kw["policy"] = Policy.from_file(rv)
    rep = verify_response(response(node_a), node_a.document(), **kw)
    assert failed(rep) == {"evidence"} and "snp.policy.measurement" in rep.check("evidence").detail


# -- tampering --------------------------------------------------------------------------------------
def test_one_byte_of_the_body_changed(node_a: SimNode) -> None:
    r = response(node_a)
    body = bytearray(r.body)
    body[10] ^= 1
    rep = verify_response(RawResponse(r.status, r.headers, bytes(body)), node_a.document(), **allow(node_a))
    assert failed(rep) == {"content_digest"}
    # fresh binding covers the body as well
    r = response(node_a, nonce=NONCE)
    rep = verify_response(RawResponse(r.status, r.headers, bytes(body)), node_a.document(), expected_nonce=NONCE,
                          **allow(node_a))
    assert failed(rep) == {"content_digest", "binding.fresh"}


@pytest.mark.parametrize("name", ["Ao-Process", "Ao-Message", "Content-Digest"])
def test_one_byte_of_a_signed_header_changed(node_a: SimNode, name: str) -> None:
    r = response(node_a)
    v = hdr(r, name)
    i = 12
    v2 = v[:i] + ("B" if v[i] != "B" else "C") + v[i + 1:]
    rep = verify_response(set_header(r, name, v2), node_a.document(), **allow(node_a))
    assert "signature" in failed(rep), rep.format_text()
    assert failed(rep) <= {"signature", "binding.key", "content_digest"}


def _flip_evidence(value: str, offset: int) -> str:
    att = parse_attestation_header(value)
    ev = bytearray(att.evidence or b"")
    ev[offset] ^= 0x01
    return attestation_header(att.tee, binding=att.binding, kind=att.kind, evidence=bytes(ev), epoch=att.epoch,
                              nonce=att.nonce)


def test_one_byte_of_the_evidence_changed(node_a: SimNode) -> None:
    r = response(node_a)
    bad = set_header(r, "Attestation", _flip_evidence(hdr(r, "Attestation"), 0x90))  # MEASUREMENT
    rep = verify_response(bad, node_a.document(), **allow(node_a))
    assert {"signature", "evidence"} <= failed(rep)
    assert "snp.signature" in rep.check("evidence").detail
    # even re-signed by the node's own key, the altered report fails its hardware(-root) signature
    i = node_a.identity
    rep = verify_response(resign(bad, i.ed25519._key, i.keyid_ed25519), node_a.document(),  # noqa: SLF001
                          **allow(node_a))
    assert failed(rep) == {"evidence"}
    # a changed REPORT_DATA byte breaks the key binding as well
    bad = resign(set_header(r, "Attestation", _flip_evidence(hdr(r, "Attestation"), 0x50)), i.ed25519._key,  # noqa: SLF001
                 i.keyid_ed25519)
    rep = verify_response(bad, node_a.document(), **allow(node_a))
    assert failed(rep) == {"binding.key", "evidence"}
    # the endorsed evidence in the document (used in fresh mode) is checked too
    doc = node_a.document()
    raw = bytearray(base64.b64decode(doc["evidence"]["evidence"]))
    raw[0x90] ^= 1
    doc["evidence"]["evidence"] = base64.b64encode(bytes(raw)).decode()
    rep = verify_response(response(node_a, nonce=NONCE), doc, expected_nonce=NONCE, **allow(node_a))
    assert failed(rep) == {"evidence.endorsed"}


def test_the_nonce_changed(node_a: SimNode) -> None:
    r = response(node_a, nonce=NONCE)
    att = parse_attestation_header(hdr(r, "Attestation"))
    other = bytearray(NONCE)
    other[0] ^= 1
    # the client's nonce differs from the response's
    rep = verify_response(r, node_a.document(), expected_nonce=bytes(other), **allow(node_a))
    assert failed(rep) == {"binding.fresh"}
    # the nonce in the response altered: the signature and the fresh binding both fail
    v = attestation_header(att.tee, binding="fresh", kind=att.kind, evidence=att.evidence, epoch=att.epoch,
                           nonce=bytes(other))
    rep = verify_response(set_header(r, "Attestation", v), node_a.document(), expected_nonce=bytes(other),
                          **allow(node_a))
    assert failed(rep) == {"signature", "binding.key", "binding.fresh"}
    # a client that sent a nonce and got key binding only (replayed response) is told so
    rep = verify_response(response(node_a), node_a.document(), expected_nonce=NONCE, **allow(node_a))
    assert failed(rep) == {"binding.fresh"}


def test_signed_by_another_nodes_key_fails_the_binding(node_a: SimNode, node_b: SimNode) -> None:
    r = response(node_a)
    b = node_b.identity
    # node B signs A's result with A's evidence attached: its key is not the one A's evidence binds
    rep = verify_response(resign(r, b.ed25519._key, b.keyid_ed25519), node_a.document(),  # noqa: SLF001
                          **allow(node_a))
    assert failed(rep) == {"binding.key"}
    # B also serves an endorsement document listing its own keys next to A's evidence: REPORT_DATA differs
    doc = node_b.document()
    doc["evidence"] = node_a.document()["evidence"]
    rep = verify_response(resign(r, b.ed25519._key, b.keyid_ed25519), doc, **allow(node_a))  # noqa: SLF001
    assert failed(rep) == {"binding.key"}
    assert "not the key binding" in rep.check("binding.key").detail
    # wallet (RSA) signatures are bound the same way
    rep = verify_response(resign(r, b.wallet.private_key, b.address, "rsa-pss-sha512"), node_a.document(),
                          **allow(node_a))
    assert "binding.key" in failed(rep) or "signature" in failed(rep)
    rep = verify_response(response_rsa(node_a), node_a.document(), **allow(node_a))
    assert rep.ok, rep.format_text()


def response_rsa(node: SimNode) -> RawResponse:
    h = node.signer.sign(200, BODY, ResultId(process=PID, message=MID), alg="rsa-pss-sha512")
    return RawResponse(200, h, BODY)


def test_rotated_key_needs_current_endorsements(tmp_path: Path, wallet_jwks: list[dict]) -> None:  # noqa: F811
    from tests.test_signing import make_node

    n = make_node(tmp_path / "rot", wallet_jwks[0])
    r = response(n)
    old_doc = n.document()
    n.service.rotate()
    assert verify_response(response(n), n.document(), **allow(n)).ok
    rep = verify_response(r, n.document(), **allow(n))
    # the rotated-out key stays listed as a past key with its evidence (issue 16): the old result verifies
    assert rep.ok and any(c.name == "endorsements.past_key" for c in rep.checks), rep.format_text()
    bare = {k: v for k, v in n.document().items() if k != "keys"}
    assert failed(verify_response(r, bare, **allow(n))) == {"binding.key"}
    assert verify_response(r, old_doc, **allow(n)).ok


def test_unsigned_or_uncovered_responses_fail(node_a: SimNode) -> None:
    r = response(node_a)
    bare = RawResponse(200, [(k, v) for k, v in r.headers if not k.lower().startswith("signature")], r.body)
    rep = verify_response(bare, node_a.document(), **allow(node_a))
    assert {"signature", "signature.components", "binding.key"} <= failed(rep)
    # a signature that leaves out the attestation header does not count
    i = node_a.identity
    headers = [(k, v) for k, v in bare.headers]
    msg = rfc9421.HTTPMessage(headers=headers, status=200)
    rfc9421.sign_message(msg, label="aocu", components=["@status", "content-digest", "ao-process", "ao-message"],
                         key=i.ed25519._key, alg="ed25519", keyid=i.keyid_ed25519)  # noqa: SLF001
    rep = verify_response(RawResponse(200, msg.headers, r.body), node_a.document(), **allow(node_a))
    assert failed(rep) == {"signature.components"}
    assert "attestation" in rep.check("signature.components").detail
    # no endorsements at all
    rep = verify_response(r, None, **allow(node_a))
    assert "endorsements" in failed(rep)
    # a malformed Attestation header
    rep = verify_response(set_header(r, "Attestation", 'tee="sgx"'), node_a.document(), **allow(node_a))
    assert "attestation" in failed(rep)


def test_node_without_tee_fails_the_evidence_check(node_none: SimNode, node_a: SimNode) -> None:
    rep = verify_response(response(node_none), node_none.document(), **allow(node_a))
    assert failed(rep) == {"binding.key", "evidence"}
    assert "tee=none" in rep.check("evidence").detail
    assert rep.check("signature").ok and rep.check("content_digest").ok


def test_tdx_response_verifies(node_tdx: SimNode) -> None:
    for r in (response(node_tdx), response(node_tdx, nonce=NONCE), ans104_response(node_tdx)):
        rep = verify_response(r, node_tdx.document(), expected_nonce=None, **allow(node_tdx))
        assert rep.ok, rep.format_text()


# -- ANS-104 codec ----------------------------------------------------------------------------------
def test_ans104_codec_result_verifies(node_a: SimNode) -> None:
    rep = verify_response(ans104_response(node_a), node_a.document(), **allow(node_a))
    assert rep.ok, rep.format_text()
    assert {"ans104.parse", "ans104.signature", "ans104.owner", "ans104.tags", "binding.key", "evidence"} <= \
        {c.name for c in rep.checks}
    rep = verify_response(ans104_response(node_a, NONCE), node_a.document(), expected_nonce=NONCE, **allow(node_a))
    assert rep.ok, rep.format_text()
    assert rep.check("binding.fresh").ok


def test_ans104_tampering_and_foreign_wallet(node_a: SimNode, node_b: SimNode) -> None:
    r = ans104_response(node_a)
    raw = bytearray(r.body)
    raw[-3] ^= 1  # a byte of the result data
    rep = verify_response(RawResponse(200, [(k, v) for k, v in r.headers if k != "Content-Digest"], bytes(raw)),
                          node_a.document(), **allow(node_a))
    assert {"content_digest", "ans104.signature", "binding.key"} <= failed(rep)
    # node B's wallet re-signs A's item (same tags, A's evidence): owner and binding fail
    item = DataItem.parse(r.body)
    forged = item.signed_by(node_b.identity.wallet).to_bytes()
    from cu.codec.digest import content_digest
    rep = verify_response(RawResponse(200, [("Content-Type", "application/ans104"),
                                            ("Content-Digest", content_digest(forged))], forged),
                          node_a.document(), **allow(node_a))
    assert failed(rep) == {"ans104.owner", "binding.key"}
    # the status tag must match the HTTP status
    rep = verify_response(RawResponse(500, r.headers, r.body), node_a.document(), **allow(node_a))
    assert failed(rep) == {"ans104.tags"}


# -- raw responses (curl -si) -----------------------------------------------------------------------
def test_parse_curl_style_responses(node_a: SimNode) -> None:
    r = response(node_a)
    raw = to_curl_bytes(r)
    assert raw.startswith(b"HTTP/1.1 200\r\n") and b"\r\n\r\n" + BODY in raw
    p = parse_raw_response(raw)
    assert (p.status, p.body, p.headers) == (200, BODY, r.headers)
    # HTTP/2 status line, LF line endings, a 100 Continue preamble, a header split over two lines
    head = "".join(f"{k}: {v}\n" for k, v in r.headers)
    variant = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/2 200 \n" + head.encode() + b"X-Extra: a\nX-Extra: b\n\n" + BODY
    p = parse_raw_response(variant)
    assert p.status == 200 and p.body == BODY and p.version == "2" and p.header("x-extra") == "a, b"
    assert verify_response(p, node_a.document(), **allow(node_a)).ok
    # redirects followed with curl -L: the last response counts
    p = parse_raw_response(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n" + raw)
    assert p.status == 200 and p.body == BODY
    for bad in (b"", b"not http", b"HTTP/1.1 abc\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"):
        with pytest.raises(Exception, match="status line|malformed header"):
            parse_raw_response(bad)


def _write(tmp_path: Path, node: SimNode, r: RawResponse) -> tuple[Path, Path]:
    f = tmp_path / "resp.txt"
    f.write_bytes(to_curl_bytes(r))
    d = tmp_path / "evidence.json"
    d.write_text(json.dumps(node.document()))
    return f, d


def test_cli_verify_response_file(node_a: SimNode, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f, d = _write(tmp_path, node_a, response(node_a))
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--allow-simulated", str(node_a.roots)]) == 0
    out = capsys.readouterr().out
    for name in CHECKS_KEY:
        assert re.search(rf"^PASS  {re.escape(name)}:", out, re.M), out
    assert "VERIFIED (SIMULATED" in out
    # --json: valid JSON with every check name
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--allow-simulated", str(node_a.roots),
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is True and {c["name"] for c in doc["checks"]} == CHECKS_KEY
    assert doc["evidence"]["evidence"]["verified"] is True
    # without --allow-simulated: exit 1, the evidence check named
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is False and doc["failed"] == ["evidence"]
    # bare --allow-simulated takes DATA_DIR/sim-tee/roots.pem
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--allow-simulated",
                 "--data-dir", str(node_a.data_dir)]) == 0
    capsys.readouterr()
    # tampered file: exit 1, failing check printed
    f.write_bytes(f.read_bytes().replace(b'"hello"', b'"hellO"'))
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--allow-simulated", str(node_a.roots)]) == 1
    assert re.search(r"^FAIL  content_digest", capsys.readouterr().out, re.M)


def test_cli_usage_errors(node_a: SimNode, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f, d = _write(tmp_path, node_a, response(node_a))
    assert aocu(["verify"]) == 2
    assert aocu(["verify", "--response", str(f)]) == 2  # no endorsements source
    assert "--evidence FILE or --node URL" in capsys.readouterr().err
    assert aocu(["verify", "--response", str(tmp_path / "absent"), "--evidence", str(d)]) == 2
    (tmp_path / "junk").write_bytes(b"<html>")
    assert aocu(["verify", "--response", str(tmp_path / "junk"), "--evidence", str(d)]) == 2
    assert "status line" in capsys.readouterr().err
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--nonce", "xyz"]) == 2
    assert aocu(["verify", "--response", str(f), "--evidence", str(f)]) == 2  # not JSON
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--allow-simulated", str(f)]) == 2


# -- URL mode over loopback -------------------------------------------------------------------------
@pytest.fixture
def served(node_a: SimNode) -> Iterator[str]:
    """A stand-in for the node's routes (until they are wired): signs results with the same signer."""

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            u = urlsplit(self.path)
            q = parse_qs(u.query)
            if u.path == "/~attestation@1.0/evidence":
                nonce = bytes.fromhex(q["nonce"][0]) if "nonce" in q else None
                body, headers, status = json.dumps(node_a.service.endorsements_document(nonce)).encode(), [
                    ("Content-Type", "application/json")], 200
            else:
                nonce = bytes.fromhex(q["attest-nonce"][0]) if "attest-nonce" in q else None
                res = ResultId(process=PID, message=u.path.rsplit("/", 1)[-1])
                status = 200
                if self.headers.get("accept-codec") == "ans104@1.0":
                    body, headers = node_a.signer.ans104_result(200, BODY, res, attest_nonce=nonce)
                else:
                    body = BODY
                    headers = [("Content-Type", "application/json"), *node_a.signer.sign(200, BODY, res,
                                                                                           attest_nonce=nonce)]
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_cli_verify_url(node_a: SimNode, served: str, capsys: pytest.CaptureFixture) -> None:
    url = f"{served}/result/{MID}?process-id={PID}"
    roots = str(node_a.roots)
    assert aocu(["verify", url, "--allow-simulated", roots]) == 0
    assert aocu(["verify", url, "--allow-simulated", roots, "--fresh"]) == 0
    assert aocu(["verify", url, "--allow-simulated", roots, "--nonce", NONCE.hex(), "--codec", "ans104"]) == 0
    out = capsys.readouterr().out
    assert "PASS  binding.fresh" in out and "PASS  ans104.owner" in out
    assert aocu(["verify", url, "--allow-simulated", roots, "--live"]) == 0
    assert "PASS  binding.live" in capsys.readouterr().out
    assert aocu(["verify", url, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["failed"] == ["evidence"]
    # flag-then-URL form: `--allow-simulated URL` is the bare flag followed by the URL
    assert aocu(["verify", "--allow-simulated", url, "--data-dir", str(node_a.data_dir)]) == 0
    # a saved response checked against the node's live endorsements
    assert aocu(["verify", "--node", served, "--response", "/dev/null"]) == 2
    capsys.readouterr()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_real_curl_si_output_verifies(node_a: SimNode, served: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    """The file is what `curl -si URL > FILE` really writes (reason phrase, Server/Date headers)."""
    url = f"{served}/result/{MID}?process-id={PID}&attest-nonce={NONCE.hex()}"
    f = tmp_path / "curl.txt"
    with f.open("wb") as out:
        subprocess.run(["curl", "-si", "--max-time", "20", url], stdout=out, check=True)
    raw = f.read_bytes()
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n") or raw.startswith(b"HTTP/1.1 200 OK\r\n")
    roots = str(node_a.roots)
    assert aocu(["verify", "--response", str(f), "--node", served, "--allow-simulated", roots,
                 "--nonce", NONCE.hex()]) == 0
    out = capsys.readouterr().out
    assert "PASS  binding.fresh" in out and "VERIFIED" in out
    with f.open("wb") as out_f:
        subprocess.run(["curl", "-si", "--max-time", "20", "-H", "accept-codec: ans104@1.0", url], stdout=out_f,
                       check=True)
    assert aocu(["verify", "--response", str(f), "--node", served, "--allow-simulated", roots, "--json"]) == 0
    assert "ans104.owner" in {c["name"] for c in json.loads(capsys.readouterr().out)["checks"]}


def test_cli_entry_point_exit_status(node_a: SimNode, tmp_path: Path) -> None:
    f, d = _write(tmp_path, node_a, response(node_a))
    args = [sys.executable, "-m", "cu.cli", "verify", "--response", str(f), "--evidence", str(d)]
    assert subprocess.run([*args, "--allow-simulated", str(node_a.roots)], capture_output=True).returncode == 0
    p = subprocess.run(args, capture_output=True, text=True)
    assert p.returncode == 1 and "FAIL  evidence" in p.stdout


def test_digest_helper_matches_rfc9530() -> None:
    from cu.node.signer import content_digest_from
    assert content_digest_from(hashlib.sha256(b"").digest()) == \
        "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"


def test_endorsements_supplied_by_the_client(node_a: SimNode, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """A real node without a host cert table serves a document without VCEK: the client brings it."""
    doc = node_a.document()
    endo = doc["evidence"]["endorsements"]
    (tmp_path / "vcek.der").write_bytes(base64.b64decode(endo["vcek"]))
    (tmp_path / "chain.pem").write_bytes(base64.b64decode(endo["chain"]))
    doc["evidence"]["endorsements"] = {}
    f = tmp_path / "resp.txt"
    f.write_bytes(to_curl_bytes(response(node_a)))
    (tmp_path / "doc.json").write_text(json.dumps(doc))
    base = ["verify", "--response", str(f), "--evidence", str(tmp_path / "doc.json"), "--allow-simulated",
            str(node_a.roots)]
    assert aocu(base) == 1
    assert "FAIL  evidence" in capsys.readouterr().out
    assert aocu([*base, "--vcek", str(tmp_path / "vcek.der"), "--chain", str(tmp_path / "chain.pem")]) == 0
    capsys.readouterr()


def test_simulated_label_with_early_stop_claims_no_hardware_root(node_a: SimNode, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Regression: a 'sim-snp' bundle whose verification stopped before its chain was evaluated (here: no VCEK)
    was reported as 'chains to a hardware root'. The label check names the check it stopped at instead."""
    doc = node_a.document()
    doc["evidence"]["endorsements"] = {}
    rep = verify_response(response(node_a), doc, **allow(node_a))
    assert failed(rep) == {"evidence"}
    ev = rep.evidence_reports["evidence"]
    assert [c.name for c in ev.failed()] == ["snp.signing_key", "evidence.label"]
    assert ev.check("snp.ark_pinned") is None  # the chain was never evaluated
    assert ev.check("evidence.label").detail == (
        "bundle labelled 'sim-snp'; verification stopped at check snp.signing_key before the evidence's chain "
        "was evaluated")
    assert "hardware root" not in rep.format_text(verbose=True)
    # what `aocu verify` prints for it
    f, d = tmp_path / "resp.txt", tmp_path / "doc.json"
    f.write_bytes(to_curl_bytes(response(node_a)))
    d.write_text(json.dumps(doc))
    assert aocu(["verify", "--response", str(f), "--evidence", str(d), "--allow-simulated", str(node_a.roots)]) == 1
    out = capsys.readouterr().out
    assert "verification stopped at check snp.signing_key" in out and "hardware root" not in out


def test_flask_post_processor_signs_routes(node_a: SimNode) -> None:
    """The hook the node's app runs after each request (cu.http.state.PostProcessor), on a minimal app."""
    from flask import Flask, Response, request

    from cu.http.signing import post_processor

    app = Flask("t")

    @app.get("/result/<mid>")
    def _result(mid: str) -> Response:
        return Response(BODY, mimetype="application/json")

    @app.get("/health")
    def _health() -> Response:
        return Response("ok")

    def identify(req: object, resp: object) -> ResultId | None:
        if request.path.startswith("/result/"):
            return ResultId(process=request.args.get("process-id"), message=request.view_args["mid"])
        return None

    hook = post_processor(node_a.signer, identify)
    app.after_request(lambda resp: hook(request, resp))
    c = app.test_client()

    def raw(r: object) -> RawResponse:
        return RawResponse(r.status_code, list(r.headers.items()), r.get_data())  # type: ignore[attr-defined]

    doc = node_a.document()
    r = c.get(f"/result/{MID}?process-id={PID}")
    rep = verify_response(raw(r), doc, **allow(node_a))
    assert rep.ok and rep.fields["result"] == {"Ao-Process": PID, "Ao-Message": MID}
    r = c.get(f"/result/{MID}?process-id={PID}&attest-nonce={NONCE.hex()}", headers={"accept-codec": "ans104@1.0"})
    assert r.headers["Content-Type"] == "application/ans104"
    assert verify_response(raw(r), doc, expected_nonce=NONCE, **allow(node_a)).ok
    r = c.get(f"/result/{MID}?process-id={PID}&attest-nonce=xyz")
    assert r.status_code == 400 and b"nonce" in r.get_data()
    assert verify_response(raw(r), doc, **allow(node_a)).ok  # the error is signed too
    assert "Signature" not in c.get("/health").headers


@pytest.mark.parametrize("name", ["Content-Digest", "Signature-Input", "Signature", "Attestation", "Ao-Process"])
@pytest.mark.parametrize("value", ["", "garbage", 'x=:!!:', "aocu=(\"@status\");keyid=\"" + "A" * 43 + "\"",
                                   'tee="sim-snp", binding="key", kind="tdx", epoch=-1, evidence=:AAAA:',
                                   "sha-512=:AAAA:, aocu=:AAAA:"])
def test_malformed_headers_fail_cleanly(node_a: SimNode, name: str, value: str) -> None:
    rep = verify_response(set_header(response(node_a), name, value), node_a.document(), **allow(node_a))
    assert not rep.ok and rep.check("internal_error") is None, rep.format_text()


@pytest.mark.parametrize("doc", [None, [], {"format": "aocu-endorsements/1"}, {"format": "x"}])
def test_malformed_documents_fail_cleanly(node_a: SimNode, doc: object) -> None:
    rep = verify_response(response(node_a), doc, **allow(node_a))  # type: ignore[arg-type]
    assert "endorsements" in failed(rep) and rep.check("internal_error") is None


def test_document_fields_are_checked(node_a: SimNode) -> None:
    for path, value, msg in ((("node", "address"), "x" * 43, "address"),
                             (("node", "node_config_sha256"), "00" * 32, "node_config_sha256"),
                             (("node", "epoch"), -1, "epoch"), (("node", "ed25519"), "AAAA", "ed25519"),
                             (("tee",), "sim-tdx", "labelled"), (("node", "node_config", "tee"), "snp", "contradicts")):
        doc = node_a.document()
        tgt = doc
        for k in path[:-1]:
            tgt = tgt[k]
        tgt[path[-1]] = value
        if path[-2:] == ("node_config", "tee"):  # a consistent document whose config names another tee
            doc["node"]["node_config_sha256"] = hashlib.sha256(canonical_json(doc["node"]["node_config"])).hexdigest()
        rep = verify_response(response(node_a), doc, **allow(node_a))
        assert "endorsements" in failed(rep) and msg in rep.check("endorsements").detail, (path, rep.format_text())


def test_live_endorsements(node_a: SimNode, node_b: SimNode) -> None:
    nonce = b"\x42" * 32
    doc = node_a.document(nonce)
    rep = verify_response(response(node_a), doc, live_nonce=nonce, **allow(node_a))
    assert rep.ok and {"binding.live", "evidence.live"} <= {c.name for c in rep.checks}, rep.format_text()
    # a replayed document (another nonce) or another node's live evidence fails
    rep = verify_response(response(node_a), doc, live_nonce=b"\x43" * 32, **allow(node_a))
    assert failed(rep) == {"binding.live"}
    doc["nonce_evidence"] = node_b.document(nonce)["nonce_evidence"]
    rep = verify_response(response(node_a), doc, live_nonce=nonce, **allow(node_a))
    assert "binding.live" in failed(rep)


def test_status_and_summary_of_a_verified_response(node_a: SimNode) -> None:
    from cu.verify.response import summarize
    body = json.dumps({"Output": {"data": "hello\nworld", "prompt": "> "}, "Messages": [{}], "Spawns": []}).encode()
    rep = verify_response(response(node_a, body), node_a.document(), **allow(node_a))
    assert rep.ok and rep.status_ok and rep.status == 200
    assert rep.summary() == {"status": 200, "reason": "HTTP 200 OK", "process": PID, "message": MID,
                             "output": "hello world", "messages": 1}
    doc = rep.to_dict()
    assert doc["status"] == 200 and doc["summary"]["output"] == "hello world"
    text = rep.format_text()
    assert text.splitlines()[0] == "status    HTTP 200 OK" and "not a result" not in text
    # a signed 404 verifies, but it is not a result
    rep = verify_response(response(node_a, b'{"error":"Process P not found"}', status=404), node_a.document(),
                          **allow(node_a))
    assert rep.ok and not rep.status_ok and rep.summary()["error"] == "Process P not found"
    assert "HTTP 404 Not Found: a signed error, not a result" in rep.format_text().splitlines()[-1]
    # the ANS-104 form: the identity and output come from the item
    rep = verify_response(ans104_response(node_a), node_a.document(), **allow(node_a))
    assert rep.ok and rep.summary()["slot"] == "5" and rep.summary()["process"] == PID
    # other payloads
    assert summarize(200, {}, json.dumps({"raw": {"Output": 7}}).encode())["output"] == "7"
    assert summarize(200, {}, b'{"edges":[{},{}],"pageInfo":{}}')["results"] == 2
    assert summarize(202, {}, b'{"message":"in progress"}')["message_text"] == "in progress"
    assert summarize(200, {}, b"\x00\xff" * 10)["body"] == "20 bytes"
    assert summarize(200, {}, b"x" * 500)["body"].endswith("…") and len(summarize(200, {}, b"x" * 500)["body"]) == 200
    assert summarize(None, {}, None) == {"status": None, "reason": "no HTTP status"}
