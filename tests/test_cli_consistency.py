"""Conventions across `aocu` commands: `-o -` is stdout wherever `-o` exists; `--json` prints one object per input
per line (JSON Lines) for one input or many; `aocu evidence verify` inline checks (`--measurement`, `--report-data`,
`--min-tcb`, ...) over a `--policy` file, with unconstrained values shown as SKIP and no advice to relax a
measurement. (`aocu run`'s line checks: test_engine_cli.py; `aocu measure`'s flags: test_measure.py; `aocu fetch`:
test_fetch.py.)"""

from __future__ import annotations

import json

import pytest

from cu.cli import main
from cu.codec import DataItem
from tests.conftest import VECTORS

SEV = VECTORS / "sev"
SNP_AT = "2025-06-01T00:00:00Z"
GSG = [str(SEV / "gosevguest_milan_attestation.bin"), "--vcek", str(SEV / "gosevguest_milan_vcek.der"),
       "--at", SNP_AT]
GSG_MEASUREMENT = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"


def verify(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["evidence", "verify", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def line_of(out: str, name: str) -> str:
    return next(x for x in out.splitlines() if x.split()[1:2] == [name] or x.split()[1:2] == [name + ":"])


def test_unconstrained_values_are_skip_not_pass(capsys):
    code, out, _ = verify(capsys, *GSG, "--allow-debug")
    assert code == 0, out
    for name in ("snp.policy.measurement", "snp.policy.host_data", "snp.policy.report_data", "snp.tcb.minimum",
                 "snp.policy.author_key_digest"):
        assert line_of(out, name).startswith("SKIP  "), name
    assert f"value {GSG_MEASUREMENT}" in line_of(out, "snp.policy.measurement")
    assert "PASS  snp.signature" in out and "not constrained (SKIP)" in out.splitlines()[-1]
    code, out, _ = verify(capsys, *GSG, "--allow-debug", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["snp.policy.measurement"]["skipped"] is True and checks["snp.signature"]["skipped"] is False


def test_inline_checks_pass_and_fail(capsys):
    code, out, _ = verify(capsys, *GSG, "--allow-debug", "--measurement", GSG_MEASUREMENT,
                          "--report-data", "0102030405", "--min-tcb", "bl=2,snp=5,ucode=68", "--vmpl", "0")
    assert code == 0, out
    assert line_of(out, "snp.policy.measurement").startswith("PASS  ")
    assert line_of(out, "snp.policy.report_data").startswith("PASS  ")  # short value zero-padded to 64 bytes
    assert line_of(out, "snp.tcb.minimum").startswith("PASS  ")
    # a measurement mismatch names the expected value and does not advise relaxing anything
    other = "ab" * 48
    code, out, _ = verify(capsys, *GSG, "--allow-debug", "--measurement", other)
    assert code == 1
    line = line_of(out, "snp.policy.measurement")
    assert line.startswith("FAIL  ") and other in line and "relax" not in line.lower()
    code, out, _ = verify(capsys, *GSG, "--allow-debug", "--report-data", "01")
    assert code == 1 and line_of(out, "snp.policy.report_data").startswith("FAIL  ")
    code, out, _ = verify(capsys, *GSG, "--allow-debug", "--min-tcb", "0x4405000000000003")  # bl 3 > 2
    assert code == 1 and "bl 2 < minimum 3" in line_of(out, "snp.tcb.minimum")
    code, out, _ = verify(capsys, *GSG, "--allow-debug", "--min-guest-svn", "1", "--min-build", "4")
    assert code == 1
    assert "GUEST_SVN 0, minimum 1" in line_of(out, "snp.policy.guest_svn")
    assert "build 3, minimum 4" in line_of(out, "snp.policy.minimum_build")
    code, out, _ = verify(capsys, *GSG)  # the report's own DEBUG policy: refused unless allowed
    assert code == 1 and line_of(out, "snp.policy.debug").startswith("FAIL  ")


def test_flags_override_the_policy_file(capsys, tmp_path):
    pol = tmp_path / "rv.json"
    pol.write_text(json.dumps({"snp": {"allow_debug": True, "measurement": ["cd" * 48], "vmpl": [1]}}))
    code, out, _ = verify(capsys, *GSG, "--policy", str(pol))
    assert code == 1 and line_of(out, "snp.policy.measurement").startswith("FAIL  ")
    code, out, _ = verify(capsys, *GSG, "--policy", str(pol), "--measurement", GSG_MEASUREMENT, "--vmpl", "0")
    assert code == 0, out  # the file's allow_debug stays, its measurement and vmpl are replaced


@pytest.mark.parametrize("flags, message", [
    (["--measurement", "00"], "--measurement: must be 48 bytes (96 hex digits), got 1"),
    (["--host-data", "zz"], "--host-data: not hex"),
    (["--min-tcb", "bl=2,foo=1"], "--min-tcb: 'foo=1' is not NAME=0..255"),
    (["--vmpl", "7"], "--vmpl: 0-3"),
    (["--product", "Rome"], "--product 'Rome': expected one of Milan, Genoa, Turin"),
])
def test_bad_flag_values_are_one_line(capsys, flags, message):
    code, out, err = verify(capsys, *GSG, *flags)
    assert code == 2 and out == ""
    assert err == f"aocu: error: {message}\n" or (err.startswith("aocu: error: " + message) and err.count("\n") == 1)


def test_json_is_one_object_per_input_per_line(capsys):
    one = SEV / "trustee_test-report.bin"
    args = ["--vcek", str(SEV / "trustee_test-vcek.der"), "--at", SNP_AT, "--json"]
    _, out, _ = verify(capsys, str(one), *args)
    lines = out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["file"] == str(one)
    _, out, err = verify(capsys, str(one), str(one), *args)
    docs = [json.loads(x) for x in out.splitlines()]
    assert len(docs) == 2 and [set(d) for d in docs] == [set(json.loads(lines[0]))] * 2
    assert "[2/2]" in err  # progress stays on stderr


def test_dash_output_is_stdout(capsysbinary, tmp_path):
    key = tmp_path / "k.json"
    assert main(["wallet", "new", "--type", "ed25519", "-o", "-"]) == 0
    out, err = capsysbinary.readouterr()
    jwk = json.loads(out)
    assert jwk["kty"] == "OKP" and len(err.decode().strip()) == 43  # the address goes to stderr
    key.write_text(json.dumps(jwk))
    (tmp_path / "d").write_bytes(b"payload")
    assert main(["item", "sign", "--wallet", str(key), "--data", str(tmp_path / "d"), "-o", "-"]) == 0
    out, err = capsysbinary.readouterr()
    item = DataItem.parse(out)
    assert item.verify() and item.data == b"payload" and err.decode().strip() == item.id
    assert main(["attest", "--tee", "sim", "--data-dir", str(tmp_path / "data"), "-o", "-"]) == 0
    out, err = capsysbinary.readouterr()
    assert json.loads(out)["tee"] == "sim-snp" and b"SIMULATED" in err
    assert not (tmp_path / "-").exists()


def test_module_publish_dash_output(capsysbinary, tmp_path):
    from tests.test_publish import F3, wasm

    f = tmp_path / "m.wasm"
    f.write_bytes(wasm([("env", "emscripten_memcpy_js")]))
    key = tmp_path / "k.json"
    assert main(["wallet", "new", "--type", "ed25519", "-o", str(key)]) == 0
    capsysbinary.readouterr()
    assert main(["module", "publish", str(f), "--wallet", str(key), "-o", "-"]) == 0
    out, err = capsysbinary.readouterr()
    item = DataItem.parse(out)
    assert item.tag("Module-Format") == F3 and err.decode().splitlines()[-1] == item.id
