"""httpsig@1.0 messages in the node core: verified, scheduled, stored as received, converted to the legacy message
for the module, re-verified after a restart and served back in either codec (cu/node/signed_http.py,
cu/node/messages.py, Scheduler.ingest_http).

Real inputs: requests signed by ao-core-libs (the HyperBEAM client inside @permaweb/aoconnect) through
tests/peers/aocore_peer.js, and messages signed with this project's own httpsig commit (ed25519)."""

from __future__ import annotations

import base64
import json
import sqlite3
from urllib.parse import urlsplit

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.message import Message
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.hashing import b64url, sha256
from cu.node.client import embedded
from cu.node.config import NodeConfig
from cu.node.dispatch import Dispatcher
from cu.node.errors import BadInput, Invalid, NotFound
from cu.node.ingest import Scheduler
from cu.node.messages import message_in_codec, verify_stored
from cu.node.signed_http import header_case, legacy_view, unframe
from cu.node.store import ItemMeta
from cu.node.store_sqlite import SqliteStore
from tests.modules.build import build
from tests.test_codec_httpsig import NODE, PEERS, needs_node
from tests.test_codec_httpsig import node as run_peer

MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
               ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
               ("Compute-Limit", "9000000000000")]


class Node:
    """An embedded node (evaluator in this process) with the Lua test module and one ANS-104 process."""

    def __init__(self, data_dir, wallet: ArweaveWallet, module: DataItem | None = None) -> None:
        self.cfg = NodeConfig.from_mapping({"data_dir": data_dir, "tee": "none", "evaluator": "embedded",
                                            "crank_delay_s": 30.0})
        self.wallet = wallet
        self.open()
        if module is None:
            module = DataItem.create(wallet, data=build("lua32").read_bytes(), tags=MODULE_TAGS)
            self.sched.ingest(module.to_bytes())
            proc = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                           ("Module", module.id)])
            self.sched.ingest(proc.to_bytes())
            self.pid = proc.id
        self.module = module

    def open(self) -> None:
        self.core = Dispatcher.open(self.cfg)
        self.core.start()
        self.client = embedded(self.core)
        self.sched = Scheduler(self.cfg, self.core.store, self.core.core.identity, submit=self.client.submit)

    def restart(self) -> None:
        self.core.stop()
        self.core.store.close()
        self.open()

    @property
    def store(self) -> SqliteStore:
        return self.core.store

    def slot(self, pid: str | None = None) -> int:
        return self.store.process(pid or self.pid).nonce

    def result(self, mid: str, pid: str | None = None) -> dict:
        return json.loads(self.client.result(pid or self.pid, mid))


@pytest.fixture(scope="module")
def wallet() -> ArweaveWallet:
    return ArweaveWallet.generate()


@pytest.fixture(scope="module")
def n(tmp_path_factory, wallet):
    node = Node(tmp_path_factory.mktemp("httpsig-node"), wallet)
    yield node
    node.core.stop()


def _request(r: dict) -> tuple[str, str, list[tuple[str, str]], bytes]:
    u = urlsplit(r["url"])
    return r["method"], u.path + (f"?{u.query}" if u.query else ""), [tuple(h) for h in r["headers"]], \
        base64.b64decode(r["body"])


@pytest.fixture(scope="module")
def libs(n, wallet):
    """Requests signed by ao-core-libs, pushed to the node's process (recorded, not sent)."""
    pid = n.pid
    specs = {
        "echo": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "target": pid, "data": "hello httpsig"},
        "eval": {"Type": "Message", "Action": "Eval", "Data-Protocol": "ao", "target": pid, "data": "1 + 41"},
        "send": {"Type": "Message", "Action": "Send", "Data-Protocol": "ao", "target": pid, "data": "to my sender"},
        "random": {"Type": "Message", "Action": "Random", "Data-Protocol": "ao", "target": pid},
        "typed": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "target": pid, "Quantity": 5,
                  "data": "two\nlines"},
        "tamper": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "target": pid, "data": "t"},
        "tamper-digest": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "target": pid,
                          "data": "multi\nline"},
        "restart": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "target": pid, "data": "after"},
        "codec": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "target": pid, "data": "both ways"},
        "long": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "target": pid, "data": "x",
                 "Note": "n" * 4000},
        "no-target": {"Type": "Message", "Action": "Echo", "Data-Protocol": "ao", "data": "via the route"},
    }
    if NODE is not None and (PEERS / "node_modules").is_dir():
        out = run_peer("aocore_peer.js", {"jwk": wallet.to_jwk(), "requests": [
            {"path": f"/{pid}~process@1.0/push", "fields": f} for f in specs.values()]})
        return {k: _request(r) for k, r in zip(specs, out["requests"], strict=True)}
    return {}


