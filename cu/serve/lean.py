"""The lean request path of `aocu serve`'s gunicorn worker (cu/serve/worker.py): a plain HTTP/1.1 request that the
worker's poller has already read whole is parsed here, given to the app with the environ gunicorn would build
for it, and answered with the bytes gunicorn's Response would send, in one write.

Why: gunicorn's request parser, environ builder and Response object cost about a third of a worker's CPU per
message round trip (bench/node.py); the two requests of that round trip are short and regular.

What it takes is deliberately narrow; everything else goes to gunicorn unchanged (nothing is consumed):
- a request line `GET|POST <origin-form target> HTTP/1.1` of printable ASCII, without `%` or `#` in the path
  and not starting with `//` (so gunicorn's PATH_INFO is the path as sent), within `limit_request_line`;
- header fields whose names are in `HEADERS` (no proxy, scheme, framing, expectation or upgrade headers), each
  at most once, values of visible ASCII, spaces and tabs, within gunicorn's field limits; `Connection` only
  `keep-alive`; a `Content-Length` of digits, and the whole body already buffered;
- a worker without TLS, PROXY protocol, HTTP/2 cleartext, access log, `pre_request`/`post_request` hooks or a
  SCRIPT_NAME.
An answer with a `Content-Length` matching its body, a 2xx-5xx status other than 204/304, no hop-by-hop headers
and header values gunicorn accepts as they are is written here; any other answer is handed to gunicorn's own
Response, which frames it (chunked, no body, errors) exactly as on the gunicorn path.
tests/test_serve_lean.py compares environs and raw responses with gunicorn's."""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn import SERVER, SERVER_SOFTWARE
from gunicorn.http.message import TOKEN_RE
from gunicorn.http.wsgi import FileWrapper, Response, WSGIErrorsWrapper, _make_early_hints_callback
from gunicorn.util import http_date

# header name (lowercase) -> environ key; any other header sends the request to gunicorn's parser
HEADERS: dict[str, str] = {n: "HTTP_" + n.upper().replace("-", "_") for n in (
    "host", "accept", "accept-encoding", "accept-language", "user-agent", "connection", "origin", "referer",
    "cache-control", "pragma", "dnt", "priority", "sec-fetch-mode", "sec-fetch-site", "sec-fetch-dest",
    "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform")}
HEADERS["content-type"] = "CONTENT_TYPE"
HEADERS["content-length"] = "CONTENT_LENGTH"
_TARGET = re.compile(r"/(?!/)[\x21-\x22\x24\x26-\x7e]*(?:\?[\x21-\x22\x24-\x7e]*)?")  # no '#'; no '%' in path
_BAD_HEAD = re.compile(r"[^\t\r\n\x20-\x7e]")
_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                  "transfer-encoding", "upgrade"))
_BAD_OUT = re.compile(r"[^ \t\x21-\x7e\x80-\xff]")     # outside gunicorn's HEADER_VALUE_RE
_STATUS = re.compile(r"([2-5][0-9][0-9])(?: [ \t\x21-\x7e]*)?")
_NOT_TAKEN = None


def usable(worker: Any) -> bool:
    """Whether `worker`'s settings leave nothing for gunicorn to do on a plain request that this path skips."""
    cfg = worker.cfg
    defaults = cfg.settings
    return (not cfg.is_ssl and _off(cfg.proxy_protocol) and _off(getattr(cfg, "http2_cleartext", False))
            and not getattr(worker.log, "access_log_enabled", True)
            and cfg.pre_request is defaults["pre_request"].default
            and cfg.post_request is defaults["post_request"].default
            and not os.environ.get("SCRIPT_NAME")
            and getattr(cfg, "protocol", "http") == "http"
            and not any(h.lower() in HEADERS for h in cfg.secure_scheme_headers)
            and not any(h.lower() in HEADERS for h in cfg.forwarder_headers))


def _off(setting: Any) -> bool:
    return str(setting).lower() in ("off", "false", "none", "0", "")


class _Req:
    """What gunicorn's Response (the fallback writer) and the early-hints callback read of a request."""

    version = (1, 1)
    body = None

    def __init__(self, method: str, uri: str, query: str) -> None:
        self.method, self.uri, self.query = method, uri, query

    def should_close(self) -> bool:
        return False        # HTTP/1.1 without `Connection: close` (a condition of the lean path)


