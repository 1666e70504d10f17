"""Ed25519 keys as PEM files: loading them and making a pair (model signatures, the audit
ledger's signed checkpoints)."""

from __future__ import annotations

import base64
import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridge.errors import BridgeError

__all__ = [
    "SignatureError",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "public_key_text",
]


class SignatureError(BridgeError):
    """A missing, malformed or wrong signature, or an unusable key."""


def public_key_text(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as base64: how a signature names the key that made it."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot read public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path} is not an Ed25519 public key")
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read private key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 private key")
    return key


def generate_keypair(private_out: Path, public_out: Path) -> None:
    """Write a new key pair; never overwrite a file. The private key is created 0600 by the
    very call that creates it (O_EXCL), so it is never readable by others, not even briefly."""
    for path in (private_out, public_out):
        if os.path.lexists(path):
            raise SignatureError(
                f"{path} already exists and is not overwritten: a new key would invalidate "
                "every signature made with the old one; remove it first or choose another path"
            )
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _create(private_out, private_pem, 0o600)
    try:
        _create(public_out, public_pem, 0o644)
    except SignatureError:
        private_out.unlink()  # no half of a pair left behind
        raise


def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError as exc:
        raise SignatureError(
            f"{path} already exists and is not overwritten: remove it first or choose another path"
        ) from exc
    except OSError as exc:
        raise SignatureError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise SignatureError(f"cannot write {path}: {exc.strerror}") from exc
