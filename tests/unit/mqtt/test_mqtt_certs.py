"""`bridge mqtt certs`: the files it writes make a working mutual-TLS chain (proved by real TLS
handshakes with Python's ssl over a loopback socket pair, and by a real Mosquitto when one is
installed), keys are private, and every refusal names its fix."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mqttbroker import Mosquitto, MqttPki, find_mosquitto

from bridge.connectors.mqtt.certs import CertError, create_ca, issue
from bridge.connectors.mqtt.cli import mqtt

SERVER_DNS = "broker.plant"
SERVER_IP = "127.0.0.1"


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Path
    ca_key: Path

    def cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.pem"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"


def bridge_mqtt(*args: str | Path) -> Result:
    return CliRunner().invoke(mqtt, [str(a) for a in args])


def issue_cli(pki: Pki, stem: str, cn: str, *extra: str, ca: Path | None = None) -> Result:
    return bridge_mqtt(
        "certs", "issue", "--ca", ca or pki.ca, "--ca-key", pki.ca_key, "--cn", cn,
        "--cert", pki.cert(stem), "--key", pki.key(stem), *extra,
    )  # fmt: skip


def new_ca(directory: Path, cn: str = "Plant CA") -> Pki:
    ca, key = directory / "ca.pem", directory / "ca.key"
    result = bridge_mqtt("certs", "ca", "--cert", ca, "--key", key, "--cn", cn)
    assert result.exit_code == 0, result.output
    return Pki(directory, ca, key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    made = new_ca(tmp_path_factory.mktemp("mqtt-pki"))
    for stem, cn, extra in [
        ("broker", SERVER_DNS, ("--server", "--dns", SERVER_DNS, "--ip", SERVER_IP)),
        ("pump-a", "pump-a", ()),
        ("gateway", "gateway", ()),
    ]:
        result = issue_cli(made, stem, cn, *extra)
        assert result.exit_code == 0, result.output
    return made


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA and a client it signed: a certificate our broker must refuse."""
    other = new_ca(tmp_path_factory.mktemp("other-pki"), cn="Some other CA")
    assert issue_cli(other, "pump-a", "pump-a").exit_code == 0
    return other


# --- TLS handshakes ------------------------------------------------------------------------------


def server_context(pki: Pki, cert: str = "broker") -> ssl.SSLContext:
    """What a broker with require_certificate does: present our cert, demand a client's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert(cert), pki.key(cert))
    context.load_verify_locations(cafile=pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # RFC 5280 rules the next Pythons default to
    return context


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


@dataclass
class Handshake:
    client_error: BaseException | None = None
    server_error: BaseException | None = None
    peer_cn: str | None = None  # the client's CN as the server saw it: the broker's username

    @property
    def ok(self) -> bool:
        return self.client_error is None and self.server_error is None


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> Handshake:
    """A TLS handshake over a socket pair, then one message each way: in TLS 1.3 the server
    judges the client certificate after the client's handshake returned, so only the read
    shows a refusal on the client side."""
    outcome = Handshake()
    server_sock, client_sock = socket.socketpair()
    for sock in (server_sock, client_sock):
        sock.settimeout(5)

    def serve() -> None:
        try:
            with server.wrap_socket(server_sock, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                if der is not None:
                    cn = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
                        NameOID.COMMON_NAME
                    )
                    outcome.peer_cn = str(cn[0].value)
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            outcome.server_error = exc
        finally:
            server_sock.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(client_sock, server_hostname=hostname) as tls:
            if tls.recv(2) != b"ok":
                raise ConnectionError("server closed without answering")
    except (OSError, ssl.SSLError) as exc:
        outcome.client_error = exc
    finally:
        client_sock.close()
        thread.join(10)
    assert not thread.is_alive()
    return outcome


@pytest.mark.parametrize("hostname", [SERVER_DNS, SERVER_IP])
def test_client_and_server_authenticate_each_other(pki: Pki, hostname: str) -> None:
    client = client_context(pki.ca, pki.cert("pump-a"), pki.key("pump-a"))
    outcome = handshake(server_context(pki), client, hostname)
    assert outcome.ok, outcome
    # The CN reaches the broker: use_identity_as_username makes it the ACL user.
    assert outcome.peer_cn == "pump-a"


def test_hostname_check_fails_for_a_name_not_in_the_certificate(pki: Pki) -> None:
    client = client_context(pki.ca, pki.cert("pump-a"), pki.key("pump-a"))
    outcome = handshake(server_context(pki), client, "other.plant")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert "other.plant" in str(outcome.client_error)


def test_server_refuses_a_client_without_certificate(pki: Pki) -> None:
    outcome = handshake(server_context(pki), client_context(pki.ca), SERVER_DNS)
    assert outcome.server_error is not None
    assert "certificate" in str(outcome.server_error).lower()
    assert outcome.client_error is not None


def test_server_refuses_a_client_of_another_ca(pki: Pki, stranger: Pki) -> None:
    client = client_context(pki.ca, stranger.cert("pump-a"), stranger.key("pump-a"))
    outcome = handshake(server_context(pki), client, SERVER_DNS)
    assert isinstance(outcome.server_error, ssl.SSLCertVerificationError)
    assert outcome.client_error is not None


def test_client_refuses_a_server_of_another_ca(pki: Pki, stranger: Pki) -> None:
    client = client_context(stranger.ca, pki.cert("pump-a"), pki.key("pump-a"))
    outcome = handshake(server_context(pki), client, SERVER_DNS)
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)


def test_a_client_certificate_cannot_serve(pki: Pki) -> None:
    """The EKU is real: a device's certificate cannot impersonate the broker."""
    client = client_context(pki.ca, pki.cert("gateway"), pki.key("gateway"))
    outcome = handshake(server_context(pki, cert="pump-a"), client, "pump-a")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert "purpose" in str(outcome.client_error)


