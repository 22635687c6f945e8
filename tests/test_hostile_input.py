"""Hostile input on the HTTP routes: the GraphQL parser's complexity and limits, 400/413/422 where a 500 used to
answer (int64 overflow in SQLite, deep JSON, header injection through a Content-Type tag, chunked bodies over the
limit, a module whose memory minimum is over its Memory-Limit), and a fuzz of the GET routes' parameters."""

from __future__ import annotations

import base64
import io
import json
import re
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.http import create_app, cursors
from cu.http import graphql as gql
from cu.node.errors import BadInput
from tests.wat.gen import build

BIG = 2**70


def _module_tags(memory_limit: str, content_type: str = "application/wasm") -> list[tuple[str, str]]:
    return [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
            ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", memory_limit),
            ("Compute-Limit", "9000000000000"), ("Content-Type", content_type)]


class Node:
    def __init__(self, tmp) -> None:
        self.app = create_app({"data_dir": tmp / "node", "evaluator": "embedded", "tee": "none"})
        self.client = self.app.test_client()
        self.wallet = ArweaveWallet.generate()
        self.module = self.post(DataItem.create(self.wallet, data=build("f2"), tags=_module_tags("512-mb")))
        self.pid = self.spawn(self.module)
        self.msg = self.post(DataItem.create(self.wallet, data=b"c", tags=[
            ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Eval")], target=self.pid))
        # 64 pages (4 MiB) initial memory under a 1 MiB Memory-Limit: the instance cannot be created
        self.big_module = self.post(DataItem.create(self.wallet, data=build("f2", initial_pages=64),
                                                    tags=_module_tags("1-mb")))
        self.big_pid = self.spawn(self.big_module)
        self.evil_ct = self.post(DataItem.create(self.wallet, data=b"\0asm\1\0\0\0",
                                                 tags=_module_tags("512-mb", "text/html\r\nX-Injected: 1")))

    def post(self, item: DataItem) -> str:
        r = self.client.post("/", data=item.to_bytes())
        assert r.status_code == 202, r.data
        return item.id

    def spawn(self, module_id: str) -> str:
        return self.post(DataItem.create(self.wallet, data=b"", tags=[
            ("Data-Protocol", "ao"), ("Type", "Process"), ("Module", module_id)]))


@pytest.fixture(scope="module")
def n(tmp_path_factory):
    node = Node(tmp_path_factory.mktemp("hostile"))
    yield node
    node.app.extensions["aocu"].dispatcher.stop()


def _b64(obj: object) -> str:
    return base64.b64encode(obj if isinstance(obj, bytes) else json.dumps(obj).encode()).decode()


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# -- GraphQL ----------------------------------------------------------------------------------------------------

_OLD_TX = re.compile(r"\btransactions\s*\(([^)]*)\)", re.S)
_OLD_LIT = re.compile(r"\bids\s*:\s*\[([^\]]*)\]", re.S)
_OLD_VAR = re.compile(r"\bids\s*:\s*\$(\w+)")
_OLD_ID = re.compile(r'"([A-Za-z0-9_-]{1,64})"')


def _old_ids(query: str, variables: dict) -> list[str] | None:
    """The regex parsing this route used before (quadratic on hostile input; fine on these queries)."""
    m = _OLD_TX.search(query)
    if not m:
        return None
    lit, var = _OLD_LIT.search(m.group(1)), _OLD_VAR.search(m.group(1))
    if lit:
        return _OLD_ID.findall(lit.group(1))
    if var:
        v = variables.get(var.group(1))
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else None
    return None


SUPPORTED = [
    ("query GetTransactions ($transactionIds: [ID!]!) { transactions(ids: $transactionIds) "
     "{ edges { node { owner { address } tags { name value } block { id height timestamp } } } } }",
     {"transactionIds": ["abc", "def_-1"]}),
    ("query GetTransactions($transactionIds: [ID!]!) {\n  transactions(\n    ids: $transactionIds\n  ) {\n"
     "    edges { node { id } }\n  }\n}", {"transactionIds": ["x" * 43]}),
    ('{ transactions(ids: ["aaa", "missing"]) { edges { node { id } } } }', {}),
    ('{ transactions(ids: ["aaa", "not an id!", "b"], first: 10) { edges { node { id } } } }', {}),
    ('query { transactions(first: 1, ids: ["' + "z" * 64 + '", "' + "y" * 65 + '"]) { edges { cursor } } }', {}),
    ("# a comment\n{ transactions(ids: $v) { edges { node { id } } } }", {"v": ["a", 1, None, "b"]}),
    ("{ transactions(ids: $v) { edges { node { id } } } }", {"v": "not a list"}),
    ("{ transactions(ids: $v) { edges { node { id } } } }", {}),
    ("{ blocks { edges { node { id } } } }", {}),
    ('{ transactions(owners: ["x"], tags: [{name: "Type", values: ["Scheduler-Location"]}], first: 1) '
     "{ edges { node { id } } } }", {}),
    ("{ transactions { edges { node { id } } } }", {}),
    ('transactions(ids: ["bare"])', {}),
    ('}}} { transactions(ids: ["a"]) { id } }', {}),
]


@pytest.mark.parametrize("query,variables", SUPPORTED)
def test_graphql_parser_answers_what_the_regex_answered(query, variables):
    assert gql.requested_ids(query, variables) == _old_ids(query, variables)


def test_graphql_operation_variables_are_not_the_fields_arguments():
    q = "query transactions($ids: [ID!]!) { transactions(ids: $ids) { edges { node { id } } } }"
    assert _old_ids(q, {"ids": ["a"]}) == []                # the regex read `$ids: [ID!]` as a literal list
    assert gql.requested_ids(q, {"ids": ["a"]}) == ["a"]


def test_graphql_route_keeps_its_answers(n):
    c = n.client
    q = SUPPORTED[0][0]
    g = c.post("/graphql", json={"query": q, "variables": {"transactionIds": [n.module, "missing"]}})
    assert g.status_code == 200 and [e["node"]["id"] for e in g.json["data"]["transactions"]["edges"]] == [n.module]
    lit = c.post("/graphql", json={"query": f'{{ transactions(ids: ["{n.pid}", "nope"]) {{ edges {{ node {{ id }} }} }} }}'})
    assert [e["node"]["id"] for e in lit.json["data"]["transactions"]["edges"]] == [n.pid]
    bad = c.post("/graphql", json={"query": "{ blocks { edges { node { id } } } }"})
    assert bad.status_code == 400 and "transactions(ids" in bad.json["errors"][0]["message"]


def test_graphql_hostile_query_is_refused_fast_and_linearly(n):
    def post(k: int):
        r = n.client.post("/graphql", json={"query": "transactions(" * k})
        assert r.status_code == 400 and r.json["errors"][0]["message"]
    t0 = time.perf_counter()
    post(40000)                     # the 416 KB request that burnt 83 s of CPU
    assert time.perf_counter() - t0 < 2.0
    t1, t2 = _best(lambda: post(20000)), _best(lambda: post(40000))
    assert t2 < 3 * t1 + 0.05
    # under the caps: deep nesting, too many arguments, too many tokens
    for query in ("{ " * 40 + "}" * 40, "{ transactions(" + " ".join(f"a{i}: 1" for i in range(40)) + ") { id } }",
                  "{ transactions(ids: [" + '"a" ' * 9000 + "]) { id } }"):
        r = n.client.post("/graphql", json={"query": query})
        assert r.status_code == 400 and "exceed" in r.json["errors"][0]["message"]


@pytest.mark.parametrize("make", [
    lambda k: "transactions(" + " " * k,
    lambda k: '{ transactions(ids: ["' + "a" * k,            # an unterminated string
    lambda k: "{ transactions(ids: [\n" + "# comment\n" * (k // 10),
    lambda k: "transactions(" * (k // 13),
])
def test_graphql_parser_time_is_linear(make):
    small, large = make(200_000), make(400_000)

    def parse(q: str):
        try:
            gql.requested_ids(q, {}, max_chars=10**7)
        except gql.QueryError:
            pass
    t1, t2 = _best(lambda: parse(small)), _best(lambda: parse(large))
    assert t2 < 2.0 and t2 < 3 * t1 + 0.05


_GQL_PIECES = st.sampled_from(["transactions", "(", ")", "{", "}", "[", "]", "ids", ":", "$", "v", '"abc"', '"',
                               "\\", "\\u00", "#", "\n", " ", ",", "...", "query", "Q", "1", "-2.5e3", "true",
                               "null", "!", "@", "=", "|", "&", "é", "\x00"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_GQL_PIECES, st.text(max_size=5)), max_size=60),
       st.one_of(st.none(), st.dictionaries(st.sampled_from(["v", "ids"]),
                                            st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5))))))
def test_graphql_parser_fuzz(pieces, variables):
    try:
        out = gql.requested_ids("".join(pieces), variables)
    except gql.QueryError as exc:
        assert str(exc)
        return
    assert out is None or all(isinstance(x, str) for x in out)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_GQL_PIECES, max_size=40), st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                                      st.dictionaries(st.text(max_size=3), st.text(max_size=3))))
