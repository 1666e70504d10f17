"""Tables of the SQL store. Plain columns only: no protocol type ever reaches the database."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ActionEventRow",
    "ActionStateRow",
    "AssetLeaseRow",
    "Base",
    "DeadLetterRow",
    "FleetMemberRow",
    "OutboxAcceptedRow",
    "OutboxRow",
    "PredictionRow",
]

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_ID = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class PredictionRow(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        Index("ix_predictions_asset_timestamp", "asset", "timestamp"),
        # Revision 0008: GET /predictions pages newest first by (timestamp, id) and retention
        # deletes the oldest by timestamp; without it both scan the table (2.4 s at 1M rows).
        Index("ix_predictions_timestamp", "timestamp", "id"),
        Index("ix_predictions_model_version", "model", "version"),
        # Revision 0015: the HMI server's HistoryRead pages one asset+model by (timestamp, id).
        Index("ix_predictions_asset_model_timestamp", "asset", "model", "timestamp", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The prediction's UUID: unique, so replaying a batch after a crash adds nothing twice.
    prediction_id: Mapped[str] = mapped_column(String(36), unique=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    asset: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    # A classifier's label goes to value_text, a regressor's number to value_num.
    value_text: Mapped[str | None] = mapped_column(Text)
    value_num: Mapped[float | None] = mapped_column(Double)
    score: Mapped[float | None] = mapped_column(Double)
    quality: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    # Epoch seconds as a double: exact to the microsecond and the same on SQLite and PostgreSQL.
    timestamp: Mapped[float] = mapped_column(Double)
    input_age_s: Mapped[float | None] = mapped_column(Double)
    inputs_json: Mapped[str] = mapped_column(Text, default="[]")
    # Lineage: sha256 of the mapping file the prediction was made under (revision 0005).
    mapping_revision: Mapped[str | None] = mapped_column(String(64))
    explanation_json: Mapped[str | None] = mapped_column(Text)
    drift_score: Mapped[float | None] = mapped_column(Double)
    # The asset's lease generation in a fleet (revision 0012): the fencing token it was
    # made under; None outside a fleet.
    fence: Mapped[int | None] = mapped_column(BigInteger)
    # Made after the fact for a past time (backfill predictions, revision 0016): never the
    # latest state of its asset and model.
    historical: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class PredictionSequenceRow(Base):
    """The highest committed ``seq`` per gateway, asset and model (revision 0009), written in the
    transaction of the predictions: a restart goes on from it, so an MES can order and
    deduplicate by (gateway, asset, model, seq) across restarts."""

    __tablename__ = "prediction_sequences"

    gateway_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    asset: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class OutboxRow(Base):
    """One event waiting for one destination. Deleted only once the destination accepted it."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("destination", "event_id", name="uq_outbox_event"),
        # The relay reads "oldest row of each asset of a destination": this index serves it.
        Index("ix_outbox_dest_asset_id", "destination", "asset", "id"),
    )

    # Insertion order is the delivery order within (destination, asset).
    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(200))
    asset: Mapped[str] = mapped_column(String(200))
    # The Idempotency-Key: the prediction id (a uuid5), so a resend after a crash reuses it.
    event_id: Mapped[str] = mapped_column(String(36))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    # Rejections (non-retryable answers) so far, and when the next attempt may run.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Double, default=0.0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # Retryable failures counted against the event (revision 0007), and when the first was.
    retries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_failed_at: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    # The relay that leased the row for sending (empty: none) and until when (revision 0010):
    # a claim commits its lease at once instead of holding a transaction open while it sends.
    claimed_by: Mapped[str] = mapped_column(String(200), default="", server_default="")
    lease_until: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    # The fencing token of the prediction the event came from (revision 0012; None: no fleet).
    fence: Mapped[int | None] = mapped_column(BigInteger)


