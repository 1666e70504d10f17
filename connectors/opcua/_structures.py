"""Fields of server-defined structures: the ``field:`` path of an address, and reading it.

A variable whose value is an ExtensionObject of a structure the server defines (a ``Motor``
with ``Status.Speed``) arrives as opaque bytes until its definition is known. A session with
``field:`` tags asks asyncua to build classes from the server's DataTypeDefinitions
(``load_structures``) right after connecting; asyncua then decodes such values into dataclasses
during the Publish decoding, and ``FieldReader`` walks the path to one scalar.

asyncua keeps the generated classes in process-wide tables keyed by the encoding's node id
(namespace index included). Two servers in one gateway process whose structures share encoding
node ids and namespace indexes but differ in layout would decode with whichever was loaded
first; and a definition changed on the server while the gateway runs is not reloaded (asyncua
keeps a class whose name and data type node id it already has). Both need a gateway restart.

The path grammar is pure (the mapping's validation imports no asyncua); the reader imports
asyncua when the source builds it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from bridge.types import Quality, TagValue

if TYPE_CHECKING:
    from asyncua import ua
    from asyncua.client.client import Client

__all__ = [
    "FIELD_PATH_HINT",
    "FieldReader",
    "FieldStep",
    "SampleParts",
    "field_readers",
    "format_path",
    "load_structures",
    "parse_field_path",
]

FieldStep = str | int
# (value, quality, reason, source time, server time), as convert.data_value_to_sample_parts.
SampleParts = tuple[TagValue, Quality, str, float | None, float | None]

# A name is anything but the separators and white space: servers name fields freely
# ("Motor-Speed"); asyncua's Python name for it is derived when the reader is built.
_STEP = re.compile(r"(?P<name>[^.\[\]\s]+)|\[(?P<index>\d+)\]")
FIELD_PATH_HINT = (
    'write field names separated by ".", array elements as [index]: Status.Speed, Axes[0].Pos'
)


def parse_field_path(text: str) -> tuple[FieldStep, ...]:
    """``"Status.Speed"`` -> ``("Status", "Speed")``; ``"Axes[0].Pos"`` -> ``("Axes", 0, "Pos")``.

    A leading ``[i]`` addresses an element of a variable that is an array. Raises ``ValueError``
    naming the position of the first mistake."""
    if not text:
        raise ValueError("field is empty")
    steps: list[FieldStep] = []
    pos = 0
    expect_name = False  # right after a "."
    while pos < len(text):
        if text[pos] == "." and steps and not expect_name:
            expect_name = True
            pos += 1
            continue
        match = _STEP.match(text, pos)
        if match is None or (expect_name and match["name"] is None):
            raise ValueError(f"field {text!r}: unexpected {_describe(text, pos)} at position {pos}")
        if match["name"] is not None:
            if steps and not expect_name:
                raise ValueError(f"field {text!r}: missing '.' before {match['name']!r}")
            steps.append(match["name"])
        else:
            steps.append(int(match["index"]))
        expect_name = False
        pos = match.end()
    if expect_name:
        raise ValueError(f"field {text!r}: ends with '.'")
    return tuple(steps)


def _describe(text: str, pos: int) -> str:
    char = text[pos]
    if char == "[":
        return "'[' (an index is digits in brackets, e.g. [0])"
    if char.isspace():
        return "white space"
    return repr(char)


def format_path(steps: tuple[FieldStep, ...]) -> str:
    out = ""
    for step in steps:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


async def load_structures(client: Client, timeout_s: float) -> str | None:
    """Build classes for the server's structures (asyncua registers them process-wide).

    Returns None on success, else why not; the caller's other items are not affected. It reads
    every DataTypeDefinition below Structure: 0.3-0.5 s against a small asyncua server on
    loopback, on a loaded 2-core box.
    """
    import asyncio

    try:
        async with asyncio.timeout(timeout_s):
            await client.load_data_type_definitions()
    except TimeoutError:
        return f"loading the server's data type definitions took over {timeout_s:g}s"
    except Exception as exc:  # a server's odd type must not take its session down
        return f"loading the server's data type definitions failed: {exc!r}"
    return None


class FieldReader:
    """Turns the DataValue of a structure variable into the sample parts of one field.

    ``not_loaded`` tells why the session could not load the server's definitions (None when it
    did), so an undecoded value says why it is undecoded.
    """

    __slots__ = (
        "_epoch",
        "_extension",
        "_localized",
        "_names",
        "_not_loaded",
        "_quality_of",
        "_union",
        "text",
    )

    def __init__(self, text: str, not_loaded: Callable[[], str | None]) -> None:
        from asyncua import ua
        from asyncua.common.structures104 import clean_name

        from bridge.connectors.opcua.convert import datetime_to_epoch, quality_of

        self.text = text
        steps = parse_field_path(text)
        # asyncua's dataclass attribute for a server field name ("class" -> "class_").
        self._names: tuple[tuple[FieldStep, FieldStep], ...] = tuple(
            (s, clean_name(s) if isinstance(s, str) else s) for s in steps
        )
        self._extension: type[ua.ExtensionObject] = ua.ExtensionObject
        self._localized: type[ua.LocalizedText] = ua.LocalizedText
        self._union: type[ua.UaUnion] = ua.UaUnion
        self._epoch = datetime_to_epoch
        self._quality_of = quality_of
        self._not_loaded = not_loaded

    def __call__(self, dv: ua.DataValue) -> SampleParts:
        source_time = self._epoch(dv.SourceTimestamp)
        server_time = self._epoch(dv.ServerTimestamp)
        status_quality, status_reason = self._quality_of(dv.StatusCode)
        if status_quality is Quality.BAD:
            return None, Quality.BAD, status_reason, source_time, server_time
        variant = dv.Value
        current: Any = variant.Value if variant is not None else None
        value, reason = self._walk(current)
        if reason:
            return None, Quality.BAD, reason, source_time, server_time
        return value, status_quality, status_reason, source_time, server_time

    def _walk(self, current: Any) -> tuple[TagValue, str]:
        """(value, "") or (None, why not). Every notification of the tag takes this path: the
        common case (a field of a decoded structure, a scalar at the end) is tested first, the
        reasons are worked out only when something is wrong."""
        extension = self._extension
        for i, (_, attribute) in enumerate(self._names):
            kind = type(current)
            if isinstance(attribute, str):
                fields = getattr(kind, "__dataclass_fields__", None)
                if fields is not None and attribute in fields and kind is not extension:
                    current = getattr(current, attribute)
                    continue
                if isinstance(current, self._union) and isinstance(
                    getattr(kind, attribute, None), property
                ):
                    current = getattr(current, attribute)  # None unless the chosen member
                    continue
            elif kind is list and attribute < len(current):
                current = current[attribute]
                continue
            return None, self._why_not(current, i)
        kind = type(current)
        if kind is float or kind is bool or kind is int or kind is str:
            return current, ""
        return self._leaf(current, self._where(len(self._names)))

    def _where(self, steps: int) -> str:
        return format_path(tuple(w for w, _ in self._names[:steps])) or "the value"

    def _why_not(self, current: Any, step: int) -> str:
        """Why step ``step`` of the path cannot be taken from ``current``."""
        where = self._where(step)
        written, attribute = self._names[step]
        if current is None:
            return f"{where} is null" if step else "null value"
        if isinstance(current, self._extension):
            return self._undecoded(current, where)
        if isinstance(attribute, int):
            if not isinstance(current, list | tuple):
                return f"{where} is {_kind(current)}, cannot take [{attribute}]"
            return f"BadIndexRangeNoData: {where} has {len(current)} elements, no [{attribute}]"
        names = self._field_names(current)
        if names is None:
            return f"{where} is {_kind(current)}, not a structure with field {written!r}"
        return (
            f"BadNoMatch: no field {written!r} in {where} "
            f"({type(current).__name__}: {', '.join(names) or 'no fields'})"
        )

    def _leaf(self, value: Any, where: str) -> tuple[TagValue, str]:
        if value is None:
            return (
                None,
                f"{where} is null (an optional field left out, or a union member not chosen)",
            )
        # bool before int (a subclass); IntEnum members (enumeration fields) become their number.
        if isinstance(value, bool):
            return value, ""
        if isinstance(value, int):
            return int(value), ""
        if isinstance(value, float):
            return value, ""
        if isinstance(value, str):
            return str(value), ""
        if isinstance(value, datetime):
            return self._epoch(value), ""
        if isinstance(value, self._localized):
            return value.Text, ""
        if isinstance(value, self._extension):
            return None, self._undecoded(value, where)
        if isinstance(value, list | tuple):
            return None, f"{where} is an array of {len(value)}: address one element, {where}[0]"
        names = self._field_names(value)
        if names is not None:
            return None, (
                f"{where} is a structure ({type(value).__name__}): address one of its fields "
                f"({', '.join(names)})"
            )
        return None, f"unsupported type {type(value).__name__} at {where}"

    def _field_names(self, value: Any) -> list[str] | None:
        """Field names of a decoded structure (None: not a structure)."""
        if isinstance(value, self._union):
            # A union's fields are properties; only the chosen one has a value.
            return [n for n, a in vars(type(value)).items() if isinstance(a, property)]
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            return None
        # asyncua's hidden "Encoding" bit mask of structures with optional fields has repr off.
        return [f.name for f in dataclasses.fields(value) if f.repr]

    def _undecoded(self, value: Any, where: str) -> str:
        why = self._not_loaded() or "its DataTypeDefinition is unknown or not supported"
        return f"structure {value.TypeId.to_string()} at {where} not decoded: {why}"


def _kind(value: Any) -> str:
    if isinstance(value, list | tuple):
        return f"an array of {len(value)}"
    return f"a {type(value).__name__}"


class _Session(Protocol):
    @property
    def handles(self) -> Sequence[int]: ...

    @property
    def structures_error(self) -> str | None: ...


def field_readers(
    fields: Sequence[str | None], sessions: Sequence[_Session]
) -> list[FieldReader | None]:
    """Per tag handle (``fields[h]``: its address's ``field``), its reader or None (a plain
    tag: the source's fast conversion). Each reader asks its own session why structures are
    undecoded."""
    readers: list[FieldReader | None] = [None] * len(fields)
    for session in sessions:
        for handle in session.handles:
            text = fields[handle]
            if text:
                readers[handle] = FieldReader(text, _asker(session))
    return readers


def _asker(session: _Session) -> Callable[[], str | None]:
    return lambda: session.structures_error
