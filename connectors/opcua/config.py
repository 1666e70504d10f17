"""Validated settings for the OPC UA client source and its tag addresses."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from connectors.opcua.convert import parse_nsu


def _opc_tcp(value: str) -> str:
    if not value.startswith("opc.tcp://"):
        raise ValueError("endpoint must start with opc.tcp://")
    return value


OpcTcpUrl = Annotated[str, AfterValidator(_opc_tcp)]

__all__ = ["OpcUaAddress", "OpcUaSourceSettings", "SecuritySettings"]

SecurityPolicyName = Literal[
    "None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"
]
SecurityModeName = Literal["None", "Sign", "SignAndEncrypt"]


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: SecurityPolicyName = Field(
        "None", description="OPC UA security policy of the secure channel."
    )
    mode: SecurityModeName = Field(
        "None", description="Message security mode; must be None exactly when policy is None."
    )
    certificate: str | None = Field(
        None, description="Path to the client application certificate (DER or PEM)."
    )
    private_key: str | None = Field(
        None, description="Path to the private key of the client certificate (PEM)."
    )
    server_certificate: str | None = Field(
        None,
        description="Path to the server certificate to trust; default: taken from the endpoint.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(
                f"security policy {self.policy!r} and mode {self.mode!r} do not fit: "
                "use policy None with mode None, or a real policy with Sign/SignAndEncrypt"
            )
        if self.policy != "None" and not (self.certificate and self.private_key):
            raise ValueError(f"security policy {self.policy!r} needs certificate and private_key")
        return self


class OpcUaSourceSettings(BaseModel):
    """A ``sources.<name>`` block of kind ``opcua`` (the core strips the ``kind`` key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: OpcTcpUrl = Field(description="Server endpoint URL, e.g. opc.tcp://plc.local:4840.")
    security: SecuritySettings = Field(
        default_factory=SecuritySettings, description="Secure channel settings."
    )
    username: str | None = Field(None, description="User name; omit for anonymous login.")
    password: str | None = Field(
        None, description="Password; pass it as ${ENV_VAR}, never literally in the mapping."
    )
    publishing_interval_ms: float = Field(
        100, gt=0, description="Requested subscription publishing interval in milliseconds."
    )
    sampling_interval_ms: float = Field(
        0, ge=0, description="Default sampling interval per item; 0 = fastest the server offers."
    )
    queue_size: int = Field(
        10_000,
        ge=1,
        description="Bound of the client-side notification queue; overflow is coalesced, counted.",
    )
    timeout_s: float = Field(
        4, gt=0, description="Timeout of every request to the server in seconds."
    )
    watchdog_s: float = Field(
        10,
        gt=0,
        description="No notification and no keep-alive for this long: the subscription is dead.",
    )

    @model_validator(mode="after")
    def _user_pair(self) -> Self:
        if self.password is not None and self.username is None:
            raise ValueError("password given without username")
        return self


class OpcUaAddress(BaseModel):
    """A tag's ``address``: a node id with its namespace URI, never a namespace index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(
        description="Node id as nsu=<namespace uri>;<i=|s=|g=|b=><identifier>, "
        "e.g. nsu=urn:bridge:sim:plant;s=Pump01.Vibration."
    )
    sampling_interval_ms: float | None = Field(
        None, ge=0, description="Sampling interval for this item; default from the source settings."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # Most tags only need the node id, so a plain string is accepted as the whole address.
        if isinstance(data, str):
            return {"node": data}
        return data

    @field_validator("node")
    @classmethod
    def _nsu_form(cls, value: str) -> str:
        parse_nsu(value)
        return value
