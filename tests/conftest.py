"""Shared test fixtures: the attestation vectors copied into tests/vectors and the project's own build caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"      # real SNP reports, TDX quotes and chains (tests/vectors/INDEX.md)
CACHE = Path(os.environ.get("AOCU_TEST_CACHE", REPO / "tests" / ".cache"))


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        raise RuntimeError(f"attestation vectors not found at {VECTORS}")
    return VECTORS


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


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
