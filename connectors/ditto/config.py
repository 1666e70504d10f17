"""Settings of the Eclipse Ditto destination (an ``outputs.<name>`` block with ``kind: ditto``).

One thing per asset (``<namespace>:<asset>``), written through one of two transports: Ditto
Protocol messages on the MQTT broker Ditto's connectivity service reads (``mqtt:``), or
Ditto's HTTP API (``http:``). The ``description=`` of each field is the user documentation.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.client_tls import ClientTls, require_https
from bridge.connectors.mqtt.config import BrokerSettings, check_topic
from bridge.destination import Capabilities
from bridge.eventrules import EventRule
from bridge.isa95 import ISA95_LEVELS, Isa95Levels

__all__ = [
    "DittoHttp",
    "DittoMqtt",
    "DittoSettings",
    "DittoTelemetry",
    "DittoThing",
    "check_feature_id",
    "check_namespace",
    "check_thing_name",
]

# Ditto's entity id rules (org.eclipse.ditto.base.model.entity.id.RegexPatterns): a namespace
# in Java package notation (segments start with a letter, joined by . or -), a name without
# a slash or a control character (Ditto counts \x7F-\xFF among them).
_NAMESPACE = re.compile(r"[a-zA-Z]\w*(?:[.\-][a-zA-Z]\w*)*", re.ASCII)
_CONTROL_OR_SLASH = re.compile(r"[\x00-\x1f\x7f-\xff/]")


def check_namespace(value: str) -> str:
    if not _NAMESPACE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Ditto namespace: Java package notation, e.g. com.acme.dallas "
            "(segments start with a letter; letters, digits and _ inside, joined by . or -)"
        )
    return value


def check_thing_name(value: str) -> str:
    if not value or _CONTROL_OR_SLASH.search(value):
        raise ValueError(
            f"{value!r} cannot be a Ditto thing name: it must not be empty nor hold a / or a "
            "control character (nor Latin-1 letters such as ü: Ditto refuses \\x7f-\\xff)"
        )
    return value


def check_feature_id(value: str) -> str:
    if not value or _CONTROL_OR_SLASH.search(value):
        raise ValueError(f"{value!r} cannot be a Ditto feature id: not empty, no / or control")
    return value


def _every() -> list[EventRule]:
    return ["every"]


class DittoMqtt(BrokerSettings):
    """The MQTT broker Ditto's connectivity service reads (a Ditto MQTT 5 connection whose
    source address matches ``topic``)."""

    topic: str = Field(
        "ditto/{namespace}/{asset}",
        description="Topic the Ditto Protocol messages of an asset are published on; Ditto's "
        "connection subscribes to it (e.g. source address `ditto/#`). Placeholders: "
        "{namespace} {asset} {thing} {enterprise} {site} {area} {line}.",
    )
    publish_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Longest wait for a PUBACK before the event is retried."
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        names = (*ISA95_LEVELS, "namespace", "asset", "thing")
        try:
            check_topic(value.format(**dict.fromkeys(names, "x")))
        except (KeyError, IndexError) as exc:
            placeholders = " ".join(f"{{{name}}}" for name in names)
            raise ValueError(
                f"unknown placeholder {exc} in the topic: use {placeholders}"
            ) from None
        return value


class DittoHttp(BaseModel):
    """Ditto's HTTP API (API version 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="Base URL of Ditto (its gateway or nginx), e.g. https://ditto.plant:8443; "
        "requests go to `<url>/api/2/things/...`."
    )
    username: str | None = Field(
        None, description="User of HTTP basic authentication (nginx in front of Ditto)."
    )
    password: str | None = Field(
        None, description="Password of basic authentication; use ${ENV}, never the file."
    )
    bearer_token: str | None = Field(
        None,
        description="A JWT sent as `Authorization: Bearer ...` (Ditto with OpenID Connect); "
        "use ${ENV}, never the file. Not together with username/password.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers (e.g. x-ditto-pre-authenticated behind a proxy that "
        "authenticates); values may use ${ENV}.",
    )
    tls: ClientTls | None = Field(
        None,
        description="TLS of an https:// URL: `ca_file` (the CA that signed Ditto's "
        "certificate; only it is trusted), `client_certificate` and `client_key` (mutual TLS). "
        "Default: the public CAs, no client certificate.",
    )
    timeout_s: float = Field(10.0, gt=0, le=120, description="Timeout of one request.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("the base URL takes no ?query or #fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _auth(self) -> Self:
        require_https(self.url, self.tls, "tls")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic authentication needs both `username` and `password`")
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("give `bearer_token` or `username`/`password`, not both")
        if any(k.lower() == "authorization" for k in self.headers) and (
            self.bearer_token is not None or self.username is not None
        ):
            raise ValueError(
                "an Authorization header and `bearer_token`/`username` contradict: keep one"
            )
        return self


class DittoThing(BaseModel):
    """Static context of one asset's thing (its attributes), beside the ISA-95 levels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        None, description="Thing name (after `<namespace>:`). Default: the asset's name."
    )
    template: str | None = Field(
        None,
        description="Attribute `template`, over the asset's template in the mapping, e.g. "
        'pump ("" leaves the attribute out).',
    )
    description: str = Field(
        "",
        description="Attribute `description`, over the asset's description in the mapping.",
    )
    policy_id: str | None = Field(
        None, description="Policy of this thing, if not the block's `policy_id`."
    )
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description="Further attributes of the thing (JSON values), e.g. {serial: P-1234}.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_thing_name(value)


class DittoTelemetry(BaseModel):
    """Tag values in the `telemetry` feature: each chosen tag's latest normalized value at
    the time an event is made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tags: list[str] = Field(
        default_factory=list,
        description="Names of the tags (as in the asset's template, e.g. bearing_temperature) "
        "whose values go into the feature. Default: every tag of the asset.",
    )
    interval_s: float = Field(
        1.0,
        ge=0.05,
        le=3600,
        description="How often the gateway's tag table is read for them: an event carries "
        "values at most this old (each with its own source time).",
    )

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, value: list[str]) -> list[str]:
        for name in value:
            check_feature_id(name)  # a property key in a JSON pointer: no slash
        return value


