"""images/firmware.sh: the AmdSev OVMF built from Debian 13's edk2 source.

Reproducibility across machines: images/firmware.lock pins the SHA-256 of the build made when the pin was
committed; the build here (one per cache: tests/.cache/images/firmware) must give the same bytes. The other
tests check what the firmware is for (the SNP_KERNEL_HASHES section of measured direct boot), that a second
run is a cache copy, and that the pins refuse other source bytes and other results.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sevsnpmeasure.ovmf import OVMF, SectionType

REPO = Path(__file__).resolve().parent.parent
LOCK_FILE = REPO / "images" / "firmware.lock"
DEBIAN12_OVMF = Path("/usr/share/ovmf/OVMF.fd")


def _lock(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {k: v.strip('"') for k, v in pairs}


def _run(out: Path, cache_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, AOCU_IMAGE_CACHE=str(cache_dir / "images"), **env)
    return subprocess.run(["bash", str(REPO / "images" / "firmware.sh"), str(out)], env=full,
                          capture_output=True, text=True, timeout=3600)


def test_firmware_is_the_pinned_build(amdsev_firmware):
    lock = _lock(LOCK_FILE.read_text())
    data = amdsev_firmware.read_bytes()
    meta = json.loads((amdsev_firmware.parent / "firmware.json").read_text())
    digest = hashlib.sha256(data).hexdigest()
    assert meta["sha256"] == digest and meta["size"] == len(data)
    assert meta["source"] == {"package": "edk2", "version": lock["EDK2_VERSION"], "suite": "trixie",
                              "dsc_sha256": lock["EDK2_DSC_SHA256"], "orig_sha256": lock["EDK2_ORIG_SHA256"],
                              "debian_sha256": lock["EDK2_DEBIAN_SHA256"]}
    # The second build (this machine's, against the one the pin was taken from): the same bytes. Only a build
    # with the same compiler/linker/assembler versions can reproduce them; firmware.sh warns about others.
    if meta["toolchain"] != lock["TOOLCHAIN"]:
        pytest.skip(f"toolchain {meta['toolchain']} is not the pinned {lock['TOOLCHAIN']}: built {digest}")
    assert digest == lock["FIRMWARE_SHA256"], f"built {digest}, pinned {lock['FIRMWARE_SHA256']} (same toolchain)"


def test_firmware_has_the_kernel_hashes_section(amdsev_firmware):
    """QEMU's sev-snp-guest,kernel-hashes=on writes the table of kernel/initrd/cmdline hashes into this page."""
    fw = OVMF(str(amdsev_firmware))
    assert fw.has_metadata_section(SectionType.SNP_KERNEL_HASHES)
    assert fw.is_sev_hashes_table_supported() and fw.sev_hashes_table_gpa() > 0
    if DEBIAN12_OVMF.is_file():  # what the distribution ships cannot do measured direct boot
        assert not OVMF(str(DEBIAN12_OVMF)).has_metadata_section(SectionType.SNP_KERNEL_HASHES)


def test_second_run_is_a_cache_copy(amdsev_firmware, cache_dir, tmp_path):
    start = time.monotonic()
    proc = _run(tmp_path / "again", cache_dir)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 30 and "[firmware] cached:" in proc.stderr
    assert (tmp_path / "again" / "ovmf-amdsev.fd").read_bytes() == amdsev_firmware.read_bytes()


def test_pins_refuse_other_bytes(amdsev_firmware, cache_dir, tmp_path):
    text = LOCK_FILE.read_text()
    lock = _lock(text)
    # a different pinned result: the cached build is not the pinned one -> refused, both hashes shown
    toolchain = json.loads((amdsev_firmware.parent / "firmware.json").read_text())["toolchain"]
    bad_result = tmp_path / "result.lock"
    bad_result.write_text(text.replace(f"FIRMWARE_SHA256={lock['FIRMWARE_SHA256']}", f"FIRMWARE_SHA256={'0' * 64}")
                          .replace(f'TOOLCHAIN="{lock["TOOLCHAIN"]}"', f'TOOLCHAIN="{toolchain}"'))
    proc = _run(tmp_path / "r", cache_dir, AOCU_FIRMWARE_LOCK=str(bad_result))
    assert proc.returncode == 1
    assert "differs from the pinned build with the same toolchain" in proc.stderr
    assert hashlib.sha256(amdsev_firmware.read_bytes()).hexdigest() in proc.stderr
    # a different pinned source: the downloaded tarball is refused before anything is built
    bad_source = tmp_path / "source.lock"
    bad_source.write_text(text.replace(lock["EDK2_ORIG_SHA256"], "f" * 64))
    proc = _run(tmp_path / "s", cache_dir, AOCU_FIRMWARE_LOCK=str(bad_source),
                AOCU_FIRMWARE_BUILD_DIR=str(tmp_path / "build"))
    assert proc.returncode == 1
    assert f"has SHA-256 {lock['EDK2_ORIG_SHA256']}, pinned {'f' * 64}" in proc.stderr
    assert not (tmp_path / "s" / "ovmf-amdsev.fd").exists() and not (tmp_path / "build" / "edk2").exists()


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="images/trixie.sh needs apt")
def test_trixie_sh_checks_the_archive_signature(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "images" / "trixie.sh"), "frobnicate"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "images/trixie.sh source PKG" in proc.stderr
    # A keyring without trixie's keys: apt refuses the signed index, so nothing is fetched.
    old = Path("/usr/share/keyrings/debian-archive-bullseye-stable.gpg")
    if not old.is_file():
        pytest.skip("no bullseye-only keyring to check against")
    env = dict(os.environ, AOCU_TRIXIE_CACHE=str(tmp_path / "apt"), AOCU_TRIXIE_KEYRING=str(old))
    proc = subprocess.run(["bash", str(REPO / "images" / "trixie.sh"), "source-only", "edk2", str(tmp_path / "s")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "NO_PUBKEY" in proc.stderr or "not signed" in proc.stderr or "signature" in proc.stderr
    assert not list((tmp_path / "apt" / "lists").glob("*Sources*"))
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())
