"""SEV-SNP: every vector in the SEV vector directory (tests/vectors/sev) gets the outcome INDEX.md lists at 2025-06-01T00:00:00Z."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from attestation import Policy, TrustStore, verify_evidence, verify_snp
from attestation.certs import load_any, load_der, parse_amd_extensions, spki_sha256, verify_signed_by
from attestation.sim import make_snp_chain, sign_snp_report
from attestation.snp import TcbVersion, parse_report
from attestation.trust import PINNED_SPKI

AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def rd(vectors, name: str) -> bytes:
    return (vectors / "sev" / name).read_bytes()


def failed(rep) -> list[str]:
    return [c.name for c in rep.failed()]


@pytest.fixture(scope="module")
def milan(vectors):
    return (
        rd(vectors, "gosevguest_milan_attestation.bin"),
        rd(vectors, "gosevguest_milan_vcek.der"),
        rd(vectors, "gosevguest_milan_vcek_cert_chain.pem"),
    )


@pytest.fixture(scope="module")
def virtee(vectors):
    return (
        bytes.fromhex(rd(vectors, "virtee_report_milan.hex").decode()),
        rd(vectors, "virtee_vcek_milan.der"),
        rd(vectors, "virtee_cert_chain_milan.pem"),
    )


@pytest.fixture(scope="module")
def trustee(vectors):
    return rd(vectors, "trustee_test-report.bin"), rd(vectors, "trustee_test-vcek.der")


@pytest.fixture(scope="module")
def vlek(vectors):
    return (
        rd(vectors, "trustee_test-vlek-report.bin"),
        rd(vectors, "trustee_test-vlek.der"),
        rd(vectors, "gosevguest_milan_vlek_cert_chain.pem"),
    )


def policy(**snp) -> Policy:
    return Policy.from_json({"snp": snp})


# -- 1.1 gsg Milan v2 report with DEBUG ---------------------------------------------------------------------------


def test_milan_debug_report_rejected_by_default_with_check_named(milan):
    rep, vcek, chain = milan
    r = verify_snp(rep, vcek=vcek, chain=chain, at=AT)
    assert not r.ok
    assert failed(r) == ["snp.policy.debug"]
    assert r.check("snp.policy.debug").relax == "snp.allow_debug"
    for name in (
        "snp.signature",
        "snp.vcek_chain",
        "snp.ask_signature",
        "snp.ark_pinned",
        "snp.tcb.reported_matches_cert",
        "snp.chip_id",
    ):
        assert r.check(name).ok, name


def test_milan_debug_report_accepted_when_debug_allowed(milan):
    rep, vcek, chain = milan
    r = verify_snp(rep, vcek=vcek, chain=chain, at=AT, policy=policy(allow_debug=True))
    assert r.ok, r.format_text()
    assert r.fields["product"] == "Milan"


def test_milan_fields(milan):
    r = parse_report(milan[0])
    assert (r.version, r.policy, r.vmpl, r.signing_key, r.platform_info) == (2, 0xB0000, 0, 0, 1)
    assert r.current_version == (1, 49, 3)
    assert r.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert r.measurement.hex() == (
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
    )
    t = r.tcb("reported", "Milan")
    assert (t.bl, t.tee, t.snp, t.ucode) == (2, 0, 5, 68)
    assert r.current_tcb_raw == r.committed_tcb_raw == r.launch_tcb_raw == 0x4405000000000002


def test_milan_report_data_policy(milan):
    rep, vcek, chain = milan
    good = (bytes([1, 2, 3, 4, 5]) + bytes(59)).hex()
    assert verify_snp(
        rep, vcek=vcek, chain=chain, at=AT, policy=policy(allow_debug=True, report_data=good)
    ).ok
    bad = verify_snp(
        rep,
        vcek=vcek,
        chain=chain,
        at=AT,
        policy=policy(allow_debug=True, report_data=(bytes([1, 2, 3, 4, 6]) + bytes(59)).hex()),
    )
    assert failed(bad) == ["snp.policy.report_data"]


def test_milan_wrong_measurement_fails_with_check_named(milan):
    rep, vcek, chain = milan
    r = verify_snp(
        rep, vcek=vcek, chain=chain, at=AT, policy=policy(allow_debug=True, measurement=["00" * 48])
    )
    assert failed(r) == ["snp.policy.measurement"]
    right = parse_report(rep).measurement.hex()
    assert verify_snp(
        rep, vcek=vcek, chain=chain, at=AT, policy=policy(allow_debug=True, measurement=["00" * 48, right])
    ).ok


def test_milan_stepping(milan):
    rep, vcek, chain = milan
    ok = verify_snp(rep, vcek=vcek, chain=chain, at=AT, product="Milan-B0", policy=policy(allow_debug=True))
    assert ok.ok
    assert verify_snp(
        rep, vcek=vcek, chain=chain, at=AT, product="Milan-0", policy=policy(allow_debug=True)
    ).ok
    bad = verify_snp(rep, vcek=vcek, chain=chain, at=AT, product="Milan-12", policy=policy(allow_debug=True))
    assert failed(bad) == ["snp.product_name"]
    assert "expected product stepping B12" in bad.check("snp.product_name").detail


# -- 1.2 / 1.3 certificates ---------------------------------------------------------------------------------------


def test_milan_vcek_extensions(milan):
    ext = parse_amd_extensions(load_der(milan[1]))
    assert ext.struct_version == 0 and ext.product_name == "Milan-B0"
    assert (ext.bl, ext.tee, ext.snp, ext.ucode) == (2, 0, 5, 68)
    assert ext.spl_4_7 == (0, 0, 0, 0)
    assert ext.hwid == parse_report(milan[0]).chip_id


@pytest.mark.parametrize(
    "name,inter_cn",
    [
        ("gosevguest_milan_vcek_cert_chain.pem", "SEV-Milan"),
        ("gosevguest_milan_vlek_cert_chain.pem", "SEV-VLEK-Milan"),
    ],
)
def test_kds_chains(vectors, name, inter_cn):
    ask, ark = load_any(rd(vectors, name))
    assert ask.subject.rfc4514_string().startswith(f"CN={inter_cn}")
    assert verify_signed_by(ark, ark) is None
    assert verify_signed_by(ask, ark) is None
    assert spki_sha256(ark) == PINNED_SPKI["ARK-Milan"]
    assert spki_sha256(ask) == PINNED_SPKI[inter_cn]


def test_shipped_roots_match_pins():
    t = TrustStore.default()
    assert t.rejected == ()
    for product in ("Milan", "Genoa", "Turin"):
        for role, cn in (
            ("ark", f"ARK-{product}"),
            ("ask", f"SEV-{product}"),
            ("asvk", f"SEV-VLEK-{product}"),
        ):
            cert = t.amd[product][role]
            assert spki_sha256(cert) == PINNED_SPKI[cn]
            issuer = t.amd[product]["ark"]
            assert verify_signed_by(cert, issuer) is None
    assert spki_sha256(t.intel_root) == PINNED_SPKI["Intel SGX Root CA"]


# -- 1.4 virtee Milan ----------------------------------------------------------------------------------------------


def test_virtee_report_verifies(virtee):
    rep, vcek, chain = virtee
    r = verify_snp(rep, vcek=vcek, chain=chain, at=AT)
    assert r.ok, r.format_text()
    # also with the shipped chain only (no chain supplied)
    assert verify_snp(rep, vcek=vcek, at=AT).ok


def test_virtee_family_id_flip_breaks_signature(virtee):
    rep, vcek, chain = virtee
    bad = bytearray(rep)
    bad[21] ^= 0x80
    r = verify_snp(bytes(bad), vcek=vcek, chain=chain, at=AT)
    assert failed(r) == ["snp.signature"]


def test_virtee_vcek_flip_breaks_chain(virtee):
    rep, vcek, chain = virtee
    bad = bytearray(vcek)
    bad[40] ^= 0xFF
    r = verify_snp(rep, vcek=bytes(bad), chain=chain, at=AT)
    assert not r.ok and "snp.vcek_chain" in failed(r)


def test_cross_vcek_fails_signature_and_chip_id(milan, virtee):
    r = verify_snp(milan[0], vcek=virtee[1], chain=virtee[2], at=AT, policy=policy(allow_debug=True))
    assert {"snp.signature", "snp.chip_id", "snp.tcb.reported_matches_cert"} <= set(failed(r))
    r = verify_snp(virtee[0], vcek=milan[1], chain=milan[2], at=AT)
    assert {"snp.signature", "snp.chip_id"} <= set(failed(r))


# -- 1.5 Turin VCEK -------------------------------------------------------------------------------------------------


def test_turin_vcek_extensions_and_chain(vectors):
    vcek = load_der(rd(vectors, "virtee_vcek_turin.der"))
    ext = parse_amd_extensions(vcek)
    assert ext.struct_version == 1 and ext.product_name == "Turin"
    assert (ext.fmc, ext.bl, ext.tee, ext.snp, ext.ucode) == (0, 0, 0, 0, 9)
    assert ext.spl_4_7[0] is None
    assert ext.hwid == bytes.fromhex("1e550a8ee5cf9f4d")
    ask, ark = load_any(rd(vectors, "virtee_cert_chain_turin.pem"))
    assert spki_sha256(ark) == PINNED_SPKI["ARK-Turin"]
    assert verify_signed_by(ark, ark) is None and verify_signed_by(ask, ark) is None
    assert verify_signed_by(vcek, ask) is None


def test_turin_tcb_layout():
    t = TcbVersion.decode(0x6100000005020301, turin=True)
    assert (t.fmc, t.bl, t.tee, t.snp, t.ucode) == (1, 3, 2, 5, 97)
    m = TcbVersion.decode(0x6100000005020301, turin=False)
    assert (m.bl, m.tee, m.snp, m.ucode) == (1, 3, 0, 97)
    m = TcbVersion.decode(0x7308000000000003, turin=False)
    assert (m.bl, m.tee, m.snp, m.ucode) == (3, 0, 8, 115)


def test_turin_hwid_compared_with_first_8_chip_id_bytes():
    chain = make_snp_chain("Turin", chip_id=bytes(range(1, 9)) + bytes(56), now=AT)
    from attestation.sim import build_snp_report

    trust = TrustStore.default().with_simulated(chain.ark)
    pol = Policy(allow_simulated=True)
    rep = build_snp_report(chain, bytes(64))
    r = verify_snp(rep, vcek=chain.vcek_der, chain=chain.chain_pem, trust=trust, policy=pol, at=AT)
    assert r.ok, r.format_text()
    assert "CHIP_ID[0:8]" in r.check("snp.chip_id").detail
    assert r.fields["reported_tcb"] == {"fmc": 1, "bl": 3, "tee": 2, "snp": 5, "ucode": 97}
    other = bytearray(rep)
    other[0x1A0] ^= 1
    r = verify_snp(
        sign_snp_report(bytes(other), chain.vcek_key),
        vcek=chain.vcek_der,
        chain=chain.chain_pem,
        trust=trust,
        policy=pol,
        at=AT,
    )
    assert failed(r) == ["snp.chip_id"]


# -- 1.6 trustee: ID block, provisional microcode ------------------------------------------------------------------


def test_trustee_strict_rejects_provisional_firmware(trustee):
    rep, vcek = trustee
    r = verify_snp(rep, vcek=vcek, at=AT)
    assert failed(r) == ["snp.tcb.committed_vs_current"]
    assert r.check("snp.tcb.committed_vs_current").relax == "snp.permit_provisional_firmware"
    assert "snp.permit_provisional_firmware" in r.format_text()


def test_trustee_accepted_with_provisional_firmware_permitted(trustee):
    rep, vcek = trustee
    r = verify_snp(rep, vcek=vcek, at=AT, policy=policy(permit_provisional_firmware=True))
    assert r.ok, r.format_text()
    r = parse_report(rep)
    assert r.guest_svn == 4 and r.policy == 0x3001F
    assert r.id_key_digest.hex().startswith("0356215882a825279a85b300")


def test_trustee_id_key_policy(trustee):
    rep, vcek = trustee
    digest = parse_report(rep).id_key_digest.hex()
    ok = verify_snp(
        rep, vcek=vcek, at=AT, policy=policy(permit_provisional_firmware=True, id_key_digests=[digest])
    )
    assert ok.ok
    bad = verify_snp(
        rep, vcek=vcek, at=AT, policy=policy(permit_provisional_firmware=True, id_key_digests=["11" * 48])
    )
    assert failed(bad) == ["snp.policy.id_key_digest"]


def test_trustee_mutations(trustee):
    rep, vcek = trustee
    pol = policy(permit_provisional_firmware=True)
    bad = bytearray(rep)
    bad[42] = (bad[42] + 1) & 0xFF
    assert failed(verify_snp(bytes(bad), vcek=vcek, at=AT, policy=pol)) == ["snp.signature"]
    bad = bytearray(rep)
    bad[0x180] = (bad[0x180] + 1) & 0xFF
    f = failed(verify_snp(bytes(bad), vcek=vcek, at=AT, policy=pol))
    assert "snp.tcb.reported_matches_cert" in f and "snp.signature" in f


# -- 1.7 AWS VLEK v3 ------------------------------------------------------------------------------------------------


def test_vlek_strict_policy_names_vmpl_and_provisional(vlek):
    rep, cert, chain = vlek
    r = verify_snp(rep, vcek=cert, chain=chain, at=AT)
    assert sorted(failed(r)) == ["snp.policy.vmpl", "snp.tcb.committed_vs_current"]
    assert "skipped" in r.check("snp.chip_id").detail


def test_vlek_accepted_when_relaxed(vlek, vectors):
    rep, cert, chain = vlek
    pol = policy(vmpl=[0, 1], permit_provisional_firmware=True)
    r = verify_snp(rep, vcek=cert, chain=chain, at=AT, policy=pol)
    assert r.ok, r.format_text()
    assert r.fields["signer"] == "VLEK"
    # the shipped ASVK suffices too
    assert verify_snp(rep, vcek=cert, at=AT, policy=pol).ok
    # trustee's ASK+ARK+ASVK bundle is accepted as a chain
    assert verify_snp(
        rep,
        vcek=cert,
        at=AT,
        policy=pol,
        chain=(vectors / "roots" / "amd" / "trustee_milan_ask_ark_asvk.pem").read_bytes(),
    ).ok


def test_vlek_expired_after_2025_12_10(vlek):
    rep, cert, chain = vlek
    pol = policy(vmpl=[0, 1], permit_provisional_firmware=True)
    r = verify_snp(rep, vcek=cert, chain=chain, at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), policy=pol)
    assert failed(r) == ["snp.cert_validity"]
    assert "expired" in r.check("snp.cert_validity").detail


def test_vlek_presented_as_vcek_fails(vlek):
    rep, cert, chain = vlek
    pol = policy(vmpl=[0, 1], permit_provisional_firmware=True)
    bad = bytearray(rep)
    bad[0x48] &= ~0x1C  # SIGNING_KEY -> 0 (VCEK)
    f = failed(verify_snp(bytes(bad), vcek=cert, chain=chain, at=AT, policy=pol))
    assert "snp.signer_type" in f and "snp.signature" in f


def test_vcek_presented_for_vlek_report_fails(vlek, virtee):
    rep = vlek[0]
    pol = policy(vmpl=[0, 1], permit_provisional_firmware=True)
    f = failed(verify_snp(rep, vcek=virtee[1], at=AT, policy=pol))
    assert "snp.signer_type" in f and "snp.signature" in f


# -- look-alike ARK and swapped root files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def forged_milan():
    """A self-made chain with AMD's exact names (ARK-Milan, SEV-Milan, SEV-VCEK) and a report it signs."""
    from attestation.sim import build_snp_report

    chain = make_snp_chain("Milan", prefix="", org="Advanced Micro Devices", rsa_bits=2048, now=AT)
    return chain, build_snp_report(chain, bytes(64))


