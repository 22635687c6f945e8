"""images/launch.sh snp: the QEMU command is checked against Debian 13's QEMU 10 (which knows `sev-snp-guest`),
unpacked by images/qemu10.sh, and the launch refuses clearly where it cannot be what was measured.

No SNP host is needed. Two QEMU runs cover the whole command line with QEMU's own parsers:
1. the command as printed, under TCG instead of KVM: QEMU creates every -object (the sev-snp-guest with all its
   properties, the memory backend), applies every -machine property (the confidential-guest-support link must
   resolve) and the -netdev, and stops exactly where SNP needs KVM (guest_memfd private memory);
2. the same command minus the SEV object and its machine link, paused with -S: the board is built, so the
   memory-backend link, -m, -cpu, -bios, -kernel/-initrd/-append and every -device are checked, and QMP reports
   the VM as "prelaunch".
Misspelt properties in each place fail one of the two (the negative tests prove the check can fail).
The unpacked QEMU (about 200 MB, ~10 s to fetch) is cached in ~/.cache/aocu/qemu10 (AOCU_QEMU10_DIR).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "images" / "launch.sh"
CACHE = Path(os.environ.get("AOCU_QEMU10_DIR", Path.home() / ".cache" / "aocu" / "qemu10"))
# Where QEMU 10 stops under TCG once everything before the board is parsed: SNP's private memory needs KVM.
SNP_NEEDS_KVM = "cannot set up private guest memory for sev-snp-guest: KVM required"


@pytest.fixture(scope="module")
def qemu10() -> str:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get/dpkg-deb missing: cannot unpack Debian 13's QEMU")
    env = dict(os.environ)
    env.setdefault("AOCU_TRIXIE_CACHE", str(CACHE.parent / "trixie-apt"))
    proc = subprocess.run(["bash", str(REPO / "images" / "qemu10.sh"), str(CACHE)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    qemu = proc.stdout.strip().splitlines()[-1]
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=True).stdout
    assert "version 10." in version, version
    return qemu


def _bzimage() -> bytes:
    """A minimal bzImage (boot protocol 2.15 header, loaded high): QEMU's Linux loader places it; nothing runs."""
    k = bytearray(512 * 2 + 4096)
    k[0x1F1] = 1                                  # setup sectors
    struct.pack_into("<H", k, 0x1FE, 0xAA55)
    k[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", k, 0x206, 0x020F)      # protocol version
    k[0x211] = 0x01                               # LOADED_HIGH
    struct.pack_into("<I", k, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", k, 0x238, 2048)        # cmdline_size
    return bytes(k)


def _manifest(d: Path) -> None:
    arts = {n: {"sha256": hashlib.sha256((d / n).read_bytes()).hexdigest(), "size": (d / n).stat().st_size}
            for n in ("vmlinuz", "initrd.img", "cmdline", "ovmf-amdsev.fd")}
    (d / "manifest.json").write_text(json.dumps({"format": "aocu-image/1", "artifacts": arts}))


@pytest.fixture()
def payload(tmp_path) -> Path:
    """images/build.sh's layout, firmware included (any 64 KiB-multiple image loads under TCG; under SNP it
    would be the AmdSev build)."""
    d = tmp_path / "payload"
    d.mkdir()
    (d / "vmlinuz").write_bytes(_bzimage())
    (d / "initrd.img").write_bytes(b"\x07" * 4096)
    (d / "cmdline").write_text("console=ttyS0 quiet panic=-1 aocu.tee=auto aocu.seal=required")
    (d / "ovmf-amdsev.fd").write_bytes(b"\xff" * (256 << 10))
    _manifest(d)
    return d


def _launch(qemu: str, *args: str, host_root: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, QEMU=qemu)
    if host_root is not None:
        env["AOCU_HOST_ROOT"] = str(host_root)
    return subprocess.run(["bash", str(LAUNCH), *args], env=env, capture_output=True, text=True, timeout=60)


def _snp_argv(qemu: str, payload: Path, *extra: str) -> list[str]:
    proc = _launch(qemu, "snp", str(payload), "--print-cmd", "--serial", str(payload / "serial.log"), *extra)
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout)


def _tcg(argv: list[str]) -> list[str]:
    assert "-enable-kvm" in argv
    return [x for a in argv for x in (("-accel", "tcg") if a == "-enable-kvm" else (a,))]


def _parse_check(argv: list[str]) -> str:
    """Run 1: QEMU's last stderr line (SNP_NEEDS_KVM when everything up to the board parsed)."""
    proc = subprocess.run(_tcg(argv), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    return proc.stderr.strip().splitlines()[-1]


def _board_check(argv: list[str]) -> str:
    """Run 2: without the SEV object and link, paused before the first instruction; QMP's status, or the error."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "-object" and argv[i + 1].startswith("sev-snp-guest,"):
            skip = True
            continue
        if a.startswith("q35,"):
            a = ",".join(p for p in a.split(",") if not p.startswith("confidential-guest-support="))
        out.append(a)
    qmp = "".join(json.dumps({"execute": c}) + "\n" for c in ("qmp_capabilities", "query-status", "quit"))
    proc = subprocess.run(_tcg(out) + ["-S", "-qmp", "stdio"], input=qmp, capture_output=True, text=True,
                          timeout=60)
    for line in proc.stdout.splitlines():
        ret = json.loads(line).get("return")
        if isinstance(ret, dict) and "status" in ret:
            return ret["status"]
    return proc.stderr.strip().splitlines()[-1]


def test_snp_command_parses_under_qemu10(qemu10, payload):
    argv = _snp_argv(qemu10, payload, "--vcpus", "4", "--mem", "1024")
    # exactly the measured inputs: the manifest's firmware and the command line byte for byte
    assert argv[argv.index("-bios") + 1] == str(payload / "ovmf-amdsev.fd")
    assert argv[argv.index("-kernel") + 1] == str(payload / "vmlinuz")
    assert argv[argv.index("-initrd") + 1] == str(payload / "initrd.img")
    assert argv[argv.index("-append") + 1] == (payload / "cmdline").read_text()
    assert "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on" in argv
    assert argv[argv.index("-cpu") + 1] == "EPYC-v4" and argv[argv.index("-smp") + 1] == "4"
    assert _parse_check(argv).endswith(SNP_NEEDS_KVM)
    assert _board_check(argv) == "prelaunch"


@pytest.mark.parametrize(("old", "new", "run", "error"), [
    ("kernel-hashes=on", "kernel-hashs=on", 1, "Invalid parameter 'kernel-hashs'"),
    ("reduced-phys-bits=1", "reduced-phys-bits=one", 1, "reduced-phys-bits"),
    ("sev-snp-guest,", "sev-snp-gest,", 1, "sev-snp-gest"),
    ("confidential-guest-support=sev0", "confidential-guest-suport=sev0", 1, "confidential-guest-suport"),
    ("confidential-guest-support=sev0", "confidential-guest-support=sev1", 1, "sev1"),
    ("share=true", "shared=true", 1, "Invalid parameter 'shared'"),
    ("memory-backend=ram1", "memory-backend=ram2", 2, "Memory backend 'ram2' not found"),
    ("netdev=n0,romfile=", "netdev=n0,romfle=", 2, "romfle"),
    ("EPYC-v4", "EPYC-v9", 2, "EPYC-v9"),
])
def test_misspelt_options_fail_the_check(qemu10, payload, old, new, run, error):
    argv = _snp_argv(qemu10, payload)
    hits = [i for i, a in enumerate(argv) if old in a]
    assert len(hits) == 1, (old, argv)
    argv[hits[0]] = argv[hits[0]].replace(old, new)
    result = _parse_check(argv) if run == 1 else _board_check(argv)
    assert error in result and result != "prelaunch" and SNP_NEEDS_KVM not in result, result


def _host(tmp_path: Path, *, kvm: bool, sev: bool, snp: str | None) -> Path:
    root = tmp_path / "host"
    (root / "dev").mkdir(parents=True)
    if kvm:
        (root / "dev" / "kvm").touch()
    if sev:
        (root / "dev" / "sev").touch()
    if snp is not None:
        p = root / "sys" / "module" / "kvm_amd" / "parameters"
        p.mkdir(parents=True)
        (p / "sev_snp").write_text(snp + "\n")
    return root


@pytest.mark.parametrize(("kvm", "sev", "snp", "error"), [
    (False, False, None, "/dev/kvm missing"),
    (True, False, "Y", "/dev/sev missing"),
    (True, True, None, "kvm_amd is not loaded"),
    (True, True, "N", "kvm_amd sev_snp is 'N'"),
])
def test_no_snp_host_is_one_clear_line(qemu10, payload, tmp_path, kvm, sev, snp, error):
    proc = _launch(qemu10, "snp", str(payload), host_root=_host(tmp_path, kvm=kvm, sev=sev, snp=snp))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and error in proc.stderr, proc.stderr


def test_refuses_what_was_not_measured(qemu10, payload, tmp_path):
    other = tmp_path / "other.fd"
    other.write_bytes(b"\x00" * (256 << 10))
    proc = _launch(qemu10, "snp", str(payload), "--ovmf", str(other), "--print-cmd")
    assert proc.returncode == 2 and "not the firmware the payload was built and measured with" in proc.stderr
    (payload / "initrd.img").write_bytes(b"\x08" * 4096)
    proc = _launch(qemu10, "snp", str(payload), "--print-cmd")
    assert proc.returncode == 2 and "initrd.img is not the initrd.img" in proc.stderr
    (payload / "cmdline").write_text("console=ttyS0\n")
    _manifest(payload)
    proc = _launch(qemu10, "snp", str(payload), "--print-cmd")
    assert proc.returncode == 2 and "ends with a newline" in proc.stderr
    (payload / "cmdline").write_text("console=ttyS0")
    (payload / "ovmf-amdsev.fd").unlink()
    (payload / "manifest.json").unlink()
    proc = _launch(qemu10, "snp", str(payload), "--print-cmd")
    assert proc.returncode == 2 and "--firmware" in proc.stderr and proc.stderr.count("\n") == 1
    system_qemu = shutil.which("qemu-system-x86_64")
    if system_qemu:  # Debian 12's QEMU 7.2 has no sev-snp-guest: refused by version, before anything runs
        ver = subprocess.run([system_qemu, "--version"], capture_output=True, text=True).stdout
        if " version 7." in ver or " version 8." in ver:
            proc = _launch(system_qemu, "snp", str(payload), "--ovmf", str(other), "--print-cmd")
            assert proc.returncode == 2 and "needs QEMU >= 9.1" in proc.stderr