class OutboxAcceptedRow(Base):
    """An outbox row its destination accepted (revision 0007). Unused since leases (revision
    0010): a relay deletes accepted rows at once; the table stays for older gateways' notes,
    which the upgrade resolves, and is emptied by retention."""

    __tablename__ = "outbox_accepted"

    row_id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=False)
    destination: Mapped[str] = mapped_column(String(200))
    accepted_at: Mapped[float] = mapped_column(Double)


class DeadLetterRow(Base):
    """An event its destination rejected ``dead_letter_after`` times; replayable via the CLI."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("destination", "event_id", name="uq_dead_letters_event"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(200))
    asset: Mapped[str] = mapped_column(String(200))
    event_id: Mapped[str] = mapped_column(String(36))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Double)
    failed_at: Mapped[float] = mapped_column(Double)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")


class FleetMemberRow(Base):
    """A gateway of a fleet (revision 0012): alive while ``expires_at`` (database clock, epoch
    seconds) is ahead; each heartbeat moves it on."""

    __tablename__ = "fleet_members"

    gateway_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    boot_id: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[float] = mapped_column(Double)
    heartbeat_at: Mapped[float] = mapped_column(Double)
    expires_at: Mapped[float] = mapped_column(Double)
    assets: Mapped[int] = mapped_column(Integer, default=0)


class AssetLeaseRow(Base):
    """Which gateway serves an asset (revision 0012). ``generation`` goes up by one each time
    the asset changes hands: it is the fencing token written with the holder's predictions.
    ``claimed_by`` names the gateway the rendezvous hash gives the asset to, while another
    still holds it: the holder hands it over at its next heartbeat."""

    __tablename__ = "fleet_leases"

    asset: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200), default="")
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[float] = mapped_column(Double, default=0.0)
    claimed_by: Mapped[str] = mapped_column(String(200), default="")
    taken_at: Mapped[float] = mapped_column(Double, default=0.0)


class ActionStateRow(Base):
    """Where a write-back action stands (revision 0017), kept across restarts: armed under
    which model version and by whom, fallen back to shadow (why), faulted (why; a faulted
    action writes nothing until reset), and its last write. Values are JSON text, so a bool,
    an int64 and a float keep their type and digits."""

    __tablename__ = "action_state"

    action: Mapped[str] = mapped_column(String(200), primary_key=True)
    asset: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(16))
    # A digest of the action's definition: a changed one is not armed by an older arming.
    definition: Mapped[str] = mapped_column(String(64))
    armed_version: Mapped[str | None] = mapped_column(String(100))
    armed_by: Mapped[str | None] = mapped_column(String(200))
    armed_at: Mapped[float | None] = mapped_column(Double)
    fallback: Mapped[str | None] = mapped_column(Text)
    fault: Mapped[str | None] = mapped_column(Text)
    faulted_at: Mapped[float | None] = mapped_column(Double)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_value: Mapped[str | None] = mapped_column(Text)
    last_time: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)


class ActionEventRow(Base):
    """One decision of an action that was not ``hold`` (revision 0017): refused, shadow,
    await_confirm, confirmed, expired, attempted (recorded before the write is sent), written
    (read back and matching) or fault; with what was asked, written and read back, the
    prediction behind it, the interlock readings and limit checks, the reason and the actor."""

    __tablename__ = "action_events"
    __table_args__ = (
        Index("ix_action_events_action_at", "action", "at"),
        Index("ix_action_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    at: Mapped[float] = mapped_column(Double)
    gateway: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(200))
    asset: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    requested: Mapped[str | None] = mapped_column(Text)
    value: Mapped[str | None] = mapped_column(Text)
    read_back: Mapped[str | None] = mapped_column(Text)
    prediction_id: Mapped[str | None] = mapped_column(String(36))
    model: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(100))
    # JSON: the prediction's lineage, the interlock readings, the limit checks.
    lineage: Mapped[str | None] = mapped_column(Text)
    interlocks: Mapped[str] = mapped_column(Text, default="[]")
    checks: Mapped[str] = mapped_column(Text, default="[]")
    reason: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(200))
