"""The hot routes (cu/http/hot.py): POST / and GET /result/<id>?process-id= answered without Flask's generic
machinery give what the Flask views give (status, body, headers in order, signature, metrics, log line), and
their errors are Flask's own answers."""

from __future__ import annotations

import base64
import io
import json
import logging

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.http import create_app
from cu.http.hot import HotRoutes
from cu.node.signer import signature_base
from tests.test_metrics import prom_value

VOLATILE = {"Signature", "Signature-Input"}     # carry the signing time


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    from tests.modules.build import build
    app = create_app({"data_dir": tmp_path_factory.mktemp("hot") / "node", "tee": "sim"})
    hot = app.wsgi_app.app
    assert isinstance(hot, HotRoutes)
    calls = []     # requests the hot layer passed on to Flask

    def counted(environ, start_response):
        calls.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return flask_wsgi(environ, start_response)
    flask_wsgi, hot.flask_wsgi = hot.flask_wsgi, counted
    c = app.test_client()
    wallet = ArweaveWallet.generate()
    module = DataItem.create(wallet, data=build("lua32").read_bytes(), tags=[
        ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
        ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
        ("Compute-Limit", "9000000000000")])
    assert c.post("/", data=module.to_bytes()).status_code == 202
    proc = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                    ("Module", module.id)])
    assert c.post("/", data=proc.to_bytes()).status_code == 202
    yield app, c, proc.id, calls
    app.extensions["aocu"].dispatcher.stop()


def _message(pid: str, data: str) -> DataItem:
    return DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid,
                           tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])


class _FlaskPath:
    """A no-op post-processor: while it is installed, the hot layer passes every request to Flask."""

    def __init__(self, app) -> None:
        self.hooks = app.extensions["aocu"].post_processors

    def __enter__(self) -> None:
        self.hooks.append(self._noop)

    def __exit__(self, *_exc: object) -> None:
        self.hooks.remove(self._noop)

    @staticmethod
    def _noop(_req, resp):
        return resp


def _shape(r) -> tuple[int, list[tuple[str, str]]]:
    return r.status_code, [(k, "" if k in VOLATILE else v) for k, v in r.headers.items()]


def test_hot_answers_equal_the_flask_views(node, caplog):
    app, c, pid, calls = node
    seen = len(calls)
    hot_m, flask_m = _message(pid, "hot"), _message(pid, "flask")
    with caplog.at_level(logging.INFO, logger="aocu.http"):
        hot_post = c.post("/", data=hot_m.to_bytes())
        hot_get = c.get(f"/result/{hot_m.id}?process-id={pid}")
        assert len(calls) == seen      # both taken by the hot layer
        with _FlaskPath(app):
            flask_post = c.post("/", data=flask_m.to_bytes())
            flask_get = c.get(f"/result/{flask_m.id}?process-id={pid}")
            again = c.get(f"/result/{hot_m.id}?process-id={pid}")      # the stored result
        assert calls[seen:] == [("POST", "/"), ("GET", f"/result/{flask_m.id}"), ("GET", f"/result/{hot_m.id}")]
    assert hot_post.json == {"message": "Processing DataItem", "id": hot_m.id}
    assert _shape(hot_post) == _shape(flask_post)
    assert json.loads(hot_get.data)["Output"] == "hot" and json.loads(flask_get.data)["Output"] == "flask"
    assert [k for k, _ in hot_get.headers.items()] == [k for k, _ in flask_get.headers.items()]
    assert hot_get.data == again.data and _shape(hot_get) == _shape(again)
    assert hot_get.headers["Ao-Message"] == hot_m.id and hot_get.headers["Ao-Process"] == pid
    # the signature covers the hot reply as sent
    signer = app.extensions["aocu.signer"]
    line = hot_get.headers["Signature-Input"].split("=", 1)[1]
    signed = [(k, hot_get.headers[k]) for k in ("Content-Digest", "Ao-Process", "Ao-Message", "Attestation")]
    base = signature_base(hot_get.status_code, signed, line)
    sig = hot_get.headers["Signature"].split("=:", 1)[1].rstrip(":")
    assert signer.identity.ed25519.verify(base, base64.b64decode(sig))
    assert not signer.identity.ed25519.verify(base.replace(b'": 200', b'": 202'), base64.b64decode(sig))
    # one log line per request with the route template, and the HTTP metrics, as on the Flask path
    lines = [r for r in caplog.records if r.name == "aocu.http" and getattr(r, "fields", None)]
    routes = [(r.fields["method"], r.fields["route"], r.fields["status"]) for r in lines]
    assert routes[:2] == [("POST", "/", 202), ("GET", "/result/<message_id>", 200)] == routes[2:4]
    assert lines[1].fields["bytes"] == len(hot_get.data) and lines[1].fields["path"] == f"/result/{hot_m.id}"
    text = c.get("/metrics").data.decode()
    assert prom_value(text, "aocu_http_requests_total", route="/result/<message_id>", method="GET", code="200") >= 3
    assert prom_value(text, "aocu_http_requests_in_flight") == 1.0      # the /metrics request itself


