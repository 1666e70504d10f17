"""Opens one MQTT 5 connection to a broker (aiomqtt) and says in plain words why one failed.

One connect attempt, never a retry: the source's reconnects belong to the runtime
(``bridge.runtime.sources``), a destination's to the outbox relay. Every failure is a
``ConnectorError`` whose text names the cause and the mapping key that fixes it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.cancel import kept_cancellation
from bridge.connectors.mqtt.config import BrokerSettings
from bridge.errors import ConnectorError

__all__ = ["CheckedClient", "Link", "describe_failure", "open_link"]

log = structlog.get_logger(__name__)

# Reason codes of PUBACKs whose publish call has gone (timed out): kept at most this many.
_MAX_REFUSALS = 10_000


class CheckedClient(aiomqtt.Client):
    """aiomqtt's client, plus the PUBACK/PUBREC reason code of each publish.

    aiomqtt 2.x drops that code, so a publish the broker refuses (MQTT 5 "Not authorized"
    from its ACL) returns like a delivered one; ``publish_checked`` says which it was. It
    uses aiomqtt's pending-call bookkeeping (private, aiomqtt is pinned below 3), tested by
    the refused-publish tests.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refusals: dict[int, str] = {}

    def _on_publish(
        self,
        client: Any,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            if len(self._refusals) >= _MAX_REFUSALS:
                self._refusals.clear()
            self._refusals[mid] = f"{reason_code} (reason code {reason_code.value})"
        super()._on_publish(client, userdata, mid, reason_code, properties)

    async def publish_checked(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int,
        retain: bool = False,
        properties: Properties | None = None,
        ack_timeout_s: float,
    ) -> str:
        """Publish and wait for the broker's acknowledgement: "" when it took the message,
        else its reason for refusing it. ``aiomqtt.MqttError`` when the link failed."""
        info = self._client.publish(topic, payload, qos, retain, properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if not info.is_published():
            confirmation = asyncio.Event()
            with self._pending_call(info.mid, confirmation, self._pending_publishes):
                await self._wait_for(confirmation.wait(), timeout=ack_timeout_s)
        return self._refusals.pop(info.mid, "")


@dataclass(frozen=True, slots=True)
class Link:
    """An open connection: ``client`` is connected; ``close()`` ends it with a normal
    DISCONNECT (reason 0), so the broker does not send the will."""

    client: CheckedClient
    where: str

    async def close(self, timeout_s: float = 5.0) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self.client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            log.info("mqtt_close_unclean", where=self.where, error=str(exc))


def _connect_properties(settings: BrokerSettings) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = settings.session_expiry_s
    return props


def _tls_context(settings: BrokerSettings, where: str) -> ssl.SSLContext | None:
    tls = settings.tls
    if tls is None:
        log.warning(
            "mqtt_plaintext",
            where=where,
            detail="plaintext: true: messages travel unencrypted and the broker is not verified",
        )
        return None
    if tls.insecure_skip_verify:
        log.warning(
            "mqtt_tls_verification_off",
            where=where,
            detail="tls.insecure_skip_verify: true: any broker certificate is accepted",
        )
    return tls.broker_context()


def _certificate_unusable(path: str | None, where: str) -> str:
    """Why the gateway's own certificate cannot be used now ("" if it can): a broker refuses
    an expired one with a bare TLS alert, so it is said here, before connecting."""
    if path is None or not Path(path).is_file():
        return ""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except ValueError:
        return ""  # ClientTls has checked the file; a broken one fails in the handshake
    now = dt.datetime.now(dt.UTC)
    if cert.not_valid_after_utc < now:
        return (
            f"{where}.tls.client_certificate {path} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: issue a new one from the broker's "
            "CA (bridge certs) and point client_certificate/client_key at it"
        )
    if cert.not_valid_before_utc > now:
        return (
            f"{where}.tls.client_certificate {path} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC: check the gateway's clock"
        )
    return ""


class _LastError(logging.Handler):
    """Keeps paho's last error line. A TLS alert that comes after the handshake (TLS 1.3: a
    missing or refused client certificate) reaches paho's socket reader, not the connect
    call, which only times out: this line is then the cause."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


def _paho_logger(name: str) -> tuple[logging.Logger, _LastError]:
    logger = logging.getLogger(f"bridge.mqtt.paho.{name}")
    logger.propagate = False  # what matters is said by our own log lines, with the fix
    logger.setLevel(logging.ERROR)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler = _LastError()
    logger.addHandler(handler)
    return logger, handler


# Fragments of OpenSSL / paho / broker texts and what the operator should do about each.
_HINTS: tuple[tuple[str, str], ...] = (
    (
        # OpenSSL: "Hostname mismatch, ..." or "IP address mismatch, certificate is not valid"
        "mismatch, certificate is not valid",
        "the broker's certificate is not issued for {host}: connect with a name the "
        "certificate lists ({where}.host), or reissue the broker's certificate",
    ),
    (
        "certificate has expired",
        "a certificate has expired (the broker's or, in the broker's log, the gateway's): renew it",
    ),
    (
        "certificate verify failed",
        "the broker's certificate was refused: set {where}.tls.ca_file to the CA that signed it",
    ),
    (
        "wrong version number",
        "the port does not speak TLS (a plain MQTT listener?): use the broker's TLS port "
        "(usually 8883) in {where}.port",
    ),
    (
        "certificate required",
        "the broker requires a client certificate: set {where}.tls.client_certificate and "
        "client_key",
    ),
    (
        "unknown ca",
        "the broker does not trust the gateway's client certificate: issue it from the CA "
        "the broker trusts ({where}.tls.client_certificate)",
    ),
    (
        "bad certificate",
        "the broker refused the gateway's certificate: check {where}.tls.client_certificate",
    ),
    (
        "reset by peer",
        "the broker closed the connection during the TLS handshake: the port may not speak "
        "TLS (a plain listener: use the TLS port in {where}.port), or the broker requires a "
        "client certificate ({where}.tls.client_certificate) or refuses the one given",
    ),
    (
        "connection refused",
        "nothing listens on {host}:{port}: check {where}.host/port and that the broker runs",
    ),
    (
        "not authorized",
        "the broker refused the gateway's identity: check the broker's ACL/users for this client",
    ),
    (
        "bad user name or password",
        "the broker refused {where}.username/password",
    ),
    (
        "timed out",
        "no CONNACK within {where}.connect_timeout_s: a plain listener reached with TLS, a "
        "TLS listener reached without it, or a broker that is overloaded",
    ),
)


def describe_failure(exc: BaseException, settings: BrokerSettings, where: str) -> str:
    """The cause of a failed connect and what to change."""
    text = _full_text(exc)
    lowered = text.lower()
    if settings.tls is None and ("reset by peer" in lowered or "timed out" in lowered):
        return (
            f"{text} (a plaintext connection was dropped: the port probably expects TLS; "
            f"give {where}.tls and drop plaintext: true)"
        )
    for fragment, hint in _HINTS:
        if fragment in lowered:
            return f"{text} ({hint.format(host=settings.host, port=settings.port, where=where)})"
    if settings.tls is not None and "eof" in lowered:
        return (
            f"{text} (the broker closed the TLS connection: it may require a client "
            f"certificate ({where}.tls.client_certificate) or refuse the one given; its log "
            "says which)"
        )
    return text


def _full_text(exc: BaseException) -> str:
    parts: list[str] = []
    seen: BaseException | None = exc
    for _ in range(6):  # cause chains may be cyclic
        if seen is None or isinstance(seen, asyncio.CancelledError):
            break
        part = str(seen) or type(seen).__name__
        if part not in parts:
            parts.append(part)
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return ": ".join(parts)


async def open_link(
    settings: BrokerSettings,
    name: str,
    where: str,
    *,
    will: aiomqtt.Will | None = None,
    clean_start: bool = False,
    max_queued_incoming: int = 0,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
    extra_properties: Mapping[str, int] | None = None,
) -> Link:
    """Connect (TCP, TLS, CONNECT/CONNACK) within ``settings.connect_timeout_s``.

    ``where`` is the mapping key of the settings (``sources.devices``) for messages. With
    ``clean_start`` False and a session expiry, the broker keeps subscriptions and queued
    QoS 1 messages while the gateway is away."""
    broker = f"MQTT broker {settings.host}:{settings.port}"
    context = _tls_context(settings, where)
    certificate = settings.tls.client_certificate if settings.tls is not None else None
    unusable = _certificate_unusable(certificate, where)
    if unusable:
        raise ConnectorError(f"{broker}: {unusable}")
    logger, last_error = _paho_logger(settings.identifier(name))
    properties = _connect_properties(settings)
    for key, value in (extra_properties or {}).items():
        setattr(properties, key, value)
    client = CheckedClient(
        settings.host,
        settings.port,
        identifier=settings.identifier(name),
        username=settings.username,
        password=settings.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        logger=logger,
        will=will,
        clean_start=clean_start,
        keepalive=settings.keepalive_s,
        timeout=settings.connect_timeout_s,
        tls_context=context,
        properties=properties,
        max_queued_incoming_messages=max_queued_incoming,
        queue_type=queue_type,
    )
    try:
        with kept_cancellation():
            async with asyncio.timeout(settings.connect_timeout_s + 1.0):
                await client.__aenter__()
    except (aiomqtt.MqttError, OSError, ssl.SSLError, TimeoutError) as exc:
        failure: BaseException = exc
        if last_error.last:
            failure = ConnectorError(last_error.last)
        reason = describe_failure(failure, settings, where)
        raise ConnectorError(f"{broker}: {reason}") from exc
    return Link(client, where)
