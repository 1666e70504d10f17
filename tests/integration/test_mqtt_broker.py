"""The MQTT test broker itself: a real Mosquitto on loopback with mutual TLS, CN-based ACLs and
persistence, exercised with plain aiomqtt clients (MQTT 5) before any gateway code relies on it.

Refusals are asserted twice where TLS 1.3 changes what a client sees: in TLS 1.3 the client's
handshake is finished before the broker judges the client certificate, so the broker's alert
arrives after CONNECT was sent. aiomqtt 2.5.1 then only logs the alert (paho's logger) and waits
for a CONNACK until its ``timeout``; with TLS 1.2 the same refusal is an ``ssl.SSLError`` at
connect time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from mqttbroker import Mosquitto, MqttPki, find_mosquitto, make_pki
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support import LOOPBACK, wait_until

pytestmark = pytest.mark.skipif(
    find_mosquitto() is None,
    reason="mosquitto is not installed (PATH, /usr/sbin): apt-get install mosquitto",
)

DEVICES = ("pump-a", "pump-b")
# How long aiomqtt waits for a CONNACK that a TLS 1.3 refusal never sends. Not a deadline for
# anything to succeed, so it can be short; the alert itself is awaited with a generous bound.
REFUSED_CONNACK_WAIT = 3.0
PAHO_LOGGER = "mqtt.test.paho"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> MqttPki:
    return make_pki(tmp_path_factory.mktemp("mqtt-pki"), devices=DEVICES)


def _run_broker(broker: Mosquitto) -> Iterator[Mosquitto]:
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        # Captured output is shown only when the test fails: the broker's side of the story.
        print(broker.log_text())


@pytest.fixture
def broker(pki: MqttPki, tmp_path: Path) -> Iterator[Mosquitto]:
    yield from _run_broker(Mosquitto(pki, tmp_path / "broker"))


@pytest.fixture
def wrong_host_broker(pki: MqttPki, tmp_path: Path) -> Iterator[Mosquitto]:
    yield from _run_broker(Mosquitto(pki, tmp_path / "broker", server_cert="wrong"))


def client(
    port: int,
    tls: ssl.SSLContext | None,
    *,
    identifier: str | None = None,
    **kwargs: Any,
) -> aiomqtt.Client:
    kwargs.setdefault("timeout", 10)
    return aiomqtt.Client(
        LOOPBACK,
        port,
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=tls,
        **kwargs,
    )


def tls12(context: ssl.SSLContext) -> ssl.SSLContext:
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what led to it. aiomqtt raises ``MqttError(str(e)) from None`` on connect, which
    hides the cause from tracebacks but keeps it in ``__context__``."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


async def refused(mqtt: aiomqtt.Client) -> aiomqtt.MqttError:
    with pytest.raises(aiomqtt.MqttError) as info:
        async with asyncio.timeout(20), mqtt:
            pass
    return info.value


def connected_users(broker: Mosquitto) -> list[str]:
    return [
        line.rsplit("u'", 1)[1].split("'")[0]
        for line in broker.log_text().splitlines()
        if "New client connected" in line and "u'" in line
    ]


async def test_gateway_receives_device_telemetry_over_mutual_tls(
    pki: MqttPki, broker: Mosquitto
) -> None:
    async with asyncio.timeout(30):
        gateway_tls = pki.client_context(pki.gateway_cert, pki.gateway_key)
        async with client(broker.tls_port, gateway_tls, identifier="gw") as gateway:
            await gateway.subscribe("plant/+/+/telemetry/#", qos=1)
            device_tls = pki.client_context(*pki.device("pump-a"))
            async with client(broker.tls_port, device_tls, identifier="pump-a") as device:
                await device.publish("plant/line4/pump-a/telemetry/temp", b"21.5", qos=1)
            message = await anext(aiter(gateway.messages))
    assert message.topic.value == "plant/line4/pump-a/telemetry/temp"
    assert message.payload == b"21.5"
    assert message.qos == 1
    # use_identity_as_username: the certificate CN is the username the ACL sees.
    assert connected_users(broker) == ["gateway", "pump-a"]


async def test_device_cannot_publish_for_another_device(pki: MqttPki, broker: Mosquitto) -> None:
    puback_reasons: list[tuple[int, int, str]] = []
    async with asyncio.timeout(30):
        gateway_tls = pki.client_context(pki.gateway_cert, pki.gateway_key)
        async with client(broker.tls_port, gateway_tls, identifier="gw") as gateway:
            await gateway.subscribe("plant/#", qos=1)
            device_tls = pki.client_context(*pki.device("pump-a"))
            async with client(broker.tls_port, device_tls, identifier="pump-a") as device:
                # aiomqtt ignores the PUBACK reason code (publish() just returns), so read it
                # from the paho client underneath: the only place a refusal is visible.
                paho = device._client
                forward: Any = paho.on_publish

                def record(c: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
                    puback_reasons.append((mid, reason.value, str(reason)))
                    forward(c, userdata, mid, reason, props)

                paho.on_publish = record
                await device.publish("plant/line4/pump-b/telemetry/temp", b"spoofed", qos=1)
                # Same connection, so it is delivered after anything the first one produced.
                await device.publish("plant/line4/pump-a/telemetry/temp", b"own", qos=1)
            message = await anext(aiter(gateway.messages))
    assert (message.topic.value, message.payload) == ("plant/line4/pump-a/telemetry/temp", b"own")
    assert [(value, text) for _, value, text in puback_reasons] == [
        (135, "Not authorized"),
        (0, "Success"),
    ]
    assert "Denied PUBLISH from pump-a" in broker.log_text()


async def test_device_receives_only_its_own_commands(pki: MqttPki, broker: Mosquitto) -> None:
    async with asyncio.timeout(30):
        device_tls = pki.client_context(*pki.device("pump-a"))
        async with client(broker.tls_port, device_tls, identifier="pump-a") as device:
            # Mosquitto grants the subscription and filters on delivery per ACL.
            await device.subscribe("plant/line4/+/cmd/#", qos=1)
            gateway_tls = pki.client_context(pki.gateway_cert, pki.gateway_key)
            async with client(broker.tls_port, gateway_tls, identifier="gw") as gateway:
                await gateway.publish("plant/line4/pump-b/cmd/stop", b"b", qos=1)
                await gateway.publish("plant/line4/pump-a/cmd/stop", b"a", qos=1)
            message = await anext(aiter(device.messages))
    assert (message.topic.value, message.payload) == ("plant/line4/pump-a/cmd/stop", b"a")


# Refused client certificates: (certificate, TLS 1.2 alert, broker's reason).
CLIENT_REFUSALS = {
    "no-certificate": (None, "SSLV3_ALERT_HANDSHAKE_FAILURE", "peer did not return a certificate"),
    "expired": ("expired", "SSLV3_ALERT_CERTIFICATE_EXPIRED", "certificate verify failed"),
    "other-ca": ("stranger", "TLSV1_ALERT_UNKNOWN_CA", "certificate verify failed"),
}
# The same refusals seen by a TLS 1.3 client, as the text of paho's receive error.
# What paho logs when the broker's reset overtook its TLS alert.
LOST_ALERT = "EOF occurred in violation of protocol"
TLS13_ALERTS = {
    "no-certificate": "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    "expired": "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    "other-ca": "TLSV1_ALERT_UNKNOWN_CA",
}


def refused_context(pki: MqttPki, case: str) -> ssl.SSLContext:
    who = CLIENT_REFUSALS[case][0]
    if who is None:
        return pki.client_context()
    return pki.client_context(getattr(pki, f"{who}_cert"), getattr(pki, f"{who}_key"))


@pytest.mark.parametrize("case", sorted(CLIENT_REFUSALS))
async def test_client_certificate_refused_tls12(pki: MqttPki, broker: Mosquitto, case: str) -> None:
    _, alert, broker_reason = CLIENT_REFUSALS[case]
    error = await refused(client(broker.tls_port, tls12(refused_context(pki, case))))
    ssl_errors = [e for e in causes(error) if isinstance(e, ssl.SSLError)]
    assert ssl_errors, causes(error)
    assert ssl_errors[0].reason == alert
    await wait_until(lambda: broker_reason in broker.log_text(), what=broker_reason)
    assert connected_users(broker) == []


@pytest.mark.parametrize("case", sorted(CLIENT_REFUSALS))
async def test_client_certificate_refused_tls13(
    pki: MqttPki, broker: Mosquitto, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, broker_reason = CLIENT_REFUSALS[case]
    caplog.set_level(logging.ERROR, logger=PAHO_LOGGER)
    mqtt = client(
        broker.tls_port,
        refused_context(pki, case),
        logger=logging.getLogger(PAHO_LOGGER),
        timeout=REFUSED_CONNACK_WAIT,
    )
    error = await refused(mqtt)
    # Nothing but the missing CONNACK reaches the caller...
    assert str(error) == "Operation timed out"
    # ...the reason is only in paho's log, once it has read the broker's alert. The broker
    # closes right after its alert with the client's CONNECT unread, so its kernel may reset
    # the connection and the alert is lost on the way: paho then logs an EOF. Either way
    # the client is refused, and the broker's log says why.
    await wait_until(
        lambda: any(
            TLS13_ALERTS[case] in r.getMessage() or LOST_ALERT in r.getMessage()
            for r in caplog.records
        ),
        what=f"{TLS13_ALERTS[case]} (or the lost alert's EOF) logged by paho",
    )
    await wait_until(lambda: broker_reason in broker.log_text(), what=broker_reason)
    assert connected_users(broker) == []


async def test_plaintext_mqtt_to_tls_port_is_refused(broker: Mosquitto) -> None:
    error = await refused(client(broker.tls_port, None, timeout=REFUSED_CONNACK_WAIT))
    # The broker drops the connection without a CONNACK; aiomqtt only times out.
    assert str(error) == "Operation timed out"
    await wait_until(
        lambda: "wrong version number" in broker.log_text(), what="the broker's TLS error"
    )
    assert connected_users(broker) == []


async def test_tls_to_plain_port_fails(pki: MqttPki, broker: Mosquitto) -> None:
    tls = pki.client_context(pki.gateway_cert, pki.gateway_key)
    error = await refused(client(broker.plain_port, tls))
    # The plain listener reads the ClientHello as a malformed MQTT packet and resets.
    assert any(isinstance(e, ConnectionResetError | ssl.SSLError) for e in causes(error)), causes(
        error
    )
    assert connected_users(broker) == []


async def test_broker_verified_against_another_ca_fails(pki: MqttPki, broker: Mosquitto) -> None:
    tls = pki.client_context(pki.gateway_cert, pki.gateway_key, ca=pki.other_ca)
    error = await refused(client(broker.tls_port, tls))
    verify = [e for e in causes(error) if isinstance(e, ssl.SSLCertVerificationError)]
    assert verify, causes(error)
    assert "certificate verify failed" in str(verify[0])
    assert connected_users(broker) == []


async def test_wrong_host_certificate_fails_hostname_verification(
    pki: MqttPki, wrong_host_broker: Mosquitto
) -> None:
    tls = pki.client_context(pki.gateway_cert, pki.gateway_key)
    assert tls.check_hostname
    error = await refused(client(wrong_host_broker.tls_port, tls))
    verify = [e for e in causes(error) if isinstance(e, ssl.SSLCertVerificationError)]
    assert verify, causes(error)
    assert "IP address mismatch" in str(verify[0])
    # The chain is fine: only the name was wrong.
    lax = pki.client_context(pki.gateway_cert, pki.gateway_key)
    lax.check_hostname = False
    async with asyncio.timeout(20), client(wrong_host_broker.tls_port, lax):
        pass
    assert connected_users(wrong_host_broker) == ["gateway"]


async def test_persistent_session_survives_broker_restart(pki: MqttPki, broker: Mosquitto) -> None:
    def subscriber() -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        return client(
            broker.tls_port,
            pki.client_context(pki.gateway_cert, pki.gateway_key),
            identifier="uns-persistent",
            clean_start=False,
            properties=properties,
        )

    async with asyncio.timeout(60):
        async with subscriber() as gateway:
            await gateway.subscribe("plant/+/+/telemetry/#", qos=1)
        device_tls = pki.client_context(*pki.device("pump-a"))
        async with client(broker.tls_port, device_tls, identifier="pump-a") as device:
            for i in range(5):
                await device.publish("plant/line4/pump-a/telemetry/seq", str(i).encode(), qos=1)
        ports = (broker.tls_port, broker.plain_port)
        await asyncio.to_thread(broker.restart)
        assert (broker.tls_port, broker.plain_port) == ports
        received: list[bytes] = []
        async with subscriber() as gateway:
            try:
                async with asyncio.timeout(15):
                    async for message in gateway.messages:
                        assert message.qos == 1
                        assert isinstance(message.payload, bytes)
                        received.append(message.payload)
                        if len(received) == 5:
                            break
            except TimeoutError:
                pytest.fail(f"after the restart the queued session delivered only {received}")
    assert received == [b"0", b"1", b"2", b"3", b"4"]
    assert "Saving in-memory database" in broker.log_text()
