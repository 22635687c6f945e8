"""Cache of certificate-signature results keyed by (child DER, issuer DER) digests.

Chains are long-lived (ARK/ASK for 25 years, a VCEK for 7), so repeated verification of reports from the same chip
re-uses the RSA-4096 PSS verifications. Only the signature outcome is cached; validity windows, pins and profiles
are re-checked on every call because they depend on the verification time and the trust store.
"""

from __future__ import annotations

from collections import OrderedDict

from cryptography import x509

from .certs import der_digest, verify_signed_by

_MAX = 512
_cache: OrderedDict[bytes, str | None] = OrderedDict()


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """verify_signed_by() with memoisation; returns None on success or the failure message."""
    key = der_digest(child) + der_digest(issuer)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    result = verify_signed_by(child, issuer)
    _cache[key] = result
    if len(_cache) > _MAX:
        _cache.popitem(last=False)
    return result


def clear(*, parsed: bool = True) -> None:
    """Forget cached signature results (and, by default, parsed certificates)."""
    _cache.clear()
    if parsed:
        from .certs import clear_cache

        clear_cache()
