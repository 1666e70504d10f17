"""Validated settings for the gateway's own OPC UA server (the HMI-facing prediction sink)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.opcua.config import OpcTcpUrl

__all__ = ["OpcUaServerSettings", "OpcUaServerUser", "ServerSecurityPolicy"]

ServerSecurityPolicy = Literal[
    "None",
    "Basic256Sha256_Sign",
    "Basic256Sha256_SignAndEncrypt",
    "Aes128_Sha256_RsaOaep_Sign",
    "Aes128_Sha256_RsaOaep_SignAndEncrypt",
    "Aes256_Sha256_RsaPss_Sign",
    "Aes256_Sha256_RsaPss_SignAndEncrypt",
]


def _only_none() -> list[ServerSecurityPolicy]:
    return ["None"]


class OpcUaServerUser(BaseModel):
    """A user that may log in; every user is read-only (the prediction tree is read-only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1, description="Login name.")
    password: str = Field(
        min_length=1, description="Password; pass it as ${ENV_VAR}, never literally."
    )


class OpcUaServerSettings(BaseModel):
    """A ``sinks.<name>`` block of kind ``opcua-server`` (the core strips the ``kind`` key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: OpcTcpUrl = Field(
        "opc.tcp://127.0.0.1:4850",
        description="Endpoint URL; the server binds only to this host and port.",
    )
    namespace: str = Field(
        "urn:bridge:predictions", min_length=1, description="Namespace URI of the prediction nodes."
    )
    allow_anonymous: bool = Field(
        False, description="Let clients log in anonymously (read-only, like every session)."
    )
    security_policies: list[ServerSecurityPolicy] = Field(
        default_factory=_only_none,
        min_length=1,
        description="Offered security policies; anything but None needs certificate and key.",
    )
    certificate: str | None = Field(
        None, description="Path to the server application certificate (DER or PEM)."
    )
    private_key: str | None = Field(None, description="Path to the server private key (PEM).")
    users: list[OpcUaServerUser] = Field(
        default_factory=list, description="Users allowed to log in with user name and password."
    )
    server_name: str = Field(
        "bridge", min_length=1, description="Application name shown to clients."
    )

    @model_validator(mode="after")
    def _certificates(self) -> Self:
        secured = [p for p in self.security_policies if p != "None"]
        if secured and not (self.certificate and self.private_key):
            raise ValueError(f"security policies {secured} need certificate and private_key")
        names = [u.username for u in self.users]
        if len(names) != len(set(names)):
            raise ValueError("duplicate username in users")
        return self
