"""Evidence providers: SEV-SNP (configfs-tsm, then /dev/sev-guest), TDX (configfs-tsm), simulated, none.

Every provider takes its filesystem root as a parameter so tests can point it at a temporary tree.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import NotAvailable, ProviderError
from ..evidence import Evidence
from ..kds import KdsClient, KdsError
from ..snp import parse_cert_table, parse_report
from ..tdx import parse_quote
from .configfs import DEFAULT_ROOT, ConfigfsTsm, FsOps
from .sevguest import SevGuestDevice

__all__ = [
    "Provider",
    "SnpProvider",
    "TdxProvider",
    "SimProvider",
    "NoneProvider",
    "detect",
    "get_provider",
    "ConfigfsTsm",
    "FsOps",
    "SevGuestDevice",
]
log = logging.getLogger("attestation.providers")


class Provider:
    tee: str = "none"

    def get_evidence(self, report_data: bytes) -> Evidence:
        raise NotImplementedError


def _check_rd(report_data: bytes) -> bytes:
    if not isinstance(report_data, bytes | bytearray) or len(report_data) != 64:
        raise ValueError("report_data must be exactly 64 bytes")
    return bytes(report_data)


def _under(root: str | Path, absolute: str) -> Path:
    return Path(root) / absolute.lstrip("/")


class SnpProvider(Provider):
    """SEV-SNP guest: configfs-tsm when present, else /dev/sev-guest (extended report, then plain)."""

    tee = "snp"

    def __init__(
        self,
        root: str | Path = "/",
        *,
        vmpl: int = 0,
        configfs_ops: FsOps | None = None,
        device: SevGuestDevice | None = None,
        kds: KdsClient | None = None,
    ) -> None:
        if not 0 <= vmpl <= 3:
            raise ValueError("VMPL must be 0-3")
        self.vmpl = vmpl
        self.kds = kds  # optional: attach VCEK + chain from KDS (cached) when the host supplies no cert table
        self.configfs = ConfigfsTsm(_under(root, DEFAULT_ROOT), ops=configfs_ops)
        self.device = device or SevGuestDevice(str(_under(root, "/dev/sev-guest")))

    def get_evidence(self, report_data: bytes) -> Evidence:
        rd = _check_rd(report_data)
        if self.configfs.available():
            r = self.configfs.report(rd, privlevel=self.vmpl, expect_provider="sev_guest")
            report, table = r.outblob, r.auxblob
        elif self.device.available():
            report, table = self.device.get_report(rd, self.vmpl)
        else:
            raise NotAvailable("no SEV-SNP guest interface (configfs-tsm or /dev/sev-guest) on this machine")
        parsed = parse_report(report)  # refuse to hand out something that is not a report
        if parsed.report_data != rd:
            raise ProviderError("SNP report does not carry the requested REPORT_DATA")
        endo: dict = {}
        certs = {}
        if table and any(table):
            certs = parse_cert_table(table)
            endo["cert_table"] = table
        cp = parsed.cpuid_product()
        if self.kds is not None and not ({"vcek", "vlek"} & set(certs)) and cp is not None:
            try:
                endo["vcek"] = self.kds.vcek(parsed, cp[0])
                endo["chain"] = self.kds.cert_chain(cp[0])
            except KdsError as exc:
                log.warning("SNP evidence without a VCEK (KDS: %s); verifiers must obtain it themselves", exc)
        return Evidence("snp", "snp", parsed.raw, endo)


class TdxProvider(Provider):
    """TDX guest: quotes only through configfs-tsm (a quoting service must be configured on the host)."""

    tee = "tdx"

    def __init__(self, root: str | Path = "/", *, configfs_ops: FsOps | None = None) -> None:
        self.configfs = ConfigfsTsm(_under(root, DEFAULT_ROOT), ops=configfs_ops)
        self.dev = _under(root, "/dev/tdx_guest")

    def get_evidence(self, report_data: bytes) -> Evidence:
        rd = _check_rd(report_data)
        if not self.configfs.available():
            if self.dev.exists():
                raise NotAvailable(
                    "only /dev/tdx_guest exists: it yields a MAC'd TDREPORT, not a quote. TDX quotes need "
                    "configfs-tsm (kernel >= 6.7) and a quote generation service on the host (QGS)"
                )
            raise NotAvailable("no TDX guest interface (configfs-tsm) on this machine")
        r = self.configfs.report(rd, expect_provider="tdx_guest")
        q = parse_quote(r.outblob)
        if q.body.report_data != rd:
            raise ProviderError("TDX quote does not carry the requested REPORTDATA")
        return Evidence("tdx", "tdx", r.outblob, {})


class SimProvider(Provider):
    """Simulated SNP or TDX evidence from a per-data-dir chain (see attestation.sim)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        kind: str = "snp",
        product: str = "Milan",
        measurement: bytes | None = None,
        host_data: bytes | None = None,
        vmpl: int = 0,
        mrtd: bytes | None = None,
        debug: bool = False,
    ) -> None:
        from ..sim import SimulatedTee

        if kind not in ("snp", "tdx"):
            raise ValueError("simulated kind must be 'snp' or 'tdx'")
        self.kind = kind
        self.tee = f"sim-{kind}"
        self.state = SimulatedTee(data_dir, product=product)
        self.measurement, self.host_data, self.vmpl, self.mrtd, self.debug = (
            measurement,
            host_data,
            vmpl,
            mrtd,
            debug,
        )

    @property
    def roots_path(self) -> Path:
        return self.state.roots_path

    def get_evidence(self, report_data: bytes) -> Evidence:
        from ..sim import build_snp_report, build_tdx_collateral, build_tdx_quote

        rd = _check_rd(report_data)
        if self.kind == "snp":
            c = self.state.snp_chain()
            raw = build_snp_report(
                c,
                rd,
                measurement=self.measurement,
                host_data=self.host_data or bytes(32),
                vmpl=self.vmpl,
                debug=self.debug,
            )
            return Evidence("snp", "sim-snp", raw, {"vcek": c.vcek_der, "chain": c.chain_pem})
        t = self.state.tdx_chain()
        raw = build_tdx_quote(t, rd, mrtd=self.mrtd, debug=self.debug)
        return Evidence("tdx", "sim-tdx", raw, {"collateral": build_tdx_collateral(t)})


