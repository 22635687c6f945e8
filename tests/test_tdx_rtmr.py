"""TDX RTMR[1]/RTMR[2] of a direct boot (attestation/tdx_rtmr.py) and their reference values.

Known answers, and where they come from:
- the four constant RTMR[1] boot events: their SHA-384s are the digests published TDX event logs carry for
  "Calling EFI Application from Boot Option", the separator and the two ExitBootServices actions;
- RTMR[2]: a public hardware measurement (a TD on QEMU 10.2.4 with edk2 202602 TDVF, Ubuntu kernel, command
  line "root=LABEL=cloudimg-rootfs ro console=ttyS0", published with aleph-im/aleph-vm's TDX measurement code):
  its LoadOptions event digest, its initrd digest and the resulting RTMR[2];
- Authenticode: the payload's own Debian kernel, whose Authenticode signature carries the SHA-256 image digest
  Debian signed (same algorithm, SHA-256 instead of SHA-384), when the image test has cached its package;
  a synthetic PE32+ (sections out of file order, trailing data, a certificate table) whose digest
  another, independent implementation (the same project's) pins; and the same image hashed slice by slice as
  edk2's MeasurePeImageAndExtend describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from attestation.evidence import Evidence, verify_evidence
from attestation.policy import Policy
from attestation.sim import SimulatedTee, build_tdx_collateral, build_tdx_quote
from attestation.tdx_rtmr import (
    RTMR1_BOOT_EVENTS,
    RtmrError,
    authenticode_digest,
    authenticode_sha384,
    direct_boot_events,
    load_options,
    replay,
    rtmrs,
    tdx_rtmr12,
)
from attestation.trust import TrustStore
from cu.cli import main

OVMF = Path("/usr/share/ovmf/OVMF.fd")
PUBLISHED_EVENT_DIGESTS = [
    "77a0dab2312b4e1e57a84d865a21e5b2ee8d677a21012ada819d0a98988078d3d740f6346bfe0abaa938ca20439a8d71",
    "394341b7182cd227c5c6b07ef8000cdfd86136c4292b8e576573ad7ed9ae41019f5818b4b971c9effc60e1ad9f1289f0",
    "214b0bef1379756011344877743fdc2a5382bac6e70362d624ccf3f654407c1b4badf7d8f9295dd3dabdef65b27677e0",
    "0a2e01c85deae718a530ad8c6d20a84009babe6c8989269e950d8cf440c6e997695e64d455c4174a652cd080f6230b74",
]
HW_CMDLINE = "root=LABEL=cloudimg-rootfs ro console=ttyS0"
HW_LOAD_OPTIONS = ("b8c85d40a1d555a451571e24d7d7c4c331bc15721d6e4b2a5cb5093214c44174"
                   "822a0916aa4d622d4309644de99cd59c")
HW_INITRD = "88de90bedcc560064688c74ccd6609a25ed9d48b0a0e13d8b2a558212724d8755b2c8114dcf04b8d51ea4cf7782e3091"
HW_RTMR2 = "972547466cb6bcb8a23cd479e9258c3affbbc4f0ba2805d732477200d0dff8432447c7a775e70453cdb51f018a306ece"
SYNTHETIC_PE_DIGEST = ("27ca0b497c08dcf49e302a2dd4bbe74889b19d0d1af84364c8cad3472d5ba1bf"
                       "da1e7cfe7fb94848d491cdfd2a163410")
CHECKSUM, SECURITY_DIR, HEADERS = 0x58 + 64, 0x58 + 112 + 32, 0x200


def _pe(rva_count: int = 16, cert_size: int = 0x20) -> bytes:
    """PE32+, two 0x100-byte sections listed out of file order (.text at 0x300, .data at 0x200), 0x40 bytes after
    them of which the last cert_size are the certificate table; patterned bytes so a wrong range shows."""
    pe = bytearray((i * 7 + 3) & 0xFF for i in range(0x440))
    pe[:64] = bytes(64)
    pe[:2] = b"MZ"
    struct.pack_into("<I", pe, 0x3C, 0x40)
    pe[0x40:0x44] = b"PE\0\0"
    coff = 0x44
    pe[coff : coff + 20] = bytes(20)
    struct.pack_into("<HH", pe, coff, 0x8664, 2)
    struct.pack_into("<H", pe, coff + 16, 240)
    opt = coff + 20
    pe[opt : opt + 240] = bytes(240)
    struct.pack_into("<H", pe, opt, 0x20B)
    struct.pack_into("<II", pe, opt + 60, HEADERS, 0x12345678)  # SizeOfHeaders, CheckSum
    struct.pack_into("<I", pe, opt + 108, rva_count)
    struct.pack_into("<II", pe, SECURITY_DIR, 0x420, cert_size)
    table = opt + 240
    pe[table : table + 80] = bytes(80)
    for i, (name, ptr) in enumerate(((b".text", 0x300), (b".data", 0x200))):
        pe[table + 40 * i : table + 40 * i + 8] = name.ljust(8, b"\0")
        struct.pack_into("<II", pe, table + 40 * i + 16, 0x100, ptr)
    return bytes(pe)


def test_constant_boot_events_are_the_published_digests():
    assert [hashlib.sha384(data).hexdigest() for _, data in RTMR1_BOOT_EVENTS] == PUBLISHED_EVENT_DIGESTS


def test_rtmr2_reproduces_a_hardware_measurement():
    assert hashlib.sha384(load_options(HW_CMDLINE, initrd=True, layout="prefix")).hexdigest() == HW_LOAD_OPTIONS
    assert replay([bytes.fromhex(HW_LOAD_OPTIONS), bytes.fromhex(HW_INITRD)]).hex() == HW_RTMR2
    # extend = SHA-384(old || digest) from 48 zero bytes, in order
    a, b = hashlib.sha384(b"a").digest(), hashlib.sha384(b"b").digest()
    assert replay([a, b]) == hashlib.sha384(hashlib.sha384(bytes(48) + a).digest() + b).digest() != replay([b, a])


def test_load_options_layouts():
    wide = "console=ttyS0 initrd=initrd".encode("utf-16-le") + b"\0\0"
    assert load_options("console=ttyS0", initrd=True) == wide  # edk2 2025.02 X86QemuLoadImageLib
    assert load_options("console=ttyS0", initrd=False) == "console=ttyS0".encode("utf-16-le") + b"\0\0"
    assert load_options("", initrd=True) == " initrd=initrd".encode("utf-16-le") + b"\0\0"
    assert load_options("", initrd=False) == b""  # no LoadOptions: the stub measures nothing
    with pytest.raises(RtmrError):
        load_options("x", initrd=True, layout="middle")


def test_authenticode_matches_edk2_steps_and_another_implementation():
    pe = _pe()
    assert authenticode_sha384(pe).hex() == SYNTHETIC_PE_DIGEST
    steps = (pe[:CHECKSUM] + pe[CHECKSUM + 4 : SECURITY_DIR] + pe[SECURITY_DIR + 8 : HEADERS]
             + pe[0x200:0x300] + pe[0x300:0x400] + pe[0x400:0x420])
    assert authenticode_sha384(pe) == hashlib.sha384(steps).digest()
    # CheckSum and the certificate table are outside the digest (a signature does not change it) ...
    patched = bytearray(pe)
    patched[CHECKSUM] ^= 0xFF
    patched[0x430] ^= 0xFF
    assert authenticode_sha384(bytes(patched)) == authenticode_sha384(pe)
    # ... any section byte is in it
    patched[0x250] ^= 1
    assert authenticode_sha384(bytes(patched)) != authenticode_sha384(pe)
    # no security directory: everything after the checksum, and all trailing data
    bare = _pe(rva_count=4)
    expect = bare[:CHECKSUM] + bare[CHECKSUM + 4 : HEADERS] + bare[0x200:0x400] + bare[0x400:]
    assert authenticode_sha384(bare) == hashlib.sha384(expect).digest()


def _signed_digest(pe: bytes) -> bytes:
    """The SHA-256 image digest in the Authenticode signature (SpcIndirectDataContent's DigestInfo)."""
    nt = struct.unpack_from("<I", pe, 0x3C)[0]
    at, size = struct.unpack_from("<II", pe, nt + 24 + 112 + 8 * 4)
    cert = pe[at : at + size]
    spc = cert.find(bytes.fromhex("060a2b060104018237020104"))  # 1.3.6.1.4.1.311.2.1.4
    alg = cert.find(bytes.fromhex("0609608648016503040201"), spc)  # sha256
    assert spc > 0 and alg > spc
    rest = cert[alg + 11 :].removeprefix(b"\x05\x00")
    assert rest[:2] == b"\x04\x20"
    return rest[2:34]


def test_authenticode_of_the_signed_debian_kernel(cache_dir):
    debs = sorted((cache_dir / "images" / "debs").glob("linux-image-*.deb"))
    if os.environ.get("AOCU_TEST_KERNEL_DEB"):
        debs = [Path(os.environ["AOCU_TEST_KERNEL_DEB"])]
    if not debs or shutil.which("dpkg-deb") is None:
        pytest.skip("no cached Debian kernel package (tests/test_images.py caches the payload's)")
    # Only the kernel: tar stops after it, before the package's modules are decompressed.
    deb = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
    kernel = subprocess.run(["tar", "-x", "--occurrence=1", "-O", "--wildcards", "./boot/vmlinuz-*"],
                            stdin=deb.stdout, capture_output=True, check=True).stdout
    deb.stdout.close()  # type: ignore[union-attr]
    deb.wait()
    assert authenticode_digest(kernel, "sha256") == _signed_digest(kernel)
    assert len(authenticode_sha384(kernel)) == 48


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda pe: b"\x7fELF" + pe[4:], "no MZ header"),
    (lambda pe: pe[:0x40] + b"XE\0\0" + pe[0x44:], "no PE signature"),
    (lambda pe: _pe(cert_size=0x41), "certificate table"),
    (lambda pe: pe[:0x58 + 240 + 20] + struct.pack("<I", 0x400) + pe[0x58 + 240 + 24 :], "past the end"),
    (lambda pe: pe[:0x90], "truncated"),
    (lambda pe: pe[:0x100], "SizeOfHeaders is larger"),
])
def test_authenticode_refuses_malformed_kernels(mutate, error):
    with pytest.raises(RtmrError, match=error):
        authenticode_sha384(mutate(_pe()))


