"""Settings of an MQTT broker connection, of the MQTT source and of one tag's MQTT address.

Zero trust by default: a broker connection is TLS 1.2+ with the broker's certificate verified
against ``tls.ca_file`` (host name checked) and, when the broker asks for it, the gateway's
own certificate (mutual TLS). Plain MQTT needs ``plaintext: true``; switching verification off
needs ``tls.insecure_skip_verify: true``. Both are logged as a warning at every connect.

The ``description=`` of each field is the user documentation (docs, JSON Schema).
"""

from __future__ import annotations

import ssl
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.client_tls import ClientTls
from bridge.destination import Capabilities
from bridge.eventrules import EventRule
from bridge.isa95 import ISA95_LEVELS, Isa95Levels
from bridge.retry import ReconnectSettings

__all__ = [
    "BrokerSettings",
    "MqttAddress",
    "MqttSourceSettings",
    "MqttTls",
    "OutputSettings",
    "PayloadFormat",
    "UnsSettings",
    "UnsTagSettings",
    "check_filter",
    "check_topic",
]

PayloadFormat = Literal["json", "number", "sparkplug"]


def check_topic(topic: str) -> str:
    """A topic a message is published on: no wildcards, not empty."""
    if not topic:
        raise ValueError("the topic is empty")
    if "+" in topic or "#" in topic:
        raise ValueError(
            f"topic {topic!r} has a wildcard (+ or #): a tag names the exact topic its device "
            "publishes on (templates fill {asset} and vars); put wildcards in the source's "
            "`subscribe:`"
        )
    if "\x00" in topic:
        raise ValueError("the topic holds a NUL character")
    return topic


def check_filter(topic_filter: str) -> str:
    """A subscription filter: ``+`` fills one whole level, ``#`` the rest (last level only)."""
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"filter {topic_filter!r}: # must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"filter {topic_filter!r}: + must be a whole level, e.g. plant/+/x")
    return topic_filter


