"""A small linear-time parser for the one GraphQL query the gateway subset answers: `transactions(ids: ...)`.

The query is tokenized once (each character is looked at a bounded number of times: no backtracking regex) and
the first `transactions(...)` field's arguments are parsed with explicit limits on the query length, the token
count, the nesting depth of braces/brackets/parentheses and the number of arguments. Anything over a limit or
malformed raises `QueryError`, which the route answers with 400 `{"errors": [{"message": ...}]}`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cu.codec.hashes import B64URL_CHARS

MAX_QUERY_CHARS = 32 * 1024
MAX_TOKENS = 8192
MAX_DEPTH = 32
MAX_ARGUMENTS = 32
MAX_LIST_ITEMS = 1000

_NAME_START = frozenset("_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_PUNCT = frozenset("!$&()[]{}:=@|")
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_IGNORED = frozenset(" \t\r\n,\ufeff")
_OPERATIONS = frozenset(("query", "mutation", "subscription", "fragment"))


class QueryError(ValueError):
    """The query is malformed or exceeds a limit (the message says which)."""


@dataclass(frozen=True)
class Tok:
    kind: str      # "name" | "punct" | "string" | "number" | "spread"
    value: str


@dataclass(frozen=True)
class Var:
    name: str


def tokenize(query: str, max_chars: int = MAX_QUERY_CHARS) -> list[Tok]:
    if len(query) > max_chars:
        raise QueryError(f"query exceeds {max_chars} characters")
    toks: list[Tok] = []
    depth = 0
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c in _IGNORED:
            i += 1
            continue
        if c == "#":
            j = query.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if len(toks) >= MAX_TOKENS:
            raise QueryError(f"query exceeds {MAX_TOKENS} tokens")
        if c in _NAME_START:
            j = i + 1
            while j < n and query[j] in _NAME_CHARS:
                j += 1
            toks.append(Tok("name", query[i:j]))
            i = j
        elif c in _PUNCT:
            if c in _OPENERS:
                depth += 1
                if depth > MAX_DEPTH:
                    raise QueryError(f"query nesting exceeds depth {MAX_DEPTH}")
            elif c in ")]}":
                depth = max(depth - 1, 0)
            toks.append(Tok("punct", c))
            i += 1
        elif c == "." and query.startswith("...", i):
            toks.append(Tok("spread", "..."))
            i += 3
        elif c == '"':
            value, i = _string(query, i)
            toks.append(Tok("string", value))
        elif c == "-" or c.isdigit():
            j = i + 1
            while j < n and (query[j].isalnum() or query[j] in ".+-"):
                j += 1
            toks.append(Tok("number", query[i:j]))
            i = j
        else:
            raise QueryError(f"unexpected character {c!r} at offset {i}")
    return toks


def _string(query: str, i: int) -> tuple[str, int]:
    """A "..." string starting at query[i] (block strings are not needed by any client of this route)."""
    out: list[str] = []
    j, n = i + 1, len(query)
    while j < n:
        c = query[j]
        if c == '"':
            return "".join(out), j + 1
        if c in "\r\n":
            break
        if c == "\\":
            if j + 1 >= n:
                break
            e = query[j + 1]
            if e == "u":
                hexa = query[j + 2:j + 6]
                if len(hexa) != 4 or any(h not in "0123456789abcdefABCDEF" for h in hexa):
                    raise QueryError(f"bad \\u escape at offset {j}")
                out.append(chr(int(hexa, 16)))
                j += 6
                continue
            out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(e, e))
            j += 2
            continue
        out.append(c)
        j += 1
    raise QueryError(f"unterminated string at offset {i}")


class _Parser:
    def __init__(self, toks: list[Tok]) -> None:
        self.toks = toks
        self.pos = 0

    def peek(self) -> Tok | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> Tok:
        t = self.peek()
        if t is None:
            raise QueryError("unexpected end of query")
        self.pos += 1
        return t

    def expect(self, value: str) -> None:
        t = self.take()
        if t.kind != "punct" or t.value != value:
            raise QueryError(f"expected {value!r}, found {t.value!r}")

    def value(self, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise QueryError(f"argument nesting exceeds depth {MAX_DEPTH}")
        t = self.take()
        if t.kind == "string":
            return t.value
        if t.kind == "number":
            return t.value
        if t.kind == "name":
            return {"true": True, "false": False, "null": None}.get(t.value, t.value)
        if t.kind == "punct" and t.value == "$":
            name = self.take()
            if name.kind != "name":
                raise QueryError("expected a variable name after '$'")
            return Var(name.value)
        if t.kind == "punct" and t.value == "[":
            items: list[Any] = []
            while not self._at("]"):
                if len(items) >= MAX_LIST_ITEMS:
                    raise QueryError(f"a list argument exceeds {MAX_LIST_ITEMS} items")
                items.append(self.value(depth + 1))
            self.expect("]")
            return items
        if t.kind == "punct" and t.value == "{":
            obj: dict[str, Any] = {}
            while not self._at("}"):
                if len(obj) >= MAX_ARGUMENTS:
                    raise QueryError(f"an object argument exceeds {MAX_ARGUMENTS} fields")
                key = self.take()
                if key.kind != "name":
                    raise QueryError(f"expected a field name, found {key.value!r}")
                self.expect(":")
                obj[key.value] = self.value(depth + 1)
            self.expect("}")
            return obj
        raise QueryError(f"unexpected {t.value!r} in an argument value")

    def _at(self, value: str) -> bool:
        t = self.peek()
        if t is None:
            raise QueryError("unexpected end of query")
        return t.kind == "punct" and t.value == value

    def arguments(self) -> dict[str, Any]:
        self.expect("(")
        args: dict[str, Any] = {}
        while not self._at(")"):
            if len(args) >= MAX_ARGUMENTS:
                raise QueryError(f"a field exceeds {MAX_ARGUMENTS} arguments")
            name = self.take()
            if name.kind != "name":
                raise QueryError(f"expected an argument name, found {name.value!r}")
            self.expect(":")
            args[name.value] = self.value()
        self.expect(")")
        return args


def transactions_arguments(query: str, max_chars: int = MAX_QUERY_CHARS) -> dict[str, Any] | None:
    """The arguments of the first `transactions(...)` field of `query` (None: there is none). Variable
    definitions of an operation (`query Q($ids: [ID!]!)`) are skipped, not taken for the field's arguments."""
    toks = tokenize(query, max_chars)
    p = _Parser(toks)
    brace = 0     # selection-set depth: operation keywords count only at the top level
    while p.pos < len(toks):
        t = toks[p.pos]
        if t.kind == "punct" and t.value == "{":
            brace += 1
        elif t.kind == "punct" and t.value == "}":
            brace -= 1
        elif (t.kind == "name" and t.value == "transactions" and p.pos + 1 < len(toks)
              and toks[p.pos + 1] == Tok("punct", "(")):
            p.pos += 1
            return p.arguments()
        elif t.kind == "name" and t.value in _OPERATIONS and brace == 0:
            # skip the operation's name and variable definitions up to its selection set
            while p.pos + 1 < len(toks) and toks[p.pos + 1] != Tok("punct", "{"):
                p.pos += 1
        p.pos += 1
    return None


def _is_id(s: str) -> bool:
    return 1 <= len(s) <= 64 and B64URL_CHARS.issuperset(s)


def requested_ids(query: str, variables: Any, max_chars: int = MAX_QUERY_CHARS) -> list[str] | None:
    """The ids a `transactions(ids: [...] | $var)` query asks for; None when the query asks something else.
    A literal list keeps its string items that look like ids; a variable must name a list (its strings)."""
    args = transactions_arguments(query, max_chars)
    if args is None or "ids" not in args:
        return None
    ids = args["ids"]
    if isinstance(ids, list):
        return [x for x in ids if isinstance(x, str) and _is_id(x)]
    if isinstance(ids, Var):
        if not isinstance(variables, dict):
            return None
        v = variables.get(ids.name)
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else None
    return None
