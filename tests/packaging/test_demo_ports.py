"""`bridge demo`'s ports: options, BRIDGE_DEMO_*_PORT variables and --port-offset pick them, and a
port something else listens on stops the demo before it starts, naming the port and the option."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import LOOPBACK, free_port

from bridge.cli import main
from bridge.cli.report import EXIT_FAILED
from bridge.simulators.cli import demo_ports
from bridge.simulators.demo import DEFAULT_MAPPING
from bridge.simulators.demo_ports import DemoPorts


def test_a_given_port_wins_over_the_offset_which_moves_the_rest() -> None:
    ports = demo_ports(100, {"plant": None, "plc": None, "mes": 9999, "api": None, "hmi": None})
    assert ports == DemoPorts(plant=4940, plc=5120, mes=9999, api=8100, hmi=4950)


def test_the_demo_mapping_sees_the_environment_and_the_ports_in_use(tmp_path: Path) -> None:
    env = DemoPorts(api=9001).env(
        tmp_path, {"BRIDGE_DEMO_API_PORT": "1234", "MES_TOKEN": "t0k", "BRIDGE_DEMO_STORE": "x"}
    )
    # The port the API really binds, the rest of the environment as it was.
    assert env["BRIDGE_DEMO_API_PORT"] == "9001"
    assert env["MES_TOKEN"] == "t0k"
    assert env["BRIDGE_DEMO_STORE"] == "x"
    default_store = DemoPorts().env(tmp_path, {})["BRIDGE_DEMO_STORE"]
    assert default_store == f"sqlite:///{tmp_path.resolve() / 'bridge.db'}"


def test_the_bundled_mapping_and_model_are_package_data() -> None:
    assert DEFAULT_MAPPING.is_file()
    assert (DEFAULT_MAPPING.parent / "models" / "pump_health.onnx").is_file()
    repo = Path(__file__).resolve().parents[2] / "mappings"
    # One copy to edit: the package's files are the repository's mapping and model.
    assert DEFAULT_MAPPING.read_bytes() == (repo / "demo.yaml").read_bytes()
    bundled = DEFAULT_MAPPING.parent / "models" / "pump_health.onnx"
    assert bundled.read_bytes() == (repo / "models" / "pump_health.onnx").read_bytes()


@pytest.mark.parametrize("name", ["plant", "plc", "mes", "api", "hmi"])
def test_a_busy_port_names_itself_and_the_option_to_change_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("PLANT", "PLC", "MES", "API", "HMI"):
        monkeypatch.delenv(f"BRIDGE_DEMO_{var}_PORT", raising=False)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        args = ["demo", "--duration", "5", "--workdir", str(tmp_path / "w")]
        # The other ports: free ones (an offset from the defaults might collide here).
        for other in ("plant", "plc", "mes", "api", "hmi"):
            args += [f"--{other}-port", str(busy if other == name else free_port())]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_FAILED, result.output
    assert f"port {busy} on 127.0.0.1" in result.output
    assert f"--{name}-port" in result.output and "--port-offset" in result.output
    assert "Traceback" not in result.output
    # Refused before anything started: no store, no key.
    assert not (tmp_path / "w" / "api-key").exists()


@pytest.mark.timeout(300)  # the simulators and the gateway start before the bind fails
def test_a_port_taken_after_the_check_is_named_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program binds the HMI port between the check and the gateway's start: the OPC UA
    server's bind error becomes the same message (it was a bare OSError 98 that ended the demo)."""
    monkeypatch.setattr(DemoPorts, "check_free", lambda self, host="127.0.0.1": None)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        busy = taken.getsockname()[1]
        args = ["demo", "--duration", "30", "--workdir", str(tmp_path / "w"), "--hmi-port"]
        args.append(str(busy))
        for other in ("plant", "plc", "mes", "api"):
            args += [f"--{other}-port", str(free_port())]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == EXIT_FAILED, result.output
    assert f"port {busy} on 127.0.0.1 (the gateway's OPC UA server) is in use" in result.output
    assert "--hmi-port" in result.output