def test_lookalike_ark_fails_on_pin(forged_milan):
    chain, rep = forged_milan
    r = verify_snp(rep, vcek=chain.vcek_der, chain=chain.chain_pem, at=AT)
    assert not r.ok
    assert r.check("snp.ark_pinned") and not r.check("snp.ark_pinned").ok
    assert "look-alike" in r.check("snp.ark_pinned").detail
    # without its chain the forged VCEK does not chain to the shipped ASK either
    r = verify_snp(rep, vcek=chain.vcek_der, at=AT)
    assert "snp.vcek_chain" in failed(r)


def test_lookalike_ark_cannot_be_trusted_as_simulated(forged_milan):
    chain, _ = forged_milan
    with pytest.raises(ValueError):
        TrustStore.default().with_simulated(chain.ark)


def test_swapped_root_file_is_rejected(tmp_path, forged_milan, virtee):
    chain, rep = forged_milan
    (tmp_path / "amd").mkdir()
    (tmp_path / "amd" / "ask_ark_milan.pem").write_bytes(chain.chain_pem)
    store = TrustStore.from_directory(tmp_path)
    assert "Milan" not in store.amd
    assert len(store.rejected) == 2 and "does not match the pinned SPKI" in store.rejected[0]
    r = verify_snp(rep, vcek=chain.vcek_der, chain=chain.chain_pem, at=AT, trust=store)
    assert "snp.ark_pinned" in failed(r)
    r = verify_snp(virtee[0], vcek=virtee[1], chain=virtee[2], at=AT, trust=store)
    assert "snp.ark_pinned" in failed(r)


