"""Private file modes for everything in the data dir, whatever the umask (docs/SEALING.md, "File modes"):
directories 0700, the databases, keys and cache files 0600."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: str | Path) -> Path:
    """`path` (and missing parents) created, and set to 0700."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    os.chmod(p, 0o700)
    return p


def private_db(path: str | Path) -> Path:
    """An SQLite database file created empty with mode 0600 before SQLite opens it (SQLite gives its -wal and
    -shm files the database file's mode), existing ones tightened to 0600."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for extra in (p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")):
        try:
            os.chmod(extra, 0o600)
        except FileNotFoundError:
            pass
    return p
