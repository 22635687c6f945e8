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
        try:
            self._native = native.Instance(
                module._compiled,
                module._spec.family,
                _limit("memory_limit", memory_limit),
                _limit("compute_limit", compute_limit),
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

    def snapshot(self) -> Snapshot:
        state = self._native.capture()
        has_merkle = hasattr(getattr(_native, "merkle", None), "PageMerkle")
        root = self.commitment() if has_merkle else b""
        return Snapshot(module_hash=self.module.hash, format=self.module.format, state=state, memory_root=root)

    @classmethod
    def restore(cls, module: Module, snap: Snapshot, **limits: Any) -> Instance:
        """A fresh instance of `module` continuing from `snap`. `verify=True` also recomputes the page-Merkle
        root of the restored memory and compares it with the snapshot's (costs a full hash of memory)."""
        verify = bool(limits.pop("verify", False))
        if not isinstance(snap, Snapshot):
            raise TypeError("snap must be a cu.engine.Snapshot")
        if snap.module_hash != module.hash:
            raise SnapshotError(
                f"snapshot belongs to module {snap.module_hash[:16]}…, not {module.hash[:16]}…"
            )
        if snap.format != module.format:
            raise SnapshotError(f"snapshot was taken under format {snap.format}, module is {module.format}")
        inst = cls(module, _state=snap._state, **limits)
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