def _sig(headers: list[tuple[str, str]]) -> bytes:
    value = next(v for k, v in headers if k.lower() == "signature")
    return base64.b64decode(value.split("=:", 1)[1].rstrip(":"))


def _signed(fields: dict, key=None) -> tuple[list[tuple[str, str]], bytes, Message]:
    msg = Message(fields).commit(key or Ed25519Key.generate())
    headers, body = msg.to_http()
    return headers, body, msg


# -- ao-core-libs pushes, evaluated ---------------------------------------------------------------------------
@needs_node
def test_ao_core_libs_push_is_scheduled_and_the_module_sees_the_legacy_message(n, libs, wallet):
    method, path, headers, body = libs["echo"]
    assert body == b""
    before = n.slot()
    acc = n.sched.ingest_http(method, path, headers, body, process=n.pid)
    assert acc.kind == "Message" and acc.fresh
    assert acc.id == b64url(sha256(_sig(headers)))          # one signature: the id is SHA-256 of it
    assert acc.entry is not None and acc.entry.nonce == before + 1 == n.slot()
    assert n.result(acc.id)["Output"] == "hello httpsig"
    meta = n.store.item_meta(acc.id)
    assert meta.codec == "httpsig" and meta.kind == "Message" and meta.target == n.pid
    assert meta.owner == wallet.address and meta.owner_key == wallet.owner
    assert meta.signature == b64url(_sig(headers)) and meta.anchor is None
    # header-cased keys in key order; data and target have their own fields
    assert meta.tags == [("Action", "Echo"), ("Data-Protocol", "ao"), ("Signing-Format", "httpsig"),
                         ("Type", "Message")]
    assert n.store.item_data(acc.id) == b"hello httpsig"
    # re-posting the same signed request is idempotent
    again = n.sched.ingest_http(method, path, headers, body, process=n.pid)
    assert not again.fresh and again.entry == acc.entry
    # the SU's JSON of the message
    msg_json = n.sched.message_json(acc.entry)
    assert msg_json["owner"] == {"address": wallet.address, "key": b64url(wallet.owner)}
    assert msg_json["data"] == "hello httpsig" and msg_json["target"] == n.pid
    assert {"name": "Action", "value": "Echo"} in msg_json["tags"]


@needs_node
def test_the_module_sees_owner_from_id_and_tags(n, libs, wallet):
    acc = n.sched.ingest_http(*libs["eval"], process=n.pid)
    assert n.result(acc.id)["Output"]["data"] == "42"
    # Send answers to msg.From: the signer's address
    acc = n.sched.ingest_http(*libs["send"], process=n.pid)
    res = n.result(acc.id)
    assert res["Messages"][0]["Target"] == wallet.address
    assert res["Messages"][0]["Data"] == "to my sender"
    assert res["Assignments"][0]["Message"] == acc.id
    # Random seeds from Owner .. Module.Id .. Id and Block-Height
    acc = n.sched.ingest_http(*libs["random"], process=n.pid)
    seed = n.result(acc.id)["Output"]["seed"]
    text = (wallet.address + n.module.id + acc.id).encode()
    assert seed == (n.cfg.block_height * 1000003 + sum(text)) % 2147483647


@needs_node
def test_typed_fields_and_a_body_the_client_dropped(n, libs):
    method, path, headers, body = libs["typed"]
    names = {k for k, _ in headers}
    assert {"content-digest", "inline-body-key", "ao-types"} <= names and body == b""   # ao-core-libs drops it
    acc = n.sched.ingest_http(method, path, headers, body, process=n.pid)
    meta = n.store.item_meta(acc.id)
    assert meta.tags == [("Action", "Echo"), ("Ao-Types", 'quantity="integer"'), ("Data-Protocol", "ao"),
                         ("Inline-Body-Key", "data"), ("Quantity", "5"), ("Signing-Format", "httpsig"),
                         ("Type", "Message")]
    assert meta.size == 0 and n.result(acc.id)["Output"] == ""
    assert verify_stored(n.store, acc.id)


