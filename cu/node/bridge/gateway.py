"""Arweave gateway client: GraphQL (`transactions`, `blocks`) and `/raw/{id}` (docs/ABI.md, SU API consumed by the CU, and checkpoints), plus the uploader
used for checkpoints (`POST {uploader}/tx/arweave`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cu.node.bridge.errors import BridgeNotFound, StreamMalformed
from cu.node.bridge.net import HttpClient, RetryPolicy, check_base_url, q

TX_FIELDS = "id signature anchor recipient owner { address key } tags { name value } block { id height timestamp }"

Q_TX_BY_IDS = (
    "query GetTransactions($ids: [ID!]!) { transactions(ids: $ids, first: 100) "
    "{ edges { node { " + TX_FIELDS + " } } } }")

Q_SCHEDULER_LOCATION = (
    "query GetSchedulerLocation($owner: String!) { transactions(owners: [$owner], "
    "tags: [{ name: \"Data-Protocol\", values: [\"ao\"] }, { name: \"Type\", values: [\"Scheduler-Location\"] }], "
    "first: 1, sort: HEIGHT_DESC) { edges { node { " + TX_FIELDS + " } } } }")

Q_CHECKPOINTS = (
    "query GetCheckpoints($owners: [String!], $processId: String!) { transactions(owners: $owners, "
    "tags: [{ name: \"Process\", values: [$processId] }, { name: \"Type\", values: [\"Checkpoint\"] }, "
    "{ name: \"Data-Protocol\", values: [\"ao\"] }], first: 50, sort: HEIGHT_DESC) "
    "{ edges { node { " + TX_FIELDS + " } } } }")

Q_BLOCKS = (
    "query GetBlocks($min: Int!, $max: Int, $after: String) { blocks(height: { min: $min, max: $max }, "
    "first: 100, sort: HEIGHT_ASC, after: $after) { pageInfo { hasNextPage } edges { cursor node { height timestamp } } } }")


@dataclass(frozen=True)
class TxMeta:
    id: str
    signature: str
    anchor: str | None
    recipient: str
    owner_address: str
    owner_key: str
    tags: list[tuple[str, str]]
    block_height: int | None
    block_timestamp: int | None      # seconds (gateway)

    def tag(self, name: str) -> str | None:
        return next((v for n, v in self.tags if n == name), None)


@dataclass(frozen=True)
class Block:
    height: int
    timestamp: int                   # milliseconds (the legacy CU multiplies the gateway's seconds by 1000)


def _tx(node: Any) -> TxMeta:
    if not isinstance(node, dict) or not isinstance(node.get("id"), str):
        raise StreamMalformed("gateway returned a malformed transaction")
    owner = node.get("owner") or {}
    block = node.get("block") or {}
    tags = [(str(t.get("name")), str(t.get("value"))) for t in node.get("tags") or [] if isinstance(t, dict)]
    return TxMeta(id=node["id"], signature=str(node.get("signature") or ""), anchor=node.get("anchor") or None,
                  recipient=str(node.get("recipient") or ""), owner_address=str(owner.get("address") or ""),
                  owner_key=str(owner.get("key") or ""), tags=tags,
                  block_height=int(block["height"]) if block.get("height") is not None else None,
                  block_timestamp=int(block["timestamp"]) if block.get("timestamp") is not None else None)


class GatewayClient:
    def __init__(self, gateway_url: str, graphql_url: str | None = None, uploader_url: str | None = None,
                 policy: RetryPolicy | None = None) -> None:
        self.base = check_base_url(gateway_url, "gateway URL")
        self.graphql_url = check_base_url(graphql_url, "GraphQL URL") if graphql_url else f"{self.base}/graphql"
        self.uploader = check_base_url(uploader_url, "uploader URL") if uploader_url else self.base
        self.http = HttpClient(f"gateway {self.base}", policy)

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        obj = self.http.post_json(self.graphql_url, {"query": query, "variables": variables})
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), dict):
            errs = obj.get("errors") if isinstance(obj, dict) else None
            raise StreamMalformed(f"gateway GraphQL error: {errs!r}"[:500])
        return obj["data"]

    def _edges(self, data: dict[str, Any], root: str) -> list[Any]:
        conn = data.get(root)
        if not isinstance(conn, dict) or not isinstance(conn.get("edges"), list):
            raise StreamMalformed(f"gateway GraphQL answer lacks {root}.edges")
        return conn["edges"]

    def transactions(self, ids: list[str]) -> dict[str, TxMeta]:
        out: dict[str, TxMeta] = {}
        for i in range(0, len(ids), 100):
            data = self.graphql(Q_TX_BY_IDS, {"ids": ids[i:i + 100]})
            for e in self._edges(data, "transactions"):
                tx = _tx(e.get("node") if isinstance(e, dict) else None)
                out[tx.id] = tx
        return out

    def transaction(self, tx_id: str) -> TxMeta:
        tx = self.transactions([tx_id]).get(tx_id)
        if tx is None:
            raise BridgeNotFound(f"transaction {tx_id} not found on gateway {self.base}")
        return tx

    def raw(self, tx_id: str) -> bytes:
        status, data, _ = self.http.request("GET", f"{self.base}/raw/{q(tx_id)}", allow_404=True)
        if status == 404:
            raise BridgeNotFound(f"data of {tx_id} not found on gateway {self.base}")
        return data

    def scheduler_url(self, scheduler_address: str) -> str:
        """The `Url` tag of the latest `Scheduler-Location` record owned by the scheduler wallet."""
        data = self.graphql(Q_SCHEDULER_LOCATION, {"owner": scheduler_address})
        edges = self._edges(data, "transactions")
        if not edges:
            raise BridgeNotFound(f"no Scheduler-Location record for scheduler {scheduler_address}")
        url = _tx(edges[0].get("node")).tag("Url")
        if not url:
            raise StreamMalformed(f"Scheduler-Location record of {scheduler_address} has no Url tag")
        return url

    def checkpoints(self, pid: str, owners: list[str] | None) -> list[TxMeta]:
        data = self.graphql(Q_CHECKPOINTS, {"processId": pid, "owners": owners or None})
        return [_tx(e.get("node")) for e in self._edges(data, "transactions") if isinstance(e, dict)]

    def blocks(self, min_height: int, max_timestamp_ms: int) -> list[Block]:
        """Blocks from `min_height` up to the first one past `max_timestamp_ms`, ascending."""
        out: list[Block] = []
        after: str | None = None
        while True:
            data = self.graphql(Q_BLOCKS, {"min": min_height, "max": None, "after": after})
            conn = data.get("blocks")
            if not isinstance(conn, dict) or not isinstance(conn.get("edges"), list):
                raise StreamMalformed("gateway GraphQL answer lacks blocks.edges")
            for e in conn["edges"]:
                try:
                    n = e["node"]
                    out.append(Block(int(n["height"]), int(n["timestamp"]) * 1000))
                except (KeyError, TypeError, ValueError):
                    raise StreamMalformed("gateway returned a malformed block") from None
                after = e.get("cursor")
            if not conn["edges"] or not (conn.get("pageInfo") or {}).get("hasNextPage") \
                    or out[-1].timestamp > max_timestamp_ms:
                return out

    def upload(self, raw_item: bytes) -> str:
        _, data, _ = self.http.request("POST", f"{self.uploader}/tx/arweave", body=raw_item,
                                       headers={"Content-Type": "application/octet-stream"})
        return data.decode("utf-8", "replace")

    def confirmations(self, tx_id: str) -> int | None:
        """`GET /tx/{id}/status` -> number_of_confirmations; None while the gateway has it pending or not at all
        (404/202, as Arweave answers for a transaction not mined yet)."""
        status, data, _ = self.http.request("GET", f"{self.base}/tx/{q(tx_id)}/status", allow_404=True,
                                            headers={"Accept": "application/json"})
        if status != 200:
            return None
        try:
            n = json.loads(data).get("number_of_confirmations")
        except (ValueError, AttributeError):
            raise StreamMalformed(f"gateway {self.base} answered /tx/{tx_id}/status with malformed JSON") from None
        if isinstance(n, bool) or not isinstance(n, int):
            raise StreamMalformed(f"gateway {self.base}: /tx/{tx_id}/status lacks number_of_confirmations")
        return n

    def current_block(self) -> Block:
        """The gateway's current block: `GET /block/current` (height, timestamp in seconds)."""
        obj = self.http.get_json(f"{self.base}/block/current")
        try:
            return Block(int(obj["height"]), int(obj["timestamp"]) * 1000)
        except (TypeError, KeyError, ValueError):
            raise StreamMalformed(f"gateway {self.base}: /block/current lacks height/timestamp") from None
