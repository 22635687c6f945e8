"""images/: build the confidential-VM payload twice (bit-identical), boot it under QEMU (KVM when usable,
else TCG) with the simulated TEE and a sealed data disk, and talk to the node inside through user-mode port
forwarding.

Boots of one payload: the first formats a blank disk and runs a process; the second reads the disk the way
whoever holds the (simulated) chip could, then lets the real init reopen it; two more get copies with flipped
data bits or a forged header and must refuse. Slow by nature (debootstrap, kernel boots under TCG): several
minutes; it still runs in CI. AOCU_IMAGE_TEST_PAYLOAD=DIR boots a payload built earlier instead (the build
test is then skipped).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
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


@pytest.fixture(scope="module")
def payloads(request):
    prebuilt = os.environ.get("AOCU_IMAGE_TEST_PAYLOAD")   # built earlier: iterate on the boots only
    if prebuilt:
        d = Path(prebuilt)
        m = json.loads((d / "manifest.json").read_text())
        return m, None, d, d
    if os.geteuid() != 0:
        pytest.skip("images/build.sh needs root (debootstrap, chroot); CI runs as root")
    from tests import background
    from tests.conftest import IMAGE_PAYLOADS, print_past_capture, start_image_builds

    # Both builds started in the background at collection (tests/conftest.py); this waits for them.
    start_image_builds()
    outcome = background.wait("images", timeout=3600)
    print_past_capture(request, outcome.summary("images: images/build.sh twice"))
    assert outcome.returncode == 0, outcome.log[-4000:]
    assert outcome.log.count("[build 7/7] manifest") == 2  # progress is shown, by both builds
    a_dir, b_dir = IMAGE_PAYLOADS
    a, b = (json.loads((d / "manifest.json").read_text()) for d in IMAGE_PAYLOADS)
    return a, b, a_dir, b_dir


def test_two_builds_are_bit_identical(payloads):
    a, b, a_dir, b_dir = payloads
    if b is None:
        pytest.skip("AOCU_IMAGE_TEST_PAYLOAD: boots a prebuilt payload, builds nothing")
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
    # the seal policy is measured with the rest of the command line
    assert "aocu.seal=required" in b["cmdline"] and b["inputs"]["seal"] == "required"
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


def _result(url: str, pid: str, mid: str, timeout: float = 300) -> dict:
    from tests.test_node_e2e import request

    deadline = time.monotonic() + timeout      # the guest compiles the module under TCG: slow, not stuck
    while True:
        status, body, _ = request("GET", f"{url}/result/{mid}?process-id={pid}", timeout=120)
        if status != 202 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200, body
    return json.loads(body)


def _process_message_round_trip(url: str, tmp_path: Path) -> tuple[object, str, str]:
    from cu.codec.wallet import ArweaveWallet
    from tests.modules.build import MODULES, build
    from tests.test_node_e2e import send, spawn, upload_module

    wallet = ArweaveWallet.generate()
    fmt = MODULES["lua32"].module_format
    module_id = upload_module(url, wallet, build("lua32").read_bytes(), fmt)
    pid = spawn(url, wallet, module_id)
    mid = send(url, wallet, pid, "Count")
    assert _result(url, pid, mid)["Output"] == "1"
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
    return wallet, pid, mid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DISK_MIB = 64                         # sealed volume: 16 MiB LUKS2 header + dm-integrity journal/tags + data
MARKER_PREFIX = "AOCU-SEALED-MEMORY-"


class _Vm:
    """One `images/launch.sh plain` boot with a data disk: console in a file, QMP for an ACPI power-off.
    launch.sh execs QEMU, so the process is QEMU itself."""

    def __init__(self, payload: Path, disk: Path, work: Path, name: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.serial = work / f"{name}.serial.log"
        self.qmp = work / f"{name}.qmp"
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            ["bash", str(REPO / "images" / "launch.sh"), "plain", str(payload), "--port", str(self.port),
             "--serial", str(self.serial), "--mem", "2048", "--data", str(disk),
             "--", "-qmp", f"unix:{self.qmp},server=on,wait=off"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_health(self, timeout: float = 480) -> float:
        while time.monotonic() < self.t0 + timeout:
            assert self.proc.poll() is None, f"VM exited early:\n{self.console()[-3000:]}"
            if self.healthy():
                return time.monotonic() - self.t0
            time.sleep(1)
        raise AssertionError(f"no /health within {timeout} s:\n" + self.console()[-3000:])

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"VM still running after {timeout} s:\n{self.console()[-3000:]}") from None

    def power_off(self, timeout: float = 240) -> float:
        """Press the ACPI power button (QMP system_powerdown) and wait for the guest to power off."""
        t = time.monotonic()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.qmp))
            f = s.makefile("rw")
            f.readline()                                    # greeting
            for cmd in ("qmp_capabilities", "system_powerdown"):
                f.write(json.dumps({"execute": cmd}) + "\n")
                f.flush()
                while True:                                 # skip events until the command's answer
                    answer = json.loads(f.readline())
                    if "return" in answer or "error" in answer:
                        break
                assert "return" in answer, answer
        assert self.wait_exit(timeout) == 0
        return time.monotonic() - t

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _copy_disk(disk: Path, to: Path) -> Path:
    """A data disk with its simulated chip (launch.sh keeps the chip in DISK.sim-chip)."""
    shutil.copyfile(disk, to)
    shutil.copyfile(f"{disk}.sim-chip", f"{to}.sim-chip")
    return to


@pytest.fixture(scope="module")
def first_boot(payloads, tmp_path_factory) -> dict:
    """Boot 1 on a blank disk: the guest formats it as a sealed volume, the node serves, a process computes a
    recognisable string into its memory, and an ACPI power-off stops the node (which checkpoints the process)
    and closes the volume. The disk as it is then is copied for the tamper test."""
    *_, payload = payloads
    work = tmp_path_factory.mktemp("sealed")
    disk = work / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(DISK_MIB << 20)                  # what an operator does: a blank (sparse) raw file
    vm = _Vm(payload, disk, work, "boot1")
    try:
        boot_s = vm.wait_health()
        with urllib.request.urlopen(vm.url + "/health", timeout=60) as resp:
            tee_header = resp.headers.get("X-Aocu-Tee") or ""
        from tests.test_node_e2e import send

        wallet, pid, mid = _process_message_round_trip(vm.url, work)
        nonce = secrets.token_hex(8).upper()
        marker = MARKER_PREFIX + nonce
        # built in the process's memory: the message carries only the lower-case prefix and the nonce
        code = f'Secret = string.upper("{MARKER_PREFIX.lower()}") .. "{nonce}"; return Secret'
        eval_mid = send(vm.url, wallet, pid, "Eval", data=code)
        assert marker in json.dumps(_result(vm.url, pid, eval_mid)["Output"])
        with urllib.request.urlopen(vm.url + "/~meta@1.0/info", timeout=60) as resp:
            info = json.loads(resp.read())
        stop_s = vm.power_off()
    finally:
        vm.close()
    print(f"\nboot 1 (blank disk, formats {DISK_MIB} MiB): /health after {boot_s:.1f} s; "
          f"ACPI power-off took {stop_s:.1f} s")
    return {"payload": payload, "disk": disk, "pristine": _copy_disk(disk, work / "pristine.img"),
            "console": vm.console(), "boot_s": boot_s, "info": info, "tee_header": tee_header, "pid": pid,
            "eval_mid": eval_mid, "marker": marker}


def test_payload_boots_and_serves(first_boot):
    console = first_boot["console"]
    # first boot of a blank disk: the simulated chip is created, the disk formatted, the console says so
    assert "aocu-init: blank data disk /dev/vda: formatting a sealed volume" in console
    assert "creating a simulated chip (first boot)" in console
    assert "starting aocu serve --tee sim" in console
    assert "integrity error" not in console
    # the power button stops the node cleanly (it checkpoints) before the guest powers off
    assert "aocu-init: power button: stopping the node" in console
    assert "aocu-init: aocu exited with status" in console
    # the plain VM has no TEE: the node says so on every response
    assert "sim" in first_boot["tee_header"] and first_boot["info"]["tee"].startswith("sim")


FORENSIC = r"""#!/bin/sh
# tests/test_images.py only: what whoever holds the simulated chip can do -- derive the volume key, open the
# volume read-only and read it. Prints the node's key files and which files hold MARKER, then runs the real
# /init on the same disk.
export PATH=/opt/aocu/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /run /mnt; mount -t tmpfs tmpfs /run
for m in virtio_blk ext4 dm_mod dm_crypt dm_integrity xts authenc aesni_intel sha256_ssse3 algif_skcipher \
  algif_hash; do modprobe -q $m; done
