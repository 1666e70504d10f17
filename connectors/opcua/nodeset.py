"""The information model of the gateway's OPC UA server as a NodeSet2 XML file.

``export_nodeset`` starts the ``opcua-server`` output of a mapping as ``bridge run`` would (same
slots, same feedback methods, alarms and history flags), on a loopback port the system picks,
with no login possible, and exports every node of the server's namespace through asyncua's
``XmlExporter``: ``PredictionType`` with its declarations, and the instances with what other
parts of the server add to them. Nothing is hand-listed, so a node added anywhere shows up in
the export (``bridge opcua nodeset``; docs/opcua-information-model.md).

What a running server's values say is left out, so the file changes only when the model does:
values of data variables (ModelName, Quality, ... are live data), and values of properties
whose type makes them differ per start or per machine (times, event ids, time zones).
Property values that describe the model stay: EURange, EngineeringUnits, method arguments.
"""

from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as Et
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from asyncua.common.ua_utils import get_nodes_of_namespace
from asyncua.common.xmlexporter import XmlExporter, indent
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds

from bridge.connectors.opcua.server_config import OpcUaServerSettings
from bridge.errors import ConnectorError
from bridge.types import (
    AlarmAnswer,
    AlarmEvent,
    AlarmRecord,
    Feedback,
    HistoryBucket,
    HistoryKey,
    HistorySeries,
    HistoryValue,
    Prediction,
    PredictionSlot,
    SinkContext,
)

__all__ = [
    "MODEL_PUBLISHED",
    "MODEL_VERSION",
    "canonical",
    "export_nodeset",
    "nodeset_xml",
]

# The <Model> of the export. Bump both when PredictionType or the layout of the instances
# changes (a consumer of the NodeSet compares them, not the content).
MODEL_VERSION = "1.0.0"
MODEL_PUBLISHED = "2026-12-04T00:00:00Z"
# The oldest namespace 0 the model needs: AnalogUnitType came with 1.04.
_UA = ("http://opcfoundation.org/UA/", "1.04", "2019-05-01T00:00:00Z")

# Per start or per machine: times, event ids, the time zone (the exporter names namespace 0
# data types by their alias).
_VARYING = {"DateTime", "UtcTime", "ByteString", "TimeZoneDataType"}
_PROPERTY_TYPE = f"i={ObjectIds.PropertyType}"


class _EmptyStore:
    """What a gateway's store answers when it holds nothing: the feedback, history and alarm
    services of the export's server. No session can open on that server, so only the start-up
    questions (the alarms' last state) are ever asked."""

    async def record(self, feedback: Feedback) -> None:
        raise ConnectorError("the NodeSet export's server stores no feedback")

    async def find(self, prediction_id: str) -> Prediction | None:
        return None

    async def values(
        self,
        series: HistorySeries,
        low: HistoryKey | None,
        high: HistoryKey | None,
        descending: bool,
        limit: int,
    ) -> Sequence[HistoryValue]:
        return ()

    async def buckets(
        self,
        series: HistorySeries,
        origin_us: int,
        stop_us: int,
        interval_us: int,
        first: int,
        count: int,
    ) -> Sequence[HistoryBucket]:
        return ()

    async def span(self, series: HistorySeries) -> tuple[float, float] | None:
        return None

    async def acknowledge(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]:
        return "missing", None

    async def confirm(
        self, prediction_id: str, by: str, comment: str
    ) -> tuple[AlarmAnswer, AlarmRecord | None]:
        return "missing", None

    async def of_predictions(self, prediction_ids: Sequence[str]) -> Sequence[AlarmRecord]:
        return ()

    async def raised_after(self, alert_id: int, limit: int) -> Sequence[AlarmRecord]:
        return ()

    async def last_id(self) -> int:
        return 0

    async def newest(
        self, faults: Mapping[str, tuple[str, ...]], assets: Sequence[str]
    ) -> Sequence[AlarmRecord]:
        return ()

    async def latest_labels(
        self, pairs: Sequence[tuple[str, str]]
    ) -> Mapping[tuple[str, str], str]:
        return {}

    async def events(
        self,
        faults: Mapping[str, tuple[str, ...]],
        assets: Sequence[str] | None,
        since: float | None,
        until: float | None,
        limit: int,
        after: bytes | None = None,
        newest_first: bool = False,
    ) -> Sequence[AlarmEvent]:
        return ()


