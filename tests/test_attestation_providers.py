"""Providers: configfs-tsm against a temporary tree that behaves like the kernel, /dev/sev-guest ioctl flow with a
fake ioctl, the simulated TEE (persistence, 0600 keys, trust only when explicit), detection."""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import struct
import sys
from pathlib import Path

import pytest

from attestation import Evidence, NotAvailable, Policy, ProviderError, TrustStore, verify_evidence
from attestation.providers import (
    FsOps,
    NoneProvider,
    SevGuestDevice,
    SimProvider,
    SnpProvider,
    TdxProvider,
    detect,
    get_provider,
)
from attestation.providers.configfs import DEFAULT_ROOT
from attestation.providers.sevguest import SNP_GET_EXT_REPORT, SNP_GET_REPORT
from attestation.snp import build_cert_table, parse_cert_table

SNP_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TDX_AT = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)


class FakeTsm(FsOps):
    """Kernel side of configfs-tsm on a real temporary directory: mkdir creates the attribute files, each write
    to inblob/privlevel bumps `generation`, reading outblob yields the provider's report."""

    def __init__(self, provider: str, outblob: bytes, auxblob: bytes = b"", *, racer: bool = False) -> None:
        self.provider, self.outblob, self.auxblob, self.racer = provider, outblob, auxblob, racer
        self.log: list[tuple[str, str]] = []
        self.inblob: bytes | None = None

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        (path / "generation").write_text("0\n")
        (path / "provider").write_text(self.provider + "\n")
        self.log.append(("mkdir", path.name))

    def write(self, path: Path, data: bytes) -> None:
        self.log.append(("write", path.name))
        if path.name == "inblob":
            self.inblob = data
        path.write_bytes(data)
        gen = path.parent / "generation"
        gen.write_text(f"{int(gen.read_text()) + 1}\n")

    def read(self, path: Path) -> bytes:
        self.log.append(("read", path.name))
        if path.name == "outblob":
            if self.racer:  # another process writes inblob between our write and our read
                gen = path.parent / "generation"
                gen.write_text(f"{int(gen.read_text()) + 1}\n")
            return self.outblob
        if path.name == "auxblob":
            if self.provider == "tdx_guest":
                raise FileNotFoundError(path)
            return self.auxblob
        return super().read(path)

    def rmdir(self, path: Path) -> None:
        for f in path.iterdir():
            f.unlink()
        super().rmdir(path)
        self.log.append(("rmdir", path.name))


def _tree(tmp_path: Path) -> Path:
    (tmp_path / DEFAULT_ROOT.lstrip("/")).mkdir(parents=True)
    return tmp_path


def test_snp_configfs_with_real_vector(tmp_path, vectors):
    report = (vectors / "sev" / "trustee_test-vlek-report.bin").read_bytes()
    vlek = (vectors / "sev" / "trustee_test-vlek.der").read_bytes()
    table = build_cert_table({"vlek": vlek})
    rd = report[0x50:0x90]
    ops = FakeTsm("sev_guest", report, table)
    prov = SnpProvider(_tree(tmp_path), vmpl=1, configfs_ops=ops)
    ev = prov.get_evidence(rd)
    assert ev.kind == "snp" and ev.tee == "snp" and ev.raw == report
    assert ops.inblob == rd
    names = [n for op, n in ops.log if op != "mkdir" and op != "rmdir"]
    assert names == ["generation", "inblob", "privlevel", "outblob", "auxblob", "generation", "provider"]
    assert ops.log[-1][0] == "rmdir" and not any((tmp_path / DEFAULT_ROOT.lstrip("/")).iterdir())
    assert parse_cert_table(ev.endorsements["cert_table"]) == {"vlek": vlek}
    pol = Policy.from_json(
        {"snp": {"vmpl": [1], "permit_provisional_firmware": True, "report_data": rd.hex()}}
    )
    rep = verify_evidence(ev, policy=pol, at=SNP_AT)
    assert rep.ok, rep.format_text()
    # the same evidence round-trips through the JSON bundle
    assert verify_evidence(ev.to_bytes(), policy=pol, at=SNP_AT).ok


def test_configfs_generation_mismatch_detected(tmp_path, vectors):
    report = (vectors / "sev" / "trustee_test-vlek-report.bin").read_bytes()
    prov = SnpProvider(_tree(tmp_path), configfs_ops=FakeTsm("sev_guest", report, racer=True))
    with pytest.raises(ProviderError, match="generation"):
        prov.get_evidence(report[0x50:0x90])
    assert not any((tmp_path / DEFAULT_ROOT.lstrip("/")).iterdir())  # entry removed even on failure