def test_graphql_route_fuzz(n, pieces, variables):
    r = n.client.post("/graphql", json={"query": "".join(pieces), "variables": variables})
    assert r.status_code in (200, 400), r.data
    if r.status_code == 400:
        assert r.json.get("errors") or r.json.get("error")


# -- 500 where a 4xx belongs -----------------------------------------------------------------------------------

def test_slot_beyond_int64_is_400(n):
    for slot in ("9999999999999999999", str(BIG), "9" * 5000):
        r = n.client.get(f"/{n.pid}~process@1.0/compute?slot={slot}")
        assert r.status_code == 400 and "out of range" in r.json["error"]
    assert n.client.get(f"/{n.pid}~process@1.0/compute?slot=²").status_code == 400
    assert n.client.get(f"/{n.pid}~process@1.0/compute?slot=9223372036854775807").status_code == 404


@pytest.mark.parametrize("bound", [
    str(BIG), str(-BIG), _b64({"timestamp": BIG, "ordinate": "1"}), _b64({"timestamp": 1, "ordinate": str(BIG)}),
    _b64(b'{"timestamp": 1e999, "ordinate": "1"}'), _b64(b'{"timestamp": 1, "ordinate": -1e999}'),
])
def test_results_cursor_out_of_range_is_400(n, bound):
    for param in ("from", "to"):
        r = n.client.get(f"/results/{n.pid}", query_string={param: bound})
        assert r.status_code == 400 and "out of range" in r.json["error"], r.data


