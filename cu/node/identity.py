"""The node's signing identity: Arweave RSA-4096 wallet + ed25519 key, key epoch, security-relevant config.

Files in the data dir (the same names `cu.node.items.Identity` uses, so both see the same keys):
  wallet.json   Arweave JWK (unless `--wallet JWK` names another file)
  ed25519.jwk   OKP Ed25519 JWK (signs results: ~50 us against ~5 ms for RSA-4096)
  identity.json {"epoch": N} — bumped at every key rotation, bound into the evidence
Key files must be private (no group/world permission bits): a readable key is refused, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cu import __version__
from cu.codec.errors import CodecError
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.hashing import b64url
from cu.node.fsmodes import private_dir
from cu.wire.response import canonical_json  # the verifier recomputes the same bytes

WALLET_FILE = "wallet.json"
ED25519_FILE = "ed25519.jwk"
STATE_FILE = "identity.json"
CONFIG_FORMAT = "aocu-node-config/1"
# NodeConfig fields that change what a result means or how it was computed (paths and tuning are left out).
SECURITY_FIELDS = ("tee", "memory_max", "compute_max", "eval_timeout_s", "block_height", "follow_blocks")


class IdentityError(Exception):
    """Unusable key material (missing, malformed or readable by others)."""


def security_config(tee: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node config bound into the evidence: format, software + version, tee mode and `extra`."""
    cfg: dict[str, Any] = {"format": CONFIG_FORMAT, "software": "aocu", "version": __version__, "tee": tee}
    for k, v in (extra or {}).items():
        if k in ("format", "software", "version", "tee"):
            raise ValueError(f"node config key {k!r} is fixed by the node")
        cfg[k] = v
    canonical_json(cfg)  # fail now, not at the first evidence request, on non-JSON values
    return cfg


def config_from_node_config(node_config: Any) -> dict[str, Any]:
    """security_config() of a `cu.node.config.NodeConfig` (or any object with its attributes)."""
    extra = {k: getattr(node_config, k) for k in SECURITY_FIELDS[1:] if hasattr(node_config, k)}
    return security_config(str(getattr(node_config, "tee", "none")), extra)