class NoneProvider(Provider):
    tee = "none"

    def __init__(self, reason: str = "no TEE selected (--tee none)") -> None:
        self.reason = reason

    def get_evidence(self, report_data: bytes) -> Evidence:
        raise NotAvailable(f"{self.reason}: this node produces no attestation evidence")


def detect(root: str | Path = "/") -> str | None:
    """'snp' or 'tdx' when a guest interface exists under `root`, else None."""
    cfg = ConfigfsTsm(_under(root, DEFAULT_ROOT))
    if _under(root, "/dev/sev-guest").exists():
        return "snp"
    if _under(root, "/dev/tdx_guest").exists():
        return "tdx"
    provider = cfg.probe_provider()
    if provider == "sev_guest":
        return "snp"
    if provider == "tdx_guest":
        return "tdx"
    return None


def get_provider(
    kind: str = "auto",
    data_dir: str | Path = "./data",
    *,
    root: str | Path = "/",
    vmpl: int = 0,
    product: str = "Milan",
) -> Provider:
    """kind: 'auto' | 'snp' | 'tdx' | 'sim' (= 'sim-snp') | 'sim-snp' | 'sim-tdx' | 'none'.

    'auto' never falls back to the simulator: without hardware it returns NoneProvider and logs loudly.
    """
    if kind == "auto":
        found = detect(root)
        if found is None:
            log.warning(
                "no SEV-SNP/TDX guest interface found: no attestation evidence (ask for --tee sim explicitly)"
            )
            return NoneProvider(
                "no SEV-SNP/TDX guest interface found (--tee auto; use --tee sim explicitly for tests)"
            )
        kind = found
    if kind == "snp":
        return SnpProvider(root, vmpl=vmpl)
    if kind == "tdx":
        return TdxProvider(root)
    if kind in ("sim", "sim-snp"):
        return SimProvider(data_dir, kind="snp", product=product, vmpl=vmpl)
    if kind == "sim-tdx":
        return SimProvider(data_dir, kind="tdx")
    if kind == "none":
        return NoneProvider()
    raise ValueError(f"unknown TEE kind {kind!r} (auto, snp, tdx, sim, sim-snp, sim-tdx, none)")
