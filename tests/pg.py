"""A private PostgreSQL server for the `--store postgresql://` tests and bench/cluster.py: Debian's server binaries
(`postgresql` package, installed by scripts/install.sh --test), initdb'd in a temp dir and started on a free
loopback port; as root it runs as the `postgres` user (the server refuses root). `pg_server` is the
session-scoped fixture; `PgServer.database()` gives each test its own empty database."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def pg_bin() -> Path:
    """The newest installed server's bin dir (Debian: /usr/lib/postgresql/<major>/bin)."""
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.glob("*/bin") if (p / "initdb").exists()),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not majors:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql: "
                           "install Debian's postgresql package (scripts/install.sh --test does)")
    return majors[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = pg_bin()
        # as root the server runs as `postgres`, which must reach the dir: /tmp, whatever TMPDIR says
        self.dir = Path(tempfile.mkdtemp(prefix="aocu-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        self.data = self.dir / "data"
        self.port = free_port()
        self.fsync = fsync
        self._as: list[str] = []
        if os.geteuid() == 0:       # the server refuses to run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        out = subprocess.run([*self._as, *cmd], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {out.stderr.strip() or out.stdout.strip()}")

    def start(self) -> PgServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "aocu", "--auth=trust", "-E", "UTF8",
                  "--locale=C", "-N")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                f"-c shared_buffers=32MB -c fsync={'on' if self.fsync else 'off'}")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts,
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://aocu@127.0.0.1:{self.port}/{db}"

    def database(self) -> str:
        """A new empty database; its DSN."""
        import psycopg
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


@pytest.fixture(scope="session")
def pg_server():
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


def node_wallets(cache_dir: Path, n: int) -> list[dict]:
    """`n` RSA-4096 node wallets (JWKs), generated once per test cache (0600): a cluster needs one per node."""
    import json

    from cu.codec.wallet import ArweaveWallet
    path = cache_dir / "cluster-wallets.json"
    jwks = json.loads(path.read_text()) if path.exists() else []
    if len(jwks) < n:
        jwks += [ArweaveWallet.generate().to_jwk() for _ in range(n - len(jwks))]
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(jwks, f)
        os.replace(path.with_suffix(".tmp"), path)
    return jwks[:n]


def seed_wallet(data_dir: Path, jwk: dict) -> None:
    """DATA-DIR/wallet.json (0600) in a private data dir: the node uses it instead of generating one."""
    import json
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    fd = os.open(data_dir / "wallet.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(jwk, f)
