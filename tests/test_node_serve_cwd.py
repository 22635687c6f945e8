"""`aocu serve` must run the installed aocu in every process it starts, whatever the working directory holds
(a source checkout without the built extension once made the evaluator import the wrong `cu` and exit)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_node_e2e import free_port, get

AOCU = Path(sys.executable).with_name("aocu")


@pytest.mark.skipif(not AOCU.exists(), reason="the aocu console script is installed by scripts/install.sh")
def test_serve_ignores_a_cu_package_in_the_working_directory(tmp_path):
    decoy = tmp_path / "cu"
    decoy.mkdir()
    (decoy / "__init__.py").write_text('raise ImportError("decoy cu imported from the working directory")\n')
    port = free_port()
    proc = subprocess.Popen([str(AOCU), "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
                             "--tee", "none", "--workers", "1", "--quiet"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                status, body, headers = get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                assert time.monotonic() < deadline, "node did not answer within 90 s"
                time.sleep(0.2)
        assert status == 200 and b"address" in body
        assert headers["X-Aocu-Tee"].startswith("none")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
