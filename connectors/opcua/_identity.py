"""Secure channel and user identity of an asyncua ``Client`` from ``OpcUaSourceSettings``.

Shared by the source and ``bridge browse`` so both check server certificates against the same
trust store and log in the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from connectors.opcua.config import OpcUaSourceSettings, SecuritySettings
from connectors.opcua.trust import TrustStore, UntrustedCertificate

__all__ = ["POLICIES", "apply_identity", "read_first_line"]

log = structlog.get_logger(__name__)

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


async def apply_identity(client: Client, settings: OpcUaSourceSettings, logger: Any = log) -> None:
    """Set security policy/mode, server certificate check and user identity on ``client``.

    May fetch the server's endpoints over the network: callers bound it with a timeout.
    """
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
        if security.server_certificate is None:
            client.certificate_validator = _validator(security, logger)
    if settings.username is not None:
        client.set_user(settings.username)
    if settings.password is not None:
        client.set_password(settings.password)
    elif settings.password_file:
        client.set_password(await asyncio.to_thread(read_first_line, settings.password_file))
    if settings.user_certificate and settings.user_private_key:
        await client.load_client_certificate(settings.user_certificate)
        await client.load_private_key(Path(settings.user_private_key))


def _validator(security: SecuritySettings, logger: Any) -> Any:
    async def validate(cert: x509.Certificate, _app: object) -> None:
        """Called by asyncua during CreateSession, before any credential is sent."""
        store = TrustStore(
            Path(security.pki_dir),
            trust_on_first_use=security.trust_on_first_use,
            rejected_cap=security.rejected_cap,
        )
        try:
            await asyncio.to_thread(store.check, cert.public_bytes(Encoding.DER))
        except UntrustedCertificate as exc:
            logger.error("server_certificate_untrusted", detail=str(exc))
            raise ServiceError(StatusCodes.BadCertificateUntrusted) from exc

    return validate


def read_first_line(path: str) -> str:
    """First line of a secret file (without the newline); empty file: empty string."""
    text = Path(path).read_text(encoding="utf-8")
    return text.splitlines()[0] if text else ""
