"""deploy/kubernetes/fleet.yaml, the fleet of gateways on Kubernetes, checked without a cluster.

Each check is a function over the parsed manifest: the tests run them on the file as it is,
and on copies broken one way each, which the matching check must refuse (so no check passes
whatever the file says). The mapping in the ConfigMap goes through `bridge validate`'s code path
(``prepare``) with the environment each pod gets (its name from the downward API, the Secrets'
values), with the OPC UA certificate made by the `bridge certs create` command the header gives.
kubernetes-validate (the schemas in a Python package), kubeconform, or kubectl with a cluster
to ask for the schemas validate the file in addition when they are there.
"""

from __future__ import annotations

import base64
import contextlib
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner

from bridge.connectors.opcua.cli import certs
from bridge.errors import ConfigError
from bridge.prepare import Prepared, prepare

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "deploy" / "kubernetes" / "fleet.yaml"
# The image copies mappings/ to /opt/bridge/mappings (deploy/Dockerfile).
IMAGE_MAPPINGS = ("/opt/bridge/mappings/", ROOT / "mappings")
# Names as a Deployment gives them: <deployment>-<pod template hash>-<5 characters>; the last
# one is from the ReplicaSet of another revision (during a rolling update).
POD_NAMES = (
    "bridge-fleet-7d9f8c6b5-abcde",
    "bridge-fleet-7d9f8c6b5-x2x7k",
    "bridge-fleet-66b4f9d7c-q8w4z",
)
# The mapping loader's ${VAR} and ${VAR:-default} (bridge.config.yamlsource).
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")

Doc = dict[str, Any]


def _load() -> list[Doc]:
    return [d for d in yaml.safe_load_all(FLEET.read_text()) if d]


def _all(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def _one(docs: list[Doc], kind: str) -> Doc:
    found = _all(docs, kind)
    assert len(found) == 1, f"{len(found)} of kind {kind} in {FLEET.name}, not one"
    return found[0]


def _named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in _all(docs, kind) if d["metadata"]["name"] == name]
    assert found, f"no {kind} {name!r} in {FLEET.name}"
    return found[0]


def _pod(docs: list[Doc]) -> Doc:
    pod: Doc = _one(docs, "Deployment")["spec"]["template"]
    return pod


def _container(docs: list[Doc]) -> Doc:
    (container,) = _pod(docs)["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _selects_the_pods(docs: list[Doc], selector: dict[str, str], what: str) -> None:
    labels = _pod(docs)["metadata"]["labels"]
    assert selector, f"{what}: empty selector"
    assert selector.items() <= labels.items(), f"{what}: {selector} does not select {labels}"


def _object_data(docs: list[Doc], kind: str, name: str) -> dict[str, str]:
    """The keys of a Secret or ConfigMap and their values, as the pod sees them."""
    doc = _named(docs, kind, name)
    data = dict(doc.get("stringData") or {})
    for key, value in (doc.get("data") or {}).items():
        data[key] = base64.b64decode(value).decode() if kind == "Secret" else value
    for key, value in (doc.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value).decode(errors="replace")
    return data


def _files_of(docs: list[Doc], volume: Doc) -> dict[str, str] | None:
    """File name -> text of a Secret or ConfigMap volume; None for other volumes."""
    if "secret" in volume:
        kind, name, items = "Secret", volume["secret"]["secretName"], volume["secret"].get("items")
    elif "configMap" in volume:
        kind, name = "ConfigMap", volume["configMap"]["name"]
        items = volume["configMap"].get("items")
    else:
        return None
    data = _object_data(docs, kind, name)
    if items is None:
        return data
    for item in items:
        assert item["key"] in data, f"volume {volume['name']}: {kind} {name} has no {item['key']}"
    return {item["path"]: data[item["key"]] for item in items}


# The checks -------------------------------------------------------------------------------


def check_kinds(docs: list[Doc]) -> None:
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "Secret",
            "Secret",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "Service",
        ]
    ), kinds
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), names
    # The store is PostgreSQL: nothing of a gateway is kept on a volume of its own.
    assert not _all(docs, "PersistentVolumeClaim")
    assert not [v for v in _pod(docs)["spec"]["volumes"] if "persistentVolumeClaim" in v]