@pytest.mark.parametrize("req", [
    ("POST", "/", b"not a data item"),                          # BadInput from the scheduler
    ("GET", "/result/" + "M" * 43 + "?process-id=" + "P" * 43, None),    # an unknown process: a signed 404
])
def test_hot_errors_are_flasks_answers(node, req):
    app, c, _pid, calls = node
    method, url, body = req
    seen = len(calls)
    hot = c.open(url, method=method, data=body)
    assert len(calls) == seen      # taken by the hot layer, then finished by Flask's error handlers and hooks
    with _FlaskPath(app):
        flask = c.open(url, method=method, data=body)
    assert hot.status_code >= 400 and hot.data == flask.data and _shape(hot) == _shape(flask)


def test_unusual_requests_go_to_flask(node):
    app, c, pid, calls = node
    m = _message(pid, "x")
    assert c.post("/", data=m.to_bytes()).status_code == 202
    seen = len(calls)
    assert c.post("/?process-id=x").status_code == 400      # an assignment needs both parameters
    assert c.get(f"/result/{m.id}?process-id={pid}&no-busy=1").status_code == 200
    assert c.get(f"/result/{m.id}?process-id={pid}", headers={"accept-codec": "httpsig@1.0"}).status_code == 200
    assert c.get(f"/result/{m.id}?process-id={pid}%41").status_code in (200, 404)
    assert c.get(f"/result/{m.id}").status_code == 400      # no process-id
    assert len(calls) - seen == 5


class _Stream(io.RawIOBase):
    """A request body that is not a BytesIO (gunicorn's Body): the hot POST reads it through werkzeug's stream."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        return self._data.readinto(b)


def _post_streamed(app, raw: bytes, length: int) -> tuple[int, bytes, list[tuple[str, str]]]:
    environ = EnvironBuilder(method="POST", path="/", data=b"").get_environ()
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = _Stream(raw), str(length)
    app_iter, status, headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), b"".join(app_iter), [(k, "" if k in VOLATILE else v) for k, v in headers.items()]


def test_hot_post_reads_both_kinds_of_body(node):
    """The lean worker path (cu/serve/lean.py) hands the app the body as a BytesIO, which the hot POST reads as it
    is; any other stream goes through werkzeug's under the app's limit. Same answers either way."""
    app, c, pid, calls = node
    seen = len(calls)
    raw = [_message(pid, f"body{i}").to_bytes() for i in range(2)]
    buffered = c.post("/", data=raw[0])
    status, body, headers = _post_streamed(app, raw[1], len(raw[1]))
    too_big = _post_streamed(app, b"x" * 10, app.config["MAX_CONTENT_LENGTH"] + 1)
    assert len(calls) - seen == 1      # the over-limit one is Flask's (413)
    assert (buffered.status_code, status, too_big[0]) == (202, 202, 413)
    assert [buffered.json["id"], json.loads(body)["id"]] == [DataItem.parse(r).id for r in raw]
    assert _shape(buffered)[1] == headers


def test_a_hook_added_later_sends_requests_to_flask(node):
    app, c, pid, calls = node
    m = _message(pid, "hooked")
    seen = len(calls)
    app.before_request_funcs.setdefault("no-such-blueprint", [])     # a key without hooks changes nothing
    assert c.post("/", data=m.to_bytes()).status_code == 202 and len(calls) == seen
    ran = []
    hooks = app.before_request_funcs.setdefault(None, [])
    hooks.append(lambda: ran.append(1))
    try:
        assert c.get(f"/result/{m.id}?process-id={pid}").status_code == 200
        assert len(calls) == seen + 1 and ran == [1]      # Flask ran it, with the hook
    finally:
        hooks.pop()
        del app.before_request_funcs["no-such-blueprint"]
    assert c.get(f"/result/{m.id}?process-id={pid}").status_code == 200 and len(calls) == seen + 1
