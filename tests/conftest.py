"""Shared test fixtures: paths to the shared reference material and the project's own build caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AOCU_SHARED", REPO.parent / "shared"))
VECTORS = SHARED / "vectors"
CACHE = Path(os.environ.get("AOCU_TEST_CACHE", REPO / "tests" / ".cache"))


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        raise RuntimeError(f"attestation vectors not found at {VECTORS} (set AOCU_SHARED)")
    return VECTORS


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE
