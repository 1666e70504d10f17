"""The store's hand-written JSON of input snapshots is the text ``json.dumps`` gives, for any
values a snapshot can hold (the rows written before and after the fast path must not differ)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from bridge.store.codec import inputs_from_json, inputs_to_json
from bridge.types import InputSnapshot, Quality

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)
snapshots = st.builds(
    InputSnapshot,
    tag=st.text(min_size=1),
    value=values,
    quality=st.sampled_from(list(Quality)),
    source_time=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)


def reference(inputs: tuple[InputSnapshot, ...]) -> str:
    """What the store wrote before: the dicts through ``json.dumps``."""
    return json.dumps(
        [
            {
                "tag": i.tag,
                "value": i.value,
                "quality": i.quality.label,
                "source_time": i.source_time,
            }
            for i in inputs
        ],
        separators=(",", ":"),
    )


@given(st.lists(snapshots, max_size=6).map(tuple))
def test_inputs_json_is_the_text_json_dumps_gives(inputs: tuple[InputSnapshot, ...]) -> None:
    assert inputs_to_json(inputs) == reference(inputs)


def test_inputs_json_of_unusual_values() -> None:
    inputs = (
        InputSnapshot('a"b\\c\n\u00e9\U0001f600', float("-inf"), Quality.BAD, float("nan")),
        InputSnapshot("x", 10**30, Quality.UNCERTAIN, 0.1 + 0.2),
        InputSnapshot("y", False, Quality.GOOD, -0.0),
    )
    text = inputs_to_json(inputs)
    assert text == reference(inputs)
    assert inputs_from_json(text)[1].value == 10**30