# -- any flipped byte fails -------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", list(range(0, 0x4A0, 5)))
def test_any_report_byte_flip_fails(virtee, offset):
    rep, vcek, chain = virtee
    bad = bytearray(rep)
    bad[offset] ^= 0x01
    r = verify_snp(bytes(bad), vcek=vcek, chain=chain, at=AT)
    assert not r.ok


def _reencode(certs: list[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def _pem(der_list: list[bytes]) -> bytes:
    import base64

    out = b""
    for d in der_list:
        b = base64.encodebytes(d).replace(b"\n", b"")
        lines = b"\n".join(b[i : i + 64] for i in range(0, len(b), 64))
        out += b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"
    return out


def test_any_certificate_byte_flip_fails(virtee):
    rep, vcek, chain = virtee
    ask_der, ark_der = _reencode(load_any(chain))
    assert verify_snp(rep, vcek=vcek, chain=_pem([ask_der, ark_der]), at=AT).ok
    failures = []
    for off in range(0, len(vcek), 3):
        bad = bytearray(vcek)
        bad[off] ^= 0x01
        if verify_snp(rep, vcek=bytes(bad), chain=chain, at=AT).ok:
            failures.append(("vcek", off))
    for which, der_ in (("ask", ask_der), ("ark", ark_der)):
        for off in range(0, len(der_), 7):
            bad = bytearray(der_)
            bad[off] ^= 0x01
            pair = [bytes(bad), ark_der] if which == "ask" else [ask_der, bytes(bad)]
            if verify_snp(rep, vcek=vcek, chain=_pem(pair), at=AT).ok:
                failures.append((which, off))
    assert failures == []


# -- verify_evidence dispatch ------------------------------------------------------------------------------------


def test_verify_evidence_detects_snp_hex_and_binary(virtee, vectors):
    rep, vcek, _ = virtee
    assert verify_evidence(rep, vcek=vcek, at=AT).ok
    assert verify_evidence(rd(vectors, "virtee_report_milan.hex"), vcek=vcek, at=AT).ok
    assert verify_evidence(b"\x20" + rep[1:], vcek=vcek, at=AT).check("evidence.parse") is not None


def test_snp_public_key_digest_format():
    from cryptography.hazmat.primitives.asymmetric import ec

    from attestation.snp import snp_public_key_digest

    k = ec.generate_private_key(ec.SECP384R1()).public_key()
    n = k.public_numbers()
    blob = (2).to_bytes(4, "little") + n.x.to_bytes(72, "little") + n.y.to_bytes(72, "little")
    assert snp_public_key_digest(k) == hashlib.sha384(blob + bytes(0x404 - len(blob))).digest()


# -- AMD CRL (ARK-signed) ----------------------------------------------------------------------------------------


def _crl(chain, *, revoke_ask: bool, this: dt.datetime, nxt: dt.datetime) -> bytes:
    from cryptography.hazmat.primitives import hashes

    from attestation.sim import PSS384

    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(chain.ark.subject)
        .last_update(this)
        .next_update(nxt)
    )
    if revoke_ask:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(chain.ask.serial_number)
            .revocation_date(this)
            .build()
        )
    crl = b.sign(chain.ark_key, hashes.SHA384(), rsa_padding=PSS384)
    return crl.public_bytes(serialization.Encoding.DER)


