"""One exception tree for the gateway. Library exceptions are mapped with ``raise ... from``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BridgeError",
    "ConfigError",
    "ConfigIssue",
    "ConnectorError",
    "InferenceError",
    "ModelMismatchError",
    "NotConnected",
    "StoreError",
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


class ModelMismatchError(InferenceError):
    """A model's inputs/outputs do not match what the mapping asks of it."""


class StoreError(BridgeError):
    """The SQL store failed."""
