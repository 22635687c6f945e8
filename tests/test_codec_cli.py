"""`aocu item show|verify|sign` and `aocu wallet new|show`."""

from __future__ import annotations

import json
import stat

import pytest

from cu.cli import main
from cu.codec import DataItem
from cu.codec.wallet import Ed25519Key, Secp256k1Key, load_key


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("kind", ["ed25519", "secp256k1"])
def test_sign_show_verify(tmp_path, capsys, kind):
    key = Ed25519Key.generate() if kind == "ed25519" else Secp256k1Key.generate()
    kf = tmp_path / "key.json"
    kf.write_text(json.dumps(key.to_jwk()))
    data = tmp_path / "data.bin"
    data.write_bytes(b"\x00\x01payload")
    out = tmp_path / "item.bin"
    code, stdout, _ = run(capsys, "item", "sign", "--wallet", str(kf), "--tag", "Type=Message", "--tag", "Empty=",
                          "--target", "A" * 43, "--anchor", "0" * 32, "--data", str(data), "-o", str(out))
    assert code == 0
    item = DataItem.parse(out.read_bytes())
    assert stdout.strip() == item.id and item.verify()
    code, stdout, _ = run(capsys, "item", "show", str(out))
    shown = json.loads(stdout)
    assert code == 0 and shown["id"] == item.id and shown["owner_address"] == key.address
    assert shown["tags"] == [{"name": "Type", "value": "Message"}, {"name": "Empty", "value": ""}]
    assert shown["anchor"] == "0" * 32 and shown["target"] == "A" * 43 and shown["data_size"] == 9
    code, stdout, _ = run(capsys, "item", "verify", str(out))
    assert code == 0 and stdout.startswith("valid")
    raw = bytearray(out.read_bytes())
    raw[-1] ^= 1
    out.write_bytes(bytes(raw))
    code, stdout, _ = run(capsys, "item", "verify", "--json", str(out))
    assert code == 1 and json.loads(stdout)["valid"] is False


def test_type_4_and_mismatched_type(tmp_path, capsys):
    kf = tmp_path / "k.json"
    kf.write_text(json.dumps(Ed25519Key.generate().to_jwk()))
    (tmp_path / "d").write_bytes(b"x")
    code, _, _ = run(capsys, "item", "sign", "--wallet", str(kf), "--type", "4", "--data", str(tmp_path / "d"),
                     "-o", str(tmp_path / "o"))
    assert code == 0 and DataItem.parse((tmp_path / "o").read_bytes()).signature_type == 4
    code, _, err = run(capsys, "item", "sign", "--wallet", str(kf), "--type", "3", "--data", str(tmp_path / "d"),
                       "-o", str(tmp_path / "o"))
    assert code == 2 and "does not match" in err


def test_bad_files_fail_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x02\x00" + b"\x00" * 90)
    code, _, err = run(capsys, "item", "verify", str(bad))
    assert code == 1 and "aocu:" in err
    code, _, err = run(capsys, "item", "show", str(tmp_path / "missing"))
    assert code == 1
    kf = tmp_path / "k.json"
    kf.write_text("{not json")
    code, _, err = run(capsys, "wallet", "show", str(kf))
    assert code == 1 and "JSON" in err


@pytest.mark.slow
def test_wallet_new_and_show(tmp_path, capsys):
    out = tmp_path / "w.json"
    code, stdout, _ = run(capsys, "wallet", "new", "-o", str(out))
    assert code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    w = load_key(out)
    assert stdout.strip() == w.address and len(w.owner) == 512
    code, stdout, _ = run(capsys, "wallet", "show", str(out))
    shown = json.loads(stdout)
    assert shown["address"] == w.address and shown["bits"] == 4096 and "d" not in shown["public_jwk"]
