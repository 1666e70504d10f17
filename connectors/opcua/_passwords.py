"""Password hashes for the users of the prediction server: scrypt from the standard library.

Format (one string, ``$``-separated; base64 with or without padding)::

    scrypt$<n>$<r>$<p>$<salt base64>$<hash base64>

``bridge certs hash-password`` writes one. The defaults (n=16384, r=8, p=1: 16 MiB, ~50 ms on a
small CPU) keep a login cheap for the gateway; raise n for more resistance to offline guessing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["PasswordHash", "hash_password", "parse_password_hash"]

_SCHEME = "scrypt"
_MAX_N = 2**20  # 1 GiB at r=8: beyond it a typo, not a choice
_MAXMEM_SLACK = 1024 * 1024


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, password: str) -> bool:
        """Constant-time comparison of the scrypt of ``password`` with the stored digest."""
        derived = _scrypt(password.encode(), self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(derived, self.digest)

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"{_SCHEME}${self.n}${self.r}${self.p}${salt}${digest}"


def hash_password(password: str, *, n: int = 16384, r: int = 8, p: int = 1) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode(), salt, n, r, p, 32)
    return PasswordHash(n, r, p, salt, digest).encode()


def parse_password_hash(text: str) -> PasswordHash:
    """Parse the format above; ``ValueError`` says what is wrong and how to make a good one."""
    hint = "make one with: bridge certs hash-password"
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError(f"password_hash must look like scrypt$n$r$p$salt$hash; {hint}")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = (_b64(x) for x in parts[4:6])
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"password_hash has a bad number or base64 part; {hint}") from exc
    if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError(f"password_hash: n must be a power of two <= {_MAX_N}, r 1-64, p 1-16")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError(
            f"password_hash: salt (>= 8 bytes) or hash (>= 16 bytes) too short; {hint}"
        )
    return PasswordHash(n, r, p, salt, digest)


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=size, maxmem=128 * r * (n + p + 2) + _MAXMEM_SLACK
    )
