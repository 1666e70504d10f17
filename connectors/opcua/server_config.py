"""Validated settings for the gateway's own OPC UA server (the HMI-facing prediction sink)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.connectors.opcua._passwords import parse_password_hash
from bridge.connectors.opcua.config import OpcTcpUrl

__all__ = [
    "LoginLockout",
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
    Write service (only nodes whose AccessLevel allows it; the prediction tree allows none).
    Give ``password`` (from ${ENV_VAR}) or ``password_hash`` (``bridge certs hash-password``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1, description="Login name.")
    password: str | None = Field(
        None, min_length=1, description="Password; pass it as ${ENV_VAR}, never literally."
    )
    password_hash: str | None = Field(
        None,
        description="scrypt$n$r$p$salt$hash, made by `bridge certs hash-password`; the mapping "
        "then holds no password.",
    )
    role: Literal["reader", "operator"] = Field("reader", description="What the user may do.")

    @field_validator("password_hash")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        if value is not None:
            parse_password_hash(value)
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError(
                f"user {self.username!r}: give exactly one of password (${{ENV_VAR}}) and "
                "password_hash (bridge certs hash-password)"
            )
        return self


class LoginLockout(BaseModel):
    """Failed logins are throttled per client address: after ``after_failures`` failures in a
    row the address is refused for ``first_lockout_s``, doubling after each further failure up
    to ``max_lockout_s``; a successful login clears it. Other addresses are not affected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    after_failures: int = Field(5, ge=1, description="Failures in a row before a lockout.")
    first_lockout_s: float = Field(2.0, gt=0, description="Length of the first lockout, s.")
    max_lockout_s: float = Field(300.0, gt=0, description="Longest lockout, s.")


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
        "pki/clients",
        description="Trust list of client application certificates: <pki_dir>/trusted (or CAs "
        "there, with issuers/ and crl/ folders); refused ones are filed in <pki_dir>/rejected. "
        "Empty: certificate-based clients are refused until trusted (bridge certs trust).",
    )
    rejected_cap: int = Field(
        100, ge=1, description="At most this many certificates are kept in <pki_dir>/rejected."
    )
    login_lockout: LoginLockout = Field(
        default_factory=LoginLockout, description="Throttling of failed logins per client address."
    )
    max_message_size: int = Field(
        4 * 1024 * 1024, ge=65536, description="Largest accepted request in bytes."
    )
    max_connections: int = Field(50, ge=1, description="Concurrent client connections.")
    max_subscriptions_per_session: int = Field(10, ge=1, description="Per client session.")
    min_publishing_interval_ms: float = Field(
        10.0,
        ge=1.0,
        le=60_000.0,
        description="Shortest publishing interval granted to a subscription, ms: a client asking "
        "for less (0 = publish every change at once) gets this. Values are sampled on write: "
        "every prediction write queues its notification at once; a subscription that sent "
        "nothing during its last interval sends it at once, else at the interval's end (never "
        "two notifications closer than the interval).",
    )

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
