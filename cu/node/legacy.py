"""Legacy CU message/env/result normalisation (docs/ABI.md, Message, env and result): exact key order, JS-compatible compact JSON."""

from __future__ import annotations

import json
from typing import Any

Tag = tuple[str, str]

# Zod `messageSchema` key order (docs/ABI.md, Message, env and result); JSON.stringify omits undefined keys.
MESSAGE_KEYS: tuple[str, ...] = (
    "Id", "Signature", "Data", "Owner", "Target", "Anchor", "From", "Forwarded-By", "Tags", "Epoch", "Nonce",
    "Timestamp", "Block-Height", "Hash-Chain", "Cron", "Read-Only",
)


def dumps(obj: Any) -> bytes:
    """Compact JSON as JSON.stringify writes it for these shapes (raw UTF-8, lowercase \\u00xx escapes)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def tags_list(tags: list[Tag]) -> list[dict[str, str]]:
    return [{"name": n, "value": v} for n, v in tags]


def first_tag(tags: list[Tag], name: str) -> str | None:
    for n, v in tags:
        if n == name:
            return v
    return None


def text(data: bytes) -> str:
    """The legacy stack hands data to the module as UTF-8 text (lossy for binary)."""
    return data.decode("utf-8", errors="replace")


def scheduled_message(*, msg_id: str, signature: str, data: bytes, owner: str, target: str, anchor: str | None,
                      tags: list[Tag], epoch: int, nonce: int, timestamp: int, block_height: int,
                      hash_chain: str) -> dict[str, Any]:
    """The message object the legacy CU evaluates for a scheduled message or assignment (docs/ABI.md, Message, env and result)."""
    from_process = first_tag(tags, "From-Process")
    msg: dict[str, Any] = {
        "Id": msg_id,
        "Signature": signature,
        "Data": text(data),
        "Owner": owner,
        "Target": target,
    }
    if anchor is not None:
        msg["Anchor"] = anchor
    msg["From"] = from_process if from_process else owner
    if from_process is not None:
        msg["Forwarded-By"] = owner
    msg["Tags"] = [{"name": n, "value": v} for n, v in tags if n not in ("From", "Owner")]
    msg["Epoch"] = epoch
    msg["Nonce"] = nonce
    msg["Timestamp"] = timestamp
    msg["Block-Height"] = block_height
    msg["Hash-Chain"] = hash_chain
    msg["Cron"] = False
    msg["Read-Only"] = False
    return msg


def cron_message(*, owner: str, target: str, tags: list[Tag], timestamp: int, block_height: int) -> dict[str, Any]:
    return {
        "Owner": owner, "Target": target, "From": owner, "Tags": tags_list(tags), "Timestamp": timestamp,
        "Block-Height": block_height, "Cron": True, "Read-Only": False,
    }


def _coerce_number(value: Any, name: str) -> int | float:
    # Zod z.coerce.number(): Number(value); reject what becomes NaN.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        s = value.strip()
        if s == "":
            return 0
        try:
            f = float(s)
        except ValueError:
            raise ValueError(f"{name} must be a number") from None
        return int(f) if f.is_integer() else f
    raise ValueError(f"{name} must be a number")


def dry_run_message(body: Any, *, pid: str, timestamp: int, block_height: int) -> dict[str, Any]:
    """Dry-run message (docs/ABI.md: Message, env and result; Legacy CU/SU/MU API): defaults, then the body, then From and Read-Only; Zod key order."""
    if not isinstance(body, dict):
        raise ValueError("dry-run body must be a JSON object")
    for key in ("Id", "Signature", "Owner", "Target", "Anchor"):
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise ValueError(f"{key} must be a string")
    tags = body.get("Tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(
                isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("value"), str)
                for t in tags):
            raise ValueError("Tags must be a list of {name: string, value: string}")
    merged: dict[str, Any] = {"Timestamp": timestamp, "Block-Height": block_height, "Cron": False, "Target": pid}
    merged.update(body)
    for key in ("Timestamp", "Block-Height"):
        if merged.get(key) is not None:
            merged[key] = _coerce_number(merged[key], key)
    from_process = None
    for t in tags or []:
        if t["name"] == "From-Process":
            from_process = t["value"]
            break
    merged["From"] = from_process or merged.get("Owner")
    merged["Read-Only"] = True
    out: dict[str, Any] = {}
    for key in MESSAGE_KEYS:
        if key in merged and merged[key] is not None:
            out[key] = merged[key]
    if "Tags" in out:
        out["Tags"] = [{"name": t["name"], "value": t["value"]} for t in out["Tags"]
                       if t["name"] not in ("From", "Owner")]
    # Unknown keys are dropped by messageSchema before evaluation, as for scheduled messages.
    return out


def env_object(*, pid: str, process_owner: str, process_tags: list[Tag], module_id: str, module_owner: str,
               module_tags: list[Tag]) -> dict[str, Any]:
    return {
        "Process": {"Id": pid, "Owner": process_owner, "Tags": tags_list(process_tags)},
        "Module": {"Id": module_id, "Owner": module_owner, "Tags": tags_list(module_tags)},
    }


def _as_list(value: Any) -> list[Any]:
    # Lua JSON encoders may emit an empty array as {} (docs/ABI.md, Message, env and result)
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and not value:
        return []
    if value is None:
        return []
    return [value] if not isinstance(value, dict) else list(value.values())


def merge_result(raw: dict[str, Any]) -> dict[str, Any]:
    """The legacy CU's result merge (docs/ABI.md, Message, env and result): lists default [], Output to string/object, Patches dropped."""
    if raw.get("Error") is not None:
        # kept with its JSON type: a table thrown by Lua (`error({code = 1})`) is an object, as the legacy CU
        # stores the value the loader threw
        out: dict[str, Any] = {"Error": raw["Error"]}
        out["Messages"] = []
        out["Spawns"] = []
        out["Assignments"] = []
        out["Output"] = ""
        if "GasUsed" in raw:
            out["GasUsed"] = raw["GasUsed"]
        return out
    output = raw.get("Output", "")
    if output is None:
        output = ""
    elif isinstance(output, bool):
        output = "true" if output else "false"
    elif isinstance(output, int | float):
        output = json.dumps(output)
    elif not isinstance(output, str | dict | list):
        output = str(output)
    out = {
        "Output": output,
        "Messages": _as_list(raw.get("Messages")),
        "Spawns": _as_list(raw.get("Spawns")),
        "Assignments": _as_list(raw.get("Assignments")),
    }
    if "GasUsed" in raw:
        out["GasUsed"] = raw["GasUsed"]
    return out


def result_view(result: dict[str, Any]) -> dict[str, Any]:
    """`/result` body key order as the legacy CU answers: Messages, Assignments, Spawns, Output, GasUsed?, Error?"""
    out: dict[str, Any] = {
        "Messages": result.get("Messages", []),
        "Assignments": result.get("Assignments", []),
        "Spawns": result.get("Spawns", []),
        "Output": result.get("Output", ""),
    }
    if "GasUsed" in result:
        out["GasUsed"] = result["GasUsed"]
    if result.get("Error") is not None:
        out["Error"] = result["Error"]
    return out


def results_node(result: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {
        "Messages": result.get("Messages", []),
        "Assignments": result.get("Assignments", []),
        "Spawns": result.get("Spawns", []),
        "Output": result.get("Output", ""),
    }
    if result.get("Error") is not None:
        node["Error"] = result["Error"]
    if "GasUsed" in result:
        node["GasUsed"] = result["GasUsed"]
    return node
