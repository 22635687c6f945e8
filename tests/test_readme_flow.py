"""The README as a new user runs it, and the operator files it documents.

- `test_readme_flow` (slow): on a clean copy of the repository (the files git knows, nothing built), the README
  blocks marked `<!-- readme-flow -->` in order: install, serve, create a wallet and publish a module, spawn /
  message / result with aoconnect in legacy and mainnet mode, verify the three results. Each step is timed
  (test-artifacts/readme-flow.json).
- Dockerfile and deploy/aocu.service: Docker is not available here, so the image is not built; what can be checked
  is: its CMD is the README's serve command (same parsed flags except bind address and data dir) and really
  serves, its HEALTHCHECK command passes against it, the files it copies exist and the Debian packages it
  installs exist; the unit passes `systemd-analyze verify` and `security --offline` and runs `aocu serve` flags
  that parse.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cu.cli import build_parser
from tests.conftest import CACHE, REPO
from tests.test_node_e2e import free_port

MARK = "<!-- readme-flow"
README_PORT = "127.0.0.1:6363"
ARTIFACTS = REPO / "test-artifacts"


def flow_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block right after a readme-flow marker line, in README order."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(MARK):
            fence = lines[i + 1]
            assert fence.startswith("```"), f"README line {i + 2}: a readme-flow marker must precede a code block"
            end = lines.index("```", i + 2)
            out.append((fence[3:].strip(), "\n".join(lines[i + 2:end]) + "\n"))
    return out


def serve_argv(block: str) -> list[str]:
    """The `aocu serve ...` command of the README's first block (`install && serve`)."""
    serve = next(part for part in block.split("&&") if " serve " in f" {part} ")
    return shlex.split(serve)


def test_readme_marks_the_flow():
    blocks = flow_blocks((REPO / "README.md").read_text())
    assert [lang for lang, _ in blocks] == ["sh", "sh", "js", "sh"]
    assert "scripts/install.sh" in blocks[0][1] and serve_argv(blocks[0][1])[1:3] == ["serve", "--tee"]
    assert "module publish" in blocks[1][1] and "MODE: 'mainnet'" in blocks[2][1] and "aocu verify" in blocks[3][1]


# -- Dockerfile -------------------------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    return [(m.group(1).upper(), m.group(2).strip()) for line in text.splitlines()
            if (m := re.match(r"\s*([A-Za-z]+)\s+(.*)", line)) and not line.lstrip().startswith("#")]


def exec_form(instr: list[tuple[str, str]], name: str) -> list[str]:
    args = [a for i, a in instr if i == name][-1]
    return json.loads(args.removeprefix("CMD").strip())


