"""`aocu fetch vcek|chain|crl` against a local stand-in for AMD KDS serving the real vectors (tests/vectors/INDEX.md)
at the KDS paths, then `aocu evidence verify --cache-dir` offline from what was fetched."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import time
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from attestation.kds import KdsError, check_crl
from attestation.snp import parse_report
from attestation.trust import TrustStore
from cu.cli import main
from tests.conftest import VECTORS

SEV = VECTORS / "sev"
SNP_AT = "2025-06-01T00:00:00Z"
GSG = SEV / "gosevguest_milan_attestation.bin"  # v2, DEBUG allowed by its guest policy, report_data 0102030405
VIRTEE = SEV / "virtee_report_milan.hex"  # v2, FW 1.52.4
GSG_CHIP = parse_report(GSG.read_bytes()).chip_id.hex()
VIRTEE_CHIP = parse_report(bytes.fromhex(VIRTEE.read_text())).chip_id.hex()
ROUTES = {
    f"/vcek/v1/Milan/{GSG_CHIP}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68": (SEV / "gosevguest_milan_vcek.der"),
    # wrong content: another chip's VCEK answered for the virtee report
    f"/vcek/v1/Milan/{VIRTEE_CHIP}?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115": (SEV / "gosevguest_milan_vcek.der"),
    "/vcek/v1/Milan/cert_chain": SEV / "gosevguest_milan_vcek_cert_chain.pem",
    "/vlek/v1/Milan/cert_chain": SEV / "gosevguest_milan_vlek_cert_chain.pem",
    "/vcek/v1/Genoa/cert_chain": VECTORS / "roots" / "amd" / "gosevguest_ask_ark_genoa.pem",
    "/vcek/v1/Turin/cert_chain": SEV / "virtee_cert_chain_milan.pem",  # wrong product's chain
    "/vcek/v1/Milan/crl": VECTORS / "tdx" / "gotdxguest_rootcrl.der",  # an Intel CRL: wrong content
}


TDX = VECTORS / "tdx"
TDX_AT = "2023-07-01T01:00:00Z"
QUOTE = TDX / "gotdxguest_tdx_prod_quote_SPR_E4.dat"  # FMSPC 50806f000000, PCK Platform CA
PCS = {  # Intel PCS v4 paths: body, issuer-chain header (URL-encoded PEM, as PCS sends it)
    "/tdx/certification/v4/tcb?fmspc=50806f000000": (
        TDX / "gotdxguest_sample_tcbInfo_response.json", "TCB-Info-Issuer-Chain", TDX / "gotdxguest_tcbInfoIssuerChain.pem"),
    "/tdx/certification/v4/qe/identity": (
        TDX / "gotdxguest_sample_qeIdentity_response.json", "SGX-Enclave-Identity-Issuer-Chain",
        TDX / "gotdxguest_qeIdentityIssuerChain.pem"),
    "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (
        TDX / "gotdxguest_pckcrl", "SGX-PCK-CRL-Issuer-Chain", TDX / "gotdxguest_pckCrlIssuerChain.pem"),
    "/IntelSGXRootCA.der": (TDX / "gotdxguest_rootcrl.der", None, None),
}


class _Kds(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []
    extra: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802
        self.seen.append(self.path)
        if self.path.startswith("/slow/"):
            time.sleep(2)
        body = self.extra.get(self.path)
        if body is None and self.path in ROUTES:
            body = ROUTES[self.path].read_bytes()
        header = None
        if body is None and self.path.removeprefix("/pcs") in PCS:
            path, name, chain = PCS[self.path.removeprefix("/pcs")]
            body = path.read_bytes()
            if name and not self.path.startswith("/pcs/sgx"):  # /pcs/sgx...: the PCK CRL without its chain
                header = (name, urllib.parse.quote(chain.read_text()))
        try:
            self.send_response(200 if body is not None else 404)
            if header:
                self.send_header(*header)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")
        except OSError:
            pass  # the client gave up (the timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def kds():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Kds)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def fetch(capsysbinary, kds_url, cache, *argv: str) -> tuple[int, bytes, str]:
    code = main(["fetch", *argv, "--kds-url", kds_url, "--cache-dir", str(cache), "--kds-interval", "0"])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


@pytest.mark.filterwarnings("ignore:Parsed a serial number:cryptography.utils.CryptographyDeprecationWarning")
def test_fetch_vcek_and_chain_then_verify_offline(kds, tmp_path, capsysbinary):
    cache = tmp_path / "kds"
    _Kds.seen.clear()
    code, out, err = fetch(capsysbinary, kds, cache, "vcek", "--report", str(GSG), "--product", "Milan-B0",
                           "-o", str(tmp_path / "vcek.der"))
    assert code == 0, err
    assert (tmp_path / "vcek.der").read_bytes() == (SEV / "gosevguest_milan_vcek.der").read_bytes()
    assert "fetched from" in err and "TCB 0x4405000000000002" in err
    assert _Kds.seen == [f"/vcek/v1/Milan/{GSG_CHIP}?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"]
    code, out, err = fetch(capsysbinary, kds, cache, "chain", "--product", "Milan")
    assert code == 0, err
    cached_chain = out.decode().strip()
    assert cached_chain.startswith(str(cache))
    # a second fetch is served by the cache, -o - writes stdout; offline needs no network
    code, out, err = fetch(capsysbinary, kds, cache, "vcek", "--report", str(GSG), "--product", "Milan",
                           "--offline", "--encoding", "pem", "-o", "-")
    assert code == 0 and "from the cache" in err
    assert x509.load_pem_x509_certificate(out).public_bytes(serialization.Encoding.DER) == (
        SEV / "gosevguest_milan_vcek.der").read_bytes()
    assert len(_Kds.seen) == 2
    # the evidence verifier finds VCEK and chain in the cache: the real report verifies (its DEBUG allowed)
    code = main(["evidence", "verify", str(GSG), "--product", "Milan", "--cache-dir", str(cache), "--at", SNP_AT,
                 "--allow-debug", "--report-data", "0102030405" + "00" * 59])
    text = capsysbinary.readouterr().out.decode()
    assert code == 0, text
    assert "PASS  snp.signature" in text and "PASS  snp.ark_pinned" in text and "VERIFIED" in text
    code = main(["evidence", "verify", str(GSG), "--product", "Milan", "--at", SNP_AT, "--allow-debug"])
    text = capsysbinary.readouterr().out.decode()
    assert code == 1 and "no VCEK certificate supplied" in text  # without the cache there is no VCEK


def test_fetch_chain_products_and_vlek(kds, tmp_path, capsysbinary):
    code, out, err = fetch(capsysbinary, kds, tmp_path, "chain", "--product", "Genoa", "-o", "-")
    assert code == 0, err
    assert out == (VECTORS / "roots" / "amd" / "gosevguest_ask_ark_genoa.pem").read_bytes()
    code, out, err = fetch(capsysbinary, kds, tmp_path, "chain", "--product", "Milan", "--vlek", "-o", "-")
    assert code == 0 and b"BEGIN CERTIFICATE" in out and "ASVK + ARK chain Milan" in err
    # a VLEK-signed report picks the VLEK chain by itself
    _Kds.seen.clear()
    code, _, err = fetch(capsysbinary, kds, tmp_path / "c2", "chain", "--report",
                         str(SEV / "trustee_test-vlek-report.bin"), "--product", "Milan")
    assert code == 0, err
    assert _Kds.seen == ["/vlek/v1/Milan/cert_chain"]


def one_line_error(code: int, err: str) -> str:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aocu: error: "), err
    return lines[0]


def test_fetch_errors_are_one_line(kds, tmp_path, capsysbinary):
    cache = tmp_path / "kds"
    # 404
    line = one_line_error(*fetch(capsysbinary, kds, cache, "chain", "--product", "Genoa", "--vlek")[::2])
    assert "/vlek/v1/Genoa/cert_chain: HTTP 404" in line
    # wrong content: another chip's certificate, another product's chain, an Intel CRL -- none is cached
    line = one_line_error(*fetch(capsysbinary, kds, cache, "vcek", "--report", str(VIRTEE), "--product",
                                 "Milan")[::2])
    assert "wrong content: VCEK hwID does not match the report's CHIP_ID" in line
    line = one_line_error(*fetch(capsysbinary, kds, cache, "chain", "--product", "Turin")[::2])
    assert "wrong content: cert_chain holds ['SEV-Milan', 'ARK-Milan'], expected ['SEV-Turin', 'ARK-Turin']" in line
    line = one_line_error(*fetch(capsysbinary, kds, cache, "crl", "--product", "Milan")[::2])
    assert "wrong content: CRL issuer 'Intel SGX Root CA' is not 'ARK-Milan'" in line
    assert not cache.exists() or not any(p.suffix == ".bin" for p in cache.iterdir())
    # timeout, unreachable KDS, offline and not cached, v2 report without --product, simulated evidence
    code = main(["fetch", "chain", "--product", "Milan", "--kds-url", kds + "/slow", "--cache-dir", str(cache),
                 "--kds-interval", "0", "--timeout", "0.3"])
    assert "timed out" in one_line_error(code, capsysbinary.readouterr().err.decode())
    line = one_line_error(*fetch(capsysbinary, "http://127.0.0.1:9", cache, "crl", "--product", "Genoa")[::2])
    assert "Connection refused" in line
    line = one_line_error(*fetch(capsysbinary, kds, cache, "chain", "--product", "Genoa", "--offline")[::2])
    assert "offline: /vcek/v1/Genoa/cert_chain is not in the KDS cache" in line
    line = one_line_error(*fetch(capsysbinary, kds, cache, "vcek", "--report", str(GSG))[::2])
    assert "does not name its CPU: pass --product Milan|Genoa|Turin" in line
    assert main(["attest", "--tee", "sim", "--data-dir", str(tmp_path / "d"), "-o", str(tmp_path / "ev.json")]) == 0
    capsysbinary.readouterr()
    line = one_line_error(*fetch(capsysbinary, kds, cache, "vcek", "--report", str(tmp_path / "ev.json"))[::2])
    assert "simulated evidence" in line


def test_fetch_vcek_from_a_node(kds, tmp_path, capsysbinary):
    """--node URL reads the report from the node's endorsement document (here: the real report in a bundle)."""
    from attestation.evidence import Evidence

    bundle = Evidence("snp", "snp", GSG.read_bytes(), {}).to_json()
    _Kds.extra["/node/~attestation@1.0/evidence"] = json.dumps({"evidence": bundle}).encode()
    _Kds.extra["/none/~attestation@1.0/evidence"] = json.dumps(
        {"evidence": None, "no_evidence": "no TEE (--tee none)"}).encode()
    code, out, err = fetch(capsysbinary, kds, tmp_path, "vcek", "--node", kds + "/node", "--product", "Milan",
                           "-o", "-")
    assert code == 0, err
    assert out == (SEV / "gosevguest_milan_vcek.der").read_bytes()
    line = one_line_error(*fetch(capsysbinary, kds, tmp_path, "vcek", "--node", kds + "/none")[::2])
    assert "the node has no evidence (no TEE (--tee none))" in line


