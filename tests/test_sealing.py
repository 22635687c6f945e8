"""Sealing keys (attestation/sealing.py): the SNP MSG_KEY_REQ/RSP layouts against the spec tables in
docs/SEALING.md, the ioctl path with the simulated firmware behind it, the field selection, and `aocu seal key`."""

from __future__ import annotations

import ctypes
import os
import re
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from attestation import sealing
from attestation.providers.sevguest import SNP_GET_DERIVED_KEY, SevGuestDevice
from attestation.sealing import KeyRequest, SealingUnavailable, derive_key

DOC = Path(__file__).resolve().parent.parent / "docs" / "SEALING.md"


def _spec_table(title: str) -> list[tuple[int, int, str]]:
    """(offset, size, field) rows of the markdown table following the line `title`."""
    text = DOC.read_text()
    after = text[text.index(title) :]
    rows = []
    for line in after.splitlines()[1:]:
        m = re.match(r"\|\s*0x([0-9A-Fa-f]+)\s*\|\s*(\d+)\s*\|\s*(\w+)\s*\|", line)
        if m:
            rows.append((int(m[1], 16), int(m[2]), m[3]))
        elif rows and not line.startswith("|"):
            break
    return rows


def test_key_request_layout_matches_spec_table():
    rows = _spec_table("MSG_KEY_REQ (32 bytes, little-endian):")
    assert [r[2] for r in rows] == [
        "ROOT_KEY_SELECT", "RESERVED", "GUEST_FIELD_SELECT", "VMPL", "GUEST_SVN", "TCB_VERSION"]
    assert sum(r[1] for r in rows) == 32 == sealing.KEY_REQ_SIZE
    assert all(a[0] + a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))  # contiguous, no padding
    values = {"ROOT_KEY_SELECT": 1, "RESERVED": 0, "GUEST_FIELD_SELECT": 0x2A, "VMPL": 3, "GUEST_SVN": 0x01020304,
              "TCB_VERSION": 0x1122334455667788}
    raw = KeyRequest(1, 0x2A, 3, 0x01020304, 0x1122334455667788).pack()
    for off, size, name in rows:
        assert raw[off : off + size] == values[name].to_bytes(size, "little"), name
    assert KeyRequest.unpack(raw) == KeyRequest(1, 0x2A, 3, 0x01020304, 0x1122334455667788)
    # the bits named in the doc are the module's constants
    assert sealing.FIELDS_DEFAULT == 0x29 and "0x29 = GUEST_POLICY (bit 0) + MEASUREMENT (bit 3)" in DOC.read_text()
    for bit, name in enumerate(["GUEST_POLICY", "IMAGE_ID", "FAMILY_ID", "MEASUREMENT", "GUEST_SVN", "TCB_VERSION"]):
        assert getattr(sealing, f"FIELD_{name}") == 1 << bit
        assert f"{bit} {name}" in DOC.read_text()


def test_key_response_layout_matches_spec_table():
    rows = {r[2]: r for r in _spec_table("MSG_KEY_RSP (64 bytes):")}
    assert sum(r[1] for r in rows.values()) == 64 == sealing.KEY_RSP_SIZE
    off, size, _ = rows["DERIVED_KEY"]
    rsp = bytearray(64)
    rsp[off : off + size] = bytes(range(1, 33))
    assert sealing.parse_key_response(bytes(rsp)) == bytes(range(1, 33))
    st_off, st_size, _ = rows["STATUS"]
    rsp[st_off : st_off + st_size] = (0x16).to_bytes(st_size, "little")
    with pytest.raises(sealing.ProviderError, match="0x16 .INVALID_PARAM"):
        sealing.parse_key_response(bytes(rsp))


def test_bad_requests_are_refused_before_the_device():
    with pytest.raises(ValueError, match="reserved bits"):
        KeyRequest(guest_field_select=1 << 6).pack()
    with pytest.raises(ValueError, match="VMPL"):
        KeyRequest(vmpl=4).pack()
    with pytest.raises(ValueError, match="reserved field"):
        KeyRequest.unpack(struct.pack("<IIQIIQ", 0, 1, 0, 0, 0, 0))


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sealsim")


def test_derive_key_sim_per_label_and_stable(sim_dir):
    a = derive_key("sim", "aocu/cache/v1", data_dir=sim_dir)
    assert len(a) == 32
    assert a == derive_key("sim", "aocu/cache/v1", data_dir=sim_dir)
    assert a != derive_key("sim", "aocu/volume/v1", data_dir=sim_dir)
    assert a != derive_key("none", "aocu/cache/v1", data_dir=sim_dir)
    with pytest.raises(ValueError, match="label"):
        derive_key("sim", "", data_dir=sim_dir)
    with pytest.raises(ValueError, match="data_dir is required"):
        derive_key("sim", "x")


def test_field_selection_decides_what_changes_the_key(sim_dir):
    other = bytes(range(48))
    base = sealing.sim_root(sim_dir)
    assert sealing.sim_root(sim_dir, measurement=other) != base         # another image
    assert sealing.sim_root(sim_dir, policy=0x30000 | 1 << 19) != base  # debug-enabled launch
    # without MEASUREMENT selected, the image does not matter (why the default selects it)
    no_meas = sealing.FIELDS_DEFAULT & ~sealing.FIELD_MEASUREMENT
    assert sealing.sim_root(sim_dir, fields=no_meas) == sealing.sim_root(sim_dir, fields=no_meas, measurement=other)
    assert sealing.sim_root(sim_dir, vmpl=1) != base                    # VMPL is always mixed in
    other_chip = sim_dir.parent / "otherchip"
    assert sealing.sim_root(other_chip) != base                         # another (simulated) chip