class _Reply:
    """start_response's record of the answer."""

    __slots__ = ("status", "headers", "written", "headers_sent")

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.written: list[bytes] = []
        self.headers_sent = False        # read by the early-hints callback: nothing is sent before the end

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        if exc_info is None and self.status is not None:
            raise AssertionError("Response headers already set!")
        self.status, self.headers = status, headers
        return self.written.append


def connection_keys(env: dict, sock: Any, client: Any, server: Any) -> None:
    """The environ keys gunicorn's wsgi.create takes from the connection (a plain-HTTP, non-proxied one)."""
    env["gunicorn.socket"] = sock
    env["wsgi.url_scheme"] = "http"
    if isinstance(client, str):
        env["REMOTE_ADDR"] = client
    elif isinstance(client, bytes):
        env["REMOTE_ADDR"] = client.decode()
    else:
        env["REMOTE_ADDR"], env["REMOTE_PORT"] = client[0], str(client[1])
    if isinstance(server, str):
        parts = server.split(":")
        if len(parts) == 1:           # a Unix socket: from the Host header, as gunicorn does
            host = env.get("HTTP_HOST")
            parts = host.split(":") if host else parts
            if len(parts) == 1:
                parts.append(80 if host else "")
        server = parts
    env["SERVER_NAME"], env["SERVER_PORT"] = server[0], str(server[1])


