"""TDX collateral that cannot be authenticated: the verifier still says which TCB status it would give, marked
UNAUTHENTICATED, and the verdict stays NOT VERIFIED (tdx.tcb.status Invalid).

Real vectors (tests/vectors/tdx, go-tdx-guest's SPR quote and PCS collateral): with the issuer chain removed,
with the documents past nextUpdate, and after the TCB Signing certificate expired (2025-05-21). Their tcbInfo has
no level this platform satisfies, so what they would give is Invalid, with the reason. Simulated collateral shows
the OutOfDate case the operator most needs to see, for each way authentication fails, and that a document whose
signature does not verify under the certificate it came with is not evaluated at all.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization

from attestation import Policy, TrustStore, verify_tdx
from attestation.collateral import load_collateral_dir
from attestation.sim import _cert, build_tdx_collateral, build_tdx_quote, make_tdx_chain

AT = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def real(vectors) -> tuple[bytes, dict[str, bytes]]:
    quote = (vectors / "tdx" / "gotdxguest_tdx_prod_quote_SPR_E4.dat").read_bytes()
    return quote, load_collateral_dir(vectors / "tdx", bytes.fromhex("50806f000000"))


@pytest.fixture(scope="module")
def sim():
    chain = make_tdx_chain()
    return chain, TrustStore.default().with_simulated(chain.root), build_tdx_quote(chain, bytes(64))


def _unauth(r) -> tuple[str | None, str]:
    return r.fields.get("tcb_status_unauthenticated"), r.fields.get("tcb_unauthenticated_note", "")


def test_real_collateral_authenticated_has_no_unauthenticated_status(real):
    quote, col = real
    r = verify_tdx(quote, at=AT, collateral=col)
    assert r.fields["tcb_status"] == "Invalid" and _unauth(r) == (None, "")
    assert "NOT AUTHENTICATED" not in r.format_text()


@pytest.mark.parametrize(("drop", "at", "because", "signer"), [
    ("tcb_info_issuer_chain", AT, "tdx.tcb_info.signing_chain", "tcbInfo signature unchecked (no issuer chain)"),
    (None, dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "tdx.tcb_info.validity",
     "tcbInfo signed by 'Intel SGX TCB Signing', not authenticated"),
    (None, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "tdx.tcb_info.signing_chain.validity",
     "tcbInfo signed by 'Intel SGX TCB Signing', not authenticated"),
])
def test_real_collateral_not_authenticated(real, drop, at, because, signer):
    quote, col = real
    col = {k: v for k, v in col.items() if k != drop}
    r = verify_tdx(quote, at=at, collateral=col)
    assert not r.ok and because in [c.name for c in r.failed()]
    status, note = _unauth(r)
    assert r.fields["tcb_status"] == "Invalid" and status == "Invalid"
    assert signer in note and "TCB level not found" in note
    assert "it would be Invalid (UNAUTHENTICATED" in r.check("tdx.tcb.status").detail


def _expired_signing_chain(chain) -> bytes:
    """The same TCB Signing key in a certificate that expired a year ago (Intel's re-certification case)."""
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    cert = _cert(chain.tcb_signing.subject, chain.root.subject, chain.tcb_signing_key.public_key(), chain.root_key,
                 ca=False, days=30, now=old)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, chain.root))


@pytest.mark.parametrize("how", ["documents expired", "signing certificate expired", "issuer chain missing"])
def test_would_be_out_of_date(sim, how):
    chain, trust, quote = sim
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    col = build_tdx_collateral(chain, platform_status="OutOfDate", now=past if how == "documents expired" else None)
    if how == "signing certificate expired":
        col["tcb_info_issuer_chain"] = col["qe_identity_issuer_chain"] = _expired_signing_chain(chain)
    if how == "issuer chain missing":
        del col["tcb_info_issuer_chain"]
    relaxed = Policy.from_json({"allow_simulated": True, "tdx": {"accepted_tcb_status": ["UpToDate", "OutOfDate"]}})
    r = verify_tdx(quote, collateral=col, policy=relaxed, trust=trust)
    assert not r.ok and r.fields["tcb_status"] == "Invalid"  # accepting OutOfDate does not accept it unauthenticated
    assert _unauth(r)[0] == "OutOfDate"
    text = r.format_text()
    assert "collateral NOT AUTHENTICATED, it would be OutOfDate (UNAUTHENTICATED" in text
    assert text.splitlines()[-1].startswith("NOT VERIFIED")
    assert r.check("tdx.tcb.status").relax is None  # the fix is fresh collateral, not a weaker policy
    # the same documents, authenticated, give exactly that status
    good = build_tdx_collateral(chain, platform_status="OutOfDate")
    assert verify_tdx(quote, collateral=good, policy=relaxed, trust=trust).fields["tcb_status"] == "OutOfDate"


def test_forged_document_is_not_evaluated(sim):
    chain, trust, quote = sim
    col = build_tdx_collateral(chain, platform_status="UpToDate")
    col["tcb_info_issuer_chain"] = col["qe_identity_issuer_chain"] = _expired_signing_chain(chain)
    forged = build_tdx_collateral(make_tdx_chain(), platform_status="UpToDate")  # someone else's key
    col["tcb_info"] = forged["tcb_info"]
    r = verify_tdx(quote, collateral=col, policy=Policy(allow_simulated=True), trust=trust)
    assert not r.ok and r.fields["tcb_status"] == "Invalid" and _unauth(r) == (None, "")