class DittoSettings(Isa95Levels):
    """An ``outputs.<name>`` block with ``kind: ditto``: one Ditto thing per asset, its
    attributes the asset's static context and its features the latest prediction, the model
    and chosen tag values, durably through the gateway's outbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(
        description="Ditto namespace of the things (`<namespace>:<asset>`), e.g. com.acme.dallas."
    )
    policy_id: str | None = Field(
        None,
        description="Policy id of the things, e.g. com.acme.dallas:bridge (the policy must "
        "exist and let the gateway's subject WRITE). Default: none given, Ditto makes one "
        "policy per thing granting the creating subject.",
    )
    mqtt: DittoMqtt | None = Field(
        None,
        description="Send Ditto Protocol messages over this MQTT broker (the one Ditto's "
        "connectivity service reads): `host`, `port`, `tls`, `topic`, ... as for the UNS.",
    )
    http: DittoHttp | None = Field(
        None,
        description="Send through Ditto's HTTP API: `url`, authentication, `tls`.",
    )
    things: dict[str, DittoThing] = Field(
        default_factory=dict,
        description="Per asset, all optional: thing name, policy, further attributes, and "
        "template and description over the mapping's, e.g. {pump-01: {attributes: {serial: "
        "P-1234}}}.",
    )
    telemetry: DittoTelemetry | None = Field(
        None,
        description="Also write tag values into the `telemetry` feature (merged, so "
        "properties other sources write there stay): `{tags: [...], interval_s: 1}`. "
        "Default: no telemetry feature.",
    )
    prediction_feature: str = Field(
        "prediction",
        description="Feature id of the latest prediction; `{model}` is replaced by the model's "
        "name (e.g. prediction-{model} for assets served by several models).",
    )
    model_feature: str = Field(
        "model",
        description="Feature id of the model that made it (name, version, sha256); `{model}` "
        "as above.",
    )
    events: list[EventRule] = Field(
        default_factory=_every,
        min_length=1,
        description="Which predictions update the twin (`every`, `label_change`, `alerts`, "
        "`threshold: {...}`, as for the MES).",
    )
    initial_backoff_s: float = Field(0.5, gt=0, description="First retry delay of an event.")
    max_backoff_s: float = Field(30.0, gt=0, description="Cap of the retry backoff.")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return check_namespace(value)

    @field_validator("prediction_feature", "model_feature")
    @classmethod
    def _feature(cls, value: str) -> str:
        try:
            check_feature_id(value.format(model="x"))
        except (KeyError, IndexError) as exc:
            raise ValueError(f"unknown placeholder {exc}: only {{model}}") from None
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        if (self.mqtt is None) == (self.http is None):
            raise ValueError(
                "give exactly one transport: `mqtt:` (Ditto Protocol over the broker Ditto's "
                "connection reads) or `http:` (Ditto's HTTP API)"
            )
        features = {self.prediction_feature, self.model_feature, "telemetry", "drift"}
        if len(features) < 4:
            raise ValueError(
                "prediction_feature and model_feature must differ from each other and from "
                "telemetry and drift"
            )
        return self

    @property
    def transport(self) -> Literal["mqtt", "http"]:
        return "mqtt" if self.mqtt is not None else "http"

    def thing_name(self, asset: str) -> str:
        thing = self.things.get(asset)
        return thing.name if thing is not None and thing.name else asset

    def thing_id(self, asset: str) -> str:
        return f"{self.namespace}:{self.thing_name(asset)}"

    def policy_of(self, asset: str) -> str | None:
        thing = self.things.get(asset)
        if thing is not None and thing.policy_id is not None:
            return thing.policy_id
        return self.policy_id

    def capabilities(self) -> Capabilities:
        """One batch at a time (events of one asset in order), up to 64 events of different
        assets per batch."""
        return Capabilities(
            concurrency=1,
            batch_size=64,
            backoff=(self.initial_backoff_s, self.max_backoff_s),
            rules=tuple(self.events),
        )
