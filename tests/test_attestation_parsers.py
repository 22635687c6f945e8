"""Parser robustness (hypothesis fuzz), policy file validation, cert tables, and the KDS cache/rate limit."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import ParseError, Policy, PolicyError, verify_evidence, verify_snp, verify_tdx
from attestation.collateral import split_signed_json
from attestation.evidence import load_evidence
from attestation.kds import KdsClient, KdsError, vcek_path
from attestation.snp import build_cert_table, parse_cert_table, parse_report
from attestation.tdx import parse_quote

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SNP_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TDX_AT = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def snp_report(vectors) -> bytes:
    return (vectors / "sev" / "trustee_test-report.bin").read_bytes()


@pytest.fixture(scope="module")
def tdx_quote(vectors) -> bytes:
    return (vectors / "tdx" / "gotdxguest_tdx_prod_quote_SPR_E4.dat").read_bytes()


# -- fuzz -----------------------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=3000))
def test_fuzz_random_bytes_never_crash(data):
    for parser in (parse_report, parse_quote, parse_cert_table, load_evidence):
        try:
            parser(data)
        except ParseError:
            pass
    rep = verify_evidence(data)
    assert not rep.ok


@FUZZ
@given(st.data())
def test_fuzz_mutated_snp_report(snp_report, vectors, data):
    vcek = (vectors / "sev" / "trustee_test-vcek.der").read_bytes()
    buf = bytearray(snp_report)
    for off in data.draw(st.sets(st.integers(0, len(buf) - 1), min_size=1, max_size=4)):
        buf[off] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.sampled_from([None, 0, 100, 0x2A0, 1183, 1185]))
    raw = bytes(buf) if cut is None else (bytes(buf[:cut]) if cut <= len(buf) else bytes(buf) + b"\0")
    try:
        parse_report(raw)
    except ParseError:
        pass
    pol = Policy.from_json({"snp": {"permit_provisional_firmware": True}})
    assert not verify_snp(raw, vcek=vcek, at=SNP_AT, policy=pol).ok


@FUZZ
@given(st.data())
def test_fuzz_mutated_tdx_quote(tdx_quote, data):
    buf = bytearray(tdx_quote)
    # distinct offsets, all inside the signed data minus the PEM chain's NUL terminator (the 39 trailing bytes
    # are outside every signature, and a cut inside them leaves a valid quote)
    signed_end = len(tdx_quote) - 39 - 1
    for off in data.draw(st.sets(st.integers(0, signed_end - 1), min_size=1, max_size=3)):
        buf[off] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, signed_end)))
    raw = bytes(buf) if cut is None else bytes(buf[:cut])
    try:
        parse_quote(raw)
    except ParseError:
        pass
    pol = Policy.from_json({"tdx": {"accepted_tcb_status": ["NotEvaluated"]}})
    rep = verify_tdx(raw, at=TDX_AT, policy=pol)
    assert not rep.ok


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["tcbInfo", "enclaveIdentity"]))
def test_fuzz_collateral_json(blob, member):
    for body in (blob, b'{"' + member.encode() + b'":' + blob + b',"signature":"00"}'):
        try:
            split_signed_json(body, member)
        except ParseError:
            pass


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
        max_leaves=12,
    )
)
def test_fuzz_policy_json(obj):
    try:
        Policy.from_json(obj)
    except PolicyError:
        pass


# -- explicit bad input ------------------------------------------------------------------------------------------


def test_truncated_and_wrong_version(snp_report, tdx_quote):
    with pytest.raises(ParseError, match="1184 bytes"):
        parse_report(snp_report[:1000])
    bad = bytearray(snp_report)
    bad[0] = 6
    with pytest.raises(ParseError, match="unsupported SNP report version 6"):
        parse_report(bytes(bad))
    with pytest.raises(ParseError, match="too short"):
        parse_quote(tdx_quote[:300])
    with pytest.raises(ParseError):
        parse_quote(tdx_quote[:2000])
    assert verify_snp(snp_report[:1000]).check("snp.parse").ok is False
    assert verify_tdx(tdx_quote[:2000]).check("tdx.parse").ok is False


def test_firmware_response_prefix_accepted(snp_report):
    resp = (0).to_bytes(4, "little") + (1184).to_bytes(4, "little") + bytes(24) + snp_report
    assert parse_report(resp).raw == snp_report


def test_mbz_and_policy_bit17(snp_report, vectors):
    vcek = (vectors / "sev" / "trustee_test-vcek.der").read_bytes()
    pol = Policy.from_json({"snp": {"permit_provisional_firmware": True}})
    bad = bytearray(snp_report)
    bad[0x400] = 1  # reserved area after the signature
    r = verify_snp(bytes(bad), vcek=vcek, at=SNP_AT, policy=pol)
    assert [c.name for c in r.failed()] == ["snp.format"]
    assert "0x330" in r.check("snp.format").detail


def test_garbage_certificates(snp_report):
    for junk in (
        b"",
        b"\x30\x03\x02\x01\x00",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"\xff" * 1360,
    ):
        r = verify_snp(snp_report, vcek=junk or None, chain=junk or None, at=SNP_AT)
        assert not r.ok


def test_unsupported_time_is_an_error(snp_report):
    r = verify_snp(snp_report, at=dt.datetime(2025, 6, 1))  # naive
    assert not r.ok and r.check("snp.time")


def test_cert_table_roundtrip_and_errors(vectors):
    vcek = (vectors / "sev" / "virtee_vcek_milan.der").read_bytes()
    chain = (vectors / "sev" / "virtee_cert_chain_milan.pem").read_bytes()
    table = build_cert_table({"vcek": vcek, "ask": chain})
    assert parse_cert_table(table + bytes(4096)) == {"vcek": vcek, "ask": chain}
    with pytest.raises(ParseError, match="terminator"):
        parse_cert_table(table[:24])
    bad = bytearray(table)
    bad[16:20] = (10**6).to_bytes(4, "little")
    with pytest.raises(ParseError, match="outside"):
        parse_cert_table(bytes(bad))
    # a VCEK delivered through the table verifies the report
    report = bytes.fromhex((vectors / "sev" / "virtee_report_milan.hex").read_text())
    assert verify_snp(report, cert_table=table, at=SNP_AT).ok


# -- policy file ---------------------------------------------------------------------------------------------------


def test_policy_defaults_are_strict():
    p = Policy.strict()
    assert p.snp.vmpl == [0] and not p.snp.allow_debug and not p.snp.permit_provisional_firmware
    assert p.tdx.accepted_tcb_status == ["UpToDate"] and not p.tdx.allow_debug and not p.allow_simulated


def test_policy_full_example_from_architecture():
    doc = {
        "snp": {
            "measurement": ["ab" * 48],
            "host_data": "00" * 32,
            "report_data": "11" * 64,
            "vmpl": [0],
            "allow_debug": False,
            "permit_provisional_firmware": False,
            "minimum_tcb": {"fmc": 0, "bl": 0, "tee": 0, "snp": 0, "ucode": 0},
            "minimum_build": 0,
            "products": ["Milan", "Genoa", "Turin"],
            "id_key_digests": [],
            "author_key_digests": [],
        },
        "tdx": {
            "mrtd": ["cd" * 48],
            "rtmr0": "00" * 48,
            "rtmr1": "00" * 48,
            "rtmr2": "00" * 48,
            "rtmr3": "00" * 48,
            "mr_config_id": "00" * 48,
            "allow_debug": False,
            "accepted_tcb_status": ["UpToDate"],
        },
        "allow_simulated": False,
    }
    p = Policy.from_json(doc)
    assert p.snp.measurement == [bytes.fromhex("ab" * 48)] and p.tdx.mrtd == [bytes.fromhex("cd" * 48)]


@pytest.mark.parametrize(
    "doc,needle",
    [
        ({"snp": {"vmpl": [4]}}, "snp.vmpl"),
        ({"snp": {"measurement": ["abcd"]}}, "snp.measurement[0]"),
        ({"snp": {"allow_debug": "yes"}}, "snp.allow_debug"),
        ({"snp": {"minimum_tcb": {"microcode": 1}}}, "microcode"),
        ({"snp": {"products": ["Rome"]}}, "snp.products"),
        ({"tdx": {"accepted_tcb_status": ["Fine"]}}, "tdx.accepted_tcb_status"),
        ({"tdx": {"rtmr4": "00"}}, "rtmr4"),
        ({"allow_simulated": 1}, "allow_simulated"),
        ([], "top level"),
    ],
)
def test_policy_errors_name_the_key(doc, needle):
    with pytest.raises(PolicyError) as e:
        Policy.from_json(doc)
    assert needle in str(e.value)


def test_minimum_tcb_and_guest_svn(vectors):
    report = (vectors / "sev" / "trustee_test-report.bin").read_bytes()
    vcek = (vectors / "sev" / "trustee_test-vcek.der").read_bytes()
    base = {"permit_provisional_firmware": True}
    assert verify_snp(
        report,
        vcek=vcek,
        at=SNP_AT,
        policy=Policy.from_json(
            {"snp": {**base, "minimum_tcb": {"snp": 8, "ucode": 115}, "minimum_guest_svn": 4}}
        ),
    ).ok
    r = verify_snp(
        report,
        vcek=vcek,
        at=SNP_AT,
        policy=Policy.from_json(
            {"snp": {**base, "minimum_tcb": {"snp": 9}, "minimum_guest_svn": 5, "products": ["Genoa"]}}
        ),
    )
    assert sorted(c.name for c in r.failed()) == [
        "snp.policy.guest_svn",
        "snp.policy.product",
        "snp.tcb.minimum",
    ]


# -- KDS client against a local HTTP server -------------------------------------------------------------------------


class _Kds(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}
    throttle_first: list[int] = [0]
    seen: list[str] = []

    def do_GET(self):  # noqa: N802
        self.seen.append(self.path)
        if self.throttle_first[0] > 0:
            self.throttle_first[0] -= 1
            self.send_response(429)
            self.send_header("Retry-After", "1")
            self.end_headers()
            return
        body = self.routes.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        if body is not None:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def kds_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Kds)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Kds.seen.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_kds_vcek_fetch_cache_and_rate_limit(kds_server, tmp_path, vectors):
    report = parse_report((vectors / "sev" / "gosevguest_milan_attestation.bin").read_bytes())
    vcek = (vectors / "sev" / "gosevguest_milan_vcek.der").read_bytes()
    path = vcek_path(report, "Milan")
    assert path == f"/vcek/v1/Milan/{report.chip_id.hex()}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"
    _Kds.routes = {
        path: vcek,
        "/vcek/v1/Milan/cert_chain": (vectors / "sev" / "virtee_cert_chain_milan.pem").read_bytes(),
        "/vcek/v1/Milan/crl": b"crl",
    }
    _Kds.throttle_first[0] = 1
    clock = FakeClock()
    kds = KdsClient(tmp_path / "kds", base_url=kds_server, min_interval=10.0, clock=clock, sleep=clock.sleep)
    assert kds.vcek(report, "Milan") == vcek
    assert kds.requests == 2 and clock.sleeps[0] == 1.0  # honoured Retry-After after the 429
    assert kds.cert_chain("Milan").startswith(b"-----BEGIN")
    assert any(s >= 9.0 for s in clock.sleeps[1:])  # spaced >= min_interval from the previous request
    before = kds.requests
    assert kds.vcek(report, "Milan") == vcek and kds.requests == before  # cached forever
    kds.crl("Milan")
    kds.crl("Milan")
    assert kds.requests == before + 2  # CRLs are never cached
    offline = KdsClient(tmp_path / "kds", offline=True)
    assert offline.vcek(report, "Milan") == vcek
    with pytest.raises(KdsError, match="offline"):
        offline.crl("Milan")
    # the fetched VCEK verifies the report (allowing its DEBUG policy)
    rep = verify_snp(
        report.raw,
        vcek=offline.vcek(report, "Milan"),
        at=SNP_AT,
        policy=Policy.from_json({"snp": {"allow_debug": True}}),
    )
    assert rep.ok


def test_kds_turin_url_and_errors(kds_server, tmp_path):
    from attestation.sim import build_snp_report, make_snp_chain

    chain = make_snp_chain("Turin", chip_id=bytes.fromhex("1e550a8ee5cf9f4d") + bytes(56))
    report = parse_report(build_snp_report(chain, bytes(64)))
    assert vcek_path(report, "Turin") == (
        "/vcek/v1/Turin/1e550a8ee5cf9f4d?fmcSPL=01&blSPL=03&teeSPL=02&snpSPL=05&ucodeSPL=97"
    )
    clock = FakeClock()
    _Kds.throttle_first[0] = 100
    kds = KdsClient(tmp_path, base_url=kds_server, budget=30, clock=clock, sleep=clock.sleep)
    with pytest.raises(KdsError, match="throttled"):
        kds.cert_chain("Turin")
    _Kds.throttle_first[0] = 0
    with pytest.raises(KdsError, match="404"):
        kds.cert_chain("Turin")


def test_kds_refuses_vlek(vectors):
    report = parse_report((vectors / "sev" / "trustee_test-vlek-report.bin").read_bytes())
    with pytest.raises(KdsError, match="VLEK"):
        vcek_path(report, "Milan")


def test_policy_file_roundtrip(tmp_path):
    p = tmp_path / "rv.json"
    p.write_text(json.dumps({"snp": {"vmpl": 1}}))
    assert Policy.from_file(p).snp.vmpl == [1]
    p.write_text("{nope")
    with pytest.raises(PolicyError, match="not valid JSON"):
        Policy.from_file(p)


def test_smt_cxl_and_required_bits(vectors):
    report = (vectors / "sev" / "virtee_report_milan.hex").read_text()
    report = bytes.fromhex(report)
    vcek = (vectors / "sev" / "virtee_vcek_milan.der").read_bytes()
    assert verify_snp(report, vcek=vcek, at=SNP_AT).check("snp.policy.smt").ok  # SMT allowed unless refused
    r = verify_snp(
        report,
        vcek=vcek,
        at=SNP_AT,
        policy=Policy.from_json({"snp": {"allow_smt": False, "require_policy_bits": ["SINGLE_SOCKET"]}}),
    )
    assert sorted(c.name for c in r.failed()) == ["snp.policy.required_bits", "snp.policy.smt"]
    assert r.check("snp.policy.smt").relax == "snp.allow_smt"
    with pytest.raises(PolicyError, match="require_policy_bits"):
        Policy.from_json({"snp": {"require_policy_bits": ["DEBUG"]}})


def test_oversized_inputs_refused(tdx_quote, snp_report):
    huge = tdx_quote + bytes(2 << 20)
    with pytest.raises(ParseError, match="larger than"):
        parse_quote(huge)
    assert "larger than" in verify_tdx(huge).check("tdx.parse").detail
    assert "larger than" in verify_evidence(huge).check("evidence.parse").detail
    r = verify_snp(snp_report, vcek=b"0" * (2 << 20))
    assert not r.ok and "larger than" in r.check("snp.endorsements").detail
    with pytest.raises(ParseError):
        split_signed_json(b"{" + b" " * (2 << 20) + b"}", "tcbInfo")


@FUZZ
@given(st.data())
def test_fuzz_certificates(vectors, data):
    from attestation.certs import load_any, parse_amd_extensions
    from attestation.tdx import parse_pck_extensions

    name = data.draw(
        st.sampled_from(
            [
                "sev/virtee_vcek_turin.der",
                "sev/trustee_test-vlek.der",
                "sev/virtee_cert_chain_milan.pem",
                "tdx/gotdxguest_pckCrlIssuerChain.pem",
            ]
        )
    )
    buf = bytearray((vectors / name).read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    try:
        for cert in load_any(bytes(buf)):
            for parse in (parse_amd_extensions, parse_pck_extensions):
                try:
                    parse(cert)
                except ParseError:
                    pass
    except ParseError:
        pass