def test_crl_kept_for_offline_use(kds, tmp_path, capsysbinary, monkeypatch):
    """No ARK-signed CRL is among the public vectors (AMD's ARK key is AMD's): a throwaway ARK stands in for the
    pinned one, so the issuer/signature checks and the offline copy run for real."""
    from attestation.sim import PSS384, make_snp_chain

    chain = make_snp_chain("Genoa", prefix="")
    now = dt.datetime.now(dt.UTC)
    crl = (
        x509.CertificateRevocationListBuilder().issuer_name(chain.ark.subject)
        .last_update(now - dt.timedelta(days=1)).next_update(now + dt.timedelta(days=6))
        .sign(chain.ark_key, hashes.SHA384(), rsa_padding=PSS384).public_bytes(serialization.Encoding.DER)
    )
    store = TrustStore(amd={"Genoa": {"ark": chain.ark}})
    assert check_crl(crl, "Genoa", store).issuer == chain.ark.subject
    with pytest.raises(KdsError, match="is not 'ARK-Genoa'"):
        check_crl(crl, "Genoa")  # the real pinned ARK-Genoa did not sign it
    _Kds.extra["/vcek/v1/Genoa/crl"] = crl
    monkeypatch.setattr(TrustStore, "default", classmethod(lambda cls: store))
    code, out, err = fetch(capsysbinary, kds, tmp_path, "crl", "--product", "Genoa", "--encoding", "pem", "-o", "-")
    assert code == 0, err
    assert x509.load_pem_x509_crl(out).public_bytes(serialization.Encoding.DER) == crl
    code, out, err = fetch(capsysbinary, kds, tmp_path, "crl", "--product", "Genoa", "--offline", "-o", "-")
    assert code == 0 and out == crl and "from the cache" in err