# --- the files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stem", ["ca", "broker", "pump-a"])
def test_keys_are_private_unencrypted_pkcs8_p256(pki: Pki, stem: str) -> None:
    key_path = pki.ca_key if stem == "ca" else pki.key(stem)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    pem = key_path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, not "EC PRIVATE KEY"
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    cert = x509.load_pem_x509_certificate((pki.ca if stem == "ca" else pki.cert(stem)).read_bytes())
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_show_json_fields(pki: Pki) -> None:
    result = bridge_mqtt("certs", "show", "--json", pki.cert("broker"))
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["subject_cn"] == SERVER_DNS
    assert shown["issuer"] == "CN=Plant CA"
    assert shown["dns"] == [SERVER_DNS]
    assert shown["ips"] == [SERVER_IP]
    assert shown["eku"] == ["serverAuth"]
    assert shown["is_ca"] is False
    assert shown["expired"] is False
    assert shown["not_before"] < shown["not_after"]
    cert = x509.load_pem_x509_certificate(pki.cert("broker").read_bytes())
    assert shown["sha256"] == cert.fingerprint(hashes.SHA256()).hex(":").upper()


def test_show_text_of_a_client_and_the_ca(pki: Pki) -> None:
    client = bridge_mqtt("certs", "show", pki.cert("pump-a"))
    assert client.exit_code == 0, client.output
    assert "subject_cn:  pump-a" in client.output
    assert "eku:         clientAuth" in client.output
    ca = json.loads(bridge_mqtt("certs", "show", "--json", pki.ca).output)
    assert ca["is_ca"] is True
    assert ca["subject"] == ca["issuer"] == "CN=Plant CA"


def test_commands_import_no_mqtt_client_library(pki: Pki) -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from bridge.connectors.mqtt.cli import mqtt\n"
        "assert CliRunner().invoke(mqtt, ['certs', 'show', sys.argv[1]]).exit_code == 0\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'aiomqtt', 'paho'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(pki.cert("pump-a"))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


# --- refusals ------------------------------------------------------------------------------------


def refused(result: Result, *expected: str) -> str:
    assert result.exit_code == 1, result.output
    for text in (*expected, "fix: "):
        assert text in result.output, result.output
    return result.output


def test_existing_files_are_not_overwritten_without_force(pki: Pki) -> None:
    before = pki.cert("pump-a").read_bytes(), pki.key("pump-a").read_bytes()
    refused(issue_cli(pki, "pump-a", "pump-a"), "exist", "--force")
    assert (pki.cert("pump-a").read_bytes(), pki.key("pump-a").read_bytes()) == before
    refused(bridge_mqtt("certs", "ca", "--cert", pki.ca, "--key", pki.ca_key), "--force")


def test_force_replaces_and_keeps_the_key_private(tmp_path: Path) -> None:
    made = new_ca(tmp_path)
    assert issue_cli(made, "pump-a", "pump-a").exit_code == 0
    made.key("pump-a").chmod(0o644)  # replaced, not written into: the old mode goes too
    old = made.cert("pump-a").read_bytes()
    assert issue_cli(made, "pump-a", "pump-a", "--force").exit_code == 0
    assert made.cert("pump-a").read_bytes() != old
    assert stat.S_IMODE(made.key("pump-a").stat().st_mode) == 0o600