def test_snp_crl_checks():
    from attestation.sim import build_snp_report

    chain = make_snp_chain("Genoa", now=AT)
    rep = build_snp_report(chain, bytes(64))
    trust = TrustStore.default().with_simulated(chain.ark)
    pol = Policy(allow_simulated=True)
    day = dt.timedelta(days=1)
    kw = dict(vcek=chain.vcek_der, chain=chain.chain_pem, trust=trust, policy=pol, at=AT)
    good = _crl(chain, revoke_ask=False, this=AT - day, nxt=AT + day)
    r = verify_snp(rep, crl=good, **kw)
    assert r.ok and r.check("snp.crl").ok, r.format_text()
    r = verify_snp(rep, crl=_crl(chain, revoke_ask=True, this=AT - day, nxt=AT + day), **kw)
    assert failed(r) == ["snp.crl"] and "revoked" in r.check("snp.crl").detail
    r = verify_snp(rep, crl=_crl(chain, revoke_ask=False, this=AT - 3 * day, nxt=AT - day), **kw)
    assert failed(r) == ["snp.crl"] and "nextUpdate" in r.check("snp.crl").detail
    other = make_snp_chain("Genoa", now=AT)
    r = verify_snp(rep, crl=_crl(other, revoke_ask=False, this=AT - day, nxt=AT + day), **kw)
    assert failed(r) == ["snp.crl"]
    bad = bytearray(good)
    bad[-5] ^= 1
    assert failed(verify_snp(rep, crl=bytes(bad), **kw)) == ["snp.crl"]


