"""The mapping's facts about the plant as destinations are told them
(``bridge.destination.DestinationContext``): each asset's template and description, each
tag's unit, scale, offset, clamp, source and address (as text), and the mapping's revision."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from bridge.config.resolved import Mapping
from bridge.types import AssetInfo, TagInfo

__all__ = ["address_text", "asset_infos", "tag_infos"]

# A string YAML reads back as the same string in a flow mapping, written without quotes.
_PLAIN = re.compile(r"[A-Za-z0-9_./=;+$~-][A-Za-z0-9_./=;:+$~ -]*")
_KEYWORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~"})


def asset_infos(mapping: Mapping) -> tuple[AssetInfo, ...]:
    """Every asset of the mapping in its order, with its template and description."""
    infos = mapping.asset_infos
    return tuple(infos.get(asset) or AssetInfo(asset) for asset in mapping.assets)


def tag_infos(mapping: Mapping) -> tuple[TagInfo, ...]:
    """Every tag of the mapping in its order (positional: a mapping may hold 100,000 tags)."""
    return tuple(
        TagInfo(
            t.id,
            t.asset,
            t.name,
            t.unit,
            t.scale,
            t.offset,
            t.clamp,
            t.source,
            address_text(t.address),
            t.description,
            t.source_unit,
        )
        for t in mapping.tags.values()
    )


def address_text(address: Any) -> str:
    """A tag's address as the mapping wrote it: the one key it set when that is text (an OPC
    UA node id: ``nsu=urn:plant;s=Pump01.Speed``), else the keys it set in flow style, in the
    address model's order (``{table: holding, address: 0, type: float32}``)."""
    if isinstance(address, BaseModel):
        given = address.model_fields_set
        if len(given) == 1:
            value = getattr(address, next(iter(given)))
            if isinstance(value, str):
                return value
    return _flow(address)


def _scalar(text: str) -> bool:
    """Would YAML read ``text`` unquoted as something other than a string?"""
    if text.lower() in _KEYWORDS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _flow(value: Any) -> str:
    if isinstance(value, BaseModel):
        given = value.model_fields_set
        pairs = [
            (name, getattr(value, name))
            for name in type(value).model_fields
            if name in given and getattr(value, name) is not None
        ]
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in pairs) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_flow(str(k))}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        plain = _PLAIN.fullmatch(value) and ": " not in value and not value.endswith((" ", ":"))
        plain = plain and not _scalar(value)
        return value if plain else json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    return str(value)