class MqttTls(ClientTls):
    """TLS of a broker connection (``ca_file``, ``client_certificate``, ``client_key``)."""

    insecure_skip_verify: bool = Field(
        False,
        description="Accept any broker certificate and host name. Only for a first test on a "
        "bench: anyone on the path can then read and change every message. Logged as a "
        "warning at every connect.",
    )

    def broker_context(self) -> ssl.SSLContext:
        """The client context of a broker connection; verification is off only when
        ``insecure_skip_verify`` says so."""
        context = self.ssl_context()
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class BrokerSettings(BaseModel):
    """Where the broker is and how the gateway proves who it is."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(description="Host name or IP address of the broker (as in its certificate).")
    port: int = Field(8883, ge=1, le=65535, description="TCP port (8883: MQTT over TLS).")
    tls: MqttTls | None = Field(
        None,
        description="TLS of the connection: `ca_file` (the CA that signed the broker's "
        "certificate), `client_certificate` and `client_key` (the gateway's identity, mutual "
        "TLS). Required unless `plaintext: true`.",
    )
    plaintext: bool = Field(
        False,
        description="Connect without TLS (no encryption, no broker identity). Only for a "
        "broker on the same host; logged as a warning at every connect.",
    )
    client_id: str | None = Field(
        None,
        max_length=128,
        description="MQTT client identifier; the broker keeps the persistent session under it, "
        "so it must be unique per gateway and stable across restarts. Default: "
        "`bridge-<source or output name>`.",
    )
    username: str | None = Field(
        None,
        description="MQTT user name, for brokers that check passwords (with "
        "`use_identity_as_username` the certificate is the identity: leave it out).",
    )
    password: str | None = Field(None, description="MQTT password; use ${ENV}, never the file.")
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="Keep-alive: a dead link is noticed within 1.5x this."
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest wait for the TCP/TLS handshake and CONNACK."
    )
    session_expiry_s: int = Field(
        3600,
        ge=0,
        le=4294967295,
        description="How long the broker keeps the session (subscriptions, queued QoS 1 "
        "messages) while the gateway is away. 0: no persistent session.",
    )
    reconnect: ReconnectSettings = Field(
        default_factory=ReconnectSettings,
        description="How the runtime reconnects after a lost or refused connection.",
    )

    @model_validator(mode="after")
    def _secured(self) -> Self:
        if self.tls is None and not self.plaintext:
            raise ValueError(
                "no `tls:` block: give tls.ca_file (and client_certificate/client_key for "
                "mutual TLS), or `plaintext: true` for a broker on the same host"
            )
        if self.tls is not None and self.plaintext:
            raise ValueError("`plaintext: true` and a `tls:` block contradict: keep one")
        if (self.username is None) != (self.password is None) and self.password is not None:
            raise ValueError("`password` without `username`: give both or neither")
        return self

    def identifier(self, name: str) -> str:
        return self.client_id or f"bridge-{name}"


class MqttSourceSettings(BrokerSettings):
    """A ``sources.<name>`` block with ``kind: mqtt``: devices publish, the gateway subscribes."""

    subscribe: list[str] = Field(
        default_factory=list,
        description="Subscription filters (+ and # wildcards), e.g. plant/+/+/telemetry. "
        "Default: one subscription per topic the tags name. A message on a topic no tag names "
        "is counted (`unbound`) and logged once per topic per minute.",
    )
    qos: Literal[0, 1, 2] = Field(
        1,
        description="QoS of the subscriptions: 1 (at least once) keeps messages queued on the "
        "broker while the gateway is away.",
    )
    max_queued: int = Field(
        10000,
        ge=10,
        le=1_000_000,
        description="Messages held in the gateway between the socket and normalize; a message "
        "arriving beyond it is dropped and counted (`dropped`), so memory stays bounded.",
    )

    @field_validator("subscribe")
    @classmethod
    def _filters(cls, value: list[str]) -> list[str]:
        for topic_filter in value:
            check_filter(topic_filter)
        return value


class MqttAddress(BaseModel):
    """Where one tag's value is in the messages of one topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(
        description="Exact topic the device publishes on, e.g. plant/{line}/{asset}/telemetry "
        "in a template ({asset} is the asset's name, other {names} its vars)."
    )
    format: PayloadFormat = Field(
        "json",
        description="json: a JSON document, the value at `pointer`. number: the payload is "
        "the number itself (text). sparkplug: a Sparkplug B payload, the metric `metric`.",
    )
    pointer: str = Field(
        "",
        description="JSON pointer (RFC 6901) of the value in a json payload, e.g. /temp or "
        "/motor/speed; empty: the whole document.",
    )
    metric: str | None = Field(None, description="Sparkplug B metric name (format sparkplug).")
    time_pointer: str | None = Field(
        None,
        description="JSON pointer of the measurement time (epoch seconds or milliseconds, or "
        "ISO 8601). Default: the payload's own time for Sparkplug, else the arrival time.",
    )
    quality_pointer: str | None = Field(
        None,
        description="JSON pointer of a quality (Good/Uncertain/Bad, true/false, or an OPC UA "
        "status code: 0 is Good). Default: Good.",
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return check_topic(value)

    @field_validator("pointer", "time_pointer", "quality_pointer")
    @classmethod
    def _pointer(cls, value: str | None) -> str | None:
        if value and not value.startswith("/"):
            raise ValueError(f"JSON pointer {value!r} must start with / (e.g. /{value})")
        return value

    @model_validator(mode="after")
    def _format_keys(self) -> Self:
        if self.format == "sparkplug":
            if not self.metric:
                raise ValueError("format sparkplug needs `metric:` (the metric's name)")
            parts = self.topic.split("/")
            kind = parts[2] if len(parts) > 2 else ""
            if parts[0] != "spBv1.0" or (kind, len(parts)) not in (("NDATA", 4), ("DDATA", 5)):
                raise ValueError(
                    f"topic {self.topic!r}: a Sparkplug metric is read from its DATA topic, "
                    "spBv1.0/<group>/DDATA/<edge node>/<device> (or NDATA/<edge node>)"
                )
        if self.format != "sparkplug" and self.metric is not None:
            raise ValueError("`metric:` is for format sparkplug; use `pointer:` for json")
        if self.format != "json" and (self.pointer or self.time_pointer or self.quality_pointer):
            raise ValueError("pointers are for format json")
        return self


def _every() -> list[EventRule]:
    return ["every"]


class OutputSettings(BrokerSettings):
    """What every MQTT output has besides its broker: which predictions it publishes, how
    long a PUBACK may take, and the spacing of the outbox relay's retries."""

    publish_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest wait for a PUBACK before the event is retried."
    )
    initial_backoff_s: float = Field(0.5, gt=0, description="First retry delay of an event.")
    max_backoff_s: float = Field(30.0, gt=0, description="Cap of the retry backoff.")
    events: list[EventRule] = Field(
        default_factory=_every,
        min_length=1,
        description="Which predictions are published (`every`, `label_change`, `alerts`, "
        "`threshold: {...}`, as for the MES).",
    )

    def capabilities(self, batch_size: int) -> Capabilities:
        """How the relay feeds the output: one batch at a time (events of one asset in order),
        ``batch_size`` events of different assets per batch."""
        return Capabilities(
            concurrency=1,
            batch_size=batch_size,
            backoff=(self.initial_backoff_s, self.max_backoff_s),
            rules=tuple(self.events),
        )


