"""configfs-tsm report interface (Linux >= 6.7; Documentation/ABI/testing/configfs-tsm-report).

Filesystem access goes through a small `FsOps` object so tests can drive the exact request sequence against a
temporary tree that emulates the kernel (generation counter, provider, outblob/auxblob).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotAvailable, ProviderError

DEFAULT_ROOT = "/sys/kernel/config/tsm/report"
MAX_BLOB = 1 << 20


class FsOps:
    """The handful of filesystem calls configfs-tsm needs (each attribute is read or written in one call)."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        with open(path, "rb") as f:
            return f.read(MAX_BLOB + 1)

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb", buffering=0) as f:
            f.write(data)


@dataclass(frozen=True)
class TsmReport:
    provider: str
    outblob: bytes
    auxblob: bytes


class ConfigfsTsm:
    def __init__(self, root: str | Path = DEFAULT_ROOT, *, ops: FsOps | None = None) -> None:
        self.root = Path(root)
        self.ops = ops or FsOps()

    def available(self) -> bool:
        return self.root.is_dir()

    def _generation(self, entry: Path) -> int:
        raw = self.ops.read(entry / "generation").strip()
        try:
            return int(raw)
        except ValueError:
            raise ProviderError(f"configfs-tsm: unreadable generation {raw[:20]!r}") from None

    def report(
        self, inblob: bytes, *, privlevel: int | None = None, expect_provider: str | None = None
    ) -> TsmReport:
        if len(inblob) != 64:
            raise ValueError("configfs-tsm inblob must be exactly 64 bytes for SNP/TDX")
        if not self.available():
            raise NotAvailable(
                f"configfs-tsm not present at {self.root} (kernel >= 6.7 with configfs mounted)"
            )
        entry = self.root / f"aocu-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            self.ops.mkdir(entry)
        except OSError as exc:
            raise ProviderError(f"configfs-tsm: cannot create {entry}: {exc}") from None
        try:
            expected = self._generation(entry)
            self._write(entry / "inblob", inblob)
            expected += 1
            if privlevel is not None:
                self._write(
                    entry / "privlevel",
                    f"{privlevel}\n".encode(),
                    hint=lambda: self._floor_hint(entry, privlevel),
                )
                expected += 1
            try:
                out = self.ops.read(entry / "outblob")
            except OSError as exc:
                raise ProviderError(f"configfs-tsm: reading outblob failed: {exc}") from None
            if len(out) > MAX_BLOB:
                raise ProviderError("configfs-tsm: outblob larger than 1 MiB")
            try:
                aux = self.ops.read(entry / "auxblob")
            except OSError:
                aux = b""  # absent on TDX, may be empty on SEV
            got = self._generation(entry)
            if got != expected:
                raise ProviderError(
                    f"configfs-tsm: generation {got} != expected {expected}: another writer changed the request; "
                    "the report cannot be trusted to carry our inblob"
                )
            provider = self.ops.read(entry / "provider").decode("ascii", "replace").strip()
            if expect_provider and provider != expect_provider:
                raise NotAvailable(f"configfs-tsm provider is {provider!r}, not {expect_provider!r}")
            if not out:
                raise ProviderError("configfs-tsm: empty outblob")
            return TsmReport(provider, out, aux)
        finally:
            try:
                self.ops.rmdir(entry)
            except OSError:
                pass

    def _write(self, path: Path, data: bytes, hint: Callable[[], str] | None = None) -> None:
        try:
            self.ops.write(path, data)
        except OSError as exc:
            extra = hint() if hint else ""
            raise ProviderError(f"configfs-tsm: writing {path.name} failed: {exc}{extra}") from None

    def _floor_hint(self, entry: Path, privlevel: int) -> str:
        try:
            floor = int(self.ops.read(entry / "privlevel_floor").strip())
        except (OSError, ValueError):
            return ""
        return f" (privlevel_floor is {floor}; requested VMPL {privlevel})" if privlevel < floor else ""

    def probe_provider(self) -> str | None:
        """Create an entry just to read `provider` (sev_guest / tdx_guest); None if unavailable."""
        if not self.available():
            return None
        entry = self.root / f"aocu-probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.ops.mkdir(entry)
        except OSError:
            return None
        try:
            return self.ops.read(entry / "provider").decode("ascii", "replace").strip() or None
        except OSError:
            return None
        finally:
            try:
                self.ops.rmdir(entry)
            except OSError:
                pass
