"""`aocu evidence verify|show` and `aocu attest` through cu.cli.main, on the real vectors."""

from __future__ import annotations

import json

import pytest

from cu.cli import main

SNP_AT = "2025-06-01T00:00:00Z"
TDX_AT = "2023-07-01T01:00:00Z"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evidence", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "verify" in out and "show" in out


def test_verify_virtee_hex_report(capsys, vectors):
    s = vectors / "sev"
    code, out, _ = run(
        capsys,
        "evidence",
        "verify",
        str(s / "virtee_report_milan.hex"),
        "--vcek",
        str(s / "virtee_vcek_milan.der"),
        "--chain",
        str(s / "virtee_cert_chain_milan.pem"),
        "--at",
        SNP_AT,
    )
    assert code == 0, out
    assert "PASS  snp.signature" in out and "PASS  snp.ark_pinned" in out and "VERIFIED" in out


def test_verify_debug_report_fails_and_names_key(capsys, vectors, tmp_path):
    s = vectors / "sev"
    args = [
        "evidence",
        "verify",
        str(s / "gosevguest_milan_attestation.bin"),
        "--vcek",
        str(s / "gosevguest_milan_vcek.der"),
        "--at",
        SNP_AT,
    ]
    code, out, _ = run(capsys, *args)
    assert code == 1
    assert "FAIL  snp.policy.debug" in out and "snp.allow_debug" in out and "NOT VERIFIED" in out
    pol = tmp_path / "rv.json"
    pol.write_text(json.dumps({"snp": {"allow_debug": True, "report_data": "0102030405" + "00" * 59}}))
    code, out, _ = run(capsys, *args, "--policy", str(pol), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["verified"] is True and doc["kind"] == "snp"
    assert {c["name"] for c in doc["checks"]} >= {
        "snp.signature",
        "snp.policy.debug",
        "snp.policy.report_data",
    }


def test_verify_tdx_with_collateral_dir(capsys, vectors):
    t = vectors / "tdx"
    code, out, _ = run(
        capsys,
        "evidence",
        "verify",
        str(t / "gotdxguest_tdx_prod_quote_SPR_E4.dat"),
        "--collateral",
        str(t),
        "--at",
        TDX_AT,
    )
    assert code == 1
    assert "FAIL  tdx.tcb.platform_level: TCB level not found" in out
    assert "PASS  tdx.tcb_info.signature" in out and "PASS  tdx.crl.pck" in out


def test_verify_many_shows_progress(capsys, vectors):
    s = vectors / "sev"
    files = [str(s / "trustee_test-report.bin")] * 3
    code, out, err = run(
        capsys, "evidence", "verify", *files, "--vcek", str(s / "trustee_test-vcek.der"), "--at", SNP_AT
    )
    assert code == 1  # provisional firmware under the strict default
    assert "[1/3]" in err and "[3/3]" in err
    assert out.count("FAIL  snp.tcb.committed_vs_current") == 3


def test_verify_bad_inputs(capsys, vectors, tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x07" * 1184)
    code, out, _ = run(capsys, "evidence", "verify", str(garbage))
    assert code == 1 and "version 117901063 is not supported" in out and "NOT VERIFIED" in out
    code, _, err = run(capsys, "evidence", "verify", str(tmp_path / "missing.bin"))
    assert code == 2 and "no such file" in err
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 << 20))
    code, _, err = run(capsys, "evidence", "verify", str(big))
    assert code == 2 and "larger than" in err
    bad_policy = tmp_path / "p.json"
    bad_policy.write_text('{"snp": {"alow_debug": true}}')
    code, _, err = run(capsys, "evidence", "verify", str(garbage), "--policy", str(bad_policy))
    assert code == 2 and "alow_debug" in err
    s = vectors / "sev"
    junk = tmp_path / "junk.der"
    junk.write_bytes(b"0\x82\x01\x00garbage")
    code, out, _ = run(capsys, "evidence", "verify", str(s / "trustee_test-report.bin"), "--vcek", str(junk))
    assert code == 1 and "FAIL  snp.endorsements" in out
    code, _, err = run(capsys, "evidence", "verify", str(garbage), "--at", "2025-06-01")
    assert code == 2 and "timezone" in err


