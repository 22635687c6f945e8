"""Copy-on-write restore (native/engine/memory_creator.h): a snapshot's raw page image mapped into a fresh
instance behaves exactly like a plain restore (memory bytes, page-Merkle commitment, results), writes never
reach the image, memory.grow works afterwards, and a damaged image file is refused."""

from __future__ import annotations

import hashlib
import os

import pytest

from cu import _native
from cu.engine import Instance, Module, Snapshot, SnapshotError
from tests.modules.build import MODULES, build

ENV = {"Process": {"Id": "PROCESS-ID", "Owner": "OWNER", "Tags": []},
       "Module": {"Id": "MODULE-ID", "Owner": "OWNER", "Tags": []}}
full_root = _native.merkle.PageMerkle.full_root


def msg(action: str, data: str = "") -> dict:
    return {"Id": "MSG-ID", "Owner": "OWNER", "From": "OWNER", "Target": "PROCESS-ID",
            "Tags": [{"name": "Action", "value": action}], "Data": data,
            "Timestamp": 1730000000000, "Block-Height": 1543210}


# messages after the restore: small writes, a Lua error (rollback to the image), growth past the snapshot
SCRIPT = [msg("Count"), msg("Eval", "Note = 'after restore'"), msg("Fail", "x"), msg("Count"),
          msg("Grow", "3"), msg("Eval", "return Note .. ' ' .. Count")]


# lua32: a 32-bit memory (fixed reservation); lua64: a wasm64 memory (no fixed reservation in wasmtime)
@pytest.fixture(scope="module", params=["lua32", "lua64"])
def state(request, cache_dir):
    """(module, snapshot of a process holding ~12 MiB of Lua strings, the same with its page image built
    from live memory)."""
    name = request.param
    mod = Module.load(build(name).read_bytes(), MODULES[name].module_format, cache_dir=cache_dir / "engine")
    inst = Instance(mod)
    for m in (msg("Count"), msg("Grow", "12"), msg("Count")):
        assert "Error" not in inst.handle(m, ENV)
    return mod, inst.snapshot(), inst.snapshot(image=True)


def run(inst: Instance) -> list:
    """Results and commitments along SCRIPT; every commitment is also checked against a full rehash."""
    out = []
    for m in SCRIPT:
        out.append(inst.handle(m, ENV))
        c = inst.commitment()
        assert c == full_root(inst.memory_view())
        out.append(c)
    return out


def test_cow_restore_is_identical_to_a_plain_restore(state):
    mod, snap, _ = state
    plain = Instance.restore(mod, snap)
    cow = Instance.restore(mod, snap, cow=True, verify=True)
    assert cow.memory_size == plain.memory_size == snap.memory_size
    assert cow.memory() == plain.memory()
    assert cow.commitment() == plain.commitment() == snap.memory_root
    # image pages that were mapped but not written are not dirty: the first commit rehashes nothing
    assert cow._merkle.last_rehashed == 0
    cow.handle(msg("Count"), ENV)
    plain.handle(msg("Count"), ENV)
    assert cow.commitment() == plain.commitment()
    assert 0 < cow._merkle.last_rehashed < cow._merkle.page_count // 4
    expected = run(plain)
    assert run(cow) == expected
    assert expected[4]["Error"].endswith("Fail requested: x") and expected[-2]["Output"]["data"] == "after restore 5"
    assert cow.memory() == plain.memory()


def test_writes_never_reach_the_image(state, tmp_path):
    mod, snap, live = state
    path = tmp_path / "p.aopi"
    snap.to_file(path)
    file_digest = hashlib.sha256(path.read_bytes()).hexdigest()
    from_file = Snapshot.from_file(path)
    assert live._image is not None and bytes(live.page_image().root) == live.memory_root == snap.memory_root
    for source in (snap, live, from_file):
        a = Instance.restore(mod, source, cow=True)
        b = Instance.restore(mod, source, cow=True)
        # diverge: each instance writes its own state into the shared image pages
        ra = [a.handle(msg("Eval", f"Mark = 'a{i}'; return Mark"), ENV)["Output"]["data"] for i in range(3)]
        rb = [b.handle(msg("Grow", "2"), ENV)["Output"]["held_mib"] for _ in range(2)]
        assert ra == ["a0", "a1", "a2"] and rb == [14, 16]
        assert a.handle(msg("Eval", "return Mark"), ENV)["Output"]["data"] == "a2"
        assert b.handle(msg("Eval", "return tostring(Mark)"), ENV)["Output"]["data"] == "nil"
        assert a.commitment() == full_root(a.memory_view()) and b.commitment() == full_root(b.memory_view())
        fresh = Instance.restore(mod, source, cow=True)
        assert fresh.commitment() == full_root(fresh.memory_view()) == snap.memory_root
        assert fresh.handle(msg("Eval", "return tostring(Mark)"), ENV)["Output"]["data"] == "nil"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == file_digest
    # the file form carries the whole snapshot (globals, host state) and converts back to bytes losslessly
    again = Snapshot.from_bytes(from_file.to_bytes())
    assert again.memory_root == snap.memory_root
    assert Instance.restore(mod, again).memory() == Instance.restore(mod, snap).memory()


