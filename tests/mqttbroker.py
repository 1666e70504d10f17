"""A real Mosquitto broker for MQTT tests, with its own throwaway PKI for mutual TLS.

``make_pki`` writes a CA and the certificates the MQTT tests need (PEM, EC keys, made with
``cryptography``). ``Mosquitto`` writes a mosquitto.conf into a directory and runs the system
broker on two free loopback ports: a TLS listener that requires a client certificate and uses its
CN as the username for the ACL, and a plain listener that exists only to prove refusals. Nothing
binds anything but 127.0.0.1, every wait is bounded, and every process started is stopped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from support import LOOPBACK
from testca import _name, _write_key

__all__ = [
    "DEFAULT_ACL",
    "Mosquitto",
    "MosquittoNotFound",
    "MqttPki",
    "find_mosquitto",
    "make_pki",
]

# Devices may publish only under the topic segment equal to their certificate CN (mosquitto
# substitutes the username, which use_identity_as_username makes the CN, for %u) and read only
# their own commands; the gateway reads all telemetry and publishes UNS/Sparkplug anywhere.
DEFAULT_ACL = """\
pattern write plant/+/%u/#
pattern read plant/+/%u/cmd/#

user gateway
topic readwrite #
"""

_SEARCH_DIRS = ("/usr/sbin", "/usr/local/sbin")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


def find_mosquitto() -> str | None:
    """The broker binary: PATH first, then the sbin directories Debian uses (often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in _SEARCH_DIRS:
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# --- PKI ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Authority:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class MqttPki:
    """Paths of the PEM files ``make_pki`` wrote. Keys are unencrypted PKCS#8."""

    directory: Path
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    wrong_host_cert: Path
    wrong_host_key: Path
    gateway_cert: Path
    gateway_key: Path
    expired_cert: Path
    expired_key: Path
    stranger_cert: Path
    stranger_key: Path
    devices: Mapping[str, tuple[Path, Path]]

    def device(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of the device certificate whose CN is ``name``."""
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(
                f"no device certificate {name!r}; make_pki(devices=...) made {sorted(self.devices)}"
            ) from None

    def gateway_tls(self) -> dict[str, str]:
        """The ``tls:`` block of a gateway's MQTT settings: our CA, the gateway's identity."""
        return {
            "ca_file": str(self.ca),
            "client_certificate": str(self.gateway_cert),
            "client_key": str(self.gateway_key),
        }

    def client(self, port: int, identifier: str, identity: str = "gateway") -> aiomqtt.Client:
        """An MQTT 5 client on 127.0.0.1:``port`` presenting ``identity``'s certificate (the
        gateway's, or a device's by name); use it as ``async with``."""
        cert, key = (
            (self.gateway_cert, self.gateway_key)
            if identity == "gateway"
            else self.device(identity)
        )
        return aiomqtt.Client(
            LOOPBACK,
            port,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self.client_context(cert, key),
        )

    def client_context(
        self,
        cert: Path | None = None,
        key: Path | None = None,
        *,
        ca: Path | None = None,
    ) -> ssl.SSLContext:
        """A verifying client context (hostname checked) trusting ``ca`` (default: our CA),
        presenting ``cert``/``key`` if given."""
        context = ssl.create_default_context(cafile=str(ca or self.ca))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key) if key is not None else None)
        return context


def _issue(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: _Authority,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    san: Sequence[x509.GeneralName] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer.name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
    return builder.sign(issuer.key, hashes.SHA256())


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _new_ca(cn: str, path: Path) -> _Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    authority = _Authority(_name(cn), key)
    _write_cert(_issue(cn, key, authority, ca=True), path)
    return authority


def _leaf(
    directory: Path,
    stem: str,
    cn: str,
    issuer: _Authority,
    *,
    usage: x509.ObjectIdentifier,
    san: Sequence[x509.GeneralName] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(cn, key, issuer, usage=usage, san=san, not_before=not_before, not_after=not_after)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    _write_cert(cert, cert_path)
    _write_key(key, key_path)
    return cert_path, key_path


def make_pki(directory: Path, devices: Sequence[str] = ()) -> MqttPki:
    """Write a CA, broker and client certificates (see ``MqttPki``) into ``directory``.

    Device certificates get CN = the device name, which the broker's ACL uses as the username.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in devices:
        if not _SAFE_NAME.fullmatch(name) or name in {"gateway", "expired", "stranger"}:
            raise ValueError(f"unusable device name {name!r}")
    ca = _new_ca("bridge MQTT test CA", directory / "ca.pem")
    other = _new_ca("some other CA", directory / "other-ca.pem")
    server_san = [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
    server = _leaf(
        directory, "server", "localhost", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, san=server_san
    )
    wrong = _leaf(
        directory,
        "wrong-host",
        "wrong.example",
        ca,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[x509.DNSName("wrong.example")],
    )
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    gateway = _leaf(directory, "gateway", "gateway", ca, usage=client)
    now = dt.datetime.now(dt.UTC)
    expired = _leaf(
        directory,
        "expired",
        "expired",
        ca,
        usage=client,
        not_before=now - dt.timedelta(days=2),
        not_after=now - dt.timedelta(days=1),
    )
    stranger = _leaf(directory, "stranger", "stranger", other, usage=client)
    device_files = {
        name: _leaf(directory, f"device-{name}", name, ca, usage=client) for name in devices
    }
    return MqttPki(
        directory=directory,
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=server[0],
        server_key=server[1],
        wrong_host_cert=wrong[0],
        wrong_host_key=wrong[1],
        gateway_cert=gateway[0],
        gateway_key=gateway[1],
        expired_cert=expired[0],
        expired_key=expired[1],
        stranger_cert=stranger[0],
        stranger_key=stranger[1],
        devices=device_files,
    )


# --- broker ------------------------------------------------------------------------------------


class MosquittoNotFound(RuntimeError):
    """Raised by ``Mosquitto()`` when there is no broker binary; tests skip before that."""


class Mosquitto:
    """One mosquitto process configured from ``pki``, with its files in ``directory``.

    Ports are chosen on the first ``start()`` and kept for ``restart()``, so clients reconnect to
    the same address and the persisted sessions and queued messages come back.
    """

    def __init__(
        self,
        pki: MqttPki,
        directory: Path,
        *,
        server_cert: Literal["default", "wrong"] = "default",
        acl_lines: Sequence[str] | None = None,
        extra_conf: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        """``acl_lines`` replace ``DEFAULT_ACL``; ``extra_conf`` lines go into the global part of
        mosquitto.conf, before the listeners (e.g. ``max_queued_messages 10``)."""
        found = binary or find_mosquitto()
        if found is None:
            raise MosquittoNotFound("no mosquitto binary in PATH or /usr/sbin")
        # mosquitto.conf has no quoting: a path with whitespace would be split silently.
        if re.search(r"\s", str(directory)) or re.search(r"\s", str(pki.directory)):
            raise ValueError(f"mosquitto cannot take paths with whitespace: {directory}")
        self.binary = found
        self.pki = pki
        self.directory = directory
        self.server_cert = server_cert
        self.acl_text = DEFAULT_ACL if acl_lines is None else "\n".join(acl_lines) + "\n"
        self.extra_conf = tuple(extra_conf)
        self.conf_path = directory / "mosquitto.conf"
        self.acl_path = directory / "acl"
        self.log_path = directory / "mosquitto.log"
        self.output_path = directory / "mosquitto.out"
        self.data_dir = directory / "data"
        self.tls_port = 0
        self.plain_port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # lifecycle

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker; return once both ports accept TCP (fail after ``timeout``)."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        if self._process is not None:
            # It died on its own (or was killed from outside): reap it before replacing it.
            self._process.wait()
            self._process = None
        fresh_ports = self.tls_port == 0
        # A free port can be taken by someone else between free_port() and mosquitto's bind; on
        # the first start we may pick others, on a restart the ports are the point.
        for attempt in range(3 if fresh_ports else 1):
            if fresh_ports:
                self.tls_port, self.plain_port = _two_free_ports()
            self._write_config()
            try:
                self._spawn_and_wait(timeout)
                return
            except _BindFailed:
                if attempt == 2 or not fresh_ports:
                    raise RuntimeError(
                        f"mosquitto could not bind its ports:\n{self.log_text()}"
                    ) from None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its persistence database on it), SIGKILL after ``timeout``."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(5.0)

    def restart(self, timeout: float = 10.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_text(self) -> str:
        """The broker's log file plus whatever it wrote to stdout/stderr (config errors)."""
        parts = []
        for path in (self.log_path, self.output_path):
            with contextlib.suppress(FileNotFoundError):
                text = path.read_text(errors="replace")
                if text:
                    parts.append(f"--- {path.name}\n{text}")
        return "\n".join(parts)

    # internals

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.acl_path.write_text(self.acl_text)
        if self.server_cert == "wrong":
            cert, key = self.pki.wrong_host_cert, self.pki.wrong_host_key
        else:
            cert, key = self.pki.server_cert, self.pki.server_key
        lines = [
            # Anonymous clients are allowed on the plain listener only.
            "per_listener_settings true",
            # Run as root mosquitto drops to the 'mosquitto' user, who cannot read pytest's
            # private tmp dirs; naming the current user keeps it (no effect when not root).
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "persistence true",
            f"persistence_location {self.data_dir}",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
            "connection_messages true",
            *self.extra_conf,
            "",
            f"listener {self.tls_port} {LOOPBACK}",
            f"cafile {self.pki.ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
            f"acl_file {self.acl_path}",
            "",
            f"listener {self.plain_port} {LOOPBACK}",
            "allow_anonymous true",
            f"acl_file {self.acl_path}",
            "",
        ]
        self.conf_path.write_text("\n".join(lines))

    def _spawn_and_wait(self, timeout: float) -> None:
        # Only what this attempt writes decides whether it failed to bind.
        offsets = {path: _size(path) for path in (self.log_path, self.output_path)}
        with self.output_path.open("ab") as output:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for pytest must not reach the broker first.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process.poll() is not None:
                    if any("Address already in use" in _tail(p, o) for p, o in offsets.items()):
                        raise _BindFailed
                    raise RuntimeError(
                        f"mosquitto exited with {self._process.returncode}:\n{self.log_text()}"
                    )
                # These probes are the "unexpected eof" / "closed its connection" lines at the
                # top of every log.
                if _accepts(self.tls_port) and _accepts(self.plain_port):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mosquitto did not listen on {self.tls_port}/{self.plain_port} within "
                        f"{timeout}s:\n{self.log_text()}"
                    )
                time.sleep(0.05)
        except BaseException:
            self.kill()
            raise


class _BindFailed(Exception):
    pass


def _two_free_ports() -> tuple[int, int]:
    """Like ``support.free_port`` twice, but the two are sure to differ: both are held at once."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(2):
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((LOOPBACK, 0))
            ports.append(int(s.getsockname()[1]))
    return ports[0], ports[1]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False