def test_direct_boot_event_order(tmp_path):
    kernel, initrd = _pe(), b"\x42" * 5000
    (tmp_path / "initrd").write_bytes(initrd)
    events = direct_boot_events(kernel, tmp_path / "initrd", "console=ttyS0")
    assert [(e.rtmr, e.what) for e in events] == [
        (1, "kernel (PE/COFF Authenticode)"), (1, "Calling EFI Application from Boot Option"), (1, "separator"),
        (1, "Exit Boot Services Invocation"), (1, "Exit Boot Services Returned with Success"),
        (2, "LOADED_IMAGE::LoadOptions"), (2, "Linux initrd")]
    r1, r2 = tdx_rtmr12(kernel, initrd, "console=ttyS0")
    assert rtmrs(events) == {1: r1, 2: r2}
    assert r1 == replay([authenticode_sha384(kernel)] + [bytes.fromhex(d) for d in PUBLISHED_EVENT_DIGESTS])
    assert r2 == replay([hashlib.sha384(load_options("console=ttyS0", initrd=True)).digest(),
                         hashlib.sha384(initrd).digest()])
    # no initrd: no initrd event, and LoadOptions without initrd=initrd
    assert [e.what for e in direct_boot_events(kernel, None, "x") if e.rtmr == 2] == ["LOADED_IMAGE::LoadOptions"]


