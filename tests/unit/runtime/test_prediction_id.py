"""Prediction ids: the fast path gives exactly
``uuid5(PREDICTION_NS, gateway/boot/asset/model/seq)`` (ids already stored must keep matching
the ones made after an upgrade)."""

from __future__ import annotations

import uuid

import pytest

from bridge.runtime.runner import PREDICTION_NS, id_prefix, prediction_id


@pytest.mark.parametrize(
    ("gateway", "boot", "rest"),
    [
        ("gw", "boot", "a0001/echo/1"),
        ("line-3", str(uuid.UUID(int=7)), "pümpe ä/modèle/123456789"),
        ("", "", ""),
        ("g" * 200, "b", "x" * 500 + "/m/2"),
    ],
)
def test_prediction_ids_are_uuid5_of_their_key(gateway: str, boot: str, rest: str) -> None:
    expected = str(uuid.uuid5(PREDICTION_NS, f"{gateway}/{boot}/{rest}"))
    prefix = id_prefix(gateway, boot)
    assert prediction_id(prefix, rest) == expected
    assert prediction_id(prefix, rest) == expected  # the prefix state is not consumed
