"""Signatures of mapping files: who approved the mapping a gateway runs.

``bridge mapping sign MAPPING --key KEY`` writes ``MAPPING.sig``: base64 Ed25519 over the UTF-8
message ``bridge-mapping-v1\\n<sha256 of the file's bytes, lower-case hex>``. A gateway verifies it
at start and at every reload when ``BRIDGE_MAPPING_PUBLIC_KEY`` names a public key (PEM): the
key comes from the environment, not from the mapping, because a key the mapping itself named
would be changed along with the mapping. The signature is checked against the sha256 of the very
bytes that were loaded (the mapping's revision), so there is no window between check and use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping as MappingABC
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.ed25519 import SignatureError, load_public_key
from bridge.errors import ConfigError, ConfigIssue

__all__ = [
    "PUBLIC_KEY_VARIABLE",
    "check_mapping_signature",
    "mapping_message",
    "sign_mapping",
    "signature_path",
]

PUBLIC_KEY_VARIABLE = "BRIDGE_MAPPING_PUBLIC_KEY"


def mapping_message(sha256: str) -> bytes:
    return f"bridge-mapping-v1\n{sha256.lower()}".encode()


def signature_path(mapping: Path) -> Path:
    return mapping.with_name(mapping.name + ".sig")


def sign_mapping(key: Ed25519PrivateKey, mapping: Path) -> Path:
    """Sign the file as it is now; returns the signature file written beside it."""
    digest = hashlib.sha256(mapping.read_bytes()).hexdigest()
    out = signature_path(mapping)
    out.write_text(base64.b64encode(key.sign(mapping_message(digest))).decode("ascii") + "\n")
    return out


def check_mapping_signature(
    mapping: Path, revision: str, env: MappingABC[str, str] | None = None
) -> None:
    """Raise ConfigError unless ``mapping`` (whose loaded bytes hash to ``revision``) carries a
    signature by the key ``BRIDGE_MAPPING_PUBLIC_KEY`` names; nothing to do when it names none."""
    key_file = (os.environ if env is None else env).get(PUBLIC_KEY_VARIABLE, "")
    if not key_file:
        return
    sig = signature_path(mapping)
    fix = f"sign it with `bridge mapping sign {mapping.name} --key KEY` after reviewing it"

    def refuse(message: str, hint: str = fix) -> ConfigError:
        return ConfigError([ConfigIssue(str(mapping), None, "(signature)", message, hint)])

    try:
        key = load_public_key(Path(key_file))
    except SignatureError as exc:
        raise refuse(f"{PUBLIC_KEY_VARIABLE}: {exc}", "point it at the PEM public key") from exc
    try:
        raw = base64.b64decode(sig.read_text().strip(), validate=True)
    except FileNotFoundError as exc:
        raise refuse(
            f"signatures are required ({PUBLIC_KEY_VARIABLE}) and {sig.name} is missing"
        ) from exc
    except (OSError, binascii.Error, ValueError) as exc:
        raise refuse(f"{sig.name} is not a readable base64 signature: {exc}") from exc
    try:
        key.verify(raw, mapping_message(revision))
    except InvalidSignature as exc:
        raise refuse(
            f"{sig.name} does not sign this content (sha256 {revision[:12]}) with the key "
            f"{PUBLIC_KEY_VARIABLE} names: the file changed after it was signed, or another "
            "key signed it"
        ) from exc
