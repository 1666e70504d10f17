"""Signed checkpoints of the audit chain (the message is in bridge.store.auditchain)."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bridge.ed25519 import public_key_text
from bridge.store.auditchain import AuditCheckpoint, checkpoint_message

__all__ = ["sign_checkpoint", "signature_valid"]


def sign_checkpoint(
    key: Ed25519PrivateKey, seq: int, hash_: str, at: str, gateway: str
) -> AuditCheckpoint:
    signature = key.sign(checkpoint_message(seq, hash_, at, gateway))
    return AuditCheckpoint(
        seq=seq,
        hash=hash_,
        at=at,
        gateway=gateway,
        public_key=public_key_text(key.public_key()),
        signature=base64.b64encode(signature).decode("ascii"),
    )


def signature_valid(checkpoint: AuditCheckpoint) -> bool:
    """Whether the checkpoint's signature was made by the key it names (whether that key is
    trusted is the caller's question)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(checkpoint.public_key, validate=True)
        )
        signature = base64.b64decode(checkpoint.signature, validate=True)
        key.verify(
            signature,
            checkpoint_message(checkpoint.seq, checkpoint.hash, checkpoint.at, checkpoint.gateway),
        )
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True