def test_memory_grow_after_cow_restore(state):
    mod, snap, _ = state
    cow = Instance.restore(mod, snap, cow=True)
    plain = Instance.restore(mod, snap)
    for inst in (cow, plain):
        assert inst.handle(msg("Grow", "20"), ENV)["Output"]["held_mib"] == 32
    assert cow.memory_size == plain.memory_size > snap.memory_size
    assert cow.memory() == plain.memory()
    assert cow.commitment() == plain.commitment() == full_root(cow.memory_view())
    assert cow.handle(msg("Free"), ENV) == plain.handle(msg("Free"), ENV)
    assert cow.commitment() == plain.commitment()


def one_line_error(call) -> str:
    with pytest.raises(SnapshotError) as err:
        call()
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_damaged_image_files_are_refused(state, tmp_path):
    mod, snap, _ = state
    good = tmp_path / "good.aopi"
    snap.to_file(good)
    data = good.read_bytes()
    page0 = os.path.getsize(good) - snap.memory_size  # pages start here (4 KiB-aligned)
    assert page0 % 4096 == 0

    def variant(name: str, content: bytes):
        p = tmp_path / name
        p.write_bytes(content)
        return p

    truncated = variant("truncated.aopi", data[:-4096])
    assert "truncated" in one_line_error(lambda: Snapshot.from_file(truncated, verify=True))
    assert "truncated" in one_line_error(lambda: Snapshot.from_file(truncated, verify=False))
    assert "too long" in one_line_error(lambda: Snapshot.from_file(variant("long.aopi", data + b"\0" * 4096)))
    header = bytearray(data)
    header[40] ^= 1  # inside the snapshot envelope
    assert "header digest" in one_line_error(lambda: Snapshot.from_file(variant("hdr.aopi", bytes(header))))
    # a changed byte in a page that holds Lua data: found by hashing the pages
    first_data_page = next(i for i in range(snap.memory_size // 65536)
                           if any(data[page0 + i * 65536: page0 + (i + 1) * 65536]))
    pages = bytearray(data)
    pages[page0 + first_data_page * 65536 + 100] ^= 0x40
    altered = variant("page.aopi", bytes(pages))
    assert f"page {first_data_page} does not match" in one_line_error(lambda: Snapshot.from_file(altered))
    assert "bad magic" in one_line_error(lambda: Snapshot.from_file(variant("junk.aopi", b"x" * 9000)))
    assert "truncated" in one_line_error(lambda: Snapshot.from_file(variant("empty.aopi", b"")))
    assert "cannot open" in one_line_error(lambda: Snapshot.from_file(tmp_path / "missing.aopi"))
    # the intact file still restores to the snapshot's state
    assert Instance.restore(mod, Snapshot.from_file(good), cow=True).commitment() == snap.memory_root


@pytest.mark.parametrize("fmt,ptr,addr", [
    ("wasm32-unknown-emscripten4", "i32", "0x10000"),        # just past the memory, inside the reservation
    ("wasm32-unknown-emscripten4", "i32", "0xFFFFFFF0"),     # + offset: past 4 GiB, in the guard region
    ("wasm64-unknown-emscripten-draft_2024_02_15", "i64", "0x10000"),
    ("wasm64-unknown-emscripten-draft_2024_02_15", "i64", "0xFFFFFFFFF0"),
])
def test_out_of_bounds_accesses_trap_in_creator_memories(fmt, ptr, addr):
    """Every memory comes from aocu's creator (reservation + guard regions): wasm code reading past the end
    traps cleanly, before and after a copy-on-write restore."""
    import wasmtime

    mem = '(memory (export "memory") i64 1)' if ptr == "i64" else '(memory (export "memory") 1)'
    wat = f"""(module {mem} (global $n (export "n") (mut i32) (i32.const 0))
      (func (export "malloc") (param {ptr}) (result {ptr}) ({ptr}.const 1024))
      (func (export "handle") (param {ptr} {ptr}) (result {ptr})
        (global.set $n (i32.add (global.get $n) (i32.const 1)))
        (drop (i32.load offset=256 ({ptr}.const {addr}))) ({ptr}.const 0)))"""
    mod = Module.load(wasmtime.wat2wasm(wat), fmt)
    inst = Instance(mod)
    assert inst.handle("{}", "{}")["Error"] == "wasm trap: out of bounds memory access"
    again = Instance.restore(mod, inst.snapshot(), cow=True)
    assert again.handle("{}", "{}")["Error"] == "wasm trap: out of bounds memory access"
