"""`aocu processes [--url URL] [--json] [--limit N] [--cursor C]`: a node's processes (its `GET /processes`) as a
table, or the page's JSON as the node answers it. Pure Python (urllib), like the rest of the client side.

Exit codes: 0 listed; 1 the node could not be reached or answered an error (one `aocu: error:` line)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any
from urllib.parse import urlencode

from cu.verify.transport import ResponseFormatError, fetch

DEFAULT_URL = "http://127.0.0.1:6363"
MAX_LIMIT = 500
COLUMNS = ("PROCESS", "ORIGIN", "SLOT", "EVALUATED", "LAST ACTIVITY (UTC)", "WARM", "MODULE")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("processes", help="list a node's processes: slots, last activity, warm, origin")
    p.add_argument("--url", "--node", dest="url", default=os.environ.get("AOCU_URL", DEFAULT_URL), metavar="URL",
                   help=f"the node (default: $AOCU_URL or {DEFAULT_URL})")
    p.add_argument("--json", action="store_true", help="print the node's JSON page instead of a table")
    p.add_argument("--limit", type=_limit, default=100, metavar="N",
                   help=f"processes per page, 1..{MAX_LIMIT} (default 100), most recently active first")
    p.add_argument("--cursor", metavar="C", help="the page after the one that printed this cursor")
    p.set_defaults(func=cmd_processes)


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= n <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_LIMIT}")
    return n


def fetch_page(url: str, *, limit: int = 100, cursor: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """One page of the node's `GET /processes`; ResponseFormatError (one line) when it cannot be had."""
    query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
    target = url.rstrip("/") + "/processes?" + urlencode(query)
    r = fetch(target, headers={"Accept": "application/json"}, timeout=timeout)
    try:
        doc = json.loads(r.body)
    except ValueError:
        doc = None
    if r.status != 200:
        why = doc.get("error") if isinstance(doc, dict) else None
        raise ResponseFormatError(f"{target}: HTTP {r.status}" + (f": {why}" if why else ""))
    if not isinstance(doc, dict) or not isinstance(doc.get("processes"), list):
        raise ResponseFormatError(f"{target}: not a process list (is {url} an aocu node?)")
    return doc


def _when(ms: Any) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return "-"
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ms)


def _cell(v: Any) -> str:
    """Printable and one line: the node's data is shown, never interpreted by the terminal."""
    return "".join(c if c.isprintable() else "?" for c in str(v))


def table(doc: dict[str, Any]) -> str:
    rows = []
    for p in doc["processes"]:
        if not isinstance(p, dict):
            continue
        warm = p.get("warm")
        origin = str(p.get("origin", "?")) + (" (evaluating)" if p.get("evaluating") else "")
        ev = p.get("evaluated_slot")
        rows.append([_cell(p.get("id", "?")), _cell(origin), _cell(p.get("slot", "?")),
                     "-" if ev is None else _cell(ev), _when(p.get("last_activity")),
                     "?" if warm is None else "yes" if warm else "no", _cell(p.get("module", "?"))])
    if not rows:
        return "no processes"
    widths = [max(len(r[i]) for r in [list(COLUMNS), *rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [list(COLUMNS), *rows]]
    return "\n".join(lines)


def cmd_processes(args: argparse.Namespace) -> int:
    doc = fetch_page(args.url, limit=args.limit, cursor=args.cursor)
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(table(doc))
        if doc.get("evaluator"):
            print(f"note: warm state and bridged processes unknown (evaluator: {_cell(doc['evaluator'])})",
                  file=sys.stderr)
    nxt = doc.get("next")
    if nxt and not args.json:
        print(f"more: aocu processes --url {args.url} --limit {args.limit} --cursor {_cell(nxt)}", file=sys.stderr)
    return 0