@needs_node
def test_a_target_from_the_route_and_disagreements(n, libs):
    method, path, headers, body = libs["no-target"]
    with pytest.raises(BadInput, match="needs a target"):
        n.sched.ingest_http(method, path, headers, body)
    acc = n.sched.ingest_http(method, path, headers, body, process=n.pid)
    assert n.store.item_meta(acc.id).target == n.pid and n.result(acc.id)["Output"] == "via the route"
    with pytest.raises(BadInput, match="targets"):
        n.sched.ingest_http(*libs["echo"], process="q" * 43)


# -- tampering ------------------------------------------------------------------------------------------------
@needs_node
def test_tampered_requests_are_refused_with_the_reason_and_nothing_is_scheduled(n, libs):
    method, path, headers, body = libs["tamper"]
    label = next(v for k, v in headers if k == "signature").split("=", 1)[0]
    slots = n.slot()

    def changed(name: str, fn) -> list[tuple[str, str]]:
        return [(k, fn(v) if k == name else v) for k, v in headers]

    def flip(v: str) -> str:
        raw = bytearray(_sig(headers))
        raw[10] ^= 1
        return f"{label}=:{base64.b64encode(bytes(raw)).decode()}:"

    cases = [
        (changed("action", lambda v: "Eval"), body, f"signature {label} \\(rsa-pss-sha512\\) does not verify"),
        (changed("data", lambda v: v + "!"), body, "does not verify"),
        (changed("signature", flip), body, "does not verify"),
        ([(k, v) for k, v in headers if k != "action"], body, "committed key 'action' is not in the message"),
        ([(k, v) for k, v in headers if k not in ("signature", "signature-input")], body, "is not signed"),
        (headers, b"a body nobody signed", "body is not covered by a signature"),
    ]
    # a body added to a request whose (dropped) body was signed: its content-digest no longer matches
    m2, p2, h2, b2 = libs["tamper-digest"]
    cases.append((h2, b"not the signed body", "content-digest does not match the body"))
    for hs, b, reason in cases:
        with pytest.raises(BadInput, match=reason):
            n.sched.ingest_http(method, path, hs, b, process=n.pid)
    assert n.slot() == slots


def test_unsigned_and_hmac_only_messages_are_refused(n):
    fields = {"type": "Message", "data-protocol": "ao", "action": "Echo", "target": n.pid}
    msg = Message(fields).commit(None)          # hmac-sha256 only
    headers, body = msg.to_http()
    with pytest.raises(BadInput, match="is not signed"):
        n.sched.ingest_http("POST", f"/{n.pid}~process@1.0/push", headers, body)


def test_own_ed25519_message_with_a_signed_body_and_its_tampering(n):
    data = b"line one\nline two\x00\xffbinary"
    headers, body, msg = _signed({"type": "Message", "data-protocol": "ao", "action": "Echo", "target": n.pid,
                                  "body": data})
    assert body == data and any(k == "content-digest" for k, _ in headers)
    slots = n.slot()
    with pytest.raises(BadInput, match="content-digest does not match the body"):
        n.sched.ingest_http("POST", "/push", headers, data + b"!")
    assert n.slot() == slots
    # transport headers around the signed ones are not part of the message
    sent = [("Host", "node.example"), ("Content-Length", str(len(body))), *headers, ("User-Agent", "test")]
    acc = n.sched.ingest_http("POST", f"/{n.pid}~process@1.0/push", sent, body)
    assert acc.id == msg.id and n.slot() == slots + 1
    meta, got = n.store.item_with_data(acc.id)
    assert got == data and meta.size == len(data)      # no `data` key: the body is the Data
    assert n.store.item_raw(acc.id).endswith(data)
    assert n.result(acc.id)["Output"] == data.decode("utf-8", "replace")
    stored_headers, stored_body = message_in_codec(n.store, acc.id, "httpsig@1.0")
    assert stored_headers == headers and stored_body == body


def test_multipart_body_parts_become_data_and_tags(n):
    big = "x" * 5000
    msg = Message.from_structured({"type": "Message", "data-protocol": "ao", "action": "Echo", "target": n.pid,
                                   "data": big, "memo": "y" * 4500})
    msg.commit(Ed25519Key.generate())
    headers, body = msg.to_http()
    assert any(k == "content-type" and v.startswith("multipart/form-data") for k, v in headers)
    acc = n.sched.ingest_http("POST", "/push", headers, body, process=n.pid)
    meta, data = n.store.item_with_data(acc.id)
    assert data == big.encode() and ("Memo", "y" * 4500) in meta.tags
    assert not any(t[0] == "Content-Type" for t in meta.tags)
    assert n.result(acc.id)["Output"] == big
    assert verify_stored(n.store, acc.id)


