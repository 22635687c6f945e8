"""Exception types. Every malformed input raises ParseError (a ValueError) with a message naming what is wrong."""

from __future__ import annotations


class AttestationError(Exception):
    """Base class for attestation errors."""


class ParseError(AttestationError, ValueError):
    """Evidence, certificate or collateral bytes are malformed."""


class PolicyError(AttestationError, ValueError):
    """The policy / reference-values file is malformed."""


class ProviderError(AttestationError):
    """Evidence could not be obtained on this machine."""


class NotAvailable(ProviderError):
    """The requested TEE interface does not exist here."""


# Inputs larger than this are refused before parsing (a TDX quote with a PEM chain is ~5 KiB, collateral ~10 KiB).
MAX_INPUT_BYTES = 1 << 20
