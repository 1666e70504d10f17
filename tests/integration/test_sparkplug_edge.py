"""The Sparkplug B edge node destination against a real Mosquitto with mutual TLS.

The host application is written here: an MQTT 5 client with the gateway's certificate (the ACL
lets it read everything) that subscribes to ``spBv1.0/#`` and decodes every payload with the
codec's ``parse`` (built from the official Tahu proto), resolving DDATA aliases through the
births it saw. What it checks is what a SCADA host relies on: births before data, aliases only
in data, seq continuity with the 255 -> 0 wrap, the bdSeq pairing of NBIRTH and NDEATH (also
after a kill -9, when the broker sends the will), rebirth on NCMD, and data held while the
primary host is offline, then flowing after births once it is online, nothing lost.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mqttbroker import Mosquitto, MqttPki, find_mosquitto, make_pki
from sparkplug_child import GATEWAY, SHA, SLOTS, pipeline, prediction
from sparkplug_host import Host, bdseq, check_births_precede_data, seqs
from support import LOOPBACK, spawn_ready, wait_until

from bridge.connectors.mqtt.sparkplug.codec import (
    REBIRTH_METRIC,
    DataType,
    MessageType,
    rebirth_command,
    topic,
)
from bridge.connectors.mqtt.sparkplug.config import SparkplugSettings
from bridge.connectors.mqtt.sparkplug.edge import SparkplugEdgeNode
from bridge.destination import DestinationContext, Envelope, Retry
from bridge.types import Prediction, PredictionSlot, Trigger

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")

GROUP = "plant"
NODE = "gw1"
HOST_ID = "scada"
CHILD = Path(__file__).resolve().parents[1] / "sparkplug_child.py"
KEEPALIVE_S = 5


@pytest.fixture
def pki(tmp_path: Path) -> MqttPki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def broker(pki: MqttPki, tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(pki, tmp_path / "broker") as running:
        yield running


def settings_fields(pki: MqttPki, port: int, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "host": LOOPBACK,
        "port": port,
        "tls": pki.gateway_tls(),
        "client_id": "bridge-sparkplug",
        "group_id": GROUP,
        "edge_node_id": NODE,
        "bdseq_path": str(tmp_path / "state" / "bdseq"),
        "keepalive_s": KEEPALIVE_S,
        "connect_timeout_s": 3,
        "publish_timeout_s": 3,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.5,
    }
    fields.update(extra)
    return fields


def make_settings(pki: MqttPki, port: int, tmp_path: Path, **extra: Any) -> SparkplugSettings:
    return SparkplugSettings.model_validate(settings_fields(pki, port, tmp_path, **extra))


def edge_node(settings: SparkplugSettings) -> SparkplugEdgeNode:
    return SparkplugEdgeNode("sparkplug", settings, DestinationContext(GATEWAY, slots=SLOTS))


def envelopes(
    node: SparkplugEdgeNode, seq: int, slots: tuple[PredictionSlot, ...] = SLOTS
) -> list[Envelope]:
    return [encoded(node, prediction(slot, seq)) for slot in slots]


def encoded(node: SparkplugEdgeNode, p: Prediction) -> Envelope:
    return Envelope(p.id, node.encode(Trigger(p)) or "")


def _now_ms() -> int:
    return round(time.time() * 1000)


# ---- tests ----------------------------------------------------------------------------------


async def test_births_precede_data_and_data_carries_aliases_only(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    node = edge_node(make_settings(pki, broker.tls_port, tmp_path))
    async with Host(pki, broker.tls_port) as host:
        await node.start()
        try:
            sent = [prediction(slot, 1) for slot in SLOTS]
            async with asyncio.timeout(10):
                assert await node.deliver([encoded(node, p) for p in sent]) == [None] * 3
                stray = PredictionSlot("pump-z", "health", "1.0.0", SHA, labels=("healthy",))
                (rejected,) = await node.deliver(envelopes(node, 1, (stray,)))
            assert isinstance(rejected, str) and "pump-z" in rejected
            await host.wait_for(MessageType.DDATA, 3)
            assert node.health().state == "ok"
        finally:
            await node.close()
        await host.wait_for(MessageType.NDEATH)

    seen = host.seen
    check_births_precede_data(seen)
    assert [s.kind for s in seen[:3]] == [
        MessageType.NBIRTH,
        MessageType.DBIRTH,
        MessageType.DBIRTH,
    ]
    nbirth = seen[0]
    assert nbirth.payload.seq == 0
    assert nbirth.metric(REBIRTH_METRIC) is False
    assert nbirth.metric("Gateway/Id") == GATEWAY and nbirth.metric("Gateway/Version")
    (death,) = host.of(MessageType.NDEATH)
    assert bdseq(death) == bdseq(nbirth)  # the explicit NDEATH of a clean stop

    births = {s.device: s for s in host.of(MessageType.DBIRTH)}
    pump_a = births["pump-a"].payload.by_name()
    assert set(pump_a) == {
        f"Prediction/{model}/{suffix}"
        for model, own in (("flow", "Value"), ("health", "Label"))
        for suffix in (own, "Score", "ModelVersion", "Quality", "DriftScore", "Id")
    }
    assert pump_a["Prediction/flow/Value"].datatype == DataType.DOUBLE
    assert pump_a["Prediction/flow/Value"].properties == {"engUnit": "m3/h"}
    assert pump_a["Prediction/health/Label"].datatype == DataType.STRING
    assert pump_a["Prediction/flow/ModelVersion"].value == "2.1.0"
    every_alias = [m.alias for s in (nbirth, *births.values()) for m in s.payload.metrics]
    named = [a for a in every_alias if a is not None]
    assert len(named) == len(set(named)) == 2 + 6 * len(SLOTS)  # unique in the edge node

    by_id = {
        s.metric(name): s
        for s in host.of(MessageType.DDATA)
        for name in s.payload.by_name()
        if name.endswith("/Id")
    }
    for slot, expected in zip(SLOTS, sent, strict=True):
        ddata = by_id[expected.id]
        assert ddata.device == slot.asset
        assert all(m.name is None and m.datatype is None for m in ddata.bare.metrics)
        assert all(m.alias is not None for m in ddata.bare.metrics)
        prefix = f"Prediction/{slot.model}"
        own = "Label" if slot.labels else "Value"
        assert ddata.metric(f"{prefix}/{own}") == expected.value
        assert ddata.metric(f"{prefix}/Score") == expected.score
        assert ddata.metric(f"{prefix}/ModelVersion") == slot.version
        assert ddata.metric(f"{prefix}/Quality") == "Good"
        assert ddata.metric(f"{prefix}/DriftScore") == expected.drift_score
        timestamps = {m.timestamp for m in ddata.payload.metrics}
        assert timestamps == {round(expected.timestamp * 1000)}


async def test_seq_runs_over_every_node_message_and_wraps_after_255(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    node = edge_node(make_settings(pki, broker.tls_port, tmp_path))
    async with Host(pki, broker.tls_port) as host:
        await node.start()
        try:
            async with asyncio.timeout(30):
                for seq in range(1, 101):
                    assert await node.deliver(envelopes(node, seq)) == [None] * len(SLOTS)
            await host.wait_for(MessageType.DDATA, 300)
        finally:
            await node.close()
    seen = [s for s in host.seen if s.kind is not MessageType.NDEATH]
    assert len(seen) == 3 + 300
    check_births_precede_data(seen)
    assert seqs(seen) == [i % 256 for i in range(len(seen))]
    assert node.health().counters["data"] == 300


async def test_rebirth_on_ncmd_keeps_the_bdseq_and_restarts_seq(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    node = edge_node(make_settings(pki, broker.tls_port, tmp_path))
    async with Host(pki, broker.tls_port) as host:
        await node.start()
        try:
            async with asyncio.timeout(10):
                for seq in range(1, 4):
                    assert await node.deliver(envelopes(node, seq)) == [None] * len(SLOTS)
            await host.wait_for(MessageType.DDATA, 9)
            before = len(host.seen)
            await host.publish(topic(GROUP, MessageType.NCMD, NODE), rebirth_command(_now_ms()))
            await host.wait_for(MessageType.NBIRTH, 2)
            await host.wait_for(MessageType.DBIRTH, 4)
            async with asyncio.timeout(10):
                assert await node.deliver(envelopes(node, 4)) == [None] * len(SLOTS)
            await host.wait_for(MessageType.DDATA, 12)
            assert node.health().counters["rebirths"] == 1
        finally:
            await node.close()

    first, second = host.of(MessageType.NBIRTH)
    assert bdseq(first) == bdseq(second)  # same MQTT session, same will
    after = host.seen[before:]
    assert after[0] is second and second.payload.seq == 0
    check_births_precede_data(after)
    assert seqs([s for s in after if s.kind is not MessageType.NDEATH]) == list(range(6))
    # The new DBIRTH carries each metric's latest value.
    rebirth_b = next(s for s in after if s.kind is MessageType.DBIRTH and s.device == "pump-b")
    assert rebirth_b.metric("Prediction/health/Label") == prediction(SLOTS[2], 3).value


async def test_bdseq_moves_on_with_every_connect_and_survives_a_restart(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    settings = make_settings(pki, broker.tls_port, tmp_path)
    node = edge_node(settings)
    try:
        # The host listens first: the node births as soon as it starts (in the background),
        # and a birth published before the host subscribed is never seen (not retained).
        async with Host(pki, broker.tls_port) as host:
            await node.start()
            async with asyncio.timeout(10):
                assert await node.deliver(envelopes(node, 1)) == [None] * len(SLOTS)
            (first,) = await host.wait_for(MessageType.NBIRTH)
        broker.restart()  # the node's link dies under it
        async with Host(pki, broker.tls_port, "scada-host-2") as host:
            async with asyncio.timeout(15):
                seq = 2
                while await node.deliver(envelopes(node, seq)) != [None] * len(SLOTS):
                    await asyncio.sleep(0.1)
                    seq += 1
            (second,) = await host.wait_for(MessageType.NBIRTH)
            check_births_precede_data(host.seen)
    finally:
        await node.close()
    assert bdseq(second) == (bdseq(first) + 1) % 256
    assert node.health().counters["connects"] == 2

    # A new process (a new destination on the same file) takes the next one.
    again = edge_node(settings)
    async with Host(pki, broker.tls_port, "scada-host-3") as host:
        await again.start()
        try:
            (third,) = await host.wait_for(MessageType.NBIRTH)
        finally:
            await again.close()
    assert bdseq(third) == (bdseq(second) + 1) % 256
    kept = await asyncio.to_thread(Path(settings.bdseq_path).read_text)
    assert kept.strip() == str((bdseq(third) + 1) % 256)


async def _spawn(settings_path: Path, store_url: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as stderr:
        return await spawn_ready(CHILD, str(settings_path), store_url, stderr=stderr)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await asyncio.wait_for(proc.wait(), 10)


async def test_a_killed_gateway_leaves_the_will_whose_bdseq_is_its_nbirths(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    settings_path = tmp_path / "settings.json"
    settings_path.write_text(json.dumps(settings_fields(pki, broker.tls_port, tmp_path)))
    store_url = f"sqlite:///{tmp_path / 'child.db'}"
    log = tmp_path / "child.log"
    children: list[asyncio.subprocess.Process] = []
    try:
        async with Host(pki, broker.tls_port) as host:
            children.append(await _spawn(settings_path, store_url, log))
            (birth,) = await host.wait_for(MessageType.NBIRTH, timeout=15)
            await host.wait_for(MessageType.DDATA, 3)
            killed_at = time.monotonic()
            children[0].send_signal(signal.SIGKILL)
            await children[0].wait()
            # The broker notices the silence after 1.5 keep-alives and publishes the will.
            (will,) = await host.wait_for(MessageType.NDEATH, timeout=KEEPALIVE_S * 1.5 + 5)
            assert bdseq(will) == bdseq(birth)
            assert will.payload.seq is None
            assert will.at - killed_at < KEEPALIVE_S * 1.5 + 3

            # The restarted gateway reads the next bdSeq from its file.
            children.append(await _spawn(settings_path, store_url, log))
            second = (await host.wait_for(MessageType.NBIRTH, 2, timeout=15))[1]
            assert bdseq(second) == (bdseq(birth) + 1) % 256
            stopped_at = time.monotonic()
            children[1].send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(children[1].wait(), 15) == 0, log.read_text()
            # A clean stop publishes its NDEATH itself, at once, with the session's bdSeq.
            deaths = await host.wait_for(MessageType.NDEATH, 2, timeout=5)
            assert bdseq(deaths[1]) == bdseq(second)
            assert deaths[1].at - stopped_at < KEEPALIVE_S
            # ... and ends with a normal DISCONNECT: the broker drops its will (no third
            # NDEATH, even after the keep-alive would have run out).
            await asyncio.sleep(KEEPALIVE_S * 1.5 + 1)
            assert len(host.of(MessageType.NDEATH)) == 2
            check_births_precede_data(host.seen)
    finally:
        for child in children:
            await _stop(child)


async def test_data_is_held_while_the_primary_host_is_offline_then_flows_after_births(
    pki: MqttPki, broker: Mosquitto, tmp_path: Path
) -> None:
    settings = make_settings(
        pki, broker.tls_port, tmp_path, primary_host_id=HOST_ID, primary_host_wait_s=0.5
    )
    async with Host(pki, broker.tls_port) as host:
        await host.state(online=False)
        async with pipeline(settings, f"sqlite:///{tmp_path / 'spb.db'}") as running:
            node = running.destination
            written = []
            for seq in range(1, 6):
                batch = [prediction(slot, seq) for slot in SLOTS]
                written += batch
                await running.writer.write(batch)
            await wait_until(lambda: node.health().counters["held"] > 0, what="data held")
            await asyncio.sleep(0.5)
            assert running.backlog() == len(written)  # kept in the outbox
            assert host.seen == []  # no births while the host is offline
            assert node.health().state == "degraded"
            assert "offline: holding data" in node.health().detail

            await host.state(online=True)
            await wait_until(lambda: running.backlog() == 0, timeout=15, what="the backlog sent")
            await host.wait_for(MessageType.DDATA, len(written))
            check_births_precede_data(host.seen)
            assert [s.kind for s in host.seen[:3]] == [
                MessageType.NBIRTH,
                MessageType.DBIRTH,
                MessageType.DBIRTH,
            ]
            ids: dict[tuple[str, str], list[str]] = {}
            for s in host.of(MessageType.DDATA):
                for name, metric in s.payload.by_name().items():
                    if name.endswith("/Id"):
                        ids.setdefault((s.device or "", name.split("/")[1]), []).append(
                            str(metric.value)
                        )
            for slot in SLOTS:  # all of them, once each, in order
                expected = [p.id for p in written if (p.asset, p.model) == (slot.asset, slot.model)]
                assert ids[(slot.asset, slot.model)] == expected
            (birth,) = host.of(MessageType.NBIRTH)

            # The host goes away: the node ends its session and holds data again.
            await host.state(online=False)
            (death,) = await host.wait_for(MessageType.NDEATH)
            assert bdseq(death) == bdseq(birth)
            held = node.health().counters["held"]
            await running.writer.write([prediction(slot, 6) for slot in SLOTS])
            await wait_until(lambda: node.health().counters["held"] > held, what="held again")
            assert len(host.of(MessageType.DDATA)) == len(written)


async def test_births_the_broker_refuses_are_an_error_not_a_silent_success(
    pki: MqttPki, tmp_path: Path
) -> None:
    # The gateway may read but not write: mosquitto answers each PUBLISH with PUBACK 135.
    with Mosquitto(pki, tmp_path / "broker", acl_lines=["user gateway", "topic read #"]) as broker:
        node = edge_node(make_settings(pki, broker.tls_port, tmp_path))
        try:
            async with asyncio.timeout(15):
                outcomes = await node.deliver(envelopes(node, 1))
            health = node.health()
        finally:
            await node.close()
    assert all(isinstance(o, Retry) and "refused the birth" in o.reason for o in outcomes)
    assert "Not authorized" in health.detail
    assert health.counters["refused"] >= 1 and health.counters["data"] == 0
