"""Ed25519 signatures of model versions.

What is signed is not the file but this message (UTF-8), one field per line::

    bridge-model-v1
    <model name>
    <version>
    <sha256 of the file, lower-case hex>

so a signature vouches for one file *as one version of one model*: the same file registered
under another name or version is refused. Names and versions with a line break cannot be signed
(the message would be ambiguous). The runtime verifies the signature against the registered
digest and loads only bytes that hash to that digest, so there is no window between checking a
file and loading it.

Signatures made before this format (over the sha256 alone, ``bridge-model-sha256:<hex>``) are
refused: sign the file again with ``bridge models sign FILE --name N --version V`` and register
it again. Signatures travel as base64 text; keys as PEM files (``cryptography``'s standard
encodings).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridge.errors import BridgeError

__all__ = [
    "SignatureError",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign_model",
    "signed_message",
    "verify_model",
]


class SignatureError(BridgeError):
    """A missing, malformed or wrong signature, or an unusable key."""


def signed_message(name: str, version: str, sha256: str) -> bytes:
    """The bytes a model signature is made over (see the module docstring)."""
    if any(c in field for field in (name, version) for c in "\r\n"):
        raise SignatureError(
            f"a model name or version with a line break cannot be signed: {name!r} {version!r}"
        )
    return f"bridge-model-v1\n{name}\n{version}\n{sha256.lower()}".encode()


def sign_model(key: Ed25519PrivateKey, name: str, version: str, sha256: str) -> str:
    return base64.b64encode(key.sign(signed_message(name, version, sha256))).decode("ascii")


def verify_model(
    key: Ed25519PublicKey, name: str, version: str, sha256: str, signature: str | None
) -> None:
    if not signature:
        raise SignatureError(
            f"{name} {version} has no signature and signatures are required: sign it with "
            "`bridge models sign FILE --key KEY --name NAME --version VERSION`"
        )
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("the signature is not base64") from exc
    try:
        key.verify(raw, signed_message(name, version, sha256))
    except InvalidSignature as exc:
        raise SignatureError(
            f"the signature does not match: the file is not signed for {name} {version} "
            f"(sha256 {sha256}) with the configured key (a signature covers name, version "
            "and sha256; one made before "
            "bridge-model-v1 covers the sha256 only and must be made again with "
            "`bridge models sign`)"
        ) from exc


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
