"""Secure channel and user identity of an asyncua ``Client`` from ``OpcUaSourceSettings``.

Shared by the source and ``bridge browse`` so both check server certificates against the same
trust list (``pki/servers`` by default, apart from the HMI clients our own server trusts) and log
in the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.validator import CertificateValidatorMethod
from cryptography import x509

from bridge.connectors.opcua._refusal import Attempt, watch_open_faults
from bridge.connectors.opcua.config import OpcUaSourceSettings, SecuritySettings
from bridge.connectors.opcua.trust import TrustList, UntrustedCertificate

__all__ = ["POLICIES", "apply_identity", "read_first_line"]

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


async def apply_identity(
    client: Client, settings: OpcUaSourceSettings, attempt: Attempt | None = None
) -> None:
    """Set security policy/mode, server certificate check and user identity on ``client``.

    ``attempt`` records what ``explain`` needs if the connection then fails (the gateway's
    certificate, a refusal of the channel, a server certificate the trust list refused).
    May fetch the server's endpoints over the network: callers bound it with a timeout.
    """
    attempt = attempt if attempt is not None else Attempt()
    security = settings.security
    client.application_uri = security.application_uri
    if security.policy != "None":
        assert security.certificate is not None and security.private_key is not None
        await client.set_security(
            POLICIES[security.policy],
            security.certificate,
            security.private_key,
            server_certificate=security.server_certificate,
            mode=_MODES[security.mode],
        )
        attempt.certificate = client.security_policy.host_certificate
        if security.server_certificate is None:
            client.certificate_validator = _validator(security, attempt, settings.endpoint)
    watch_open_faults(client, attempt)
    if settings.username is not None:
        client.set_user(settings.username)
    if settings.password is not None:
        client.set_password(settings.password)
    elif settings.password_file:
        client.set_password(await asyncio.to_thread(read_first_line, settings.password_file))
    if settings.user_certificate and settings.user_private_key:
        await client.load_client_certificate(settings.user_certificate)
        await client.load_private_key(Path(settings.user_private_key))


def _validator(
    security: SecuritySettings, attempt: Attempt, endpoint: str
) -> CertificateValidatorMethod:
    trust = TrustList(
        Path(security.pki_dir),
        trust_on_first_use=security.trust_on_first_use,
        rejected_cap=security.rejected_cap,
        purpose="servers",
    )

    async def validate(cert: x509.Certificate, _app: ua.ApplicationDescription) -> None:
        """Called by asyncua during CreateSession, before any credential is sent."""
        try:
            await trust.check(cert, peer=endpoint)  # where it was seen, for `certs list`
        except UntrustedCertificate as exc:  # the trust list logged it, with the trust command
            attempt.refused_server = exc
            raise ServiceError(exc.status) from exc

    return validate


def read_first_line(path: str) -> str:
    """First line of a secret file (without the newline); empty file: empty string."""
    text = Path(path).read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""
