"""Settings of a webhook destination: one URL that receives events as JSON POSTs.

As an ``outputs.<name>`` block (``kind: webhook``) or built by the gateway from a model's
``drift: webhook: ...`` keys (the retraining webhook).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.client_tls import ClientTls, require_https

__all__ = ["WebhookSettings"]


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Full http(s) URL the events are POSTed to.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers, typically auth (e.g. Authorization: use ${ENV}).",
    )
    tls: ClientTls | None = Field(
        None,
        description="TLS of an https:// URL: `ca_file` (the CA that signed its certificate; "
        "only it is trusted), `client_certificate` and `client_key` (mutual TLS).",
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one POST (connect, read, write).")
    initial_backoff_s: float = Field(
        0.5, gt=0, description="First retry delay of an event; grows on further failures."
    )
    max_backoff_s: float = Field(
        30.0, gt=0, description="Cap of the retry backoff and of the receiver's Retry-After."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL with a host")
        return value

    @model_validator(mode="after")
    def _tls_needs_https(self) -> WebhookSettings:
        require_https(self.url, self.tls, "tls")
        return self
