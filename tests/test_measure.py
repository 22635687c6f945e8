"""`aocu measure`: SNP launch digests through sev-snp-measure, TDX MRTD from TDVF metadata, and reference values
that make matching (simulated) evidence pass and any other measurement fail.

Firmware: Debian's OVMF.fd (package ovmf) is SNP- and TDX-capable but has no SNP_KERNEL_HASHES section, so
SNP measured direct boot of a payload needs the operator's AmdSev OVMF; here SNP is measured firmware-only
(the same code path, minus the kernel-hashes page) and the direct-boot request must fail clearly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attestation.evidence import verify_evidence
from attestation.measure import MeasureError, tdvf_sections, tdx_mrtd
from attestation.policy import Policy
from attestation.providers import SimProvider
from attestation.trust import TrustStore
from cu.cli import main

OVMF = Path("/usr/share/ovmf/OVMF.fd")
pytestmark = pytest.mark.skipif(not OVMF.is_file(), reason="Debian package ovmf not installed")


def _sev_snp_measure_cli(*args: str) -> str:
    exe = shutil.which("sev-snp-measure") or str(Path(sys.executable).with_name("sev-snp-measure"))
    out = subprocess.run([exe, *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_snp_measurement_equals_sev_snp_measure_cli(tmp_path):
    for vcpus, vtype in ((1, "EPYC-v4"), (4, "EPYC-Milan"), (2, "EPYC-Genoa")):
        rv = tmp_path / f"rv-{vcpus}.json"
        assert main(["measure", "--ovmf", str(OVMF), "--vcpus", str(vcpus), "--vcpu-type", vtype, "-o", str(rv)]) == 0
        expected = _sev_snp_measure_cli("--mode", "snp", "--vcpus", str(vcpus), "--vcpu-type", vtype,
                                        "--ovmf", str(OVMF))
        assert json.loads(rv.read_text()) == {"snp": {"measurement": [expected]}}
    # guest features change the VMSA and so the digest
    rv = tmp_path / "rv-gf.json"
    assert main(["measure", "--ovmf", str(OVMF), "--vcpus", "1", "--vcpu-type", "EPYC-v4",
                 "--guest-features", "0x21", "-o", str(rv)]) == 0
    expected = _sev_snp_measure_cli("--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4",
                                    "--guest-features", "0x21", "--ovmf", str(OVMF))
    assert json.loads(rv.read_text())["snp"]["measurement"] == [expected]


def test_direct_boot_needs_an_amdsev_ovmf(tmp_path, capsys):
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "vmlinuz").write_bytes(b"\x00" * 4096)
    (payload / "initrd.img").write_bytes(b"\x01" * 4096)
    (payload / "cmdline").write_text("console=ttyS0")
    rc = main(["measure", "--ovmf", str(OVMF), "--payload", str(payload), "--vcpus", "2", "--vcpu-type",
               "EPYC-v4", "-o", str(tmp_path / "rv.json")])
    assert rc == 2
    assert "SNP_KERNEL_HASHES" in capsys.readouterr().err
    assert not (tmp_path / "rv.json").exists()


def test_measure_bad_arguments(tmp_path, capsys):
    out = str(tmp_path / "rv.json")
    assert main(["measure", "-o", out]) == 2
    assert main(["measure", "--ovmf", str(OVMF), "-o", out]) == 2  # no --vcpus
    assert main(["measure", "--ovmf", str(OVMF), "--vcpus", "1", "--vcpu-type", "Pentium", "-o", out]) == 2
    assert main(["measure", "--tdx", "-o", out]) == 2  # no --tdvf
    garbage = tmp_path / "garbage.fd"
    garbage.write_bytes(b"\xff" * 8192)
    assert main(["measure", "--tdx", "--tdvf", str(garbage), "-o", out]) == 2
    err = capsys.readouterr().err
    assert "Pentium" in err and "GUID table" in err
    assert not Path(out).exists()


def test_tdx_mrtd_covers_exactly_the_measured_sections():
    fw = OVMF.read_bytes()
    sections = tdvf_sections(fw)
    assert any(s.attributes & 1 for s in sections), "BFV must be MR.EXTENDed"
    base = tdx_mrtd(fw)
    assert len(base) == 48 and base != tdx_mrtd(fw, two_pass=True)
    assert base == tdx_mrtd(fw)  # deterministic
    bfv = next(s for s in sections if s.attributes & 1)
    cfv = next(s for s in sections if s.kind == 1)
    flipped = bytearray(fw)
    flipped[bfv.data_offset + 12345] ^= 1  # code the host extends into MRTD
    assert tdx_mrtd(bytes(flipped)) != base
    flipped = bytearray(fw)
    flipped[cfv.data_offset + 100] ^= 1  # variable store: added but not extended (measured into RTMR0 instead)
    assert tdx_mrtd(bytes(flipped)) == base
    with pytest.raises(MeasureError):
        tdx_mrtd(fw[:-64] + b"\x00" * 64)


def test_reference_values_accept_only_the_measured_launch(tmp_path):
    rv = tmp_path / "rv.json"
    assert main(["measure", "--ovmf", str(OVMF), "--vcpus", "2", "--vcpu-type", "EPYC-v4",
                 "--tdx", "--tdvf", str(OVMF), "-o", str(rv)]) == 0
    doc = json.loads(rv.read_text())
    snp_m = bytes.fromhex(doc["snp"]["measurement"][0])
    mrtd = bytes.fromhex(doc["tdx"]["mrtd"][0])
    doc["allow_simulated"] = True  # simulated evidence below: trust its root explicitly
    policy = Policy.from_json(doc)

    def verdict(kind: str, **kw) -> tuple[bool, list[str]]:
        prov = SimProvider(tmp_path / f"{kind}-{len(kw)}-{sorted(kw.values())[0].hex()[:8]}", kind=kind, **kw)
        ev = prov.get_evidence(bytes(64))
        trust = TrustStore.default().with_simulated(prov.roots_path)
        r = verify_evidence(ev, trust=trust, policy=policy)
        return r.ok, [c.name for c in r.failed()]

    assert verdict("snp", measurement=snp_m) == (True, [])
    other = bytes([snp_m[0] ^ 1]) + snp_m[1:]
    assert verdict("snp", measurement=other) == (False, ["snp.policy.measurement"])
    assert verdict("tdx", mrtd=mrtd)[0] is True
    ok, failed = verdict("tdx", mrtd=bytes(48))
    assert not ok and failed == ["tdx.policy.mrtd"]


@pytest.mark.parametrize("flags", [
    ["--mode", "snp", "--vcpus", "2", "--vcpu-type", "EPYC-v4"],
    ["--mode", "snp", "--vcpus", "1", "--vcpu-family", "25", "--vcpu-model", "1", "--vcpu-stepping", "1",
     "--output-format", "base64"],
    ["--mode", "snp", "--vcpus", "1", "--vcpu-sig", "0xa00f11", "--guest-features", "0x21", "--vmm-type", "QEMU"],
    ["--mode", "snp:ovmf-hash"],
])
def test_same_flags_same_stdout_as_sev_snp_measure(flags, capsys):
    """sev-snp-measure's command line works unchanged, and stdout is the same value (nothing else on stdout)."""
    argv = [*flags, "--ovmf", str(OVMF)]
    assert main(["measure", *argv]) == 0
    assert capsys.readouterr().out == _sev_snp_measure_cli(*argv) + "\n"


def test_measure_stdout_and_reference_values(tmp_path, capsys):
    argv = ["measure", "--ovmf", str(OVMF), "--vcpus", "2", "--vcpu-type", "EPYC-v4"]
    assert main(argv) == 0
    value = capsys.readouterr().out.strip()
    assert main([*argv, "-o", "-"]) == 0  # -o - prints the reference values instead
    assert json.loads(capsys.readouterr().out) == {"snp": {"measurement": [value]}}
    assert main([*argv, "--mode", "tdx", "--tdvf", str(OVMF)]) == 0  # --mode tdx: the MRTD only
    assert capsys.readouterr().out == tdx_mrtd(OVMF.read_bytes()).hex() + "\n"
    assert main([*argv, "--tdx", "--tdvf", str(OVMF)]) == 0  # --tdx (old spelling) adds it: SNP first
    assert capsys.readouterr().out == f"{value}\n{tdx_mrtd(OVMF.read_bytes()).hex()}\n"
    assert main(["measure", "--mode", "snp:ovmf-hash", "--ovmf", str(OVMF), "-o", str(tmp_path / "x")]) == 2
    assert "drop -o" in capsys.readouterr().err
