"""Loading a registered version for a mapping's model: integrity first, then the fit check.

Every load re-reads and re-hashes the file (the session is built from the very bytes that were
hashed) and verifies the version's signature over its name, version and that digest when a
public key is configured; the production profile refuses a version without one. A refusal is
logged and raised; the caller keeps the old version serving.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from bridge.config.resolved import ResolvedModel
from bridge.errors import InferenceError
from bridge.inference.fit import model_problems
from bridge.inference.model import LoadedModel, OutputRoles
from bridge.lifecycle.deployment import Served
from bridge.lifecycle.files import ModelFileRefused, read_model_file
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.signature import SignatureError, verify_model
from bridge.store.registry import VersionRecord

__all__ = ["ModelRefused", "check_signature", "load_verified", "load_version"]

log = structlog.get_logger(__name__)


class ModelRefused(InferenceError):
    """A version that must not serve: tampered, unsigned, unloadable or not fitting the mapping."""


def check_signature(
    policy: ModelPolicy, name: str, version: str, sha256: str, signature: str | None
) -> None:
    """Raise :class:`SignatureError` unless the policy accepts this version's signature."""
    missing = policy.missing_key()
    if missing is not None:
        raise SignatureError(missing)
    if policy.public_key is not None:
        verify_model(policy.public_key, name, version, sha256, signature)


def load_verified(
    path: Path,
    name: str,
    version: str,
    sha256: str,
    signature: str | None,
    policy: ModelPolicy,
    roles: OutputRoles | None = None,
    data: bytes | None = None,
) -> LoadedModel:
    """Load ``path`` (or ``data``, already read from it) only if it hashes to ``sha256`` and
    the policy accepts its signature."""
    what = f"{name} {version}"
    try:
        check_signature(policy, name, version, sha256, signature)
        if data is None:
            data = read_model_file(path, policy.max_bytes)
        return LoadedModel.from_bytes(path, data, expected_sha256=sha256, roles=roles)
    except (SignatureError, InferenceError, ModelFileRefused) as exc:
        log.error("model_refused", model=what, path=str(path), reason=str(exc))
        raise ModelRefused(f"{what}: {exc}") from exc


def load_version(model: ResolvedModel, record: VersionRecord, policy: ModelPolicy) -> Served:
    """Blocking (file read, session build): call it in a worker thread."""
    what = f"{record.name} {record.version}"
    roles = OutputRoles(
        label=model.outputs.label, scores=model.outputs.scores, value=model.outputs.value
    )
    loaded = load_verified(
        Path(record.path),
        record.name,
        record.version,
        record.sha256,
        record.signature,
        policy,
        roles,
    )
    problems = model_problems(model, loaded)
    if problems:
        log.error("model_refused", model=what, reason="; ".join(problems))
        raise ModelRefused(f"{what} does not fit the mapping: {'; '.join(problems)}")
    labels = tuple(model.labels or loaded.labels)
    return Served(record.version, loaded.sha256, loaded, labels)
