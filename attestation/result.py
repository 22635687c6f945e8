"""Verification outcome: an ordered list of named checks. Verified only if at least one check ran and all pass."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import ParseError

F = TypeVar("F", bound=Callable[..., "VerificationReport"])
P = TypeVar("P")


@dataclass(frozen=True)
class Check:
    name: str  # stable identifier, e.g. "snp.signature", "tdx.qe_report_signature"
    ok: bool
    detail: str = ""
    relax: str | None = None  # for policy failures: which policy key would accept this evidence
    skipped: bool = False  # nothing to check (the policy leaves this value unconstrained); counts as ok

    @property
    def mark(self) -> str:
        return "SKIP" if self.skipped else "PASS" if self.ok else "FAIL"

    def to_dict(self) -> dict:
        out = {"name": self.name, "ok": self.ok, "skipped": self.skipped, "detail": self.detail}
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

    def skip(self, name: str, detail: str) -> None:
        """A check the policy does not constrain: shown as SKIP (never as a PASS), not counted as a failure."""
        self.checks.append(Check(name, True, detail, skipped=True))

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
            line = f"{c.mark}  {c.name}"
            if c.detail:
                line += f": {c.detail}"
            if not c.ok and c.relax:
                line += f"  [to accept, relax policy key {c.relax}]"
            lines.append(line)
        verdict = "VERIFIED" if self.ok else "NOT VERIFIED"
        if self.simulated:
            verdict += " (SIMULATED TEE — not hardware evidence)"
        skipped = sum(c.skipped for c in self.checks)
        lines.append(
            f"{verdict}: {self.kind} evidence, {len(self.failed())} of {len(self.checks) - skipped} checks failed"
            + (f", {skipped} not constrained (SKIP)" if skipped else "")
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


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        raise ValueError("verification time must be timezone-aware (UTC)")
    return at.astimezone(dt.UTC)


def start_verification(
    kind: str, evidence: bytes, parse: Callable[[bytes], P], at: dt.datetime | None
) -> tuple[VerificationReport, tuple[P, dt.datetime] | None]:
    """A verifier's first steps: its report, then (parsed evidence, verification time in UTC). None instead of the
    pair when the time (not timezone-aware: a failed `<kind>.time` check) or the evidence (a ParseError: a failed
    `<kind>.parse` check) is unusable, and the report is the verifier's result."""
    rep = VerificationReport(kind=kind, tee=kind)
    try:
        now = _utc(at)
    except ValueError as exc:
        rep.add(f"{kind}.time", False, str(exc))
        return rep, None
    try:
        parsed = parse(evidence)
    except ParseError as exc:
        rep.add(f"{kind}.parse", False, str(exc))
        return rep, None
    return rep, (parsed, now)


def check_reference(
    rep: VerificationReport, name: str, key: str, actual: bytes, expected: bytes | list[bytes] | None
) -> None:
    """Check `name`: `actual` is the policy's reference value `<kind>.<key>` (or one of its list). SKIP, showing
    the value, when the policy sets none. A mismatch names no key to relax: a different measurement or identity
    is a different guest, and the fix is the right reference value, not a weaker policy."""
    ref = f"{rep.kind}.{key}"
    if expected is None:
        rep.skip(name, f"not constrained (no {ref} reference value) — value {actual.hex()}")
        return
    allowed = expected if isinstance(expected, list) else [expected]
    ok = actual in allowed
    if ok:
        rep.add(name, True, f"{actual.hex()} matches {ref}")
    else:
        shown = ", ".join(a.hex() for a in allowed[:3]) + (" …" if len(allowed) > 3 else "")
        rep.add(name, False, f"{actual.hex()} is not the expected {ref} ({shown or 'an empty list'})")
