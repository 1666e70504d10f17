"""What every NGSI-LD request of the gateway must be, checked the same way by every test:

- valid against the Batch Entity Upsert request schema (``tests/ngsild/upsert-request.schema.json``,
  re-expressed from the ETSI NGSI-LD OpenAPI description, GS CIM 009 V1.7.1), or for the
  temporal API against ``tests/ngsild/temporal-attrs-request.schema.json``;
- valid JSON-LD that expands with our context and the ETSI core context (pyld, documents
  loaded from this repository: nothing is fetched), every attribute landing on an IRI of the
  core context or of ours.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
from pyld import jsonld

from bridge.connectors.ngsild.config import CORE_CONTEXT
from bridge.connectors.ngsild.context import CONTEXT_FILE, NAMESPACE

__all__ = [
    "CORE",
    "OURS",
    "OUR_CONTEXT_URL",
    "check_request",
    "check_temporal_request",
    "expand",
    "schema_errors",
]

HERE = Path(__file__).resolve().parent / "ngsild"
CORE = "https://uri.etsi.org/ngsi-ld/"
OURS = NAMESPACE
# Where a test says our context is published (the loader below serves context.json for it).
OUR_CONTEXT_URL = "http://contexts.plant.test/bridge/ngsi-ld/context.json"

_SCHEMA = json.loads((HERE / "upsert-request.schema.json").read_text())
_VALIDATOR = jsonschema_rs.validator_for(_SCHEMA, validate_formats=True)
_TEMPORAL = jsonschema_rs.validator_for(
    json.loads((HERE / "temporal-attrs-request.schema.json").read_text()), validate_formats=True
)
_DOCUMENTS = {
    CORE_CONTEXT: json.loads((HERE / "ngsi-ld-core-context-v1.8.subset.jsonld").read_text()),
    OUR_CONTEXT_URL: json.loads(CONTEXT_FILE.read_text()),
}


def _loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    if url not in _DOCUMENTS:
        raise AssertionError(f"the payload names a @context this test cannot load: {url}")
    return {"contextUrl": None, "documentUrl": url, "document": _DOCUMENTS[url]}


def schema_errors(body: Any) -> list[str]:
    return [f"{list(e.instance_path)}: {e.message}" for e in _VALIDATOR.iter_errors(body)]


Loader = Callable[..., dict[str, Any]]


def expand(entity: dict[str, Any], loader: Loader | None = None) -> dict[str, Any]:
    """The entity expanded (JSON-LD 1.1); asserts that no attribute was dropped and every one
    expands to an IRI of the core context or of ours. ``loader``: how @context URLs are
    loaded (default: from this repository, nothing fetched)."""
    expanded = jsonld.expand(entity, {"documentLoader": loader or _loader})
    assert len(expanded) == 1, expanded
    node: dict[str, Any] = expanded[0]
    _check_node(entity, node)
    return node


def _check_node(compact: dict[str, Any], node: dict[str, Any]) -> None:
    members = [k for k in compact if k not in ("@context", "id", "type")]
    attributes = [k for k in node if not k.startswith("@")]
    # JSON-LD drops a member its context does not define: none may be lost.
    assert len(attributes) == len(members), (members, attributes)
    for iri in attributes:
        assert iri.startswith((CORE, OURS)), iri
        for value in node[iri]:
            if isinstance(value, dict) and "@type" in value and not iri.startswith(CORE):
                # A Property or Relationship: its own members are checked the same way.
                short = next(k for k in members if _same(k, iri))
                _check_node(compact[short], value)


def _same(short: str, iri: str) -> bool:
    return iri.endswith((f":{short}", f"/{short}", f"has{short[0].upper()}{short[1:]}"))


def check_request(body: Any, loader: Loader | None = None) -> list[dict[str, Any]]:
    """Assert the upsert body is valid; the expanded entities."""
    errors = schema_errors(body)
    assert not errors, errors
    return [expand(entity, loader) for entity in body]


def check_temporal_request(body: Any) -> dict[str, Any]:
    """Assert the temporal API body is valid, and that each instance expands as an attribute of
    the entity would; the expanded fragment."""
    errors = [f"{list(e.instance_path)}: {e.message}" for e in _TEMPORAL.iter_errors(body)]
    assert not errors, errors
    # As a node: one instance per attribute, so every member is checked like an entity's.
    for i in range(max(len(v) for k, v in body.items() if k != "@context")):
        node = {k: v[i] for k, v in body.items() if k != "@context" and i < len(v)}
        expand(
            {
                "id": "urn:ngsi-ld:Check:temporal",
                "type": "Check",
                **node,
                "@context": body["@context"],
            }
        )
    return body
