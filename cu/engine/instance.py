"""Instance: one AO process on the native engine; `handle` evaluates one message (docs/ABI.md: Calling handle; Message, env and result)."""

from __future__ import annotations

import json
from typing import Any

from cu import _native
from cu.engine.errors import EngineError, ModuleError, SnapshotError
from cu.engine.module import Module
from cu.engine.native import native
from cu.engine.snapshot import Snapshot

_LIST_KEYS = ("Messages", "Spawns", "Assignments")


def _json_bytes(value: bytes | str | dict) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raise TypeError(f"message/env must be bytes, str or dict, not {type(value).__name__}")


def _as_list(v: Any) -> list:
    # Lua JSON encoders emit an empty table as {} (docs/ABI.md, Message, env and result)
    if v is None or v == {}:
        return []
    if isinstance(v, list):
        return v
    if isinstance(v, dict) and all(isinstance(k, str) and k.isdigit() for k in v):
        return [v[k] for k in sorted(v, key=int)]
    return [v]


def js_number(v: int | float) -> str:
    """A JSON number as JavaScript's `String(Number(v))` writes it (the legacy CU stringifies a numeric Output):
    `3.0` -> "3", `1e-7` -> "1e-7", `1e21` -> "1e+21", integers past 2^53 rounded to a double."""
    f = float(v)
    if f == 0:
        return "0"
    m, _, e = repr(abs(f)).partition("e")
    ip, _, fp = m.partition(".")
    if ip.strip("0"):
        digits, n = (ip + fp).lstrip("0"), len(ip.lstrip("0")) + int(e or 0)
    else:
        z = len(fp) - len(fp.lstrip("0"))
        digits, n = fp[z:], -z + int(e or 0)
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * -n + digits
    else:
        x = n - 1
        s = (digits if k == 1 else digits[0] + "." + digits[1:]) + ("e+" if x > 0 else "e-") + str(abs(x))
    return "-" + s if f < 0 else s


def normalise_response(resp: Any, gas: int, *, keep_patches: bool = False) -> dict:
    """Legacy result shape from a module `response` (ok:true, no Error). keep_patches: also keep the module's
    `Patches` list (AOS patch@1.0), which the loader returns and the legacy CU's merge drops."""
    if not isinstance(resp, dict):
        output = resp if isinstance(resp, str | dict) else ("" if resp is None else json.dumps(resp))
        return {"Output": output, "Messages": [], "Spawns": [], "Assignments": [], "GasUsed": gas}
    output = resp.get("Output", "")
    if isinstance(output, int | float) and not isinstance(output, bool):
        output = js_number(output)
    out = {"Output": output}
    for k in _LIST_KEYS:
        out[k] = _as_list(resp.get(k))
    out["GasUsed"] = gas
    if keep_patches and isinstance(resp.get("Patches"), list):
        out["Patches"] = resp["Patches"]
    return out


def _limit(name: str, v: int | None) -> int:
    if v is None:
        return -1
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be a non-negative int or None")
    return v


