"""Intel PCS client for a TDX quote's collateral (`aocu fetch collateral`); verification never requires it.

PCS API v4: `GET /tdx/certification/v4/tcb?fmspc=F` (TCB info; issuer chain in the `TCB-Info-Issuer-Chain`
header), `GET /tdx/certification/v4/qe/identity` (`SGX-Enclave-Identity-Issuer-Chain`), `GET
/sgx/certification/v4/pckcrl?ca=platform|processor&encoding=der` (`SGX-PCK-CRL-Issuer-Chain`), and the root CA's
CRL from its distribution point. Headers carry URL-encoded PEM. The answers are checked for shape (the TCB info
is the quote's FMSPC, the QE identity is TD_QE, the CRLs come from the expected issuers, the chains end in the
pinned Intel root) before they are written; signatures and validity windows are the verifier's job (collateral
lives 30 days, so it is written to a directory for `--collateral DIR`, not cached for good).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .certs import cn, load_any, spki_sha256
from .collateral import load_crl, split_signed_json
from .errors import AttestationError, ParseError
from .tdx import parse_pck_extensions, parse_quote
from .trust import INTEL_ROOT_CN, PINNED_SPKI

PCS_BASE = "https://api.trustedservices.intel.com"
ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
MAX_RESPONSE = 256 * 1024
FILES = {  # collateral key -> file name written by write_dir (load_collateral_dir reads any names)
    "tcb_info": "tcb_info.json",
    "tcb_info_issuer_chain": "tcb_info_issuer_chain.pem",
    "qe_identity": "qe_identity.json",
    "qe_identity_issuer_chain": "qe_identity_issuer_chain.pem",
    "pck_crl": "pck_crl.der",
    "pck_crl_issuer_chain": "pck_crl_issuer_chain.pem",
    "root_crl": "root_crl.der",
}


class PcsError(AttestationError):
    pass


def quote_fmspc_and_ca(quote: bytes) -> tuple[bytes, str]:
    """(FMSPC, 'platform' | 'processor') from the PCK certificate chain inside the quote."""
    q = parse_quote(quote)
    chain = load_any(q.pck_chain_pem)
    if len(chain) < 2:
        raise ParseError("the quote's PCK chain has no intermediate CA")
    issuer = cn(chain[1].subject)
    ca = "processor" if "Processor" in issuer else "platform" if "Platform" in issuer else None
    if ca is None:
        raise ParseError(f"PCK issuer {issuer!r} is neither the Platform nor the Processor CA")
    return parse_pck_extensions(chain[0]).fmspc, ca


def _chain(header: str | None, what: str) -> bytes:
    if not header:
        raise PcsError(f"{what}: the issuer-chain header is missing")
    pem = urllib.parse.unquote(header).encode()
    try:
        certs = load_any(pem)
    except ParseError as exc:
        raise PcsError(f"{what}: issuer chain is not PEM certificates: {exc}") from None
    if cn(certs[-1].subject) != INTEL_ROOT_CN or spki_sha256(certs[-1]) != PINNED_SPKI[INTEL_ROOT_CN]:
        raise PcsError(f"{what}: issuer chain does not end in the pinned {INTEL_ROOT_CN}")
    return pem


class PcsClient:
    def __init__(self, base_url: str = PCS_BASE, root_crl_url: str = ROOT_CRL_URL, timeout: float = 15.0) -> None:
        self.base, self.root_crl_url, self.timeout = base_url.rstrip("/"), root_crl_url, timeout

    def _get(self, url: str) -> tuple[bytes, dict[str, str]]:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - the user's URL
                body = resp.read(MAX_RESPONSE + 1)
                headers = {k.lower(): v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as exc:
            raise PcsError(f"PCS {url}: HTTP {exc.code} {exc.reason}".rstrip()) from None
        except urllib.error.URLError as exc:
            raise PcsError(f"PCS {url}: {exc.reason}") from None
        except OSError as exc:
            raise PcsError(f"PCS {url}: {exc.strerror or exc or type(exc).__name__}") from None
        if len(body) > MAX_RESPONSE:
            raise PcsError(f"PCS {url}: response larger than {MAX_RESPONSE} bytes")
        return body, headers

    def collateral(self, quote: bytes) -> dict[str, bytes]:
        """Every collateral item of `quote`, checked for shape; PcsError (one line) otherwise."""
        fmspc, ca = quote_fmspc_and_ca(quote)
        out: dict[str, bytes] = {}
        url = f"{self.base}/tdx/certification/v4/tcb?fmspc={fmspc.hex()}"
        body, h = self._get(url)
        try:
            _, info, _ = split_signed_json(body, "tcbInfo")
        except ParseError as exc:
            raise PcsError(f"PCS {url}: wrong content: {exc}") from None
        if str(info.get("fmspc", "")).lower() != fmspc.hex():
            raise PcsError(f"PCS {url}: wrong content: TCB info for FMSPC {info.get('fmspc')!r}")
        out["tcb_info"], out["tcb_info_issuer_chain"] = body, _chain(h.get("tcb-info-issuer-chain"), url)
        url = f"{self.base}/tdx/certification/v4/qe/identity"
        body, h = self._get(url)
        try:
            _, ident, _ = split_signed_json(body, "enclaveIdentity")
        except ParseError as exc:
            raise PcsError(f"PCS {url}: wrong content: {exc}") from None
        if ident.get("id") != "TD_QE":
            raise PcsError(f"PCS {url}: wrong content: enclave identity {ident.get('id')!r}, not TD_QE")
        out["qe_identity"] = body
        out["qe_identity_issuer_chain"] = _chain(h.get("sgx-enclave-identity-issuer-chain"), url)
        url = f"{self.base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
        body, h = self._get(url)
        want = f"Intel SGX PCK {ca.capitalize()} CA"
        self._crl(url, body, want)
        out["pck_crl"], out["pck_crl_issuer_chain"] = body, _chain(h.get("sgx-pck-crl-issuer-chain"), url)
        body, _ = self._get(self.root_crl_url)
        self._crl(self.root_crl_url, body, INTEL_ROOT_CN)
        out["root_crl"] = body
        return out

    @staticmethod
    def _crl(url: str, body: bytes, issuer: str) -> None:
        try:
            crl = load_crl(body)
        except ParseError:
            raise PcsError(f"PCS {url}: wrong content: not a CRL ({len(body)} bytes)") from None
        if cn(crl.issuer) != issuer:
            raise PcsError(f"PCS {url}: wrong content: CRL issuer {cn(crl.issuer)!r}, expected {issuer!r}")


def write_dir(directory: str | Path, collateral: dict[str, bytes]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for key, data in collateral.items():
        (d / FILES[key]).write_bytes(data)
    return d
