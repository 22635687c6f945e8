"""Module init images: the state of a module's instance right after instantiation (start function,
constructors, `main` for the formats that run it), kept per module (and memory limit) so that a new process of
the module can start as a restore of that image instead of instantiating and running its start code again.

Only the post-instantiation state is shared: the first message a process evaluates (its own Type=Process
message) differs per process, so everything after it is the process's own. An image is taken from the first
instance the node builds of the module, before that instance evaluates anything, so it is exactly what every
fresh instance would be (tests/test_lifecycle.py checks results and memory against a normal spawn).

With the engine's copy-on-write restore (`Instance.restore(cow=True)`) the image is decoded once into a raw
page image that every new process maps: no memory is written. Either way a restored instance keeps the
image as its rollback base, so its first message does not copy memory. Whether a restore is cheaper than
instantiating still depends on the engine and the module (a restore that re-runs instantiation and then writes
the image in costs more than a start function that does little), so each module's first starts time both and
the cheaper way is kept, probed again every `REPROBE` starts. The times are the starting thread's CPU time, not wall time: on a
loaded machine one preempted start would otherwise pick the dearer way for the next `REPROBE` starts. Either way
gives the same state."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from cu.node.eval.modules import engine

REPROBE = 256
# An instantiated instance copies its memory as its rollback base before its first message; a restored one
# keeps the image as its base instead. That copy is counted at the engine's own estimate of a base copy
# (native/engine/instance.cpp: 0.5 s per GiB) when the two ways are compared.
BASE_COPY_S_PER_BYTE = 0.5e-9


@dataclass
class _Image:
    snap: Any
    instantiate_s: float          # the last measured cost of each way
    cow: bool = False             # restored copy-on-write from the snapshot's page image
    restore_s: float = 0.0
    starts: int = 0


class InitImages:
    """`instance(module, limits)`: a fresh instance of `module`. `metrics` counts `init_images` (taken) and
    `init_image_starts` (processes started from one)."""

    def __init__(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics
        for k in ("init_images", "init_image_starts"):
            self.metrics.setdefault(k, 0)
        self._images: dict[tuple[str, str, Any], _Image] = {}
        self._guard = threading.Lock()

    def instance(self, module: Any, limits: dict[str, Any]) -> Any:
        eng = engine()
        key = (module.hash, module.format, limits.get("memory_limit"))
        with self._guard:
            img = self._images.get(key)
            if img is not None:
                img.starts += 1
                saved = img.snap.memory_size * BASE_COPY_S_PER_BYTE
                use = (img.restore_s == 0.0 or img.restore_s < img.instantiate_s + saved
                       or img.starts % REPROBE == 0)
        if img is not None and use:
            t0 = time.thread_time()
            try:
                inst = eng.Instance.restore(module, img.snap, cow=img.cow, **limits)
            except eng.EngineError:
                inst = None       # limits this image does not fit: instantiate
            if inst is not None:
                img.restore_s = time.thread_time() - t0
                self.metrics["init_image_starts"] += 1
                return inst
        t0 = time.thread_time()
        inst = eng.Instance(module, **limits)
        took = time.thread_time() - t0
        if img is not None:
            img.instantiate_s = took
        else:
            snap = inst.snapshot(root=False)
            cow = hasattr(snap, "page_image")
            if cow:
                snap.page_image()       # decoded once, mapped by every restore
            with self._guard:
                self._images.setdefault(key, _Image(snap, took, cow=cow))
            self.metrics["init_images"] += 1
        return inst