def check_deployment(docs: list[Doc]) -> None:
    deployment = _one(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2, "a fleet of one takes over nothing"
    _selects_the_pods(docs, spec["selector"]["matchLabels"], "Deployment")
    # One gateway replaced at a time, and at least one replaced (else a rollout never moves).
    assert spec["strategy"]["type"] == "RollingUpdate"
    rolling = spec["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 1, rolling
    assert rolling["maxSurge"] == 0, rolling
    pod = spec["template"]["spec"]
    # The gateways on different nodes: a spread (or anti-affinity) over host names that
    # counts the fleet's own pods.
    spreads = [
        s
        for s in pod.get("topologySpreadConstraints", [])
        if s["topologyKey"] == "kubernetes.io/hostname"
        and s["whenUnsatisfiable"] == "DoNotSchedule"
    ]
    anti = pod.get("affinity", {}).get("podAntiAffinity", {})
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
        t["podAffinityTerm"]
        for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    ]
    terms = [t for t in terms if t["topologyKey"] == "kubernetes.io/hostname"]
    assert spreads or terms, "nothing keeps the gateways on different nodes"
    for rule in spreads + terms:
        _selects_the_pods(docs, rule["labelSelector"]["matchLabels"], "spread over nodes")
    assert pod["terminationGracePeriodSeconds"] >= 20, "the gateway needs time to drain"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = _container(docs)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][bound]), bound


def check_disruption_budget(docs: list[Doc]) -> None:
    budget = _one(docs, "PodDisruptionBudget")["spec"]
    deployment = _one(docs, "Deployment")["spec"]
    selector = budget["selector"]["matchLabels"]
    _selects_the_pods(docs, selector, "PodDisruptionBudget")
    assert selector == deployment["selector"]["matchLabels"]
    # At most one gateway evicted at a time, and one may be (else a node drain never ends).
    if "maxUnavailable" in budget:
        assert budget["maxUnavailable"] == 1, budget
    else:
        assert budget["minAvailable"] == deployment["replicas"] - 1, budget


def _port_names(container: Doc) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _names_a_port(container: Doc, port: str | int, what: str) -> None:
    ports = _port_names(container)
    if isinstance(port, int):
        assert port in ports.values(), f"{what}: the container declares no port {port}"
    else:
        assert port in ports, f"{what}: the container declares no port named {port!r}"


def check_services(docs: list[Doc]) -> None:
    container = _container(docs)
    services = {s["metadata"]["name"]: s for s in _all(docs, "Service")}
    for name, service in services.items():
        _selects_the_pods(docs, service["spec"]["selector"], f"Service {name}")
        for port in service["spec"]["ports"]:
            _names_a_port(container, port["targetPort"], f"Service {name}")
    # HMIs and MES systems: one address for the fleet, OPC UA and REST.
    fleet = services["bridge-fleet"]["spec"]
    assert fleet.get("clusterIP") != "None"
    assert {p["targetPort"] for p in fleet["ports"]} == {"opcua", "http"}
    # Prometheus: every pod on its own.
    (headless,) = [s["spec"] for s in services.values() if s["spec"].get("clusterIP") == "None"]
    assert [p["targetPort"] for p in headless["ports"]] == ["metrics"]


