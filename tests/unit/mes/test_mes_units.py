"""Units in MES bodies: the value's unit (a regressor's `outputs.unit`) and each input's tag
unit, from the slots the gateway hands the destination; null where the mapping has none."""

from __future__ import annotations

import json

from bridge.connectors.mes import MesDestination, MesSettings
from bridge.destination import DestinationContext
from bridge.types import InputSnapshot, Prediction, PredictionSlot, Quality, Trigger

SLOTS = (
    PredictionSlot(
        "oven", "heat", "1", "a" * 64, unit="degC", input_units=(("temperature", "degC"),)
    ),
    PredictionSlot("pump", "health", "1", "b" * 64, labels=("ok", "fault")),
)


def prediction(asset: str, model: str, value: str | float) -> Prediction:
    return Prediction(
        id=f"{asset}-{model}",
        seq=1,
        asset=asset,
        model=model,
        version="1",
        sha256="a" * 64,
        value=value,
        score=None,
        quality=Quality.GOOD,
        timestamp=1714564800.0,
        input_age_s=0.1,
        inputs=(
            InputSnapshot(f"{asset}.temperature", 100.0, Quality.GOOD, None),
            InputSnapshot(f"{asset}.running", True, Quality.GOOD, None),
        ),
    )


def destination(**settings: object) -> MesDestination:
    return MesDestination(
        "mes",
        MesSettings.model_validate({"url": "http://127.0.0.1:1/x", **settings}),
        DestinationContext("gw", SLOTS),
    )


def test_default_body_carries_value_and_input_units() -> None:
    body = json.loads(destination().encode(Trigger(prediction("oven", "heat", 100.0))))
    assert body["unit"] == "degC"
    assert [(i["tag"], i["unit"]) for i in body["inputs"]] == [
        ("oven.temperature", "degC"),
        ("oven.running", None),  # no unit in the mapping
    ]


def test_a_label_and_an_unknown_slot_have_no_unit() -> None:
    sink = destination()
    body = json.loads(sink.encode(Trigger(prediction("pump", "health", "ok"))))
    assert body["unit"] is None and {i["unit"] for i in body["inputs"]} == {None}
    body = json.loads(sink.encode(Trigger(prediction("elsewhere", "heat", 1.0))))
    assert body["unit"] is None


def test_templates_may_use_the_unit() -> None:
    sink = destination(template={"reading": "{value} {unit}", "u": "{unit}", "in": "{inputs}"})
    body = json.loads(sink.encode(Trigger(prediction("oven", "heat", 100.0))))
    assert body["reading"] == "100.0 degC" and body["u"] == "degC"
    assert body["in"][0]["unit"] == "degC"
