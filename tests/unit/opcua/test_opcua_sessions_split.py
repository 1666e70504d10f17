"""How ``sessions:`` splits a source's tags: contiguous, even shares; ``auto`` by item count."""

from __future__ import annotations

from bridge.connectors.opcua import OpcUaSourceSettings
from bridge.connectors.opcua.source import shares


def settings(**kw: object) -> OpcUaSourceSettings:
    return OpcUaSourceSettings.model_validate({"endpoint": "opc.tcp://h:1", **kw})


def test_shares_are_contiguous_and_even() -> None:
    assert shares(10, 3) == [range(0, 4), range(4, 7), range(7, 10)]
    assert shares(2, 1) == [range(0, 2)]
    got = shares(10_001, 4)
    assert [len(r) for r in got] == [2501, 2500, 2500, 2500]
    assert got[-1].stop == 10_001


def test_session_count_auto_and_capped_by_items() -> None:
    auto = settings(sessions="auto")
    assert [auto.session_count(n) for n in (1, 2500, 2501, 10_000, 100_000)] == [1, 1, 2, 4, 4]
    assert settings(sessions=8).session_count(3) == 3
    assert settings().session_count(10_000) == 1


def test_workers_above_sessions_is_a_config_error() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="workers"):
        settings(sessions=2, workers=3)
    assert settings(sessions=4, workers=2).workers == 2


def test_the_registry_makes_a_worker_source_only_when_asked() -> None:
    from bridge import plugins
    from bridge.connectors.opcua import OpcUaAddress
    from bridge.connectors.opcua._worker import OpcUaWorkerSource
    from bridge.types import SourceTag

    plugins.load_plugins()
    factory = plugins.source_kinds()["opcua"].factory
    tags = [SourceTag(f"t{i}", OpcUaAddress(node=f"nsu=urn:x;s={i}")) for i in range(10)]
    made = factory("p", settings(sessions=4, workers=2), tags)
    assert isinstance(made, OpcUaWorkerSource)
    assert made.workers == 2
    assert not isinstance(factory("p", settings(sessions=4), tags), OpcUaWorkerSource)


def test_the_liveness_probe_keeps_1_s_up_to_the_default_watchdog_and_grows_beyond() -> None:
    from bridge.connectors.opcua._session import probe_interval

    assert probe_interval(10) == 1.0  # the default: unchanged
    assert probe_interval(3) == 0.75  # short watchdogs (tests) unchanged
    assert probe_interval(100) == 10.0
