"""Top-level errors of `aocu` are one line `aocu: error: ...` on stderr with a non-zero exit, never a traceback
(cu/cli.py main; `--debug` / AOCU_DEBUG=1 show it); a closed stdout ends quietly; a second `aocu serve` on a data
dir in use stops at once naming the holder's PID (cu/serve/supervisor.py); the build's system-header check
(setup.py) names the Debian packages."""

from __future__ import annotations

import json
import os
import re
import runpy
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cu.cli import EXIT_BROKEN_PIPE, error_line

REPO = Path(__file__).resolve().parent.parent
SNP_REPORT = REPO / "tests" / "vectors" / "sev" / "trustee_test-report.bin"


def aocu(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cu.cli", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def one_error_line(p: subprocess.CompletedProcess, *, allow_log: bool = False) -> str:
    """The single `aocu: error:` line of a failed run (`allow_log`: other log lines may precede it)."""
    assert p.returncode not in (0, None), p
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("aocu: error: ")]
    assert len(errors) == 1, p.stderr
    if not allow_log:
        assert lines == errors, p.stderr
    return errors[0]


def test_error_line_forms():
    assert error_line(SystemExit("aocu serve: the evaluator exited")) == "aocu: error: the evaluator exited"
    assert error_line(SystemExit("aocu: error: twice")) == "aocu: error: twice"
    assert error_line(FileExistsError(17, "File exists", "w.json")) == "aocu: error: w.json: File exists"
    assert error_line(ValueError("bad\nvalue")) == "aocu: error: bad value"
    assert error_line(KeyError("x")) == "aocu: error: KeyError: x"
    from attestation.errors import PolicyError
    from cu.codec.errors import CodecError
    assert error_line(CodecError("truncated item")) == "aocu: error: truncated item"
    assert error_line(PolicyError("policy: unknown key")) == "aocu: error: policy: unknown key"


def test_wallet_new_onto_an_existing_file(tmp_path):
    f = tmp_path / "w.json"
    f.write_text("{}")
    line = one_error_line(aocu("wallet", "new", "--type", "ed25519", "-o", str(f)))
    assert str(f) in line and "exists" in line
    assert f.read_text() == "{}"


