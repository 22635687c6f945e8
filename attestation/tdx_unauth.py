"""The TCB status that TDX collateral would give when it cannot be authenticated, for the operator only.

An expired TCB Signing certificate, a missing issuer chain or a document past its nextUpdate makes the
collateral unusable, and verification says Invalid. An operator still wants to know what the documents say ("it
would be OutOfDate"): whether to fetch fresh collateral or to update the platform. This evaluates the documents
on a scratch report, so none of its checks reads as a PASS, and records the result as fields that
`tdx.tcb.status` shows marked UNAUTHENTICATED. It is never a verdict: the authentication checks have already
failed and the status stays Invalid. Nothing is evaluated when a document's signature does not verify under the
certificate it came with (then anyone could have written it).
"""

from __future__ import annotations

from collections.abc import Callable

from .certs import cn, load_any
from .collateral import split_signed_json, verify_p256
from .errors import ParseError
from .result import VerificationReport

DOCS = (("tcb_info", "tcbInfo"), ("qe_identity", "enclaveIdentity"))


def unauthenticated_status(
    rep: VerificationReport, col: dict[str, bytes], evaluate: Callable[[VerificationReport, dict, dict], str],
) -> None:
    """Set rep.fields tcb_status_unauthenticated (the status) and tcb_unauthenticated_note (why, and what the
    documents said), or leave them unset when the documents cannot even be read or are not genuinely signed."""
    values, notes = [], []
    for key, member in DOCS:
        try:
            signed, value, sig = split_signed_json(col[key], member)
        except (ParseError, KeyError):
            return
        try:
            signer = load_any(col[f"{key}_issuer_chain"])[0] if col.get(f"{key}_issuer_chain") else None
        except ParseError:
            signer = None
        if signer is not None and not verify_p256(signer.public_key(), sig, signed):
            return
        notes.append(f"{member} signed by {cn(signer.subject)!r}, not authenticated" if signer
                     else f"{member} signature unchecked (no issuer chain)")
        values.append(value)
    scratch = VerificationReport(kind="tdx")
    try:
        status = evaluate(scratch, values[0], values[1])
    except (ParseError, KeyError, TypeError, ValueError, AttributeError):
        return
    rep.fields["tcb_status_unauthenticated"] = status
    rep.fields["tcb_unauthenticated_note"] = "; ".join(notes + [f"{c.name}: {c.detail}" for c in scratch.failed()])


def status_note(rep: VerificationReport) -> str:
    """The `tdx.tcb.status` detail suffix for an unauthenticated evaluation ('' when there was none)."""
    status = rep.fields.get("tcb_status_unauthenticated")
    if status is None:
        return ""
    return (f"; collateral NOT AUTHENTICATED, it would be {status} "
            f"(UNAUTHENTICATED, not a verdict: {rep.fields['tcb_unauthenticated_note']})")
