"""REPORT_DATA bindings of docs/WIRE-FORMAT.md, for producers and verifiers alike."""

from __future__ import annotations

import hashlib
import hmac


def key_binding_report_data(n: bytes, ed25519_pub: bytes, epoch: int, node_config_sha256: bytes) -> bytes:
    """SHA-512("aocu/key-binding/v1" 0x00 || n || ed25519_pub || epoch_u64_be || node_config_sha256)."""
    if len(ed25519_pub) != 32 or len(node_config_sha256) != 32 or not 0 <= epoch < 1 << 64:
        raise ValueError("ed25519_pub and node_config_sha256 are 32 bytes; epoch is a u64")
    return hashlib.sha512(
        b"aocu/key-binding/v1\0" + n + ed25519_pub + epoch.to_bytes(8, "big") + node_config_sha256
    ).digest()


def fresh_report_data(content_digest: bytes, nonce: bytes) -> bytes:
    """SHA-512("aocu/result/v1" 0x00 || content_digest || nonce) for per-request (?attest-nonce=) evidence."""
    return hashlib.sha512(b"aocu/result/v1\0" + content_digest + nonce).digest()


def report_data_matches(actual: bytes, expected: bytes) -> bool:
    return len(actual) == 64 and hmac.compare_digest(actual, expected)