class UnsTagSettings(BaseModel):
    """Tag values in the UNS: each tag's latest normalized state, live (not through the
    outbox: while the broker is away only the latest value of each tag is kept and sent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(
        1.0,
        ge=0.05,
        le=3600,
        description="How often changed tags are published: at most one message per tag per "
        "interval (the rate limit).",
    )
    deadband: float = Field(
        0.0,
        ge=0,
        description="A numeric tag is published again only when it moved by at least this "
        "(in its unit) since it was last published, as a tag's own `deadband`, or its quality "
        "changed. 0: every change.",
    )
    topic: str = Field(
        "{enterprise}/{site}/{area}/{line}/{asset}/tags/{tag}",
        description="Topic of a tag (retained). Placeholders: {enterprise} {site} {area} "
        "{line} {asset} {tag}.",
    )
    assets: list[str] = Field(
        default_factory=list,
        description="Only the tags of these assets; default every asset's tags.",
    )

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        return _check_template(value, "tag")


class UnsSettings(OutputSettings, Isa95Levels):
    """An ``outputs.<name>`` block with ``kind: uns``: predictions and model events as JSON
    in a Unified Namespace (ISA-95 topic tree), through the gateway's durable outbox."""

    topic: str = Field(
        "{enterprise}/{site}/{area}/{line}/{asset}/bridge/{model}",
        description="Topic of an asset's model state; `/prediction` (retained: the latest "
        "state) and `/event` (label changes, alerts, drift) are appended. Placeholders: "
        "{enterprise} {site} {area} {line} {asset} {model}.",
    )
    retain: bool = Field(
        True, description="Retain each asset's latest prediction (what a UNS client reads first)."
    )
    qos: Literal[1, 2] = Field(1, description="QoS of the publishes (1: at least once).")
    message_expiry_s: int | None = Field(
        None,
        ge=1,
        le=4294967295,
        description="MQTT 5 message expiry: the broker drops a message not delivered within "
        "this; an event older than this when the broker is reachable again is not sent "
        "(counted `expired`). Default: no expiry.",
    )
    tags: UnsTagSettings | None = Field(
        None,
        description="Also publish tag values (normalized, retained), rate-limited and with a "
        "deadband: `{interval_s: 1, deadband: 0, assets: [...]}`. Default: predictions only.",
    )

    @field_validator("topic")
    @classmethod
    def _topic_template(cls, value: str) -> str:
        return _check_template(value, "model")

    def topic_of(self, asset: str, model: str) -> str:
        return self.topic.format(**self.levels_of(asset), asset=asset, model=model)

    def tag_topic(self, asset: str, tag: str) -> str:
        assert self.tags is not None
        return self.tags.topic.format(**self.levels_of(asset), asset=asset, tag=tag)


def _check_template(value: str, last: str) -> str:
    """A topic template whose placeholders are the ISA-95 levels, {asset} and {``last``}."""
    names = (*ISA95_LEVELS, "asset", last)
    try:
        check_topic(value.format(**dict.fromkeys(names, "x")))
    except (KeyError, IndexError) as exc:
        placeholders = " ".join(f"{{{name}}}" for name in names)
        raise ValueError(f"unknown placeholder {exc} in the topic: use {placeholders}") from None
    return value
