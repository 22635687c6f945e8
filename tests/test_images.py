"""images/: build the confidential-VM payload twice (bit-identical), boot it under QEMU (KVM when usable, else
TCG) with the simulated TEE, and talk to the node inside through user-mode port forwarding.

Slow by nature (debootstrap, a kernel boot under TCG): a few minutes in all; it still runs in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
QEMU = shutil.which("qemu-system-x86_64")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed: QEMU cannot run at all"),
]


def _build(out: Path, cache: Path) -> dict:
    if os.geteuid() != 0:
        pytest.skip("images/build.sh needs root (debootstrap, chroot); CI runs as root")
    env = dict(os.environ, PYTHON=sys.executable, AOCU_TEE="sim", AOCU_IMAGE_CACHE=str(cache))
    proc = subprocess.run(["bash", str(REPO / "images" / "build.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "[build 7/7] manifest" in proc.stderr  # progress is shown
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def payloads(tmp_path_factory, cache_dir):
    cache = cache_dir / "images"
    a_dir = tmp_path_factory.mktemp("payload-a")
    a = _build(a_dir, cache)
    b_dir = tmp_path_factory.mktemp("payload-b")
    b = _build(b_dir, cache)
    return a, b, a_dir, b_dir


def test_two_builds_are_bit_identical(payloads):
    a, b, a_dir, b_dir = payloads
    assert a["artifacts"] == b["artifacts"]
    assert a["inputs"] == b["inputs"]
    for name, art in b["artifacts"].items():
        assert hashlib.sha256((b_dir / name).read_bytes()).hexdigest() == art["sha256"]
    # Kernel, initrd and cmdline enter the SNP launch digest through the kernel-hashes table (measured direct
    # boot): identical payloads give the identical table, hence the same expected measurement.
    from sevsnpmeasure.sev_hashes import SevHashes

    tables = [
        SevHashes(str(d / "vmlinuz"), str(d / "initrd.img"), (d / "cmdline").read_text()).construct_table()
        for d in (a_dir, b_dir)
    ]
    assert tables[0] == tables[1]
    assert "aocu.tee=sim" in b["cmdline"]
    assert b["artifacts"]["initrd.img"]["size"] < 200 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_payload_boots_and_serves(payloads, tmp_path):
    *_, payload = payloads
    port = _free_port()
    serial = tmp_path / "serial.log"
    t0 = time.monotonic()
    vm = subprocess.Popen(
        ["bash", str(REPO / "images" / "launch.sh"), "plain", str(payload), "--port", str(port),
         "--serial", str(serial), "--mem", "2048"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = t0 + 300
        resp = None
        while time.monotonic() < deadline:
            assert vm.poll() is None, f"VM exited early:\n{vm.stdout.read() if vm.stdout else ''}\n" + (
                serial.read_text(errors="replace")[-3000:] if serial.exists() else "")
            try:
                resp = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                time.sleep(1)
        assert resp is not None, "no /health within 300 s:\n" + serial.read_text(errors="replace")[-3000:]
        boot_s = time.monotonic() - t0
        print(f"\nboot to /health: {boot_s:.1f} s")
        assert resp.status == 200
        # The plain VM has no TEE: the node says so on every response.
        assert "sim" in (resp.headers.get("X-Aocu-Tee") or "")
        log = serial.read_text(errors="replace")
        assert "starting aocu serve --tee sim" in log
    finally:
        vm.terminate()
        try:
            vm.wait(timeout=20)
        except subprocess.TimeoutExpired:
            vm.kill()
        subprocess.run(["pkill", "-f", f"hostfwd=tcp:127.0.0.1:{port}-"], check=False)
