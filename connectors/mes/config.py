"""Settings of the MES REST destination (one ``outputs.<name>`` block with ``kind: mes-rest``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bridge.client_tls import ClientTls, require_https
from bridge.eventrules import EventRule

from .template import FIELDS, TemplateError, compile_template

__all__ = ["MesSettings"]


def _every() -> list[EventRule]:
    return ["every"]


class MesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(
        description="Full http(s) URL the predictions are POSTed to, "
        "e.g. http://mes.local:8081/api/v1/events",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, typically auth "
        "(e.g. Authorization: Bearer ${MES_TOKEN}).",
    )
    tls: ClientTls | None = Field(
        None,
        description="TLS of an https:// URL: `ca_file` (the plant CA that signed the MES "
        "certificate; only it is trusted), `client_certificate` and `client_key` (mutual TLS). "
        "Default: the public CAs, no client certificate.",
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of one POST (connect, read, write).")
    max_backoff_s: float = Field(
        30.0, gt=0, description="Cap of the exponential retry backoff and of Retry-After."
    )
    initial_backoff_s: float = Field(
        0.5, gt=0, description="First retry delay; doubles on each further attempt."
    )
    concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description="POSTs in flight at once (of different assets); events of one asset are "
        "sent one at a time, in order, from the gateway's outbox.",
    )

    events: list[EventRule] = Field(
        default_factory=_every,
        min_length=1,
        description="Which predictions become events for this destination; an event is sent "
        "when any rule matches (the first match names it). `every`, `label_change`, `alerts`, "
        "`threshold: {field: score|value, above|below: limit, hysteresis: h, notify_clear: "
        "false}`.",
    )
    template: dict[str, Any] | list[Any] | None = Field(
        None,
        description="Shape of the JSON body: a structure whose strings may hold `{field}` "
        "placeholders (a string that is exactly one placeholder keeps the field's type). "
        "Fields: " + ", ".join(FIELDS) + ". Default: the full event (see the connector README).",
    )
    batch_size: int = Field(
        1,
        ge=1,
        le=1000,
        description="Events per POST. 1 sends each event as a JSON object; above 1 the body is "
        "a JSON array of {idempotency_key, event} (of different assets) and the MES answers "
        "one result per event (see the connector README for the contract).",
    )

    @field_validator("template")
    @classmethod
    def _template_compiles(cls, value: Any) -> Any:
        if value is None:
            return value
        try:
            compile_template(value)
        except TemplateError as exc:
            raise PydanticCustomError(
                "template_error",
                "template{where}: {detail}",
                {
                    "where": f".{exc.path}" if exc.path else "",
                    "detail": exc.detail,
                    "hint": "placeholders name event fields: " + ", ".join(FIELDS),
                },
            ) from None
        return value

    @model_validator(mode="after")
    def _tls_needs_https(self) -> MesSettings:
        require_https(self.url, self.tls, "tls")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL with a host")
        return value