for d in /sys/block/vd*; do [ "$(cat $d/serial)" = aocu-sim-chip ] && chip=/dev/${d##*/}; done
mkdir -p /run/chip && tar -xf "$chip" -C /run/chip
aocu seal key --tee sim --label aocu/disk/v1 --data-dir /run/chip -o - |
  cryptsetup open --readonly --key-file - --keyfile-size 32 /dev/vda forensic
mount -o ro,noload /dev/mapper/forensic /mnt
for f in wallet.json ed25519.jwk; do echo "FORENSIC $f $(base64 -w0 /mnt/$f)" > /dev/console; done
echo "FORENSIC marker-files $(grep -rlaF MARKER /mnt | tr '\n' ' ')" > /dev/console
umount /mnt; cryptsetup close forensic
umount /run /dev /sys /proc 2>/dev/null
exec /init
"""


def _forensic_payload(payload: Path, marker: str, out: Path) -> Path:
    """The payload plus /aocu-test-forensic (appended as a second cpio archive) and rdinit= pointing at it."""
    stage = out / "stage"
    stage.mkdir(parents=True)
    script = stage / "aocu-test-forensic"
    script.write_text(FORENSIC.replace("MARKER", marker))
    script.chmod(0o755)
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=b"aocu-test-forensic\n", cwd=stage,
                          capture_output=True, check=True).stdout
    base = (payload / "initrd.img").read_bytes()
    # the kernel takes an appended archive only at a 4-byte aligned offset (zero padding is skipped)
    (out / "initrd.img").write_bytes(base + bytes(-len(base) % 4) + cpio)
    (out / "vmlinuz").symlink_to(payload / "vmlinuz")
    (out / "cmdline").write_text((payload / "cmdline").read_text() + " rdinit=/aocu-test-forensic")
    return out


def _b64url_decode(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_sealed_disk_holds_no_plaintext(first_boot, tmp_path):
    """The node's private keys and the process's memory string are on the volume (read with the chip's key)
    and nowhere in the raw disk image; the real init reopens the same volume and the node keeps its identity
    and state."""
    import base64

    from cu.hashing import b64url

    info, marker = first_boot["info"], first_boot["marker"]
    forensic = _forensic_payload(first_boot["payload"], marker, tmp_path / "forensic")
    vm = _Vm(forensic, first_boot["disk"], tmp_path, "boot2")
    try:
        boot_s = vm.wait_health()
        with urllib.request.urlopen(vm.url + "/~meta@1.0/info", timeout=60) as resp:
            again = json.loads(resp.read())
        assert (again["address"], again["ed25519"]) == (info["address"], info["ed25519"])
        out = _result(vm.url, first_boot["pid"], first_boot["eval_mid"])
        assert marker in json.dumps(out)
    finally:
        vm.close()
    print(f"\nboot 2 (reads the volume, then the real init reopens it): /health after {boot_s:.1f} s")
    console = vm.console()
    assert "aocu-init: verifying the sealed volume /dev/vda" in console and "integrity error" not in console
    found = dict(line.split(" ", 2)[1:] for line in console.splitlines() if line.startswith("FORENSIC "))
    wallet = json.loads(base64.b64decode(found["wallet.json"]))
    ed = json.loads(base64.b64decode(found["ed25519.jwk"]))
    # these are the node's keys: the public halves are the ones its info route shows
    assert b64url(hashlib.sha256(_b64url_decode(wallet["n"])).digest()) == info["address"]
    assert _b64url_decode(ed["x"]) == _b64url_decode(info["ed25519"])
    assert "/mnt/node.sqlite" in found["marker-files"]          # the store on the volume holds the string
    private = [wallet[k] for k in ("d", "p", "q", "dp", "dq", "qi")] + [ed["d"]]
    needles = [marker.encode(), b'"kty"', *(p.encode() for p in private),
               *(_b64url_decode(p) for p in private)]
    for image in (first_boot["pristine"], first_boot["disk"]):    # after boot 1, and after boot 2 wrote too
        raw = image.read_bytes()
        assert len(raw) == DISK_MIB << 20
        leaked = [n[:12] for n in needles if n in raw]
        assert not leaked, f"{image.name} holds plaintext: {leaked}"


def _boot_refuses(payload: Path, disk: Path, work: Path, name: str) -> tuple[str, float]:
    """Boot until the guest powers off by itself; the node must never answer. (console, seconds)"""
    vm = _Vm(payload, disk, work, name)
    served = False
    try:
        while vm.proc.poll() is None and time.monotonic() < vm.t0 + 480:
            served = served or vm.healthy()
            time.sleep(1)
        code = vm.wait_exit(5)
    finally:
        vm.close()
    console = vm.console()
    assert not served and code == 0, console[-3000:]
    assert "starting aocu serve" not in console
    return console, time.monotonic() - vm.t0


def _integrity_errors(console: str) -> list[str]:
    return [line for line in console.splitlines() if "aocu-init: integrity error:" in line]


def test_tampered_disk_refuses_to_start(first_boot, tmp_path):
    """Flipped bits in the data area of the disk written by boot 1: the next boot reports one integrity error
    line and powers off; the node never serves."""
    disk = _copy_disk(first_boot["pristine"], tmp_path / "tampered.img")
    size = disk.stat().st_size
    with open(disk, "r+b") as f:
        for off in (size // 2, size * 3 // 4, size - 3 * 4096):  # past the 16 MiB header and the journal
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0x01]))
    console, took = _boot_refuses(first_boot["payload"], disk, tmp_path, "boot3")
    print(f"\nboot 3 (flipped bits): powered off after {took:.1f} s")
    # the key was right and the header intact (the volume opened): reading the altered sectors failed
    assert _integrity_errors(console) == [
        "aocu-init: integrity error: sealed volume /dev/vda fails authentication on read (altered data); "
        "not starting the node, powering off"], console[-3000:]


LUKS2_HEADER = 4096                   # binary header; the JSON area follows up to hdr_size


def _rewrite_luks2_json(disk: Path, change) -> None:
    """Edit the LUKS2 JSON metadata of both header copies and recompute their (unkeyed) SHA-256 checksums,
    as a host can: LUKS2 on-disk format, binary header fields hdr_size @8, seqid @16, csum @448 (64 bytes)."""
    with open(disk, "r+b") as f:
        primary = f.read(LUKS2_HEADER)
        assert primary[:6] == b"LUKS\xba\xbe", "no LUKS2 header"
        hdr_size = int.from_bytes(primary[8:16], "big")
        for offset in (0, hdr_size):
            f.seek(offset)
            hdr = bytearray(f.read(hdr_size))
            meta = json.loads(bytes(hdr[LUKS2_HEADER:]).rstrip(b"\0"))
            change(meta)
            text = json.dumps(meta, separators=(",", ":")).encode()
            assert len(text) < hdr_size - LUKS2_HEADER
            hdr[LUKS2_HEADER:] = text.ljust(hdr_size - LUKS2_HEADER, b"\0")
            hdr[16:24] = (int.from_bytes(hdr[16:24], "big") + 1).to_bytes(8, "big")   # a newer seqid
            hdr[448:512] = bytes(64)
            hdr[448:480] = hashlib.sha256(hdr).digest()
            f.seek(offset)
            f.write(hdr)


def test_forged_header_refuses_to_start(first_boot, tmp_path):
    """A header rewritten with a valid checksum so that keyslot 0 uses cipher_null (which would accept any key
    and hand over a volume key the host chose): refused before the key is used."""
    disk = _copy_disk(first_boot["pristine"], tmp_path / "forged.img")

    def null_keyslot(meta: dict) -> None:
        assert meta["keyslots"]["0"]["area"]["encryption"] == "aes-xts-plain64"
        meta["keyslots"]["0"]["area"]["encryption"] = "cipher_null-ecb"

    _rewrite_luks2_json(disk, null_keyslot)
    console, took = _boot_refuses(first_boot["payload"], disk, tmp_path, "boot4")
    print(f"\nboot 4 (forged header): powered off after {took:.1f} s")
    assert _integrity_errors(console) == [
        "aocu-init: integrity error: the LUKS2 header on /dev/vda is not the one this image writes (cipher, "
        "integrity or keyslots altered); not starting the node, powering off"], console[-3000:]
