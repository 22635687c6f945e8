"""Message codecs and identity: ANS-104 data items and bundles, httpsig@1.0 (RFC 9421), wallets,
ao-types, message ids and hashpaths. See docs/INTERNAL-API.md (`cu.codec`).

Modules: ans104 (DataItem), tags (Avro), bundle, wallet (keys, addresses), secp256k1, rfc9421 (standard
HTTP message signatures), digest (RFC 9530), sf (structured fields), httpsig (HyperBEAM dialect),
structured (ao-types, multipart), commitment (ids, hashpaths), message (Message), cli, hashes (pure-Python
SHA-2, deep-hash, keccak): no module here imports the native extension.
"""

from cu.codec.ans104 import SIG_CONFIG, DataItem
from cu.codec.commitment import Commitment
from cu.codec.errors import CodecError
from cu.codec.message import Message

__all__ = ["SIG_CONFIG", "CodecError", "Commitment", "DataItem", "Message"]