def test_dockerfile_matches_the_readme_and_its_inputs_exist():
    instr = dockerfile()
    froms = [a for i, a in instr if i == "FROM"]
    assert froms and all(a.split()[0] == "debian:12-slim" for a in froms)
    user = [a for i, a in instr if i == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert [a for i, a in instr if i == "VOLUME"] == ["/data"]
    argv = exec_form(instr, "ENTRYPOINT") + exec_form(instr, "CMD")
    readme_serve = serve_argv(flow_blocks((REPO / "README.md").read_text())[0][1])
    assert argv[0] == "aocu" and Path(readme_serve[0]).name == "aocu"
    parser = build_parser()
    image, readme = vars(parser.parse_args(argv[1:])), vars(parser.parse_args(readme_serve[1:]))
    differ = {k for k in image.keys() | readme.keys() if image.get(k) != readme.get(k) and not k.startswith("_")}
    assert differ == {"bind", "data_dir"}, differ  # listening on all interfaces, state on the volume
    assert image["bind"] == "0.0.0.0:6363" and image["data_dir"] == "/data" and image["tee"] == "sim"
    for args in (a for i, a in instr if i == "COPY" and "--from" not in a):
        for src in shlex.split(args)[:-1]:
            assert (REPO / src).exists(), f"Dockerfile COPY {src}: not in the repository"
    if shutil.which("apt-cache"):
        for args in (a for i, a in instr if i == "RUN" and "apt-get install" in a):
            names = re.search(r"--no-install-recommends\s+([^&]+)", args).group(1).split()
            p = subprocess.run(["apt-cache", "show", "--no-all-versions", *names], capture_output=True, text=True)
            assert p.returncode == 0, f"Dockerfile installs a package Debian does not have: {p.stderr.strip()}"
            shown = set(re.findall(r"^Package: (\S+)$", p.stdout, re.M))
            assert shown == set(names), set(names) - shown


def test_dockerfile_cmd_serves_and_its_healthcheck_passes(tmp_path):
    """The image's argv (host port and data dir moved into the test) serves, and HEALTHCHECK's command passes."""
    instr = dockerfile()
    argv = exec_form(instr, "ENTRYPOINT") + exec_form(instr, "CMD")
    port = free_port()
    argv = [a.replace("0.0.0.0:6363", f"127.0.0.1:{port}").replace("/data", str(tmp_path / "data")) for a in argv]
    health = next(a for i, a in instr if i == "HEALTHCHECK")
    check = json.loads(health.split(" CMD ", 1)[1])
    check = [a.replace("127.0.0.1:6363", f"127.0.0.1:{port}") for a in check]
    assert check[0] == "python3" and "/health" in check[-1]
    proc = subprocess.Popen([sys.executable, "-m", "cu.cli", *argv[1:]], cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 60
        while True:
            rc = subprocess.run([sys.executable, *check[1:]], capture_output=True).returncode
            if rc == 0:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "the image's CMD did not start serving"
            time.sleep(0.3)
        # the same HEALTHCHECK fails when nothing answers
        stale = [a.replace(str(port), str(free_port())) for a in check]
        assert subprocess.run([sys.executable, *stale[1:]], capture_output=True).returncode != 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


# -- systemd unit -----------------------------------------------------------------------------------------------
UNIT = REPO / "deploy" / "aocu.service"


def unit_settings() -> dict[str, str]:
    return dict(line.split("=", 1) for line in UNIT.read_text().splitlines()
                if "=" in line and not line.startswith("#"))


def test_systemd_unit_is_hardened_and_runs_aocu_serve(tmp_path):
    s = unit_settings()
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("DynamicUser", "yes"),
                       ("StateDirectory", "aocu"), ("PrivateTmp", "yes"), ("ProtectHome", "yes")):
        assert s.get(key) == value, key
    assert "MemoryDenyWriteExecute" not in s  # wasmtime compiles modules to machine code at run time
    exe, *args = shlex.split(s["ExecStart"])
    assert exe == "/opt/aocu/bin/aocu" and args[:1] == ["serve"]
    parsed = build_parser().parse_args(args)
    assert parsed.tee == "sim" and parsed.data_dir == "%S/aocu" and parsed.bind == "127.0.0.1:6363"
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    # verify needs the ExecStart binary to exist: point it at this checkout's aocu
    aocu = shutil.which("aocu") or str(Path(sys.executable).with_name("aocu"))
    local = tmp_path / "aocu.service"
    local.write_text(UNIT.read_text().replace("/opt/aocu/bin/aocu", aocu))
    p = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=25", str(local)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-600:] + p.stderr
    assert re.search(r"Overall exposure level for aocu.service: [0-2]\.\d OK", p.stdout), p.stdout[-300:]


# -- the README, in order, on a clean copy -----------------------------------------------------------------------
def clean_copy(dest: Path) -> None:
    """What a `git clone` would hold (tracked files, plus new ones not yet committed), without anything built."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def sh(script: str, cwd: Path, env: dict, timeout: float) -> str:
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, f"README step failed ({p.returncode}):\n{script}\n--- stdout\n{p.stdout[-3000:]}" \
                              f"\n--- stderr\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.mark.slow
def test_readme_flow(tmp_path):
    if not shutil.which("node") or not (REPO / "tests" / "peers" / "package-lock.json").is_file():
        pytest.skip("node / npm peers not installed (scripts/install.sh --test)")
    work = tmp_path / "aocu"
    clean_copy(work)
    port = free_port()
    blocks = [(lang, code.replace(README_PORT, f"127.0.0.1:{port}"))
              for lang, code in flow_blocks((work / "README.md").read_text())]
    # pip and npm reuse their caches (no network here); the Lua test module comes from the build cache
    env = dict(os.environ, AOCU_TEST_CACHE=str(CACHE))
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    times: dict[str, float] = {}

    def step(name: str, fn, *args):
        t0 = time.monotonic()
        out = fn(*args)
        times[name] = round(time.monotonic() - t0, 1)
        return out

    # 1. install, then serve (the README's `install && serve`; serve runs in the background here)
    install = blocks[0][1].split("&&")[0]
    step("install", sh, install, work, env, 1200)
    argv = serve_argv(blocks[0][1]) + ["--bind", f"127.0.0.1:{port}", "--quiet"]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def wait_ready() -> None:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                        return
                except OSError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)

        step("serve", wait_ready)
        # 2. the module: "one of this repository's test modules", as the README says, named process.wasm
        built = step("module", sh, ".venv/bin/python -m tests.modules.build lua32", work, env, 900).strip()
        shutil.copy(built.splitlines()[-1].split("\t")[-1], work / "process.wasm")  # NAME FORMAT PATH
        out = step("wallet+publish", sh, blocks[1][1] + 'echo "MODULE=$MODULE"\n', work, env, 300)
        module = out.strip().splitlines()[-1].removeprefix("MODULE=")
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", module), out
        # 3. aoconnect (the README's `npm install @permaweb/aoconnect`: here from the lockfile, offline)
        step("npm", sh, "cd tests/peers && npm ci --offline --no-audit --no-fund --loglevel=error", work, env, 600)
        script = work / "tests" / "peers" / "readme-flow.mjs"
        script.write_text(blocks[2][1])
        p = step("aoconnect", lambda: subprocess.run(["node", str(script)], cwd=work, env=dict(env, MODULE=module),
                                                     capture_output=True, text=True, timeout=300))
        assert p.returncode == 0, p.stdout + p.stderr
        legacy, mainnet = p.stdout.strip().splitlines()[-2:]
        pid, mid, output = legacy.split(" ", 2)
        pid2, slot, output2 = mainnet.split(" ", 2)
        # Eval of 1 + 1 in both modes; Output is the AOS console object {data, print, prompt}
        assert "data: '2'" in output and "data: '2'" in output2, p.stdout
        # 4. verify the three results as the README shows
        venv = dict(env, NODE=f"http://127.0.0.1:{port}", PID=pid, MID=mid, PID2=pid2, SLOT=slot)
        out = step("verify", sh, blocks[3][1], work, venv, 300)
        assert out.count("NOT VERIFIED") == 0 and out.count("VERIFIED (SIMULATED TEE") == 3, out
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "readme-flow.json").write_text(json.dumps(times, indent=1) + "\n")
        print("readme flow timings (s):", times)
