"""Ed25519 signatures of model files.

What is signed is the text ``bridge-model-sha256:<hex digest>`` of the file, not the file: the
runtime then verifies the signature against the registered digest and loads only bytes that hash
to that digest, so there is no window between checking a file and loading it.
Signatures travel as base64 text; keys as PEM files (``cryptography``'s standard encodings).
"""

from __future__ import annotations

import base64
import binascii
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
    "sign_digest",
    "verify_digest",
]


class SignatureError(BridgeError):
    """A missing, malformed or wrong signature, or an unusable key."""


def _message(sha256: str) -> bytes:
    return f"bridge-model-sha256:{sha256.lower()}".encode()


def sign_digest(key: Ed25519PrivateKey, sha256: str) -> str:
    return base64.b64encode(key.sign(_message(sha256))).decode("ascii")


def verify_digest(key: Ed25519PublicKey, sha256: str, signature: str | None) -> None:
    if not signature:
        raise SignatureError("the model has no signature and a public key is configured")
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("the signature is not base64") from exc
    try:
        key.verify(raw, _message(sha256))
    except InvalidSignature as exc:
        raise SignatureError(f"the signature does not match sha256 {sha256}") from exc


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
    key = Ed25519PrivateKey.generate()
    private_out.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_out.chmod(0o600)
    public_out.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