def test_cursor_decode_bounds():
    assert cursors.decode(str((1 << 63) - 1)).timestamp == (1 << 63) - 1
    for bad in (str(1 << 63), _b64({"timestamp": 1, "ordinate": 1 << 63}), _b64(b'{"timestamp": NaN, "ordinate": 1}'),
                "²", "x" * 2000, _b64(b"[" * 5000)):
        with pytest.raises(BadInput):
            cursors.decode(bad)


def test_su_page_bounds_out_of_range_is_400(n):
    for param in ("from", "to"):
        r = n.client.get(f"/{n.pid}", query_string={param: str(BIG)})
        assert r.status_code == 400 and "out of range" in r.json["error"]
    assert n.client.get(f"/{n.pid}", query_string={"from": str((1 << 63) - 1)}).status_code == 200


def test_deep_json_is_400(n):
    deep = b"[" * 100_000 + b"]" * 100_000
    r = n.client.post(f"/dry-run?process-id={n.pid}", data=deep, content_type="application/json")
    assert r.status_code == 400 and "nested too deeply" in r.json["error"]
    body = b'{"query": "{ transactions(ids: $v) { id } }", "variables": ' + deep + b"}"
    r = n.client.post("/graphql", data=body, content_type="application/json")
    assert r.status_code == 400 and "nested too deeply" in r.json["error"]


def test_raw_content_type_with_crlf_is_served_as_octet_stream(n):
    r = n.client.get(f"/raw/{n.evil_ct}")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/octet-stream"
    assert "X-Injected" not in r.headers and r.data == b"\0asm\1\0\0\0"
    assert n.client.get(f"/raw/{n.module}").headers["Content-Type"] == "application/wasm"


def test_memory_minimum_over_memory_limit_is_422(n):
    for r in (n.client.get(f"/{n.big_pid}~process@1.0/compute?slot=0"),
              n.client.post(f"/dry-run?process-id={n.big_pid}", json={"Tags": []})):
        assert r.status_code == 422, r.data
        assert "memory minimum" in r.json["error"] and "exceeds memory limits" in r.json["error"]


def test_chunked_body_over_the_limit_is_413(tmp_path):
    app = create_app({"data_dir": tmp_path / "node", "evaluator": "embedded", "tee": "none", "max_body": 4096,
                      "eager": False})
    try:
        c = app.test_client()
        # gunicorn marks its chunked streams terminated (werkzeug then reads them without a Content-Length)
        env = {"wsgi.input_terminated": True}
        r = c.post("/", input_stream=io.BytesIO(b"x" * 10_000), headers={"Transfer-Encoding": "chunked"},
                   environ_overrides=env)
        assert r.status_code == 413 and "exceeds the limit of 4096 bytes" in r.json["error"]
        item = DataItem.create(ArweaveWallet.generate(), data=b"\0asm\1\0\0\0", tags=_module_tags("512-mb"))
        r = c.post("/", input_stream=io.BytesIO(item.to_bytes()), headers={"Transfer-Encoding": "chunked"},
                   environ_overrides=env)
        assert r.status_code == 202 and r.json["id"] == item.id
        r = c.post("/", data=b"x" * 10_000)          # with a Content-Length: werkzeug's own 413
        assert r.status_code == 413
    finally:
        app.extensions["aocu"].dispatcher.stop()


