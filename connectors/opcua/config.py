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
from pydantic_core import PydanticCustomError

from bridge.connectors.opcua._eventinputs import EventAddress
from bridge.connectors.opcua._structures import FIELD_PATH_HINT, parse_field_path
from bridge.connectors.opcua.nodeid import parse_nsu
from bridge.retry import ReconnectSettings


def _opc_tcp(value: str) -> str:
    if not value.startswith("opc.tcp://"):
        raise ValueError("endpoint must start with opc.tcp://")
    return value


OpcTcpUrl = Annotated[str, AfterValidator(_opc_tcp)]

# sessions: auto. Against a node-opcua server (1,000 notifications per Publish response) on 2
# cores, 10,000 items at 100 ms gave ~26k notifications/s on one session and ~43k on four.
AUTO_ITEMS_PER_SESSION = 2500
AUTO_MAX_SESSIONS = 4

__all__ = [
    "BackfillSettings",
    "OpcUaAddress",
    "OpcUaSourceSettings",
    "ReconnectSettings",
    "SecuritySettings",
]

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
        description="Path to the server certificate to pin; default: taken from the endpoint and "
        "checked against the trust store.",
    )
    pki_dir: str = Field(
        "pki/servers",
        description="Trust list of the servers the gateway connects to (apart from the HMI "
        "clients its own server trusts): certificates in <pki_dir>/trusted, or issued by a CA "
        "there, are accepted; unknown ones are refused and filed in <pki_dir>/rejected (trust "
        "one with `bridge certs trust <thumbprint> --pki-dir <pki_dir>`).",
    )
    trust_on_first_use: bool = Field(
        False,
        description="While <pki_dir>/trusted is empty, accept an unknown server certificate and "
        "store it there; later ones are refused (commissioning only: it trusts whoever answers "
        "first).",
    )
    rejected_cap: int = Field(
        100, ge=1, description="At most this many certificates are kept in <pki_dir>/rejected."
    )
    application_uri: str = Field(
        "urn:bridge:gateway",
        description="ApplicationUri announced to the server; must equal the certificate's SAN URI.",
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


class BackfillSettings(BaseModel):
    """``backfill:`` of an OPC UA source: after a reconnect, read the outage gap from the
    server's history (HistoryRead of the raw values) for the tags whose server keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_values_per_tag: int = Field(
        10_000,
        ge=1,
        description="At most this many historical values read per tag and reconnect (the "
        "oldest of the gap first); the rest of a longer gap stays a hole, and the log says so.",
    )
    max_values: int = Field(
        500_000,
        ge=1,
        description="At most this many historical values read per reconnect over all tags.",
    )
    max_gap_s: float = Field(
        3600,
        gt=0,
        description="Only the newest max_gap_s seconds of a longer gap are read.",
    )
    max_duration_s: float = Field(
        30,
        gt=0,
        description="Time budget of one reconnect's backfill; live values queue meanwhile "
        "(within queue_size) and follow the historical ones.",
    )
    nodes_per_call: int = Field(100, ge=1, le=1000, description="Tags per HistoryRead request.")
    values_per_call: int = Field(
        1000,
        ge=1,
        description="Values per tag and HistoryRead response (NumValuesPerNode); the server "
        "hands the rest by continuation points.",
    )


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
    password_file: str | None = Field(
        None, description="File holding the password (first line), e.g. a container secret."
    )
    user_certificate: str | None = Field(
        None, description="X.509 user identity: certificate path (DER or PEM)."
    )
    user_private_key: str | None = Field(
        None, description="X.509 user identity: private key path (PEM)."
    )
    retry_failed_items_s: float = Field(
        30, gt=0, description="Items the server refused are retried this often (seconds)."
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
    server_queue_size: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Values the server queues per monitored item between two Publish "
        "responses (QueueSize, oldest discarded). 1: only the latest value per publishing "
        "interval. Above 1, every sampled change is delivered (more notifications while "
        "running), and after a short link loss the subscription is transferred with up to "
        "this many values per item that changed meanwhile.",
    )
    timeout_s: float = Field(
        4, gt=0, description="Timeout of every request to the server in seconds."
    )
    watchdog_s: float = Field(
        10,
        gt=0,
        description="No notification and no keep-alive for this long: the subscription is dead. "
        "The connection's liveness probe runs every 1 s up to watchdog_s 10 and every "
        "watchdog_s / 10 above (raise it on a loaded box whose server answers late).",
    )
    reconnect: ReconnectSettings = Field(
        default_factory=ReconnectSettings,
        description="Backoff between connect attempts and the port probe that ends it early.",
    )
    sessions: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        1,
        description="Sessions the items are split over (contiguous shares, one subscription "
        "each). asyncua keeps one Publish request in flight per session, so one session tops "
        "out at one server response per round trip; more sessions take more notifications/s "
        "from a large server. 'auto': one session per 2,500 items, at most 4. A session that "
        "is lost marks only its items Bad and is reconnected on its own.",
    )
    backfill: BackfillSettings | None = Field(
        None,
        description="Fill the gap of an outage from the server's history after each reconnect "
        "(tags whose AccessLevel has HistoryRead); the values are marked historical. Omit: "
        "no backfill.",
    )
    workers: int = Field(
        0,
        ge=0,
        le=32,
        description="Child processes that run this source's sessions (connect, subscribe, "
        "decode) and hand packed batches to the gateway over a pipe; 0 = in the gateway's "
        "process. Worth it on 2+ cores with thousands of fast-changing items: one process "
        "decodes some 25-40k notifications/s. The sessions are spread over the workers.",
    )

    def session_count(self, items: int) -> int:
        """Sessions actually opened for ``items`` tags (never more than items, at least 1)."""
        setting = self.sessions
        wanted = (
            min(AUTO_MAX_SESSIONS, -(-items // AUTO_ITEMS_PER_SESSION))
            if setting == "auto"
            else setting
        )
        return max(1, min(wanted, items))

    @model_validator(mode="after")
    def _user_pair(self) -> Self:
        if (self.password is not None or self.password_file) and self.username is None:
            raise ValueError("password given without username")
        if self.password is not None and self.password_file:
            raise ValueError("give password or password_file, not both")
        if bool(self.user_certificate) != bool(self.user_private_key):
            raise ValueError("user_certificate and user_private_key go together")
        if self.user_certificate and self.username:
            raise ValueError("choose one identity: username or user_certificate")
        if isinstance(self.sessions, int) and self.workers > self.sessions:
            raise ValueError(
                f"workers ({self.workers}) above sessions ({self.sessions}): a worker runs at "
                "least one session; raise sessions or lower workers"
            )
        return self


class OpcUaAddress(BaseModel):
    """A tag's ``address``: a node id with its namespace URI, never a namespace index."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str | None = Field(
        None,
        description="Node id as nsu=<namespace uri>;<i=|s=|g=|b=><identifier>, "
        "e.g. nsu=urn:bridge:sim:plant;s=Pump01.Vibration.",
    )
    path: str | None = Field(
        None,
        description="Instead of node: browse names below Objects, '/'-separated, e.g. "
        "Plant/Pump01/Vibration; resolved to a node id on every new session.",
    )
    namespace: str | None = Field(None, description="Namespace URI of the browse names in path.")
    sampling_interval_ms: float | None = Field(
        None, ge=0, description="Sampling interval for this item; default from the source settings."
    )
    field: str | None = Field(
        None,
        description="For a variable whose value is a structure (an ExtensionObject of a type the "
        "server defines): the field to read, names separated by '.', array elements as [i], "
        "e.g. Speed, Status.Speed, Axes[0].Position. Decoded with the server's "
        "DataTypeDefinition, loaded when the session connects.",
    )
    event: EventAddress | None = Field(
        None,
        description="Instead of node or path: the tag is a field of the latest matching event "
        "(alarm, condition) of a notifier, e.g. {type: AlarmConditionType, source_name: "
        "Boiler1, field: ActiveState/Id}.",
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
    def _nsu_form(cls, value: str | None) -> str | None:
        if value is not None:
            parse_nsu(value)
        return value

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_field_path(value)
            except ValueError as exc:
                raise PydanticCustomError(
                    "field_path", "{reason}", {"reason": str(exc), "hint": FIELD_PATH_HINT}
                ) from None
        return value

    @model_validator(mode="after")
    def _node_or_path(self) -> Self:
        if self.event is not None:
            given = [k for k in ("node", "path", "namespace", "field") if getattr(self, k)]
            if given or self.sampling_interval_ms is not None:
                given += ["sampling_interval_ms"] if self.sampling_interval_ms is not None else []
                raise ValueError(
                    f"an event address takes no {', '.join(given)}: the event's notifier, "
                    "type and field go inside event"
                )
            return self
        if (self.node is None) == (self.path is None):
            raise ValueError("give either node (nsu=...), path (with namespace) or event")
        if self.path is not None:
            if not self.namespace:
                raise ValueError("path needs namespace: the URI of its browse names")
            if not [p for p in self.path.split("/") if p]:
                raise ValueError("path is empty")
        return self
