"""CORS (cu/http/cors.py): preflights on any path, CORS headers on every response, configured origins, and a
signed result that still verifies with the CORS headers on it."""

from __future__ import annotations

import json

import pytest

from attestation.policy import Policy
from attestation.trust import TrustStore
from cu.codec.wallet import ArweaveWallet
from cu.http import create_app
from cu.http.cors import ALLOW_METHODS, EXPOSE_HEADERS, CorsMiddleware, check_origins
from cu.node.config import NodeConfig
from cu.verify.response import verify_response
from cu.verify.transport import RawResponse

PID = "P" * 43
MID = "M" * 43


@pytest.fixture(scope="module")
def node_wallet(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keys") / "node.json"
    path.write_text(json.dumps(ArweaveWallet.generate().to_jwk()))
    path.chmod(0o600)
    return str(path)


def _app(tmp_path, node_wallet, **extra):
    return create_app({"data_dir": tmp_path / "node", "tee": "sim", "eager": False, "wallet": node_wallet, **extra})


@pytest.fixture()
def app(tmp_path, node_wallet):
    a = _app(tmp_path, node_wallet)
    yield a
    a.extensions["aocu"].dispatcher.stop()


def test_preflight_on_any_path(app):
    c = app.test_client()
    for path in ("/", f"/result/{MID}?process-id={PID}", f"/{PID}~process@1.0/push", "/no/such/route", "/dry-run"):
        r = c.options(path, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                     "Access-Control-Request-Headers": "content-type, signature, signature-input"})
        assert r.status_code == 204, path
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Access-Control-Allow-Methods"] == "GET, POST, PUT, DELETE, OPTIONS, PATCH" == ALLOW_METHODS
        assert r.headers["Access-Control-Allow-Headers"] == "content-type, signature, signature-input"
        assert int(r.headers["Access-Control-Max-Age"]) > 0
        assert r.get_data() == b"" and "Signature" not in r.headers   # a preflight is not a result
    # no requested headers: nothing to echo
    r = c.options("/", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
    assert r.status_code == 204 and "Access-Control-Allow-Headers" not in r.headers


def test_every_response_carries_origin_and_exposed_headers(app):
    c = app.test_client()
    for method, path, status in (("GET", "/", 200), ("GET", "/health", 200), ("GET", "/no/such/route", 404),
                                 ("POST", "/", 400), ("GET", f"/result/{MID}?process-id={PID}", 404)):
        r = c.open(path, method=method, headers={"Origin": "https://app.example"})
        assert r.status_code == status, (path, r.get_data())
        assert r.headers["Access-Control-Allow-Origin"] == "*", path
        exposed = [h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")]
        for h in ("Signature", "Signature-Input", "Attestation", "Content-Digest", "Ao-Process", "Ao-Slot",
                  "Ao-Message", "process", "slot", "X-Aocu-Tee"):
            assert h in exposed, (path, h)
    assert EXPOSE_HEADERS.count(",") == 9


def test_signed_result_with_cors_headers_verifies(app, tmp_path):
    c = app.test_client()
    doc = c.get("/~attestation@1.0/evidence").get_json()
    policy = Policy.strict()
    policy.allow_simulated = True
    trust = TrustStore.default().with_simulated(tmp_path / "node" / "sim-tee" / "roots.pem")
    r = c.get(f"/result/{MID}?process-id={PID}", headers={"Origin": "https://app.example"})
    assert r.status_code == 404 and "Signature" in r.headers and "Access-Control-Allow-Origin" in r.headers
    resp = RawResponse(r.status_code, list(r.headers.items()), r.get_data())
    rep = verify_response(resp, doc, policy=policy, trust=trust)
    assert rep.ok, rep.format_text()
    assert "access-control" not in r.headers["Signature-Input"].lower()
    # the same response without the CORS headers verifies as well: they are not signed
    bare = RawResponse(r.status_code, [(k, v) for k, v in r.headers.items()
                                       if not k.lower().startswith("access-control")], r.get_data())
    assert verify_response(bare, doc, policy=policy, trust=trust).ok


def test_configured_origins(tmp_path, node_wallet):
    a = _app(tmp_path, node_wallet, cors_origins=["https://app.example", "http://localhost:3000/"])
    try:
        c = a.test_client()
        r = c.get("/", headers={"Origin": "https://app.example"})
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example" and "Origin" in r.headers["Vary"]
        r = c.get("/", headers={"Origin": "http://localhost:3000"})
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
        r = c.get("/", headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
        r = c.options("/", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert r.status_code == 204 and "Access-Control-Allow-Origin" not in r.headers
        r = c.options("/", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    finally:
        a.extensions["aocu"].dispatcher.stop()


def test_origin_validation():
    assert check_origins(None) == ["*"] and check_origins([]) == ["*"]
    assert check_origins(["https://a.example/", "http://h:8080"]) == ["https://a.example", "http://h:8080"]
    for bad in ("a.example", "https://a.example/path", "ftp://x", ""):
        with pytest.raises(ValueError):
            check_origins([bad])
    assert NodeConfig.from_mapping({}).cors_origins == ["*"]
    with pytest.raises(ValueError, match="cors origins"):
        NodeConfig.from_mapping({"cors_origins": ["not an origin"]})


def test_middleware_keeps_headers_the_app_set():
    def inner(environ, start_response):
        start_response("200 OK", [("Access-Control-Allow-Origin", "https://fixed.example"), ("Vary", "Accept")])
        return [b"x"]

    seen = {}

    def start(status, headers, exc_info=None):
        seen["headers"] = headers

    mw = CorsMiddleware(inner, ["https://a.example"])
    assert list(mw({"REQUEST_METHOD": "GET", "HTTP_ORIGIN": "https://a.example"}, start)) == [b"x"]
    h = dict(seen["headers"])
    assert h["Access-Control-Allow-Origin"] == "https://fixed.example" and h["Vary"] == "Accept, Origin"
