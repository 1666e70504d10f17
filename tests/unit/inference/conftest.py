"""Fixtures for the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest

BUNDLED_MODEL = Path(__file__).resolve().parents[3] / "mappings" / "models" / "pump_health.onnx"


@pytest.fixture
def bundled_model() -> Path:
    assert BUNDLED_MODEL.is_file(), "run python -m bridge.simulators.plant.build_model"
    return BUNDLED_MODEL
