"""MQTT commands for the `bridge` CLI, contributed through the `bridge.commands` entry point:
`bridge mqtt certs ca|issue|show`, the files of a mutual-TLS setup without openssl.

Imports no aiomqtt or paho (commands must start fast); `cryptography` is imported only by the
command that runs, so `bridge --help` does not pay for it either.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from bridge.connectors.mqtt.certs import CertError, CertInfo

__all__ = ["mqtt"]

_F = TypeVar("_F", bound=Callable[..., object])


def _path_option(flag: str, dest: str, help_text: str) -> Callable[[_F], _F]:
    return click.option(flag, dest, type=click.Path(path_type=Path), required=True, help=help_text)


def _force_option(func: _F) -> _F:
    return click.option("--force", is_flag=True, help="Replace existing files.")(func)


def _fail(exc: CertError) -> NoReturn:
    click.echo(f"error: {exc.message}", err=True)
    click.echo(f"fix: {exc.hint}", err=True)
    sys.exit(1)  # the README's exit codes: 1 failed; 2 is for usage (click's own errors)


@click.group()
def mqtt() -> None:
    """MQTT over mutual TLS: certificates for the broker, the devices and the gateway."""


@mqtt.group()
def certs() -> None:
    """A plant CA and the certificates it signs (EC P-256, PEM, keys mode 0600).

    A client certificate's CN is the device id: Mosquitto's use_identity_as_username makes it
    the user its ACL knows.
    """


@certs.command("ca")
@_path_option("--cert", "cert_path", "Write the CA certificate (PEM) here.")
@_path_option("--key", "key_path", "Write its private key (PEM, mode 0600) here.")
@click.option(
    "--cn",
    "common_name",
    default="bridge MQTT CA",
    show_default=True,
    help="Name of the CA (its certificate's CN), e.g. the plant's.",
)
@click.option("--days", default=3650, show_default=True, help="Validity of the CA.")
@_force_option
def certs_ca(cert_path: Path, key_path: Path, common_name: str, days: int, force: bool) -> None:
    """Create the CA: cafile of the broker and of every client."""
    from bridge.connectors.mqtt.certs import CertError, create_ca

    try:
        create_ca(cert_path, key_path, common_name=common_name, days=days, force=force)
    except CertError as exc:
        _fail(exc)
    _report("CA certificate", cert_path, key_path)
    click.echo("keep the CA key off the broker and the devices: it signs new identities")


@certs.command("issue")
@_path_option("--ca", "ca_cert", "The CA certificate (PEM).")
@_path_option("--ca-key", "ca_key", "The CA's private key (PEM).")
@click.option("--cn", "common_name", required=True, help="Device id (client) or broker name.")
@_path_option("--cert", "cert_path", "Write the certificate (PEM) here.")
@_path_option("--key", "key_path", "Write its private key (PEM, mode 0600) here.")
@click.option(
    "--server", is_flag=True, help="A broker certificate (serverAuth) instead of a client's."
)
@click.option("--dns", multiple=True, help="Broker host name clients dial (--server); repeat.")
@click.option(
    "--ip", "ips", multiple=True, help="Broker IP address clients dial (--server); repeat."
)
@click.option("--days", default=825, show_default=True, help="Validity of the certificate.")
@_force_option
def certs_issue(
    ca_cert: Path,
    ca_key: Path,
    common_name: str,
    cert_path: Path,
    key_path: Path,
    server: bool,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    days: int,
    force: bool,
) -> None:
    """Issue a client certificate (CN = device id) or, with --server, the broker's."""
    from bridge.connectors.mqtt.certs import CertError, issue

    try:
        issue(
            ca_cert,
            ca_key,
            cert_path,
            key_path,
            common_name=common_name,
            server=server,
            dns=dns,
            ips=ips,
            days=days,
            force=force,
        )
    except CertError as exc:
        _fail(exc)
    _report("server certificate" if server else "client certificate", cert_path, key_path)
    if server:
        click.echo(f"mosquitto.conf: cafile {ca_cert} / certfile {cert_path} / keyfile {key_path}")
    else:
        click.echo(
            f'the broker (use_identity_as_username true) knows this client as "{common_name}"'
        )


@certs.command("show")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def certs_show(file: Path, as_json: bool) -> None:
    """Print what FILE (a PEM or DER certificate) says: subject, issuer, validity, SANs, EKU and
    the SHA-256 fingerprint."""
    from bridge.connectors.mqtt.certs import CertError, describe

    try:
        info = describe(file)
    except CertError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(_as_dict(info), separators=(",", ":")))
        return
    for label, value in _as_dict(info).items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        click.echo(f"{label + ':':<12} {value}")


def _report(what: str, cert_path: Path, key_path: Path) -> None:
    from bridge.connectors.mqtt.certs import describe

    info = describe(cert_path)
    names = [f"DNS:{d}" for d in info.dns] + [f"IP:{i}" for i in info.ips]
    click.echo(f"{what} {cert_path}: CN={info.subject_cn}, until {info.not_after:%Y-%m-%d}")
    if names:
        click.echo(f"  names {', '.join(names)}")
    click.echo(f"  sha256 {info.sha256}")
    click.echo(f"private key {key_path} (mode 0600)")


def _as_dict(info: CertInfo) -> dict[str, object]:
    return {
        "subject_cn": info.subject_cn,
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "expired": info.expired,
        "is_ca": info.is_ca,
        "dns": list(info.dns),
        "ips": list(info.ips),
        "eku": list(info.eku),
        "sha256": info.sha256,
    }
