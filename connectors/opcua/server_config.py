"""Validated settings for the gateway's own OPC UA server (the HMI-facing prediction sink)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.opcua.config import OpcTcpUrl

__all__ = [
    "OpcUaServerCertificateUser",
    "OpcUaServerSettings",
    "OpcUaServerUser",
    "ServerSecurityPolicy",
]

ServerSecurityPolicy = Literal[
    "None",
    "Basic256Sha256_Sign",
    "Basic256Sha256_SignAndEncrypt",
    "Aes128_Sha256_RsaOaep_Sign",
    "Aes128_Sha256_RsaOaep_SignAndEncrypt",
    "Aes256_Sha256_RsaPss_Sign",
    "Aes256_Sha256_RsaPss_SignAndEncrypt",
]


def _secured() -> list[ServerSecurityPolicy]:
    # Secure by default: None must be listed explicitly (demo, isolated test benches).
    return [
        "Basic256Sha256_SignAndEncrypt",
        "Aes128_Sha256_RsaOaep_SignAndEncrypt",
        "Aes256_Sha256_RsaPss_SignAndEncrypt",
        "Basic256Sha256_Sign",
        "Aes128_Sha256_RsaOaep_Sign",
        "Aes256_Sha256_RsaPss_Sign",
    ]


class OpcUaServerUser(BaseModel):
    """A user that may log in. ``reader``: browse, read, subscribe. ``operator``: also the
    Write service (only nodes whose AccessLevel allows it; the prediction tree allows none)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1, description="Login name.")
    password: str = Field(
        min_length=1, description="Password; pass it as ${ENV_VAR}, never literally."
    )
    role: Literal["reader", "operator"] = Field("reader", description="What the user may do.")


class OpcUaServerCertificateUser(BaseModel):
    """A user that logs in with an X.509 user certificate (an X509IdentityToken signed with
    its private key) instead of a password. The certificate is pinned: same DER bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: str = Field(
        min_length=1, description="Path to the user's certificate (DER or PEM)."
    )
    role: Literal["reader", "operator"] = Field("reader", description="What the user may do.")
    name: str | None = Field(
        None, description="Name in logs; default: the certificate's common name."
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
        default_factory=_secured,
        min_length=1,
        description="Offered security policies (default: the three policies with Sign and "
        "SignAndEncrypt); None is refused unless listed here; secured ones need certificate/key.",
    )
    certificate: str | None = Field(
        None, description="Path to the server application certificate (DER or PEM)."
    )
    private_key: str | None = Field(None, description="Path to the server private key (PEM).")
    users: list[OpcUaServerUser] = Field(
        default_factory=list, description="Users allowed to log in with user name and password."
    )
    user_certificates: list[OpcUaServerCertificateUser] = Field(
        default_factory=list,
        description="Users allowed to log in with an X.509 user certificate (needs a secured "
        "policy: the token is signed).",
    )
    server_name: str = Field(
        "bridge", min_length=1, description="Application name shown to clients."
    )
    application_uri: str = Field(
        "urn:bridge:gateway", description="ApplicationUri; must equal the certificate's SAN URI."
    )
    pki_dir: str = Field(
        "pki",
        description="Client application certificates must be in <pki_dir>/trusted (DER/PEM).",
    )
    max_message_size: int = Field(
        4 * 1024 * 1024, ge=65536, description="Largest accepted request in bytes."
    )
    max_connections: int = Field(50, ge=1, description="Concurrent client connections.")
    max_subscriptions_per_session: int = Field(10, ge=1, description="Per client session.")

    @model_validator(mode="after")
    def _certificates(self) -> Self:
        secured = [p for p in self.security_policies if p != "None"]
        if secured and not (self.certificate and self.private_key):
            raise ValueError(f"security policies {secured} need certificate and private_key")
        names = [u.username for u in self.users]
        if len(names) != len(set(names)):
            raise ValueError("duplicate username in users")
        if self.user_certificates and not secured:
            raise ValueError(
                "user_certificates need a secured security policy (the X.509 token is signed)"
            )
        return self
