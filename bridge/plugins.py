"""Maps a ``kind:`` in the mapping to a connector, so the core never imports a connector by name.

Connectors register themselves from a ``register()`` function named in the ``bridge.connectors``
entry-point group (see pyproject.toml); ``load_plugins()`` calls them once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from bridge.destination import Destination, DestinationContext
from bridge.types import Sink, SinkContext, Source, SourceTag, TargetWriter

__all__ = [
    "DOCUMENTS_PREFIX",
    "DestinationKind",
    "Document",
    "SettingsCheck",
    "SettingsProblem",
    "SinkKind",
    "SourceKind",
    "WriterFactory",
    "destination_kinds",
    "document_url",
    "documents",
    "load_plugins",
    "output_kinds",
    "register_destination",
    "register_document",
    "register_sink",
    "register_source",
    "sink_kinds",
    "source_kinds",
]

SourceFactory = Callable[[str, Any, Sequence[SourceTag]], Source]
# (source name, its validated settings) -> a writer of targets through that source's device.
WriterFactory = Callable[[str, Any], TargetWriter]
SinkFactory = Callable[[str, Any, SinkContext], Sink]
DestinationFactory = Callable[[str, Any, DestinationContext], Destination]


@dataclass(frozen=True, slots=True)
class SettingsProblem:
    """What a connector's ``check`` finds wrong in settings its model accepted (a missing file, a
    key that does not belong to its certificate). ``key`` is the path inside the block, e.g.
    ``("security", "certificate")``; ``fix`` says how to fix it."""

    key: tuple[str | int, ...]
    message: str
    fix: str


# Runs in ``bridge validate`` (and before ``bridge run``) on a block's validated settings; it may
# read local files, never the network.
SettingsCheck = Callable[[Any], Sequence[SettingsProblem]]


@dataclass(frozen=True, slots=True)
class SourceKind:
    """``settings_model`` validates a ``sources.<name>`` block (without ``kind``);
    ``address_model`` validates each tag's ``address`` for sources of this kind.

    ``quick_address``, optional, returns the ``address_model`` instance for an address it can
    check cheaply and that the model accepts, else None (the model then validates it and
    reports what is wrong). Validation through the model is ~10 us per tag, most of a
    100,000-tag mapping's resolution (bench/README.md).

    ``factory`` should import the connector's protocol library only when called: loading a
    mapping (``bridge validate``) needs the models, not the library.

    ``check``, optional, finds problems a model cannot see (files it names, see
    ``SettingsCheck``).

    ``writer``, optional, makes the ``TargetWriter`` that write-back actions write through
    (None: this kind cannot be written); like ``factory``, it imports the protocol library
    only when called."""

    kind: str
    settings_model: type[BaseModel]
    address_model: type[BaseModel]
    factory: SourceFactory
    description: str = ""
    quick_address: Callable[[Any], BaseModel | None] | None = None
    check: SettingsCheck | None = None
    writer: WriterFactory | None = None


@dataclass(frozen=True, slots=True)
class SinkKind:
    kind: str
    settings_model: type[BaseModel]
    factory: SinkFactory
    description: str = ""
    check: SettingsCheck | None = None


@dataclass(frozen=True, slots=True)
class DestinationKind:
    """An ``outputs.<name>`` block of this ``kind`` is a durable destination
    (``bridge.destination``): the gateway feeds it through the outbox, never with ``write``.
    ``settings_model`` validates the block (without ``kind``); ``factory`` should import the
    connector's I/O library only when called, like a source's."""

    kind: str
    settings_model: type[BaseModel]
    factory: DestinationFactory
    description: str = ""
    check: SettingsCheck | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A static document a connector publishes through the gateway's API (a JSON-LD @context
    a context broker fetches, ...): served as it is at ``/contexts/<name>``, without a key."""

    name: str
    media_type: str
    body: bytes


# Where the gateway's API serves the documents.
DOCUMENTS_PREFIX = "/contexts"
# A document's name is the last segment of its URL: no "/", nothing to percent-encode.
_DOCUMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")

_sources: dict[str, SourceKind] = {}
_sinks: dict[str, SinkKind] = {}
_destinations: dict[str, DestinationKind] = {}
_documents: dict[str, Document] = {}
_loaded = False


def register_source(kind: SourceKind) -> None:
    _sources[kind.kind] = kind


def register_sink(kind: SinkKind) -> None:
    _not_taken(kind.kind, _destinations, "destination")
    _sinks[kind.kind] = kind


def register_destination(kind: DestinationKind) -> None:
    _not_taken(kind.kind, _sinks, "sink")
    _destinations[kind.kind] = kind


def register_document(name: str, media_type: str, body: bytes) -> None:
    """Publish ``body`` at ``/contexts/<name>`` of the gateway's API. Registering the same name
    again with the same bytes changes nothing; different bytes are a programming error (two
    connectors would fight over one URL that brokers cache)."""
    if not _DOCUMENT_NAME.match(name):
        raise ValueError(
            f"document name {name!r}: use lower-case letters, digits, '.', '_' and '-' "
            "(it is the last segment of a URL)"
        )
    found = _documents.get(name)
    if found is not None and (found.media_type, found.body) != (media_type, body):
        raise ValueError(f"document {name!r} is already registered with other content")
    _documents[name] = Document(name, media_type, bytes(body))


def _not_taken(kind: str, other: dict[str, Any], what: str) -> None:
    # Sinks and destinations share the ``outputs:`` section: one kind, one meaning.
    if kind in other:
        raise ValueError(f"output kind {kind!r} is already registered as a {what}")


def load_plugins() -> None:
    """Import every installed connector once (idempotent)."""
    global _loaded
    if _loaded:
        return
    for ep in entry_points(group="bridge.connectors"):
        ep.load()()
    _loaded = True


def source_kinds() -> dict[str, SourceKind]:
    load_plugins()
    return dict(_sources)


def sink_kinds() -> dict[str, SinkKind]:
    load_plugins()
    return dict(_sinks)


def destination_kinds() -> dict[str, DestinationKind]:
    load_plugins()
    return dict(_destinations)


def document_url(public_url: str, name: str) -> str:
    """Where a client that reaches the gateway's API at ``public_url`` fetches document
    ``name``."""
    return f"{public_url.rstrip('/')}{DOCUMENTS_PREFIX}/{name}"


def documents() -> dict[str, Document]:
    """Every document the installed connectors publish, by name."""
    load_plugins()
    return dict(_documents)


def output_kinds() -> dict[str, SinkKind | DestinationKind]:
    """Every kind an ``outputs:`` block may name: live sinks and durable destinations."""
    load_plugins()
    return {**_sinks, **_destinations}
