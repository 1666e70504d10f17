"""Lakehouse destination: Delta Lake tables (telemetry, predictions, context) through delta-rs,
no JVM. Staged in a local spool, committed exactly once (Delta application transactions).

deltalake and pyarrow are the optional extra ``lakehouse``: registration and the settings
import neither (``bridge validate`` needs only the models); building the destination does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.destination import Destination, DestinationContext
from bridge.errors import ConnectorError
from bridge.plugins import DestinationKind, register_destination

from .config import LakehouseSettings

if TYPE_CHECKING:
    from .destination import LakehouseDestination

__all__ = ["KIND", "LakehouseDestination", "LakehouseSettings", "register"]

KIND = "lakehouse"


def __getattr__(name: str) -> Any:
    if name == "LakehouseDestination":
        from .destination import LakehouseDestination

        return LakehouseDestination
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _destination(name: str, settings: Any, context: DestinationContext) -> Destination:
    try:
        from .destination import LakehouseDestination
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in ("deltalake", "pyarrow"):
            raise
        raise ConnectorError(
            f"outputs.{name}: kind {KIND!r} needs the package {missing!r}: "
            "pip install bridge-gateway[lakehouse]"
        ) from exc
    return LakehouseDestination(name, settings, context)


def register() -> None:
    register_destination(
        DestinationKind(
            kind=KIND,
            settings_model=LakehouseSettings,
            factory=_destination,
            description="Predictions (durably through the outbox) and tag values (raw or "
            "downsampled) into Delta Lake tables (telemetry, predictions, context) on a local "
            "path or S3/ADLS/GCS, exactly once, through delta-rs.",
        )
    )