def test_show(capsys, vectors):
    code, out, _ = run(capsys, "evidence", "show", str(vectors / "sev" / "trustee_test-vlek-report.bin"))
    assert code == 0
    doc = json.loads(out)
    assert doc["product"] == "Milan" and doc["vmpl"] == 1 and doc["signer_info"]["signing_key"] == "VLEK"
    assert doc["reported_tcb"] == {"raw": "0xd918000000000004", "bl": 4, "tee": 0, "snp": 24, "ucode": 217}
    assert doc["platform_info"]["alias_check_complete"] is True
    code, out, _ = run(
        capsys, "evidence", "show", str(vectors / "tdx" / "gotdxguest_tdx_prod_quote_SPR_E4.dat")
    )
    doc = json.loads(out)
    assert code == 0 and doc["kind"] == "tdx" and doc["pck"]["fmspc"] == "50806f000000"
    code, out, _ = run(capsys, "evidence", "show", str(vectors / "sev" / "gosevguest_milan_attestation.bin"))
    assert json.loads(out)["reported_tcb"]["raw"] == "0x4405000000000002"


def test_show_truncated(capsys, tmp_path, vectors):
    t = tmp_path / "t.dat"
    t.write_bytes((vectors / "tdx" / "gotdxguest_tdx_prod_quote_SPR_E4.dat").read_bytes()[:1000])
    code, _, err = run(capsys, "evidence", "show", str(t))
    assert code == 1 and "invalid evidence" in err


def test_attest_sim_then_verify(capsys, tmp_path):
    data = tmp_path / "data"
    ev = tmp_path / "ev.json"
    code, _, err = run(
        capsys, "attest", "--tee", "sim", "--nonce", "c0ffee", "--data-dir", str(data), "-o", str(ev)
    )
    assert code == 0 and "SIMULATED" in err
    roots = data / "sim-tee" / "roots.pem"
    assert str(roots) in err
    code, out, _ = run(capsys, "evidence", "verify", str(ev))
    assert code == 1 and "FAIL  snp.ark_pinned" in out
    code, out, _ = run(capsys, "evidence", "verify", str(ev), "--allow-simulated", str(roots))
    assert code == 0 and "SIMULATED" in out
    code, out, _ = run(
        capsys, "evidence", "verify", str(ev), "--allow-simulated", "--data-dir", str(data), "--json"
    )
    doc = json.loads(out)
    assert code == 0 and doc["simulated"] is True and doc["tee"] == "sim-snp"
    assert doc["fields"]["report_data"].startswith("c0ffee00")
    code, out, _ = run(capsys, "evidence", "show", str(ev))
    assert json.loads(out)["tee"] == "sim-snp"


def test_attest_sim_tdx_raw(capsys, tmp_path):
    code, out, _ = run(capsys, "attest", "--tee", "sim-tdx", "--data-dir", str(tmp_path), "--raw")
    assert code == 0
    raw = bytes.fromhex(out.strip())
    assert raw[:2] == b"\x04\x00"


def test_attest_errors(capsys, tmp_path):
    code, _, err = run(capsys, "attest", "--tee", "none")
    assert code == 1 and "no TEE" in err
    code, _, err = run(capsys, "attest", "--tee", "snp", "--root", str(tmp_path))
    assert code == 1 and "SEV-SNP" in err
    code, _, err = run(capsys, "attest", "--tee", "sim", "--nonce", "zz")
    assert code == 2
    code, _, err = run(capsys, "attest", "--tee", "sim", "--nonce", "00" * 65)
    assert code == 2 and "64" in err
