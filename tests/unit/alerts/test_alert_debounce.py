"""One alert per fault: a label flipping at the decision boundary is held back until it has
lasted ``raise_after`` runs, and an alerted asset counts as normal again only after
``clear_after`` normal runs in a row. Settings come from the mapping; the default is on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from bridge.alertrule import AlertRule, LabelAlert
from bridge.config import load_mapping
from bridge.config.resolved import Mapping
from bridge.config.spec import AlertConfig
from bridge.runtime.alertsink import AlertSink
from bridge.store.alerts import AlertFilter, AlertRepository
from bridge.store.db import open_store
from bridge.types import Prediction, PredictionSlot, Quality

LABELS = ("healthy", "bearing_fault", "cavitation")
N, F, C = LABELS
SLOTS = [PredictionSlot("p1", "health", "1", "0" * 64, LABELS)]


def p(seq: int, value: str | None, asset: str = "p1") -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"gw/{asset}/health/{seq}")),
        seq=seq,
        asset=asset,
        model="health",
        version="1",
        sha256="0" * 64,
        value=value,
        score=None if value is None else 0.51,
        quality=Quality.GOOD if value is not None else Quality.BAD,
        timestamp=1000.0 + 0.1 * seq,
        input_age_s=0.1,
    )


def run(
    rule: AlertRule, labels: Sequence[str | None], start: int = 0
) -> list[tuple[int, LabelAlert]]:
    """Feed one prediction per run; the run index of each alert raised, with the alert."""
    out = []
    for i, v in enumerate(labels, start):
        out += [(i, a) for a in rule.evaluate([p(i, v)])]
    return out


def hold(raise_after: int = 3, clear_after: int = 5) -> AlertRule:
    return AlertRule(
        SLOTS, {"health": AlertConfig(raise_after=raise_after, clear_after=clear_after)}
    )


def test_a_label_flapping_at_the_boundary_raises_one_alert() -> None:
    # The fault onset as seen at the boundary: 3 flips in 0.5 s, then the fault holds, then
    # it flaps again on its way back (fewer than clear_after normal runs in a row).
    labels = [N, F, N, F, N, F, F, F, F, N, F, N, N, F, F, N, F, F]
    alerts = run(hold(), labels)
    assert [(i, a.label, a.previous) for i, a in alerts] == [(7, F, N)]
    # The alert points at the prediction that confirmed the fault.
    assert alerts[0][1].prediction.id == p(7, F).id


def test_a_sustained_fault_raises_within_raise_after_runs() -> None:
    alerts = run(hold(raise_after=3), [N, N, N, F, F, F, F, F])
    assert [(i, a.label) for i, a in alerts] == [(5, F)]  # the third fault run in a row
    # Bad predictions (no label) neither confirm nor interrupt a fault.
    alerts = run(hold(raise_after=3), [N, F, None, F, None, F])
    assert [(i, a.label) for i, a in alerts] == [(5, F)]


def test_the_alert_clears_only_after_clear_after_normal_runs() -> None:
    rule = hold(raise_after=3, clear_after=5)
    assert [i for i, _ in run(rule, [F, F, F])] == [2]
    # Four normal runs are not enough: the fault coming back is the same fault.
    assert run(rule, [N, N, N, N, F, F, F, F], start=3) == []
    # Five normal runs in a row clear it; the next fault is a new alert.
    alerts = run(rule, [N, N, N, N, N, F, F, F], start=11)
    assert [(i, a.label, a.previous) for i, a in alerts] == [(18, F, N)]


def test_faults_flapping_between_two_fault_labels_still_alert_once() -> None:
    rule = hold(raise_after=3)
    # Not normal for three runs in a row: one alert, with the label it was raised on.
    alerts = run(rule, [N, F, C, F, C, F, C])
    assert [(i, a.label, a.previous) for i, a in alerts] == [(3, F, N)]
    # A switch to another fault label is its own alert once that label holds.
    alerts = run(rule, [C, C, C], start=7)
    assert [(i, a.label, a.previous) for i, a in alerts] == [(8, C, F)]


def test_raise_after_one_alerts_on_every_change_as_before() -> None:
    alerts = run(hold(1, 1), [N, F, N, F, N, F])
    assert [i for i, _ in alerts] == [1, 3, 5]


MAPPING = """
version: 1
gateway: {store: "sqlite:///b.db"}
sources:
  plant: {kind: opcua, endpoint: "opc.tcp://127.0.0.1:4840"}
assets:
  p1:
    tags:
      v: {source: plant, address: "nsu=urn:t;s=V"}
models:
  health:
    file: m.onnx
    version: "1"
    assets: [p1]
    features: [{tag: v, stat: mean}]
  quick:
    file: m.onnx
    version: "1"
    assets: [p1]
    features: [{tag: v, stat: mean}]
    alerts: {raise_after: 1, clear_after: 2}
"""


@pytest.fixture
def mapping(tmp_path: Path) -> Mapping:
    path = tmp_path / "mapping.yaml"
    path.write_text(MAPPING)
    (tmp_path / "m.onnx").write_bytes(b"")  # loading the mapping only checks that it exists
    return load_mapping(path)


def test_the_mapping_default_is_on(mapping: Mapping) -> None:
    assert mapping.models["health"].alerts == AlertConfig(raise_after=3, clear_after=10)
    assert mapping.models["quick"].alerts == AlertConfig(raise_after=1, clear_after=2)


async def test_the_gateways_alert_sink_stores_one_alert_per_fault(
    tmp_path: Path, mapping: Mapping
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    try:
        # Built as the gateway builds it: the mapping's settings, here the default.
        sink = AlertSink.for_models(AlertRepository(store), SLOTS, mapping.models)
        await sink.start()
        labels = [N, F, N, F, N, F, F, F, F, N, F, F, N, F]
        for i, v in enumerate(labels):
            await sink.write([p(i, v)])
        await sink.close()
        stored = AlertRepository(store).page(AlertFilter(), 100)
        assert [(a.label, a.previous, a.prediction_id) for a in stored] == [(F, N, p(7, F).id)]
        assert sink.health().counters["raised"] == 1
    finally:
        store.dispose()


@pytest.mark.parametrize("field", ["raise_after", "clear_after"])
def test_hold_counts_below_one_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AlertConfig.model_validate({field: 0})
