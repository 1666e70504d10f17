"""The tables' Arrow schemas and the rows of each: a prediction's JSON body (what the outbox
keeps) and its row, tag readings and downsampled windows as telemetry rows.

Column-wise builders: a second of telemetry at 2,000 assets x 5 tags is 10,000 rows, and one
``pa.array`` per column costs a fraction of a list of dicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.json as pj  # type: ignore[import-untyped]

from bridge.types import Prediction, TagValue, Trigger

__all__ = [
    "BODY_FORMAT",
    "PREDICTIONS",
    "TIMESTAMP",
    "TelemetryColumns",
    "decode_prediction",
    "encode_prediction",
    "predictions_from_bodies",
    "predictions_table",
    "telemetry_schema",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
_CONTRIBUTION = pa.struct(
    [
        ("feature", pa.string()),
        ("value", pa.float64()),
        ("baseline", pa.float64()),
        ("effect", pa.float64()),
    ]
)
# The key a body of ours carries: a drift alert (the core's own body) has none.
BODY_FORMAT = "lakehouse"

PREDICTIONS = pa.schema(
    [
        ("date", pa.date32()),
        ("time", TIMESTAMP),
        ("id", pa.string()),
        ("seq", pa.int64()),
        ("gateway_id", pa.string()),
        ("asset", pa.string()),
        ("model", pa.string()),
        ("version", pa.string()),
        ("sha256", pa.string()),
        ("label", pa.string()),
        ("value", pa.float64()),
        ("score", pa.float64()),
        ("quality", pa.string()),
        ("reason", pa.string()),
        ("explanation", pa.string()),
        ("contributions", pa.list_(_CONTRIBUTION)),
        ("drift_score", pa.float64()),
        ("input_age_s", pa.float64()),
        ("historical", pa.bool_()),
    ]
)

_TELEMETRY_BASE = [
    ("date", pa.date32()),
    ("line", pa.string()),
    ("time", TIMESTAMP),
    ("received_time", TIMESTAMP),
    ("asset", pa.string()),
    ("tag", pa.string()),
    ("value", pa.float64()),
    ("value_text", pa.string()),
    ("unit", pa.string()),
    ("quality", pa.string()),
    ("reason", pa.string()),
]
# Only a table some tag of which is downsampled has them (added by schema evolution the first
# time a mapping downsamples a tag).
_TELEMETRY_WINDOW = [
    ("window_s", pa.float64()),
    ("count", pa.int64()),
    ("mean", pa.float64()),
    ("min", pa.float64()),
    ("max", pa.float64()),
]


def telemetry_schema(windows: bool) -> pa.Schema:
    return pa.schema(_TELEMETRY_BASE + (_TELEMETRY_WINDOW if windows else []))


# One encoder for every body: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# The fields of a body as the bulk parser reads them: ``time`` stays epoch seconds until the
# whole column is converted; ``lakehouse`` tells our bodies from any other.
_BODY = pa.schema(
    [
        (BODY_FORMAT, pa.int64()),
        ("time", pa.float64()),
        *(f for f in PREDICTIONS if f.name not in ("date", "time")),
    ]
)

_PARSE = pj.ParseOptions(explicit_schema=_BODY, unexpected_field_behavior="ignore")


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def encode_prediction(event: Trigger, gateway_id: str) -> str:
    """The row of one prediction as JSON (the outbox keeps it until the spool has it)."""
    p: Prediction = event.prediction
    value = p.value
    body: dict[str, Any] = {
        BODY_FORMAT: 1,
        "id": p.id,
        "seq": p.seq,
        "gateway_id": gateway_id,
        "asset": p.asset,
        "model": p.model,
        "version": p.version,
        "sha256": p.sha256,
        "label": value if isinstance(value, str) else None,
        "value": None if isinstance(value, str) or value is None else _finite(float(value)),
        "score": _finite(p.score),
        "quality": p.quality.label,
        "reason": p.reason,
        "time": p.timestamp,
        "drift_score": _finite(p.drift_score),
        "input_age_s": _finite(p.input_age_s),
        "historical": p.historical,
    }
    if p.explanation is not None:
        body["explanation"] = p.explanation.reason
        body["contributions"] = [
            {
                "feature": c.feature,
                "value": _finite(c.value),
                "baseline": _finite(c.baseline),
                "effect": _finite(c.effect),
            }
            for c in p.explanation.top
        ]
    return _ENCODER.encode(body)


def decode_prediction(body: str) -> dict[str, Any] | None:
    """The row fields of a body ``encode_prediction`` made; None for any other body (a drift
    alert, which the core sends with its own body)."""
    fields = json.loads(body)
    if not isinstance(fields, dict) or fields.get(BODY_FORMAT) != 1:
        return None
    return fields


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _day(seconds: float) -> int:
    return math.floor(seconds / 86400)


def predictions_from_bodies(bodies: Sequence[str]) -> pa.Table | None:
    """The rows of a batch of bodies ``encode_prediction`` made, parsed in one pass by Arrow's
    JSON reader (no Python object per row); None when some body is not one of ours (a drift
    alert, a body that does not parse): the caller then decodes them one by one."""
    if not bodies:
        return None
    data = "\n".join(bodies).encode()
    try:
        parsed = pj.read_json(
            pa.py_buffer(data),
            # One block for the batch, one thread: a delivery is a few MB at most.
            read_options=pj.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=_PARSE,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # A body holding a line break or two objects would shift the rows: then one by one.
    if parsed.num_rows != len(bodies):
        return None
    ours = parsed[BODY_FORMAT]
    if ours.null_count or not pc.all(pc.equal(ours, 1)).as_py():
        return None
    times = parsed["time"]
    if times.null_count:
        return None
    columns = [_dates_of(times), _timestamps_of(times)]
    columns += [parsed[f.name] for f in PREDICTIONS if f.name not in ("date", "time")]
    return pa.table(columns, schema=PREDICTIONS)


def predictions_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Decoded bodies (``decode_prediction``) as a table of ``PREDICTIONS``."""
    times = [float(r["time"]) for r in rows]

    def col(key: str) -> list[Any]:
        return [r.get(key) for r in rows]

    return pa.table(
        [
            pa.array([_day(t) for t in times], pa.date32()),
            pa.array([_micros(t) for t in times], TIMESTAMP),
            pa.array(col("id"), pa.string()),
            pa.array(col("seq"), pa.int64()),
            pa.array(col("gateway_id"), pa.string()),
            pa.array(col("asset"), pa.string()),
            pa.array(col("model"), pa.string()),
            pa.array(col("version"), pa.string()),
            pa.array(col("sha256"), pa.string()),
            pa.array(col("label"), pa.string()),
            pa.array(col("value"), pa.float64()),
            pa.array(col("score"), pa.float64()),
            pa.array(col("quality"), pa.string()),
            pa.array(col("reason"), pa.string()),
            pa.array(col("explanation"), pa.string()),
            pa.array(col("contributions"), pa.list_(_CONTRIBUTION)),
            pa.array(col("drift_score"), pa.float64()),
            pa.array(col("input_age_s"), pa.float64()),
            pa.array(col("historical"), pa.bool_()),
        ],
        schema=PREDICTIONS,
    )


