"""OPC UA connector: a client source (``kind: opcua``) and the prediction server sink
(``kind: opcua-server``). Only this package (and the plant simulator) imports asyncua."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bridge.connectors.opcua.config import OpcUaAddress, OpcUaSourceSettings, SecuritySettings
from bridge.connectors.opcua.nodeid import is_valid_nsu
from bridge.connectors.opcua.server_config import OpcUaServerSettings, OpcUaServerUser
from bridge.plugins import (
    SettingsProblem,
    SinkKind,
    SourceKind,
    register_sink,
    register_source,
)
from bridge.types import Sink, SinkContext, Source, SourceTag, TargetWriter

if TYPE_CHECKING:
    from bridge.connectors.opcua.server import PredictionServer
    from bridge.connectors.opcua.source import OpcUaSource

__all__ = [
    "OpcUaAddress",
    "OpcUaServerSettings",
    "OpcUaServerUser",
    "OpcUaSource",
    "OpcUaSourceSettings",
    "PredictionServer",
    "SecuritySettings",
    "register",
]


# Registration and the config models import no asyncua (it is most of a ``bridge validate``'s
# imports, which needs only the models): the source and server modules load on first use.
_LAZY = {
    "OpcUaSource": "bridge.connectors.opcua.source",
    "PredictionServer": "bridge.connectors.opcua.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def _source(name: str, settings: Any, tags: Sequence[SourceTag]) -> Source:
    if settings.workers > 0:
        from bridge.connectors.opcua._worker import OpcUaWorkerSource

        return OpcUaWorkerSource(name, settings, tags)
    from bridge.connectors.opcua.source import OpcUaSource

    return OpcUaSource(name, settings, tags)


def _writer(name: str, settings: Any) -> TargetWriter:
    from bridge.connectors.opcua.write import OpcUaWriter

    return OpcUaWriter(name, settings)


def _server(name: str, settings: Any, context: SinkContext) -> Sink:
    from bridge.connectors.opcua.server import PredictionServer

    return PredictionServer(name, settings, context)


def _source_files(settings: Any) -> Sequence[SettingsProblem]:
    from bridge.connectors.opcua._files import check_source_files

    return check_source_files(settings)


def _server_files(settings: Any) -> Sequence[SettingsProblem]:
    from bridge.connectors.opcua._files import check_server_files

    return check_server_files(settings)


_ANY_NODE = OpcUaAddress.model_validate("nsu=urn:x;s=x")
_NODE_SET = {"node"}
_new = object.__new__
_set = object.__setattr__


def _quick_address(address: Any) -> OpcUaAddress | None:
    # The shorthand ``address: "nsu=...;s=..."`` of nearly every tag: the instance validation
    # would build (same fields, fields set = {node}; tests/unit/opcua compares them), made the
    # way ``model_construct`` makes one, at a quarter of the cost of ``model_copy``.
    if type(address) is not str or not is_valid_nsu(address):
        return None
    made = _new(OpcUaAddress)
    _set(made, "__dict__", {**_ANY_NODE.__dict__, "node": address})
    # One set for all: the model is frozen and pydantic copies the set in model_copy (20 MB
    # at 100,000 tags, one set each).
    _set(made, "__pydantic_fields_set__", _NODE_SET)
    _set(made, "__pydantic_extra__", None)
    _set(made, "__pydantic_private__", None)
    return made


def register() -> None:
    register_source(
        SourceKind(
            kind="opcua",
            settings_model=OpcUaSourceSettings,
            address_model=OpcUaAddress,
            factory=_source,
            writer=_writer,
            quick_address=_quick_address,
            description="OPC UA client: one subscription per server, nodes addressed by nsu= URI.",
            check=_source_files,
        )
    )
    register_sink(
        SinkKind(
            kind="opcua-server",
            settings_model=OpcUaServerSettings,
            factory=_server,
            description="The gateway's own OPC UA server exposing predictions read-only to HMIs.",
            check=_server_files,
        )
    )
