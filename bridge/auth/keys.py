"""Key format ``brk_<id>_<secret>``: the id finds the row, the secret is checked by hash.

The secret is 256 random bits, so a plain sha256 is enough (a slow KDF protects low-entropy
passwords, not random keys) and keeps every request cheap. Only the hash is stored; the key is
shown once when it is created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["ApiKeyError", "NewKey", "generate_key", "hash_key", "keys_match", "parse_key_id"]

PREFIX = "brk"
_ID_BYTES = 6
_SECRET_BYTES = 32
# id: 12 hex chars; secret: token_urlsafe(32) is 43 chars of [A-Za-z0-9_-].
_FORMAT = re.compile(r"^brk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class ApiKeyError(ValueError):
    """The text is not an API key of this gateway (wrong format)."""


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str  # public: shown by `bridge apikeys list`, used to revoke
    key: str  # the secret to give to the client, never stored
    key_hash: str  # what the store keeps


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> NewKey:
    key_id = secrets.token_hex(_ID_BYTES)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return NewKey(key_id=key_id, key=key, key_hash=hash_key(key))


def parse_key_id(key: str) -> str:
    """The id part of a well-formed key; ApiKeyError otherwise (without echoing the key)."""
    match = _FORMAT.match(key)
    if match is None:
        raise ApiKeyError("malformed API key")
    return match.group(1)


def keys_match(key: str, stored_hash: str) -> bool:
    """Constant-time comparison, so response time says nothing about how much of a key was right."""
    return hmac.compare_digest(hash_key(key).encode("ascii"), stored_hash.encode("ascii"))
