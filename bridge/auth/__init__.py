"""API keys: generation, hashing and scopes (pure; the store keeps only the hashes)."""

from __future__ import annotations

from .keys import ApiKeyError, NewKey, generate_key, hash_key, keys_match, parse_key_id
from .scopes import Scope

__all__ = [
    "ApiKeyError",
    "NewKey",
    "Scope",
    "generate_key",
    "hash_key",
    "keys_match",
    "parse_key_id",
]