def _closed(settings: OpcUaServerSettings) -> OpcUaServerSettings:
    """``settings`` on a loopback port the system picks, with no way to log in: the export
    reads the address space in process, and the mapping's certificates and secrets are not
    needed (they do not change the address space)."""
    return settings.model_copy(
        update={
            "endpoint": "opc.tcp://127.0.0.1:0",
            "security_policies": ["None"],
            "certificate": None,
            "private_key": None,
            "allow_anonymous": False,
            "users": [],
            "user_certificates": [],
        }
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The export's server warns that nobody can log in (on purpose here) and asyncua's
    exporter that exported values may be incomplete (checked: the file re-imports)."""
    loggers = [logging.getLogger(n) for n in ("bridge.connectors.opcua.server", "asyncua")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


async def export_nodeset(
    settings: OpcUaServerSettings, slots: Sequence[PredictionSlot], gateway_id: str = "nodeset"
) -> str:
    """The NodeSet2 XML of the server ``settings`` and ``slots`` make (see the module doc)."""
    from bridge.connectors.opcua.server import PredictionServer

    empty = _EmptyStore()
    context = SinkContext(gateway_id, tuple(slots), feedback=empty, history=empty, alarms=empty)
    with _quiet():
        sink = PredictionServer("nodeset", _closed(settings), context)
        await sink.start()
        try:
            server = sink.address_space
            assert server is not None  # started
            return await nodeset_xml(server, settings.namespace)
        finally:
            await sink.close()


async def nodeset_xml(server: Server, namespace: str) -> str:
    """Every node of ``namespace`` on ``server``, as NodeSet2 XML (values as the module doc
    says)."""
    index = (await server.get_namespace_array()).index(namespace)
    nodes = await get_nodes_of_namespace(server, [index])
    # asyncua's exporter is untyped.
    exporter: Any = XmlExporter(server, export_values=True)
    await exporter.build_etree(nodes)
    root: Et.Element = exporter.etree.getroot()
    # asyncua writes the NodeSet namespace as a plain xmlns attribute: tags have no prefix.
    for variable in root.iter("UAVariable"):
        value = variable.find("Value")
        if value is not None and not _describes_model(variable):
            variable.remove(value)
    _add_model(root, namespace)
    cast(Any, indent)(root)
    text = Et.tostring(root, encoding="unicode")
    return f"<?xml version='1.0' encoding='utf-8'?>\n{text}\n"


def _describes_model(variable: Et.Element) -> bool:
    refs = variable.find("References")
    types = [
        r.text
        for r in (refs if refs is not None else [])
        if r.get("ReferenceType") == "HasTypeDefinition"
    ]
    return types == [_PROPERTY_TYPE] and variable.get("DataType") not in _VARYING


def _add_model(root: Et.Element, namespace: str) -> None:
    """``<Models>`` after ``<NamespaceUris>``, as NodeSet2 orders them."""
    models = Et.Element("Models")
    model = Et.SubElement(
        models,
        "Model",
        {"ModelUri": namespace, "Version": MODEL_VERSION, "PublicationDate": MODEL_PUBLISHED},
    )
    uri, version, published = _UA
    Et.SubElement(
        model,
        "RequiredModel",
        {"ModelUri": uri, "Version": version, "PublicationDate": published},
    )
    position = 1 if root.find("NamespaceUris") is not None else 0
    root.insert(position, models)


def canonical(xml: str) -> str:
    """``xml`` in C14N form without the whitespace between elements: two exports of the same
    address space compare equal whatever their indentation."""
    return Et.canonicalize(xml, strip_text=True)
