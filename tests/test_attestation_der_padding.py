"""Certificates are taken by their DER length, never by stripping bytes: a signature may end in zero bytes
(stripping them once rejected about 1 in 100 simulated VCEKs), while table padding after a certificate is fine."""

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation.certs import load_any
from attestation.errors import ParseError


def _cert_ending_in_zero() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zero-tail")])
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    for serial in range(1, 20000):
        der = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
               .sign(key, hashes.SHA256()).public_bytes(Encoding.DER))
        if der.endswith(b"\0"):
            return der
    raise AssertionError("no signature ending in a zero byte in 20000 tries")


def test_der_certificate_ending_in_zero_bytes_loads():
    der = _cert_ending_in_zero()
    assert load_any(der)[0].public_bytes(Encoding.DER) == der
    assert load_any(der + bytes(64))[0].public_bytes(Encoding.DER) == der  # certificate-table padding
    with pytest.raises(ParseError):
        load_any(der[:-1])  # a truncated certificate is still refused
    with pytest.raises(ParseError):
        load_any(der + b"\x01")  # non-zero trailing bytes are not padding