def split_value(value: TagValue) -> tuple[float | None, str | None]:
    """A tag value as (number, text): booleans and numbers are numbers (true = 1), text is
    text; NaN and infinities are no number."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return None, value
    number = float(value)
    return (number if math.isfinite(number) else None), None


def _timestamps_of(floats: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Epoch seconds (double) -> ``timestamp[us, UTC]`` (rounded to the microsecond)."""
    return pc.cast(pc.round(pc.multiply(floats, 1_000_000.0)), pa.int64()).cast(TIMESTAMP)


def _dates_of(floats: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Epoch seconds (double) -> their UTC day (``date32``)."""
    return pc.cast(pc.floor(pc.divide(floats, 86400.0)), pa.int32()).cast(pa.date32())


def _timestamps(seconds: list[float | None]) -> pa.Array:
    return _timestamps_of(pa.array(seconds, pa.float64()))


def _dates(seconds: list[float]) -> pa.Array:
    return _dates_of(pa.array(seconds, pa.float64()))


@dataclass(slots=True)
class TelemetryColumns:
    """Telemetry rows being collected, column by column (``table()`` makes the Arrow table;
    times stay epoch seconds until then, converted for the whole column at once)."""

    windows: bool
    line: list[str] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    received_time: list[float | None] = field(default_factory=list)
    asset: list[str] = field(default_factory=list)
    tag: list[str] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    value_text: list[str | None] = field(default_factory=list)
    unit: list[str | None] = field(default_factory=list)
    quality: list[str] = field(default_factory=list)
    reason: list[str | None] = field(default_factory=list)
    window_s: list[float | None] = field(default_factory=list)
    count: list[int | None] = field(default_factory=list)
    mean: list[float | None] = field(default_factory=list)
    min: list[float | None] = field(default_factory=list)
    max: list[float | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.time)

    def add(
        self,
        line: str,
        time: float,
        received: float | None,
        asset: str,
        tag: str,
        value: TagValue,
        unit: str | None,
        quality: str,
        reason: str,
        window: tuple[float, int, float | None, float | None, float | None] | None = None,
    ) -> None:
        # The common case first: a finite float is kept as it is.
        if isinstance(value, float) and math.isfinite(value):
            self.value.append(value)
            self.value_text.append(None)
        else:
            number, text = split_value(value)
            self.value.append(number)
            self.value_text.append(text)
        self.line.append(line)
        self.time.append(time)
        self.received_time.append(received)
        self.asset.append(asset)
        self.tag.append(tag)
        self.unit.append(unit)
        self.quality.append(quality)
        self.reason.append(reason or None)
        if self.windows:
            every, count, mean, low, high = window if window is not None else (None,) * 5
            self.window_s.append(every)
            self.count.append(count)
            self.mean.append(mean)
            self.min.append(low)
            self.max.append(high)

    def table(self) -> pa.Table:
        schema = telemetry_schema(self.windows)
        columns: list[Iterable[Any]] = [
            _dates(self.time),
            pa.array(self.line, pa.string()),
            _timestamps(self.time),  # type: ignore[arg-type]
            _timestamps(self.received_time),
            pa.array(self.asset, pa.string()),
            pa.array(self.tag, pa.string()),
            pa.array(self.value, pa.float64()),
            pa.array(self.value_text, pa.string()),
            pa.array(self.unit, pa.string()),
            pa.array(self.quality, pa.string()),
            pa.array(self.reason, pa.string()),
        ]
        if self.windows:
            columns += [
                pa.array(self.window_s, pa.float64()),
                pa.array(self.count, pa.int64()),
                pa.array(self.mean, pa.float64()),
                pa.array(self.min, pa.float64()),
                pa.array(self.max, pa.float64()),
            ]
        return pa.table(columns, schema=schema)