def test_report_versions_4_and_platform_info_unknown_bits():
    from attestation.sim import build_snp_report

    chain = make_snp_chain("Genoa", now=AT)
    trust = TrustStore.default().with_simulated(chain.ark)
    pol = Policy(allow_simulated=True)
    kw = dict(vcek=chain.vcek_der, chain=chain.chain_pem, trust=trust, policy=pol, at=AT)
    v4 = build_snp_report(chain, bytes(64), version=4)
    assert parse_report(v4).version == 4 and verify_snp(v4, **kw).ok
    # PLATFORM_INFO bit 6 (set on real Turin reports) is reported, never fatal
    raw = bytearray(build_snp_report(chain, bytes(64), version=5))
    raw[0x40] = 0x65
    rep = sign_snp_report(bytes(raw), chain.vcek_key)
    assert parse_report(rep).describe("Genoa")["platform_info"]["unknown_bits"] == "0x40"
    assert verify_snp(rep, **kw).ok
    # POLICY bits 63:26 must be zero: reported by name, and verification fails
    raw = bytearray(build_snp_report(chain, bytes(64)))
    raw[0x0F] = 0x01
    rep = sign_snp_report(bytes(raw), chain.vcek_key)
    assert parse_report(rep).describe("Genoa")["policy"]["unknown_bits"] != "0x0"
    assert failed(verify_snp(rep, **kw)) == ["snp.format"]


