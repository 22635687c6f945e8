"""`GET /processes` (JSON, paginated) and the status page that `GET /` answers a browser with.

Content negotiation for `GET /`: HTML only for a client whose Accept header names text/html and prefers it to
JSON (a browser); every other client, including one sending no Accept or `*/*` (curl, fetch, aoconnect), gets
the JSON it always got."""

from __future__ import annotations

from flask import Blueprint, Request, Response, current_app, request

from cu.http.processes import decode_cursor, list_processes, parse_limit
from cu.http.routes_attestation import SIGNER_KEY
from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.http.status_page import StatusCache, gather, render

bp = Blueprint("status", __name__)

PAGE_PROCESSES = 20          # the status page lists the most recently active ones, and links the full list
CACHE_KEY = "aocu.status"


def wants_html(req: Request) -> bool:
    accept = req.accept_mimetypes
    named = {m.lower() for m, q in accept if q > 0}
    return "text/html" in named and accept["text/html"] > accept["application/json"]


@bp.get("/processes")
def processes() -> Response:
    st = node()
    limit = parse_limit(request.args.get("limit"))
    raw = request.args.get("cursor")
    before = decode_cursor(raw) if raw else None
    page = list_processes(st, before, limit)
    return Response(dumps(page.to_json()), mimetype="application/json")


def status_html() -> Response:
    st = node()
    cache = current_app.extensions.setdefault(CACHE_KEY, StatusCache())
    page = list_processes(st, None, PAGE_PROCESSES)
    ctx = gather(st, current_app.extensions.get(SIGNER_KEY), cache, page, request.host_url)
    resp = Response(render(ctx), mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Vary"] = "Accept"
    # no script, no outside resources: the page works (and stays safe) with everything but inline CSS refused
    resp.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
    return resp
