"""The ``reconnect:`` block of an OPC UA source: defaults, limits, and errors that say the fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.connectors.opcua import OpcUaSourceSettings
from bridge.connectors.opcua.source import endpoint_address

ENDPOINT = "opc.tcp://127.0.0.1:4840"


def test_defaults_cap_the_wait_at_a_few_seconds_and_probe() -> None:
    r = OpcUaSourceSettings(endpoint=ENDPOINT).reconnect
    assert (r.initial_backoff_s, r.max_backoff_s, r.probe_interval_s) == (0.5, 5, 0.5)


def test_initial_above_cap_names_both_and_the_fix() -> None:
    with pytest.raises(ValidationError) as err:
        OpcUaSourceSettings.model_validate(
            {"endpoint": ENDPOINT, "reconnect": {"initial_backoff_s": 10, "max_backoff_s": 5}}
        )
    message = str(err.value)
    assert "initial_backoff_s (10)" in message and "max_backoff_s (5)" in message
    assert "raise max_backoff_s or lower initial_backoff_s" in message


@pytest.mark.parametrize(
    "reconnect",
    [
        {"max_backoff_s": 0},
        {"initial_backoff_s": -1},
        {"probe_interval_s": -0.5},
        {"max_backof_s": 5},  # a typo is refused, not ignored
    ],
)
def test_bad_values_are_refused(reconnect: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        OpcUaSourceSettings.model_validate({"endpoint": ENDPOINT, "reconnect": reconnect})


@pytest.mark.parametrize(
    ("endpoint", "address"),
    [
        ("opc.tcp://127.0.0.1:4841", ("127.0.0.1", 4841)),
        ("opc.tcp://plc.local/UA/Server", ("plc.local", 4840)),  # OPC UA's default port
        ("opc.tcp://[::1]:4842/", ("::1", 4842)),
        ("opc.tcp://plc.local:port", None),  # no probe; the connect attempts report the URL
    ],
)
def test_probe_address_of_the_endpoint(endpoint: str, address: tuple[str, int] | None) -> None:
    assert endpoint_address(endpoint) == address
