"""gateway.api settings: a non-loopback bind needs TLS or an explicit insecure_http."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.config.spec import ApiSettings, ApiTlsSettings

TLS = ApiTlsSettings(certificate="pki/api.pem", private_key="pki/api.key")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.10.5", "gateway.plant.local"])
def test_a_public_bind_without_tls_is_refused(host: str) -> None:
    with pytest.raises(ValidationError) as info:
        ApiSettings(host=host)
    assert f"binds {host} without TLS" in str(info.value)
    hint = info.value.errors()[0]["ctx"]["hint"]
    assert "gateway.api.tls" in hint and "insecure_http: true" in hint


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_tls(host: str) -> None:
    assert ApiSettings(host=host).tls is None


def test_tls_or_an_explicit_insecure_http_allows_a_public_bind() -> None:
    assert ApiSettings(host="0.0.0.0", tls=TLS).tls == TLS
    assert ApiSettings(host="0.0.0.0", insecure_http=True).insecure_http


def test_limits_have_safe_defaults() -> None:
    s = ApiSettings()
    assert s.max_body_bytes == 1024 * 1024
    assert s.rate_limit_per_s > 0 and s.rate_burst >= 1 and s.max_concurrent_per_key >= 1
    assert s.max_history_days > 0 and s.query_timeout_s > 0 and s.query_threads >= 1
