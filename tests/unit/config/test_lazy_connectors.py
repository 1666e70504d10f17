"""Validating a mapping needs the connectors' config models only, never their protocol
libraries (they were most of ``bridge validate``'s start-up, bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

_PROBE = """
import json, sys
LIBRARIES = {"asyncua", "pymodbus", "httpx", "aiomqtt", "paho", "google"}
from bridge.config import load_mapping
mapping = load_mapping(sys.argv[1], {"HMI_PASSWORD": "x", "MES_TOKEN": "y"})
print(json.dumps({
    "kinds": sorted(
        {s.kind for s in mapping.sources.values()} | {o.kind for o in mapping.outputs.values()}
    ),
    "loaded": sorted({m.split(".")[0] for m in sys.modules} & LIBRARIES),
}))
"""


def test_loading_a_mapping_imports_no_protocol_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(ROOT / "mappings" / "example.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    # The example uses every connector kind, so each one's settings were validated.
    assert {"opcua", "modbus", "opcua-server", "mes-rest"} <= set(result["kinds"])
    assert result["loaded"] == []


def test_connector_classes_stay_importable_by_name() -> None:
    from bridge.connectors.mes import MesDestination
    from bridge.connectors.modbus import ModbusSource
    from bridge.connectors.opcua import OpcUaSource, PredictionServer
    from bridge.connectors.webhook import WebhookDestination

    classes = (MesDestination, ModbusSource, OpcUaSource, PredictionServer, WebhookDestination)
    assert {c.__name__ for c in classes} == {
        "MesDestination",
        "ModbusSource",
        "OpcUaSource",
        "PredictionServer",
        "WebhookDestination",
    }
