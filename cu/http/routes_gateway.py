"""Gateway subset for the items this node stores: `POST /graphql` transactions(ids: [...]) and `GET /raw/{id}`.

Only the `transactions(ids: ...)` query is answered (what aoconnect's spawn and the legacy CU/SU send);
any other query gets a GraphQL error naming what is supported."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, request

from cu.http import graphql as graphql_parser
from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node import blocks, legacy
from cu.node.errors import BadInput, NotFound
from cu.node.store import ItemMeta

bp = Blueprint("gateway", __name__)

MAX_IDS = 100


def _errors(message: str) -> Response:
    return Response(dumps({"errors": [{"message": message}]}), status=400, mimetype="application/json")


def _node(meta: ItemMeta) -> dict[str, Any]:
    from cu.hashing import b64url
    st = node()
    height = blocks.height(st.config)
    data_size = meta.size
    content_type = next((v for n, v in meta.tags if n.lower() == "content-type"), None)
    return {
        "id": meta.id,
        "anchor": meta.anchor or "",
        "signature": meta.signature,
        "recipient": meta.target or "",
        "owner": {"address": meta.owner, "key": b64url(meta.owner_key)},
        "fee": {"winston": "0", "ar": "0.000000000000"},
        "quantity": {"winston": "0", "ar": "0.000000000000"},
        "data": {"size": str(data_size), "type": content_type},
        "tags": legacy.tags_list(meta.tags),
        # items are not on Arweave: the block is this node's (fixed) height at the item's arrival
        "block": {"id": "", "height": height, "timestamp": meta.created_ms // 1000, "previous": ""},
        "bundledIn": None,
    }


@bp.post("/graphql")
def graphql() -> Response:
    try:
        payload = json.loads(request.get_data(cache=False) or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadInput("GraphQL request body must be JSON") from None
    except RecursionError:
        raise BadInput("GraphQL request body is nested too deeply") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise BadInput("GraphQL request needs a query string")
    query: str = payload["query"]
    variables = payload.get("variables") or {}
    try:
        ids = graphql_parser.requested_ids(query, variables)
    except graphql_parser.QueryError as exc:
        return _errors(str(exc))
    if ids is None:
        return _errors("this node answers only transactions(ids: [...]) queries for the items it stores")
    if len(ids) > MAX_IDS:
        raise BadInput(f"at most {MAX_IDS} ids per query")
    st = node()
    edges = []
    for item_id in ids:
        meta = st.store.item_meta(item_id)
        if meta is not None:
            edges.append({"cursor": item_id, "node": _node(meta)})
    return Response(dumps({"data": {"transactions": {"pageInfo": {"hasNextPage": False}, "edges": edges}}}),
                    mimetype="application/json")


def _header_safe(value: str) -> bool:
    return bool(value) and value.isascii() and value.isprintable()     # no CR/LF/NUL/control characters


@bp.get("/raw/<item_id>")
def raw(item_id: str) -> Response:
    st = node()
    meta = st.store.item_meta(item_id)
    if meta is None:
        raise NotFound(f"{item_id} not found")
    data = st.store.item_data(item_id) or b""
    ctype = next((v for n, v in meta.tags if n.lower() == "content-type"), "application/octet-stream")
    if not _header_safe(ctype):
        ctype = "application/octet-stream"     # a tag werkzeug refuses as a header value (CR/LF/NUL)
    resp = Response(data, content_type=ctype)
    # client-chosen content served from the node's origin: never let a browser run it
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return resp
