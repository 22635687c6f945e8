"""secp256k1 helpers `cryptography` does not offer: public-key recovery (to compute and check the
Ethereum `v` byte), low-S normalisation, EIP-191 personal_sign hashing and EIP-55 addresses."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as _ser
from cryptography.hazmat.primitives.asymmetric import ec, utils

from cu.codec.errors import CodecError
from cu.codec.hashes import keccak256

P = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)
HALF_N = N // 2

# ECDSA over an externally computed 32-byte digest: the hash named here only fixes the digest size.
PREHASHED = ec.ECDSA(utils.Prehashed(hashes.SHA256()))

_Jac = tuple[int, int, int]


def _jac_double(p: _Jac) -> _Jac:
    x, y, z = p
    if not y:
        return (0, 0, 0)
    ysq = y * y % P
    s = 4 * x * ysq % P
    m = 3 * x * x % P
    nx = (m * m - 2 * s) % P
    ny = (m * (s - nx) - 8 * ysq * ysq) % P
    return (nx, ny, 2 * y * z % P)


def _jac_add(p: _Jac, q: _Jac) -> _Jac:
    if not p[1]:
        return q
    if not q[1]:
        return p
    x1, y1, z1 = p
    x2, y2, z2 = q
    z1s, z2s = z1 * z1 % P, z2 * z2 % P
    u1, u2 = x1 * z2s % P, x2 * z1s % P
    s1, s2 = y1 * z2s * z2 % P, y2 * z1s * z1 % P
    if u1 == u2:
        return _jac_double(p) if s1 == s2 else (0, 0, 1)
    h, r = u2 - u1, s2 - s1
    h2 = h * h % P
    h3 = h * h2 % P
    u1h2 = u1 * h2 % P
    nx = (r * r - h3 - 2 * u1h2) % P
    ny = (r * (u1h2 - nx) - s1 * h3) % P
    return (nx, ny, h * z1 * z2 % P)


def _mul(p: tuple[int, int], k: int) -> _Jac:
    acc: _Jac = (0, 0, 1)
    cur: _Jac = (p[0], p[1], 1)
    while k:
        if k & 1:
            acc = _jac_add(acc, cur)
        cur = _jac_double(cur)
        k >>= 1
    return acc


def _affine(p: _Jac) -> tuple[int, int] | None:
    if not p[1]:
        return None
    zi = pow(p[2], -1, P)
    zi2 = zi * zi % P
    return (p[0] * zi2 % P, p[1] * zi2 * zi % P)


def recover(digest: bytes, r: int, s: int, recid: int) -> bytes | None:
    """Uncompressed public key (65 bytes) that produced (r, s) over `digest` with parity `recid`."""
    if not (0 < r < N and 0 < s < N) or recid not in (0, 1):
        return None
    x = r
    alpha = (x * x * x + 7) % P
    y = pow(alpha, (P + 1) // 4, P)
    if y * y % P != alpha:
        return None
    if y & 1 != recid:
        y = P - y
    z = int.from_bytes(digest, "big") % N
    rinv = pow(r, -1, N)
    q = _affine(_jac_add(_mul((x, y), s * rinv % N), _mul(G, (-z * rinv) % N)))
    if q is None:
        return None
    return b"\x04" + q[0].to_bytes(32, "big") + q[1].to_bytes(32, "big")


def personal_hash(message: bytes) -> bytes:
    """EIP-191 personal_sign digest, as ethers `hashMessage` computes it for a byte message."""
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def sign_digest(key: ec.EllipticCurvePrivateKey, digest: bytes) -> bytes:
    """65-byte r||s||v (v = 27/28), low-S, as ethers produces."""
    r, s = utils.decode_dss_signature(key.sign(digest, PREHASHED))
    if s > HALF_N:
        s = N - s
    pub = key.public_key().public_bytes(
        encoding=_ser.Encoding.X962, format=_ser.PublicFormat.UncompressedPoint
    )
    for recid in (0, 1):
        if recover(digest, r, s, recid) == pub:
            return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + recid])
    raise CodecError("secp256k1: could not determine the recovery id")  # unreachable for a valid key


def verify_digest(owner: bytes, digest: bytes, sig: bytes, *, check_v: bool = True) -> bool:
    """Verify a 65-byte (or 64-byte r||s) signature against an uncompressed public key.
    High-S signatures are refused (libsecp256k1 and therefore arbundles refuse them; they are a
    malleated copy with another ID). With `check_v`, v must be 27/28 (or 0/1) and recover `owner`."""
    if len(sig) not in (64, 65):
        return False
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    if not (0 < r < N and 0 < s <= HALF_N):
        return False
    try:
        pub = public_key(owner)
        pub.verify(utils.encode_dss_signature(r, s), digest, PREHASHED)
    except Exception:  # noqa: BLE001 - InvalidSignature or a malformed point: both mean "not valid"
        return False
    if check_v and len(sig) == 65:
        v = sig[64]
        recid = v - 27 if v >= 27 else v
        if recid not in (0, 1) or recover(digest, r, s, recid) != owner:
            return False
    return True


def public_key(owner: bytes) -> ec.EllipticCurvePublicKey:
    if len(owner) != 65 or owner[0] != 4:
        raise CodecError("secp256k1: owner must be a 65-byte uncompressed point (0x04||X||Y)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), owner)
    except ValueError as exc:
        raise CodecError(f"secp256k1: invalid public key: {exc}") from exc


def eth_address(owner: bytes) -> str:
    """EIP-55 checksummed address of a 65-byte uncompressed public key (legacy CU rule)."""
    if len(owner) != 65:
        raise CodecError("ethereum address needs a 65-byte public key")
    return to_checksum(keccak256(owner[1:])[-20:].hex())


def to_checksum(hex40: str) -> str:
    hex40 = hex40.lower().removeprefix("0x")
    if len(hex40) != 40 or any(c not in "0123456789abcdef" for c in hex40):
        raise CodecError("ethereum address must be 20 bytes of hex")
    h = keccak256(hex40.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(h[i], 16) >= 8 else c for i, c in enumerate(hex40))

