"""Settings of the NGSI-LD destination (one ``outputs.<name>`` block with ``kind: ngsi-ld``)."""

from __future__ import annotations

import re
from typing import Self
from urllib.parse import quote, urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from bridge.client_tls import ClientTls, require_https
from bridge.eventrules import EventRule
from bridge.isa95 import Isa95Levels

from .names import check_type

__all__ = ["CORE_CONTEXT", "NgsiLdSettings"]

# The ETSI NGSI-LD core @context (GS CIM 009 V1.8), named last in every entity's @context.
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"

# A tenant goes into a header and, in most brokers, a database name.
_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TAG = re.compile(r"^[a-z][a-z0-9_]*$")


def _every() -> list[EventRule]:
    return ["every"]


def _url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http:// or https:// URL with a host")
    return value


class NgsiLdSettings(Isa95Levels):
    """An ``outputs.<name>`` block with ``kind: ngsi-ld``: one NGSI-LD entity per asset on a
    context broker (Orion-LD, Scorpio, Stellio), upserted in batches through the outbox."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="Base URL of the context broker, e.g. http://orion-ld:1026; entities are "
        "POSTed to <url>/ngsi-ld/v1/entityOperations/upsert?options=update.",
    )
    tenant: str | None = Field(
        None,
        description="NGSI-LD tenant (the NGSILD-Tenant header), letters, digits, _ and -. "
        "Default: the broker's default tenant.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, typically auth "
        "(e.g. Authorization: Bearer ${BROKER_TOKEN}).",
    )
    tls: ClientTls | None = Field(
        None,
        description="TLS of an https:// URL: `ca_file` (the CA that signed the broker's "
        "certificate; only it is trusted), `client_certificate` and `client_key` (mutual TLS).",
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one upsert request.")
    initial_backoff_s: float = Field(
        0.5, gt=0, description="First retry delay of an event; doubles on further failures."
    )
    max_backoff_s: float = Field(
        30.0, gt=0, description="Cap of the retry backoff and of the broker's Retry-After."
    )
    batch_size: int = Field(
        50,
        ge=1,
        le=1000,
        description="Entities per upsert request (each of a different asset): the relay gives "
        "the destination up to this many events at once and they go in one POST.",
    )
    concurrency: int = Field(
        1,
        ge=1,
        le=16,
        description="Upsert requests in flight at once (of different assets; an asset's events "
        "are sent one at a time, in order).",
    )
    events: list[EventRule] = Field(
        default_factory=_every,
        min_length=1,
        description="Which predictions update the entities (`every`, `label_change`, `alerts`, "
        "`threshold: {...}`, as for the MES).",
    )
    context_url: str | None = Field(
        None,
        description="URL where the broker can fetch this connector's JSON-LD @context "
        "(connectors/ngsild/context.json, published on a web server or the broker's @context "
        "store). Default: the context is written inline in every entity. The ETSI core context "
        "(`core_context_url`) always follows it.",
    )
    core_context_url: str = Field(
        CORE_CONTEXT,
        description="URL of the ETSI NGSI-LD core @context, named last in every entity's @context.",
    )
    default_type: str = Field(
        "Asset",
        description="Entity type of an asset without a template or a type below.",
    )
    template_types: dict[str, str] = Field(
        default_factory=dict,
        description="Entity type per template name, e.g. {pump: CentrifugalPump}; a template "
        "without one gives its name in CamelCase (pump-station -> PumpStation).",
    )
    asset_types: dict[str, str] = Field(
        default_factory=dict,
        description="Entity type per asset, over its template's, e.g. {pump-03: BoosterPump}.",
    )
    tags: list[str] | None = Field(
        None,
        description="Names of the tags published as Properties of each asset's entity (those an "
        "asset has). Default: every tag of the asset; [] publishes predictions only.",
    )
    temporal: bool = Field(
        True,
        description="A prediction (or tag value) older than the one last upserted for the same "
        "attribute (a backfilled prediction, a backlog sent late) never replaces the entity's "
        "current value: true sends it to the broker's temporal API (POST "
        "/ngsi-ld/v1/temporal/entities/{id}/attrs, Orion-LD with TRoE, Scorpio, Stellio); "
        "false leaves it out (a broker without the temporal API).",
    )
    tag_refresh_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="How often the destination reads the tag table: the tag values an entity "
        "carries are at most this much older than the prediction it is sent for.",
    )

    @field_validator("url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return _url(value, "url").rstrip("/")

    @field_validator("context_url", "core_context_url")
    @classmethod
    def _context(cls, value: str | None) -> str | None:
        return None if value is None else _url(value, "a @context URL")

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str | None) -> str | None:
        if value is not None and not _TENANT.match(value):
            raise ValueError(f"{value!r} cannot be a tenant: use 1 to 64 letters, digits, _ and -")
        return value

    @field_validator("tags")
    @classmethod
    def _tag_names(cls, value: list[str] | None) -> list[str] | None:
        for tag in value or ():
            if not _TAG.match(tag):
                raise ValueError(f"{tag!r} is not a tag name (as under `tags:` of an asset)")
        return value

    @field_validator("default_type")
    @classmethod
    def _default_type(cls, value: str) -> str:
        return check_type(value)

    @field_validator("template_types", "asset_types")
    @classmethod
    def _types(cls, value: dict[str, str]) -> dict[str, str]:
        for name, entity_type in value.items():
            try:
                check_type(entity_type)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _tls_needs_https(self) -> Self:
        require_https(self.url, self.tls, "tls")
        return self

    @property
    def upsert_url(self) -> str:
        return f"{self.url}/ngsi-ld/v1/entityOperations/upsert?options=update"

    def temporal_url(self, entity_id: str) -> str:
        """Where the late attributes of entity ``entity_id`` are added to its history."""
        return f"{self.url}/ngsi-ld/v1/temporal/entities/{quote(entity_id, safe='')}/attrs"