def test_simulated_firmware_refuses_what_hardware_refuses(sim_dir):
    with pytest.raises(sealing.ProviderError, match="INVALID_PARAM"):
        sealing.sim_root(sim_dir, tcb_version=0xFF << 56)   # microcode SVN above the committed TCB
    from attestation.sim import SimulatedTee, snp_derived_key_response
    chain = SimulatedTee(sim_dir).snp_chain()
    rsp = snp_derived_key_response(chain, KeyRequest(vmpl=0).pack(), vmpl=1)  # below the caller's VMPL
    assert struct.unpack_from("<I", rsp)[0] == 0x16
    rsp = snp_derived_key_response(chain, KeyRequest(root_key_select=1).pack())  # no VMRK without an agent
    assert struct.unpack_from("<I", rsp)[0] == 0x16


def test_snp_path_through_the_ioctl(sim_dir, tmp_path):
    """The real /dev/sev-guest code path with the kernel side emulated: the ioctl number and the
    snp_guest_request_ioctl are checked, the request bytes read from req_data go to the simulated
    firmware, its answer is written to resp_data."""
    from attestation.sim import SimulatedTee, build_snp_report, snp_derived_key_response
    chain = SimulatedTee(sim_dir).snp_chain()
    ioc = (3 << 30) | (32 << 16) | (ord("S") << 8) | 0x1  # _IOWR('S', 1, 32-byte struct)
    assert SNP_GET_DERIVED_KEY == ioc
    seen = []

    def ioctl(fd: int, request: int, arg: bytearray) -> int:
        msg_version, req_ptr, resp_ptr, _ = struct.unpack("<BxxxxxxxQQQ", arg)
        assert msg_version == 1
        if request == 0xC0205300:  # SNP_GET_REPORT for the TCB version
            rd = ctypes.string_at(req_ptr, 64)
            body = struct.pack("<II", 0, 1184) + bytes(24) + build_snp_report(chain, rd)
            ctypes.memmove(resp_ptr, body, len(body))
            return 0
        assert request == ioc
        req = ctypes.string_at(req_ptr, 32)
        seen.append(KeyRequest.unpack(req))
        rsp = snp_derived_key_response(chain, req)
        ctypes.memmove(resp_ptr, rsp, 64)
        return 0

    dev_path = tmp_path / "sev-guest"
    dev_path.write_bytes(b"")
    dev = SevGuestDevice(str(dev_path), ioctl=ioctl)
    root = sealing.snp_root(device=dev)
    assert seen[0].guest_field_select == 0x29 and seen[0].vmpl == 0 and seen[0].tcb_version != 0
    assert root == sealing.sim_root(sim_dir)  # same request, same simulated chip: same root

    def failing(fd: int, request: int, arg: bytearray) -> int:
        struct.pack_into("<II", arg, 24, 0x16, 0)
        raise OSError(5, "Input/output error")

    with pytest.raises(SealingUnavailable, match="fw_error 0x16"):
        sealing.snp_root(device=SevGuestDevice(str(dev_path), ioctl=failing), fields=sealing.FIELD_MEASUREMENT)


def test_tdx_and_missing_device_are_unavailable(tmp_path):
    with pytest.raises(SealingUnavailable, match="no sealing key on TDX"):
        derive_key("tdx", "x")
    with pytest.raises(SealingUnavailable, match="/dev/sev-guest"):
        sealing.snp_root(root=tmp_path)
    assert issubclass(SealingUnavailable, sealing.AttestationError)


def test_none_key_file_private_under_umask_000(tmp_path):
    old = os.umask(0)
    try:
        k = derive_key("none", "a", data_dir=tmp_path / "d")
    finally:
        os.umask(old)
    f = tmp_path / "d" / "sealing.key"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600 and len(f.read_bytes()) == 32
    assert derive_key("none", "a", data_dir=tmp_path / "d") == k
    f.chmod(0o644)
    with pytest.raises(SealingUnavailable, match="not a private regular file"):
        derive_key("none", "a", data_dir=tmp_path / "d")


def test_cli_seal_key(sim_dir, tmp_path):
    out = tmp_path / "k.bin"
    cmd = [sys.executable, "-m", "cu.cli", "seal", "key", "--tee", "sim", "--label", "aocu/volume/v1",
           "--data-dir", str(sim_dir)]
    old = os.umask(0)
    try:
        subprocess.run([*cmd, "-o", str(out)], check=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes() == derive_key("sim", "aocu/volume/v1", data_dir=sim_dir)
    piped = subprocess.run([*cmd, "-o", "-"], check=True, capture_output=True).stdout
    assert piped == out.read_bytes()
    r = subprocess.run([sys.executable, "-m", "cu.cli", "seal", "key", "--tee", "tdx", "--label", "x", "-o", "-"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no sealing key on TDX" in r.stderr and r.stdout == ""


def test_cli_refuses_a_terminal(sim_dir):
    import pty
    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "cu.cli", "seal", "key", "--tee", "sim", "--label", "x",
                            "--data-dir", str(sim_dir), "-o", "-"], stdout=slave, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2 and "refusing to write a raw key to a terminal" in r.stderr
