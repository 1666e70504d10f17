"""The JSON-LD ``@context`` of the entities: this connector's terms, then the ETSI core context.

``context.json`` (next to this module) defines our terms: the ISA-95 entity types (Enterprise,
Site, Area, Line), ``isPartOf``, the prediction's sub-properties, and ``@vocab`` for the names
that come from the mapping (tag Properties, the ``<model>Prediction`` Properties, the entity
types of templates), all under ``urn:bridge-gateway:ngsi-ld:``. A broker that is given the
document's URL fetches it: ``context_url``, else the gateway's own copy
(``<gateway.api.public_url>/contexts/bridge-ngsild.jsonld``, registered below) when the
gateway's API has a public URL; without either the document is written inline.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from bridge.plugins import document_url, register_document

__all__ = [
    "CONTEXT_FILE",
    "CONTEXT_MEDIA_TYPE",
    "DOCUMENT_NAME",
    "NAMESPACE",
    "context_document",
    "entity_context",
    "our_context_url",
    "publish_context",
]

CONTEXT_FILE = Path(__file__).with_name("context.json")
NAMESPACE = "urn:bridge-gateway:ngsi-ld:"
# The name the gateway's API serves context.json under (GET /contexts/<name>).
DOCUMENT_NAME = "bridge-ngsild.jsonld"
CONTEXT_MEDIA_TYPE = "application/ld+json"


def publish_context() -> None:
    """Have the gateway's API serve ``context.json`` as it is, byte for byte."""
    register_document(DOCUMENT_NAME, CONTEXT_MEDIA_TYPE, CONTEXT_FILE.read_bytes())


def our_context_url(context_url: str | None, public_url: str | None) -> str | None:
    """The URL entities name for our context: ``context_url``, else the gateway's copy when
    its API has a public URL, else None (written inline)."""
    if context_url is not None:
        return context_url
    return None if public_url is None else document_url(public_url, DOCUMENT_NAME)


@cache
def context_document() -> dict[str, Any]:
    """The parsed ``context.json`` (a JSON-LD context document: ``{"@context": {...}}``)."""
    doc: dict[str, Any] = json.loads(CONTEXT_FILE.read_text(encoding="utf-8"))
    return doc


def entity_context(context_url: str | None, core_context_url: str) -> list[Any]:
    """The ``@context`` member of every entity: ours (by URL, or inline), then the core's.

    The core context comes last, as the spec's examples name it (annex C): its terms are
    protected, so ours cannot change what ``value``, ``observedAt`` or ``object`` mean.
    """
    ours: Any = context_url if context_url is not None else context_document()["@context"]
    return [ours, core_context_url]
