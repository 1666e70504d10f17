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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridge.ed25519 import SignatureError, generate_keypair, load_private_key, load_public_key

__all__ = [
    "SignatureError",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign_model",
    "signed_message",
    "verify_model",
]


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