def test_binding_helpers():
    from attestation.binding import fresh_report_data, key_binding_report_data, report_data_matches

    rd = key_binding_report_data(b"\x01" * 512, b"\x02" * 32, 7, b"\x03" * 32)
    assert (
        rd
        == hashlib.sha512(
            b"aocu/key-binding/v1\x00" + b"\x01" * 512 + b"\x02" * 32 + (7).to_bytes(8, "big") + b"\x03" * 32
        ).digest()
    )
    assert fresh_report_data(b"d", b"n") == hashlib.sha512(b"aocu/result/v1\x00dn").digest()
    assert report_data_matches(rd, rd) and not report_data_matches(rd[:63], rd[:63])


def test_milan_vcek_chain_at_gsg_cert_test_time(milan):
    rep, vcek, chain = milan
    at = dt.datetime(2022, 9, 24, 1, 0, tzinfo=dt.UTC)
    r = verify_snp(rep, vcek=vcek, chain=chain, at=at, policy=policy(allow_debug=True))
    assert r.ok, r.format_text()
    r = verify_snp(
        rep,
        vcek=vcek,
        chain=chain,
        at=dt.datetime(2022, 9, 24, 0, 0, tzinfo=dt.UTC),
        policy=policy(allow_debug=True),
    )
    assert failed(r) == ["snp.cert_validity"] and "not yet valid" in r.check("snp.cert_validity").detail