def test_type_and_protocol_checks(n):
    key = Ed25519Key.generate()
    for fields, reason in [
        ({"type": "Message", "data-protocol": "xx", "target": n.pid}, "Data-Protocol must be 'ao'"),
        ({"type": "Module", "data-protocol": "ao"}, "type must be Process or Message"),
        ({"type": "Process", "data-protocol": "ao"}, "needs a signed `module` field"),
    ]:
        headers, body, _ = _signed(fields, key)
        with pytest.raises(BadInput, match=reason):
            n.sched.ingest_http("POST", "/push", headers, body)


def test_spawn_as_httpsig_then_message_it(n):
    key = Ed25519Key.generate()
    headers, body, msg = _signed({"type": "Process", "data-protocol": "ao", "module": n.module.id,
                                  "scheduler": n.core.core.identity.address, "name": "httpsig-proc"}, key)
    acc = n.sched.ingest_http("POST", "/push", headers, body)
    assert acc.kind == "Process" and acc.id == msg.id and acc.entry.nonce == 0
    proc = n.store.process(acc.id)
    assert proc.module == n.module.id and ("Name", "httpsig-proc") in proc.tags
    h2, b2, m2 = _signed({"type": "Message", "data-protocol": "ao", "action": "Echo", "target": acc.id,
                          "data": "to the httpsig process"}, key)
    got = n.sched.ingest_http("POST", f"/{acc.id}~process@1.0/push", h2, b2, process=acc.id)
    assert got.entry.nonce == 1
    assert n.result(got.id, acc.id)["Output"] == "to the httpsig process"
    with pytest.raises(BadInput, match="process message's id"):
        n.sched.ingest_http("POST", "/push", headers, body, process=n.pid)


# -- restart, reading back --------------------------------------------------------------------------------
@needs_node
def test_stored_message_reverifies_after_a_restart_and_is_served_as_received(n, libs):
    method, path, headers, body = libs["restart"]
    acc = n.sched.ingest_http(method, path, headers, body, process=n.pid)
    n.restart()                     # not evaluated yet (crank delay 30 s): evaluated from the store below
    assert verify_stored(n.store, acc.id)
    got_headers, got_body = message_in_codec(n.store, acc.id, "httpsig@1.0")
    assert got_headers == headers and got_body == body     # ao-core-libs sends only signed headers
    again = Message.from_http(got_headers, got_body)
    assert again.verify() and again.id == acc.id
    assert n.result(acc.id)["Output"] == "after"
    raw = n.store.item_raw(acc.id)
    assert unframe(raw)[:2] == (method, path)
    # a changed stored byte no longer verifies
    bad = raw.replace(b"after", b"afteR")
    with sqlite3.connect(n.store.path) as db:
        db.execute("UPDATE items SET raw=? WHERE id=?", (bad, acc.id))
    assert not verify_stored(n.store, acc.id)
    with sqlite3.connect(n.store.path) as db:
        db.execute("UPDATE items SET raw=? WHERE id=?", (raw, acc.id))
    assert verify_stored(n.store, acc.id)


@needs_node
def test_httpsig_message_read_as_ans104(n, libs):
    acc = n.sched.ingest_http(*libs["codec"], process=n.pid)
    headers, raw = message_in_codec(n.store, acc.id, "ans104@1.0")
    assert ("content-type", "application/ans104") in headers
    back = Message.from_ans104(DataItem.parse(raw))
    assert back.id == acc.id and back.verify()
    assert Message.from_http(*message_in_codec(n.store, acc.id, "httpsig@1.0")).fields == back.fields
    # a 4000-byte header fits HTTP but not an ANS-104 tag value (3072 bytes): said so, not truncated
    acc = n.sched.ingest_http(*libs["long"], process=n.pid)
    with pytest.raises(Invalid, match=f"message {acc.id} was received as httpsig@1.0 and has no lossless ANS-104"):
        message_in_codec(n.store, acc.id, "ans104@1.0")


