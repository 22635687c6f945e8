"""aocu: a TEE-attested compute unit for AO."""

__version__ = "0.1.0"