def test_configfs_wrong_provider_and_wrong_report_data(tmp_path, vectors):
    report = (vectors / "sev" / "trustee_test-vlek-report.bin").read_bytes()
    with pytest.raises(NotAvailable, match="tdx_guest"):
        SnpProvider(_tree(tmp_path), configfs_ops=FakeTsm("tdx_guest", report)).get_evidence(
            report[0x50:0x90]
        )
    with pytest.raises(ProviderError, match="REPORT_DATA"):
        SnpProvider(tmp_path, configfs_ops=FakeTsm("sev_guest", report)).get_evidence(bytes(64))


def test_tdx_configfs_with_real_quote(tmp_path, vectors):
    quote = (vectors / "tdx" / "gotdxguest_tdx_prod_quote_SPR_E4.dat").read_bytes()
    rd = quote[0x238:0x278]
    ops = FakeTsm("tdx_guest", quote)
    ev = TdxProvider(_tree(tmp_path), configfs_ops=ops).get_evidence(rd)
    assert ev.kind == "tdx" and ev.raw == quote
    pol = Policy.from_json({"tdx": {"accepted_tcb_status": ["NotEvaluated"], "report_data": rd.hex()}})
    assert verify_evidence(ev, policy=pol, at=TDX_AT).ok


def test_tdx_only_dev_node_is_a_clear_error(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "tdx_guest").write_bytes(b"")
    with pytest.raises(NotAvailable, match="TDREPORT"):
        TdxProvider(tmp_path).get_evidence(bytes(64))
    assert detect(tmp_path) == "tdx"


def test_detect_and_auto(tmp_path):
    assert detect(tmp_path) is None
    assert isinstance(get_provider("auto", tmp_path / "data", root=tmp_path), NoneProvider)
    with pytest.raises(NotAvailable):
        get_provider("none").get_evidence(bytes(64))
    with pytest.raises(NotAvailable):
        SnpProvider(tmp_path).get_evidence(bytes(64))
    with pytest.raises(ValueError):
        get_provider("sgx")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sev-guest").write_bytes(b"")
    assert detect(tmp_path) == "snp"


def test_detect_probes_configfs_provider(tmp_path):
    root = _tree(tmp_path)
    from attestation.providers import ConfigfsTsm

    cfg = ConfigfsTsm(root / DEFAULT_ROOT.lstrip("/"), ops=FakeTsm("sev_guest", b""))
    assert cfg.probe_provider() == "sev_guest"


class FakeSevGuest:
    """Emulates the kernel's SNP_GET_EXT_REPORT / SNP_GET_REPORT on the ctypes buffers the device code passes."""

    def __init__(self, report: bytes, table: bytes | None) -> None:
        self.report, self.table, self.calls = report, table, []

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        _ver, req_ptr, resp_ptr, _ = struct.unpack("<BxxxxxxxQQQ", arg)
        req = ctypes.string_at(req_ptr, 96)
        self.calls.append(request)
        if request == SNP_GET_EXT_REPORT:
            certs_addr, certs_len = struct.unpack("<QI", ctypes.string_at(req_ptr + 96, 12))
            if self.table is None:
                struct.pack_into("<II", arg, 24, 6, 0)  # firmware: no certificates installed
                raise OSError(5, "EIO")
            need = (len(self.table) + 4095) // 4096 * 4096
            if certs_len < need:
                ctypes.memmove(req_ptr + 104, struct.pack("<I", need), 4)
                struct.pack_into("<II", arg, 24, 0, 1)  # SNP_GUEST_VMM_ERR_INVALID_LEN
                raise OSError(22, "EINVAL")
            ctypes.memmove(certs_addr, self.table, len(self.table))
        elif request != SNP_GET_REPORT:
            raise OSError(25, "ENOTTY")
        report = bytearray(self.report)
        assert req[:64] == report[0x50:0x90]
        ctypes.memmove(resp_ptr, struct.pack("<II", 0, 1184) + bytes(24) + bytes(report), 0x20 + 1184)
        return 0