def test_ans104_message_read_as_httpsig(n):
    data = b"Send({Target = ao.id})\nprint('x')\x00\xfe"
    item = DataItem.create(ArweaveWallet.generate(), data=data, target=n.pid, anchor=b"a" * 32,
                           tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo"),
                                 ("Action", "Twice")])
    acc = n.sched.ingest(item.to_bytes())
    assert n.store.item_meta(acc.id).codec == "ans104"
    headers, raw = message_in_codec(n.store, acc.id, "ans104@1.0")
    assert raw == item.to_bytes() and ("content-type", "application/ans104") in headers
    headers, body = message_in_codec(n.store, acc.id, "httpsig@1.0")
    assert body == data
    msg = Message.from_http(headers, body)
    assert msg.verify() and msg.id == acc.id
    assert msg.to_ans104().to_bytes() == item.to_bytes()
    assert verify_stored(n.store, acc.id)
    # tag names differing only by case cannot all be HTTP headers
    odd = DataItem.create(Ed25519Key.generate(), data=b"d", target=n.pid,
                          tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Memo", "a"), ("memo", "b")])
    acc = n.sched.ingest(odd.to_bytes())
    with pytest.raises(Invalid, match="was received as ans104@1.0 and has no lossless httpsig@1.0 form"):
        message_in_codec(n.store, acc.id, "httpsig@1.0")


def test_unknown_message_and_codec(n):
    with pytest.raises(NotFound):
        message_in_codec(n.store, "z" * 43, "httpsig@1.0")
    with pytest.raises(NotFound):
        verify_stored(n.store, "z" * 43)
    with pytest.raises(BadInput, match="json@1.0"):
        message_in_codec(n.store, n.pid, "json@1.0")


# -- the legacy conversion, unit ----------------------------------------------------------------------------
def test_header_case_and_legacy_view():
    assert header_case("data-protocol") == "Data-Protocol" and header_case("x--y") == "X-Y"
    msg = Message({"type": "Message", "zeta": "1", "anchor": "00000000000000000000000000000007", "id": "i",
                   "owner": "o", "from-process": "p" * 43, "target": "t" * 43, "data": "d",
                   "ao-types": b"n=integer, l=list", "n": "3", "l": '"a", "(ao-type-integer) 2"'})
    view = legacy_view(msg)
    assert view.data == b"d" and view.target == "t" * 43 and view.anchor == "00000000000000000000000000000007"
    assert [t[0] for t in view.tags] == ["Ao-Types", "From-Process", "L", "N", "Type", "Zeta"]
    assert dict(view.tags)["Ao-Types"] == 'l="list", n="integer"'


# -- the store migration ------------------------------------------------------------------------------------
OLD_ITEMS = """CREATE TABLE items (
    id TEXT PRIMARY KEY, raw BLOB NOT NULL, data_offset INTEGER NOT NULL, owner TEXT NOT NULL,
    owner_key BLOB NOT NULL, target TEXT NOT NULL, anchor TEXT, signature TEXT NOT NULL, tags TEXT NOT NULL,
    kind TEXT NOT NULL, created INTEGER NOT NULL)"""


def test_existing_store_gets_the_codec_column(tmp_path):
    path = tmp_path / "old.sqlite"
    item = DataItem.create(Ed25519Key.generate(), data=b"old data", tags=[("Type", "Message")])
    with sqlite3.connect(path) as db:          # the items table as stores written before the codec column
        db.execute(OLD_ITEMS)
        db.execute("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (item.id, item.to_bytes(), len(item.to_bytes()) - 8, item.owner_address, item.owner, "", None,
                    b64url(item.signature), '[["Type","Message"]]', "Message", 1))
    store = SqliteStore(path)
    meta = store.item_meta(item.id)
    assert meta.codec == "ans104" and store.item_data(item.id) == b"old data"
    assert message_in_codec(store, item.id, "ans104@1.0")[1] == item.to_bytes()
    assert verify_stored(store, item.id)
    new = ItemMeta(id="h" * 43, owner="o", owner_key=b"k", target="", anchor=None, signature="s", tags=[],
                   kind="Message", created_ms=2, size=1, codec="httpsig")
    assert store.put_item(new, b"framed-x")
    assert store.item_meta(new.id).codec == "httpsig" and store.item_data(new.id) == b"x"
    store.close()
    again = SqliteStore(path)       # opening it again changes nothing
    assert again.item_meta(item.id).codec == "ans104" and again.item_meta(new.id).codec == "httpsig"
    cols = [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(items)")]
    assert cols.count("codec") == 1
