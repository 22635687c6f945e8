"""Trust anchors: AMD ARK/ASK/ASVK per product and the Intel SGX Root CA, pinned by SPKI SHA-256 in code.

The PEM files shipped in attestation/roots/ are only accepted when their public key matches the pin below, so a
swapped file cannot move the root of trust. Simulated-TEE roots are never trusted unless added explicitly.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography import x509

from . import chaincache
from .certs import check_validity, cn, load_any, spki_sha256
from .result import VerificationReport

# SHA-256 of the DER SubjectPublicKeyInfo (docs/ATTESTATION.md, Trust anchors).
PINNED_SPKI: dict[str, str] = {
    "ARK-Milan": "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9",
    "ARK-Genoa": "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831",
    "ARK-Turin": "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08",
    "SEV-Milan": "42491669ccb851d627ea9846cd24eccbeb7de7c2a62740120fff88001d38ebb6",
    "SEV-Genoa": "0324d55bcd48ba877a8fd87c0e1b4934dec8448e3807a24384a34dc6a6c9ebb8",
    "SEV-Turin": "0000ead352025f208bf55297c4192c34cd1b878002107366d8f2065a9ae7d3a9",
    "SEV-VLEK-Milan": "66450a123ea5876206df67f2514a4fea224c0f63b18313423078b0edc4535e33",
    "SEV-VLEK-Genoa": "7d1633252ebbadaa75f96e9b4e6f7d43a90ceb3f843937482630f8da2459264e",
    "SEV-VLEK-Turin": "bfc441408b2f806c5dbf180bd8920e6e60dd404d82141780d85dbf962954d386",
    "Intel SGX Root CA": "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e",
}
INTEL_ROOT_CN = "Intel SGX Root CA"
ROOTS_DIR = Path(__file__).resolve().parent / "roots"
SIM_PREFIX = "SIMULATED-"


@dataclass(frozen=True)
class TrustStore:
    """Pinned roots. `amd[product]` holds 'ark' and optionally 'ask'/'asvk'; `intel_root` the SGX root."""

    amd: dict[str, dict[str, x509.Certificate]] = field(default_factory=dict)
    intel_root: x509.Certificate | None = None
    simulated_roots: tuple[x509.Certificate, ...] = ()
    rejected: tuple[str, ...] = ()

    @classmethod
    def default(cls) -> TrustStore:
        return _default_store()

    @classmethod
    def from_directory(cls, root: str | Path) -> TrustStore:
        """Load every *.pem under `root`, keeping only certificates whose key matches the pin for their CN."""
        amd: dict[str, dict[str, x509.Certificate]] = {}
        intel: x509.Certificate | None = None
        rejected: list[str] = []
        for path in sorted(Path(root).rglob("*.pem")):
            for cert in load_any(path.read_bytes()):
                name = cn(cert.subject)
                pin = PINNED_SPKI.get(name)
                if pin is None:
                    rejected.append(f"{path.name}: {name!r} is not a pinned AMD/Intel certificate")
                    continue
                if spki_sha256(cert) != pin:
                    rejected.append(
                        f"{path.name}: {name!r} public key does not match the pinned SPKI {pin[:16]}…"
                    )
                    continue
                if name == INTEL_ROOT_CN:
                    intel = cert
                    continue
                kind, product = _amd_role(name)
                amd.setdefault(product, {})[kind] = cert
        return cls(amd=amd, intel_root=intel, rejected=tuple(rejected))

    def with_simulated(
        self, roots: bytes | str | Path | x509.Certificate | list[x509.Certificate]
    ) -> TrustStore:
        """A copy that also trusts the given simulated-TEE root(s) (PEM bytes, a path, or certificates)."""
        if isinstance(roots, x509.Certificate):
            certs = [roots]
        elif isinstance(roots, list):
            certs = roots
        elif isinstance(roots, Path) or (isinstance(roots, str) and not roots.lstrip().startswith("-----")):
            certs = load_any(Path(roots).read_bytes())
        else:
            certs = load_any(roots.encode() if isinstance(roots, str) else roots)
        for cert in certs:
            if not cn(cert.subject).startswith(SIM_PREFIX):
                raise ValueError(
                    f"{cn(cert.subject)!r} is not a simulated-TEE root (CN must start with {SIM_PREFIX})"
                )
        return replace(self, simulated_roots=self.simulated_roots + tuple(certs))

    def pinned_ark(self, product: str) -> x509.Certificate | None:
        return self.amd.get(product, {}).get("ark")

    def simulated_root_for(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The trusted simulated root with the same subject and public key as `cert`, if any."""
        spki = spki_sha256(cert)
        for root in self.simulated_roots:
            if root.subject == cert.subject and spki_sha256(root) == spki:
                return root
        return None


def _amd_role(name: str) -> tuple[str, str]:
    if name.startswith("ARK-"):
        return "ark", name[4:]
    if name.startswith("SEV-VLEK-"):
        return "asvk", name[9:]
    return "ask", name[4:]


@functools.cache
def _default_store() -> TrustStore:
    return TrustStore.from_directory(ROOTS_DIR)


# -- a chain up to a trusted root (the steps verify_snp and verify_tdx share) -------------------------------------
def check_signatures(
    rep: VerificationReport, links: Iterable[tuple[str, x509.Certificate, x509.Certificate, str]]
) -> bool:
    """One named check per (name, certificate, issuer, detail when it verifies) link, from the trusted root (its
    own issuer) down to the leaf; a failed link's detail is the signature error. True if every link verifies."""
    ok = True
    for name, child, issuer, detail in links:
        err = chaincache.signed_by(child, issuer)
        ok = rep.add(name, err is None, err or detail) and ok
    return ok


def check_validity_at(
    rep: VerificationReport, name: str, certs: Iterable[x509.Certificate], now: dt.datetime
) -> bool:
    """One named check that every certificate (reported in the order given) is within its validity at `now`."""
    bad = [m for m in (check_validity(c, now) for c in certs) if m]
    return rep.add(name, not bad, "; ".join(bad) or f"all certificates valid at {now.isoformat()}")