def test_closed_stdout_exits_quietly():
    # the reader is gone before the command writes (`aocu evidence show FILE | head -c 10` with a fast head)
    p = subprocess.Popen([sys.executable, "-m", "cu.cli", "evidence", "show", str(SNP_REPORT)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == EXIT_BROKEN_PIPE and err == "", err
    # the shell pipeline itself: whatever the timing, no traceback and head gets its bytes
    sh = subprocess.run(["bash", "-c", f"{sys.executable} -m cu.cli evidence show {SNP_REPORT} | head -c 10"],
                        capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert len(sh.stdout) == 10 and b"Traceback" not in sh.stderr and b"Error" not in sh.stderr


def test_other_top_level_errors_are_one_line(tmp_path):
    one_error_line(aocu("item", "show", str(tmp_path / "missing.bin")))
    one_error_line(aocu("verify", "http://127.0.0.1:9/result/x"))
    line = one_error_line(aocu("module", "detect", str(SNP_REPORT)))
    assert "not a wasm module" in line
    (tmp_path / "k.json").write_text("not json")
    one_error_line(aocu("module", "publish", str(SNP_REPORT), "--format", "wasm32-unknown-emscripten2",
                        "--wallet", str(tmp_path / "k.json"), "-o", str(tmp_path / "x")))


def _wallet_0644(tmp_path: Path) -> Path:
    from cu.codec.wallet import ArweaveWallet
    f = tmp_path / "node-wallet.json"
    f.write_text(json.dumps(ArweaveWallet.generate().to_jwk()))
    f.chmod(0o644)
    return f


def test_serve_with_a_readable_key_file_and_debug(tmp_path):
    f = _wallet_0644(tmp_path)
    args = ("serve", "--tee", "none", "--data-dir", str(tmp_path / "data"), "--bind", "127.0.0.1:0", "--wallet", str(f))
    line = one_error_line(aocu(*args), allow_log=True)
    assert "0644" in line and "chmod 600" in line
    # the traceback on request
    for p in (aocu("--debug", *args), aocu(*args, env={"AOCU_DEBUG": "1"})):
        assert p.returncode != 0 and "Traceback" in p.stderr and "IdentityError" in p.stderr


# -- one data dir, two nodes ----------------------------------------------------------------------------
def _line(proc: subprocess.Popen, timeout: float = 30) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output in time"
    return proc.stdout.readline().strip()


@pytest.mark.slow
def test_second_serve_on_a_data_dir_in_use(tmp_path):
    import tests.test_node_e2e as e2e
    first = e2e.Node(tmp_path / "data")
    try:
        holder = int((tmp_path / "data" / "evaluator.lock").read_text())
        t0 = time.monotonic()
        p = aocu("serve", "--bind", f"127.0.0.1:{e2e.free_port()}", "--data-dir", str(tmp_path / "data"), "--tee",
                 "none", "--quiet", "--wallet", str(e2e.node_wallet()), timeout=60)
        assert time.monotonic() - t0 < 30
        line = one_error_line(p, allow_log=True)
        assert line == f"aocu: error: data dir {tmp_path / 'data'} is in use by PID {holder}"
        assert e2e.get(first.url + "/health")[0] == 200       # the first node is untouched
        # the first node's evaluator dies and another process takes the data dir: the supervisor gives up
        # (one line, the node stops) instead of restarting the evaluator forever
        blocker = subprocess.Popen([sys.executable, "-c", (
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "print('ready', flush=True)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n"
            "print('locked', flush=True); time.sleep(120)\n"), str(tmp_path / "data" / "evaluator.lock")],
            stdout=subprocess.PIPE, text=True)
        try:
            assert _line(blocker) == "ready"          # waiting in flock() for the evaluator's lock
            os.kill(holder, signal.SIGKILL)
            assert _line(blocker) == "locked"
            assert first.proc.wait(timeout=60) != 0
            log = first.logs()
            assert f"data dir {tmp_path / 'data'} is in use by PID {blocker.pid}" in log
            assert log.count("restarting it") <= 2 and "Traceback" not in log
            assert re.search(r"^aocu: error: data dir .* is in use by PID \d+$", log, re.M), log
        finally:
            blocker.kill()
            blocker.wait()
    finally:
        if first.proc.poll() is None:
            first.stop_kill()
        else:
            first._reap()


# -- the build's header check ---------------------------------------------------------------------------
def _setup_module():
    """setup.py's functions, without running setup()."""
    import setuptools
    real = setuptools.setup
    setuptools.setup = lambda **kw: None
    try:
        return runpy.run_path(str(REPO / "setup.py"))
    finally:
        setuptools.setup = real


def test_setup_header_check_names_the_debian_packages(tmp_path):
    g = _setup_module()
    inc = tmp_path / "include"
    (inc / "openssl").mkdir(parents=True)
    (inc / "openssl" / "evp.h").write_text("")
    (inc / "Python.h").write_text("")
    (inc / "sodium.h").write_text("")
    assert g["missing_headers"]([str(inc)]) == [("zstd.h", "libzstd-dev")]
    with pytest.raises(SystemExit) as exc:
        g["check_system_headers"]([str(inc)])
    msg = str(exc.value.code)
    assert "\n" not in msg and "zstd.h" in msg and "libzstd-dev" in msg and "libssl-dev" not in msg
    (inc / "openssl" / "evp.h").unlink()
    with pytest.raises(SystemExit, match="libzstd-dev libssl-dev"):
        g["check_system_headers"]([str(inc)])
    (inc / "sodium.h").unlink()
    with pytest.raises(SystemExit, match="libzstd-dev libssl-dev libsodium-dev"):
        g["check_system_headers"]([str(inc)])
    (inc / "zstd.h").write_text("")
    (inc / "openssl" / "evp.h").write_text("")
    (inc / "sodium.h").write_text("")
    g["check_system_headers"]([str(inc)])          # all there: no complaint
    # this machine builds the extension: its compiler's search list has the headers
    dirs = g["compiler_include_dirs"]()
    assert dirs and g["missing_headers"]([*dirs, *g["ext"].include_dirs, __import__("sysconfig").get_paths()[
        "include"]]) == []
    assert g["compiler_include_dirs"]("no-such-compiler-xyz") is None


def test_install_and_build_scripts_parse():
    for script in ("scripts/install.sh", "images/build.sh"):
        assert subprocess.run(["bash", "-n", str(REPO / script)]).returncode == 0, script
    text = (REPO / "scripts" / "install.sh").read_text()
    assert '["build-system"]["requires"]' in text and "--image" in text
