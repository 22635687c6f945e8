"""Optional AMD KDS client with an on-disk cache; verification never requires it.

- VCEKs and cert chains are immutable per URL (chip + REPORTED_TCB) and cached forever.
- CRLs are never served from the cache while online (a stale CRL must not be reused past its nextUpdate; callers
  re-fetch); `crl(keep=True)` stores the latest copy for offline verification, whose nextUpdate check refuses it
  once stale.
- Content is checked before it is cached (`check_vcek`, `check_chain`, `check_crl`): a VCEK for another chip or
  TCB, a chain that does not end in the pinned ARK, or an HTML error page is refused, not kept forever.
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

from cryptography import x509

from .certs import cn, load_any, parse_amd_extensions, spki_sha256, verify_signed_by
from .errors import AttestationError, ParseError
from .snp import SnpReport
from .trust import PINNED_SPKI, TrustStore

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


def chain_path(product: str, *, vlek: bool = False) -> str:
    return f"/{'vlek' if vlek else 'vcek'}/v1/{product}/cert_chain"


def crl_path(product: str, *, vlek: bool = False) -> str:
    return f"/{'vlek' if vlek else 'vcek'}/v1/{product}/crl"


# -- content checks: what KDS must have answered ------------------------------------------------------------------
def check_vcek(data: bytes, report: SnpReport, product: str, trust: TrustStore | None = None) -> x509.Certificate:
    """The VCEK for this report: a certificate whose hwID is the report's CHIP_ID, whose TCB extensions are its
    REPORTED_TCB, signed by the pinned ASK of `product` (when the trust store has it). KdsError otherwise."""
    try:
        certs = load_any(data)
        ext = parse_amd_extensions(certs[0])
    except (ParseError, ValueError, IndexError) as exc:
        raise KdsError(f"not a VCEK certificate ({len(data)} bytes): {exc}") from None
    leaf = certs[0]
    if cn(leaf.subject) != "SEV-VCEK":
        raise KdsError(f"certificate {cn(leaf.subject)!r} is not a SEV-VCEK")
    want_id = report.chip_id[:8] if product == "Turin" else report.chip_id
    if ext.hwid != want_id:
        raise KdsError("VCEK hwID does not match the report's CHIP_ID")
    want = report.tcb("reported", product).components()
    have = {k: v for k, v in ext.tcb_components(product == "Turin").items()}
    if have != want:
        raise KdsError(f"VCEK TCB {have} differs from the report's REPORTED_TCB {want}")
    ask = (trust or TrustStore.default()).amd.get(product, {}).get("ask")
    if ask is not None and (err := verify_signed_by(leaf, ask)) is not None:
        raise KdsError(f"VCEK is not signed by the pinned {cn(ask.subject)}: {err}")
    return leaf


def check_chain(data: bytes, product: str, *, vlek: bool = False) -> list[x509.Certificate]:
    """A KDS cert_chain body: the ASK (ASVK) then the ARK of `product`, both matching the pinned public keys, the
    intermediate signed by the ARK."""
    try:
        certs = load_any(data)
    except (ParseError, ValueError) as exc:
        raise KdsError(f"not a PEM certificate chain ({len(data)} bytes): {exc}") from None
    names = [cn(c.subject) for c in certs]
    want = [f"SEV-VLEK-{product}" if vlek else f"SEV-{product}", f"ARK-{product}"]
    if names != want:
        raise KdsError(f"cert_chain holds {names}, expected {want}")
    for c, name in zip(certs, want, strict=True):
        if spki_sha256(c) != PINNED_SPKI[name]:
            raise KdsError(f"{name} in cert_chain does not match the pinned public key")
    if (err := verify_signed_by(certs[0], certs[1])) is not None:
        raise KdsError(f"{want[0]} is not signed by {want[1]}: {err}")
    return certs


def check_crl(data: bytes, product: str, trust: TrustStore | None = None) -> x509.CertificateRevocationList:
    """An X.509 CRL (DER or PEM) issued and signed by the pinned ARK of `product`."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
    except ValueError:
        raise KdsError(f"not an X.509 CRL ({len(data)} bytes)") from None
    ark = (trust or TrustStore.default()).pinned_ark(product)
    if ark is None:
        raise KdsError(f"no pinned ARK for {product}")
    if crl.issuer != ark.subject:
        raise KdsError(f"CRL issuer {cn(crl.issuer)!r} is not {cn(ark.subject)!r}")
    if not crl.is_signature_valid(ark.public_key()):
        raise KdsError(f"CRL signature by {cn(ark.subject)} does not verify")
    return crl


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
            raise KdsError(f"offline: {path} is not in the KDS cache {self.cache}")
        start = self.clock()
        delay = self.min_interval
        while True:
            self._wait_turn()
            self.requests += 1
            try:
                with urllib.request.urlopen(self.base + path, timeout=self.timeout) as resp:  # noqa: S310
                    data = resp.read(MAX_RESPONSE + 1)
                if len(data) > MAX_RESPONSE:
                    raise KdsError(f"KDS {self.base}{path}: response larger than {MAX_RESPONSE} bytes")
                return data
            except urllib.error.HTTPError as exc:
                if exc.code != 429:
                    raise KdsError(f"KDS {self.base}{path}: HTTP {exc.code} {exc.reason}".rstrip()) from None
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                try:
                    delay = max(float(retry_after), 0.0) if retry_after is not None else delay
                except ValueError:
                    pass
                delay = min(delay, self.max_delay)
                if self.clock() + delay - start > self.budget:
                    raise KdsError(
                        f"KDS {self.base}{path}: still throttled (429) after {self.budget:.0f} s"
                    ) from None
                self.sleep(delay)
                delay = min(max(delay * 2, self.min_interval), self.max_delay)
            except urllib.error.URLError as exc:
                raise KdsError(f"KDS {self.base}{path}: {exc.reason}") from None
            except OSError as exc:  # a timeout while reading, a reset connection
                raise KdsError(f"KDS {self.base}{path}: {exc.strerror or exc or type(exc).__name__}") from None

    # -- public -------------------------------------------------------------------------------------------------
    def cache_file(self, path: str) -> Path:
        """Where the answer for KDS `path` is (or would be) cached."""
        return self._cache_file(path)

    def _check(self, path: str, data: bytes, check: Callable[[bytes], object] | None) -> None:
        if check is None:
            return
        try:
            check(data)
        except KdsError as exc:
            raise KdsError(f"KDS {self.base}{path}: wrong content: {exc}") from None

    def fetch_cached(self, path: str, check: Callable[[bytes], object] | None = None) -> bytes:
        """The cached answer for `path`, else fetch it, `check` it (KdsError: not cached) and cache it."""
        data = self._cached(path)
        if data is None:
            data = self._get(path)
            self._check(path, data, check)
            self._store(path, data)
        return data

    def vcek(self, report: SnpReport, product: str, *, trust: TrustStore | None = None) -> bytes:
        return self.fetch_cached(vcek_path(report, product), lambda d: check_vcek(d, report, product, trust))

    def cert_chain(self, product: str, *, vlek: bool = False) -> bytes:
        return self.fetch_cached(chain_path(product, vlek=vlek), lambda d: check_chain(d, product, vlek=vlek))

    def crl(
        self, product: str, *, vlek: bool = False, keep: bool = False, trust: TrustStore | None = None
    ) -> bytes:
        """A fresh CRL (offline: the last kept copy). keep=True checks it and stores it for offline use."""
        path = crl_path(product, vlek=vlek)
        if self.offline and (kept := self._cached(path)) is not None:
            return kept
        data = self._get(path)
        if keep:
            self._check(path, data, lambda d: check_crl(d, product, trust))
            self._store(path, data)
        return data
