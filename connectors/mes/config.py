"""Settings of the MES REST destination (one ``sinks.<name>`` block with ``kind: mes-rest``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MesSinkSettings"]


class MesSinkSettings(BaseModel):
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

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL with a host")
        return value
