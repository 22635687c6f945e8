"""The worker's lean request path (cu/serve/lean.py): for the requests it takes, the environ equals gunicorn's and
the bytes on the wire equal gunicorn's; everything unusual is left to gunicorn untouched."""

from __future__ import annotations

import io
import os
import re
import socket
from pathlib import Path

import pytest
from gunicorn.config import Config
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from gunicorn.http.wsgi import create

from cu.serve.lean import LeanHttp, connection_keys

CLIENT, SERVER = ("127.0.0.1", 40000), ("127.0.0.1", 8000)
ID = "A" * 43

TAKEN = [
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /result/" + ID.encode() + b"?process-id=" + ID.encode() + b" HTTP/1.1\r\nHost: n\r\n\r\n",
    b"GET /health HTTP/1.1\r\nhost: n\r\nAccept: */*\r\nuser-agent: node\r\nConnection: Keep-Alive\r\n"
    b"accept-encoding:  gzip, deflate\t\r\nOrigin: https://a.example\r\nsec-fetch-mode: cors\r\n\r\n",
    b"GET /a/b;c?x=%41&y=?z HTTP/1.1\r\nHost: n\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
]

REFUSED = [
    b"HEAD / HTTP/1.1\r\nHost: n\r\n\r\n",                           # methods other than GET and POST
    b"get / HTTP/1.1\r\nHost: n\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: n\r\n\r\n",                            # only HTTP/1.1
    b"GET /a%41 HTTP/1.1\r\nHost: n\r\n\r\n",                        # percent-decoding is gunicorn's
    b"GET //a HTTP/1.1\r\nHost: n\r\n\r\n",
    b"GET /a#f HTTP/1.1\r\nHost: n\r\n\r\n",
    b"GET http://n/a HTTP/1.1\r\nHost: n\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: n\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\nHost: n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: n\r\nHost: m\r\n\r\n",                 # repeated fields
    b"GET / HTTP/1.1\r\nAccept: a\r\naccept: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\n\r\n",           # scheme, proxy and unknown headers
    b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"GET / HTTP/1.1\r\nX_Custom: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nAccept-Codec: ans104@1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : n\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: n\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: n\nAccept: x\r\n\r\n",                # bare LF
    b"GET / HTTP/1.1\r\nHost: n\rx\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: n\x7f\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: n\xe9\r\n\r\n".encode("latin-1"),
    b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",                 # not kept alive
    b"GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",   # framing
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\nhello",              # body not all here yet
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: n\r\n",                                  # head not all here yet
    b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",                     # over limit_request_line
    b"GET / HTTP/1.1\r\nUser-Agent: " + b"a" * 9000 + b"\r\n\r\n",     # over limit_request_field_size
]


class _Worker:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg


@pytest.fixture(scope="module")
def lean() -> LeanHttp:
    cfg = Config()
    cfg.set("workers", 2)
    return LeanHttp(_Worker(cfg))


def _gunicorn_environ(cfg: Config, raw: bytes) -> tuple[dict, bytes]:
    req = Request(cfg, IterUnreader([raw]), CLIENT, 1)
    _resp, env = create(req, None, CLIENT, SERVER, cfg)
    env["wsgi.multithread"] = True          # as the threaded worker sets it
    return env, env["wsgi.input"].read()


@pytest.mark.parametrize("raw", TAKEN)
def test_environ_equals_gunicorns(lean, raw):
    got = lean.parse(raw + b"GET /next HTTP/1.1\r\n\r\n")
    assert got is not None
    env, used = got
    assert used == len(raw)
    connection_keys(env, None, CLIENT, SERVER)
    want, body = _gunicorn_environ(lean.cfg, raw)
    assert env.pop("wsgi.input").read() == body
    want.pop("wsgi.input")
    for key in ("wsgi.errors", "wsgi.early_hints"):     # per-request objects of the same kind
        assert type(env.pop(key, None)) is type(want.pop(key)) or key == "wsgi.early_hints"
    assert env == want


