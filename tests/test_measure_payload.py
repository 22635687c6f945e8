"""Full SEV-SNP launch measurement of a payload (measured direct boot): the AmdSev firmware of images/firmware.sh
plus the kernel hashes table of kernel, initrd and command line. `aocu measure --payload` must print what
sev-snp-measure prints for the same inputs, write it as reference values, and those must accept a (simulated)
SNP report carrying exactly that measurement and refuse the one of any other kernel, initrd or command line.

The payload is a directory laid out as images/build.sh writes it. The launch digest hashes the three files as
bytes (QEMU fills the table with their SHA-256), so the files here are generated, of a kernel's and an
initrd's size; AOCU_IMAGE_TEST_PAYLOAD=DIR measures a real build instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attestation.evidence import verify_evidence
from attestation.measure import snp_measurement
from attestation.policy import Policy
from attestation.providers import SimProvider
from attestation.trust import TrustStore
from cu.cli import main

CMDLINE = "console=ttyS0 quiet panic=-1 aocu.tee=auto aocu.seal=required"  # images/build.sh's default
CONFIGS = ((1, "EPYC-v4"), (2, "EPYC-Milan"), (4, "EPYC-Genoa"))


def _sev_snp_measure(*args: str) -> str:
    exe = shutil.which("sev-snp-measure") or str(Path(sys.executable).with_name("sev-snp-measure"))
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True).stdout.strip()


def _write_payload(d: Path, kernel: bytes, initrd: bytes, cmdline: str, firmware: Path | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "vmlinuz").write_bytes(kernel)
    (d / "initrd.img").write_bytes(initrd)
    (d / "cmdline").write_text(cmdline)
    names = ["vmlinuz", "initrd.img", "cmdline"]
    if firmware is not None:
        shutil.copy(firmware, d / "ovmf-amdsev.fd")
        names.append("ovmf-amdsev.fd")
    arts = {n: {"sha256": hashlib.sha256((d / n).read_bytes()).hexdigest()} for n in names}
    (d / "manifest.json").write_text(json.dumps({"format": "aocu-image/1", "artifacts": arts}))
    return d


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("AOCU_IMAGE_TEST_PAYLOAD")
    if prebuilt:
        return Path(prebuilt)
    seed = hashlib.sha256(b"aocu payload").digest()
    kernel = b"MZ" + seed * (8 << 20 >> 5)   # 8 MiB, a bzImage's size
    initrd = b"\x28\xb5\x2f\xfd" + seed[::-1] * (16 << 20 >> 5)
    return _write_payload(tmp_path_factory.mktemp("payload"), kernel, initrd, CMDLINE)


def test_full_measurement_equals_sev_snp_measure(amdsev_firmware, payload, tmp_path, capsys):
    fw = str(amdsev_firmware)
    cli: dict[tuple[int, str], str] = {}

    def direct_boot(vcpus: int, vtype: str) -> str:  # sev-snp-measure's own CLI, once per configuration
        if (vcpus, vtype) not in cli:
            cli[vcpus, vtype] = _sev_snp_measure(
                "--mode", "snp", "--vcpus", str(vcpus), "--vcpu-type", vtype, "--ovmf", fw, "--kernel",
                str(payload / "vmlinuz"), "--initrd", str(payload / "initrd.img"), "--append",
                (payload / "cmdline").read_text())
        return cli[vcpus, vtype]

    expected = []
    for vcpus, vtype in CONFIGS:
        assert main(["measure", "--ovmf", fw, "--payload", str(payload), "--vcpus", str(vcpus),
                     "--vcpu-type", vtype]) == 0
        assert capsys.readouterr().out == direct_boot(vcpus, vtype) + "\n"
        expected.append(cli[vcpus, vtype])
    assert len(set(expected)) == len(expected)  # vCPU count and model both enter the digest
    # the kernel hashes make it a different launch from the firmware alone
    assert _sev_snp_measure("--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", fw) != expected[0]
    # one run, every count with every model, in that order, into the reference-values file
    rv = tmp_path / "rv.json"
    assert main(["measure", "--ovmf", fw, "--payload", str(payload), "--vcpus", "1,2", "--vcpu-type",
                 "EPYC-v4,EPYC-Milan", "-o", str(rv)]) == 0
    cross = [direct_boot(n, t) for n in (1, 2) for t in ("EPYC-v4", "EPYC-Milan")]
    assert json.loads(rv.read_text()) == {"snp": {"measurement": cross}}


def test_simulated_report_verifies_only_this_payload(amdsev_firmware, payload, tmp_path):
    fw = str(amdsev_firmware)
    rv = tmp_path / "rv.json"
    assert main(["measure", "--ovmf", fw, "--payload", str(payload), "--vcpus", "2", "--vcpu-type", "EPYC-v4",
                 "-o", str(rv)]) == 0
    doc = json.loads(rv.read_text())
    doc["allow_simulated"] = True  # simulated evidence below: its root is trusted explicitly
    policy = Policy.from_json(doc)

    def measured(kernel: Path, initrd: Path, cmdline: str) -> bytes:
        return snp_measurement(ovmf=fw, vcpus=2, vcpu_type="EPYC-v4", kernel=kernel, initrd=initrd, append=cmdline)

    def verdict(measurement: bytes, name: str) -> tuple[bool, list[str]]:
        prov = SimProvider(tmp_path / name, kind="snp", measurement=measurement)
        result = verify_evidence(prov.get_evidence(bytes(64)), trust=TrustStore.default().with_simulated(
            prov.roots_path), policy=policy)
        return result.ok, [c.name for c in result.failed()]

    kernel, initrd, cmdline = payload / "vmlinuz", payload / "initrd.img", (payload / "cmdline").read_text()
    assert verdict(measured(kernel, initrd, cmdline), "same") == (True, [])
    flipped = {}
    for name, src in (("vmlinuz", kernel), ("initrd.img", initrd)):
        data = bytearray(src.read_bytes())
        data[len(data) // 2] ^= 1  # one bit anywhere in the file
        flipped[name] = tmp_path / name
        flipped[name].write_bytes(bytes(data))
    for label, m in (("kernel", measured(flipped["vmlinuz"], initrd, cmdline)),
                     ("initrd", measured(kernel, flipped["initrd.img"], cmdline)),
                     ("cmdline", measured(kernel, initrd, cmdline.replace("aocu.seal=required", "aocu.seal=off"))),
                     ("cmdline-space", measured(kernel, initrd, cmdline + " "))):
        assert verdict(m, label) == (False, ["snp.policy.measurement"]), label


def test_payload_manifest_and_its_firmware(amdsev_firmware, payload, tmp_path, capsys):
    """build.sh --firmware payloads: their firmware is the default --ovmf; files must match the manifest."""
    p = _write_payload(tmp_path / "p", (payload / "vmlinuz").read_bytes(), (payload / "initrd.img").read_bytes(),
                       (payload / "cmdline").read_text(), firmware=amdsev_firmware)
    args = ["--vcpus", "2", "--vcpu-type", "EPYC-v4"]
    assert main(["measure", "--payload", str(p), *args]) == 0
    implicit = capsys.readouterr().out
    assert main(["measure", "--ovmf", str(amdsev_firmware), "--payload", str(p), *args]) == 0
    assert capsys.readouterr().out == implicit
    # another firmware than the one the payload was built (and its reference values published) with
    other = tmp_path / "other.fd"
    other.write_bytes(amdsev_firmware.read_bytes()[:-1] + b"\x00")
    assert main(["measure", "--ovmf", str(other), "--payload", str(p), *args]) == 2
    assert "is not the firmware ovmf-amdsev.fd the payload was built with" in capsys.readouterr().err
    # a payload file changed after the build
    (p / "cmdline").write_text(CMDLINE + " init=/bin/sh")
    assert main(["measure", "--payload", str(p), *args]) == 2
    assert "cmdline is not the cmdline images/build.sh wrote" in capsys.readouterr().err
    for bad, msg in ((["--vcpus", "0"], "at least 1"), (["--vcpus", "2,x"], "comma-separated"),
                     (["--vcpus", "2,2"], "twice")):
        assert main(["measure", "--ovmf", str(amdsev_firmware), "--payload", str(payload), *bad,
                     "--vcpu-type", "EPYC-v4"]) == 2
        assert msg in capsys.readouterr().err
