"""The pure parts of the anonymised insights: the `insights` scope among the others, salted
asset keys, the k-anonymity and rare-event rules, the periods a request covers, the settings."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from bridge.api.anonymity import AssetKeys, has_rare_count, k_anonymous
from bridge.api.insights import insight_window
from bridge.api.keys import ApiKeyOut
from bridge.auth import Scope
from bridge.config.spec import ApiSettings, InsightsSettings
from bridge.drift.events import DRIFT_LABEL
from bridge.runtime.integrity import ARTIFACT_LABEL
from bridge.runtime.retention import DISK_LOW_LABEL
from bridge.store import insights as store_insights
from bridge.store.apikeys import ApiKeyRecord

MONDAY = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
SALT = "a-salt-of-enough-length-42"


def test_insights_stands_apart_and_the_other_scopes_keep_their_order() -> None:
    assert Scope.READ < Scope.OPERATE < Scope.ADMIN
    allowed = {s: {n for n in Scope if s.allows(n)} for s in Scope}
    assert allowed == {
        Scope.READ: {Scope.READ},
        Scope.OPERATE: {Scope.READ, Scope.OPERATE},
        Scope.ADMIN: {Scope.READ, Scope.OPERATE, Scope.ADMIN, Scope.INSIGHTS},
        Scope.INSIGHTS: {Scope.INSIGHTS},
    }
    # Fail-safe: any plain comparison with an ordered scope refuses it.
    assert all(s > Scope.INSIGHTS for s in (Scope.READ, Scope.OPERATE, Scope.ADMIN))
    assert Scope.parse("insights") is Scope.INSIGHTS and Scope.INSIGHTS.label == "insights"
    record = ApiKeyRecord("0123456789ab", "buyer", Scope.INSIGHTS, 0.0, None)
    assert ApiKeyOut.of(record).scope == "insights"


def test_asset_keys_are_truncated_hmacs_and_keep_the_salt_inside() -> None:
    keys = AssetKeys(SALT)
    expected = hmac.new(SALT.encode(), b"Pump 7", hashlib.sha256).hexdigest()[:16]
    assert keys.key("Pump 7") == expected == AssetKeys(SALT).key("Pump 7")
    assert keys.key("Pump 7") != AssetKeys(SALT + "x").key("Pump 7")
    assert keys.key("Pump 7") != keys.key("Pump 8")
    assert SALT not in repr(keys) and SALT not in str(keys)
    with pytest.raises(ValueError):
        AssetKeys("")


@pytest.mark.parametrize(
    ("assets", "k", "published"), [(4, 5, False), (5, 5, True), (1, 2, False), (2, 2, True)]
)
def test_a_group_needs_k_distinct_assets(assets: int, k: int, published: bool) -> None:
    assert k_anonymous(assets, k) is published


def test_only_counts_from_one_to_k_minus_one_are_rare() -> None:
    assert not has_rare_count([0, 0], 5)
    assert not has_rare_count([5, 120], 5)
    assert has_rare_count([0, 1], 5)
    assert has_rare_count([4, 100], 5)
    assert not has_rare_count([], 5)


def test_a_request_covers_whole_utc_periods() -> None:
    conf = InsightsSettings()
    wednesday_noon = MONDAY + 2 * 86400 + 12 * 3600
    w = insight_window("week", str(wednesday_noon), str(wednesday_noon + 86400), None, conf, 0)
    assert (w.since, w.until) == (MONDAY, MONDAY + 7 * 86400)  # ISO weeks start on Monday
    w = insight_window("day", str(wednesday_noon), str(wednesday_noon + 1), "m", conf, 0)
    assert (w.since, w.until, w.model) == (MONDAY + 2 * 86400, MONDAY + 3 * 86400, "m")
    w = insight_window("hour", str(MONDAY + 3600), str(MONDAY + 7200), None, conf, 0)
    assert (w.since, w.until, w.width_s) == (MONDAY + 3600, MONDAY + 7200, 3600)
    assert w.start_of(int((MONDAY + 3600) // 3600)) == MONDAY + 3600
    # Defaults: up to now, from 7 days before.
    w = insight_window("day", None, None, None, conf, MONDAY + 10)
    assert (w.since, w.until) == (MONDAY - 7 * 86400, MONDAY + 86400)
    # `from` after `to`: an empty range.
    w = insight_window("day", str(MONDAY + 86400), str(MONDAY), None, conf, 0)
    assert w.since == w.until
    # Nothing before the first period start, even for weeks (1970-01-05 was a Monday).
    w = insight_window("week", "0", str(86400 * 10), None, conf, 0)
    assert w.since == 4 * 86400


def test_a_range_wider_than_the_setting_is_refused() -> None:
    conf = InsightsSettings(max_range_days=30)
    insight_window("day", str(MONDAY), str(MONDAY + 30 * 86400), None, conf, 0)
    with pytest.raises(HTTPException) as err:
        insight_window("day", str(MONDAY), str(MONDAY + 31 * 86400), None, conf, 0)
    assert err.value.status_code == 400 and "insights.max_range_days" in str(err.value.detail)
    with pytest.raises(HTTPException) as err:
        insight_window("day", "soon", None, None, conf, 0)
    assert err.value.status_code == 422 and str(err.value.detail).startswith("from:")


def test_settings_refuse_a_small_k_and_a_short_salt_and_never_show_the_salt() -> None:
    with pytest.raises(ValidationError, match=r"insights\.k"):
        ApiSettings.model_validate({"insights": {"k": 1}})
    with pytest.raises(ValidationError, match="at least 16 random"):
        ApiSettings.model_validate({"insights": {"salt": "tooshort"}})
    # Left as a placeholder (validated without the environment): checked at run time.
    assert ApiSettings.model_validate({"insights": {"salt": "${SALT}"}}).insights.salt
    settings = ApiSettings.model_validate({"insights": {"salt": SALT}})
    assert settings.insights.salt is not None
    assert settings.insights.salt.get_secret_value() == SALT
    assert SALT not in repr(settings) and SALT not in settings.model_dump_json()
    assert settings.insights.k == 5 and InsightsSettings().salt is None


def test_the_stores_labels_agree_with_the_writers() -> None:
    assert store_insights.DRIFT_LABEL == DRIFT_LABEL
    assert set(store_insights.GATEWAY_LABELS) == {DISK_LOW_LABEL, ARTIFACT_LABEL}
