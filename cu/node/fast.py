"""Native fast paths of the node's hot path (`cu._native.fast`, native/fast_ans104.cpp): the SU's ed25519
assignment items built and signed in one native call. The results are byte-identical to cu.codec's
(`DataItem.create(key, ...).to_bytes()`; tests/test_fast_native.py compares them); whatever the native path
declines (tags beyond the DEFAULT limits) the caller builds with cu.codec, which raises its own errors.

AOCU_FASTPATH=0 in the environment turns the native paths off (the Python codec then does everything), for
measuring one against the other (bench/hotpath.py)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from cu import _native
from cu.codec.wallet import Ed25519Key

ENABLED = os.environ.get("AOCU_FASTPATH", "1") != "0"


def item_signer(key: Ed25519Key) -> _native.fast.Ed25519ItemSigner | None:
    """The native signer holding `key` (made once per key), or None for keys it does not handle (type 4)."""
    return key.native_signer() if key.signature_type == 2 else None


def ed25519_item(key: Ed25519Key, tags: Sequence[tuple[str, str]], *, data: bytes = b"",
                 target: bytes | None = None, anchor: bytes | None = None) -> tuple[bytes, bytes] | None:
    """(item bytes, signature) of `DataItem.create(key, data=data, tags=tags, target=target, anchor=anchor)`
    (`target`/`anchor` as 32 raw bytes or None), or None where the caller must use cu.codec: the fast path is
    off, the key is not type 2, or the tags are beyond the DEFAULT limits or not valid UTF-8 text."""
    signer = item_signer(key) if ENABLED else None
    if signer is None:
        return None
    built = signer.build_item(tags if isinstance(tags, list) else list(tags), target, anchor, data)
    if built is None:
        return None
    raw, signature, _raw_tags = built
    return raw, signature