def test_sev_guest_extended_report_flow(tmp_path, vectors):
    report = (vectors / "sev" / "virtee_report_milan.hex").read_bytes()
    report = bytes.fromhex(report.decode())
    vcek = (vectors / "sev" / "virtee_vcek_milan.der").read_bytes()
    table = build_cert_table({"vcek": vcek})
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sev-guest").write_bytes(b"")
    fake = FakeSevGuest(report, table)
    dev = SevGuestDevice(str(tmp_path / "dev" / "sev-guest"), ioctl=fake)
    ev = SnpProvider(tmp_path, device=dev).get_evidence(report[0x50:0x90])
    assert fake.calls == [SNP_GET_EXT_REPORT, SNP_GET_EXT_REPORT]
    assert ev.raw == report
    assert verify_evidence(ev, at=SNP_AT).ok
    # host without certificates: falls back to SNP_GET_REPORT
    fake = FakeSevGuest(report, None)
    dev = SevGuestDevice(str(tmp_path / "dev" / "sev-guest"), ioctl=fake)
    ev = SnpProvider(tmp_path, device=dev).get_evidence(report[0x50:0x90])
    assert fake.calls == [SNP_GET_EXT_REPORT, SNP_GET_REPORT] and ev.endorsements == {}


# -- simulated TEE --------------------------------------------------------------------------------------------------


def test_sim_snp_persisted_and_private(tmp_path):
    p1 = SimProvider(tmp_path, kind="snp")
    ev1 = p1.get_evidence(bytes(range(64)))
    keydir = tmp_path / "sim-tee" / "snp-milan"
    for k in ("ark.key", "ask.key", "vcek.key"):
        assert (os.stat(keydir / k).st_mode & 0o777) == 0o600
    assert (os.stat(tmp_path / "sim-tee").st_mode & 0o777) == 0o700
    p2 = SimProvider(tmp_path, kind="snp")
    ev2 = p2.get_evidence(bytes(range(64)))
    assert ev1.endorsements["vcek"] == ev2.endorsements["vcek"]  # same chain reused from disk
    from attestation.certs import cn, load_any

    assert [cn(c.subject) for c in load_any(p1.roots_path.read_bytes())] == ["SIMULATED-ARK-Milan"]


def test_sim_evidence_verifies_only_when_root_trusted_explicitly(tmp_path):
    for kind in ("snp", "tdx"):
        prov = SimProvider(tmp_path, kind=kind)
        ev = prov.get_evidence(bytes(64))
        assert ev.simulated and ev.tee == f"sim-{kind}"
        # default trust store + default policy: refused
        r = verify_evidence(ev)
        assert not r.ok
        # the policy alone is not enough
        r = verify_evidence(ev, policy=Policy(allow_simulated=True))
        assert not r.ok and any("root_pinned" in c.name or "ark_pinned" in c.name for c in r.failed())
        # the trusted root alone is not enough either
        trust = TrustStore.default().with_simulated(prov.roots_path)
        r = verify_evidence(ev, trust=trust)
        assert not r.ok and [c.name for c in r.failed()] == [f"{kind}.simulated"]
        # both: verified, and reported as simulated
        r = verify_evidence(ev, trust=trust, policy=Policy(allow_simulated=True))
        assert r.ok and r.simulated, r.format_text()
        assert "SIMULATED" in r.format_text()
        # another data dir's simulated root does not vouch for this one
        other = SimProvider(tmp_path / "other", kind=kind)
        other.get_evidence(bytes(64))
        trust2 = TrustStore.default().with_simulated(other.roots_path)
        assert not verify_evidence(ev, trust=trust2, policy=Policy(allow_simulated=True)).ok


def test_sim_debug_and_measurement_fail_with_check_named(tmp_path):
    m = bytes(range(48))
    prov = SimProvider(tmp_path, kind="snp", measurement=m, debug=True)
    ev = prov.get_evidence(bytes(64))
    trust = TrustStore.default().with_simulated(prov.roots_path)
    pol = Policy.from_json({"allow_simulated": True, "snp": {"measurement": ["ab" * 48]}})
    r = verify_evidence(ev, trust=trust, policy=pol)
    assert sorted(c.name for c in r.failed()) == ["snp.policy.debug", "snp.policy.measurement"]
    pol = Policy.from_json({"allow_simulated": True, "snp": {"measurement": [m.hex()], "allow_debug": True}})
    assert verify_evidence(ev, trust=trust, policy=pol).ok


def test_sim_turin_and_genoa(tmp_path):
    for product in ("Turin", "Genoa"):
        prov = SimProvider(tmp_path, kind="snp", product=product)
        ev = prov.get_evidence(bytes(64))
        trust = TrustStore.default().with_simulated(prov.roots_path)
        r = verify_evidence(ev, trust=trust, policy=Policy(allow_simulated=True))
        assert r.ok and r.fields["product"] == product, r.format_text()


