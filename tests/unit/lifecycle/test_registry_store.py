"""The registry on real SQLite and PostgreSQL: register, activate, shadow, canary, promote,
rollback; signatures; quantized model agreement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from stores import BACKENDS, temp_store

from bridge.errors import BridgeError
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.quantize import quantize
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.signature import (
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_model,
)
from bridge.store.db import Store
from bridge.store.registry import RegistryError, RegistryRepository


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "r.db") as s:
        yield s


def _states(svc: RegistryService) -> dict[str, str]:
    return {r.version: r.state for r in svc.list("m")}


def test_state_changes_and_rollback(store: Store, variants: dict[str, Path]) -> None:
    svc = RegistryService(
        RegistryRepository(store), ModelPolicy(directory=variants["pump_health_v1"].parent)
    )
    svc.register(variants["pump_health_v1"], "m", "1", actor="t", activate=True)
    svc.register(variants["pump_health_v2"], "m", "2", actor="t")
    svc.register(variants["always_fault"], "m", "3", actor="t")
    with pytest.raises(RegistryError, match="already registered"):
        svc.register(variants["always_fault"], "m", "3", actor="t")
    svc.shadow("m", "2", "t")
    assert _states(svc) == {"1": "active", "2": "shadow", "3": "registered"}
    svc.canary("m", "3", "t", share=25.0, guard={"max_disagreement": 0.5})
    assert _states(svc) == {"1": "active", "2": "retired", "3": "canary"}
    assert svc.show("m", "3").canary_share == 25.0
    svc.rollback("m", "t")  # ends the candidate
    assert _states(svc) == {"1": "active", "2": "retired", "3": "retired"}
    svc.canary("m", "2", "t", assets=["pump-a"])
    svc.promote("m", "t")
    assert _states(svc)["2"] == "active" and _states(svc)["1"] == "retired"
    svc.rollback("m", "t")  # no candidate: back to the previous active version
    assert _states(svc) == {"1": "active", "2": "retired", "3": "retired"}
    assert [e.action for e in svc.repo.events("m")][:3] == ["rollback", "promote", "canary"]
    assert svc.show("m").version == "1"


def test_signature_required_when_key_configured(
    store: Store, variants: dict[str, Path], tmp_path: Path
) -> None:
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    policy = ModelPolicy(
        public_key=load_public_key(tmp_path / "k.pub"),
        directory=variants["pump_health_v1"].parent,
    )
    svc = RegistryService(RegistryRepository(store), policy)
    with pytest.raises(BridgeError, match="no signature"):
        svc.register(variants["pump_health_v1"], "m", "1", actor="t")
    from bridge.inference.model import file_sha256

    sha = file_sha256(variants["pump_health_v1"])
    good = sign_model(load_private_key(tmp_path / "k"), "m", "1", sha)
    wrong = sign_model(load_private_key(tmp_path / "k"), "m", "1", "0" * 64)
    with pytest.raises(BridgeError, match="does not match"):
        svc.register(variants["pump_health_v1"], "m", "1", actor="t", signature=wrong)
    record = svc.register(variants["pump_health_v1"], "m", "1", actor="t", signature=good)
    assert record.signature == good


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_quantized_agreement_is_measured(
    variants: dict[str, Path], tmp_path: Path, method: str
) -> None:
    rng = np.random.default_rng(3)
    centre = np.array([5.0, 0.4, 6.2, 55.7, 0.16, 4.2, 1470.0])
    spread = np.array([3.0, 0.3, 3.8, 9.6, 0.25, 0.2, 5.6])
    x = (centre + spread * rng.normal(size=(600, 7))).astype(np.float32)
    out = tmp_path / f"q_{method}.onnx"
    report = quantize(variants["pump_health_v1"], out, x[:300], x[300:], method)  # type: ignore[arg-type]
    from bridge.inference import LoadedModel

    float_labels = LoadedModel.load(variants["pump_health_v1"]).run(x[300:]).labels
    int8_labels = LoadedModel.load(out).run(x[300:]).labels
    assert float_labels is not None and int8_labels is not None
    assert 0 < float_labels.mean() < 1, "the golden set must hold both classes"
    assert report.agreement == pytest.approx(float(np.mean(float_labels == int8_labels)))
    assert report.agreement >= 0.9 and report.golden_rows == 300 and report.int8_bytes > 0