def check_private(path: Path) -> None:
    """Refuse key files that group or others can access (like ssh does)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise IdentityError(f"key file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise IdentityError(f"key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise IdentityError(
            f"key file {path} has permissions {stat.S_IMODE(st.st_mode):04o}: it is accessible to group/others. "
            f"Refusing to use it; run `chmod 600 {path}` if the key was not exposed, otherwise replace it"
        )


def _write_private(path: Path, data: bytes, *, replace: bool = False) -> None:
    """Write `path` with mode 0600 through a temp file, so no reader ever sees a partial key: link() publishes
    a new file atomically (FileExistsError if another worker won the race), rename() replaces one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask could only remove bits, but be explicit
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_jwk(path: Path) -> dict:
    check_private(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IdentityError(f"key file {path}: not a JSON JWK ({exc})") from exc
    if not isinstance(obj, dict):
        raise IdentityError(f"key file {path}: not a JSON object")
    return obj


@dataclass
class NodeIdentity:
    wallet: ArweaveWallet
    ed25519: Ed25519Key
    epoch: int = 0
    node_config: dict[str, Any] = field(default_factory=lambda: security_config("none"))
    data_dir: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(
        cls,
        data_dir: str | Path,
        *,
        wallet_path: str | Path | None = None,
        node_config: dict[str, Any] | None = None,
        create: bool = True,
    ) -> NodeIdentity:
        """Load the keys from `data_dir`, generating missing ones (0600) when `create`. `wallet_path`
        overrides the wallet (never generated: an operator-supplied wallet must exist)."""
        d = private_dir(data_dir)  # 0700 whatever the umask: keys, database and caches live here
        wpath = Path(wallet_path) if wallet_path else d / WALLET_FILE
        if not wpath.exists():
            if wallet_path or not create:
                raise IdentityError(f"wallet {wpath} not found")
            try:
                _write_private(wpath, json.dumps(ArweaveWallet.generate().to_jwk()).encode())
            except FileExistsError:
                pass  # another worker created it first
        epath = d / ED25519_FILE
        if not epath.exists():
            if not create:
                raise IdentityError(f"ed25519 key {epath} not found")
            try:
                _write_private(epath, json.dumps(Ed25519Key.generate().to_jwk()).encode())
            except FileExistsError:
                pass
        try:
            wallet = _load_wallet(_read_jwk(wpath))
            ed = Ed25519Key.from_jwk(_read_jwk(epath))
        except CodecError as exc:
            raise IdentityError(f"unusable node key: {exc}") from exc
        cfg = node_config if node_config is not None else security_config("none")
        return cls(wallet, ed, _read_epoch(d), dict(cfg), d)

    # -- public key material ----------------------------------------------------------------------
    @property
    def address(self) -> str:
        """Arweave address: b64url(sha256(n))."""
        return self.wallet.address

    @property
    def n(self) -> bytes:
        return self.wallet.owner

    @property
    def ed25519_pub(self) -> bytes:
        return self.ed25519.owner

    @property
    def keyid_ed25519(self) -> str:
        """RFC 9421 keyid of the ed25519 key: its public key, base64url (verifiable without lookups)."""
        return b64url(self.ed25519.owner)

    @property
    def keyid_rsa(self) -> str:
        """RFC 9421 keyid of the wallet: its Arweave address (n comes from the endorsement document)."""
        return self.wallet.address

    @property
    def node_config_canonical(self) -> bytes:
        return canonical_json(self.node_config)

    @property
    def node_config_sha256(self) -> bytes:
        return hashlib.sha256(self.node_config_canonical).digest()

    def public_info(self) -> dict[str, Any]:
        """What a client needs to recompute the key binding offline."""
        return {
            "address": self.address,
            "wallet_n": b64url(self.n),
            "wallet_e": "AQAB",
            "ed25519": b64url(self.ed25519_pub),
            "epoch": self.epoch,
            "node_config": self.node_config,
            "node_config_sha256": self.node_config_sha256.hex(),
            "keyids": {"ed25519": self.keyid_ed25519, "rsa-pss-sha512": self.keyid_rsa},
        }

    # -- rotation ---------------------------------------------------------------------------------
    def rotate(self) -> int:
        """Replace the ed25519 key and bump the epoch (both persisted when the identity has a data dir).
        Evidence must be produced again afterwards (EvidenceService.rotate does both)."""
        with self._lock:
            new = Ed25519Key.generate()
            epoch = self.epoch + 1
            if self.data_dir is not None:
                _write_private(self.data_dir / ED25519_FILE, json.dumps(new.to_jwk()).encode(), replace=True)
                _write_epoch(self.data_dir, epoch)
            self.ed25519, self.epoch = new, epoch
            return epoch


_WALLETS: dict[bytes, ArweaveWallet] = {}


def _load_wallet(jwk: dict) -> ArweaveWallet:
    """ArweaveWallet.from_jwk validates the RSA-4096 key (~1 s); identical JWKs are loaded once per process."""
    digest = hashlib.sha256(canonical_json(jwk)).digest()
    w = _WALLETS.get(digest)
    if w is None:
        w = _WALLETS[digest] = ArweaveWallet.from_jwk(jwk)
    return w


def _read_epoch(d: Path) -> int:
    p = d / STATE_FILE
    if not p.exists():
        return 0
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
        epoch = obj["epoch"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise IdentityError(f"{p}: unreadable identity state ({exc})") from exc
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 1 << 64:
        raise IdentityError(f"{p}: epoch must be an integer in 0..2^64-1")
    return epoch


def _write_epoch(d: Path, epoch: int) -> None:
    _write_private(d / STATE_FILE, json.dumps({"epoch": epoch}).encode(), replace=True)
