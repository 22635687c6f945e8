"""The one exception type for malformed or unverifiable codec input."""

from __future__ import annotations


class CodecError(ValueError):
    """Raised for every malformed input (bad layout, lying lengths, limits, bad signature encodings)."""