def test_a_ca_key_that_does_not_match_is_refused(pki: Pki, stranger: Pki, tmp_path: Path) -> None:
    mixed = Pki(tmp_path, pki.ca, stranger.ca_key)
    refused(issue_cli(mixed, "x", "x"), "is not the private key of", "--ca-key")
    assert not mixed.cert("x").exists() and not mixed.key("x").exists()


def test_a_leaf_as_ca_is_refused(pki: Pki, tmp_path: Path) -> None:
    leaf = Pki(tmp_path, pki.cert("pump-a"), pki.key("pump-a"))
    refused(issue_cli(leaf, "x", "x"), "is not a CA certificate", "bridge mqtt certs ca")


@pytest.mark.parametrize("cn", ["pump#a", "plant/pump-a", "pump+a"])
def test_a_cn_that_is_not_one_topic_level_is_refused(pki: Pki, cn: str) -> None:
    refused(issue_cli(pki, "bad", cn), "topic", "--cn pump-a")
    assert not pki.cert("bad").exists()


def test_a_server_certificate_needs_a_name(pki: Pki) -> None:
    refused(issue_cli(pki, "srv", "broker", "--server"), "SubjectAltName", "--dns", "--ip")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("--server", "--dns", "10.0.0.5"), "--ip 10.0.0.5"),
        (("--server", "--ip", "broker.plant"), "not an IP address"),
        (("--dns", "broker.plant"), "--server"),
        (("--days", "0"), "--days 825"),
    ],
)
def test_bad_names_and_days_are_refused(pki: Pki, extra: Sequence[str], expected: str) -> None:
    refused(issue_cli(pki, "srv", "broker", *extra), expected)


def test_library_errors_are_value_errors_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive") as caught:
        create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="CA", days=-1)
    assert isinstance(caught.value, CertError) and "--days" in caught.value.hint
    create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="CA", days=30)
    with pytest.raises(CertError, match="exist"):
        create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="CA", days=30)
    leaf = issue(
        tmp_path / "ca.pem",
        tmp_path / "ca.key",
        tmp_path / "d.pem",
        tmp_path / "d.key",
        common_name="d",
        server=False,
        dns=(),
        ips=(),
        days=3650,
    )
    # A certificate never outlives its CA: the chain would stop verifying at the CA's end.
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    assert leaf.not_valid_after_utc == ca.not_valid_after_utc


# --- a real broker -------------------------------------------------------------------------------


def _broker_pki(pki: Pki, stranger: Pki) -> MqttPki:
    """Our files in the shape tests/mqttbroker.py runs Mosquitto from (the fields its default
    configuration does not read are filled with files of the same kind)."""
    return MqttPki(
        directory=pki.directory,
        ca=pki.ca,
        other_ca=stranger.ca,
        server_cert=pki.cert("broker"),
        server_key=pki.key("broker"),
        wrong_host_cert=pki.cert("broker"),
        wrong_host_key=pki.key("broker"),
        gateway_cert=pki.cert("gateway"),
        gateway_key=pki.key("gateway"),
        expired_cert=stranger.cert("pump-a"),
        expired_key=stranger.key("pump-a"),
        stranger_cert=stranger.cert("pump-a"),
        stranger_key=stranger.key("pump-a"),
        devices={"pump-a": (pki.cert("pump-a"), pki.key("pump-a"))},
    )


def _mqtt_client(port: int, pki: Pki, stem: str) -> aiomqtt.Client:
    tls = client_context(pki.ca, pki.cert(stem), pki.key(stem))
    return aiomqtt.Client(
        SERVER_IP, port, protocol=aiomqtt.ProtocolVersion.V5, tls_context=tls, timeout=10
    )


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
async def test_mosquitto_takes_the_cn_as_acl_user(pki: Pki, stranger: Pki, tmp_path: Path) -> None:
    """The broker's ACL (``pattern write plant/+/%u/#``) lets pump-a write under its own CN only:
    the message to pump-b's topic is dropped, the one to its own arrives."""
    with Mosquitto(_broker_pki(pki, stranger), tmp_path / "broker") as broker:
        async with (
            _mqtt_client(broker.tls_port, pki, "gateway") as gateway,
            _mqtt_client(broker.tls_port, pki, "pump-a") as pump,
        ):
            await gateway.subscribe("plant/#", qos=1)
            await pump.publish("plant/site/pump-b/temp", b"forged", qos=1)
            await pump.publish("plant/site/pump-a/temp", b"21.5", qos=1)
            async with asyncio.timeout(10):
                message = await anext(aiter(gateway.messages))
            assert (str(message.topic), message.payload) == ("plant/site/pump-a/temp", b"21.5")
