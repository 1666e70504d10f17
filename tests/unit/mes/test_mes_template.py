"""Payload templates: placeholders from a fixed list of fields, typed leaves, checks at load."""

from __future__ import annotations

import json

import pytest

from bridge.connectors.mes import MesDestination, MesSettings
from bridge.connectors.mes.template import FIELDS, TemplateError, compile_template
from bridge.destination import DestinationContext
from bridge.types import InputSnapshot, Prediction, Quality, Trigger

FIELDS_OF_EVENT = {
    "asset": "pump-1",
    "score": 0.91,
    "value": "bearing_fault",
    "inputs": [{"tag": "pump-1.t", "value": 7.5}],
    "previous": None,
    "seq": 42,
}


def test_a_leaf_that_is_one_placeholder_keeps_its_type() -> None:
    t = compile_template({"s": "{score}", "n": "{seq}", "i": "{inputs}", "p": "{previous}"})
    assert t.render(FIELDS_OF_EVENT) == {
        "s": 0.91,
        "n": 42,
        "i": [{"tag": "pump-1.t", "value": 7.5}],
        "p": None,
    }


def test_placeholders_inside_text_are_written_as_text() -> None:
    t = compile_template(
        {"msg": "{asset}: {value} ({score}) seq={seq} prev={previous} {{literal}}"}
    )
    assert t.render(FIELDS_OF_EVENT) == {
        "msg": "pump-1: bearing_fault (0.91) seq=42 prev= {literal}"
    }


def test_nested_structures_lists_and_constants() -> None:
    spec = {
        "header": {"source": "bridge", "version": 2, "urgent": True, "none": None},
        "items": [{"machine": "{asset}"}, "{{asset}}", 1.5],
    }
    assert compile_template(spec).render(FIELDS_OF_EVENT) == {
        "header": {"source": "bridge", "version": 2, "urgent": True, "none": None},
        "items": [{"machine": "pump-1"}, "{asset}", 1.5],
    }


def test_a_template_cannot_reach_anything_but_the_listed_fields() -> None:
    # Attribute access, indexing, expressions and format specs are not placeholders.
    for text in ("{asset.__class__}", "{inputs[0]}", "{1+1}", "{score:.2f}", "{__import__}"):
        with pytest.raises(TemplateError, match="unknown field"):
            compile_template({"x": text})


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        ({"a": {"b": "{assett}"}}, "a.b", "unknown field {assett}"),
        ({"a": ["ok", "{nope}"]}, "a[1]", "unknown field {nope}"),
        ({"a": "open { brace"}, "a", "unmatched '{'"),
        ({"a": "close } brace"}, "a", "unmatched '}'"),
        ("{asset}", "", "a template is a mapping"),
    ],
)
def test_mistakes_are_found_at_compile_time_with_their_place(
    spec: object, where: str, message: str
) -> None:
    with pytest.raises(TemplateError) as info:
        compile_template(spec)
    assert info.value.path == where
    assert message in str(info.value)


def test_every_listed_field_is_filled_by_the_sink() -> None:
    """The whitelist and the fields the MES sink provides are the same set."""
    spec = {name: f"{{{name}}}" for name in FIELDS}
    settings = MesSettings(url="http://127.0.0.1:1/", template=spec)
    sink = MesDestination("mes", settings, DestinationContext("gw", ()))
    p = Prediction(
        id="id-1",
        seq=3,
        asset="pump-1",
        model="m",
        version="1",
        sha256="ab" * 32,
        value="bearing_fault",
        score=0.9,
        quality=Quality.GOOD,
        timestamp=1714564800.0,
        input_age_s=0.5,
        inputs=(InputSnapshot("pump-1.t", 7.5, Quality.GOOD, 1714564799.0),),
    )
    body = json.loads(sink.encode(Trigger(p, "threshold", None, "enter", 0.8, "score")))
    assert set(body) == set(FIELDS)
    assert body["gateway_id"] == "gw"
    assert body["event"] == "threshold"
    assert (body["crossing"], body["limit"], body["field"]) == ("enter", 0.8, "score")
    assert body["timestamp"] == "2024-05-01T12:00:00.000Z"
    assert body["inputs"][0]["tag"] == "pump-1.t"
