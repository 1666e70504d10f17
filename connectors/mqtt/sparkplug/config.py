"""Settings of the Sparkplug B edge node output (``outputs.<name>`` with ``kind: sparkplug``).

The ``description=`` of each field is the user documentation (docs, JSON Schema).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bridge.connectors.mqtt.config import OutputSettings

__all__ = ["SparkplugSettings"]


class SparkplugSettings(OutputSettings):
    """An ``outputs.<name>`` block with ``kind: sparkplug``: the gateway is one Sparkplug B 3.0
    edge node, each asset one of its devices, each model's prediction a set of device metrics;
    fed through the gateway's durable outbox. ``session_expiry_s`` does not apply: Sparkplug
    asks for a clean session that ends with the connection (expiry 0)."""

    group_id: str = Field(description="Sparkplug group id of the edge node, e.g. plant-dallas.")
    edge_node_id: str = Field(
        description="Sparkplug edge node id of this gateway (unique within the group)."
    )
    primary_host_id: str | None = Field(
        None,
        description="Host id of the primary host application (its STATE topic "
        "spBv1.0/STATE/<id>). Set: births and data wait until that host says it is online "
        "(the outbox holds the predictions meanwhile, counted `held`), and when it goes "
        "offline the edge node ends its session (NDEATH) and holds again. Default: no primary "
        "host, data flows as soon as the broker is reachable.",
    )
    primary_host_wait_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="After a connect, how long to wait for the primary host's retained STATE "
        "before the host counts as offline (its data is held until the STATE says online).",
    )
    bdseq_path: str = Field(
        "sparkplug-bdseq",
        min_length=1,
        description="File keeping the birth/death sequence number (bdSeq) across restarts, so "
        "a restarted gateway never reuses the bdSeq of its previous session (a host would pair "
        "the old NDEATH with the new NBIRTH). A relative path is taken from the gateway's "
        "working directory; two sparkplug outputs need two files.",
    )
    qos: Literal[0, 1] = Field(
        1,
        description="QoS of births, DDATA and the NDEATH sent on a clean stop (the will's "
        "NDEATH is always QoS 1). 1: an event leaves the outbox only once the broker has "
        "acknowledged it (PUBACK), so a broker outage loses nothing; 0: what Sparkplug 3.0 "
        "asks for, but an event written to a dying connection is lost.",
    )
    max_backoff_s: float = Field(
        5.0,
        gt=0,
        description="Cap of the retry backoff; it also bounds how late held data follows the "
        "primary host coming online.",
    )

    @field_validator("group_id", "edge_node_id", "primary_host_id")
    @classmethod
    def _sparkplug_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Here, not at the top: the codec loads protobuf, which `bridge validate` need not.
        from bridge.connectors.mqtt.sparkplug.codec import SparkplugError, validate_id

        try:
            return validate_id(value)
        except SparkplugError as exc:
            raise ValueError(f"{exc}: Sparkplug ids cannot hold / + # or be empty") from None
