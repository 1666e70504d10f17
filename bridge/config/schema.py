"""JSON Schema of the mapping file, for editors (YAML language servers) and docs.

The core models leave connector blocks open; here they are filled in from the registry, so the
schema knows every installed source kind, tag address and output kind.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, create_model
from pydantic.json_schema import models_json_schema

from bridge import registry
from bridge.config.models import MappingFile

__all__ = ["mapping_schema"]


def _with_kind(kind: str, model: type[BaseModel], suffix: str) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in kind.replace("_", "-").split("-")) + suffix
    fields: Any = {"kind": (Literal[kind], ...)}
    return create_model(name, __base__=model, **fields)


def mapping_schema() -> dict[str, Any]:
    sources = {
        k: _with_kind(k, v.settings_model, "Source")
        for k, v in sorted(registry.source_kinds().items())
    }
    outputs = {
        k: _with_kind(k, v.settings_model, "Output")
        for k, v in sorted(registry.sink_kinds().items())
    }
    addresses = {k: v.address_model for k, v in sorted(registry.source_kinds().items())}
    models = [*sources.values(), *outputs.values(), *addresses.values()]
    refs, extra = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/$defs/{model}"
    )

    schema = MappingFile.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs.update(extra.get("$defs", {}))

    def one_of(group: dict[str, type[BaseModel]]) -> dict[str, Any]:
        return {"oneOf": [refs[(m, "validation")] for m in group.values()]}

    schema["properties"]["sources"]["additionalProperties"] = one_of(sources)
    schema["properties"]["outputs"]["additionalProperties"] = one_of(outputs)
    address = defs["TagConfig"]["properties"]["address"]
    address["anyOf"] = [{"type": "string"}, *[refs[(m, "validation")] for m in addresses.values()]]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bridge mapping"
    return schema
