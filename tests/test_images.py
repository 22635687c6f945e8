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


def _sim_root_from_endorsements(url: str, out: Path) -> Path:
    """The simulated root lives in the guest; a client trusts it explicitly by taking it from the node's
    endorsements (this is what --allow-simulated means: never acceptable for a real deployment)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    doc = json.loads(urllib.request.urlopen(url + "/~attestation@1.0/evidence", timeout=60).read())
    assert doc["tee"].startswith("sim-") and doc["evidence"]["tee"] == doc["tee"]
    chain = base64.b64decode(doc["evidence"]["endorsements"]["chain"])
    roots = [c for c in x509.load_pem_x509_certificates(chain) if c.subject == c.issuer]
    assert roots and all("SIMULATED" in c.subject.rfc4514_string() for c in roots)
    out.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in roots))
    return out


def _process_message_round_trip(url: str, tmp_path: Path) -> None:
    from cu.codec.wallet import ArweaveWallet
    from tests.modules.build import MODULES, build
    from tests.test_node_e2e import request, send, spawn, upload_module

    wallet = ArweaveWallet.generate()
    fmt = MODULES["lua32"].module_format
    module_id = upload_module(url, wallet, build("lua32").read_bytes(), fmt)
    pid = spawn(url, wallet, module_id)
    mid = send(url, wallet, pid, "Count")
    deadline = time.monotonic() + 300          # the guest compiles the module under TCG: slow, not stuck
    while True:
        status, body, _ = request("GET", f"{url}/result/{mid}?process-id={pid}", timeout=120)
        if status != 202 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200, body
    assert json.loads(body)["Output"] == "1"
    root = _sim_root_from_endorsements(url, tmp_path / "sim-root.pem")

    def verify(*extra: str) -> subprocess.CompletedProcess:
        # `aocu verify` in its own process, as a client on the host runs it
        return subprocess.run([sys.executable, "-m", "cu.cli", "verify", f"{url}/result/{mid}?process-id={pid}",
                               *extra, "--json"], capture_output=True, text=True, timeout=300, cwd=REPO,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))

    ok = verify("--allow-simulated", str(root))
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert json.loads(ok.stdout)["verified"] is True
    # without explicitly trusting the simulated root the same result does not verify
    refused = verify()
    assert refused.returncode == 1 and "evidence" in json.loads(refused.stdout)["failed"]


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
        _process_message_round_trip(f"http://127.0.0.1:{port}", tmp_path)
    finally:
        vm.terminate()
        try:
            vm.wait(timeout=20)
        except subprocess.TimeoutExpired:
            vm.kill()
        subprocess.run(["pkill", "-f", f"hostfwd=tcp:127.0.0.1:{port}-"], check=False)