def check_probes(docs: list[Doc]) -> None:
    container = _container(docs)
    for probe, path in (
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        _names_a_port(container, get["port"], probe)


def _pod_env(docs: list[Doc], pod_name: str) -> dict[str, str]:
    """The container's environment in the pod named ``pod_name``."""
    container = _container(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            env.update(_object_data(docs, "Secret", source["secretRef"]["name"]))
        else:
            env.update(_object_data(docs, "ConfigMap", source["configMapRef"]["name"]))
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = str(entry["value"])
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            assert field == "metadata.name", f"{name}: a test pod has no {field}"
            env[name] = pod_name
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind, ref = (
                ("Secret", source["secretKeyRef"])
                if "secretKeyRef" in source
                else ("ConfigMap", source["configMapKeyRef"])
            )
            data = _object_data(docs, kind, ref["name"])
            assert ref["key"] in data, f"{name}: {kind} {ref['name']} has no key {ref['key']!r}"
            env[name] = data[ref["key"]]
        else:
            raise AssertionError(f"{name}: value from {sorted(source)}")
    return env


def _mapping_text(docs: list[Doc]) -> str:
    """The mapping the container runs: its last argument, in a ConfigMap volume."""
    container, pod = _container(docs), _pod(docs)["spec"]
    path = container["args"][-1]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        if path.startswith(mount["mountPath"] + "/"):
            files = _files_of(docs, volumes[mount["name"]])
            assert files is not None, f"{path} is not in a ConfigMap or Secret volume"
            relative = path[len(mount["mountPath"]) + 1 :]
            assert relative in files, f"{path}: the volume has {sorted(files)}"
            return files[relative]
    raise AssertionError(f"the mapping {path} is on no volume")


def check_variables(docs: list[Doc]) -> None:
    text = _mapping_text(docs)
    needed = {m.group(1) for m in VARIABLE.finditer(text) if m.group(2) is None}
    assert needed, "a fleet's mapping takes at least its gateway id from the pod"
    env = _pod_env(docs, POD_NAMES[0])  # every secretKeyRef names a key of a Secret
    assert needed <= set(env), f"not set in the container: {sorted(needed - set(env))}"
    # The gateway's id is the pod's name.
    gateway = yaml.safe_load(text)["gateway"]
    match = VARIABLE.fullmatch(gateway["id"])
    assert match, f"gateway.id is {gateway['id']!r}, the same in every pod"
    (entry,) = [e for e in _container(docs)["env"] if e["name"] == match.group(1)]
    assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def check_volumes(docs: list[Doc]) -> None:
    container, pod = _container(docs), _pod(docs)["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for volume in volumes.values():
        _files_of(docs, volume)  # its Secret or ConfigMap (and their keys) are in the file
    mounts = container["volumeMounts"]
    assert {m["name"] for m in mounts} <= set(volumes), "a mount names no volume"
    # Nothing is mounted inside a Secret or ConfigMap volume: they are read-only, so the
    # container runtime cannot make the mount point there.
    projected = [
        m["mountPath"] for m in mounts if {"secret", "configMap"} & set(volumes[m["name"]])
    ]
    for mount in mounts:
        for outer in projected:
            assert not mount["mountPath"].startswith(outer + "/"), (mount["mountPath"], outer)
    # Everything the gateway writes is on a volume: the root file system is read-only.
    writable = {m["mountPath"] for m in mounts if "emptyDir" in volumes[m["name"]]}
    assert {"/tmp", "/var/lib/bridge"} <= writable, writable


def _certs_create(header: str) -> tuple[list[tuple[str, str]], str]:
    """The options of the header's `bridge certs create` and the Secret it goes into."""
    text = re.sub(r"\\\s*\n#\s*", " ", header)
    command = re.search(r"bridge certs create ([^\n]*)", text)
    secret = re.search(r"kubectl create secret generic (\S+)", text)
    assert command and secret, "the header says how to make the OPC UA certificate"
    # Placeholders such as <namespace> are the user's to fill in.
    args = shlex.split(re.sub(r"<[^>]+>", "default", command.group(1)))
    return list(zip(args[::2], args[1::2], strict=True)), secret.group(1)


def check_mapping(docs: list[Doc], header: str, work: Path) -> list[Prepared]:
    """The mapping prepared (`bridge validate`'s checks) in each pod of ``POD_NAMES``, with the
    pod's Secret and ConfigMap volumes written under ``work``."""
    container, pod = _container(docs), _pod(docs)["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Where each Secret and ConfigMap volume is mounted -> where the test writes it.
    moved: dict[str, Path] = {}
    secret_dirs: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        files = _files_of(docs, volume)
        if files is None:
            continue
        folder = work / mount["name"]
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_text(content)
        moved[mount["mountPath"]] = folder
        if "secret" in volume:
            secret_dirs[volume["secret"]["secretName"]] = folder
    # The certificate and key in place of the placeholders, made as the header says.
    args, secret = _certs_create(header)
    assert secret in secret_dirs, f"the Secret {secret} is mounted nowhere"
    options = dict(args)
    for option in ("--cert", "--key"):
        assert (secret_dirs[secret] / options[option]).is_file(), (
            f"{option} {options[option]} is no key of the Secret {secret}"
        )
    with contextlib.chdir(secret_dirs[secret]):
        made = CliRunner().invoke(certs, ["create", *(a for pair in args for a in pair), "--force"])
    assert made.exit_code == 0, made.output
    # The mapping, its paths pointing where the test wrote the volumes and the image's files.
    text = _mapping_text(docs)
    replacements = [(f"{mount}/", f"{folder}/") for mount, folder in moved.items()]
    replacements.append((IMAGE_MAPPINGS[0], f"{IMAGE_MAPPINGS[1]}/"))
    for old, new in sorted(replacements, key=lambda r: -len(r[0])):
        text = text.replace(old, new)
    mapping = work / "mapping.yaml"
    mapping.write_text(text)
    prepared = [prepare(mapping, _pod_env(docs, name)) for name in POD_NAMES]
    for one in prepared:
        gateway = one.mapping.gateway
        assert gateway.fleet.enabled is True, "the gateways would each serve every asset"
        assert gateway.fleet.lease_s >= 3 * gateway.fleet.heartbeat_s
        assert gateway.fleet.mirror_s > 0, "an HMI on the Service would miss assets"
        assert gateway.store.startswith("postgresql"), gateway.store
    ids = [p.mapping.gateway.id for p in prepared]
    assert len(set(ids)) == len(POD_NAMES), ids
    _listens_on_the_declared_ports(container, prepared[0])
    return prepared


def _listens_on_the_declared_ports(container: Doc, prepared: Prepared) -> None:
    gateway = prepared.mapping.gateway
    ports = _port_names(container)
    assert gateway.api.enabled and gateway.api.host == "0.0.0.0"
    assert gateway.api.port == ports["http"], "the probes and the Service reach no API"
    address = gateway.metrics.address
    assert address is not None and address[1] == ports["metrics"]
    (server,) = [o for o in prepared.mapping.outputs.values() if o.kind == "opcua-server"]
    endpoint = urlsplit(str(server.settings.endpoint))
    assert endpoint.hostname == "0.0.0.0" and endpoint.port == ports["opcua"], endpoint


# The tests ---------------------------------------------------------------------------------

CHECKS: dict[str, Callable[[list[Doc]], None]] = {
    "kinds": check_kinds,
    "deployment": check_deployment,
    "disruption budget": check_disruption_budget,
    "services": check_services,
    "probes": check_probes,
    "variables": check_variables,
    "volumes": check_volumes,
}


def _header() -> str:
    lines = FLEET.read_text().splitlines()
    return "\n".join(line for line in lines[: lines.index("apiVersion: v1")])


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_the_fleet_manifest(check: Callable[[list[Doc]], None]) -> None:
    check(_load())


def test_the_fleet_mapping_validates_in_each_pod(tmp_path: Path) -> None:
    prepared = check_mapping(_load(), _header(), tmp_path)
    assert [p.mapping.gateway.id for p in prepared] == list(POD_NAMES)
    assert {p.mapping.gateway.store for p in prepared} == {
        "postgresql+psycopg://bridge:change-me@postgres:5432/bridge"
    }


def _service(docs: list[Doc], name: str) -> Doc:
    return _named(docs, "Service", name)


def _env(docs: list[Doc], name: str) -> Doc:
    entries: list[Doc] = [e for e in _container(docs)["env"] if e["name"] == name]
    (entry,) = entries
    return entry


def _volume(docs: list[Doc], name: str) -> Doc:
    volumes: list[Doc] = [v for v in _pod(docs)["spec"]["volumes"] if v["name"] == name]
    (volume,) = volumes
    return volume


def _set_mapping(docs: list[Doc], old: str, new: str) -> None:
    config = _named(docs, "ConfigMap", "bridge-fleet-mapping")["data"]
    assert old in config["mapping.yaml"]
    config["mapping.yaml"] = config["mapping.yaml"].replace(old, new)


BREAKS: dict[str, tuple[str, Callable[[list[Doc]], None]]] = {
    "a PersistentVolumeClaim": (
        "kinds",
        lambda d: d.append({"kind": "PersistentVolumeClaim", "metadata": {"name": "state"}}),
    ),
    "one replica": ("deployment", lambda d: _one(d, "Deployment")["spec"].update(replicas=1)),
    "a surge": (
        "deployment",
        lambda d: _one(d, "Deployment")["spec"]["strategy"]["rollingUpdate"].update(maxSurge=1),
    ),
    "a spread over other pods": (
        "deployment",
        lambda d: _pod(d)["spec"]["topologySpreadConstraints"][0]["labelSelector"].update(
            matchLabels={"app": "other"}
        ),
    ),
    "no spread": ("deployment", lambda d: _pod(d)["spec"].pop("topologySpreadConstraints")),
    "a budget selecting nothing": (
        "disruption budget",
        lambda d: _one(d, "PodDisruptionBudget")["spec"]["selector"].update(
            matchLabels={"app.kubernetes.io/name": "bridge"}
        ),
    ),
    "a budget of two": (
        "disruption budget",
        lambda d: _one(d, "PodDisruptionBudget")["spec"].update(maxUnavailable=2),
    ),
    "a Service selecting nothing": (
        "services",
        lambda d: _service(d, "bridge-fleet")["spec"].update(selector={"app": "bridge"}),
    ),
    "a Service on an undeclared port": (
        "services",
        lambda d: _service(d, "bridge-fleet")["spec"]["ports"][0].update(targetPort="opc-ua"),
    ),
    "a scrape on an undeclared port": (
        "services",
        lambda d: _service(d, "bridge-fleet-metrics")["spec"]["ports"][0].update(targetPort=9090),
    ),
    "readiness on /livez": (
        "probes",
        lambda d: _container(d)["readinessProbe"]["httpGet"].update(path="/livez"),
    ),
    "a probe on an undeclared port": (
        "probes",
        lambda d: _container(d)["livenessProbe"]["httpGet"].update(port="api"),
    ),
    "a variable the pod lacks": (
        "variables",
        lambda d: _container(d)["env"].remove(_env(d, "BRIDGE_DB_PASSWORD")),
    ),
    "a Secret key that is not there": (
        "variables",
        lambda d: _env(d, "BRIDGE_MES_TOKEN")["valueFrom"]["secretKeyRef"].update(key="token"),
    ),
    "a Secret that is not there": (
        "variables",
        lambda d: _env(d, "BRIDGE_HMI_PASSWORD")["valueFrom"]["secretKeyRef"].update(
            name="hmi-secrets"
        ),
    ),
    "one id for all pods": ("variables", lambda d: _set_mapping(d, "${BRIDGE_GATEWAY_ID}", "gw")),
    "the id from the node": (
        "variables",
        lambda d: _env(d, "BRIDGE_GATEWAY_ID")["valueFrom"]["fieldRef"].update(
            fieldPath="spec.nodeName"
        ),
    ),
    "a Secret volume of another Secret": (
        "volumes",
        lambda d: _volume(d, "opcua")["secret"].update(secretName="opcua-certs"),
    ),
    "a ConfigMap volume of another ConfigMap": (
        "volumes",
        lambda d: _volume(d, "hmi-trust")["configMap"].update(name="trust"),
    ),
    "a mount inside a Secret volume": (
        "volumes",
        lambda d: _container(d)["volumeMounts"].append(
            {"name": "tmp", "mountPath": "/etc/bridge/opcua/tmp"}
        ),
    ),
}


@pytest.mark.parametrize("break_it", BREAKS.values(), ids=BREAKS.keys())
def test_each_check_refuses_a_broken_manifest(
    break_it: tuple[str, Callable[[list[Doc]], None]],
) -> None:
    check, change = break_it
    docs = _load()
    change(docs)
    with pytest.raises((AssertionError, KeyError)):
        CHECKS[check](docs)


def _rename_the_key(docs: list[Doc]) -> None:
    data = _named(docs, "Secret", "bridge-fleet-opcua")["stringData"]
    data["tls.key"] = data.pop("key.pem")


MAPPING_BREAKS: dict[str, Callable[[list[Doc]], None]] = {
    "fleet off": lambda d: _set_mapping(d, "enabled: true", "enabled: false"),
    "a SQLite store": lambda d: _set_mapping(
        d,
        "postgresql+psycopg://bridge:${BRIDGE_DB_PASSWORD}@postgres:5432/bridge",
        "sqlite:////var/lib/bridge/bridge.db",
    ),
    "one id for all pods": lambda d: _set_mapping(d, "${BRIDGE_GATEWAY_ID}", "gateway"),
    "a lease of two heartbeats": lambda d: _set_mapping(d, "lease_s: 5", "lease_s: 2"),
    "the HMI server on another port": lambda d: _set_mapping(d, "0.0.0.0:4840", "0.0.0.0:4850"),
    "the key under another name": _rename_the_key,
    "a certificate of another application": lambda d: _set_mapping(
        d, "application_uri: urn:bridge:gateway", "application_uri: urn:plant:hmi-server"
    ),
}


@pytest.mark.parametrize("change", MAPPING_BREAKS.values(), ids=MAPPING_BREAKS.keys())
def test_the_mapping_check_refuses_a_broken_mapping(
    change: Callable[[list[Doc]], None], tmp_path: Path
) -> None:
    docs = _load()
    change(docs)
    with pytest.raises((AssertionError, ConfigError)):
        check_mapping(docs, _header(), tmp_path)


def test_the_header_says_how_to_make_the_opcua_certificate() -> None:
    args, secret = _certs_create(_header())
    options = dict(args)
    docs = _load()
    keys = set(_object_data(docs, "Secret", secret))
    assert {options["--cert"], options["--key"]} == keys
    text = _mapping_text(docs)
    assert f"application_uri: {options['--application-uri']}" in text
    # The certificate names the Service an HMI connects to.
    assert ("--hostname", "bridge-fleet") in args


def test_the_manifest_follows_the_kubernetes_schemas() -> None:
    """Strict: a misspelt or misplaced key is refused (the schemas ship with the package)."""
    schemas = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed"
    )
    for doc in _load():
        schemas.validate(doc, schemas.latest_version(), strict=True)
    broken = _load()
    _one(broken, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurg"] = 0
    with pytest.raises(schemas.ValidationError):
        for doc in broken:
            schemas.validate(doc, schemas.latest_version(), strict=True)


KUBECONFORM = shutil.which("kubeconform")
KUBECTL = shutil.which("kubectl")
# What a tool says when it cannot reach its schemas (no network, no cluster): not a finding.
UNREACHABLE = (
    "connection refused",
    "unable to connect",
    "no such host",
    "failed to download",
    "error while downloading",
    "couldn't get current server api group list",
    "the server could not find the requested resource",
    "i/o timeout",
)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and any(
        marker in (done.stdout + done.stderr).lower() for marker in UNREACHABLE
    ):
        pytest.skip(f"{command[0]} cannot reach its schemas: {done.stderr.strip()[:200]}")
    return done


@pytest.mark.skipif(KUBECONFORM is None, reason="kubeconform is not installed")
def test_kubeconform_accepts_the_manifest() -> None:
    assert KUBECONFORM is not None
    done = _run([KUBECONFORM, "-strict", "-summary", str(FLEET)])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_accepts_the_manifest() -> None:
    """A client-side dry run: kubectl validates against the schemas of the cluster it is
    configured for, and changes nothing there."""
    assert KUBECTL is not None
    context = subprocess.run(
        [KUBECTL, "config", "current-context"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if context.returncode != 0:
        pytest.skip("kubectl has no cluster configured to take the schemas from")
    done = _run(
        [KUBECTL, "apply", "--dry-run=client", "--validate=strict", "-o", "name", "-f", str(FLEET)]
    )
    assert done.returncode == 0, done.stdout + done.stderr
