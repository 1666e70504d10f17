"""JSON Schema of the mapping file, for editors (YAML language servers) and docs.

The core models leave connector blocks open; here they are filled in from the registry, so the
schema knows every installed source kind, tag address and output kind.

Two places where the schema says more than the pydantic models would on their own:

- A ``sources:`` or ``outputs:`` entry is checked against its ``kind``: the kind must be one of
  the registered ones (an editor flags ``kind: modbuss`` on that key, listing the kinds), and
  the entry's settings are those of that kind (``if kind == ... then <its settings>``). A plain
  ``oneOf`` over the kinds would reject a typo too, but editors then report "matches none of
  the schemas" instead of naming the key.
- A number or boolean may be written as a ``${NAME}`` placeholder: the loader substitutes the
  environment first and pydantic reads the text as the number (``port: "${API_PORT:-8000}"``),
  so the schema must not flag what ``bridge validate`` accepts. So may a string that must
  match a pattern (``id: ${BRIDGE_GATEWAY_ID}``: each gateway of a fleet its own id).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from bridge import plugins
from bridge.config.spec import NAME_PATTERN, MappingFile

__all__ = ["mapping_schema"]

_REF = "#/$defs/{model}"
# The loader's ``${NAME}`` / ``${NAME:-default}`` syntax (bridge.config.yamlsource), anywhere in
# the text: JSON Schema patterns are searches, not full matches.
_PLACEHOLDER: dict[str, Any] = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}",
    "description": "Replaced by an environment variable when the mapping is loaded.",
}


class _MappingSchema(GenerateJsonSchema):
    """Numbers and booleans may also be a ``${NAME}`` placeholder (see the module docstring)."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return _or_placeholder(super().int_schema(schema))

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return _or_placeholder(super().float_schema(schema))

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return _or_placeholder(super().bool_schema(schema))

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        out = super().str_schema(schema)
        return _or_placeholder(out) if "pattern" in out else out


def _or_placeholder(schema: JsonSchemaValue) -> JsonSchemaValue:
    # Inline, not a $ref: pydantic resolves every $ref against the models it generates.
    return {"anyOf": [schema, dict(_PLACEHOLDER)]}


def _with_kind(kind: str, model: type[BaseModel], suffix: str) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in kind.replace("_", "-").split("-")) + suffix
    fields: Any = {"kind": (Literal[kind], ...)}
    return create_model(name, __base__=model, **fields)


def _by_kind(refs: dict[str, JsonSchemaValue]) -> dict[str, Any]:
    """An entry whose ``kind`` is one of ``refs`` and whose settings are that kind's."""
    return {
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": sorted(refs)}},
        "allOf": [
            {"if": {"properties": {"kind": {"const": kind}}}, "then": ref}
            for kind, ref in sorted(refs.items())
        ],
    }


def mapping_schema() -> dict[str, Any]:
    sources = {
        k: _with_kind(k, v.settings_model, "Source")
        for k, v in sorted(plugins.source_kinds().items())
    }
    outputs = {
        k: _with_kind(k, v.settings_model, "Output")
        for k, v in sorted(plugins.output_kinds().items())
    }
    addresses = {k: v.address_model for k, v in sorted(plugins.source_kinds().items())}
    models = [*sources.values(), *outputs.values(), *addresses.values()]
    refs, extra = models_json_schema(
        [(m, "validation") for m in models], ref_template=_REF, schema_generator=_MappingSchema
    )

    schema = MappingFile.model_json_schema(ref_template=_REF, schema_generator=_MappingSchema)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    defs.update(extra.get("$defs", {}))

    for section, group in (("sources", sources), ("outputs", outputs)):
        entry = _by_kind({k: refs[(m, "validation")] for k, m in group.items()})
        block = schema["properties"][section]
        # Entry names the loader refuses are refused here too.
        block["patternProperties"] = {NAME_PATTERN: entry}
        block["additionalProperties"] = False
    address = defs["TagConfig"]["properties"]["address"]
    address["anyOf"] = [{"type": "string"}, *[refs[(m, "validation")] for m in addresses.values()]]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "bridge mapping"
    return schema
