"""What the registry trusts: which key signs models, whether signatures are required, where
model files may be registered from and how large they may be. Built once from the mapping
(``policy_of``) and shared by the CLI, the REST API and the running gateway."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.config.resolved import Mapping
from bridge.lifecycle.files import DEFAULT_MAX_BYTES, MiB
from bridge.lifecycle.signature import load_public_key

__all__ = ["ModelPolicy", "policy_of"]

_PRODUCTION_NEEDS_A_KEY = (
    "the production profile (gateway.durability.profile) requires signed models: set "
    "gateway.models.public_key to an Ed25519 public key (`bridge models keygen`) and sign "
    "each version with `bridge models sign`"
)


@dataclass(frozen=True)
class ModelPolicy:
    public_key: Ed25519PublicKey | None = None
    # The production profile: an unsigned version never registers, activates or loads.
    require_signature: bool = False
    # Where registration by path may read from; None: nowhere.
    directory: Path | None = None
    max_bytes: int = DEFAULT_MAX_BYTES

    def missing_key(self) -> str | None:
        """Why nothing can be verified (signatures required, no key to check them with)."""
        if self.require_signature and self.public_key is None:
            return _PRODUCTION_NEEDS_A_KEY
        return None


def policy_of(mapping: Mapping) -> ModelPolicy:
    settings = mapping.gateway.models
    base = mapping.path.parent

    def relative(configured: str) -> Path:
        path = Path(configured)
        return path if path.is_absolute() else base / path

    return ModelPolicy(
        public_key=load_public_key(relative(settings.public_key))
        if settings.public_key is not None
        else None,
        require_signature=mapping.gateway.durability.profile == "production",
        directory=relative(settings.directory or "models"),
        max_bytes=settings.max_file_mib * MiB,
    )
