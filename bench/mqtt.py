"""MQTT 5 throughput over mutual TLS: the UNS destination publishing and the MQTT source
ingesting, each against a bare aiomqtt client on the same broker in the same run.

The broker is a Mosquitto this module starts on a free 127.0.0.1 port: TLS with a throwaway CA,
client certificates required and used as the user name for the ACL (``user gateway``, read and
write everything), persistence off, logging of errors and warnings only (per-message debug
lines would be broker work neither side asks for). Both sides use the gateway's certificate.

1. publish: ``--events`` (20,000) predictions of ``--assets`` (8) assets x many seqs, encoded by
   ``UnsDestination.encode`` beforehand (what the outbox stores), then
   - bridge: ``UnsDestination.deliver`` in batches of its own ``capabilities.batch_size`` (64),
     one after the other, as the outbox relay calls it (QoS 1, retained ``/prediction`` topics;
     each publish waits for its PUBACK);
   - floor: one bare aiomqtt client publishing the same bodies (``str`` as the outbox holds
     them) on the same topics with the same QoS and retain flag, a batch of the same size
     published concurrently (``asyncio.gather``) and awaited before the next; no MQTT 5
     properties (nor does the bridge send any without ``message_expiry_s``). A third,
     unscored side sends a content type and a user property, to show what they cost in paho.
   Both connected beforehand, warmed up with one batch, in alternating rounds of
   ``--round-events`` (the side that goes first alternates too) so they see the same machine.
   Figures: PUBACKed messages/s (target >= 70 % of the floor) and CPU ms per 1,000 messages of
   this process.
2. ingest: ``--devices`` (1,000) simulated devices publish on ``plant/line/dev-XXXX/telemetry``
   JSON ``{"temp": x, "ts": ms}`` at ``--rate`` (10,000 messages/s in all, 10/s per device) for
   ``--seconds`` (5), QoS 1, from ``--pub-connections`` (2) aiomqtt connections in a process of
   their own (``--publisher``: its CPU is not counted for either side), paced by the clock;
   - bridge: ``MqttSource`` (the filter ``plant/+/+/telemetry``, QoS 1, a tag per device bound
     to ``/temp`` with ``/ts`` as the time) and a consumer that counts the samples of each batch;
   - floor: a bare aiomqtt subscriber (same filter and QoS) doing ``json.loads`` per message.
   Only the measured side is subscribed during its round; ``--ingest-rounds`` (2) rounds each,
   alternating. Figures: received messages/s from the publisher's go to the last message
   (target >= 70 % of the floor), loss (acknowledged by the broker to the devices, not
   received), and CPU ms per 1,000 messages of this process over the same window.

Broker CPU per phase and the publisher's own figures are in the JSON. ``--quick`` (< 20 s):
2,000 events, one ingest round each of 1.5 s.

    python -m bench.mqtt [--events 20000 --assets 8 --round-events 2000]
                         [--rate 10000 --devices 1000 --seconds 5 --ingest-rounds 2
                          --pub-connections 2] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.common import ROOT, free_port, proc_cpu_s, row, write_result
from bridge.connectors.mqtt.config import MqttAddress, MqttSourceSettings, UnsSettings
from bridge.connectors.mqtt.source import MqttSource
from bridge.connectors.mqtt.uns import UnsDestination
from bridge.destination import DestinationContext, Envelope
from bridge.logging import configure_logging
from bridge.types import Prediction, Quality, SourceTag, Trigger

HOST = "127.0.0.1"
GATEWAY = "bench"
TARGET_RATIO = 0.70
FILTER = "plant/+/+/telemetry"
# Longest any one wait may take: a broker or client that stops answering ends the run with an
# error instead of hanging it.
PUBLISH_TIMEOUT_S = 30.0
ROUND_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 30.0
# After the publisher is done: the receiver may still be working through a backlog; it is over
# when everything acknowledged has arrived or nothing more came for this long.
QUIET_S = 1.0
DRAIN_TIMEOUT_S = 20.0
# Publishes one publisher connection may have waiting for their PUBACK: beyond it the
# publisher waits (and offers less than asked, which its figures show) instead of growing.
MAX_PENDING = 10_000
TICK_S = 0.005


def _topic(device: int) -> str:
    return f"plant/line/dev-{device:04d}/telemetry"


# --- broker: a CA, certificates, one Mosquitto ---------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    gateway_cert: Path
    gateway_key: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.gateway_cert), str(self.gateway_key))
        return context


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    # 0600 from the start: the gateway's TLS settings refuse a key others can read.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _certificate(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: x509.ObjectIdentifier | None = None,
    san: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if issuer is None:
        usages = (False, False, False, False, False, True, True, False, False)
    else:
        usages = (True, False, False, False, False, False, False, False, False)
    builder = builder.add_extension(x509.KeyUsage(*usages), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    """A CA, the broker's certificate (for 127.0.0.1) and the gateway's client certificate."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("bench MQTT CA", ca_key, None)
    files: dict[str, Path] = {}
    for stem, cn, usage, san in (
        ("server", "localhost", ExtendedKeyUsageOID.SERVER_AUTH, [ipaddress.ip_address(HOST)]),
        ("gateway", "gateway", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.IPAddress(a) for a in san]
        cert = _certificate(cn, key, (ca.subject, ca_key), usage, names)
        files[f"{stem}_cert"] = directory / f"{stem}.pem"
        files[f"{stem}_key"] = directory / f"{stem}.key"
        files[f"{stem}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, files[f"{stem}_key"])
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return Pki(ca=directory / "ca.pem", **files)


def find_mosquitto() -> str | None:
    """PATH first, then the sbin directories Debian installs it in (often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin"):
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class Broker:
    """One mosquitto on a free 127.0.0.1 port with mutual TLS; ``stop()`` always ends it."""

    def __init__(self, binary: str, pki: Pki, directory: Path, max_queued: int) -> None:
        self.binary = binary
        self.max_queued = max_queued
        self.pki = pki
        self.directory = directory
        self.port = 0
        self.log = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("mosquitto is not running")
        return self._process.pid

    def start(self, timeout_s: float = 10.0) -> None:
        # A free port may be taken by someone else before mosquitto binds it: try others.
        for attempt in range(3):
            self.port = free_port()
            self._write_config()
            with (self.directory / "mosquitto.out").open("ab") as out:
                self._process = subprocess.Popen(
                    [self.binary, "-c", str(self.directory / "mosquitto.conf")],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C for the bench must not reach it first
                )
            deadline = time.monotonic() + timeout_s
            while self._process.poll() is None and time.monotonic() < deadline:
                if _accepts(self.port):
                    return
                time.sleep(0.05)
            self.stop()
            if attempt == 2 or "Address already in use" not in self.log_text():
                raise RuntimeError(f"mosquitto did not start:\n{self.log_text()[-2000:]}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def log_text(self) -> str:
        texts = []
        for path in (self.log, self.directory / "mosquitto.out"):
            with contextlib.suppress(FileNotFoundError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def _write_config(self) -> None:
        acl = self.directory / "acl"
        acl.write_text("user gateway\ntopic readwrite #\n")
        lines = [
            # As root mosquitto drops to the 'mosquitto' user, who cannot read a private temp
            # directory; naming the current user keeps it (no effect when not root).
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "persistence false",
            # Per subscriber, on top of the 20 in flight: a QoS 1 message that finds the queue
            # full is dropped by the broker (what "lost" counts).
            f"max_queued_messages {self.max_queued}",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            f"acl_file {acl}",
            f"listener {self.port} {HOST}",
            f"cafile {self.pki.ca}",
            f"certfile {self.pki.server_cert}",
            f"keyfile {self.pki.server_key}",
            "require_certificate true",
            "use_identity_as_username true",
            "set_tcp_nodelay true",
        ]
        (self.directory / "mosquitto.conf").write_text("\n".join(lines) + "\n")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Tally:
    """One side's sums over its rounds."""

    messages: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    failed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, messages: int, seconds: float, cpu_s: float, broker_cpu_s: float) -> None:
        self.messages += messages
        self.seconds += seconds
        self.cpu_s += cpu_s
        self.broker_cpu_s += broker_cpu_s

    def summary(self) -> dict[str, Any]:
        per_k = 1e6 / self.messages if self.messages else float("nan")
        return {
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "messages_per_s": round(self.messages / self.seconds) if self.seconds else 0,
            "cpu_s": round(self.cpu_s, 3),
            "cpu_ms_per_1000": round(self.cpu_s * per_k, 2),
            "cpu_percent": round(100 * self.cpu_s / self.seconds, 1) if self.seconds else 0,
            "broker_cpu_ms_per_1000": round(self.broker_cpu_s * per_k, 2),
            "failed": self.failed,
            **self.extra,
        }


async def _timed(work: Awaitable[tuple[int, int]], tally: Tally, broker_pid: int) -> None:
    """Await one round ``work`` (-> messages done, failed; it starts only when awaited) and
    add it to ``tally``."""
    broker0, cpu0, t0 = proc_cpu_s(broker_pid), time.process_time(), time.perf_counter()
    async with asyncio.timeout(ROUND_TIMEOUT_S):
        done, failed = await work
    seconds = time.perf_counter() - t0
    tally.add(done, seconds, time.process_time() - cpu0, proc_cpu_s(broker_pid) - broker0)
    tally.failed += failed


# --- 1. publish ----------------------------------------------------------------------------


def _uns_settings(pki: Pki, port: int) -> UnsSettings:
    return UnsSettings.model_validate(
        {
            "host": HOST,
            "port": port,
            "tls": {
                "ca_file": str(pki.ca),
                "client_certificate": str(pki.gateway_cert),
                "client_key": str(pki.gateway_key),
            },
            "client_id": "bench-uns",
            "enterprise": "acme",
            "site": "dallas",
            "area": "packaging",
            "line": "line-4",
            "publish_timeout_s": PUBLISH_TIMEOUT_S,
        }
    )


def _events(count: int, assets: int) -> list[Trigger]:
    now = time.time()
    out = []
    for i in range(count):
        asset, seq = f"pump-{i % assets:02d}", i // assets + 1
        pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{GATEWAY}/{asset}/health/{seq}"))
        prediction = Prediction(
            id=pid,
            seq=seq,
            asset=asset,
            model="health",
            version="1.0.0",
            sha256="ab" * 32,
            value="healthy" if i % 7 else "worn",
            score=0.5 + (i % 50) / 100,
            quality=Quality.GOOD,
            timestamp=now + seq,
            input_age_s=0.1,
        )
        out.append(Trigger(prediction))
    return out


async def measure_publish(
    pki: Pki, broker: Broker, events: int, assets: int, round_events: int
) -> dict[str, Any]:
    settings = _uns_settings(pki, broker.port)
    destination = UnsDestination("uns", settings, DestinationContext(GATEWAY))
    triggers = _events(events, assets)
    t0 = time.perf_counter()
    envelopes = []
    for trigger in triggers:
        body = destination.encode(trigger)
        if body is None:
            raise RuntimeError("UnsDestination.encode dropped a prediction")
        envelopes.append(Envelope(trigger.prediction.id, body))
    encode_us = (time.perf_counter() - t0) / events * 1e6
    # The floor's topics are worked out beforehand: a bare publisher knows where it writes.
    topics = [
        settings.topic_of(t.prediction.asset, t.prediction.model) + "/prediction" for t in triggers
    ]
    size = destination.capabilities.batch_size

    def batches(start: int, stop: int) -> list[range]:
        return [range(i, min(i + size, stop)) for i in range(start, stop, size)]

    async def bridge(start: int, stop: int) -> tuple[int, int]:
        done = failed = 0
        for span in batches(start, stop):
            for outcome in await destination.deliver([envelopes[i] for i in span]):
                if outcome is None:
                    done += 1
                else:
                    failed += 1
        return done, failed

    def properties(key: str) -> Properties:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = "application/json"
        props.UserProperty = [("idempotency-key", key)]
        return props

    async def bare_side(start: int, stop: int, with_properties: bool) -> tuple[int, int]:
        done = failed = 0
        for span in batches(start, stop):
            results = await asyncio.gather(
                *(
                    client.publish(
                        topics[i],
                        envelopes[i].body.encode(),
                        qos=1,
                        retain=True,
                        properties=properties(envelopes[i].key) if with_properties else None,
                        timeout=PUBLISH_TIMEOUT_S,
                    )
                    for i in span
                ),
                return_exceptions=True,
            )
            failed += sum(1 for r in results if isinstance(r, BaseException))
            done += len(results)
        return done - failed, failed

    async def bare(start: int, stop: int) -> tuple[int, int]:
        return await bare_side(start, stop, False)

    async def bare_properties(start: int, stop: int) -> tuple[int, int]:
        return await bare_side(start, stop, True)

    ours, floor, floor_properties = Tally(), Tally(), Tally()
    client = aiomqtt.Client(
        HOST,
        broker.port,
        identifier="bench-bare-publisher",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=pki.client_context(),
        logger=_quiet_logger(),
    )
    async with asyncio.timeout(20):
        await client.__aenter__()
    try:
        # Warm-up (connects the destination, fills the broker's retained topics): not counted.
        await bridge(0, size)
        await bare(0, size)
        for n, start in enumerate(range(0, events, round_events)):
            stop = min(start + round_events, events)
            sides = [(bridge, ours), (bare, floor), (bare_properties, floor_properties)]
            for work, tally in sides if n % 2 == 0 else reversed(sides):
                await _timed(work(start, stop), tally, broker.pid)
    finally:
        await destination.close()
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(5):
                await client.__aexit__(None, None, None)
    for tally in (ours, floor, floor_properties):
        tally.extra["batch_size"] = size
    return {
        "events": events,
        "assets": assets,
        "round_events": round_events,
        "encode_us_per_event": round(encode_us, 2),
        "bridge": ours.summary(),
        "floor": floor.summary(),
        # Not the floor: the bare client also sending a content type and a user property, what
        # the UNS destination left out for their cost in paho.
        "bare_with_properties": floor_properties.summary(),
    }


# --- 2. ingest -----------------------------------------------------------------------------


@dataclass
class Received:
    messages: int = 0
    last: float = 0.0


def _source_settings(pki: Pki, port: int, client_id: str) -> MqttSourceSettings:
    return MqttSourceSettings.model_validate(
        {
            "host": HOST,
            "port": port,
            "tls": {
                "ca_file": str(pki.ca),
                "client_certificate": str(pki.gateway_cert),
                "client_key": str(pki.gateway_key),
            },
            "client_id": client_id,
            "subscribe": [FILTER],
            # No session kept after the round: the broker must not queue the other side's
            # round for a subscriber that is gone.
            "session_expiry_s": 0,
        }
    )


def _device_tags(devices: int) -> list[SourceTag]:
    return [
        SourceTag(
            f"dev-{d:04d}.temp", MqttAddress(topic=_topic(d), pointer="/temp", time_pointer="/ts")
        )
        for d in range(devices)
    ]


@contextlib.asynccontextmanager
async def _bridge_receiver(
    pki: Pki, port: int, devices: int, round_no: int, got: Received
) -> AsyncIterator[MqttSource]:
    settings = _source_settings(pki, port, f"bench-src-{round_no}")
    source = MqttSource("devices", settings, _device_tags(devices))
    async with asyncio.timeout(20):
        await source.connect()

    async def consume() -> None:
        async for batch in source.samples():
            got.messages += len(batch)
            got.last = time.perf_counter()

    task = asyncio.create_task(consume())
    try:
        yield source
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.close()


@contextlib.asynccontextmanager
async def _bare_receiver(pki: Pki, port: int, round_no: int, got: Received) -> AsyncIterator[None]:
    client = aiomqtt.Client(
        HOST,
        port,
        identifier=f"bench-bare-sub-{round_no}",
        protocol=aiomqtt.ProtocolVersion.V5,
        tls_context=pki.client_context(),
        logger=_quiet_logger(),
    )
    async with asyncio.timeout(20):
        await client.__aenter__()
        await client.subscribe(FILTER, qos=1)

    async def consume() -> None:
        loads = json.loads
        async for message in client.messages:
            loads(message.payload)
            got.messages += 1
            got.last = time.perf_counter()

    task = asyncio.create_task(consume())
    try:
        yield None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(5):
                await client.__aexit__(None, None, None)


async def _ingest_round(
    side: str,
    pki: Pki,
    broker: Broker,
    args: argparse.Namespace,
    round_no: int,
    tally: Tally,
    workdir: Path,
) -> dict[str, Any]:
    got = Received()
    receiver: contextlib.AbstractAsyncContextManager[MqttSource | None] = (
        _bridge_receiver(pki, broker.port, args.devices, round_no, got)
        if side == "bridge"
        else _bare_receiver(pki, broker.port, round_no, got)
    )
    options = {
        "port": broker.port,
        "ca": pki.ca,
        "cert": pki.gateway_cert,
        "key": pki.gateway_key,
        "rate": args.rate,
        "seconds": args.seconds,
        "devices": args.devices,
        "pub-connections": args.pub_connections,
    }
    command = [
        sys.executable,
        "-m",
        "bench.mqtt",
        "--publisher",
        *(f"--{name}={value}" for name, value in options.items()),
    ]
    errors = workdir / f"publisher-{side}-{round_no}.err"
    async with receiver as source:
        with errors.open("wb") as err:
            publisher = await asyncio.create_subprocess_exec(
                *command,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        try:
            assert publisher.stdin is not None and publisher.stdout is not None
            async with asyncio.timeout(READY_TIMEOUT_S):
                ready = await publisher.stdout.readline()
            if ready.strip() != b"ready":
                raise RuntimeError(f"publisher: {ready!r} {errors.read_text()[-1500:]}")
            broker0, cpu0, t0 = proc_cpu_s(broker.pid), time.process_time(), time.perf_counter()
            publisher.stdin.write(b"go\n")
            await publisher.stdin.drain()
            async with asyncio.timeout(args.seconds + PUBLISH_TIMEOUT_S + 10):
                out, _ = await publisher.communicate()
            if publisher.returncode != 0:
                raise RuntimeError(
                    f"publisher exited {publisher.returncode}: {errors.read_text()[-1500:]}"
                )
            offered = json.loads(out.decode().strip().splitlines()[-1])
            # Drained: all the broker acknowledged has arrived, or nothing more is coming.
            deadline = time.perf_counter() + DRAIN_TIMEOUT_S
            while got.messages < offered["acked"] and time.perf_counter() < deadline:
                seen = got.messages
                await asyncio.sleep(QUIET_S)
                if got.messages == seen:
                    break
            cpu = time.process_time() - cpu0
            broker_cpu = proc_cpu_s(broker.pid) - broker0
        finally:
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()
        seconds = (got.last - t0) if got.messages else 0.0
        tally.add(got.messages, seconds, cpu, broker_cpu)
        result = {
            "side": side,
            "received": got.messages,
            "received_per_s": round(got.messages / seconds) if seconds else 0,
            "seconds": round(seconds, 3),
            "cpu_ms_per_1000": round(cpu * 1e6 / got.messages, 2) if got.messages else None,
            "offered": offered,
            "lost": offered["acked"] - got.messages,
        }
        if isinstance(source, MqttSource):
            result["source_counters"] = dict(source.counters)
        return result


async def measure_ingest(
    pki: Pki, broker: Broker, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    ours, floor = Tally(), Tally()
    rounds: list[dict[str, Any]] = []
    for n in range(args.ingest_rounds):
        sides = [("bridge", ours), ("bare", floor)]
        for side, tally in sides if n % 2 == 0 else reversed(sides):
            rounds.append(await _ingest_round(side, pki, broker, args, n, tally, workdir))
    for side, tally in (("bridge", ours), ("bare", floor)):
        mine = [r for r in rounds if r["side"] == side]
        acked = sum(r["offered"]["acked"] for r in mine)
        tally.extra["acked_by_broker"] = acked
        tally.extra["lost"] = acked - tally.messages
        # The rest of the loss is the broker's: a subscriber's queue full (--broker-queue).
        tally.extra["dropped_by_source_queue"] = sum(
            r.get("source_counters", {}).get("dropped", 0) for r in mine
        )
        tally.extra["loss_percent"] = (
            round(100 * (acked - tally.messages) / acked, 3) if acked else None
        )
        tally.extra["offered_per_s"] = round(
            sum(r["offered"]["sent"] for r in mine) / sum(r["offered"]["seconds"] for r in mine)
        )
    return {
        "devices": args.devices,
        "rate_asked_per_s": args.rate,
        "seconds_per_round": args.seconds,
        "rounds": rounds,
        "bridge": ours.summary(),
        "floor": floor.summary(),
    }


# --- the publisher process (``--publisher``) ------------------------------------------------


@dataclass
class _Pace:
    sent: int = 0
    failed: int = 0
    # Publishes not acknowledged yet, oldest first (PUBACKs come back in order per connection).
    unacked: deque[mqtt.MQTTMessageInfo] = field(default_factory=deque)

    def settle(self) -> None:
        while self.unacked and self.unacked[0].is_published():
            self.unacked.popleft()


async def _pace(
    client: aiomqtt.Client, topics: list[str], rate: float, start: float, end: float
) -> _Pace:
    """Publish round-robin over ``topics`` so that ``rate`` x elapsed have gone out at any time.

    Straight through paho's ``publish`` (what ``aiomqtt.Client.publish`` calls before awaiting
    the PUBACK): a coroutine and a task per message cost this process more CPU than the broker
    and the receiver together, and this process shares the machine with the measured side."""
    pace = _Pace()
    paho = client._client
    while (now := time.perf_counter()) < end:
        due = int((now - start) * rate)
        ms = int(time.time() * 1000)
        pace.settle()
        while pace.sent < due and len(pace.unacked) < MAX_PENDING:
            n = pace.sent
            payload = b'{"temp":%.1f,"ts":%d}' % (20 + (n % 100) / 10, ms)
            info = paho.publish(topics[n % len(topics)], payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                pace.failed += 1
            else:
                pace.unacked.append(info)
            pace.sent += 1
        await asyncio.sleep(TICK_S)
    return pace


async def _publisher(args: argparse.Namespace) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=args.ca)
    context.load_cert_chain(args.cert, args.key)
    clients = [
        aiomqtt.Client(
            HOST,
            args.port,
            identifier=f"bench-devices-{os.getpid()}-{i}",
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=context,
            logger=_quiet_logger(),
        )
        for i in range(args.pub_connections)
    ]
    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.timeout(20):
            for client in clients:
                await stack.enter_async_context(client)
        print("ready", flush=True)
        # Blocking is fine here: nothing else runs yet, and the parent's end closes stdin.
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no go")
        cpu0, wall0, start = time.process_time(), time.time(), time.perf_counter()
        end = start + args.seconds
        rate = args.rate / len(clients)
        paces = await asyncio.gather(
            *(
                _pace(
                    c, [_topic(d) for d in range(i, args.devices, len(clients))], rate, start, end
                )
                for i, c in enumerate(clients)
            )
        )
        published_s = time.perf_counter() - start
        deadline = time.perf_counter() + PUBLISH_TIMEOUT_S
        while time.perf_counter() < deadline:
            for pace in paces:
                pace.settle()
            if not any(p.unacked for p in paces):
                break
            await asyncio.sleep(TICK_S)
        sent = sum(p.sent for p in paces)
        failed = sum(p.failed + len(p.unacked) for p in paces)
        return {
            "sent": sent,
            "acked": sent - failed,
            "failed": failed,
            "seconds": round(published_s, 3),
            "offered_per_s": round(sent / published_s),
            "last_ack_s": round(time.perf_counter() - start, 3),
            "start_wall": wall0,
            "cpu_s": round(time.process_time() - cpu0, 3),
        }


def _quiet_logger() -> logging.Logger:
    """aiomqtt warns on every publish beyond 10 in flight, which a batch of 64 always is."""
    logger = logging.getLogger("bench.mqtt.aiomqtt")
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    return logger


# --- the run -------------------------------------------------------------------------------


def _rows(publish: dict[str, Any], ingest: dict[str, Any]) -> list[dict[str, Any]]:
    pb, pf = publish["bridge"], publish["floor"]
    ib, i_f = ingest["bridge"], ingest["floor"]
    pub_ratio = pb["messages_per_s"] / pf["messages_per_s"] if pf["messages_per_s"] else 0
    ing_ratio = ib["messages_per_s"] / i_f["messages_per_s"] if i_f["messages_per_s"] else 0
    return [
        row(
            "MQTT publish, UnsDestination.deliver, QoS 1 mTLS (PUBACKed msg/s)",
            pb["messages_per_s"],
            pf["messages_per_s"],
            "msg/s",
            ">= 70 % of bare aiomqtt",
            pub_ratio >= TARGET_RATIO and pb["failed"] == 0,
            f"{publish['events']:,} events of {publish['assets']} assets per side, batches of "
            f"{pb['batch_size']} in alternating rounds of {publish['round_events']:,}; failed "
            f"{pb['failed']}/{pf['failed']}; encode {publish['encode_us_per_event']} us/event "
            f"(not in the rate); bare with a content type + user property "
            f"{publish['bare_with_properties']['messages_per_s']:,} msg/s",
        ),
        row(
            "MQTT publish CPU per 1,000 messages (ms)",
            pb["cpu_ms_per_1000"],
            pf["cpu_ms_per_1000"],
            "ms",
            "report",
            None,
            f"this process; bare with a content type + user property "
            f"{publish['bare_with_properties']['cpu_ms_per_1000']} ms; broker "
            f"{pb['broker_cpu_ms_per_1000']}/{pf['broker_cpu_ms_per_1000']} ms",
        ),
        row(
            f"MQTT ingest, {ingest['devices']:,} devices, MqttSource (received msg/s)",
            ib["messages_per_s"],
            i_f["messages_per_s"],
            "msg/s",
            ">= 70 % of bare aiomqtt",
            ing_ratio >= TARGET_RATIO,
            f"offered {ib['offered_per_s']:,}/{i_f['offered_per_s']:,} msg/s (asked "
            f"{ingest['rate_asked_per_s']:,}) QoS 1 for {ingest['seconds_per_round']:g} s x "
            f"{len(ingest['rounds']) // 2} rounds; lost {ib['lost']:,} ({ib['loss_percent']} %) "
            f"/ {i_f['lost']:,} ({i_f['loss_percent']} %), of which MqttSource's queue "
            f"{ib['dropped_by_source_queue']:,}, the broker the rest",
        ),
        row(
            "MQTT ingest CPU per 1,000 messages (ms)",
            ib["cpu_ms_per_1000"],
            i_f["cpu_ms_per_1000"],
            "ms",
            "report",
            None,
            f"this process ({ib['cpu_percent']} / {i_f['cpu_percent']} % of a core); broker "
            f"{ib['broker_cpu_ms_per_1000']}/{i_f['broker_cpu_ms_per_1000']} ms",
        ),
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    binary = find_mosquitto()
    if binary is None:
        return {"skipped": "no mosquitto binary (apt-get install mosquitto)", "rows": []}
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        workdir = Path(tmp)
        pki = make_pki(workdir)
        broker = Broker(binary, pki, workdir, args.broker_queue)
        broker.start()
        try:
            publish = await measure_publish(
                pki, broker, args.events, args.assets, args.round_events
            )
            ingest = await measure_ingest(pki, broker, args, workdir)
        except BaseException:
            print(broker.log_text()[-2000:], file=sys.stderr)
            raise
        finally:
            broker.stop()
    version = await asyncio.to_thread(_first_line, [binary, "-h"])
    return {
        "quick": args.quick,
        "mosquitto": version,
        "publish": publish,
        "ingest": ingest,
        "load_average_1m_start": round(load0, 2),
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "rows": _rows(publish, ingest),
    }


def _first_line(command: list[str]) -> str | None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def _print(figures: dict[str, Any]) -> None:
    if "skipped" in figures:
        print(f"skipped: {figures['skipped']}")
        return
    print(f"{'measure':<66} {'bridge':>9} {'floor':>9} {'ratio':>5}  target")
    for r in figures["rows"]:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        met = "" if r["met"] is None else (" yes" if r["met"] else " NO")
        print(
            f"{r['measure']:<66} {r['bridge']:>9,} {r['floor']:>9,} {ratio:>5}  {r['target']}{met}"
        )
        print(f"    {r['note']}")
    print(f"load average {figures['load_average_1m_start']} -> {figures['load_average_1m_end']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mqtt", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--events", type=int, default=20_000, help="publish: events per side")
    parser.add_argument("--assets", type=int, default=8)
    parser.add_argument("--round-events", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=10_000, help="ingest: messages/s offered")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="ingest: seconds per round")
    parser.add_argument("--ingest-rounds", type=int, default=2, help="rounds per side")
    parser.add_argument("--pub-connections", type=int, default=2)
    parser.add_argument(
        "--broker-queue",
        type=int,
        default=1000,
        help="mosquitto max_queued_messages per subscriber (its default: 1000; 0: no limit)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run (< 20 s)")
    # The device simulator: this module again, in a process of its own.
    parser.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        print(json.dumps(asyncio.run(_publisher(args))), flush=True)
        return
    if args.quick:
        args.events, args.round_events, args.seconds, args.ingest_rounds = 2000, 1000, 1.5, 1
    configure_logging("warning", False)
    figures = asyncio.run(run(args))
    _print(figures)
    print(f"wrote {write_result('mqtt', figures)}")


if __name__ == "__main__":
    main()