@pytest.mark.parametrize("raw", REFUSED)
def test_unusual_requests_are_left_to_gunicorn(lean, raw):
    assert lean.parse(raw) is None


def test_unix_socket_server_keys(lean):
    raw = b"GET / HTTP/1.1\r\nHost: node.example:9000\r\n\r\n"
    env, _ = lean.parse(raw)
    connection_keys(env, None, "", "/run/aocu.sock")
    req = Request(lean.cfg, IterUnreader([raw]), "", 1)
    _resp, want = create(req, None, "", "/run/aocu.sock", lean.cfg)
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["REMOTE_ADDR"]) == (
        want["SERVER_NAME"], want["SERVER_PORT"], want["REMOTE_ADDR"]) == ("node.example", "9000", "")


# -- the bytes on the wire, under real gunicorn with the lean path on and off --------------------------------------

APP = r'''
from flask import Flask, Response, request
app = Flask("t")

@app.route("/echo", methods=["GET", "POST"])
def echo():
    return {"body": request.get_data(as_text=True), "q": request.args.get("q"), "host": request.host,
            "remote": request.remote_addr, "scheme": request.scheme}

@app.get("/stream")
def stream():                      # no Content-Length: gunicorn frames it chunked
    return Response((c for c in (b"a", b"bc")), mimetype="text/plain")

@app.get("/empty")
def empty():
    return Response(status=204)

@app.get("/spaced")
def spaced():
    return Response(b"x", headers={"X-Pad": " padded\t", "Connection": "keep-alive"})

@app.get("/bad")
def bad():
    return Response(b"x", headers={"X-Bad": "a\x01b"})

@app.route("/which", methods=["GET", "POST"])
def which():
    return type(request.environ["wsgi.input"]).__name__
'''

REQUESTS = [
    b"POST /echo?q=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody",
    b"GET /echo?q=%20 HTTP/1.1\r\nHost: t:81\r\nOrigin: https://a\r\n\r\n",
    b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /empty HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /spaced HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\nContent-Length: 1\r\n\r\nz",   # gunicorn's
    b"GET /bad HTTP/1.1\r\nHost: t\r\n\r\n",                       # gunicorn's 500; the connection closes
]
_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from tests.test_http_worker import gunicorn_server
    gens, ports = [], []
    for lean_on in ("1", "0"):
        os.environ["AOCU_LEAN_HTTP"] = lean_on
        try:
            gen = gunicorn_server(Path(tmp_path_factory.mktemp(f"lean{lean_on}")), APP, "cu.serve.worker.AocuWorker")
            ports.append(next(gen))
            gens.append(gen)
        finally:
            os.environ.pop("AOCU_LEAN_HTTP")
    yield ports
    for gen in gens:
        next(gen, None)


CLOSE = b"GET /echo?q=end HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def _exchange(port: int, data: bytes) -> bytes:
    """Everything the server sends back for `data` and a last request that closes the connection."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data + CLOSE)
        s.settimeout(10)
        out = io.BytesIO()
        while chunk := s.recv(65536):
            out.write(chunk)
    return _DATE.sub(b"\r\nDate: -\r\n", out.getvalue())


def test_wire_bytes_equal_gunicorns(servers):
    lean_port, gunicorn_port = servers
    # one request per connection, then all of them pipelined on one connection
    for data in [*REQUESTS, b"".join(REQUESTS)]:
        got, want = _exchange(lean_port, data), _exchange(gunicorn_port, data)
        assert got == want and want.startswith(b"HTTP/1.1 "), (data, got, want)
    # the lean path did take the plain requests: the app saw the worker's buffered body
    which = b"POST /which HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nz"
    assert b"\r\n\r\nBytesIO" in _exchange(lean_port, which)
    assert b"\r\n\r\nBody" in _exchange(gunicorn_port, which)
