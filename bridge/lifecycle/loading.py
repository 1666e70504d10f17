"""Loading a registered version for a mapping's model: integrity first, then the fit check.

Every load re-hashes the file (``LoadedModel.load`` hashes the very bytes it builds the session
from) and, with a public key configured, verifies the version's signature over that digest.
A refusal is logged and raised; the caller keeps the old version serving.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bridge.config.resolved import ResolvedModel
from bridge.errors import InferenceError
from bridge.inference.model import LoadedModel, OutputRoles
from bridge.lifecycle.deployment import Served
from bridge.lifecycle.signature import SignatureError, verify_digest
from bridge.prepare import model_problems
from bridge.store.registry import VersionRecord

__all__ = ["ModelRefused", "load_verified", "load_version"]

log = structlog.get_logger(__name__)


class ModelRefused(InferenceError):
    """A version that must not serve: tampered, unsigned, unloadable or not fitting the mapping."""


def load_verified(
    path: Path,
    sha256: str,
    signature: str | None,
    public_key: Ed25519PublicKey | None,
    roles: OutputRoles | None = None,
    what: str = "",
) -> LoadedModel:
    """Load ``path`` only if it hashes to ``sha256`` (and is signed, with a key configured)."""
    try:
        if public_key is not None:
            verify_digest(public_key, sha256, signature)
        return LoadedModel.load(path, expected_sha256=sha256, roles=roles)
    except (SignatureError, InferenceError) as exc:
        log.error("model_refused", model=what or str(path), path=str(path), reason=str(exc))
        raise ModelRefused(f"{what or path}: {exc}") from exc


def load_version(
    model: ResolvedModel, record: VersionRecord, public_key: Ed25519PublicKey | None
) -> Served:
    """Blocking (file read, session build): call it in a worker thread."""
    what = f"{record.name} {record.version}"
    roles = OutputRoles(
        label=model.outputs.label, scores=model.outputs.scores, value=model.outputs.value
    )
    loaded = load_verified(
        Path(record.path), record.sha256, record.signature, public_key, roles, what
    )
    problems = model_problems(model, loaded)
    if problems:
        log.error("model_refused", model=what, reason="; ".join(problems))
        raise ModelRefused(f"{what} does not fit the mapping: {'; '.join(problems)}")
    labels = tuple(model.labels or loaded.labels)
    return Served(record.version, loaded.sha256, loaded, labels)
