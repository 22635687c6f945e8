"""Page-Merkle commitment: incremental roots always equal a from-scratch recomputation."""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import random

import pytest
import wasmtime
from cu._native import merkle

PM = merkle.PageMerkle
PAGE = merkle.PAGE_SIZE


def reference_root(buf: bytes) -> bytes:
    """The commitment exactly as native/merkle.h defines it, written independently in Python."""
    level = [hashlib.sha256(b"\x00" + buf[i : i + PAGE]).digest() for i in range(0, len(buf), PAGE)]
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    top = level[0] if level else bytes(32)
    return hashlib.sha256(b"\x02" + len(buf).to_bytes(8, "little") + top).digest()


@pytest.mark.parametrize("size", [0, 1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE, 5 * PAGE + 17, 7 * PAGE])
def test_full_root_matches_definition(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert PM.full_root(data) == reference_root(data)
    m = PM()
    assert m.root is None
    assert m.commit(data) == reference_root(data) == m.root
    assert m.page_count == (size + PAGE - 1) // PAGE


def _buffers(npages: int):
    """A page-aligned anonymous mapping (write-protect tracking) and a bytearray (shadow copy)."""
    return [("mmap", mmap.mmap(-1, npages * PAGE)), ("bytearray", bytearray(npages * PAGE))]


@pytest.mark.parametrize("kind", ["mmap", "bytearray", "forced-shadow"])
def test_random_writes(kind: str) -> None:
    rng = random.Random(7)
    buf = bytearray(37 * PAGE) if kind == "bytearray" else mmap.mmap(-1, 37 * PAGE)
    m = PM("shadow") if kind == "forced-shadow" else PM()
    m.commit(buf)
    if kind == "forced-shadow":
        assert m.method == "shadow"
    for _ in range(30):
        touched = set()
        for _ in range(rng.randrange(0, 6)):
            off = rng.randrange(len(buf))
            n = rng.randrange(1, 3 * PAGE)
            chunk = rng.randbytes(min(n, len(buf) - off))
            buf[off : off + len(chunk)] = chunk
            touched.update(range(off // PAGE, (off + len(chunk) - 1) // PAGE + 1))
        root = m.commit(buf)
        assert root == PM.full_root(buf) == reference_root(bytes(buf))
        # Only written pages are rehashed (page granularity; never fewer than the pages written).
        assert m.last_rehashed == len(touched)
    m.commit(buf)
    assert m.last_rehashed == 0


def test_write_back_original_bytes_restores_root() -> None:
    for _, buf in _buffers(9):
        m = PM()
        r0 = m.commit(buf)
        buf[3 * PAGE + 5] = 0xAA
        r1 = m.commit(buf)
        assert r1 != r0
        buf[3 * PAGE + 5] = 0
        assert m.commit(buf) == r0
        # A write of the same value still yields the same root.
        buf[4 * PAGE] = 0
        assert m.commit(buf) == r0


def test_growth_same_base() -> None:
    for name, buf in _buffers(16):
        mv = memoryview(buf)
        m = PM()
        m.commit(mv[: 4 * PAGE])
        buf[2 * PAGE] = 1
        buf[6 * PAGE] = 2  # beyond the committed prefix
        r = m.commit(mv[: 10 * PAGE])
        assert r == reference_root(bytes(mv[: 10 * PAGE])), name
        assert m.page_count == 10
        buf[9 * PAGE + 3] = 3
        assert m.commit(mv[: 10 * PAGE]) == PM.full_root(mv[: 10 * PAGE])
        assert m.last_rehashed == 1
        # Shrinking or moving the buffer starts over with a full hash.
        assert m.commit(mv[: 3 * PAGE]) == reference_root(bytes(mv[: 3 * PAGE]))
        assert m.commit(mv[PAGE : 5 * PAGE]) == reference_root(bytes(mv[PAGE : 5 * PAGE]))
        mv.release()


def test_two_instances_on_same_and_different_buffers() -> None:
    a, b = mmap.mmap(-1, 8 * PAGE), mmap.mmap(-1, 8 * PAGE)
    m1, m2, m3 = PM(), PM(), PM()
    m1.commit(a)
    m2.commit(a)  # same buffer: cannot share the write-protect registration, must still be right
    m3.commit(b)
    for i in range(20):
        a[(i * 7919) % len(a)] = i + 1
        if i % 3 == 0:
            b[(i * 104729) % len(b)] = i + 1
        assert m1.commit(a) == PM.full_root(a)
        assert m2.commit(a) == PM.full_root(a)
        assert m3.commit(b) == PM.full_root(b)
    assert "shadow" in (m1.method, m2.method)
    del m1  # dropping one instance must not disturb the others
    a[5] = 99
    assert m2.commit(a) == PM.full_root(a)


def test_reset_and_errors() -> None:
    buf = mmap.mmap(-1, 2 * PAGE)
    m = PM()
    m.commit(buf)
    m.reset()
    assert m.root is None and m.page_count == 0 and m.method == "none"
    buf[0] = 1
    assert m.commit(buf) == PM.full_root(buf)
    assert m.last_rehashed == 2
    with pytest.raises(ValueError):
        PM("fast")
    with pytest.raises(TypeError):
        m.commit("not a buffer")


def test_live_wasmtime_memory_written_by_wasm() -> None:
    wat = """(module (memory (export "mem") 4 64)
      (func (export "poke") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
      (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    inst = wasmtime.Instance(store, wasmtime.Module(engine, wat), [])
    mem = inst.exports(store)["mem"]
    poke, grow = inst.exports(store)["poke"], inst.exports(store)["grow"]

    def view() -> memoryview:
        n = mem.data_len(store)
        return memoryview((ctypes.c_ubyte * n).from_address(ctypes.addressof(mem.data_ptr(store).contents)))

    m = PM()
    m.commit(view())
    rng = random.Random(3)
    for step in range(12):
        for _ in range(3):
            poke(store, rng.randrange(mem.data_len(store)), rng.randrange(1, 256))
        if step == 5:
            grow(store, 3)
        v = view()
        assert m.commit(v) == reference_root(bytes(v))
        assert m.last_rehashed <= 3 + (4 if step == 5 else 0)


def test_mapping_replaced_at_same_address() -> None:
    """A new mapping where the old one was (as after an instance is freed) must not look clean."""
    ctypes.pythonapi.PyMemoryView_FromMemory.restype = ctypes.py_object
    ctypes.pythonapi.PyMemoryView_FromMemory.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    prot, flags, fixed = 3, 0x22, 0x10  # RW, MAP_PRIVATE|MAP_ANONYMOUS, MAP_FIXED
    n = 8 * PAGE
    addr = libc.mmap(None, n, prot, flags, -1, 0)
    view = ctypes.pythonapi.PyMemoryView_FromMemory(addr, n, 0x200)  # PyBUF_WRITE
    view[PAGE:PAGE + 4] = b"abcd"
    m = PM()
    m.commit(view)
    # Replace the mapping in place: the contents become zero without any write through the old mapping.
    assert libc.mmap(addr, n, prot, flags | fixed, -1, 0) == addr
    assert m.commit(view) == reference_root(bytes(n))
    view[3 * PAGE] = 1
    assert m.commit(view) == PM.full_root(view)
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    view.release()
    libc.munmap(addr, n)


def test_forked_child_does_not_trust_the_parents_tracking() -> None:
    import os

    buf = mmap.mmap(-1, 6 * PAGE, flags=mmap.MAP_PRIVATE)
    m = PM()
    m.commit(buf)
    pid = os.fork()
    if pid == 0:  # child: the uffd registration belongs to the parent's address space
        ok = True
        try:
            buf[2 * PAGE] = 7
            ok &= m.commit(buf) == reference_root(bytes(buf))
            buf[5 * PAGE] = 9
            ok &= m.commit(buf) == reference_root(bytes(buf))
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    buf[4 * PAGE] = 3
    assert m.commit(buf) == reference_root(bytes(buf))