def test_bundle_label_cannot_claim_hardware(tmp_path):
    prov = SimProvider(tmp_path, kind="snp")
    ev = prov.get_evidence(bytes(64))
    relabelled = Evidence("snp", "snp", ev.raw, ev.endorsements)
    r = verify_evidence(relabelled)
    assert not r.ok and r.simulated  # the chain, not the label, decides


def test_simulated_label_after_an_internal_error_claims_nothing(tmp_path, monkeypatch):
    ev = SimProvider(tmp_path, kind="snp").get_evidence(bytes(64))

    def boom(*_a: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sys.modules["attestation.verify_snp"], "format_errors", boom)
    r = verify_evidence(ev)
    assert [c.name for c in r.failed()] == ["snp.internal_error", "evidence.label"]
    assert r.check("evidence.label").detail == (
        "bundle labelled 'sim-snp'; verification aborted (snp.internal_error) without a result for the evidence's chain")


def test_simulated_label_on_hardware_evidence_says_what_was_established(vectors):
    """A 'sim-*' label on hardware evidence fails; the detail claims a hardware root only when the chain
    verified up to the pinned one."""
    sev = vectors / "sev"
    snp = Evidence("snp", "sim-snp", (sev / "gosevguest_milan_attestation.bin").read_bytes(),
                   {"vcek": (sev / "gosevguest_milan_vcek.der").read_bytes(),
                    "chain": (sev / "gosevguest_milan_vcek_cert_chain.pem").read_bytes()})
    tdx = Evidence("tdx", "sim-tdx", (vectors / "tdx" / "gotdxguest_tdx_prod_quote_SPR_E4.dat").read_bytes(), {})
    for ev, at, root in ((snp, SNP_AT, "snp.ark_pinned"), (tdx, TDX_AT, "tdx.pck_chain.root_pinned")):
        label = verify_evidence(ev, at=at).check("evidence.label")
        assert label is not None and not label.ok
        assert label.detail == f"bundle labelled {ev.tee!r} but the evidence chains to a hardware root"
        label = verify_evidence(ev, at=at, trust=TrustStore()).check("evidence.label")  # no pinned roots
        assert label is not None and not label.ok
        assert label.detail == (f"bundle labelled {ev.tee!r}; the evidence's chain names a hardware root but was "
                                f"not verified up to it (check {root} failed)")
        short = Evidence(ev.kind, ev.tee, ev.raw[:100], ev.endorsements)
        label = verify_evidence(short, at=at).check("evidence.label")
        assert label is not None and label.detail == (
            f"bundle labelled {ev.tee!r}; verification stopped at check {ev.kind}.parse before the evidence's "
            "chain was evaluated")


def test_report_data_must_be_64_bytes(tmp_path):
    with pytest.raises(ValueError):
        SimProvider(tmp_path).get_evidence(b"short")


def test_configfs_privlevel_error_is_clear(tmp_path, vectors):
    report = (vectors / "sev" / "trustee_test-vlek-report.bin").read_bytes()

    class Floor(FakeTsm):
        def mkdir(self, path):
            super().mkdir(path)
            (path / "privlevel_floor").write_text("2\n")

        def write(self, path, data):
            if path.name == "privlevel" and int(data) < 2:
                raise OSError(22, "Invalid argument")
            super().write(path, data)

    prov = SnpProvider(_tree(tmp_path), vmpl=1, configfs_ops=Floor("sev_guest", report))
    with pytest.raises(ProviderError, match="privlevel_floor is 2"):
        prov.get_evidence(report[0x50:0x90])


def test_snp_provider_attaches_vcek_from_kds_cache(tmp_path, vectors):
    from attestation.kds import KdsClient, vcek_path
    from attestation.sim import build_snp_report, make_snp_chain
    from attestation.snp import parse_report

    chain = make_snp_chain("Milan")
    report = build_snp_report(chain, bytes(range(64)))
    kds = KdsClient(tmp_path / "kds", offline=True)
    kds._store(vcek_path(parse_report(report), "Milan"), chain.vcek_der)
    kds._store("/vcek/v1/Milan/cert_chain", chain.chain_pem)
    prov = SnpProvider(_tree(tmp_path), configfs_ops=FakeTsm("sev_guest", report), kds=kds)
    ev = prov.get_evidence(bytes(range(64)))
    assert ev.endorsements["vcek"] == chain.vcek_der and ev.endorsements["chain"] == chain.chain_pem
    r = verify_evidence(
        ev, trust=TrustStore.default().with_simulated(chain.ark), policy=Policy(allow_simulated=True)
    )
    assert (
        r.ok and r.simulated
    )  # the chain decides: simulated even though the provider was the "hardware" one