# -- fuzz of the GET routes' parameters ------------------------------------------------------------------------

_NUMS = st.one_of(st.integers(min_value=-BIG, max_value=BIG), st.sampled_from([2**63, 2**63 - 1, -2**63 - 1, 10**20]))
_VALUES = st.one_of(
    st.none(), st.text(max_size=30), _NUMS.map(str),
    st.sampled_from(["", "1e999", "-1e999", "NaN", "-0", "²", "٣", "0x10", " 1", "ASC", "desc", "%00"]),
    st.builds(lambda ts, o, cron: _b64({"timestamp": ts, "ordinate": o, **({"cron": cron} if cron else {})}),
              st.one_of(_NUMS, st.floats(allow_nan=True), st.text(max_size=5), st.none()),
              st.one_of(_NUMS.map(str), _NUMS, st.floats(), st.text(max_size=5)), st.one_of(st.none(), st.text(max_size=5))),
    st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(route=st.sampled_from(["results", "cron", "su", "su-one", "compute", "now", "result", "latest", "processes",
                              "compute-results"]),
       which_pid=st.sampled_from(["pid", "msg", "big", "text"]), pid_text=st.text(min_size=1, max_size=20),
       path=st.lists(st.one_of(st.text(min_size=1, max_size=8), st.sampled_from(["results", "0", "-1", "99999999999999999999", "cache"])),
                     max_size=3),
       params=st.dictionaries(st.sampled_from(["from", "to", "limit", "sort", "slot", "process-id", "no-busy"]),
                              _VALUES, max_size=4))
def test_legacy_get_routes_never_answer_5xx(n, route, which_pid, pid_text, path, params):
    pid = {"pid": n.pid, "msg": n.msg, "big": n.big_pid, "text": pid_text}[which_pid]
    p = quote(pid, safe="")
    tail = "/".join(quote(s, safe="") for s in path)
    url = {"results": f"/results/{p}", "cron": f"/cron/{p}", "su": f"/{p}", "su-one": f"/{quote(n.msg)}",
           "compute": f"/{p}~process@1.0/compute" + (f"/{tail}" if tail else ""),
           "now": f"/{p}~process@1.0/now" + (f"/{tail}" if tail else ""), "result": f"/result/{p}",
           "latest": f"/{p}/latest", "processes": f"/processes/{p}",
           "compute-results": f"/{p}/compute/results={quote(path[0], safe='') if path else '0'}"}[route]
    qs = {k: v for k, v in params.items() if v is not None}
    if route == "su-one":
        qs.setdefault("process-id", pid)
    r = n.client.get(url, query_string=qs)
    event(f"{route} {r.status_code}")
    if which_pid == "big" and r.status_code == 422:
        return          # the process that cannot be instantiated
    assert r.status_code < 500, (url, qs, r.status_code, r.data[:300])


# -- fuzz of every route: methods, path parameters, query, headers and bodies ------------------------------------

_ROUTES = [  # (methods, path template); {p}: a process id, {m}: a message id, {x}: free text
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/~attestation@1.0/evidence"),
    ("GET", "/~meta@1.0/info"), ("GET", "/~meta@1.0/info/{x}"), ("POST", "/{p}~process@1.0/schedule"),
    ("GET", "/~message@1.0/{m}"), ("GET", "/{p}~process@1.0/compute"), ("GET", "/{p}~process@1.0/compute/{x}"),
    ("GET", "/{p}~process@1.0/now"), ("GET", "/{p}~process@1.0/now/{x}"), ("POST", "/push"),
    ("POST", "/{p}~process@1.0/push"), ("GET POST", "/{p}/compute/results={x}"),
    ("GET POST", "/{p}~process@1.0/compute/results={x}"), ("GET POST", "/{p}/slot/current"),
    ("GET POST", "/{p}~process@1.0/slot/current"), ("GET POST", "/{p}~process@1.0/as=execution/compute{x}"),
    ("GET", "/~outbox@1.0/{p}"), ("GET", "/processes"), ("POST", "/graphql"), ("GET", "/raw/{m}"),
    ("GET", "/result/{m}"), ("GET", "/results/{p}"), ("GET", "/cron/{p}"), ("POST", "/dry-run"),
    ("GET", "/state/{p}"), ("GET POST", "/"), ("POST DELETE", "/monitor/{p}"), ("GET", "/timestamp"),
    ("GET", "/processes/{p}"), ("GET", "/{m}"), ("GET", "/{p}/latest"),
]
_HEADER_NAMES = ["Content-Type", "codec-device", "accept-codec", "attest-nonce", "Signature", "Signature-Input",
                 "Content-Digest", "Accept", "Origin", "Accept-Bundle", "require-codec", "data-protocol", "type",
                 "Action", "ao-types", "body-keys", "Authorization", "X-Forwarded-For"]
_HEADER_VALUES = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    st.sampled_from(["application/json", "application/octet-stream", "multipart/form-data; boundary=x",
                     "ans104@1.0", "httpsig@1.0", "json@1.0", "ab" * 32, "zz", 'sig=:AAAA:',
                     'sig=("@path");keyid="x";alg="rsa-pss-sha512"', "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
                     'data-protocol="list"', "*", "null"]))


