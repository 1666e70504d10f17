"""One exception tree for the gateway. Library exceptions are mapped with ``raise ... from``.

Every error bridge raises on purpose is a ``BridgeError``; the drawing below is the whole tree
(a test walks every module of ``bridge`` and ``connectors`` and fails when a subclass is missing
here, sits elsewhere than drawn, or is drawn but gone). The base classes live in this module so
that any layer can raise them; a subclass lives beside the code that knows its case.

    BridgeError               bridge.errors               base; the CLI prints it, exit 1
    ├── ConfigError           bridge.errors               a mapping is invalid, with every
    │                                                     issue found (ConfigIssue): the
    │                                                     config loader, prepare (models that
    │                                                     do not fit), the gateway's wiring (a
    │                                                     kind that is not installed); CLI
    │                                                     exit 3
    ├── ReferenceFileError    bridge.config.reference     a reference statistics file breaks
    │                                                     bridge-reference/1: read when a
    │                                                     mapping loads (reported there as a
    │                                                     ConfigIssue), when a version is
    │                                                     registered, when drift is set up
    ├── ConnectorError        bridge.errors               a source, destination or listener
    │   │                                                 lost (or could not make) its
    │   │                                                 connection: connectors/*, the source
    │   │                                                 runner, the API server's bind
    │   └── NotConnected      bridge.errors               an operation needed a connection that
    │                                                     is not there: Modbus and OPC UA
    │                                                     sources
    ├── InferenceError        bridge.errors               a model could not be loaded or run:
    │   │                                                 bridge.inference.model
    │   └── ModelRefused      bridge.lifecycle.loading    a registered version that does not
    │                                                     verify or fit the mapping: model
    │                                                     loading, switching, registry service
    ├── ModelFileRefused      bridge.lifecycle.files      a model file outside the models
    │                                                     directory, or not a regular file
    ├── SignatureError        bridge.ed25519              a missing, malformed or mismatching
    │                                                     Ed25519 key or signature
    ├── AuditFileError        bridge.audit.exportfile     an audit file (export or mirror)
    │                                                     that cannot be read as one
    ├── QuantizeError         bridge.lifecycle.quantize   a model that cannot be quantized, or
    │                                                     whose quantized copy leaves tolerance
    ├── ActionError           bridge.runtime.actions      a person's request on a write-back
    │                                                     action cannot be done now: unknown,
    │                                                     nothing or another request waiting,
    │                                                     no serving model version to arm under
    ├── WriteError            bridge.errors               a write to a target (a PLC register
    │   │                                                 or coil, a server's variable) or its
    │   │                                                 read back failed; never retried by
    │   │                                                 the writer: the Modbus and OPC UA
    │   │                                                 target writers
    │   ├── WriteRefused      bridge.errors               the device or server refused it: a
    │   │                                                 Modbus exception, an OPC UA Bad status
    │   ├── WriteTimedOut     bridge.errors               no answer within the source's timeout
    │   ├── WriteNotConnected bridge.errors               no connection to the device or server
    │   └── NotRepresentable  bridge.errors               the value does not fit the target's
    │                                                     type (nothing was sent)
    └── StoreError            bridge.errors               the SQL store failed: every
        │                                                 repository of bridge.store (CLI
        │                                                 exit 4; a conflict exits 1)
        ├── QueryTimeoutError bridge.store.db             a read ran past its statement timeout
        │                                                 (the REST API answers 503)
        ├── AlreadyAcknowledged bridge.store.alerts       an alert acknowledged twice (409)
        └── RegistryError     bridge.store.registry       a registry operation the registry's
            │                                             state does not allow
            ├── RegistryNotFound bridge.store.registry    no such model or version (404): the
            │                                             registry repository and service
            └── RegistryConflict bridge.store.registry    the version's state forbids it, or it
                                                          exists already (409): same raisers

Errors that never leave their module (a connector's retry signal, a codec's bad frame) are
plain exceptions, not part of this tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = [
    "BridgeError",
    "ConfigError",
    "ConfigIssue",
    "ConnectorError",
    "InferenceError",
    "NotConnected",
    "NotRepresentable",
    "StoreError",
    "WriteError",
    "WriteNotConnected",
    "WriteRefused",
    "WriteTimedOut",
]


class BridgeError(Exception):
    """Base of every error bridge raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One mistake in a mapping file: where it is, what is wrong, how to fix it."""

    file: str
    line: int | None
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.key}: {self.message}"
        return f"{text} (fix: {self.hint})" if self.hint else text


class ConfigError(BridgeError):
    """A mapping is invalid. Carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ConnectorError(BridgeError):
    """A source or sink lost (or could not make) its connection."""


class NotConnected(ConnectorError):
    """An operation needed a connection that is not there."""


class InferenceError(BridgeError):
    """A model could not be loaded or run."""


class StoreError(BridgeError):
    """The SQL store failed."""


class WriteError(BridgeError):
    """A write to a target, or its read back, failed. The writer never retries: the caller
    decides (a write-back action goes to ``fault``). ``kind`` names the case for records;
    ``target`` is the target as the message shows it; ``maybe_written``: the request may have
    reached the device (it timed out, or the link failed after it was sent), so what the target
    holds is unknown until it is read back."""

    kind: ClassVar[str] = "failed"

    def __init__(self, message: str, *, target: str = "", maybe_written: bool = False) -> None:
        super().__init__(message)
        self.target = target
        self.maybe_written = maybe_written


class WriteRefused(WriteError):
    """The device or server answered with a refusal; ``status`` names it (``IllegalDataAddress``
    for Modbus exception 2, ``BadNotWritable``, ``BadTypeMismatch``, ``BadUserAccessDenied``)."""

    kind: ClassVar[str] = "refused"

    def __init__(self, message: str, *, status: str, target: str = "") -> None:
        super().__init__(message, target=target)
        self.status = status


class WriteTimedOut(WriteError):
    """No answer within the bound (the source's ``timeout_s``)."""

    kind: ClassVar[str] = "timeout"


class WriteNotConnected(WriteError):
    """No connection to the device or server could be made, or it was lost."""

    kind: ClassVar[str] = "not_connected"


class NotRepresentable(WriteError):
    """The value does not fit the target's type (a fraction for an integer, out of range, a
    number for a bool): refused before anything was sent."""

    kind: ClassVar[str] = "not_representable"
