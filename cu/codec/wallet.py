"""Keys that sign ANS-104 items and httpsig commitments (docs/CODECS.md, Keys).

Every key exposes `signature_type` (ANS-104), `owner` (the public key bytes an item carries),
`address`, `sign(message)` and `verify(message, signature)` with the algorithm ANS-104 uses for
that type; `ArweaveWallet` also signs RSA-PSS-SHA512 for httpsig@1.0.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from cu.codec import secp256k1
from cu.codec.errors import CodecError
from cu.codec.hashes import b64url, loaded_native_fast, sha256

RSA_BITS = 4096
RSA_E = 65537


def _b64d(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise CodecError(f"JWK member {what} must be a string")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise CodecError(f"JWK member {what} is not base64url") from exc


def _b64i(text: Any, what: str) -> int:
    return int.from_bytes(_b64d(text, what), "big")


def _ib64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big"))


class Signer(Protocol):
    signature_type: int
    owner: bytes

    def sign(self, message: bytes) -> bytes: ...


def _pss(h: hashes.HashAlgorithm, salt: int) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(h), salt_length=salt)


@lru_cache(maxsize=4096)
def rsa_public_key(n_bytes: bytes, e: int = RSA_E) -> rsa.RSAPublicKey:
    """Public key object for a modulus; cached because building it costs as much as a verification."""
    n = int.from_bytes(n_bytes, "big")
    if not 1024 <= n.bit_length() <= 8192:  # an attacker-sized modulus would make verification slow
        raise CodecError("RSA modulus must be 1024..8192 bits")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as exc:
        raise CodecError(f"invalid RSA public key: {exc}") from exc


def rsa_pss_verify(n_bytes: bytes, message: bytes, signature: bytes, hash_name: str = "sha256") -> bool:
    """RSASSA-PSS with MGF1 of the same hash; the salt length is recovered (arweave-js, HyperBEAM and
    Node all sign with different salt lengths: docs/CODECS.md, ANS-104 data items)."""
    h = hashes.SHA256() if hash_name == "sha256" else hashes.SHA512()
    if len(signature) != len(n_bytes):
        return False
    try:
        key = rsa_public_key(bytes(n_bytes))
    except CodecError:  # not a usable modulus (e.g. the zero owner of an unsigned item): cannot be valid
        return False
    try:
        key.verify(signature, message, _pss(h, padding.PSS.AUTO), h)
        return True
    except InvalidSignature:
        return False


class ArweaveWallet:
    """Arweave RSA-4096 JWK wallet; address = b64url(sha256(n))."""

    signature_type = 1

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key
        n = key.public_key().public_numbers().n
        self.owner = n.to_bytes((n.bit_length() + 7) // 8, "big")

    @classmethod
    def generate(cls, bits: int = RSA_BITS) -> ArweaveWallet:
        return cls(rsa.generate_private_key(public_exponent=RSA_E, key_size=bits))

    @classmethod
    def from_jwk(cls, jwk: dict) -> ArweaveWallet:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            raise CodecError("not an RSA JWK")
        try:
            pub = rsa.RSAPublicNumbers(_b64i(jwk["e"], "e"), _b64i(jwk["n"], "n"))
            p, q, d = _b64i(jwk["p"], "p"), _b64i(jwk["q"], "q"), _b64i(jwk["d"], "d")
            dp = _b64i(jwk["dp"], "dp") if "dp" in jwk else rsa.rsa_crt_dmp1(d, p)
            dq = _b64i(jwk["dq"], "dq") if "dq" in jwk else rsa.rsa_crt_dmq1(d, q)
            qi = _b64i(jwk["qi"], "qi") if "qi" in jwk else rsa.rsa_crt_iqmp(p, q)
            key = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, pub).private_key()
        except KeyError as exc:
            raise CodecError(f"RSA JWK lacks member {exc.args[0]} (a public JWK cannot sign)") from exc
        except ValueError as exc:
            raise CodecError(f"invalid RSA JWK: {exc}") from exc
        return cls(key)

    def to_jwk(self) -> dict:
        priv = self._key.private_numbers()
        pub = priv.public_numbers
        return {
            "kty": "RSA", "e": _ib64(pub.e), "n": b64url(self.owner), "d": _ib64(priv.d),
            "p": _ib64(priv.p), "q": _ib64(priv.q), "dp": _ib64(priv.dmp1), "dq": _ib64(priv.dmq1),
            "qi": _ib64(priv.iqmp),
        }

    def public_jwk(self) -> dict:
        return {"kty": "RSA", "e": _ib64(RSA_E), "n": b64url(self.owner)}

    @property
    def address(self) -> str:
        return b64url(sha256(self.owner))

    def sign(self, message: bytes, hash_name: str = "sha256") -> bytes:
        """RSA-PSS with salt = digest length (as HyperBEAM); sha256 for ANS-104, sha512 for httpsig."""
        h = hashes.SHA256() if hash_name == "sha256" else hashes.SHA512()
        return self._key.sign(message, _pss(h, h.digest_size), h)

    def verify(self, message: bytes, signature: bytes, hash_name: str = "sha256") -> bool:
        return rsa_pss_verify(self.owner, message, signature, hash_name)

    @property
    def private_key(self) -> rsa.RSAPrivateKey:
        return self._key


class Ed25519Key:
    """Ed25519 key. signature_type 2 (ANS-104 ed25519) or 4 (Solana: signs the hex of the deep hash)."""

    def __init__(self, key: ed25519.Ed25519PrivateKey, signature_type: int = 2) -> None:
        if signature_type not in (2, 4):
            raise CodecError("Ed25519Key signature_type must be 2 or 4")
        self._key = key
        self.signature_type = signature_type
        self.owner = key.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, signature_type: int = 2) -> Ed25519Key:
        return cls(ed25519.Ed25519PrivateKey.generate(), signature_type)

    @classmethod
    def from_seed(cls, seed: bytes, signature_type: int = 2) -> Ed25519Key:
        if len(seed) not in (32, 64):  # 64 = Solana secret key (seed || public key)
            raise CodecError("ed25519 private key must be 32 bytes (or 64 with the public key)")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(seed[:32])), signature_type)

    @classmethod
    def from_jwk(cls, jwk: dict, signature_type: int = 2) -> Ed25519Key:
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise CodecError("not an Ed25519 OKP JWK")
        if "d" not in jwk:
            raise CodecError("Ed25519 JWK lacks the private member d")
        return cls.from_seed(_b64d(jwk["d"], "d"), signature_type)

    def to_jwk(self) -> dict:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(self.owner), "d": b64url(self._key.private_bytes_raw())}

    @property
    def seed(self) -> bytes:
        return self._key.private_bytes_raw()

    @property
    def address(self) -> str:
        return b64url(sha256(self.owner))

    def sign(self, message: bytes) -> bytes:
        signer = self.native_signer()
        return signer.sign(message) if signer is not None else self._key.sign(message)

    def native_signer(self) -> Any:
        """The native extension's signer holding this key (libsodium: the same signatures in about half
        OpenSSL's time), made on first use and kept (threads racing there may each make one; both sign alike), or
        None when the process has not loaded the extension (the client-side verifier runs without it) or
        AOCU_FASTPATH=0."""
        fast = loaded_native_fast()
        if fast is None:
            return None
        signer = self.__dict__.get("_native")
        if signer is None:
            signer = self._native = fast.Ed25519ItemSigner(self._key.private_bytes_raw())  # type: ignore[attr-defined]
        return signer

    def verify(self, message: bytes, signature: bytes) -> bool:
        return ed25519_verify(self.owner, message, signature)


def ed25519_verify(owner: bytes, message: bytes, signature: bytes) -> bool:
    if len(owner) != 32 or len(signature) != 64:
        return False
    if (fast := loaded_native_fast()) is not None:    # the same verdict, in half the time (docs/INTERNAL-API.md)
        return fast.ed25519_verify(bytes(owner), bytes(message), bytes(signature))  # type: ignore[attr-defined]
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(bytes(owner)).verify(bytes(signature), message)
        return True
    except (InvalidSignature, ValueError):
        return False


class Secp256k1Key:
    """Ethereum key (signature type 3): EIP-191 personal_sign, 65-byte r||s||v, owner 0x04||X||Y."""

    signature_type = 3

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256K1):
            raise CodecError("not a secp256k1 key")
        self._key = key
        nums = key.public_key().public_numbers()
        self.owner = b"\x04" + nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")

    @classmethod
    def generate(cls) -> Secp256k1Key:
        return cls(ec.generate_private_key(ec.SECP256K1()))

    @classmethod
    def from_private_bytes(cls, d: bytes) -> Secp256k1Key:
        if len(d) != 32:
            raise CodecError("secp256k1 private key must be 32 bytes")
        n = int.from_bytes(d, "big")
        if not 0 < n < secp256k1.N:
            raise CodecError("secp256k1 private key out of range")
        return cls(ec.derive_private_key(n, ec.SECP256K1()))

    @classmethod
    def from_hex(cls, text: str) -> Secp256k1Key:
        text = text.strip().removeprefix("0x")
        try:
            return cls.from_private_bytes(bytes.fromhex(text))
        except ValueError as exc:
            raise CodecError("secp256k1 key file must hold 32 bytes of hex") from exc

    @classmethod
    def from_jwk(cls, jwk: dict) -> Secp256k1Key:
        if jwk.get("kty") != "EC" or jwk.get("crv") != "secp256k1":
            raise CodecError("not a secp256k1 EC JWK")
        if "d" not in jwk:
            raise CodecError("EC JWK lacks the private member d")
        return cls.from_private_bytes(_b64d(jwk["d"], "d").rjust(32, b"\0"))

    def to_jwk(self) -> dict:
        return {
            "kty": "EC", "crv": "secp256k1", "x": b64url(self.owner[1:33]), "y": b64url(self.owner[33:]),
            "d": b64url(self.private_bytes),
        }

    @property
    def private_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")

    @property
    def address(self) -> str:
        return secp256k1.eth_address(self.owner)

    def sign(self, message: bytes) -> bytes:
        return secp256k1.sign_digest(self._key, secp256k1.personal_hash(message))

    def verify(self, message: bytes, signature: bytes) -> bool:
        return secp256k1.verify_digest(self.owner, secp256k1.personal_hash(message), signature)


AnyKey = ArweaveWallet | Ed25519Key | Secp256k1Key


def key_from_jwk(jwk: dict, signature_type: int | None = None) -> AnyKey:
    kty = jwk.get("kty") if isinstance(jwk, dict) else None
    if kty == "RSA":
        return ArweaveWallet.from_jwk(jwk)
    if kty == "OKP":
        return Ed25519Key.from_jwk(jwk, signature_type or 2)
    if kty == "EC":
        return Secp256k1Key.from_jwk(jwk)
    raise CodecError(f"unsupported key type {kty!r} (RSA, OKP Ed25519 or EC secp256k1)")


def load_key(path: str | Path, signature_type: int | None = None) -> AnyKey:
    """Load a key file: a JWK (RSA / OKP Ed25519 / EC secp256k1) or a hex secp256k1 private key
    (the form arbundles' EthereumSigner takes)."""
    text = Path(path).read_text(encoding="utf-8").strip()
    if text.startswith("{"):
        try:
            jwk = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CodecError(f"{path}: not valid JSON: {exc}") from exc
        key = key_from_jwk(jwk, signature_type)
    else:
        key = Secp256k1Key.from_hex(text)
    if signature_type is not None and key.signature_type != signature_type:
        raise CodecError(f"{path}: key signs type {key.signature_type}, not {signature_type}")
    return key


def owner_address(signature_type: int, owner: bytes) -> str:
    """Owner address as the legacy CU shows it: EIP-55 for 65-byte Ethereum owners, the ASCII address
    for typed-Ethereum owners, else b64url(sha256(owner)) (Arweave rule, applied to every other type)."""
    if signature_type == 3 or (len(owner) == 65 and owner[:1] == b"\x04" and signature_type != 1):
        return secp256k1.eth_address(owner)
    if signature_type == 7:
        try:
            return secp256k1.to_checksum(owner.decode("ascii"))
        except (UnicodeDecodeError, CodecError):
            return owner.decode("latin-1")
    return b64url(sha256(owner))