@pytest.mark.skipif(not OVMF.is_file(), reason="Debian package ovmf not installed")
def test_reference_values_pin_kernel_initrd_and_cmdline(tmp_path, capsys):
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "vmlinuz").write_bytes(_pe())
    (payload / "initrd.img").write_bytes(b"\x07" * 4096)
    (payload / "cmdline").write_text("console=ttyS0 aocu.tee=tdx")
    rv = tmp_path / "rv.json"
    assert main(["measure", "--mode", "tdx", "--tdvf", str(OVMF), "--payload", str(payload), "-o", str(rv)]) == 0
    doc = json.loads(rv.read_text())
    r1, r2 = tdx_rtmr12(payload / "vmlinuz", payload / "initrd.img", "console=ttyS0 aocu.tee=tdx")
    assert doc["tdx"]["rtmr1"] == r1.hex() and doc["tdx"]["rtmr2"] == r2.hex()
    assert "rtmr0" not in doc["tdx"]  # host-dependent: not pinned
    capsys.readouterr()
    assert main(["measure", "--mode", "tdx", "--tdvf", str(OVMF), "--payload", str(payload)]) == 0
    assert capsys.readouterr().out.split() == [doc["tdx"]["mrtd"][0], r1.hex(), r2.hex()]

    mrtd = bytes.fromhex(doc["tdx"]["mrtd"][0])
    policy = Policy.from_json({**doc, "allow_simulated": True})
    tee = SimulatedTee(tmp_path / "sim")
    chain = tee.tdx_chain()
    trust = TrustStore.default().with_simulated(tee.roots_path)

    def failed(rtmr1: bytes, rtmr2: bytes) -> list[str]:
        quote = build_tdx_quote(chain, bytes(64), mrtd=mrtd, rtmrs=(b"\x5a" * 48, rtmr1, rtmr2, bytes(48)))
        ev = Evidence("tdx", "sim-tdx", quote, {"collateral": build_tdx_collateral(chain)})
        r = verify_evidence(ev, trust=trust, policy=policy)
        return [c.name for c in r.failed()] if not r.ok else []

    assert failed(r1, r2) == []  # any RTMR[0]: it is the host's
    other_kernel = bytearray(_pe())
    other_kernel[0x2A0] ^= 1
    assert failed(tdx_rtmr12(bytes(other_kernel), b"\x07" * 4096, "console=ttyS0 aocu.tee=tdx")[0], r2) == [
        "tdx.policy.rtmr1"]
    for initrd, cmdline in ((b"\x08" * 4096, "console=ttyS0 aocu.tee=tdx"), (b"\x07" * 4096, "console=ttyS0")):
        assert failed(r1, tdx_rtmr12(_pe(), initrd, cmdline)[1]) == ["tdx.policy.rtmr2"]
