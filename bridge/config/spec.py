"""The mapping file, as typed pydantic models. Every field says what it is for: the JSON Schema
for editors and the docs come from these descriptions.

Connector-specific blocks (a source's settings, a tag's address, an output's settings) are
validated by the connector's own models, found through ``bridge.plugins``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bridge import units
from bridge.client_tls import ClientTls, require_https
from bridge.config.actions import ActionConfig
from bridge.config.strict import Strict

__all__ = [
    "AlertConfig",
    "ApiSettings",
    "ApiTlsSettings",
    "AssetConfig",
    "ConsoleSettings",
    "DriftConfig",
    "DurabilitySettings",
    "ExplainConfig",
    "FeatureConfig",
    "FleetSettings",
    "GatewaySettings",
    "MappingFile",
    "MetricsSettings",
    "ModelBackfill",
    "ModelConfig",
    "ModelOutputs",
    "ModelRegistrySettings",
    "OutboxSettings",
    "ProbeSettings",
    "RetentionSettings",
    "Stat",
    "TagConfig",
    "TemplateConfig",
]

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
TAG_PATTERN = r"^[a-z][a-z0-9_]*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Stat = Literal["mean", "std", "min", "max", "last", "slope"]


def _checked_unit(text: str) -> str:
    """``text`` if pint knows the unit (empty: no unit); else an error with a did-you-mean."""
    if text:
        try:
            units.parse(text)
        except units.UnitError as exc:
            raise PydanticCustomError("unit_unknown", exc.message, {"hint": exc.hint}) from None
    return text


class ApiTlsSettings(Strict):
    certificate: str = Field(
        description="Path to the REST API's server certificate (PEM; the chain may follow it)."
    )
    private_key: str = Field(description="Path to the private key of `certificate` (PEM).")
    client_ca: str | None = Field(
        None,
        description="Path to a CA certificate (PEM). When set, mutual TLS: every client must "
        "present a certificate signed by this CA, others are refused during the handshake.",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class ConsoleSettings(Strict):
    enabled: bool = Field(
        True, description="Serve the web console at /console on the REST API's address."
    )
    session_hours: float = Field(
        8.0, gt=0, le=168, description="A console login lasts at most this long."
    )
    idle_minutes: float = Field(
        60.0, gt=0, description="A console session unused this long ends (log in again)."
    )
    max_sessions: int = Field(
        1000,
        ge=1,
        description="Console sessions kept at once; beyond, the least recently used one ends.",
    )
    live_period_s: float = Field(
        1.0,
        ge=0.25,
        le=60,
        description="Pages get live values at most this often (Server-Sent Events).",
    )


MIN_SALT_CHARS = 16


class InsightsSettings(Strict):
    k: int = Field(
        5,
        ge=2,
        le=1000,
        description="k-anonymity of `GET /api/v1/insights`: a group (rows sharing model, label "
        "and period) computed from fewer than `k` distinct assets is suppressed (left out and "
        "counted in `suppressed`).",
    )
    salt: SecretStr | None = Field(
        None,
        description="Secret of the per-asset breakdown (`by_asset=true`): each asset appears "
        "as HMAC-SHA256(salt, asset), truncated. Write it as `${ENV}` (at least 16 characters, "
        "e.g. `openssl rand -hex 32`); it is never logged nor returned. Without it the "
        "breakdown is refused and assets only ever appear as counts. A new salt gives every "
        "asset a new key (rotate it to unlink what was published before).",
    )
    max_range_days: float = Field(
        366.0,
        gt=0,
        description="Widest `from`..`to` range of one insights request, in days; a wider one "
        "is refused with 400.",
    )

    @field_validator("salt")
    @classmethod
    def _long_salt(cls, value: SecretStr | None) -> SecretStr | None:
        text = None if value is None else value.get_secret_value()
        # A placeholder left for run time (`bridge validate --no-env`) is checked then.
        if text is not None and not text.startswith("${") and len(text) < MIN_SALT_CHARS:
            raise ValueError(
                f"the insights salt has {len(text)} characters; use at least "
                f"{MIN_SALT_CHARS} random ones (e.g. `openssl rand -hex 32` in an ${{ENV}}): "
                "a short salt lets anyone who can list the asset names recompute the keys"
            )
        return value


class ApiSettings(Strict):
    enabled: bool = Field(True, description="Serve the REST API for MES systems.")
    host: str = Field(
        "127.0.0.1",
        description="Address the REST API binds to. Any address but loopback needs `tls` "
        "(or `insecure_http: true`).",
    )
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the REST API.")
    tls: ApiTlsSettings | None = Field(
        None, description="Serve HTTPS with this certificate (and mutual TLS with `client_ca`)."
    )
    insecure_http: bool = Field(
        False,
        description="Allow plain HTTP on a non-loopback address (API keys then cross the "
        "network in clear text): only behind a TLS-terminating proxy or on an isolated network.",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest request body; a larger one is refused with 413 before it is read.",
    )
    rate_limit_per_s: float = Field(
        20.0, gt=0, description="Requests per second allowed per API key (sustained)."
    )
    rate_burst: int = Field(
        100, ge=1, description="Requests an API key may make at once above `rate_limit_per_s`."
    )
    max_concurrent_per_key: int = Field(
        8, ge=1, description="Requests of one API key in progress at the same time; more get 429."
    )
    max_history_days: float = Field(
        31.0,
        gt=0,
        description="Widest `since`..`until` range of a history or metrics query, in days; a "
        "wider one is refused with 400 (page through narrower ranges instead).",
    )
    query_timeout_s: float = Field(
        10.0, gt=0, description="A history query running longer is stopped (503)."
    )
    query_threads: int = Field(
        2,
        ge=1,
        le=64,
        description="Threads for the API's database queries, apart from the data path's: "
        "slow API queries never delay the store writer or the relays.",
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings,
        description="The web console for operators and OT engineers (login with an API key).",
    )
    public_url: str | None = Field(
        None,
        description="The URL other systems reach this API at (through a proxy or NAT it is "
        "not `host:port`), e.g. https://gw-07.plant:8000. Connectors that publish documents "
        "(the NGSI-LD @context at <public_url>/contexts/bridge-ngsild.jsonld) name them with "
        "it. Default: none, such documents are written inline instead.",
    )
    insights: InsightsSettings = Field(
        default_factory=InsightsSettings,
        description="The anonymised insights for third parties (`GET /api/v1/insights`, keys "
        "of scope `insights`): aggregates only, k-anonymous, assets dropped or salted-hashed.",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r} is not an absolute http:// or https:// URL with a host "
                "(e.g. https://gw-07.plant:8000)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a base URL has no ?query or #fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _public_needs_tls(self) -> ApiSettings:
        if self.tls is None and not self.insecure_http and not _is_loopback(self.host):
            raise PydanticCustomError(
                "api_insecure_bind",
                "the REST API binds {host} without TLS: API keys would cross the network in "
                "clear text",
                {
                    "host": self.host,
                    "hint": "set gateway.api.tls (certificate, private_key), or write "
                    "`insecure_http: true` if a TLS proxy or an isolated network protects it, "
                    "or bind 127.0.0.1",
                },
            )
        return self


class DurabilitySettings(Strict):
    profile: Literal["default", "production"] = Field(
        "default",
        description="`production` refuses any store setting that can lose a commit on power "
        "loss: SQLite must use synchronous FULL, PostgreSQL synchronous_commit=on and fsync=on.",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] | None = Field(
        None,
        description="SQLite `PRAGMA synchronous` (the store always runs in WAL mode). NORMAL "
        "survives process crashes but may lose the last commits on power loss; FULL does not. "
        "Default: FULL with the production profile, else NORMAL.",
    )

    @model_validator(mode="after")
    def _production_is_full(self) -> DurabilitySettings:
        if self.profile == "production" and self.sqlite_synchronous == "NORMAL":
            raise ValueError("the production profile requires sqlite_synchronous: FULL")
        return self

    @property
    def synchronous(self) -> Literal["NORMAL", "FULL"]:
        if self.sqlite_synchronous is not None:
            return self.sqlite_synchronous
        return "FULL" if self.profile == "production" else "NORMAL"


class OutboxSettings(Strict):
    max_pending: int = Field(
        2_000_000,
        ge=1,
        description="Events kept per durable destination (e.g. mes-rest) while it is down or "
        "slow; what happens beyond is `when_full`.",
    )
    when_full: Literal["refuse-new", "drop-oldest"] = Field(
        "refuse-new",
        description="A full outbox refuses new events (the history keeps them) or drops the "
        "oldest pending ones; either way it is counted, logged and shown in health.",
    )
    dead_letter_after: int = Field(
        3,
        ge=1,
        description="Rejections (a non-retryable 4xx) after which an event moves to the dead "
        "letters, so the asset's later events flow; `bridge outbox replay` sends it again.",
    )
    reject_retry_s: float = Field(
        1.0, ge=0, description="Wait before sending a rejected event again (below the limit)."
    )
    max_retries: int = Field(
        20,
        ge=1,
        description="Retryable failures (5xx, 408/425/429, timeout, refused connection) of one "
        "event, counted while its destination accepts other events, after which it moves to "
        "the dead letters with the reason, so its asset's later events flow. While the "
        "destination accepts nothing (an outage) nothing is counted: the backlog waits.",
    )
    max_retry_age_s: float = Field(
        600.0,
        gt=0,
        description="Also dead-letter an event this long after its first counted retryable "
        "failure, whatever `max_retries` says.",
    )
    batch_size: int = Field(
        500,
        ge=1,
        le=10000,
        description="Assets a relay serves per round (up to 8 events each, sent one after the "
        "other per asset); different assets go in parallel up to the destination's concurrency.",
    )
    lease_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="How long a relay's claim on events lasts (renewed while it sends them). "
        "No database transaction stays open meanwhile; if the gateway dies, another gateway "
        "sharing the database sends its claimed events once the lease ends.",
    )


class ModelRegistrySettings(Strict):
    poll_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="How often the gateway reads the model registry for versions activated, "
        "shadowed, canaried or rolled back by the CLI, the API or another gateway.",
    )
    public_key: str | None = Field(
        None,
        description="PEM file of an Ed25519 public key (relative to the mapping file). When "
        "set, every registered version must carry a signature made with its private key "
        "over its name, version and sha256 (`bridge models sign`); an unsigned or wrongly "
        "signed version is refused and the old one keeps serving. Required by the "
        "`production` profile (gateway.durability.profile).",
    )
    directory: str | None = Field(
        None,
        description="The only folder (relative to the mapping file) that `bridge models "
        "register` and `POST /api/v1/models/{name}/versions` read model files from; a path "
        "outside it, a symbolic link leaving it, a FIFO or a device is refused. "
        "Default: `models` next to the mapping file.",
    )
    max_file_mib: int = Field(
        256,
        ge=1,
        le=65536,
        description="Largest model file (MiB) that registration and loading read; a larger "
        "one is refused before it is read.",
    )


class ReloadSettings(Strict):
    watch: bool = Field(
        False,
        description="Reload the mapping when its file changes (polled: modification time, "
        "then sha256). SIGHUP and `bridge reload` work either way.",
    )
    watch_interval_s: float = Field(
        2.0, gt=0, description="How often the watch looks at the mapping file."
    )


class RetentionSettings(Strict):
    predictions_days: float = Field(
        30.0,
        gt=0,
        description="Keep stored predictions this many days; older ones are deleted in "
        "batches. ~820 bytes per row on SQLite: 2,000 assets at 1 Hz fill ~140 GB a day.",
    )
    comparisons_days: float = Field(
        30.0, gt=0, description="Keep shadow/canary comparisons this many days."
    )
    labels_days: float = Field(
        365.0,
        gt=0,
        description="Keep operator feedback (acknowledge/confirm/reject) this many days, "
        "counted from the prediction it is about.",
    )
    alerts_days: float = Field(
        365.0,
        gt=0,
        description="Keep alerts (label changes, lost predictions, low disk) this many days "
        "after they were raised, acknowledged or not.",
    )
    drift_days: float = Field(90.0, gt=0, description="Keep drift events this many days.")
    outbox_history_days: float = Field(
        7.0,
        gt=0,
        description="Keep the notes of delivered outbox events this many days. Events not "
        "yet delivered and dead letters are never deleted by retention.",
    )
    every_s: float = Field(
        3600.0,
        gt=0,
        description="Run the retention job this often (and at once when the disk gets low).",
    )
    batch_rows: int = Field(
        5000,
        ge=100,
        le=100000,
        description="Rows deleted per statement, each in its own short transaction, so the "
        "store writer commits between two batches.",
    )
    pause_s: float = Field(
        0.05,
        ge=0,
        le=10,
        description="Pause between two delete batches: the store writer's turn.",
    )
    min_free_mib: int = Field(
        1024,
        ge=0,
        description="Free disk (MiB) under the store below which health is degraded, an "
        "alert is raised and history is deleted early to keep predictions (0: no MiB check).",
    )
    min_free_percent: float = Field(
        5.0,
        ge=0,
        lt=100,
        description="The same threshold as a share of the disk (0: no percent check); below "
        "either one counts as low.",
    )
    low_disk_history_days: float = Field(
        1.0,
        gt=0,
        description="While the disk is low, history (comparisons, drift events, delivered "
        "outbox notes) is cut to this many days before predictions are touched; predictions "
        "keep `predictions_days`.",
    )
    disk_check_s: float = Field(60.0, gt=0, le=3600, description="How often free disk is read.")
    disk_path: str | None = Field(
        None,
        description="Folder whose disk is watched. Default: the SQLite file's folder; with "
        "PostgreSQL (its disk is the database server's) nothing is watched unless set.",
    )


class MetricsSettings(Strict):
    listen: str | None = Field(
        None,
        description="`host:port` of a listener of its own for `/metrics` (with `/livez` and "
        "`/readyz`), e.g. `127.0.0.1:9464`, so the scrape port can be firewalled apart from "
        "the API. Default: `/metrics` is served on the REST API's port.",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise PydanticCustomError(
                "listen",
                "expected host:port, e.g. 127.0.0.1:9464 (got {value!r})",
                {"value": value},
            )
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ProbeSettings(Strict):
    source_grace_s: float = Field(
        30.0,
        ge=0,
        description="`/readyz` stays ready while a source that was connected is away for up "
        "to this long (a reconnect in progress); a source that never connected since the "
        "start, or is away for longer, makes the gateway not ready.",
    )


class CollectorSettings(Strict):
    mode: Literal["between-events", "automatic"] = Field(
        "between-events",
        description="`between-events`: the gateway runs Python's cyclic garbage collector on "
        "a clock from its event loop, between events (short pauses, none in the middle of a "
        "prediction's path); `automatic`: Python's own collector, which collects whenever "
        "allocations pass its threshold (pauses of 5-50 ms land on latencies; see the README's "
        "latency budget).",
    )
    young_every_ms: float = Field(
        20.0,
        ge=1,
        le=1000,
        description="`between-events`: collect what was made since the last collection this often.",
    )
    full_every_s: float = Field(
        60.0,
        ge=1,
        le=3600,
        description="`between-events`: collect everything this often (a pause of ~50-100 ms "
        "at 2,000 assets); cyclic garbage waits at most this long.",
    )
    trim_every_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="Hand memory that the C allocator keeps after it was freed (an outage's "
        "backlog drained, a reconnect) back to the operating system this often (glibc's "
        "`malloc_trim`, off the event loop, a few ms), so the resident size follows what is in "
        "use. 0: never. Nothing runs on a C library without it (musl).",
    )


class FleetSettings(Strict):
    enabled: bool = Field(
        False,
        description="Share the assets with the other gateways of this store: every gateway "
        "of a fleet runs the same mapping on one store (PostgreSQL; a SQLite file only serves "
        "gateways on one host) with its own `id`; each asset "
        "is served by exactly one live gateway (leases with a heartbeat, rendezvous hashing), "
        "and a dead gateway's assets are served again by the others within `lease_s` plus "
        "one heartbeat.",
    )
    heartbeat_s: float = Field(
        1.0,
        ge=0.1,
        le=60,
        description="How often a gateway renews its leases and looks at the fleet's members.",
    )
    lease_s: float = Field(
        5.0,
        ge=0.5,
        le=600,
        description="A lease not renewed for this long is free: the gateway that held it is "
        "taken for dead and another takes its assets. A gateway that cannot renew stops "
        "publishing for its assets one heartbeat before its leases run out.",
    )
    mirror_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="The HMI server shows every asset of the fleet: the predictions of the "
        "assets other gateways serve are read from the store this often (0: show only this "
        "gateway's own assets).",
    )

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> FleetSettings:
        if self.lease_s < 3 * self.heartbeat_s:
            raise PydanticCustomError(
                "fleet_lease_too_short",
                "lease_s ({lease}) must be at least 3 heartbeats ({need}): a lease must "
                "survive a missed renewal, and its holder stops one heartbeat before it ends",
                {"lease": self.lease_s, "need": 3 * self.heartbeat_s},
            )
        return self


class AuditSettings(Strict):
    enabled: bool = Field(
        True,
        description="The gateway's part of the audit ledger: its start, stop and mapping "
        "entries, signed checkpoints, the mirror file and the runtime integrity check. Changes "
        "made through the store (models, API keys, operator decisions, alerts, dead letters) "
        "are entries whatever this says: the ledger is append-only (docs/governance.md).",
    )
    signing_key: str = Field(
        "var/audit-ed25519.pem",
        description="Ed25519 private key (PEM, relative to this mapping file) that signs the "
        "ledger's checkpoints, so a chain cut short shows. Made (0600, with its public half "
        "next to it as .pub) when it does not exist. Gateways started from one folder share "
        "it; give each its own path (e.g. `var/audit-${BRIDGE_GATEWAY_ID}.pem`) to tell "
        "their checkpoints apart.",
    )
    checkpoint_s: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="How often the gateway signs a checkpoint of the chain's end when entries "
        "were added since the last one (and once when it stops).",
    )
    mirror: str | None = Field(
        None,
        description="Also append every entry and checkpoint to this JSON-lines file (relative "
        "to this mapping file), e.g. on another disk or a write-once share; it verifies on "
        "its own with `bridge audit verify FILE`.",
    )
    integrity_s: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="How often the mapping file, the serving model files and the reference "
        "statistics are hashed again and compared with what was approved (also at start and "
        "after a reload; 0: only then). A mismatch raises an alert and an audit entry; with "
        "the production profile the affected models are withheld (quality Bad).",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="Public keys (PEM files, relative to this mapping file) of the other "
        "gateways of a fleet whose checkpoints `bridge audit verify` accepts, besides this "
        "gateway's own.",
    )


class GatewaySettings(Strict):
    id: Name = Field(
        "bridge", description="This gateway's id; part of every event's idempotency key."
    )
    store: str = Field(
        "sqlite:///var/bridge.db",
        description="SQLAlchemy database URL of the store (prediction history, models). "
        "A relative SQLite path is relative to this mapping file (like model paths), "
        "whichever directory a command runs in.",
    )
    api: ApiSettings = Field(default_factory=ApiSettings, description="The REST API.")
    durability: DurabilitySettings = Field(
        default_factory=DurabilitySettings,
        description="How hard the store holds on to a commit (profile, SQLite synchronous).",
    )
    outbox: OutboxSettings = Field(
        default_factory=OutboxSettings,
        description="The transactional outbox of durable destinations (mes-rest).",
    )
    models: ModelRegistrySettings = Field(
        default_factory=ModelRegistrySettings,
        description="The model registry: how often to look for changes, signature checks.",
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings,
        description="How long the store keeps each kind of row, and the free-disk check.",
    )
    metrics: MetricsSettings = Field(
        default_factory=MetricsSettings,
        description="The Prometheus scrape endpoint `/metrics`.",
    )
    probes: ProbeSettings = Field(
        default_factory=ProbeSettings,
        description="The liveness and readiness probes `/livez` and `/readyz`.",
    )
    reload: ReloadSettings = Field(
        default_factory=ReloadSettings,
        description="Hot reload of this mapping file (SIGHUP, `bridge reload`, file watch).",
    )
    collector: CollectorSettings = Field(
        default_factory=CollectorSettings,
        description="When Python's cyclic garbage collector runs in the gateway process.",
    )
    fleet: FleetSettings = Field(
        default_factory=FleetSettings,
        description="Several gateways on one store, sharing the assets and taking over "
        "a dead gateway's.",
    )
    audit: AuditSettings = Field(
        default_factory=AuditSettings,
        description="The tamper-evident audit ledger of changes and decisions.",
    )
    default_max_age_s: float = Field(
        10.0,
        gt=0,
        description="A model input not updated for longer than this counts as Bad "
        "(stale), unless the tag sets its own max_age_s.",
    )


class TagConfig(Strict):
    source: str = Field(description="Name of the source (under `sources:`) this tag is read from.")
    address: Any = Field(
        description="Where the tag lives on its source: for OPC UA a NodeId written "
        "`nsu=<namespace uri>;s=<id>`, for Modbus a register block (table, address, type, "
        "word_order). Template variables like `{n}` are replaced per asset."
    )
    unit: str = Field(
        "",
        description="Engineering unit after scaling, e.g. `degC`, `degF`, `bar`, `psi`, `mm/s`, "
        "`m3/h`, `rpm`, `%` (pint's unit names; an unknown unit is a mapping error).",
    )
    convert_to: str = Field(
        "",
        description="Convert the value from `unit` to this unit before windows and models "
        "(after scale/offset; degF -> degC is affine). The tag's unit is then this one; "
        "`deadband` and `clamp` are in it.",
    )
    scale: float = Field(1.0, description="value = raw * scale + offset (in `unit`).")
    offset: float = Field(0.0, description="value = raw * scale + offset (in `unit`).")
    deadband: float = Field(
        0.0,
        ge=0,
        description="Ignore changes smaller than this (absolute, in the tag's unit: "
        "`convert_to` if set).",
    )
    clamp: tuple[float, float] | None = Field(
        None,
        description="[min, max] in the tag's unit (`convert_to` if set): values outside are "
        "clamped and marked Uncertain.",
    )
    max_age_s: float | None = Field(
        None,
        gt=0,
        description="As a model input, older than this counts as Bad (stale). "
        "Default: gateway.default_max_age_s.",
    )
    heartbeat_s: float | None = Field(
        None,
        gt=0,
        description="Republish the tag's last value to the tag outputs (UNS tag topics) "
        "every this many seconds while it does not change, with its original source time "
        "and `heartbeat: true`, so consumers can tell unchanged from dead; a tag not heard "
        "from for longer than max_age_s is republished as Bad (stale). Default: off.",
    )
    writable: bool = Field(
        False,
        description="An action (`actions:`) may write where this tag is read from. Without "
        "it, an action whose target is this tag's address is refused.",
    )
    description: str = Field("", description="Free text for people.")

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        return _checked_unit(v)

    @field_validator("convert_to")
    @classmethod
    def _convertible(cls, v: str, info: ValidationInfo) -> str:
        if not v:
            return v
        unit = info.data.get("unit")
        if unit is None:
            return v  # `unit` itself is wrong: reported on its own
        if not unit:
            raise PydanticCustomError(
                "unit_missing",
                "convert_to needs the unit the value comes in",
                {"hint": f"add `unit:` (the unit after scale/offset) to convert it to {v}"},
            )
        _checked_unit(v)
        try:
            units.conversion(unit, v)
        except units.UnitError as exc:
            raise PydanticCustomError("unit_conversion", exc.message, {"hint": exc.hint}) from None
        return v

    @field_validator("clamp")
    @classmethod
    def _clamp_order(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and v[0] >= v[1]:
            raise ValueError("clamp must be [min, max] with min < max")
        return v


TagName = Annotated[str, Field(pattern=TAG_PATTERN)]


class TemplateConfig(Strict):
    description: str = Field("", description="What kind of machine this template describes.")
    tags: dict[TagName, TagConfig] = Field(
        description="Tags every asset made from this template has. Strings may use `{var}` "
        "placeholders filled from the asset's `vars` (and `{asset}`, the asset's name)."
    )


class AssetConfig(Strict):
    template: str | None = Field(None, description="Name of the template (under `templates:`).")
    vars: dict[str, str | int] = Field(
        default_factory=dict, description="Values for the template's `{var}` placeholders."
    )
    tags: dict[TagName, TagConfig] = Field(
        default_factory=dict,
        description="Tags of this asset alone; a tag named like a template tag replaces it.",
    )
    description: str = Field("", description="Free text for people.")


class FeatureConfig(Strict):
    tag: TagName = Field(description="A tag name of the served assets, e.g. `vibration`.")
    stat: Stat = Field(
        description="Statistic over the window: mean, std, min, max, last, slope "
        "(units per second)."
    )
    unit: str = Field(
        "",
        description="The unit the model was trained with for this tag (slope: this unit per "
        "second). The tag's unit (its `convert_to` if set) must be this very unit (`degC` and "
        "`°C` are one unit; `degF` is not, even though it converts): else the mapping is "
        "refused. Empty: not checked.",
    )

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        return _checked_unit(v)

    @property
    def name(self) -> str:
        return f"{self.tag}.{self.stat}"


class ModelOutputs(Strict):
    label: str | None = Field(None, description="ONNX output holding the class index per row.")
    scores: str | None = Field(
        None,
        description="ONNX output holding class probabilities "
        "[rows, classes]; the score is the chosen class's probability.",
    )
    value: str | None = Field(
        None, description="ONNX output holding a number per row (regression models)."
    )
    unit: str = Field(
        "",
        description="Unit of the `value` output (regression models): shown as the OPC UA "
        "EngineeringUnits of Value and sent as `unit` to the MES.",
    )

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, v: str) -> str:
        return _checked_unit(v)

    @model_validator(mode="after")
    def _one_kind(self) -> ModelOutputs:
        if (self.label is None) == (self.value is None):
            raise ValueError("name exactly one of `label` (classifier) or `value` (regressor)")
        if self.unit and self.value is None:
            raise PydanticCustomError(
                "unit_of_label",
                "`unit` is the unit of a regressor's `value`; a label has none",
                {"hint": "remove `unit:` from outputs, or name the `value:` output it is of"},
            )
        return self


class DriftConfig(Strict):
    window: int = Field(
        100,
        ge=10,
        description="Drift window: the latest this many Good feature rows of an asset are "
        "compared with the model's reference statistics (PSI per feature).",
    )
    threshold: float = Field(
        0.25,
        gt=0,
        description="An asset drifts when a feature's PSI exceeds this (0.1 slight, 0.25 "
        "significant); one alert and one webhook call per crossing.",
    )
    clear_below: float | None = Field(
        None,
        ge=0,
        description="The drift state clears (and may alert again) once every feature's PSI is "
        "below this. Default: 0.8 x threshold.",
    )
    every: int = Field(1, ge=1, description="Compute drift every this many model runs.")
    webhook: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Retraining webhook: POSTed once per crossing with model, version, "
        "drifting features and window statistics; retried like MES calls, through the outbox.",
    )
    webhook_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra headers of webhook calls (e.g. Authorization: use ${ENV}).",
    )
    webhook_tls: ClientTls | None = Field(
        None,
        description="TLS of an https:// webhook: `ca_file` (the CA that signed its "
        "certificate; only it is trusted), `client_certificate` and `client_key` (mutual TLS).",
    )

    @model_validator(mode="after")
    def _clear_below(self) -> DriftConfig:
        if self.clear_below is not None and self.clear_below > self.threshold:
            raise ValueError("clear_below cannot be above threshold")
        return self

    @model_validator(mode="after")
    def _tls_needs_https(self) -> DriftConfig:
        if self.webhook_tls is not None:
            require_https(self.webhook or "", self.webhook_tls, "webhook_tls")
        return self


class ExplainConfig(Strict):
    mode: Literal["every", "label_change", "on_request"] = Field(
        "label_change",
        description="Which predictions get an explanation: `every` one (costs one extra "
        "batched model call per run), those whose label changed (`label_change`), or only "
        "when asked through the REST API (`on_request`, latest predictions).",
    )
    top: int = Field(3, ge=1, le=20, description="How many contributing inputs to keep.")


class AlertConfig(Strict):
    """Debounce of label alerts: a classifier at its decision boundary flips label from one run
    to the next (3 flips in 0.5 s once raised 3 alerts for one fault onset)."""

    raise_after: int = Field(
        3,
        ge=1,
        description="An alert is raised once a fault label has been predicted this many runs in "
        "a row (a switch to another fault label: that label this many runs in a row). 1 raises "
        "on the first such prediction.",
    )
    clear_after: int = Field(
        10,
        ge=1,
        description="After an alert the asset counts as back to normal (and may alert again) "
        "only after this many normal predictions in a row; flips back and forth meanwhile "
        "raise nothing.",
    )
    severity: int = Field(
        500,
        ge=1,
        le=1000,
        description="OPC UA severity (1-1000, Part 9) of the model's alarm on the gateway's "
        "HMI server, the same for every fault label: HMIs sort and colour their alarm lists by "
        "it (e.g. 1-200 low, 201-500 medium, 501-800 high, 801-1000 urgent).",
    )


class ModelBackfill(Strict):
    """What a model does with a gap its sources filled from the server's history after an
    outage (``backfill:`` of an OPC UA source)."""

    predictions: bool = Field(
        False,
        description="Also make the model's predictions for the past: at every `period_s` "
        "across the gap each backfilled asset's features from the windows as they were then "
        "(samples up to that time only), stamped with that time and flagged historical in "
        "the store, the REST API and every output; live-only consumers (the HMI server's "
        "current values, alerts, alarms, event rules) skip them. Off: the gap keeps only "
        "the live predictions made during the outage.",
    )


class ModelConfig(Strict):
    file: str = Field(description="Path of the .onnx file, relative to this mapping file.")
    version: str = Field(min_length=1, description="Version shown on the HMI and sent to the MES.")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="Pin the model file: bridge refuses to load a file with another hash.",
    )
    assets: list[str] | None = Field(None, description="Assets this model serves.")
    template: str | None = Field(None, description="Serve every asset made from this template.")
    input: str = Field("features", description="Name of the ONNX input that takes the features.")
    features: list[FeatureConfig] = Field(
        min_length=1, description="Model inputs, in the order the model expects them."
    )
    outputs: ModelOutputs = Field(
        default_factory=lambda: ModelOutputs(label="label", scores="probabilities"),
        description="Which ONNX outputs hold the result.",
    )
    labels: list[str] | None = Field(
        None, description="Class names by index; default: the model's `labels` metadata."
    )
    trigger: Literal["period", "change"] = Field(
        "period",
        description="When the model runs: every `period_s` seconds over all its assets "
        "(`period`), or as soon as an input of an asset changes (`change`): one batch over "
        "the assets whose inputs changed since the last run, at most one run per "
        "`min_interval_ms`.",
    )
    min_interval_ms: float = Field(
        10.0,
        ge=0,
        description="With `trigger: change`: the least time between two runs. Changes that "
        "arrive meanwhile are coalesced: an asset changed many times is one row of the next "
        "run. 0 runs again as soon as the previous run ended.",
    )
    period_s: float = Field(
        1.0, gt=0, description="With `trigger: period`: run the model every this many seconds."
    )
    window_s: float = Field(
        30.0,
        gt=0,
        description="Features are computed over the last window_s seconds of Good samples.",
    )
    min_window_s: float | None = Field(
        None,
        ge=0,
        description="Run the model only once its inputs have this much history "
        "(models trained on full windows misjudge a few samples); until then the prediction "
        "is Bad, 'warming up'. Default: half of window_s.",
    )
    max_samples: int = Field(2048, ge=8, description="Samples kept per input tag for the window.")
    reference: str | None = Field(
        None,
        description="Reference statistics of the training data (JSON, format "
        "`bridge-reference/1`), relative to this mapping file; drift and explanations use it.",
    )
    drift: DriftConfig | None = Field(
        None, description="Drift detection against the reference statistics (needs reference)."
    )
    explain: ExplainConfig | None = Field(
        None,
        description="Explanations: top contributing inputs per prediction (needs reference).",
    )
    alerts: AlertConfig = Field(
        default_factory=AlertConfig,
        description="When a label change raises an alert (classifiers): debounced by default.",
    )
    backfill: ModelBackfill = Field(
        default_factory=ModelBackfill,
        description="Predictions for an outage gap that a source filled from the server's "
        "history (see the OPC UA source's `backfill:`).",
    )

    @model_validator(mode="after")
    def _served(self) -> ModelConfig:
        if not self.assets and not self.template:
            raise ValueError(
                "say which assets the model serves: `assets: [...]` or `template: ...`"
            )
        if self.min_window_s is not None and self.min_window_s > self.window_s:
            raise ValueError("min_window_s cannot be longer than window_s")
        if (self.drift is not None or self.explain is not None) and self.reference is None:
            raise ValueError(
                "drift and explain compare inputs with the training data: add "
                "`reference: stats.json` (reference statistics, see the README)"
            )
        return self


class MappingFile(Strict):
    """The whole mapping file. ``sources`` and ``outputs`` entries are checked per ``kind``."""

    version: Literal[1] = Field(1, description="Mapping format version.")
    gateway: GatewaySettings = Field(
        default_factory=GatewaySettings, description="Gateway-wide settings."
    )
    sources: dict[Name, dict[str, Any]] = Field(description="Servers and PLCs to read from.")
    templates: dict[Name, TemplateConfig] = Field(
        default_factory=dict, description="Reusable machine definitions."
    )
    assets: dict[Name, AssetConfig] = Field(description="Machines and their tags.")
    models: dict[Name, ModelConfig] = Field(default_factory=dict, description="ONNX models.")
    outputs: dict[Name, dict[str, Any]] = Field(
        default_factory=dict, description="Where predictions go."
    )
    actions: dict[Name, ActionConfig] = Field(
        default_factory=dict,
        description="Write-back of setpoints to PLCs and SCADA: target, trigger, value, "
        "limits, interlocks and mode of each (docs/actions.md).",
    )