def test_fetch_tdx_collateral_from_pcs(kds, tmp_path, capsysbinary):
    """`aocu fetch collateral` writes what PCS served; the verifier then gives the same verdict, check by check, as
    with the vectors themselves (this quote's TCB level is not in that TCB info: the vectors' known outcome)."""
    out = tmp_path / "coll"
    code = main(["fetch", "collateral", "--report", str(QUOTE), "--pcs-url", kds, "--root-crl-url",
                 kds + "/IntelSGXRootCA.der", "-o", str(out)])
    stdout, err = capsysbinary.readouterr()
    assert code == 0, err
    assert stdout.decode().strip() == str(out) and "FMSPC 50806f000000: 7 files" in err.decode()
    assert (out / "tcb_info.json").read_bytes() == (TDX / "gotdxguest_sample_tcbInfo_response.json").read_bytes()
    verdicts = []
    for coll in (out, TDX):
        main(["evidence", "verify", str(QUOTE), "--collateral", str(coll), "--at", TDX_AT, "--json"])
        verdicts.append([(c["name"], c["ok"]) for c in json.loads(capsysbinary.readouterr().out)["checks"]])
    assert verdicts[0] == verdicts[1]
    assert ("tdx.tcb_info.signature", True) in verdicts[0] and ("tdx.crl.pck", True) in verdicts[0]
    # -o -: one evidence bundle (quote + collateral) that the verifier takes as it is
    code = main(["fetch", "collateral", "--report", str(QUOTE), "--pcs-url", kds, "--root-crl-url",
                 kds + "/IntelSGXRootCA.der", "-o", "-"])
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(capsysbinary.readouterr().out)
    assert code == 0
    main(["evidence", "verify", str(bundle), "--at", TDX_AT, "--json"])
    assert [(c["name"], c["ok"]) for c in json.loads(capsysbinary.readouterr().out)["checks"]] == verdicts[0]
    # one-line errors: an issuer chain missing, a 404, SNP evidence
    code = main(["fetch", "collateral", "--report", str(QUOTE), "--pcs-url", kds + "/pcs", "--root-crl-url",
                 kds + "/IntelSGXRootCA.der", "-o", str(tmp_path / "c2")])
    line = one_line_error(code, capsysbinary.readouterr().err.decode())
    assert "pckcrl?ca=platform&encoding=der: the issuer-chain header is missing" in line
    code = main(["fetch", "collateral", "--report", str(QUOTE), "--pcs-url", kds + "/nowhere", "-o", str(tmp_path)])
    assert "tcb?fmspc=50806f000000: HTTP 404" in one_line_error(code, capsysbinary.readouterr().err.decode())
    code = main(["fetch", "collateral", "--report", str(GSG)])
    assert "Intel PCS serves TDX collateral only" in one_line_error(code, capsysbinary.readouterr().err.decode())
