"""Forwarding between the nodes of a cluster (`--store postgresql://`, cu/node/cluster.py): a request that
evaluates a process or reads its results is answered by the node that leases the process. This WSGI middleware
finds the process a request names (from the path or `process-id`), asks the cluster where it is handled and
either passes the request to the app or replays it on the owner, returning the owner's response unchanged (its
signature is the owner's: a client can tell which node computed the result by the signature's key, and
`X-Aocu-Forwarded-By` names the node that relayed it). A request that was already forwarded once is answered
here whatever the lease says (no loops). When the owner does not answer, the reply is 503 with Retry-After:
its lease expires within `--lease` seconds and a surviving node takes the process over. Scheduling (`POST /`,
`~process@1.0/schedule`) and log reads are not forwarded: any node does them on the shared store."""

from __future__ import annotations

import http.client
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("aocu.http")

FORWARDED = "X-Aocu-Forwarded-By"
_PATHS = [re.compile(p) for p in (
    r"^/(?:results|cron|state)/(?P<pid>[^/]+)$",
    r"^/monitor/(?P<pid>[^/]+)$",
    r"^/(?P<pid>[^/~]+)~process@1\.0/(?:compute|now|push|as=execution|slot/current)(?:/.*)?$",
    r"^/(?P<pid>[^/~]+)/(?:compute/results=.*|slot/current)$",
)]
_BY_ARG = re.compile(r"^/(?:result/[^/]+|dry-run)$")
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host",
        "content-length"}


def request_pid(path: str, query: str) -> str | None:
    """The process a request is forwarded for (None: answered by any node)."""
    for pat in _PATHS:
        m = pat.match(path)
        if m:
            return urllib.parse.unquote(m.group("pid"))
    if _BY_ARG.match(path):
        got = urllib.parse.parse_qs(query).get("process-id")
        return got[0] if got else None
    return None


class Forwarder:
    def __init__(self, app: Callable, cluster: Any, timeout_s: float) -> None:
        self.app = app
        self.cluster = cluster
        self.timeout_s = timeout_s

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("HTTP_X_AOCU_FORWARDED_BY"):
            return self.app(environ, start_response)
        pid = request_pid(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))
        if pid is None:
            return self.app(environ, start_response)
        try:
            owner = self.cluster.route(pid)
        except Exception as exc:  # noqa: BLE001 - the database is the cluster: without it, say so
            return _reply(start_response, 503, f"cluster store unavailable: {exc}", retry_after=1)
        if owner is None:
            return self.app(environ, start_response)
        return self._forward(environ, start_response, pid, owner)

    def _forward(self, environ: dict, start_response: Callable, pid: str, owner: str) -> Iterable[bytes]:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n > 0 else b""
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items()
                   if k.startswith("HTTP_") and k[5:].replace("_", "-").lower() not in _HOP}
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        headers[FORWARDED] = self.cluster.node_id
        target = urllib.parse.urlsplit(owner)
        path = environ.get("RAW_URI") or urllib.parse.quote(environ.get("PATH_INFO", "")) + (
            "?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        cls = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        conn = cls(target.netloc, timeout=self.timeout_s)
        try:
            conn.request(environ["REQUEST_METHOD"], path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.cluster.forget(pid)
            lease = int(self.cluster.lease_s + 0.999)
            return _reply(start_response, 503, f"process {pid} is leased by node {owner}, which does not answer "
                          f"({exc}); another node takes it over within {lease} s", retry_after=lease)
        finally:
            conn.close()
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
        out += [("Content-Length", str(len(data))), (FORWARDED, self.cluster.node_id)]
        start_response(f"{resp.status} {resp.reason}", out)
        return [data]


def _reply(start_response: Callable, status: int, message: str, *, retry_after: int) -> list[bytes]:
    body = json.dumps({"error": message}).encode()
    start_response(f"{status} {http.client.responses.get(status, '')}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Retry-After", str(retry_after))])
    return [body]


def install(app: Any, cluster: Any, timeout_s: float) -> None:
    """Wraps the Flask app's WSGI callable (outside Flask: the owner's response is not signed again here)."""
    app.wsgi_app = Forwarder(app.wsgi_app, cluster, timeout_s)
