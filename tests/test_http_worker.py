"""cu.http.worker.KeepAliveThreadWorker under real gunicorn: kept-alive, pipelined and idle connections."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = '''
import threading
from flask import Flask, request
app = Flask("t")
@app.route("/echo", methods=["GET", "POST"])
def echo():
    return {"thread": threading.get_ident(), "body": request.get_data(as_text=True), "q": request.args.get("q")}
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn_server(tmp_path: Path, app_source: str, worker: str, *extra: str) -> Iterator[int]:
    """gunicorn with one `worker` process (2 threads) serving `app_source` as wapp:app on a free port; yields
    the port, stops the server afterwards."""
    (tmp_path / "wapp.py").write_text(app_source)
    port = _free_port()
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), str(tmp_path)]))
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", worker, *extra,
                             "-w", "1", "--threads", "2", "-b", f"127.0.0.1:{port}", "--keep-alive", "5", "wapp:app"],
                            env=env, cwd=tmp_path, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("gunicorn did not start")
            time.sleep(0.1)
    yield port
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture()
def server(tmp_path: Path):
    yield from gunicorn_server(tmp_path, APP, "cu.http.worker.KeepAliveThreadWorker")


def _responses(sock: socket.socket, n: int) -> list[tuple[int, bytes]]:
    buf = b""
    out: list[tuple[int, bytes]] = []
    sock.settimeout(10)
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(
            b"content-length:"))
        while len(buf) < length:
            buf += sock.recv(65536)
        out.append((int(head[9:12]), buf[:length]))
        buf = buf[length:]
    return out


def _get(q: str) -> bytes:
    return f"GET /echo?q={q} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_back_to_back_requests_on_one_connection(server):
    with socket.create_connection(("127.0.0.1", server)) as s:
        threads = set()
        for i in range(20):
            body = f"b{i}".encode()
            s.sendall(b"POST /echo?q=%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (i, len(body), body))
            ((status, resp),) = _responses(s, 1)
            assert status == 200 and f'"body":"b{i}"'.encode() in resp and f'"q":"{i}"'.encode() in resp
            threads.add(resp.split(b'"thread":')[1].split(b"}")[0])
        assert len(threads) == 1     # served on the thread that answered the previous request


def test_pipelined_requests_are_all_answered_in_order(server):
    with socket.create_connection(("127.0.0.1", server)) as s:
        s.sendall(_get("a") + _get("b") + _get("c"))
        got = _responses(s, 3)
        assert [st for st, _ in got] == [200, 200, 200]
        assert [b'"q":"%s"' % q in body for (_, body), q in zip(got, (b"a", b"b", b"c"), strict=True)] == [True] * 3


def test_idle_connection_goes_back_to_the_poller_and_still_works(server):
    with socket.create_connection(("127.0.0.1", server)) as a, socket.create_connection(("127.0.0.1", server)) as b:
        a.sendall(_get("1"))
        assert _responses(a, 1)[0][0] == 200
        time.sleep(0.2)             # longer than the inline wait: `a` is parked on the poller
        # two threads: both connections are served while `a` idles, and `a` is served again afterwards
        for i in range(3):
            b.sendall(_get(f"b{i}"))
            assert _responses(b, 1)[0][0] == 200
        a.sendall(_get("2"))
        assert b'"q":"2"' in _responses(a, 1)[0][1]


def test_frozen_settings_read_as_gunicorn_reads_them():
    """cu.serve.worker._freeze_settings: after the fork a worker's settings are plain attributes, with the values
    Config.__getattr__ gives; properties of Config stay computed, hooks stay plain functions (not bound)."""
    from gunicorn.config import Config

    from cu.serve.worker import _freeze_settings
    cfg = Config()
    cfg.set("keepalive", 7)
    cfg.set("worker_class", "cu.serve.worker.AocuWorker")
    seen = []
    cfg.set("pre_request", lambda worker, req: seen.append((worker, req)))
    before = {name: getattr(cfg, name) for name in cfg.settings if name not in ("pre_request",)}
    _freeze_settings(cfg)
    assert "keepalive" in vars(cfg) and cfg.keepalive == 7
    assert {name: getattr(cfg, name) for name in before} == before
    assert cfg.worker_class.__name__ == "AocuWorker"      # the property, not the setting's string
    cfg.pre_request("w", "r")
    assert seen == [("w", "r")]
