"""Command-line options for a secured, authenticated OPC UA session (``bridge browse``).

They build the same ``OpcUaSourceSettings`` a mapping would, so the checks (policy and mode fit,
certificate and key present, one identity) and the trust store are those of the source. The
password never goes on the command line: it comes from an environment variable named with
``--password-env`` or from ``--password-file``. The scaffold gets the same connection block, with
``${VAR}`` or the file path in place of the password.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from bridge.connectors.opcua.config import OpcUaSourceSettings

__all__ = ["BadOptions", "connection_options", "connection_settings"]

F = TypeVar("F", bound=Callable[..., Any])

_POLICIES = ["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"]


class BadOptions(Exception):
    """The options do not describe a usable connection; the message says which and why."""


def connection_options(func: F) -> F:
    options = [
        click.option(
            "--policy",
            type=click.Choice(_POLICIES),
            default="None",
            show_default=True,
            help="Security policy of the secure channel.",
        ),
        click.option(
            "--mode",
            type=click.Choice(["None", "Sign", "SignAndEncrypt"]),
            default=None,
            help="Message security mode [default: SignAndEncrypt with a policy, else None].",
        ),
        click.option("--certificate", help="Client application certificate (DER/PEM)."),
        click.option("--private-key", help="Private key of --certificate (PEM)."),
        click.option(
            "--server-certificate", help="Pin this server certificate instead of the trust store."
        ),
        click.option(
            "--pki-dir",
            default="pki/servers",
            show_default=True,
            help="Trust list of servers: certificates in <pki-dir>/trusted are accepted, "
            "unknown ones filed in <pki-dir>/rejected.",
        ),
        click.option(
            "--trust-on-first-use",
            is_flag=True,
            help="While <pki-dir>/trusted is empty, accept the server's certificate and store it.",
        ),
        click.option(
            "--application-uri",
            default="urn:bridge:gateway",
            show_default=True,
            help="Must equal the SAN URI of --certificate.",
        ),
        click.option("--username", help="User name (password from --password-env/-file)."),
        click.option(
            "--password-env", metavar="VAR", help="Environment variable with the password."
        ),
        click.option(
            "--password-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="File whose first line is the password.",
        ),
        click.option("--user-certificate", help="X.509 user identity: certificate (DER/PEM)."),
        click.option("--user-private-key", help="X.509 user identity: private key (PEM)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def connection_settings(
    endpoint: str, timeout_s: float, options: dict[str, Any]
) -> tuple[OpcUaSourceSettings, dict[str, Any]]:
    """Settings for the session and the source block keys to write into the scaffold."""
    policy: str = options["policy"]
    mode = options["mode"] or ("None" if policy == "None" else "SignAndEncrypt")
    block: dict[str, Any] = {}
    if policy != "None":
        security = {
            "policy": policy,
            "mode": mode,
            "certificate": options["certificate"],
            "private_key": options["private_key"],
            "pki_dir": options["pki_dir"],
            "application_uri": options["application_uri"],
        }
        if options["server_certificate"]:
            security["server_certificate"] = options["server_certificate"]
        block["security"] = security
    elif mode != "None":
        block["security"] = {"policy": policy, "mode": mode}  # refused by the model below
    identity: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    if options["username"]:
        identity["username"] = options["username"]
    var, file = options["password_env"], options["password_file"]
    if var and file:
        raise BadOptions("give --password-env or --password-file, not both")
    if var:
        if var not in os.environ:
            raise BadOptions(f"--password-env {var}: variable {var} is not set")
        secret["password"] = os.environ[var]
        identity["password"] = f"${{{var}}}"
    elif file:
        identity["password_file"] = str(file)
    if options["user_certificate"] or options["user_private_key"]:
        identity["user_certificate"] = options["user_certificate"]
        identity["user_private_key"] = options["user_private_key"]
    block.update(identity)
    data = {"endpoint": endpoint, "timeout_s": timeout_s, **block, **secret}
    if "security" in data:
        data["security"] = {
            **data["security"],
            "trust_on_first_use": options["trust_on_first_use"],
        }
    try:
        settings = OpcUaSourceSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in exc.errors()
        )
        raise BadOptions(problems) from exc
    return settings, block
