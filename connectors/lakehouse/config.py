"""Settings of the lakehouse destination (an ``outputs.<name>`` block with ``kind: lakehouse``).

Plain pydantic: validating a mapping needs neither deltalake nor pyarrow (the ``lakehouse``
extra); they are imported when the destination is built.
"""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.isa95 import Isa95Levels

__all__ = [
    "AGGREGATES",
    "Aggregate",
    "Downsample",
    "FlushSettings",
    "LakehouseSettings",
    "OptimizeSettings",
    "TagMode",
    "TelemetrySettings",
    "VacuumSettings",
]

Aggregate = Literal["last", "mean", "min", "max"]
AGGREGATES: tuple[Aggregate, ...] = ("last", "mean", "min", "max")
# Object stores delta-rs writes to; a URI without a scheme is a local directory.
_SCHEMES = ("s3", "s3a", "abfs", "abfss", "az", "azure", "gs", "gcs", "file")


class Downsample(BaseModel):
    """One row per tag and window instead of one per sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_s: float = Field(
        gt=0,
        le=86400,
        description="Window length in seconds; windows are aligned to the clock (a 10 s window "
        "starts at :00, :10, ...), by the sample's source time.",
    )
    aggregates: list[Aggregate] = Field(
        default_factory=lambda: list(AGGREGATES),
        min_length=1,
        description="What each window row keeps: `last` (in `value`/`value_text`), `mean`, "
        "`min`, `max` (numeric samples only). The sample count is always kept.",
    )


class _DownsampleMode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    downsample: Downsample = Field(description="Window and aggregates of the tag's rows.")


# ``raw``: every applied sample is a row; ``{downsample: {...}}``: one row per window.
TagMode = Literal["raw"] | _DownsampleMode


class TelemetrySettings(BaseModel):
    """Which tag values go to the ``telemetry`` table, and how (raw or downsampled)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Write the telemetry table; false: predictions only.")
    assets: list[str] = Field(
        default_factory=list,
        description="Only the tags of these assets; default every asset's tags.",
    )
    default: TagMode = Field(
        "raw",
        description="Mode of every tag `tags:` does not name: `raw` (each applied sample) or "
        "`{downsample: {every_s: 10, aggregates: [last, mean, min, max]}}`.",
    )
    tags: dict[str, TagMode] = Field(
        default_factory=dict,
        description="Per tag, a mode other than `default`: the key is a tag name (that tag of "
        "every asset, e.g. `vibration`) or a tag id (`pump-01.vibration`, wins over the name).",
    )
    late_s: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="A downsampled window is written this long after it ended; a sample for "
        "a window already written is counted as `late_samples` and left out.",
    )

    def mode_of(self, tag: str, name: str) -> Literal["raw"] | Downsample:
        """The mode of tag id ``tag`` (``asset.name``)."""
        mode = self.tags.get(tag, self.tags.get(name, self.default))
        return "raw" if isinstance(mode, str) else mode.downsample


class FlushSettings(BaseModel):
    """When a spool segment is committed as Parquet files: whichever limit comes first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_file_mb: float = Field(
        128,
        gt=0,
        le=4096,
        description="Size of the Parquet files a commit aims for: a segment is sealed once its "
        "spool bytes (Arrow) reach this times the spool bytes per Parquet byte of the largest "
        "partition the table's last commit wrote (learned, kept across restarts; at most a "
        "quarter of max_spool_mb).",
    )
    max_age_s: float = Field(
        300,
        gt=0,
        le=86400,
        description="A segment is committed at the latest this long after its first row, "
        "however small (how stale the lake may be).",
    )


class OptimizeSettings(BaseModel):
    """Compaction of small files (Delta `optimize`), on a schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_s: float = Field(3600, gt=0, description="Seconds between two compactions of each table.")
    target_file_mb: float = Field(
        256, gt=0, le=4096, description="Size compaction aims for per file."
    )


class VacuumSettings(BaseModel):
    """Deletion of the files compaction replaced (Delta `vacuum`), on a schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every_s: float = Field(86400, gt=0, description="Seconds between two vacuums of each table.")
    retention_hours: int = Field(
        168,
        ge=0,
        description="Files removed from the table at least this long ago are deleted; readers "
        "of an older table version (time travel, a long query) need them until then.",
    )


class LakehouseSettings(Isa95Levels):
    """An ``outputs.<name>`` block with ``kind: lakehouse``: Delta Lake tables (telemetry,
    predictions, context) under one URI, staged in a local spool, committed exactly once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(
        description="Where the tables are: a local directory, or `s3://bucket/path`, "
        "`abfss://container@account.dfs.core.windows.net/path`, `gs://bucket/path`. Each table "
        "is a directory below it (`telemetry`, `predictions`, `context`).",
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Options of the object store, passed to delta-rs as they are (e.g. "
        "AWS_REGION, AWS_ACCESS_KEY_ID: ${LAKE_KEY_ID}); credentials belong in ${ENV} "
        "variables, never in the file. Never logged.",
    )
    spool_dir: str = Field(
        description="Local directory of the durable spool (segments not committed yet, one "
        "subdirectory per table). It must survive restarts; a relative path is relative to "
        "the gateway's working directory.",
    )
    max_spool_mb: float = Field(
        10240,
        gt=0,
        description="Largest spool: when the object store is away this long, predictions wait "
        "in the gateway's outbox and new telemetry rows are dropped (counted).",
    )
    telemetry: TelemetrySettings = Field(
        default_factory=TelemetrySettings,
        description="Tag values into the `telemetry` table: `{assets: [...], default: raw, "
        "tags: {vibration: {downsample: {every_s: 10}}}}`.",
    )
    flush: FlushSettings = Field(
        default_factory=FlushSettings,
        description="When staged rows are committed: `{target_file_mb: 128, max_age_s: 300}`.",
    )
    optimize: OptimizeSettings | None = Field(
        default_factory=OptimizeSettings,
        description="Compaction schedule `{every_s: 3600, target_file_mb: 256}`; null: never.",
    )
    vacuum: VacuumSettings | None = Field(
        default_factory=VacuumSettings,
        description="Vacuum schedule `{every_s: 86400, retention_hours: 168}`; null: never.",
    )
    batch_size: int = Field(
        1000,
        ge=1,
        le=10000,
        description="Predictions per delivery from the gateway's outbox (each of a different "
        "asset): one spool append and one fsync each.",
    )
    initial_backoff_s: float = Field(
        1.0, gt=0, description="First wait after a failed commit; doubles per failure."
    )
    max_backoff_s: float = Field(60.0, gt=0, description="Cap of the wait between commit tries.")

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the uri is empty: give a directory or an s3/abfss/gs URI")
        scheme = urlsplit(value).scheme.lower()
        # "C:\\lake" parses with scheme "c": a one-letter scheme is a drive.
        if len(scheme) > 1 and scheme not in _SCHEMES:
            raise ValueError(
                f"scheme {scheme!r} is not an object store delta-rs writes to: use a local "
                f"directory or one of {', '.join(s + '://' for s in _SCHEMES)}"
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.initial_backoff_s > self.max_backoff_s:
            raise ValueError(
                f"initial_backoff_s ({self.initial_backoff_s:g}) is above max_backoff_s "
                f"({self.max_backoff_s:g}): raise max_backoff_s or lower initial_backoff_s"
            )
        return self
