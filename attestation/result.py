"""Verification outcome: an ordered list of named checks. Verified only if at least one check ran and all pass."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., "VerificationReport"])


@dataclass(frozen=True)
class Check:
    name: str  # stable identifier, e.g. "snp.signature", "tdx.qe_report_signature"
    ok: bool
    detail: str = ""
    relax: str | None = None  # for policy failures: which policy key would accept this evidence

    def to_dict(self) -> dict:
        out = {"name": self.name, "ok": self.ok, "detail": self.detail}
        if self.relax and not self.ok:
            out["relax"] = self.relax
        return out


@dataclass
class VerificationReport:
    kind: str  # 'snp' | 'tdx' | 'unknown'
    checks: list[Check] = field(default_factory=list)
    simulated: bool = False
    tee: str | None = None  # 'snp' | 'tdx' | 'sim-snp' | 'sim-tdx'
    fields: dict = field(default_factory=dict)  # decoded values useful to callers (product, tcb status, ...)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "", relax: str | None = None) -> bool:
        self.checks.append(Check(name, bool(ok), detail, relax))
        return bool(ok)

    def check(self, name: str) -> Check | None:
        for c in self.checks:
            if c.name == name:
                return c
        return None

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "tee": self.tee,
            "simulated": self.simulated,
            "verified": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "fields": self.fields,
        }

    def format_text(self) -> str:
        lines = []
        for c in self.checks:
            mark = "PASS" if c.ok else "FAIL"
            line = f"{mark}  {c.name}"
            if c.detail:
                line += f": {c.detail}"
            if not c.ok and c.relax:
                line += f"  [to accept, relax policy key {c.relax}]"
            lines.append(line)
        verdict = "VERIFIED" if self.ok else "NOT VERIFIED"
        if self.simulated:
            verdict += " (SIMULATED TEE — not hardware evidence)"
        lines.append(
            f"{verdict}: {self.kind} evidence, {len(self.failed())} of {len(self.checks)} checks failed"
        )
        return "\n".join(lines)


def never_raises(kind: str) -> Callable[[F], F]:
    """Turn any unexpected exception of a verifier into a failed `<kind>.internal_error` check."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> VerificationReport:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - bad input must never crash a verifier or read as verified
                rep = VerificationReport(kind=kind)
                rep.add(f"{kind}.internal_error", False, f"verification aborted: {type(exc).__name__}: {exc}")
                return rep

        return wrapper  # type: ignore[return-value]

    return deco
