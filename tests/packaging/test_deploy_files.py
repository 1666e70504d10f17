"""The deployment files, checked without a container engine or a cluster: deploy/compose.yaml
against the Compose Specification's JSON Schema (vendored, schemas/README.md), the gateway's
mappings of the compose plant and the Kubernetes ConfigMap through `bridge validate`'s code path,
the systemd unit with `systemd-analyze verify` and its offline security score, and the
Kubernetes manifest's essentials (probes on /livez and /readyz, non-root, resources)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from bridge.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
BUNDLED_MODEL = ROOT / "mappings" / "models" / "pump_health.onnx"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_follows_the_compose_specification() -> None:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, errors
    # The schema is strict enough to catch a misspelt key (what this test is for).
    broken = _compose()
    broken["services"]["bridge"]["restart_policy"] = "always"
    assert not validator.is_valid(broken)


def test_compose_runs_a_whole_demo_plant_around_the_gateway() -> None:
    services = _compose()["services"]
    assert {"bridge", "postgres", "mosquitto", "plant", "plc", "mes"} <= set(services)
    bridge = services["bridge"]
    assert bridge["build"]["dockerfile"] == "deploy/Dockerfile"
    assert bridge["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("plant", "plc", "mes"):
        assert services[name]["build"]["dockerfile"] == "deploy/simulators.Dockerfile"
    # Every published port is on the host's loopback only.
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    # Files the compose file mounts exist next to it.
    for service in services.values():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict) and volume["type"] == "bind":
                assert (DEPLOY / volume["source"]).is_file(), volume


def _with_model(mapping_text: str, tmp_path: Path, name: str) -> Path:
    """The mapping where the image has it: next to the bundled model (models/ relative to it)."""
    (tmp_path / "models").mkdir(exist_ok=True)
    shutil.copy(BUNDLED_MODEL, tmp_path / "models" / BUNDLED_MODEL.name)
    text = mapping_text.replace("/opt/bridge/mappings/models/", "models/")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_compose_plants_mapping_validates(tmp_path: Path) -> None:
    mapping = _with_model((DEPLOY / "compose" / "bridge.yaml").read_text(), tmp_path, "c.yaml")
    env = {"POSTGRES_PASSWORD": "pw", "MES_TOKEN": "token"}
    prepared = prepare(mapping, env)
    assert set(prepared.mapping.sources) == {"plant", "line-plc"}
    assert set(prepared.mapping.outputs) == {"hmi", "mes"}
    # The compose file hands the mapping every variable it needs.
    environment = _compose()["services"]["bridge"]["environment"]
    assert set(env) <= set(environment)


def _k8s() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "bridge.yaml").read_text()) if d]
    return docs


def _one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _k8s() if d["kind"] == kind]
    return doc


def test_kubernetes_manifest_has_probes_runs_unprivileged_and_is_bounded() -> None:
    assert [d["kind"] for d in _k8s()] == [
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ]
    deployment = _one("Deployment")
    spec = deployment["spec"]
    # One gateway at a time on its SQLite volume: no rolling overlap.
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # What the pod mounts and reads exists in the manifest.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["mapping"]["configMap"]["name"] == _one("ConfigMap")["metadata"]["name"]
    claim = volumes["state"]["persistentVolumeClaim"]["claimName"]
    assert claim == _one("PersistentVolumeClaim")["metadata"]["name"]
    assert container["envFrom"][0]["secretRef"]["name"] == _one("Secret")["metadata"]["name"]
    service = _one("Service")
    assert service["spec"]["selector"] == spec["template"]["metadata"]["labels"]


def test_the_kubernetes_mapping_validates_with_the_pods_environment(tmp_path: Path) -> None:
    config = _one("ConfigMap")["data"]["mapping.yaml"]
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update(_one("Secret")["stringData"])
    prepared = prepare(_with_model(config, tmp_path, "mapping.yaml"), env)
    assert prepared.mapping.gateway.store == "sqlite:////var/lib/bridge/bridge.db"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/bridge" in mounts  # the store is on the claim, not the read-only root


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    text = (DEPLOY / "systemd" / "bridge.service").read_text()
    # verify checks that ExecStart's program exists: point it at this environment's bridge.
    bridge = Path(sys.executable).parent / "bridge"
    assert bridge.exists()
    unit = tmp_path / "bridge.service"
    unit.write_text(text.replace("/opt/bridge/bin/bridge", str(bridge)))
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # Unknown or misspelt settings are only warnings: any line naming the unit fails the test.
    assert done.returncode == 0, done.stderr
    assert "bridge.service" not in done.stderr, done.stderr
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "StateDirectory": "bridge",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        # `systemctl reload` is the gateway's hot reload, not a restart.
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }.items():
        assert settings.get(key) == value, key
    security = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    last = (security.stdout + security.stderr).strip().splitlines()[-1]
    # e.g. "→ Overall exposure level for bridge.service: 1.7 OK 🙂" (0 best, 10 worst).
    exposure = float(last.split(":")[1].split()[0])
    assert exposure <= 2.0, last


def test_systemd_analyze_finds_a_misspelt_setting(tmp_path: Path) -> None:
    """The check above is not a rubber stamp."""
    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "bridge.service"
    text = (DEPLOY / "systemd" / "bridge.service").read_text()
    bridge = Path(sys.executable).parent / "bridge"
    unit.write_text(
        text.replace("/opt/bridge/bin/bridge", str(bridge)).replace(
            "NoNewPrivileges=", "NoNewPrivilegez="
        )
    )
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "NoNewPrivilegez" in done.stderr


def test_images_run_unprivileged_and_the_gateways_checks_livez() -> None:
    gateway = (DEPLOY / "Dockerfile").read_text()
    assert "ENV BRIDGE_HEALTH_URL=http://127.0.0.1:8000/livez" in gateway
    assert "HEALTHCHECK" in gateway and "BRIDGE_HEALTH_URL" in gateway.split("HEALTHCHECK")[1]
    simulators = (DEPLOY / "simulators.Dockerfile").read_text()
    for text in (gateway, simulators):
        users = [line.split()[1] for line in text.splitlines() if line.startswith("USER")]
        assert users == ["10001"], users
