"""`aocu run` (docs/ABI.md, Calling handle) on a WAT test module."""

from __future__ import annotations

import json

from cu.cli import main
from tests.wat.gen import FORMAT_OF, build


def run(capsys, *argv) -> tuple[int, list[dict], str]:
    # --raw: this WAT module reads one-letter commands, not JSON messages
    rc = main(["run", "--raw", *map(str, argv)])
    cap = capsys.readouterr()
    return rc, [json.loads(x) for x in cap.out.splitlines()], cap.err


def test_run_carries_memory_and_snapshots(tmp_path, capsys):
    wasm = tmp_path / "p.wasm"
    wasm.write_bytes(build("f4"))
    msgs = tmp_path / "m.jsonl"
    msgs.write_text("c\nc\nf\n\nc\n")  # lines reach handle() byte for byte (this module reads raw text)
    snap = tmp_path / "s.bin"
    common = [wasm, "--format", FORMAT_OF["f4"], "--messages", msgs, "--cache-dir", tmp_path / "cache"]
    rc, lines, _ = run(capsys, *common, "--snapshot-out", snap)
    assert rc == 0
    assert [x.get("Output") for x in lines] == ["1", "2", None, "3"]
    assert lines[2]["Error"] == "boom" and lines[2]["Messages"] == []
    assert set(lines[0]) == {"Output", "Messages", "Spawns", "Assignments", "GasUsed"}
    rc, lines, _ = run(capsys, *common, "--snapshot-in", snap)
    assert rc == 0 and [x.get("Output") for x in lines] == ["4", "5", None, "6"]


def test_run_limits_and_errors(tmp_path, capsys):
    wasm = tmp_path / "p.wasm"
    wasm.write_bytes(build("w64"))
    msgs = tmp_path / "m.jsonl"
    msgs.write_text("l\ng\nc\n")
    rc, lines, _ = run(capsys, wasm, "--format", FORMAT_OF["w64"], "--messages", msgs, "--compute-limit", "100000",
                       "--memory-limit", "1-mb", "--cache-dir", tmp_path / "cache")
    assert rc == 0
    assert lines[0]["Error"] == "out of gas!"
    assert "memory limit of 1048576 bytes" in lines[1]["Error"]
    assert lines[2]["Output"] == "1"
    rc, lines, err = run(capsys, msgs, "--format", FORMAT_OF["w64"], "--messages", msgs)
    assert rc == 1 and lines == [] and "not a wasm binary" in err
    rc, lines, err = run(capsys, wasm, "--format", FORMAT_OF["w64"], "--messages", tmp_path / "missing.jsonl")
    assert rc == 1 and "missing.jsonl" in err


def test_run_checks_every_line_first_and_reports_imports_once(tmp_path, capsys):
    wasm = tmp_path / "p.wasm"
    wasm.write_bytes(build("f4"))
    msgs = tmp_path / "m.jsonl"
    msgs.write_text('{"Id":"a"}\n\n{"Id":"b"}\n[1]\n{bad\n')
    rc = main(["run", str(wasm), "--format", FORMAT_OF["f4"], "--messages", str(msgs)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""  # nothing evaluated
    assert err == f"aocu: error: {msgs} line 4: a message must be a JSON object, got list (2 bad lines in all; " \
                  "--raw passes lines unchecked)\n"
    msgs.write_text('{"Id":"a"}\n{"Id":"b"}\n')
    rc = main(["run", str(wasm), "--format", FORMAT_OF["f1"], "--messages", str(msgs)])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and len(err.splitlines()) == 1
    reason = "format wasm32-unknown-emscripten imports only namespace 'a' and metering.usegas"
    assert err.count(reason) == 1 and "module imports do not match this format" in err
    assert f"aocu module detect {wasm}" in err
    rc = main(["run", str(wasm), "--format", FORMAT_OF["f4"], "--messages", str(msgs)])
    assert rc == 0 and len(capsys.readouterr().out.splitlines()) == 2  # JSON objects reach handle()
