"""Shared test fixtures: the attestation vectors copied into tests/vectors and the project's own build caches."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests import background
from tests.pg import pg_server  # noqa: F401 - one private PostgreSQL per session (tests/test_pg_*.py)

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"      # real SNP reports, TDX quotes and chains (tests/vectors/INDEX.md)
CACHE = Path(os.environ.get("AOCU_TEST_CACHE", REPO / "tests" / ".cache"))
# where the background builds (tests/background.py) put their output: one directory per pytest run
BG_DIR = Path(tempfile.mkdtemp(prefix="aocu-bg-"))
IMAGE_PAYLOADS = (BG_DIR / "payload-a", BG_DIR / "payload-b")
FIRMWARE_OUT = CACHE / "firmware-out"


def _image_jobs_possible() -> bool:
    return (os.geteuid() == 0 and shutil.which("qemu-system-x86_64") is not None
            and not os.environ.get("AOCU_IMAGE_TEST_PAYLOAD"))


def start_image_builds() -> None:
    """images/build.sh twice, one after the other (they share the download cache), for tests/test_images.py."""
    if background.started("images"):
        return
    env = dict(os.environ, PYTHON=sys.executable, AOCU_TEE="sim", AOCU_IMAGE_CACHE=str(CACHE / "images"))
    script = 'bash images/build.sh "$1" && echo "[background] second build" && bash images/build.sh "$2"'
    background.start("images", ["bash", "-c", script, "build-twice", *map(str, IMAGE_PAYLOADS)], env=env,
                     log=BG_DIR / "images.log", cwd=REPO)


def start_firmware_build() -> None:
    """images/firmware.sh into the test cache (a cached firmware makes this a copy)."""
    env = dict(os.environ, AOCU_IMAGE_CACHE=str(CACHE / "images"))
    background.start("firmware", ["bash", str(REPO / "images" / "firmware.sh"), str(FIRMWARE_OUT)], env=env,
                     log=BG_DIR / "firmware.log", cwd=REPO)


def pytest_collection_modifyitems(config, items) -> None:
    """Start the slow builds the selected tests need right away, and run the tests that wait for them last."""
    CACHE.mkdir(parents=True, exist_ok=True)
    if config.option.collectonly:
        return
    needs_images = [i for i in items if i.nodeid.startswith("tests/test_images.py")]
    needs_firmware = [i for i in items if "amdsev_firmware" in getattr(i, "fixturenames", ())]
    if needs_firmware:
        start_firmware_build()
    if needs_images and _image_jobs_possible():
        start_image_builds()
    late = {id(i) for i in needs_images + needs_firmware}
    items[:] = [i for i in items if id(i) not in late] + [i for i in items if id(i) in late]


def pytest_unconfigure(config) -> None:
    background.stop_all()
    shutil.rmtree(BG_DIR, ignore_errors=True)


def print_past_capture(request, line: str) -> None:
    """Say what ran past pytest's capture: the CI log shows where the time went."""
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print("\n" + line)


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        raise RuntimeError(f"attestation vectors not found at {VECTORS}")
    return VECTORS


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


# images/firmware.sh's AmdSev OVMF, built once per cache (tests/.cache/images/firmware: a second run copies it).
# The build starts in the background at collection (pytest_collection_modifyitems); this waits for it.
@pytest.fixture(scope="session")
def amdsev_firmware(cache_dir, request) -> Path:
    start_firmware_build()
    outcome = background.wait("firmware", timeout=3600)
    assert outcome.returncode == 0, outcome.log[-4000:]
    ran = [line for line in outcome.log.splitlines() if line.startswith("[firmware]")]
    print_past_capture(request, outcome.summary("firmware") + ": " + " | ".join(ran[-3:]))
    return FIRMWARE_OUT / "ovmf-amdsev.fd"


# The legacy stand-in (tests/standin): one scheduled world and its loopback SU + gateway per test module.
@pytest.fixture(scope="module")
def world():
    from tests.modules.build import MODULES, build
    from tests.standin.world import World
    return World(build("lua32").read_bytes(), MODULES["lua32"].module_format)


@pytest.fixture(scope="module")
def standin(world):
    from tests.standin.server import StandIn
    with StandIn(world) as s:
        yield s
