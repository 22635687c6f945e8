"""Intel TDX: the vectors of the TDX vector directory (tests/vectors/tdx) at 2023-07-01T01:00:00Z, the gtg mutation table, collateral."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization

from attestation import Policy, TrustStore, verify_evidence, verify_tdx
from attestation.certs import load_any
from attestation.collateral import load_collateral_dir, split_signed_json, verify_p256
from attestation.sim import build_tdx_collateral, build_tdx_quote, make_tdx_chain
from attestation.tdx import parse_quote
from attestation.verify_tdx import module_identity

AT = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)
NOT_EVALUATED_OK = Policy.from_json({"tdx": {"accepted_tcb_status": ["UpToDate", "NotEvaluated"]}})


def failed(rep) -> list[str]:
    return [c.name for c in rep.failed()]


@pytest.fixture(scope="module")
def quote(vectors) -> bytes:
    return (vectors / "tdx" / "gotdxguest_tdx_prod_quote_SPR_E4.dat").read_bytes()


@pytest.fixture(scope="module")
def collateral(vectors) -> dict[str, bytes]:
    return load_collateral_dir(vectors / "tdx", bytes.fromhex("50806f000000"))


def test_quote_fields(quote):
    q = parse_quote(quote)
    assert (q.version, q.ak_type, q.tee_type, q.trailing, len(q.qe_auth_data)) == (4, 2, 0x81, 39, 32)
    b = q.body
    assert b.tee_tcb_svn.hex() == "03000400000000000000000000000000"
    assert b.mr_td.hex().startswith("6363b8043668a3ad")
    assert b.td_attributes.hex() == "0000004000000000" and not b.debug
    assert b.xfam.hex() == "e71a060000000000"
    assert q.qe_report.isv_svn == 4 and q.qe_report.isv_prod_id == 2
    assert q.qe_report.mr_signer.hex() == "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"


def test_raw_quote_without_collateral(quote):
    # every cryptographic check passes; the strict default refuses an unevaluated TCB, and says which key to relax
    r = verify_tdx(quote, at=AT)
    assert failed(r) == ["tdx.tcb.status"]
    assert r.check("tdx.tcb.status").relax == "tdx.accepted_tcb_status"
    for name in (
        "tdx.quote_signature",
        "tdx.qe_report_signature",
        "tdx.ak_binding",
        "tdx.pck_chain.root_pinned",
        "tdx.pck_chain.leaf_signature",
        "tdx.pck_chain.intermediate_signature",
    ):
        assert r.check(name).ok
    # gtg RawTdxQuote at the pin without collateral -> success
    assert verify_tdx(quote, at=AT, policy=NOT_EVALUATED_OK).ok


def test_raw_quote_after_pck_expiry(quote):
    r = verify_tdx(quote, at=dt.datetime(2053, 7, 1, 1, tzinfo=dt.UTC), policy=NOT_EVALUATED_OK)
    assert failed(r) == ["tdx.pck_chain.validity"]
    assert "2029-09-20" in r.check("tdx.pck_chain.validity").detail


@pytest.mark.parametrize(
    "offset,value,expected",
    [
        (0x000, 0x03, "tdx.parse"),
        (0x278, 0x10, "tdx.parse"),
        (0x1343, 0x32, None),
        (0x1329, 0x32, None),
        (0xF5F, 0x32, None),
        (0xB77, 0x32, None),
        (0x01E, 0x32, "tdx.quote_signature"),
        (0x03C, 0x32, "tdx.quote_signature"),
    ],
)
def test_gtg_mutation_table(quote, offset, value, expected):
    bad = bytearray(quote)
    bad[offset] = value
    r = verify_tdx(bytes(bad), at=AT, policy=NOT_EVALUATED_OK)
    assert not r.ok
    if expected:
        assert expected in failed(r)
    else:
        assert any(n.startswith("tdx.pck_chain") for n in failed(r)), failed(r)
    if offset == 0:
        assert "quote format not supported" in r.check("tdx.parse").detail
    if offset == 0x278:
        assert "size of certificate data is 0xf8a. Expected size 0x1045" in r.check("tdx.parse").detail


def test_full_collateral_tcb_level_not_found(quote, collateral):
    assert {"tcb_info", "qe_identity", "tcb_info_issuer_chain", "pck_crl", "root_crl"} <= set(collateral)
    r = verify_tdx(quote, at=AT, collateral=collateral)
    assert sorted(failed(r)) == ["tdx.tcb.platform_level", "tdx.tcb.status"]
    assert "TCB level not found" in r.check("tdx.tcb.platform_level").detail
    for name in (
        "tdx.tcb_info.signature",
        "tdx.qe_identity.signature",
        "tdx.tcb_info.platform_match",
        "tdx.qe_identity.match",
        "tdx.tdx_module",
        "tdx.crl.pck",
        "tdx.crl.root",
        "tdx.tcb.qe_level",
    ):
        assert r.check(name).ok, name
    assert "UpToDate" in r.check("tdx.tcb.qe_level").detail


def test_collateral_expired(quote, collateral):
    r = verify_tdx(quote, at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC), collateral=collateral)
    assert {"tdx.tcb_info.validity", "tdx.qe_identity.validity", "tdx.crl.pck"} <= set(failed(r))
    assert "expired" in r.check("tdx.tcb_info.validity").detail
    r = verify_tdx(quote, at=dt.datetime(2023, 7, 10, tzinfo=dt.UTC), collateral=collateral)
    assert "tdx.qe_identity.validity" in failed(r) and "tdx.crl.pck" in failed(r)


def test_tcb_info_signature_over_exact_bytes(vectors):
    body = (vectors / "tdx" / "gotdxguest_sample_tcbInfo_response.json").read_bytes()
    signed, value, sig = split_signed_json(body, "tcbInfo")
    signer = load_any((vectors / "tdx" / "gotdxguest_tcbInfoIssuerChain.pem").read_bytes())[0]
    assert verify_p256(signer.public_key(), sig, signed)
    # re-serialising would not verify: the check must use the served bytes
    assert not verify_p256(signer.public_key(), sig, json.dumps(value).encode())
    v5 = (vectors / "tdx" / "gotdxguest_sample_tcbinfo_response_v5.json").read_bytes()
    signed5, value5, sig5 = split_signed_json(v5, "tcbInfo")
    assert verify_p256(signer.public_key(), sig5, signed5)
    assert value5["fmspc"] == "90c06f000000"


def test_module_identity_lookup_v5(vectors):
    v5 = json.loads((vectors / "tdx" / "gotdxguest_sample_tcbinfo_response_v5.json").read_bytes())["tcbInfo"]
    ident, level = module_identity(v5, bytes([6, 1] + [0] * 14))
    assert ident["id"] == "TDX_01" and level["tcbStatus"] == "UpToDate"
    _, level = module_identity(v5, bytes([5, 1] + [0] * 14))
    assert level["tcbStatus"] == "OutOfDate"
    _, level = module_identity(v5, bytes([1, 1] + [0] * 14))
    assert level is None
    ident, level = module_identity(v5, bytes([3, 3] + [0] * 14))
    assert ident["id"] == "TDX_03" and level["tcbStatus"] == "UpToDate"
    assert module_identity(v5, bytes([3, 2] + [0] * 14)) == (None, None)


def test_tcbinfo_for_other_fmspc_fails_platform_match(quote, collateral, vectors):
    col = dict(collateral)
    col["tcb_info"] = (vectors / "tdx" / "gotdxguest_sample_tcbinfo_response_v5.json").read_bytes()
    # at a time inside that document's window its signing certificate has expired (INDEX 2.4)
    r = verify_tdx(quote, at=dt.datetime(2026, 2, 10, tzinfo=dt.UTC), collateral=col)
    assert "tdx.tcb_info.signing_chain.validity" in failed(r)


def test_crl_signed_by_wrong_issuer(quote, collateral):
    col = dict(collateral)
    col["pck_crl"] = collateral["root_crl"]  # root-signed CRL presented as the PCK CRL
    r = verify_tdx(quote, at=AT, collateral=col)
    assert "tdx.crl.pck" in failed(r)
    assert "expected issuer" in r.check("tdx.crl.pck").detail


def test_any_collateral_byte_flip_fails_a_collateral_check(quote, collateral):
    base_failed = set(failed(verify_tdx(quote, at=AT, collateral=collateral)))
    survivors = []
    for key in ("tcb_info", "qe_identity"):
        doc = collateral[key]
        for off in range(0, len(doc), 3):
            bad = bytearray(doc)
            bad[off] ^= 0x01
            col = {**collateral, key: bytes(bad)}
            f = set(failed(verify_tdx(quote, at=AT, collateral=col)))
            if f <= base_failed:
                survivors.append((key, off))
    assert survivors == []


# -- simulated TDX: full passing path, status convergence, flips -------------------------------------------------


@pytest.fixture(scope="module")
def sim():
    chain = make_tdx_chain()
    trust = TrustStore.default().with_simulated(chain.root)
    return chain, trust, Policy(allow_simulated=True)


def test_sim_tdx_verifies_only_with_trusted_root(sim):
    chain, trust, pol = sim
    q = build_tdx_quote(chain, bytes(range(64)))
    col = build_tdx_collateral(chain)
    r = verify_tdx(q, collateral=col, policy=pol, trust=trust)
    assert r.ok and r.simulated and r.tee == "sim-tdx", r.format_text()
    assert r.fields["tcb_status"] == "UpToDate"
    r = verify_tdx(q, collateral=col, policy=pol)
    assert "tdx.pck_chain.root_pinned" in failed(r)
    r = verify_tdx(q, collateral=col, policy=Policy(), trust=trust)
    assert failed(r) == ["tdx.simulated"]


def test_ak_binding_required(sim):
    chain, trust, pol = sim
    q = build_tdx_quote(chain, bytes(64), bind_ak=False)
    r = verify_tdx(q, collateral=build_tdx_collateral(chain), policy=pol, trust=trust)
    assert failed(r) == ["tdx.ak_binding"]


def test_debug_td_refused(sim):
    chain, trust, pol = sim
    q = build_tdx_quote(chain, bytes(64), debug=True)
    r = verify_tdx(q, collateral=build_tdx_collateral(chain), policy=pol, trust=trust)
    assert failed(r) == ["tdx.policy.debug"]
    assert r.check("tdx.policy.debug").relax == "tdx.allow_debug"
    pol2 = Policy.from_json({"allow_simulated": True, "tdx": {"allow_debug": True}})
    assert verify_tdx(q, collateral=build_tdx_collateral(chain), policy=pol2, trust=trust).ok


def test_wrong_mrtd_and_rtmr(sim):
    chain, trust, _ = sim
    q = build_tdx_quote(chain, bytes(64))
    good = parse_quote(q).body.mr_td.hex()
    col = build_tdx_collateral(chain)
    pol = Policy.from_json({"allow_simulated": True, "tdx": {"mrtd": ["00" * 48], "rtmr0": "11" * 48}})
    r = verify_tdx(q, collateral=col, policy=pol, trust=trust)
    assert sorted(failed(r)) == ["tdx.policy.mrtd", "tdx.policy.rtmr0"]
    pol = Policy.from_json({"allow_simulated": True, "tdx": {"mrtd": [good], "rtmr0": "00" * 48}})
    assert verify_tdx(q, collateral=col, policy=pol, trust=trust).ok


@pytest.mark.parametrize(
    "platform,module_levels,svn,qe,expected",
    [
        ("UpToDate", [(6, "UpToDate"), (4, "OutOfDate")], 6, "UpToDate", "UpToDate"),
        # Intel convergence: an OutOfDate module makes an UpToDate platform OutOfDate (go-tdx-guest would pass it)
        ("UpToDate", [(6, "UpToDate"), (4, "OutOfDate")], 4, "UpToDate", "OutOfDate"),
        (
            "ConfigurationNeeded",
            [(6, "UpToDate"), (4, "OutOfDate")],
            4,
            "UpToDate",
            "OutOfDateConfigurationNeeded",
        ),
        ("SWHardeningNeeded", [(6, "UpToDate")], 6, "UpToDate", "SWHardeningNeeded"),
        ("UpToDate", None, 3, "OutOfDate", "OutOfDate"),
        ("OutOfDate", [(6, "UpToDate")], 6, "UpToDate", "OutOfDate"),
        ("Revoked", None, 3, "UpToDate", "Revoked"),
        ("UpToDate", None, 2, "UpToDate", "OutOfDate"),  # TEE_TCB_SVN[0] below the first level: second level
    ],
)
def test_tcb_status_convergence(sim, platform, module_levels, svn, qe, expected):
    chain, trust, pol = sim
    major = 1 if module_levels else 0
    q = build_tdx_quote(chain, bytes(64), tee_tcb_svn=bytes([svn, major, 5] + [0] * 13))
    col = build_tdx_collateral(chain, platform_status=platform, module_levels=module_levels, qe_status=qe)
    r = verify_tdx(q, collateral=col, policy=pol, trust=trust)
    assert r.fields["tcb_status"] == expected
    assert r.ok == (expected == "UpToDate")
    if expected not in ("UpToDate", "Revoked"):
        relaxed = Policy.from_json(
            {"allow_simulated": True, "tdx": {"accepted_tcb_status": ["UpToDate", expected]}}
        )
        assert verify_tdx(q, collateral=col, policy=relaxed, trust=trust).ok
    if expected == "Revoked":
        relaxed = Policy.from_json(
            {"allow_simulated": True, "tdx": {"accepted_tcb_status": ["UpToDate", "OutOfDate"]}}
        )
        assert not verify_tdx(q, collateral=col, policy=relaxed, trust=trust).ok


def test_module_svn_below_all_levels(sim):
    chain, trust, pol = sim
    q = build_tdx_quote(chain, bytes(64), tee_tcb_svn=bytes([1, 1, 5] + [0] * 13))
    col = build_tdx_collateral(chain, module_levels=[(6, "UpToDate"), (4, "OutOfDate")])
    assert "tdx.tcb.module_level" in failed(verify_tdx(q, collateral=col, policy=pol, trust=trust))


def test_collateral_for_other_fmspc(sim):
    chain, trust, pol = sim
    q = build_tdx_quote(chain, bytes(64))
    col = build_tdx_collateral(chain, fmspc=bytes.fromhex("50806f000000"))
    assert "tdx.tcb_info.platform_match" in failed(verify_tdx(q, collateral=col, policy=pol, trust=trust))


def test_sim_collateral_any_flip_fails(sim):
    chain, trust, pol = sim
    q = build_tdx_quote(chain, bytes(64))
    col = build_tdx_collateral(chain)
    assert verify_tdx(q, collateral=col, policy=pol, trust=trust).ok
    survivors = []
    for key in ("tcb_info", "qe_identity"):
        for off in range(0, len(col[key]), 2):
            bad = bytearray(col[key])
            bad[off] ^= 0x01
            if verify_tdx(q, collateral={**col, key: bytes(bad)}, policy=pol, trust=trust).ok:
                survivors.append((key, off))
    assert survivors == []


def _rebuild_with_chain(quote: bytes, ders: list[bytes]) -> bytes:
    q = parse_quote(quote)
    pem = b""
    for d in ders:
        b = base64.encodebytes(d).replace(b"\n", b"")
        pem += (
            b"-----BEGIN CERTIFICATE-----\n"
            + b"\n".join(b[i : i + 64] for i in range(0, len(b), 64))
            + b"\n-----END CERTIFICATE-----\n"
        )
    old = q.pck_chain_pem
    assert len(pem) <= len(old)
    pem = pem + old[len(pem) :]  # keep sizes (the original is NUL-terminated / same length when re-encoded)
    start = quote.index(old)
    return quote[:start] + pem + quote[start + len(old) :]


def test_any_signed_byte_or_certificate_flip_fails(quote):
    q = parse_quote(quote)
    end_signed = len(quote) - q.trailing
    pem_start = quote.index(q.pck_chain_pem)
    survivors = []
    for off in range(0, pem_start, 3):
        bad = bytearray(quote)
        bad[off] ^= 0x01
        if verify_tdx(bytes(bad), at=AT, policy=NOT_EVALUATED_OK).ok:
            survivors.append(off)
    ders = [c.public_bytes(serialization.Encoding.DER) for c in load_any(q.pck_chain_pem)]
    base = _rebuild_with_chain(quote, ders)
    assert verify_tdx(base, at=AT, policy=NOT_EVALUATED_OK).ok
    for i, d in enumerate(ders):
        for off in range(0, len(d), 5):
            bad = bytearray(d)
            bad[off] ^= 0x01
            mutated = _rebuild_with_chain(quote, [*ders[:i], bytes(bad), *ders[i + 1 :]])
            if verify_tdx(mutated, at=AT, policy=NOT_EVALUATED_OK).ok:
                survivors.append(("cert", i, off))
    assert end_signed > pem_start
    assert survivors == []


def test_lookalike_intel_root_fails_on_pin():
    forged = make_tdx_chain(prefix="", org="Intel Corporation", now=AT)
    q = build_tdx_quote(forged, bytes(64))
    col = build_tdx_collateral(forged, now=AT)
    r = verify_tdx(q, at=AT, collateral=col, policy=NOT_EVALUATED_OK)
    assert not r.ok
    assert "tdx.pck_chain.root_pinned" in failed(r)
    assert "not the Intel SGX Root CA" in r.check("tdx.pck_chain.root_pinned").detail
    # the forged chain cannot be smuggled in as a "simulated" root either
    with pytest.raises(ValueError):
        TrustStore.default().with_simulated(forged.root)


def test_verify_evidence_detects_tdx(quote):
    r = verify_evidence(quote, at=AT, policy=NOT_EVALUATED_OK)
    assert r.kind == "tdx" and r.ok


@pytest.mark.parametrize("body_type", [2, 3])
def test_sim_tdx_v5_quote(sim, body_type):
    chain, trust, pol = sim
    q = build_tdx_quote(chain, bytes(range(64)), version=5, body_type=body_type)
    parsed = parse_quote(q)
    assert parsed.version == 5 and parsed.body_type == body_type
    assert (parsed.body.mr_service_td is not None) == (body_type == 3)
    assert parsed.body.report_data == bytes(range(64))
    r = verify_tdx(q, collateral=build_tdx_collateral(chain), policy=pol, trust=trust)
    assert r.ok, r.format_text()
    bad = bytearray(q)
    bad[0x31] ^= 1  # body type/size field, covered by the signature and the parser
    assert not verify_tdx(bytes(bad), collateral=build_tdx_collateral(chain), policy=pol, trust=trust).ok
    bad = bytearray(q)
    bad[0x36 + 200] ^= 1  # inside the body
    r = verify_tdx(bytes(bad), collateral=build_tdx_collateral(chain), policy=pol, trust=trust)
    assert failed(r) == ["tdx.quote_signature"]


def test_revoked_pck_leaf_rejected(sim):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    chain, trust, pol = sim
    now = dt.datetime.now(dt.UTC)
    q = build_tdx_quote(chain, bytes(64))

    def crl(revoked: bool) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(chain.ca.subject)
            .last_update(now - dt.timedelta(days=1))
            .next_update(now + dt.timedelta(days=1))
        )
        if revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(chain.pck.serial_number)
                .revocation_date(now)
                .build()
            )
        return b.sign(chain.ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    col = build_tdx_collateral(chain)
    assert verify_tdx(q, collateral={**col, "pck_crl": crl(False)}, policy=pol, trust=trust).ok
    r = verify_tdx(q, collateral={**col, "pck_crl": crl(True)}, policy=pol, trust=trust)
    assert failed(r) == ["tdx.crl.pck"] and "revoked" in r.check("tdx.crl.pck").detail
