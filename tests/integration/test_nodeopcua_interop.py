"""Interoperability with an independent OPC UA stack: node-opcua (pinned by
``bench/setup_nodeopcua.sh``) and asyncua each drive the gateway's PredictionServer through the
same scenarios, over Basic256Sha256 SignAndEncrypt with a user, and the test holds both to the
same expectations and compares what each stack reports (a bug shared by both ends of an
asyncua-only test cannot hide here).

1. browse: Objects down to Predictions/<asset>/<model>/<variable> and its properties, and the
   alarms' condition nodes: node ids, browse names, node classes, DataTypes, access levels,
   values and every reference, as each stack decodes them, must be equal.
2. secure session: both decode the same endpoints (GetEndpoints); each stack's own application
   certificate is refused and filed in ``rejected/``, trusted with ``bridge certs trust``,
   then accepted without a restart; an operator logs in; a wrong password and an unknown user
   are refused; anonymous is refused.
3. subscribe: a String (classifier) and a Double Value through the initial
   BadWaitingForInitialData, Good, UncertainLastUsableValue and BadNoCommunication, with the
   prediction's time as SourceTimestamp to the microsecond.
4. the feedback method ``Acknowledge`` (PredictionId + Comment): accepted for an operator (the
   label is stored, SQLite and PostgreSQL), refused for a reader (BadUserAccessDenied).
5. alarms (OffNormalAlarmType conditions over the store's alerts): an event item on the Server
   object gets the alarm when a label leaves normal, every selected field decoded alike;
   Acknowledge and Confirm on the condition (i=9111 / i=9113, the EventId each stack received)
   by an operator, once from each stack, stored on the alert by that user, refused for a
   reader; ConditionRefresh for a late subscriber; node-opcua's own alarm list
   (installAlarmMonitoring), an expected failure: a server limitation (README).
6. HistoryRead of a prediction's Value: 3,000 stored predictions raw through continuation
   points, a point released then refused, a processed Average; both stacks read the same
   values, status codes and source times as the rows written (SQLite and PostgreSQL).

Adding a scenario: a script in tests/peers/interop/ built on common.js (``run``, ``connect``,
``emit``, ``plain``) that takes ``Gateway.config(user, **fields)`` and prints JSON lines;
``run_node`` runs it to the end, ``node_script`` keeps it running while the test acts (its
stdin closing ends it). The asyncua side of the same scenario goes through ``asyncua_session``.
The module shares one gateway (SQLite store, alert writer, alarms, history); each alarm
scenario has an asset of its own, so none depends on another's order.

node-opcua's ``NodeId.toString()`` writes namespace 0 as ``ns=0;i=85`` where asyncua writes
``i=85``: only that spelling is normalized (``_canonical``) before comparing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import enum
import itertools
import json
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from stores import BACKENDS, temp_store
from support import free_port, wait_until

from bridge.connectors.opcua import PredictionServer
from bridge.connectors.opcua.certs import create_application_certificate, thumbprint
from bridge.connectors.opcua.cli import certs
from bridge.connectors.opcua.encode import node_string
from bridge.connectors.opcua.server_config import (
    LoginLockout,
    OpcUaServerSettings,
    OpcUaServerUser,
)
from bridge.runtime.alarms import StoreAlarms
from bridge.runtime.alertsink import AlertSink
from bridge.runtime.insight_wiring import StoreFeedback
from bridge.store.alerts import AlertRepository
from bridge.store.db import Store
from bridge.store.hmihistory import StoreHmiHistory
from bridge.store.labels import LabelRepository
from bridge.store.lineage import LineageRepository
from bridge.store.outbox import OutboxRepository
from bridge.store.repository import PredictionRepository
from bridge.types import (
    AlarmPolicy,
    Explanation,
    Prediction,
    PredictionSlot,
    Quality,
    SinkContext,
)

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "bench" / "nodeopcua" / "node_modules"
SCRIPTS = ROOT / "tests" / "peers" / "interop"
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        shutil.which("node") is None or not (MODULES / "node-opcua-client").is_dir(),
        reason="node-opcua not installed: run bench/setup_nodeopcua.sh (needs node and npm)",
    ),
]
# Generous: the first node start after the install reads ~70 MB of modules from a cold cache,
# and each script makes a 2048-bit RSA session on a shared 2-core machine.
DEADLINE_S = 60.0
NS = "urn:test:interop"
OPERATOR = ("ops", "0ps-pw")
READER = ("hmi", "s3cret")
ASYNCUA_URI = "urn:bridge:interop:asyncua"
SHA = "a" * 64
CLASSIFIER = PredictionSlot("P1", "health", "1.0.0", SHA, labels=("ok", "fault"))
REGRESSOR = PredictionSlot("P1", "rul", "1.0.0", SHA, unit="h")
# Written only by the subscribe scenario: its clients see the initial status first.
LIVE = (
    PredictionSlot("S1", "health", "1.0.0", SHA, labels=("ok", "fault")),
    PredictionSlot("S1", "rul", "1.0.0", SHA, unit="h"),
)
GATEWAY = "gw"
# The alarm scenarios' classifiers, one asset each, so no scenario sees another's alarm change
# state: events (E1), acknowledge (K1: node-opcua, K2: asyncua), ConditionRefresh (R1),
# node-opcua's alarm list (L1).
SEVERITY = 700
ALARM_LABELS = ("ok", "fault")  # the first label is the normal one (bridge.alertrule)
ALARMED = {
    asset: PredictionSlot(
        asset, "health", "2.0.1", SHA, labels=ALARM_LABELS, alarm=AlarmPolicy(SEVERITY)
    )
    for asset in ("E1", "K1", "K2", "R1", "L1")
}
# HistoryRead: a regressor whose thousands of predictions are written to the store only.
HISTORY = PredictionSlot("H1", "rul", "1.0.0", SHA, unit="h")
SLOTS = (CLASSIFIER, REGRESSOR, *LIVE, *ALARMED.values(), HISTORY)
REASON = "bearing temperature +18 degC above normal"


def nsu(asset: str, model: str, field: str | None = None) -> str:
    return f"nsu={NS};s={node_string(asset, model, field)}"


def prediction(
    slot: PredictionSlot,
    seq: int,
    value: str | float | None,
    quality: Quality = Quality.GOOD,
    when: float | None = None,
    score: float | None = 0.75,
) -> Prediction:
    return Prediction(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"interop/{slot.asset}/{slot.model}/{seq}")),
        seq=seq,
        asset=slot.asset,
        model=slot.model,
        version=slot.version,
        sha256=slot.sha256,
        value=value,
        score=score,
        quality=quality,
        timestamp=time.time() - 60 + seq if when is None else when,
        input_age_s=0.5,
        drift_score=0.125,
        explanation=Explanation(REASON, ()) if slot.labels else None,
    )


# --- node-opcua side ------------------------------------------------------------------------


class NodeScript:
    """A running scenario script: its JSON lines, one at a time."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc

    async def line(self) -> dict[str, Any]:
        """The next JSON line (node-opcua prints its own log lines on stdout too: skipped)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(DEADLINE_S):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"{self.name}.js ended: {await self._failure()}")
                text = raw.decode(errors="replace").strip()
                if text.startswith("{"):
                    note: dict[str, Any] = json.loads(text)
                    if "error" in note:
                        raise AssertionError(f"{self.name}.js failed: {note}")
                    return note

    async def finish(self) -> None:
        """Close its stdin (a streaming script's signal to stop) and require exit code 0."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(DEADLINE_S):
            code = await self.proc.wait()
        assert code == 0, f"{self.name}.js exited {code}: {await self._failure()}"

    async def _failure(self) -> str:
        assert self.proc.stderr is not None
        async with asyncio.timeout(10):
            code = await self.proc.wait()
            err = (await self.proc.stderr.read()).decode(errors="replace")
        return f"exit code {code}: {err[-2000:]}"


@contextlib.asynccontextmanager
async def node_script(name: str, config: dict[str, Any]) -> AsyncIterator[NodeScript]:
    """``node tests/peers/interop/<name>.js <config>``, stopped (and reaped) however the test
    ends."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPTS / f"{name}.js"),
        json.dumps({"timeoutS": DEADLINE_S, **config}),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield NodeScript(name, proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def run_node(name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every JSON line of a script that runs to its end by itself (exit code 0 required)."""
    async with node_script(name, config) as script:
        assert script.proc.stdout is not None
        async with asyncio.timeout(DEADLINE_S + 10):
            out, err = await script.proc.communicate()
        lines = [json.loads(t) for t in out.decode().splitlines() if t.startswith("{")]
        assert script.proc.returncode == 0, (
            f"{name}.js exited {script.proc.returncode}: {lines[-1:]} {err.decode()[-2000:]}"
        )
        return lines


_NS0 = re.compile(r"^ns=0;(?=[isgb]=)")


def _canonical(value: Any) -> Any:
    """node-opcua's output with namespace-0 node ids spelled as asyncua spells them."""
    if isinstance(value, str):
        return _NS0.sub("", value)
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    return value


# --- asyncua side ---------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """An asyncua value as node-opcua's scripts print theirs (common.js ``plain``): DateTime as
    ISO text to the millisecond, structures as their fields in lowerCamelCase."""
    if value is None:
        return None
    if isinstance(value, ua.LocalizedText):
        return {"locale": value.Locale, "text": value.Text}
    if isinstance(value, ua.QualifiedName):
        return f"{value.NamespaceIndex}:{value.Name}"
    if isinstance(value, ua.NodeId):
        return value.to_string()
    if isinstance(value, ua.StatusCode):
        return value.name
    if isinstance(value, ua.Variant):
        return plain(value.Value)
    if isinstance(value, datetime):
        stamp = value.astimezone(UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value):
        return {
            f.name[0].lower() + f.name[1:]: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
        }
    return value


def status_of(dv: ua.DataValue) -> str:
    """A DataValue's status name (no StatusCode on the wire means Good)."""
    return "Good" if dv.StatusCode is None else dv.StatusCode.name


@contextlib.asynccontextmanager
async def asyncua_session(
    gw: Gateway, user: tuple[str, str] | None, cert: Path | None = None, key: Path | None = None
) -> AsyncIterator[Client]:
    """An asyncua client with a SignAndEncrypt session as ``user`` (None: anonymous)."""
    client = Client(gw.endpoint, timeout=5)
    client.application_uri = ASYNCUA_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(cert or gw.asyncua_cert),
        str(key or gw.asyncua_key),
        server_certificate=str(gw.server_cert),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
    if user is not None:
        client.set_user(user[0])
        client.set_password(user[1])
    try:
        await client.connect()
    except BaseException:
        client.disconnect_socket()
        raise
    try:
        yield client
    finally:
        await client.disconnect()


async def node_of(client: Client, text: str) -> ua.NodeId:
    """``nsu=<uri>;s=...`` as a NodeId of this session (the index from its NamespaceArray)."""
    found = re.fullmatch(r"nsu=([^;]+);s=(.*)", text)
    if found is None:
        return ua.NodeId.from_string(text)
    index: Any = await client.get_namespace_index(found[1])
    identifier: Any = found[2]
    return ua.NodeId(identifier, index)


# --- the gateway ----------------------------------------------------------------------------


@dataclass
class Gateway:
    server: PredictionServer
    store: Store
    endpoint: str
    server_cert: Path
    pki_dir: Path  # the server's trust list of client application certificates
    nodeopcua_pki: Path  # node-opcua's own certificate store: its certificate is trusted
    asyncua_cert: Path  # asyncua's application certificate: trusted
    asyncua_key: Path
    alert_writer: AlertSink

    @property
    def alerts(self) -> AlertRepository:
        return AlertRepository(self.store, gateway=GATEWAY)

    async def write(self, batch: Sequence[Prediction]) -> None:
        """As the gateway's fan-out does: stored, handed to the alert writer (the alerts an
        Acknowledge acts on), then to the HMI server."""
        await asyncio.to_thread(PredictionRepository(self.store).add_many, list(batch))
        await self.alert_writer.write(batch)
        await self.server.write(batch)

    def config(self, user: tuple[str, str] | None, **scenario: Any) -> dict[str, Any]:
        """The JSON argument of a scenario script (tests/peers/interop/common.js)."""
        security = {
            "policy": "Basic256Sha256",
            "mode": "SignAndEncrypt",
            "pki": str(self.nodeopcua_pki),
            "serverCertificate": str(self.server_cert),
            **scenario.pop("security", {}),
        }
        login = None if user is None else {"username": user[0], "password": user[1]}
        return {"endpoint": self.endpoint, "security": security, "user": login, **scenario}


def trust(pki_dir: Path, what: str) -> None:
    """``bridge certs trust`` (a thumbprint in rejected/ or a certificate file)."""
    done = CliRunner().invoke(certs, ["trust", what, "--pki-dir", str(pki_dir)])
    assert done.exit_code == 0, done.output


async def nodeopcua_certificate(pki: Path, server_cert: Path) -> bytes:
    """node-opcua's own application certificate in ``pki`` (made by the client itself), DER."""
    (note,) = await run_node(
        "pki", {"security": {"pki": str(pki), "serverCertificate": str(server_cert)}}
    )
    pem = await asyncio.to_thread(Path(note["certificate"]).read_bytes)
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


@contextlib.asynccontextmanager
async def serve(
    root: Path, store: Store, nodeopcua_pki: Path | None = None
) -> AsyncIterator[Gateway]:
    """A PredictionServer with Basic256Sha256 SignAndEncrypt only, an operator and a reader, the
    feedback methods over ``store``, and both stacks' client certificates trusted (node-opcua's
    made in ``nodeopcua_pki`` unless it is there already)."""
    server_cert, server_key = root / "server" / "cert.der", root / "server" / "key.pem"
    create_application_certificate(server_cert, server_key, hostnames=("localhost",))
    asyncua_cert, asyncua_key = root / "asyncua" / "cert.der", root / "asyncua" / "key.pem"
    create_application_certificate(
        asyncua_cert, asyncua_key, application_uri=ASYNCUA_URI, hostnames=("localhost",)
    )
    pki_dir = root / "server-pki"
    trust(pki_dir, str(asyncua_cert))
    nodeopcua_pki = nodeopcua_pki or root / "nodeopcua-pki"
    nodeopcua_der = await nodeopcua_certificate(nodeopcua_pki, server_cert)
    (root / "nodeopcua.der").write_bytes(nodeopcua_der)
    trust(pki_dir, str(root / "nodeopcua.der"))
    settings = OpcUaServerSettings(
        endpoint=f"opc.tcp://127.0.0.1:{free_port()}",
        namespace=NS,
        security_policies=["Basic256Sha256_SignAndEncrypt"],
        certificate=str(server_cert),
        private_key=str(server_key),
        pki_dir=str(pki_dir),
        # Some scenarios fail logins from 127.0.0.1 on purpose.
        login_lockout=LoginLockout(after_failures=1000),
        users=[
            OpcUaServerUser(username=OPERATOR[0], password=OPERATOR[1], role="operator"),
            OpcUaServerUser(username=READER[0], password=READER[1], role="reader"),
        ],
    )
    context = SinkContext(
        GATEWAY,
        SLOTS,
        feedback=StoreFeedback(LabelRepository(store), LineageRepository(store)),
        history=StoreHmiHistory(store, timeout_s=10),
        alarms=StoreAlarms(AlertRepository(store, gateway=GATEWAY), OutboxRepository(store)),
    )
    # Without per-model settings every change to a fault label alerts at once.
    writer = AlertSink(AlertRepository(store, gateway=GATEWAY), SLOTS)
    server = PredictionServer("hmi", settings, context)
    async with contextlib.AsyncExitStack() as stack:
        await writer.start()
        stack.push_async_callback(writer.close)
        await server.start()
        stack.push_async_callback(server.close)
        await server.write(
            [
                prediction(CLASSIFIER, 1, "fault"),
                prediction(REGRESSOR, 1, 12.5, Quality.UNCERTAIN),
            ]
        )
        yield Gateway(
            server,
            store,
            settings.endpoint,
            server_cert,
            pki_dir,
            nodeopcua_pki,
            asyncua_cert,
            asyncua_key,
            writer,
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    root = tmp_path_factory.mktemp("interop")
    with temp_store("sqlite", root) as store:
        async with serve(root, store) as gw:
            yield gw


# --- 1. browse ------------------------------------------------------------------------------

_ATTRIBUTES = (
    "NodeClass",
    "BrowseName",
    "DisplayName",
    "Description",
    "WriteMask",
    "UserWriteMask",
    "EventNotifier",
    "Value",
    "DataType",
    "ValueRank",
    "ArrayDimensions",
    "AccessLevel",
    "UserAccessLevel",
    "MinimumSamplingInterval",
    "Historizing",
    "Executable",
    "UserExecutable",
)
# Forward references walked (browse.js DESCEND): Organizes, HasEventSource, HasProperty,
# HasComponent, HasNotifier, HasOrderedComponent.
_DESCEND = {35, 36, 46, 47, 48, 49}


async def asyncua_walk(client: Client, root: str = "i=85", limit: int = 2000) -> dict[str, Any]:
    """What browse.js prints, walked and decoded by asyncua: node id -> attributes and
    references."""
    seen = {root}
    level = [ua.NodeId.from_string(root)]
    out: dict[str, Any] = {}
    while level:
        following: list[ua.NodeId] = []
        for start in range(0, len(level), 100):
            batch = level[start : start + 100]
            refs = await _browse(client, batch)
            reads = [
                ua.ReadValueId(NodeId=n, AttributeId=getattr(ua.AttributeIds, a))
                for n in batch
                for a in _ATTRIBUTES
            ]
            values = await client.uaclient.read(ua.ReadParameters(NodesToRead=reads))
            for k, nodeid in enumerate(batch):
                row = values[k * len(_ATTRIBUTES) : (k + 1) * len(_ATTRIBUTES)]
                attributes = {
                    name: plain(dv.Value) if status_of(dv) == "Good" else {"status": status_of(dv)}
                    for name, dv in zip(_ATTRIBUTES, row, strict=True)
                }
                out[nodeid.to_string()] = {
                    "attributes": attributes,
                    "references": [
                        [
                            r.ReferenceTypeId.to_string(),
                            r.IsForward,
                            r.NodeId.to_string(),
                            plain(r.BrowseName),
                            r.NodeClass.value,
                            r.TypeDefinition.to_string(),
                        ]
                        for r in refs[k]
                    ],
                }
                for r in refs[k]:
                    target = r.NodeId.to_string()
                    descend = r.ReferenceTypeId.NamespaceIndex == 0 and (
                        r.ReferenceTypeId.Identifier in _DESCEND
                    )
                    if not r.IsForward or not descend or r.NodeId.NamespaceIndex == 0:
                        continue
                    if target in seen:
                        continue
                    assert len(seen) < limit, f"more than {limit} nodes"
                    seen.add(target)
                    following.append(ua.NodeId(r.NodeId.Identifier, r.NodeId.NamespaceIndex))
        level = following
    return out


async def _browse(
    client: Client, nodes: Sequence[ua.NodeId]
) -> list[list[ua.ReferenceDescription]]:
    params = ua.BrowseParameters()
    params.NodesToBrowse = [
        ua.BrowseDescription(
            NodeId=n,
            BrowseDirection=ua.BrowseDirection.Both,
            ReferenceTypeId=ua.NodeId(),
            IncludeSubtypes=True,
            NodeClassMask=0,
            ResultMask=63,
        )
        for n in nodes
    ]
    results = await client.uaclient.browse(params)
    out = []
    for result in results:
        assert result.StatusCode.is_good(), result.StatusCode
        refs = list(result.References)
        point = result.ContinuationPoint
        while point:
            (following,) = await client.uaclient.browse_next(
                ua.BrowseNextParameters(ContinuationPoints=[point])
            )
            refs.extend(following.References)
            point = following.ContinuationPoint
        out.append(refs)
    return out


def differences(left: dict[str, Any], right: dict[str, Any], names: tuple[str, str]) -> list[str]:
    """Where two walks disagree, one line each (empty: none)."""
    found = []
    for node in sorted(left.keys() | right.keys()):
        if node not in right or node not in left:
            found.append(f"{node}: only {names[0] if node in left else names[1]} saw it")
            continue
        a, b = left[node], right[node]
        for attr in _ATTRIBUTES:
            if a["attributes"].get(attr) != b["attributes"].get(attr):
                found.append(
                    f"{node} {attr}: {a['attributes'].get(attr)!r} vs {b['attributes'].get(attr)!r}"
                )
        refs_a = sorted(map(json.dumps, a["references"]))
        refs_b = sorted(map(json.dumps, b["references"]))
        if refs_a != refs_b:
            found.append(
                f"{node} references: only {names[0]}: {sorted(set(refs_a) - set(refs_b))}, "
                f"only {names[1]}: {sorted(set(refs_b) - set(refs_a))}"
            )
    return found


async def test_browse_both_stacks_see_the_same_address_space(gateway: Gateway) -> None:
    lines = await run_node("browse", gateway.config(READER))
    *nodes, done = lines
    assert done == {"done": len(nodes)}
    by_nodeopcua = {
        n["node"]: {"attributes": n["attributes"], "references": n["references"]}
        for n in _canonical(nodes)
    }
    async with asyncua_session(gateway, READER) as client:
        ns = await client.get_namespace_index(NS)
        by_asyncua = await asyncua_walk(client)

    assert differences(by_nodeopcua, by_asyncua, ("node-opcua", "asyncua")) == []
    # What both agreed on is the documented tree (not two empty walks): Objects/Predictions/
    # P1/<model>/Value, typed by the model, with its unit as the standard property.
    path = ["i=85", f"ns={ns};s=Predictions", f"ns={ns};s=Predictions.P1"]
    for parent, child in itertools.pairwise(path):
        assert any(r[1] and r[2] == child for r in by_asyncua[parent]["references"])
    value = by_asyncua[f"ns={ns};s={node_string('P1', 'health', 'Value')}"]["attributes"]
    assert value["BrowseName"] == f"{ns}:Value"
    assert value["DataType"] == "i=12"  # String: a classifier's label
    assert value["Value"] == "fault"
    assert value["AccessLevel"] & 1 and value["UserAccessLevel"] & 1  # CurrentRead
    rul = by_asyncua[f"ns={ns};s={node_string('P1', 'rul', 'Value')}"]
    assert rul["attributes"]["DataType"] == "i=11"  # Double: a regressor's value
    (unit,) = [
        r[2] for r in rul["references"] if r[:2] == ["i=46", True] and r[3] == "0:EngineeringUnits"
    ]
    eu = by_asyncua[unit]["attributes"]["Value"]
    assert eu["namespaceUri"] == "http://www.opcfoundation.org/UA/units/un/cefact"
    assert (eu["unitId"], eu["displayName"]["text"]) == (4740434, "h")  # UNECE "HUR"
    # The walk went through the alarms too: each classifier's condition, an OffNormalAlarmType.
    alarm = by_asyncua[f"ns={ns};s={node_string('P1', 'health', 'Alarm')}"]
    assert ["i=40", True, "i=10637"] in [r[:3] for r in alarm["references"]]  # HasTypeDefinition


# --- 2. secure session ----------------------------------------------------------------------


async def test_endpoints_both_stacks_decode_the_same(gateway: Gateway) -> None:
    """What a client chooses its security and identity token from (discovery on a None
    channel, before any trust or login)."""
    (note,) = await run_node("endpoints", {"endpoint": gateway.endpoint})
    client = Client(gateway.endpoint, timeout=5)
    by_asyncua = plain(await client.connect_and_get_server_endpoints())
    assert _canonical(note["endpoints"]) == by_asyncua
    (endpoint,) = by_asyncua  # SignAndEncrypt only: None is not configured
    assert endpoint["securityPolicyUri"].endswith("#Basic256Sha256")
    assert endpoint["securityMode"] == ua.MessageSecurityMode.SignAndEncrypt.value
    assert base64.b64decode(endpoint["serverCertificate"]) == gateway.server_cert.read_bytes()
    # Only username tokens (no anonymous: see the next test). The password is not encrypted
    # again inside a SignAndEncrypt channel (token policy None); on a Sign endpoint asyncua
    # names the channel's policy, so a password never travels in clear text.
    assert [(t["tokenType"], t["securityPolicyUri"]) for t in endpoint["userIdentityTokens"]] == [
        (ua.UserTokenType.UserName.value, "http://opcfoundation.org/UA/SecurityPolicy#None")
    ]


async def asyncua_login(
    gw: Gateway,
    user: tuple[str, str] | None,
    read: Sequence[str],
    cert: Path | None = None,
    key: Path | None = None,
) -> dict[str, Any]:
    """What session.js prints, for asyncua."""
    try:
        async with asyncua_session(gw, user, cert, key) as client:
            reads = []
            for text in read:
                dv = await client.get_node(await node_of(client, text)).read_data_value(
                    raise_on_bad_status=False
                )
                reads.append({"node": text, "value": plain(dv.Value), "status": status_of(dv)})
            return {
                "session": "activated",
                "policy": client.security_policy.URI,
                "mode": ua.MessageSecurityMode(client.security_policy.Mode).name,
                "reads": reads,
            }
    except UaStatusCodeError as exc:
        return {"refused": ua.StatusCode(exc.code).name, "by": "server"}


def verdict(outcome: dict[str, Any]) -> tuple[Any, ...]:
    """An outcome without the wording of messages: what both stacks must agree on."""
    if "session" in outcome:
        return ("activated", outcome["policy"], outcome["mode"], json.dumps(outcome["reads"]))
    return ("refused", outcome["refused"], outcome["by"])


async def test_secure_session_trust_list_flow_and_logins(gateway: Gateway, tmp_path: Path) -> None:
    read = [nsu("P1", "rul", "Value")]
    activated = (
        "activated",
        "http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256",
        "SignAndEncrypt",
        json.dumps([{"node": read[0], "value": 12.5, "status": "UncertainLastUsableValue"}]),
    )
    rejected = gateway.pki_dir / "rejected"

    # node-opcua with a certificate it has just made for itself: unknown to the server.
    fresh = tmp_path / "nodeopcua-fresh"
    config = gateway.config(OPERATOR, read=read, security={"pki": str(fresh)})
    (first,) = await run_node("session", config)
    assert verdict(first) == ("refused", "BadCertificateUntrusted", "server")
    assert first["stage"] == "session"  # the channel opens; CreateSession is refused
    pem = (fresh / "own" / "certs" / "client_certificate.pem").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    assert (rejected / f"{thumbprint(der)}.der").read_bytes() == der
    trust(gateway.pki_dir, thumbprint(der)[:12])
    (second,) = await run_node("session", config)
    assert verdict(second) == activated

    # asyncua with a certificate of its own, unknown to the server: the same flow.
    cert, key = tmp_path / "asyncua-fresh" / "cert.der", tmp_path / "asyncua-fresh" / "key.pem"
    create_application_certificate(cert, key, application_uri=ASYNCUA_URI)
    refused = await asyncua_login(gateway, OPERATOR, read, cert, key)
    assert verdict(refused) == ("refused", "BadCertificateUntrusted", "server")
    assert (rejected / f"{thumbprint(cert.read_bytes())}.der").read_bytes() == cert.read_bytes()
    trust(gateway.pki_dir, thumbprint(cert.read_bytes())[:12])
    assert verdict(await asyncua_login(gateway, OPERATOR, read, cert, key)) == activated

    # Logins, both stacks with their trusted certificates.
    wrong = (OPERATOR[0], "not-the-password")
    nobody = ("nobody", OPERATOR[1])
    for user in (wrong, nobody):
        (by_node,) = await run_node("session", gateway.config(user, read=read))
        by_asyncua = await asyncua_login(gateway, user, read)
        assert (
            verdict(by_node)
            == verdict(by_asyncua)
            == (
                "refused",
                "BadUserAccessDenied",
                "server",
            )
        ), user[0]
    # Anonymous: the endpoint offers no anonymous token. node-opcua does not send one (it
    # refuses by itself); asyncua sends it anyway and the server refuses the activation.
    (by_node,) = await run_node("session", gateway.config(None, read=read))
    assert verdict(by_node) == ("refused", None, "client")
    assert "ANONYMOUS" in by_node["message"]
    assert verdict(await asyncua_login(gateway, None, read)) == (
        "refused",
        "BadIdentityTokenRejected",
        "server",
    )


# --- 3. subscribe ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One notification as both stacks can report it: the SourceTimestamp in microseconds
    since the epoch (node-opcua: a millisecond Date plus picoseconds)."""

    node: str
    value: Any
    data_type: str
    status: str
    source_us: int | None


def _us(stamp: datetime) -> int:
    return (stamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def seen_by_nodeopcua(note: dict[str, Any]) -> Seen:
    source = None
    if note["source"] is not None:
        ms = _us(datetime.fromisoformat(note["source"].replace("Z", "+00:00")))
        source = ms + (note["sourcePicoseconds"] or 0) // 1_000_000
    return Seen(note["node"], note["value"], note["dataType"], note["status"], source)


class _Handler:
    def __init__(self, names: dict[str, str], queue: asyncio.Queue[Seen]) -> None:
        self._names = names
        self._queue = queue

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        dv: ua.DataValue = data.monitored_item.Value
        stamp = dv.SourceTimestamp
        self._queue.put_nowait(
            Seen(
                self._names[node.nodeid.to_string()],
                plain(dv.Value),
                dv.Value.VariantType.name if dv.Value is not None else "Null",
                status_of(dv),
                None if stamp is None else _us(stamp.replace(tzinfo=stamp.tzinfo or UTC)),
            )
        )


async def _until(
    next_seen: Callable[[], Any], wanted: Callable[[Seen], bool], count: int
) -> list[Seen]:
    """Notifications until ``count`` of them are ``wanted`` (the others are skipped)."""
    found: list[Seen] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(found) < count:
            seen = await next_seen()
            if wanted(seen):
                found.append(seen)
    return found


async def test_subscribe_values_statuses_and_source_timestamps(gateway: Gateway) -> None:
    nodes = {slot.model: nsu(slot.asset, slot.model, "Value") for slot in LIVE}
    queue: asyncio.Queue[Seen] = asyncio.Queue()
    config = gateway.config(READER, nodes=list(nodes.values()), publishingMs=50)
    async with (
        node_script("subscribe", config) as script,
        asyncua_session(gateway, READER) as client,
    ):
        names = {(await node_of(client, t)).to_string(): t for t in nodes.values()}
        subscription = await client.create_subscription(50, _Handler(names, queue))
        handles = await subscription.subscribe_data_change(
            [client.get_node(ua.NodeId.from_string(n)) for n in names], queuesize=100
        )
        assert all(isinstance(h, int) for h in handles), handles
        assert (await script.line()) == {"ready": 50}

        async def by_node() -> Seen:
            return seen_by_nodeopcua(await script.line())

        # No prediction yet: both see the initial status, no value, no source time.
        initial = {
            n: Seen(n, None, "Null", "BadWaitingForInitialData", None) for n in nodes.values()
        }
        assert set(await _until(by_node, lambda s: True, 2)) == set(initial.values())
        assert set(await _until(queue.get, lambda s: True, 2)) == set(initial.values())

        base = time.time() - 30
        steps = [
            (Quality.GOOD, "fault", 12.5, "Good"),
            (Quality.UNCERTAIN, "ok", 7.25, "UncertainLastUsableValue"),
            (Quality.BAD, "fault", 3.0, "BadNoCommunication"),
        ]
        for k, (quality, label, number, status) in enumerate(steps):
            # A fraction below the millisecond: node-opcua carries it in picoseconds.
            when = base + k + 0.1234567
            await gateway.server.write(
                [
                    prediction(LIVE[0], 10 + k, label, quality, when),
                    prediction(LIVE[1], 10 + k, number, quality, when),
                ]
            )
            source = _us(datetime.fromtimestamp(when, UTC))
            expected = {
                Seen(nodes["health"], label, "String", status, source),
                Seen(nodes["rul"], number, "Double", status, source),
            }
            if quality is Quality.BAD:
                # A Bad DataValue carries no value (Part 4, 7.7.1: the server sets it to
                # null; asyncua does so on write): both stacks get null, not the label.
                expected = {dataclasses.replace(s, value=None, data_type="Null") for s in expected}

            def now(seen: Seen, at: int = source) -> bool:
                return seen.source_us == at

            assert set(await _until(by_node, now, 2)) == expected, quality
            assert set(await _until(queue.get, now, 2)) == expected, quality
        await subscription.delete()
        await script.finish()


# --- 4. feedback method ---------------------------------------------------------------------


async def asyncua_call(
    gw: Gateway,
    user: tuple[str, str],
    obj: str,
    method: str,
    inputs: Sequence[str | ua.Variant],
) -> dict[str, Any]:
    """What call.js prints, for asyncua (the Call service itself, not Node.call_method, so a
    refused service and a refused method stay apart). A text input is a String."""
    async with asyncua_session(gw, user) as client:
        request = ua.CallMethodRequest(
            ObjectId=await node_of(client, obj),
            MethodId=await node_of(client, method),
            InputArguments=[
                v if isinstance(v, ua.Variant) else ua.Variant(v, ua.VariantType.String)
                for v in inputs
            ],
        )
        try:
            (result,) = await client.uaclient.call([request])
        except UaStatusCodeError as exc:
            return {"status": ua.StatusCode(exc.code).name, "serviceFault": True}
        return {
            "status": result.StatusCode.name,
            "outputs": [plain(v) for v in result.OutputArguments],
            "inputArgumentResults": [s.name for s in result.InputArgumentResults],
        }


@pytest.mark.parametrize("backend", BACKENDS)
async def test_feedback_method_accepted_for_an_operator_refused_for_a_reader(
    gateway: Gateway, backend: str, tmp_path: Path
) -> None:
    with temp_store(backend, tmp_path) as store:
        async with serve(tmp_path, store, gateway.nodeopcua_pki) as gw:
            judged = [prediction(CLASSIFIER, 2, "fault"), prediction(CLASSIFIER, 3, "fault")]
            await gw.server.write(judged)
            obj, method = nsu("P1", "health"), nsu("P1", "health", "Acknowledge")

            def call(user: tuple[str, str], prediction_id: str, comment: str) -> dict[str, Any]:
                inputs = [
                    {"dataType": "String", "value": prediction_id},
                    {"dataType": "String", "value": comment},
                ]
                return gw.config(user, object=obj, method=method, inputs=inputs)

            (by_node,) = await run_node("call", call(OPERATOR, judged[0].id, "seen: node-opcua"))
            by_asyncua = await asyncua_call(
                gw, OPERATOR, obj, method, [judged[1].id, "seen: asyncua"]
            )
            accepted = {"status": "Good", "inputArgumentResults": ["Good", "Good"]}
            assert by_node == {**accepted, "outputs": [judged[0].id]}
            assert by_asyncua == {**accepted, "outputs": [judged[1].id]}

            # A reader: the Call service itself is refused (a ServiceFault), for both stacks.
            (by_node,) = await run_node("call", call(READER, judged[0].id, "reader"))
            by_asyncua = await asyncua_call(gw, READER, obj, method, [judged[0].id, "reader"])
            assert by_node == by_asyncua == {"status": "BadUserAccessDenied", "serviceFault": True}

            stored = LabelRepository(store).of_predictions([p.id for p in judged])
            assert [(r.prediction_id, r.action, r.by, r.channel, r.comment) for r in stored] == [
                (judged[0].id, "acknowledge", OPERATOR[0], "opcua", "seen: node-opcua"),
                (judged[1].id, "acknowledge", OPERATOR[0], "opcua", "seen: asyncua"),
            ]


# --- 5. alarms: events, Acknowledge, ConditionRefresh ---------------------------------------

OFF_NORMAL = "i=10637"
REFRESH_START, REFRESH_END = "i=2787", "i=2788"
ACKNOWLEDGE, CONFIRM = "i=9111", "i=9113"  # AcknowledgeableConditionType's methods
PREDICTION_ID, MODEL_VERSION = f"nsu={NS};PredictionId", f"nsu={NS};ModelVersion"
# What an alarm list selects, spelled as events.js takes it (node-opcua's constructEventFilter:
# browse paths with dots, "ConditionId" for the condition's NodeId attribute).
EVENT_FIELDS = (
    "EventId",
    "EventType",
    "SourceNode",
    "Message",
    "Severity",
    "Time",
    "ActiveState.Id",
    "AckedState.Id",
    "Retain",
    "ConditionId",
    PREDICTION_ID,
    MODEL_VERSION,
)
ACK_FIELDS = (*EVENT_FIELDS, "ConfirmedState.Id", "ClientUserId", "Comment")
# One event as both stacks report it: {"event": {field: value}, "types": {field: DataType},
# "us": {DateTime field: microseconds since 1970}} (events.js's picoseconds made microseconds).
Note = dict[str, Any]


def event_filter(fields: Sequence[str], ns: int, of_type: str | None = None) -> ua.EventFilter:
    """The EventFilter events.js sends, built with asyncua: each field a SimpleAttributeOperand
    on BaseEventType (Part 4: its browse path is then evaluated whatever the event's type),
    ConditionId the NodeId attribute of ConditionType with an empty path (Part 9,
    ConditionType); ``of_type``: a where clause OfType that NodeId."""
    evfilter = ua.EventFilter()
    for name in fields:
        op = ua.SimpleAttributeOperand()
        if name == "ConditionId":
            op.TypeDefinitionId = ua.NodeId(ua.ObjectIds.ConditionType)
            op.AttributeId = ua.AttributeIds.NodeId
        else:
            own = name.startswith(f"nsu={NS};")
            path = name.removeprefix(f"nsu={NS};").split(".")
            op.TypeDefinitionId = ua.NodeId(ua.ObjectIds.BaseEventType)
            op.BrowsePath = [ua.QualifiedName(part, ns if own else 0) for part in path]
            op.AttributeId = ua.AttributeIds.Value
        evfilter.SelectClauses.append(op)
    if of_type is not None:
        literal = ua.LiteralOperand(Value=ua.Variant(ua.NodeId.from_string(of_type)))
        evfilter.WhereClause.Elements.append(
            ua.ContentFilterElement(
                FilterOperator=ua.FilterOperator.OfType, FilterOperands=[literal]
            )
        )
    return evfilter


class _Events:
    """asyncua's event handler: each event as events.js prints it (field values by the names
    events.js was given, their DataTypes)."""

    def __init__(self, fields: Sequence[str]) -> None:
        self.fields = fields
        self.queue: asyncio.Queue[Note] = asyncio.Queue()

    def event_notification(self, event: Any) -> None:
        fields = list(zip(self.fields, event.event_fields, strict=True))
        self.queue.put_nowait(
            {
                "event": {n: plain(v.Value) for n, v in fields},
                "types": {n: v.VariantType.name for n, v in fields},
                "us": {n: _us(v.Value) for n, v in fields if isinstance(v.Value, datetime)},
            }
        )


@dataclass
class AsyncuaEvents:
    client: Client
    ns: int
    subscription_id: int
    handler: _Events

    async def note(self) -> Note:
        return await self.handler.queue.get()


@contextlib.asynccontextmanager
async def asyncua_events(
    gw: Gateway,
    fields: Sequence[str],
    of_type: str | None = None,
    user: tuple[str, str] = READER,
) -> AsyncIterator[AsyncuaEvents]:
    """What events.js does, with asyncua: an event item on the Server object."""
    async with asyncua_session(gw, user) as client:
        ns = await client.get_namespace_index(NS)
        handler = _Events(fields)
        subscription = await client.create_subscription(50, handler)
        handle = await subscription.subscribe_events(
            client.nodes.server, evfilter=event_filter(fields, ns, of_type), queuesize=1000
        )
        assert isinstance(handle, int), handle
        assert subscription.subscription_id is not None
        try:
            yield AsyncuaEvents(client, ns, subscription.subscription_id, handler)
        finally:
            await subscription.delete()


async def next_event(script: NodeScript) -> Note:
    """events.js's next event (its other lines, ``ready`` and ``refresh``, are skipped)."""
    while True:
        note = await script.line()
        if "event" in note:
            event, picoseconds = _canonical(note["event"]), note["picoseconds"]
            us = {
                name: _us(datetime.fromisoformat(event[name].replace("Z", "+00:00")))
                + picoseconds[name] // 1_000_000
                for name in picoseconds
            }
            return {"event": event, "types": note["types"], "us": us}


async def gather_events(next_note: Callable[[], Any], event_ids: set[str]) -> dict[str, Note]:
    """Events until each of ``event_ids`` (base64, as printed) has come, by EventId; others
    are skipped."""
    found: dict[str, Note] = {}
    async with asyncio.timeout(DEADLINE_S):
        while not event_ids <= found.keys():
            note = await next_note()
            if note["event"]["EventId"] in event_ids:
                found[note["event"]["EventId"]] = note
    return found


def event_id(p: Prediction, kind: str) -> str:
    """The EventId of an alarm's event (``<prediction id>:<kind>``) as the scripts print it."""
    return base64.b64encode(f"{p.id}:{kind}".encode()).decode()


def alarm_id(slot: PredictionSlot) -> str:
    return nsu(slot.asset, slot.model, "Alarm")


async def test_alarm_event_on_the_server_object_both_stacks_decode_the_same(
    gateway: Gateway,
) -> None:
    slot = ALARMED["E1"]
    config = gateway.config(READER, fields=list(EVENT_FIELDS), ofType=OFF_NORMAL, publishingMs=50)
    async with (
        node_script("events", config) as script,
        asyncua_events(gateway, EVENT_FIELDS, OFF_NORMAL) as heard,
    ):
        assert "ready" in await script.line()
        await gateway.write([prediction(slot, 1, "ok")])  # normal: no alarm
        fault = prediction(slot, 2, "fault")
        await gateway.write([fault])  # the label leaves its normal value
        wanted = {event_id(fault, "raised")}
        (by_node,) = (await gather_events(lambda: next_event(script), wanted)).values()
        (by_asyncua,) = (await gather_events(heard.note, wanted)).values()
        await script.finish()

    assert by_node == by_asyncua
    ns = heard.ns
    assert by_asyncua["event"] == {
        "EventId": event_id(fault, "raised"),
        "EventType": OFF_NORMAL,
        "SourceNode": f"ns={ns};s={node_string('E1', 'health')}",
        "Message": {
            "locale": None,
            "text": f"E1/health: fault (was ok); {REASON}; model 2.0.1; prediction {fault.id}",
        },
        "Severity": SEVERITY,
        "Time": plain(_at(fault.timestamp)),
        "ActiveState.Id": True,
        "AckedState.Id": False,
        "Retain": True,
        "ConditionId": f"ns={ns};s={node_string('E1', 'health', 'Alarm')}",
        PREDICTION_ID: fault.id,
        MODEL_VERSION: "2.0.1",
    }
    assert by_asyncua["types"] == {
        "EventId": "ByteString",
        "EventType": "NodeId",
        "SourceNode": "NodeId",
        "Message": "LocalizedText",
        "Severity": "UInt16",
        "Time": "DateTime",
        "ActiveState.Id": "Boolean",
        "AckedState.Id": "Boolean",
        "Retain": "Boolean",
        "ConditionId": "NodeId",
        PREDICTION_ID: "String",
        MODEL_VERSION: "String",
    }
    # The prediction's time to the microsecond (node-opcua: a Date and picoseconds).
    assert by_asyncua["us"] == {"Time": _us(_at(fault.timestamp))}


def condition_call(
    gw: Gateway, user: tuple[str, str], slot: PredictionSlot, method: str, event: str, comment: str
) -> dict[str, Any]:
    """call.js's argument for a condition's Acknowledge or Confirm (EventId in base64)."""
    inputs = [
        {"dataType": "ByteString", "value": event},
        {"dataType": "LocalizedText", "value": comment},
    ]
    return gw.config(user, object=alarm_id(slot), method=method, inputs=inputs)


def condition_inputs(event: str, comment: str) -> list[ua.Variant]:
    """The same inputs for asyncua_call."""
    return [
        ua.Variant(base64.b64decode(event), ua.VariantType.ByteString),
        ua.Variant(ua.LocalizedText(comment), ua.VariantType.LocalizedText),
    ]


async def test_acknowledge_and_confirm_on_the_condition_by_each_stack(gateway: Gateway) -> None:
    """node-opcua's operator acknowledges and confirms K1's alarm, asyncua's K2's, each with the
    EventId its own stack received; both stacks' event items see every event alike."""
    node_slot, asyncua_slot = ALARMED["K1"], ALARMED["K2"]
    faults = [prediction(node_slot, 1, "fault"), prediction(asyncua_slot, 1, "fault")]
    node_fault, asyncua_fault = faults
    config = gateway.config(READER, fields=list(ACK_FIELDS), ofType=OFF_NORMAL, publishingMs=50)
    async with (
        node_script("events", config) as script,
        asyncua_events(gateway, ACK_FIELDS, OFF_NORMAL) as heard,
    ):
        assert "ready" in await script.line()

        async def both(kind: str) -> tuple[dict[str, Note], dict[str, Note]]:
            """Both alarms' events of ``kind``, as node-opcua and as asyncua received them."""
            wanted = {event_id(p, kind) for p in faults}
            by_node = await gather_events(lambda: next_event(script), wanted)
            by_asyncua = await gather_events(heard.note, wanted)
            assert by_node == by_asyncua, kind
            return by_node, by_asyncua

        await gateway.write(faults)
        node_seen, asyncua_seen = await both("raised")
        node_event_id = node_seen[event_id(node_fault, "raised")]["event"]["EventId"]
        asyncua_event_id = asyncua_seen[event_id(asyncua_fault, "raised")]["event"]["EventId"]

        # A reader may not acknowledge (it may call ConditionRefresh only).
        (by_node,) = await run_node(
            "call", condition_call(gateway, READER, node_slot, ACKNOWLEDGE, node_event_id, "r")
        )
        by_asyncua = await asyncua_call(
            gateway,
            READER,
            alarm_id(asyncua_slot),
            ACKNOWLEDGE,
            condition_inputs(asyncua_event_id, "r"),
        )
        assert by_node == by_asyncua == {"status": "BadUserAccessDenied", "serviceFault": True}

        # An operator's Acknowledge: accepted, no outputs.
        (by_node,) = await run_node(
            "call",
            condition_call(
                gateway, OPERATOR, node_slot, ACKNOWLEDGE, node_event_id, "seen: node-opcua"
            ),
        )
        by_asyncua = await asyncua_call(
            gateway,
            OPERATOR,
            alarm_id(asyncua_slot),
            ACKNOWLEDGE,
            condition_inputs(asyncua_event_id, "seen: asyncua"),
        )
        accepted = {"status": "Good", "outputs": [], "inputArgumentResults": ["Good", "Good"]}
        assert by_node == by_asyncua == accepted
        node_seen, _ = await both("acknowledged")
        for fault, comment in ((node_fault, "seen: node-opcua"), (asyncua_fault, "seen: asyncua")):
            event = node_seen[event_id(fault, "acknowledged")]["event"]
            assert (event["ActiveState.Id"], event["AckedState.Id"]) == (True, True)
            assert (event["ConfirmedState.Id"], event["Retain"]) == (False, True)
            assert (event["ClientUserId"], event["Comment"]["text"]) == (OPERATOR[0], comment)
            assert event[PREDICTION_ID] == fault.id

        # One acknowledgement: each stack finds the other's alarm acknowledged already.
        (by_node,) = await run_node(
            "call",
            condition_call(
                gateway,
                OPERATOR,
                asyncua_slot,
                ACKNOWLEDGE,
                event_id(asyncua_fault, "acknowledged"),
                "again",
            ),
        )
        by_asyncua = await asyncua_call(
            gateway,
            OPERATOR,
            alarm_id(node_slot),
            ACKNOWLEDGE,
            condition_inputs(event_id(node_fault, "acknowledged"), "again"),
        )
        assert by_node == by_asyncua == {**accepted, "status": "BadConditionBranchAlreadyAcked"}

        # Confirm (Part 9: the operator says the fault is dealt with), still active: retained.
        (by_node,) = await run_node(
            "call",
            condition_call(
                gateway,
                OPERATOR,
                node_slot,
                CONFIRM,
                event_id(node_fault, "acknowledged"),
                "fixed: node-opcua",
            ),
        )
        by_asyncua = await asyncua_call(
            gateway,
            OPERATOR,
            alarm_id(asyncua_slot),
            CONFIRM,
            condition_inputs(event_id(asyncua_fault, "acknowledged"), "fixed: asyncua"),
        )
        assert by_node == by_asyncua == accepted
        node_seen, _ = await both("confirmed")
        for fault in faults:
            event = node_seen[event_id(fault, "confirmed")]["event"]
            assert (event["AckedState.Id"], event["ConfirmedState.Id"]) == (True, True)
            assert (event["ActiveState.Id"], event["Retain"]) == (True, True)
        await script.finish()

    # The alerts the REST API lists are the ones acknowledged and confirmed, by that user.
    stored = gateway.alerts.of_predictions([p.id for p in faults])
    assert sorted(
        (a.prediction_id, a.acked_by, a.ack_comment, a.confirmed_by, a.confirm_comment)
        for a in stored
    ) == sorted(
        [
            (node_fault.id, OPERATOR[0], "seen: node-opcua", OPERATOR[0], "fixed: node-opcua"),
            (asyncua_fault.id, OPERATOR[0], "seen: asyncua", OPERATOR[0], "fixed: asyncua"),
        ]
    )


async def retained_alarms(client: Client) -> dict[str, str]:
    """ConditionId -> EventId of every alarm whose Retain variable is true now (what a
    ConditionRefresh must send), read by asyncua."""
    out = {}
    for slot in SLOTS:
        if not slot.labels:
            continue
        alarm = alarm_id(slot)
        retain, latest = await client.read_values(
            [client.get_node(await node_of(client, f"{alarm}.{v}")) for v in ("Retain", "EventId")]
        )
        if retain:
            out[(await node_of(client, alarm)).to_string()] = plain(latest)
    return out


def refreshed(notes: Sequence[Note]) -> dict[str, Note]:
    """ConditionId -> event of the alarms a refresh sent, which must come between one
    RefreshStart and one RefreshEnd, each retained, each once."""
    kinds = [n["event"]["EventType"] for n in notes]
    assert (kinds[0], kinds[-1]) == (REFRESH_START, REFRESH_END), kinds
    alarms = notes[1:-1]
    assert {n["event"]["EventType"] for n in alarms} <= {OFF_NORMAL}, kinds
    assert all(n["event"]["Retain"] is True for n in alarms)
    out = {n["event"]["ConditionId"]: n for n in alarms}
    assert len(out) == len(alarms), "an alarm sent twice"
    return out


async def until_refresh_end(next_note: Callable[[], Any]) -> list[Note]:
    """Events up to RefreshEnd, from the first RefreshStart (a live event before it is not part
    of the refresh)."""
    notes: list[Note] = []
    async with asyncio.timeout(DEADLINE_S):
        while not notes or notes[-1]["event"]["EventType"] != REFRESH_END:
            note = await next_note()
            if notes or note["event"]["EventType"] == REFRESH_START:
                notes.append(note)
    return notes


async def test_condition_refresh_gives_a_late_subscriber_the_retained_alarms(
    gateway: Gateway,
) -> None:
    slot = ALARMED["R1"]
    fault = prediction(slot, 1, "fault")
    await gateway.write([fault])
    async with asyncua_session(gateway, READER) as client:

        async def shown() -> bool:
            return (await retained_alarms(client)).get(
                (await node_of(client, alarm_id(slot))).to_string()
            ) == event_id(fault, "raised")

        await wait_until(shown, DEADLINE_S, what="R1's alarm raised on the condition")
        expected = await retained_alarms(client)

    # Late subscribers, no where clause (RefreshStart and RefreshEnd are events of their own
    # types): subscribing alone sends nothing of the past; ConditionRefresh sends it.
    config = gateway.config(READER, fields=list(EVENT_FIELDS), refresh=True, publishingMs=50)
    async with (
        node_script("events", config) as script,
        asyncua_events(gateway, EVENT_FIELDS) as heard,
    ):
        assert "ready" in await script.line()
        by_node = await until_refresh_end(lambda: next_event(script))
        request = ua.CallMethodRequest(
            ObjectId=ua.NodeId(ua.ObjectIds.ConditionType),
            MethodId=ua.NodeId(ua.ObjectIds.ConditionType_ConditionRefresh),
            InputArguments=[ua.Variant(heard.subscription_id, ua.VariantType.UInt32)],
        )
        (result,) = await heard.client.uaclient.call([request])
        assert result.StatusCode.is_good(), result.StatusCode
        by_asyncua = await until_refresh_end(heard.note)
        await script.finish()

    alarms = refreshed(by_node)
    assert alarms == refreshed(by_asyncua)
    # Exactly the alarms retained now, each with its latest event.
    assert {cid: n["event"]["EventId"] for cid, n in alarms.items()} == expected
    r1 = alarms[f"ns={heard.ns};s={node_string('R1', 'health', 'Alarm')}"]["event"]
    assert r1["EventId"] == event_id(fault, "raised")
    assert (r1["ActiveState.Id"], r1["AckedState.Id"], r1["Severity"]) == (True, False, SEVERITY)


async def test_nodeopcua_alarm_list_shows_the_retained_alarms(gateway: Gateway) -> None:
    """node-opcua's ClientAlarmList (installAlarmMonitoring), as an HMI built on node-opcua
    uses it, holds every retained alarm after its ConditionRefresh."""
    slot = ALARMED["L1"]
    fault = prediction(slot, 1, "fault")
    await gateway.write([fault])
    async with asyncua_session(gateway, READER) as client:
        alarm = (await node_of(client, alarm_id(slot))).to_string()

        async def shown() -> bool:
            return (await retained_alarms(client)).get(alarm) == event_id(fault, "raised")

        await wait_until(shown, DEADLINE_S, what="L1's alarm raised on the condition")
        expected = await retained_alarms(client)
    async with node_script("alarmlist", gateway.config(READER)) as script:
        assert await script.line() == {"ready": True}
        (listed,) = (await script.line()).values()
        await script.finish()
    assert {_canonical(a["conditionId"]): a["eventId"] for a in listed} == expected


# --- 6. HistoryRead -------------------------------------------------------------------------

H_BASE = 1_700_000_000.0  # 2023-11-14T22:13:20Z
H_ROWS, H_STEP_S = 3000, 0.5
PER_PAGE = 700  # NumValuesPerNode: 3,000 values in 5 responses
H_START, H_END = H_BASE - 1, H_BASE + H_ROWS * H_STEP_S
INTERVAL_S = 60.0  # processed Average: 25 intervals of 120 predictions
DATA_VALUE, CALCULATED = 0x400, 0x1  # Part 11 5.3.1: historian bits of a processed value
Sample = tuple[Any, int, int]  # value, StatusCode, SourceTimestamp in microseconds


def history_rows() -> list[Prediction]:
    """H1's predictions: mostly Good, every 10th Uncertain, every 17th Bad (no value); times
    with a fraction below the millisecond (node-opcua decodes it as picoseconds)."""
    rows = []
    for i in range(H_ROWS):
        quality = Quality.GOOD
        if i % 17 == 5:
            quality = Quality.BAD
        elif i % 10 == 3:
            quality = Quality.UNCERTAIN
        value = None if quality is Quality.BAD else 100.0 - i / 8
        when = H_BASE + i * H_STEP_S + 0.000_123
        rows.append(prediction(HISTORY, i, value, quality, when, score=i / H_ROWS))
    return rows


_STATUS = {
    Quality.GOOD: ua.StatusCodes.Good,
    Quality.UNCERTAIN: ua.StatusCodes.UncertainLastUsableValue,
    Quality.BAD: ua.StatusCodes.BadNoCommunication,
}


def _iso(epoch: float) -> str:
    return _at(epoch).isoformat().replace("+00:00", "Z")


def written(rows: Sequence[Prediction]) -> list[Sample]:
    """What the Value history must hold: each prediction as its live node showed it."""
    return [(p.value, _STATUS[p.quality], _us(_at(p.timestamp))) for p in rows]


def averages(rows: Sequence[Prediction]) -> list[Sample]:
    """Average per interval as the server documents it (README, History): Good values only,
    UncertainDataSubNormal where the interval also held others, the interval's start as time."""
    out: list[Sample] = []
    start = H_BASE
    while start < H_END:
        inside = [p for p in rows if start <= p.timestamp < start + INTERVAL_S]
        good = [float(p.value) for p in inside if p.quality is Quality.GOOD]  # type: ignore[arg-type]
        base = (
            ua.StatusCodes.Good
            if len(good) == len(inside)
            else ua.StatusCodes.UncertainDataSubNormal
        )
        out.append((sum(good) / len(good), base | DATA_VALUE | CALCULATED, _us(_at(start))))
        start += INTERVAL_S
    return out


def nodeopcua_pages(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """history.js's pages with each value as a Sample."""
    *pages, done = lines
    assert done == {"done": len(pages)}
    out = []
    for page in pages:
        samples = []
        for v in page["values"]:
            us = _us(datetime.fromisoformat(v["source"].replace("Z", "+00:00")))
            samples.append((v["value"], v["code"], us + (v["sourcePicoseconds"] or 0) // 1_000_000))
        out.append({k: page[k] for k in ("status", "code", "more", "count")} | {"values": samples})
    return out


async def asyncua_pages(
    client: Client,
    nodeid: ua.NodeId,
    details: ua.ReadRawModifiedDetails | ua.ReadProcessedDetails,
    release_after: int | None = None,
) -> list[dict[str, Any]]:
    """What history.js does and prints, with asyncua's HistoryRead service: every page through
    continuation points; with ``release_after``, the point held after that many requests
    released, then sent once more."""
    pages: list[dict[str, Any]] = []

    async def read(point: bytes | None, release: bool) -> bytes | None:
        params = ua.HistoryReadParameters(
            HistoryReadDetails=details,
            TimestampsToReturn=ua.TimestampsToReturn.Both,
            ReleaseContinuationPoints=release,  # asyncua's default is True: nothing is read
            NodesToRead=[ua.HistoryReadValueId(NodeId=nodeid, ContinuationPoint=point)],
        )
        (result,) = await client.uaclient.history_read(params)
        values = getattr(result.HistoryData, "DataValues", None) or []
        samples = [
            (
                None if dv.Value is None else dv.Value.Value,
                dv.StatusCode.value,
                _us(dv.SourceTimestamp.replace(tzinfo=UTC)),
            )
            for dv in values
        ]
        pages.append(
            {
                "status": result.StatusCode.name,
                "code": result.StatusCode.value,
                "more": bool(result.ContinuationPoint),
                "count": len(values),
                "values": samples,
            }
        )
        return result.ContinuationPoint or None

    point = await read(None, False)
    async with asyncio.timeout(DEADLINE_S):
        while point is not None:
            if release_after is not None and len(pages) >= release_after:
                await read(point, True)
                await read(point, False)
                break
            point = await read(point, False)
    return pages


@contextlib.asynccontextmanager
async def on_backend(gateway: Gateway, backend: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    """The module's gateway (SQLite), or one of its own over a fresh PostgreSQL schema."""
    if backend == "sqlite":
        yield gateway
        return
    with temp_store(backend, tmp_path) as store:
        async with serve(tmp_path, store, gateway.nodeopcua_pki) as gw:
            yield gw


@pytest.mark.parametrize("backend", BACKENDS)
async def test_history_read_raw_and_processed_both_stacks_read_the_same(
    gateway: Gateway, backend: str, tmp_path: Path
) -> None:
    rows = history_rows()
    async with on_backend(gateway, backend, tmp_path) as gw:
        await asyncio.to_thread(PredictionRepository(gw.store).add_many, rows)
        value = nsu("H1", "rul", "Value")
        raw = {"start": _iso(H_START), "end": _iso(H_END), "numValuesPerNode": PER_PAGE}
        average = {
            "start": _iso(H_BASE),
            "end": _iso(H_END),
            "aggregate": "Average",
            "intervalMs": INTERVAL_S * 1000,
        }
        by_node = {
            "raw": nodeopcua_pages(
                await run_node("history", gw.config(READER, nodes=[value], **raw))
            ),
            "released": nodeopcua_pages(
                await run_node(
                    "history",
                    gw.config(READER, nodes=[value], releaseAfter=1, reuseReleased=True, **raw),
                )
            ),
            "average": nodeopcua_pages(
                processed := await run_node("history", gw.config(READER, nodes=[value], **average))
            ),
        }
        async with asyncua_session(gw, READER) as client:
            nodeid = await node_of(client, value)
            raw_details = ua.ReadRawModifiedDetails(
                IsReadModified=False,
                StartTime=_at(H_START),
                EndTime=_at(H_END),
                NumValuesPerNode=PER_PAGE,
                ReturnBounds=False,
            )
            average_details = ua.ReadProcessedDetails(
                StartTime=_at(H_BASE),
                EndTime=_at(H_END),
                ProcessingInterval=INTERVAL_S * 1000,
                AggregateType=[ua.NodeId(ua.ObjectIds.AggregateFunction_Average)],
            )
            by_asyncua = {
                "raw": await asyncua_pages(client, nodeid, raw_details),
                "released": await asyncua_pages(client, nodeid, raw_details, release_after=1),
                "average": await asyncua_pages(client, nodeid, average_details),
            }

    assert by_node == by_asyncua
    # Raw: every value once, in order, as written, through continuation points.
    pages = by_asyncua["raw"]
    assert [(p["status"], p["more"], p["count"]) for p in pages] == [
        ("Good", True, PER_PAGE)
    ] * 4 + [("Good", False, H_ROWS - 4 * PER_PAGE)]
    assert [s for p in pages for s in p["values"]] == written(rows)
    # Released after the first page: Good without data, and the point is no longer valid.
    assert [(p["status"], p["more"], p["count"]) for p in by_asyncua["released"]] == [
        ("Good", True, PER_PAGE),
        ("Good", False, 0),
        ("BadContinuationPointInvalid", False, 0),
    ]
    # Average per interval, the server's numbers equal Python's over the rows.
    (page,) = by_asyncua["average"]
    got = page["values"]
    want = averages(rows)
    assert [(code, us) for _, code, us in got] == [(code, us) for _, code, us in want]
    assert [v for v, _, _ in got] == pytest.approx([v for v, _, _ in want])
    # The same code, named apart: node-opcua names the sub-code and the info bits, asyncua's
    # StatusCode.name only the severity once info bits are set (its table has no such value).
    subnormal = ua.StatusCodes.UncertainDataSubNormal | DATA_VALUE | CALCULATED
    assert {v["status"] for v in processed[0]["values"]} == {
        "UncertainDataSubNormal#InfoTypeDataValue|HistorianCalculated"
    }
    assert {code for _, code, _ in got} == {subnormal}
    assert ua.StatusCode(subnormal).name == "Uncertain"
