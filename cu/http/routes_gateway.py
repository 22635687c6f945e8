"""Gateway subset for the items this node stores: `POST /graphql` transactions(ids: [...]) and `GET /raw/{id}`.

Only the `transactions(ids: ...)` query is answered (what aoconnect's spawn and the legacy CU/SU send);
any other query gets a GraphQL error naming what is supported."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, request

from cu.http.routes_ops import dumps
from cu.http.state import node
from cu.node import legacy
from cu.node.errors import BadInput, NotFound
from cu.node.store import ItemMeta

bp = Blueprint("gateway", __name__)

_TX_QUERY = re.compile(r"\btransactions\s*\(([^)]*)\)", re.S)
_IDS_LITERAL = re.compile(r"\bids\s*:\s*\[([^\]]*)\]", re.S)
_IDS_VAR = re.compile(r"\bids\s*:\s*\$(\w+)")
_ID = re.compile(r'"([A-Za-z0-9_-]{1,64})"')
MAX_IDS = 100


def _node(meta: ItemMeta) -> dict[str, Any]:
    from cu.hashing import b64url
    st = node()
    height = st.config.block_height
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
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise BadInput("GraphQL request needs a query string")
    query: str = payload["query"]
    variables = payload.get("variables") or {}
    m = _TX_QUERY.search(query)
    ids: list[str] | None = None
    if m:
        args = m.group(1)
        lit = _IDS_LITERAL.search(args)
        var = _IDS_VAR.search(args)
        if lit:
            ids = _ID.findall(lit.group(1))
        elif var and isinstance(variables, dict):
            v = variables.get(var.group(1))
            ids = [x for x in v if isinstance(x, str)] if isinstance(v, list) else None
    if ids is None:
        return Response(dumps({"errors": [{"message": "this node answers only transactions(ids: [...]) "
                                                      "queries for the items it stores"}]}),
                        status=400, mimetype="application/json")
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


@bp.get("/raw/<item_id>")
def raw(item_id: str) -> Response:
    st = node()
    meta = st.store.item_meta(item_id)
    if meta is None:
        raise NotFound(f"{item_id} not found")
    data = st.store.item_data(item_id) or b""
    ctype = next((v for n, v in meta.tags if n.lower() == "content-type"), "application/octet-stream")
    resp = Response(data, content_type=ctype)
    # client-chosen content served from the node's origin: never let a browser run it
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return resp