def _json_values(depth: int = 3):
    leaf = st.one_of(st.none(), st.booleans(), _NUMS, st.floats(allow_nan=False), st.text(max_size=10))
    return st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                        max_leaves=12)


_DRY_RUN = st.fixed_dictionaries({}, optional={
    "Id": st.text(max_size=10), "Owner": st.text(max_size=10), "Target": st.text(max_size=44),
    "Data": st.one_of(st.text(max_size=20), _json_values()),
    "Tags": st.one_of(st.lists(st.fixed_dictionaries({"name": st.text(max_size=8), "value": st.text(max_size=8)}),
                               max_size=4), _json_values()),
    "Anchor": st.text(max_size=5)})


@st.composite
def _bodies(draw, n):
    kind = draw(st.sampled_from(["none", "bytes", "json", "dry-run", "graphql", "item", "deep"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(_json_values())).encode()
    if kind == "dry-run":
        return json.dumps(draw(_DRY_RUN)).encode()
    if kind == "graphql":
        return json.dumps({"query": "".join(draw(st.lists(_GQL_PIECES, max_size=20))),
                           "variables": draw(st.one_of(st.none(), _json_values()))}).encode()
    if kind == "deep":
        d = draw(st.integers(min_value=100, max_value=20_000))
        return b"[" * d + b"]" * d
    tags = draw(st.lists(st.tuples(st.sampled_from(["Data-Protocol", "Type", "Action", "Module", "Variant",
                                                    "Content-Type", "Scheduler", "x"]),
                                   st.sampled_from(["ao", "Message", "Process", "Module", "Eval", "", n.module,
                                                    "text/html\r\nX: 1"])), max_size=5))
    target = draw(st.sampled_from([None, n.pid, n.big_pid, "A" * 43]))
    return DataItem.create(_FUZZ_KEY, data=draw(st.binary(max_size=20)), tags=tags,
                           target=None if target is None else target).to_bytes()


_FUZZ_KEY = Ed25519Key.generate()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_route_never_answers_5xx(n, data):
    methods, template = data.draw(st.sampled_from(_ROUTES))
    method = data.draw(st.sampled_from(methods.split()))
    which = data.draw(st.sampled_from(["pid", "msg", "big", "text"]))
    pid = {"pid": n.pid, "msg": n.msg, "big": n.big_pid, "text": data.draw(st.text(min_size=1, max_size=20))}[which]
    free = data.draw(st.one_of(st.text(max_size=12), st.sampled_from(["0", "1", "&Action=Eval", "99999999999999999999",
                                                                     "results", "&x", "=", "/a/b"])))
    path = template.format(p=quote(pid, safe=""), m=quote(data.draw(st.sampled_from([n.msg, n.pid, pid])), safe=""),
                           x=quote(free, safe="&=/"))
    qs = {k: v for k, v in data.draw(st.dictionaries(
        st.sampled_from(["process-id", "from", "to", "limit", "sort", "slot", "attest-nonce", "no-busy", "x"]),
        _VALUES, max_size=3)).items() if v is not None}
    headers = data.draw(st.dictionaries(st.sampled_from(_HEADER_NAMES), _HEADER_VALUES, max_size=4))
    body = data.draw(_bodies(n)) if method != "GET" or data.draw(st.booleans()) else None
    r = n.client.open(path, method=method, query_string=qs, headers=headers, data=body)
    event(f"{method} {template} {r.status_code}")
    if which == "big" and r.status_code == 422:
        return
    assert r.status_code < 500, (method, path, qs, headers, (body or b"")[:200], r.status_code, r.data[:300])
