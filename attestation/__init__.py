"""Attestation evidence for SEV-SNP and TDX: providers, parsers, verification, policy.

Standalone: usable by clients without the aocu server (depends only on cryptography, and on cu.codec for
result signatures).
"""
