"""Which reference statistics each served version of a model is compared with.

The registry's (``reference_json``, given at ``bridge models register --reference``) when the
version has usable ones, else the mapping's ``reference:`` file. A version registered without
reference statistics keeps the mapping's, with a warning (the mapping's own file, seeded into
the registry at start, has none by design: no warning for it). While the registry cannot be
read, what is known is kept and the lookup is tried again later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.config.reference import ReferenceFileError, validate_reference
from bridge.config.resolved import ResolvedModel
from bridge.errors import BridgeError

__all__ = ["LOOKUP_RETRY_S", "ReferenceBook", "ReferenceLookup", "RegisteredReference", "Served"]

log = structlog.get_logger(__name__)

# After the registry could not be read, references are looked up again this much later.
LOOKUP_RETRY_S = 30.0

Served = tuple[str, str]  # (version, sha256) of a served model file


@dataclass(frozen=True, slots=True)
class RegisteredReference:
    """What the registry holds for one version: its file, its reference and who registered it."""

    sha256: str
    reference: Mapping[str, Any] | None
    registered_by: str


# (version, sha256) -> what the registry holds for it, None if not registered; raises BridgeError.
ReferenceLookup = Callable[[str, str], RegisteredReference | None]


class ReferenceBook:
    def __init__(
        self,
        model: ResolvedModel,
        mapping_reference: Mapping[str, Any],
        lookup: ReferenceLookup | None = None,
    ) -> None:
        self.model = model
        self._features = [f.name for f in model.features]
        self._mapping_reference = mapping_reference
        self._lookup = lookup
        self._references: dict[Served, Mapping[str, Any]] = {}
        self._retry_at = 0.0

    def get(self, served: Served) -> Mapping[str, Any] | None:
        """The reference of ``served``, once ``learn`` found it."""
        return self._references.get(served)

    async def learn(self, served: Sequence[Served]) -> None:
        """Look up the reference of each version not seen yet (in a worker thread)."""
        new = [s for s in served if s not in self._references]
        if not new or time.monotonic() < self._retry_at:
            return
        try:
            for s in new:
                self._references[s] = await asyncio.to_thread(self._registry_reference, s)
        except BridgeError as exc:  # the store is down: keep what we have, try later
            self._retry_at = time.monotonic() + LOOKUP_RETRY_S
            log.warning("reference_lookup_failed", model=self.model.name, error=str(exc))

    def _registry_reference(self, served: Served) -> Mapping[str, Any]:
        """The registry's reference of ``served`` if usable, else the mapping's (see module)."""
        if self._lookup is None:
            return self._mapping_reference
        version, sha256 = served
        found = self._lookup(version, sha256)
        where = {"model": self.model.name, "version": version}
        if found is None or found.sha256 != sha256:
            return self._mapping_reference  # served from the mapping, not the registry
        if found.reference is None:
            if found.registered_by != "mapping":
                log.warning("registry_reference_missing_using_mapping_reference", **where)
            return self._mapping_reference
        try:
            ref = validate_reference(found.reference, self._features)
            if self.model.drift is not None:
                missing = [f for f in self._features if "bins" not in ref["features"][f]]
                if missing:
                    raise ReferenceFileError(f"no bins/fractions for {', '.join(missing)} (drift)")
        except ReferenceFileError as exc:
            log.warning(
                "registry_reference_unusable_using_mapping_reference", error=str(exc), **where
            )
            return self._mapping_reference
        return ref
