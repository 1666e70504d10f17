"""The mapping's ``gateway.outbox`` settings reach every relay, the webhook's included."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.config.spec import OutboxSettings
from bridge.outbox.wiring import relay_settings_for


def test_the_mapping_sets_the_caps_and_the_lease() -> None:
    s = relay_settings_for(
        OutboxSettings(max_retries=4, max_retry_age_s=90.0, lease_s=12.0, dead_letter_after=2)
    )
    assert (s.max_retries, s.max_retry_age_s, s.lease_s, s.dead_letter_after) == (4, 90.0, 12.0, 2)
    assert relay_settings_for(OutboxSettings()).lease_s == 30.0


def test_a_lease_below_a_second_is_refused_with_the_range() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        OutboxSettings(lease_s=0.1)
