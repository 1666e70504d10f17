"""Node ids written as ``nsu=<uri>;s=...``: parsing and checking without asyncua, so that
validating a mapping does not import the protocol library (``bridge validate`` at 100,000
tags, bench/README.md)."""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass

__all__ = ["NodeRef", "identifier_value", "parse_nsu"]

_NSU = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<kind>[isgb])=(?P<ident>.+)$", re.DOTALL)
_NS_INDEX = re.compile(r"^ns=\d+;")


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node id split into its namespace URI and identifier (``s=Pump01.Speed``)."""

    uri: str
    kind: str
    identifier: str

    @property
    def identifier_part(self) -> str:
        return f"{self.kind}={self.identifier}"


def parse_nsu(text: str) -> NodeRef:
    """Split ``nsu=<uri>;s=...``; raise ``ValueError`` with a fix for anything else."""
    if _NS_INDEX.match(text):
        raise ValueError(
            f"{text!r} uses a namespace index; use the namespace URI instead "
            "(nsu=<uri>;s=...), because namespace indexes change across server restarts"
        )
    match = _NSU.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a node id of the form nsu=<namespace uri>;<i=|s=|g=|b=><identifier>"
        )
    ref = NodeRef(match["uri"], match["kind"], match["ident"])
    identifier_value(ref)  # reject e.g. i=abc at config time, not at connect time
    return ref


def identifier_value(ref: NodeRef) -> int | str | uuid.UUID | bytes:
    try:
        if ref.kind == "i":
            number = int(ref.identifier)
            if not 0 <= number <= 0xFFFF_FFFF:
                raise ValueError("numeric identifier out of range")
            return number
        if ref.kind == "g":
            return uuid.UUID(ref.identifier)
        if ref.kind == "b":
            return base64.b64decode(ref.identifier, validate=True)
    except ValueError as exc:
        raise ValueError(f"bad {ref.kind}= identifier {ref.identifier!r}: {exc}") from exc
    return ref.identifier


def is_valid_nsu(text: str) -> bool:
    """Whether ``parse_nsu`` would accept ``text``, answered without building a ``NodeRef``
    for string identifiers (the common case, checked once per tag of a mapping)."""
    match = _NSU.match(text)
    if match is None or _NS_INDEX.match(text):
        return False
    if match["kind"] == "s":
        return True
    try:
        parse_nsu(text)
    except ValueError:
        return False
    return True