class LeanHttp:
    def __init__(self, worker: Any) -> None:
        cfg = worker.cfg
        self.worker = worker
        self.cfg = cfg
        self.base = {"wsgi.errors": WSGIErrorsWrapper(cfg), "wsgi.version": (1, 0), "wsgi.multithread": True,
                     "wsgi.multiprocess": cfg.workers > 1, "wsgi.run_once": False, "wsgi.file_wrapper": FileWrapper,
                     "wsgi.input_terminated": True, "SERVER_SOFTWARE": SERVER_SOFTWARE}
        self.max_line = cfg.limit_request_line
        self.max_fields = cfg.limit_request_fields
        self.max_field = cfg.limit_request_field_size
        self._date = (0, "")
        self._names: set[str] = set()      # answer header names already checked (not Content-Length)

    def date(self) -> str:
        now = int(time.time())     # gunicorn's http_date formats whole seconds
        if self._date[0] != now:
            self._date = (now, http_date(now))
        return self._date[1]

    # -- request -------------------------------------------------------------------------------------------
    def parse(self, buf: bytes) -> tuple[dict, int] | None:
        """(environ without the connection's keys, bytes the request takes) of the plain request at the start
        of `buf`, or None when it is not one this path takes or not all of it is in `buf`."""
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        try:
            head = buf[:end].decode("ascii")
        except UnicodeDecodeError:
            return None
        # printable ASCII and tabs only, lines ended by CRLF (no bare CR or LF)
        if _BAD_HEAD.search(head) or head.count("\r") != head.count("\n") or head.count("\r\n") != head.count("\n"):
            return None
        lines = head.split("\r\n")
        line = lines[0]
        if 0 < self.max_line < len(line) + 2:     # gunicorn counts the request line with its CRLF
            return None
        method, _, rest = line.partition(" ")
        target, _, version = rest.partition(" ")
        if method not in ("GET", "POST") or version != "HTTP/1.1" or not _TARGET.fullmatch(target):
            return None
        if len(lines) - 1 > self.max_fields:
            return None
        env = dict(self.base)
        path, _, query = target.partition("?")
        env.update(REQUEST_METHOD=method, QUERY_STRING=query, RAW_URI=target, SERVER_PROTOCOL="HTTP/1.1",
                   PATH_INFO=path, SCRIPT_NAME="")
        max_field = self.max_field
        for field in lines[1:]:
            name, colon, value = field.partition(":")
            # a listed name (so a token), each at most once
            key = HEADERS.get(name.lower())
            if key is None or not colon or key in env or len(field) + 2 > max_field > 0:
                return None
            env[key] = value.strip(" \t")
        if env.get("HTTP_CONNECTION", "keep-alive").lower() != "keep-alive":
            return None
        length = env.get("CONTENT_LENGTH")
        n = 0
        if length is not None:
            if not length.isdigit() or len(length) > 12:
                return None
            n = int(length)
        start = end + 4
        if len(buf) < start + n:
            return None
        env["wsgi.input"] = io.BytesIO(buf[start:start + n])
        return env, start + n

    # -- one request on a connection -------------------------------------------------------------------------
    def serve(self, conn: Any) -> bool | None:
        """Answers the next request of `conn` (an initialised HTTP/1.x connection of the worker) when it is a
        plain one already received: whether to keep the connection. None: not taken, nothing consumed."""
        unreader = conn.parser.unreader
        buf = unreader.take_buffered()
        if not buf:
            try:
                buf = conn.sock.recv(65536, socket.MSG_DONTWAIT)
            except OSError:
                buf = b""
            if not buf:
                return _NOT_TAKEN
        parsed = self.parse(buf)
        if parsed is None:
            unreader.unread(buf)
            return _NOT_TAKEN
        env, used = parsed
        if used < len(buf):
            unreader.unread(buf[used:])
        conn.parser.mesg = None       # the previous request (if any) was read whole: nothing to drain
        try:
            return self._answer(conn, env)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.worker.log.exception("Socket error processing request.")
            return False

    def _answer(self, conn: Any, env: dict) -> bool:
        worker, sock, client = self.worker, conn.sock, conn.client
        connection_keys(env, sock, client, conn.server)
        reply = _Reply()
        req = _Req(env["REQUEST_METHOD"], env["RAW_URI"], env["QUERY_STRING"])
        env["wsgi.early_hints"] = _make_early_hints_callback(req, sock, reply)
        worker.nr += 1
        close = False
        if worker.nr >= worker.max_requests:
            if worker.alive:
                worker.log.info("Autorestarting worker after current request.")
                worker.alive = False
            close = True
        if not worker.alive or not self.cfg.keepalive or len(worker.keepalived_conns) >= worker.max_keepalived:
            close = True
        try:
            respiter = worker.wsgi(env, reply.start_response)
            try:
                chunks = reply.written + [c for c in respiter]
            finally:
                if hasattr(respiter, "close"):
                    respiter.close()
        except Exception as exc:  # noqa: BLE001 - as gunicorn's handle(): its 500 answer, connection closed
            worker.handle_error(req, sock, client, exc)
            return False
        try:
            data = self._fast_bytes(reply, chunks, close)
        except TypeError:     # not str headers or bytes chunks: gunicorn's Response answers them
            data = None
        if data is None:
            return self._gunicorn_write(conn, req, reply, chunks, close)
        sock.sendall(data)
        return not close

    def _fast_bytes(self, reply: _Reply, chunks: list[bytes], close: bool) -> bytes | None:
        """The bytes gunicorn's Response would send for this answer, or None when it needs its framing."""
        status = reply.status
        if status is None or not _STATUS.fullmatch(status) or status[:3] in ("204", "304"):
            return None
        length = None
        names = self._names
        values = []
        out = [f"HTTP/1.1 {status}\r\nServer: {SERVER}\r\nDate: {self.date()}\r\n"
               f"Connection: {'close' if close else 'keep-alive'}\r\n"]
        for name, value in reply.headers:
            if name not in names:          # a token gunicorn passes on as it is: checked once per name
                if not (isinstance(name, str) and TOKEN_RE.fullmatch(name)) or name.lower() in _HOP:
                    return None
                if name.lower() == "content-length":
                    if length is not None or not (isinstance(value, str) and value.isascii() and value.isdigit()):
                        return None
                    length = int(value)
                elif len(names) < 256:
                    names.add(name)
            if type(value) is not str:
                return None
            value = value.strip(" \t")     # as gunicorn sends it
            values.append(value)
            out.append(f"{name}: {value}\r\n")
        if length is None:
            return None
        if _BAD_OUT.search("\t".join(values)):     # a value outside gunicorn's grammar: its error answer
            return None
        try:
            body = b"".join(chunks)
        except TypeError:
            return None
        if len(body) != length:
            return None
        out.append("\r\n")
        try:
            return "".join(out).encode("latin-1") + body
        except UnicodeEncodeError:
            return None

    def _gunicorn_write(self, conn: Any, req: _Req, reply: _Reply, chunks: Iterable[bytes], close: bool) -> bool:
        resp = Response(req, conn.sock, self.cfg)
        if close:
            resp.force_close()
        try:
            if reply.status is None:
                raise AssertionError("the application did not call start_response")
            resp.start_response(reply.status, reply.headers)
            for c in chunks:
                resp.write(c)
            resp.close()
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - a header gunicorn refuses: its 500, as on its own path
            if resp.headers_sent:
                self.worker.log.exception("Error handling request")
                return False
            self.worker.handle_error(req, conn.sock, conn.client, exc)
            return False
        return not resp.should_close()