class Instance:
    """A running process. Not thread-safe: use one instance from one thread at a time."""

    def __init__(
        self,
        module: Module,
        *,
        memory_limit: int | None = None,
        compute_limit: int | None = None,
        timeout_s: float | None = None,
        _state: tuple | None = None,
    ) -> None:
        if not isinstance(module, Module):
            raise TypeError("module must be a cu.engine.Module")
        if timeout_s is not None and not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ValueError("timeout_s must be a positive number or None")
        self.module = module
        self._limits = {"memory_limit": memory_limit, "compute_limit": compute_limit, "timeout_s": timeout_s}
        mem, compute = _limit("memory_limit", memory_limit), _limit("compute_limit", compute_limit)
        # memory64-lowered when the limit allows; fuel-free when fuel cannot matter (module.py)
        code = module.compiled_for(memory_limit, fuel=module.needs_fuel(compute_limit, timeout_s))
        self.fuel_engine: bool = code.fuel  # runs on the fuel engine (else the fuel-free one)
        try:
            self._native = native.Instance(
                code,
                module._spec.family,
                mem,
                compute,
                float(timeout_s or 0.0),
                _state,
            )
        except native.ModuleLoadError as exc:
            raise ModuleError(str(exc)) from exc
        except native.SnapshotDataError as exc:
            raise SnapshotError(str(exc)) from exc
        except RuntimeError as exc:
            raise EngineError(str(exc)) from exc
        self._merkle: Any = None
        self.last_fuel_used = 0

    # -- evaluation -------------------------------------------------------------------------------------
    def handle_raw(self, msg_json: bytes, env_json: bytes) -> tuple[bytes | None, str | None, int]:
        """(response JSON bytes, error, gas). On error the memory is rolled back; the response bytes are still
        returned when the module answered ok:true with an Error (or out-of-memory Output)."""
        try:
            resp, err, gas, fuel = self._native.handle(msg_json, env_json)
        except RuntimeError as exc:  # instance unusable (lost state) or used concurrently
            raise EngineError(str(exc)) from exc
        self.last_fuel_used = fuel
        return resp, err, gas

    def handle(self, msg: bytes | str | dict, env: bytes | str | dict, *, keep_patches: bool = False) -> dict:
        resp, err, gas = self.handle_raw(_json_bytes(msg), _json_bytes(env))
        if err is not None:
            error: Any = err
            if resp is not None:
                try:
                    obj = json.loads(resp)
                    if isinstance(obj, dict) and obj.get("Error") is not None:
                        error = obj["Error"]
                except ValueError:
                    pass
            return {"Error": error, "GasUsed": gas}
        try:
            return normalise_response(json.loads(resp), gas, keep_patches=keep_patches)
        except ValueError as exc:  # the native scanner validated it; be safe anyway
            return {"Error": f"handle() returned invalid JSON: {exc}", "GasUsed": gas}

    # -- state ------------------------------------------------------------------------------------------
    @property
    def memory_size(self) -> int:
        return self._native.memory_size

    def memory(self) -> bytes:
        return self._native.memory()

    def memory_view(self) -> memoryview:
        """Read-only, zero-copy view of linear memory; valid only until the next call into the instance."""
        return self._native.memory_view()

    def commitment(self) -> bytes:
        merkle = getattr(_native, "merkle", None)
        if merkle is None or not hasattr(merkle, "PageMerkle"):
            raise EngineError("page-Merkle commitment is not available in this build")
        if self._merkle is None:
            self._merkle = merkle.PageMerkle()
        return bytes(self._merkle.commit(self._native.memory_view()))

    def snapshot(self, *, root: bool = True, image: bool = False) -> Snapshot:
        """The state between calls. `root=False` leaves `memory_root` empty (b""): no page-Merkle commit, for
        callers that authenticate the bytes themselves (the node's incremental checkpoints). `image=True`
        also copies memory into the snapshot's raw page image now (for `Instance.restore(cow=True)` /
        `to_file`), reusing the commit's page digests: cheaper than `page_image()` decoding it later."""
        state = self._native.capture()
        has_merkle = root and hasattr(getattr(_native, "merkle", None), "PageMerkle")
        mroot = self.commitment() if has_merkle else b""
        snap = Snapshot(module_hash=self.module.hash, format=self.module.format, state=state, memory_root=mroot)
        if image:
            leaves = self._merkle.leaves() if has_merkle and hasattr(self._merkle, "leaves") else None
            snap._image = native.PageImage.from_instance(self._native, leaves)
        return snap

    @classmethod
    def restore(cls, module: Module, snap: Snapshot, **limits: Any) -> Instance:
        """A fresh instance of `module` continuing from `snap`. `verify=True` also recomputes the page-Merkle
        root of the restored memory and compares it with the snapshot's (costs a full hash of memory).
        `cow=True` maps the snapshot's raw page image (`snap.page_image()`, built once per snapshot, or the
        file of `Snapshot.from_file`) copy-on-write instead of writing memory: pages are shared with the
        image until written, the image is the rollback base, the commitment starts from the image's page
        digests, and `verify` compares the image's root (its pages were hashed when it was built/opened)."""
        verify = bool(limits.pop("verify", False))
        cow = bool(limits.pop("cow", False))
        if not isinstance(snap, Snapshot):
            raise TypeError("snap must be a cu.engine.Snapshot")
        if snap.module_hash != module.hash:
            raise SnapshotError(
                f"snapshot belongs to module {snap.module_hash[:16]}…, not {module.hash[:16]}…"
            )
        if snap.format != module.format:
            raise SnapshotError(f"snapshot was taken under format {snap.format}, module is {module.format}")
        if cow:
            image = snap.page_image()
            if verify and snap.memory_root and bytes(image.root) != snap.memory_root:
                raise SnapshotError("the snapshot's page image does not match its page-Merkle root")
            inst = cls(module, _state=(snap._state[0], image, *snap._state[2:]), **limits)
            merkle = getattr(_native, "merkle", None)
            if merkle is not None and hasattr(merkle.PageMerkle, "seed"):
                inst._merkle = merkle.PageMerkle()
                inst._merkle.seed(inst._native.memory_view(), image.leaves)
            return inst
        state = snap._state
        if isinstance(state[1], native.PageImage):  # a plain restore of a file snapshot writes its pages
            state = (state[0], snap._encoded(), *state[2:])
        inst = cls(module, _state=state, **limits)
        if verify and snap.memory_root:
            merkle = getattr(_native, "merkle", None)
            if merkle is None:
                raise SnapshotError("cannot verify the memory root: page-Merkle not available in this build")
            if bytes(merkle.PageMerkle.full_root(inst._native.memory_view())) != snap.memory_root:
                raise SnapshotError("restored memory does not match the snapshot's page-Merkle root")
        return inst

    @property
    def last_handle_ns(self) -> int:
        """Wall time (ns) of the last call into the module's handle export (for benchmarks)."""
        return self._native.last_handle_ns

    def stats(self) -> str:
        """Rollback journal counters (bases taken, recoveries, replayed messages)."""
        return self._native.stats()
