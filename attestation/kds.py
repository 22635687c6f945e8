"""Optional AMD KDS client with an on-disk cache; verification never requires it.

- VCEKs and cert chains are immutable per URL (chip + REPORTED_TCB) and cached forever.
- CRLs are never cached (a stale CRL must not be reused past its nextUpdate; callers re-fetch).
- AMD throttles to about one request per 10 s per IP (429 beyond): requests are spaced by `min_interval` across
  processes (timestamp file in the cache dir), 429 answers are retried honouring Retry-After, with delays from
  10 s capped at 30 s and an overall budget (go-sev-guest `verify/trust` retrying getter).
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import AttestationError
from .snp import SnpReport

KDS_BASE = "https://kdsintf.amd.com"
MAX_RESPONSE = 256 * 1024


class KdsError(AttestationError):
    pass


def vcek_path(report: SnpReport, product: str) -> str:
    """KDS VCEK path for this report, from REPORTED_TCB (never CURRENT_TCB); Turin: 8-byte hwID and fmcSPL."""
    if report.signing_key != 0:
        raise KdsError("only VCEKs can be fetched from KDS (a VLEK is held by the cloud provider)")
    if report.chip_id_masked:
        raise KdsError("CHIP_ID is masked: the VCEK cannot be located")
    tcb = report.tcb("reported", product)
    if product == "Turin":
        return (
            f"/vcek/v1/Turin/{report.chip_id[:8].hex()}?fmcSPL={tcb.fmc:02d}&blSPL={tcb.bl:02d}"
            f"&teeSPL={tcb.tee:02d}&snpSPL={tcb.snp:02d}&ucodeSPL={tcb.ucode:02d}"
        )
    return (
        f"/vcek/v1/{product}/{report.chip_id.hex()}?blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}"
        f"&ucodeSPL={tcb.ucode}"
    )


class KdsClient:
    def __init__(
        self,
        cache_dir: str | Path,
        *,
        base_url: str = KDS_BASE,
        min_interval: float = 10.0,
        max_delay: float = 30.0,
        budget: float = 120.0,
        timeout: float = 15.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        offline: bool = False,
    ) -> None:
        self.cache = Path(cache_dir)
        self.base = base_url.rstrip("/")
        self.min_interval, self.max_delay, self.budget, self.timeout = (
            min_interval,
            max_delay,
            budget,
            timeout,
        )
        self.clock, self.sleep = clock, sleep
        self.offline = offline
        self.requests = 0  # network requests made (for tests and logs)

    # -- cache ------------------------------------------------------------------------------------------------
    def _cache_file(self, path: str) -> Path:
        return self.cache / (hashlib.sha256(path.encode()).hexdigest() + ".bin")

    def _cached(self, path: str) -> bytes | None:
        f = self._cache_file(path)
        return f.read_bytes() if f.exists() else None

    def _store(self, path: str, data: bytes) -> None:
        self.cache.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file(path).with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self._cache_file(path))

    # -- rate limit ---------------------------------------------------------------------------------------------
    def _wait_turn(self) -> None:
        stamp = self.cache / ".kds-last-request"
        try:
            last = float(stamp.read_text())
        except (OSError, ValueError):
            last = 0.0
        wait = last + self.min_interval - self.clock()
        if wait > 0:
            self.sleep(wait)
        self.cache.mkdir(parents=True, exist_ok=True)
        stamp.write_text(repr(self.clock()))

    def _get(self, path: str) -> bytes:
        if self.offline:
            raise KdsError(f"offline: {path} not in the KDS cache")
        start = self.clock()
        delay = self.min_interval
        while True:
            self._wait_turn()
            self.requests += 1
            try:
                with urllib.request.urlopen(self.base + path, timeout=self.timeout) as resp:  # noqa: S310
                    data = resp.read(MAX_RESPONSE + 1)
                if len(data) > MAX_RESPONSE:
                    raise KdsError(f"KDS response for {path} larger than {MAX_RESPONSE} bytes")
                return data
            except urllib.error.HTTPError as exc:
                if exc.code != 429:
                    raise KdsError(f"KDS {path}: HTTP {exc.code}") from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                try:
                    delay = max(float(retry_after), 0.0) if retry_after is not None else delay
                except ValueError:
                    pass
                delay = min(delay, self.max_delay)
                if self.clock() + delay - start > self.budget:
                    raise KdsError(f"KDS {path}: still throttled (429) after {self.budget:.0f} s") from None
                self.sleep(delay)
                delay = min(max(delay * 2, self.min_interval), self.max_delay)
            except (urllib.error.URLError, OSError) as exc:
                raise KdsError(f"KDS {path}: {exc}") from None

    # -- public -------------------------------------------------------------------------------------------------
    def fetch_cached(self, path: str) -> bytes:
        data = self._cached(path)
        if data is None:
            data = self._get(path)
            self._store(path, data)
        return data

    def vcek(self, report: SnpReport, product: str) -> bytes:
        return self.fetch_cached(vcek_path(report, product))

    def cert_chain(self, product: str, *, vlek: bool = False) -> bytes:
        return self.fetch_cached(f"/{'vlek' if vlek else 'vcek'}/v1/{product}/cert_chain")

    def crl(self, product: str, *, vlek: bool = False) -> bytes:
        return self._get(f"/{'vlek' if vlek else 'vcek'}/v1/{product}/crl")
