"""The ``context`` table: what the rows of the other tables refer to, slowly changing.

Rows of three kinds: ``asset`` (its ISA-95 levels, template, description), ``tag`` (asset, name,
unit and what the mapping says of it: scale, offset, clamp, source, address) and ``model`` (a
model version serving an asset: version, sha256, labels, units, its state in the model registry
and the mapping revision it was served under). Versioned as a type 2
slowly changing dimension: a row is valid from ``valid_from`` until ``valid_to`` (null while
current). Each write compares the current rows with the gateway's state by a digest of their
attributes and, in one MERGE commit, closes the rows that changed or went away and inserts
their new versions: an unchanged gateway writes nothing, and a write repeated after a crash
finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
from deltalake import DeltaTable, write_deltalake

from bridge.isa95 import Isa95Levels
from bridge.types import AssetInfo, ModelStatus, PredictionSlot, TagInfo, TagReading

from .rows import TIMESTAMP

__all__ = ["CONTEXT", "ContextChange", "Facts", "context_rows", "write_context"]

CONTEXT = pa.schema(
    [
        ("kind", pa.string()),
        ("key", pa.string()),
        ("asset", pa.string()),
        ("enterprise", pa.string()),
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("tag", pa.string()),
        ("unit", pa.string()),
        ("model", pa.string()),
        ("version", pa.string()),
        ("sha256", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("inputs", pa.list_(pa.string())),
        ("state", pa.string()),
        ("template", pa.string()),
        ("description", pa.string()),
        ("scale", pa.float64()),
        ("offset", pa.float64()),
        ("clamp_low", pa.float64()),
        ("clamp_high", pa.float64()),
        ("source", pa.string()),
        ("address", pa.string()),
        ("source_unit", pa.string()),
        ("revision", pa.string()),
        ("digest", pa.string()),
        ("valid_from", TIMESTAMP),
        ("valid_to", TIMESTAMP),
    ]
)
_ATTRIBUTES = [f.name for f in CONTEXT if f.name not in ("digest", "valid_from", "valid_to")]


@dataclass(frozen=True, slots=True)
class ContextChange:
    closed: int
    inserted: int


@dataclass(frozen=True, slots=True)
class Facts:
    """What the gateway knows of the plant beyond the slots (``DestinationContext``): the
    assets' templates, the tags' metadata, the mapping revision; and what the model registry
    says serves (model name -> ``ModelStatus``; none known yet: the slots' versions, active)."""

    assets: Sequence[AssetInfo] = ()
    tags: Sequence[TagInfo] = ()
    revision: str = ""
    statuses: Mapping[str, ModelStatus] | None = None


def context_rows(
    levels: Isa95Levels,
    slots: Sequence[PredictionSlot],
    tags: Iterable[TagReading],
    facts: Facts = Facts(),
) -> list[dict[str, object]]:
    """The current rows (without validity) of the gateway's assets, tags and model versions."""
    rows: list[dict[str, object]] = []
    infos = {t.tag: t for t in facts.tags}
    readings = {t.tag: t for t in tags if t.tag not in infos}  # tags only the feed showed
    about = {a.asset: a for a in facts.assets}
    assets = sorted(
        set(about)
        | {s.asset for s in slots}
        | {t.asset for t in infos.values()}
        | {r.asset for r in readings.values()}
    )
    for asset in assets:
        info = about.get(asset)
        rows.append(
            {
                "kind": "asset",
                "key": f"asset:{asset}",
                "asset": asset,
                "state": "present",
                "template": (info.template or None) if info else None,
                "description": (info.description or None) if info else None,
            }
        )
    for tag_id in sorted([*infos, *readings]):
        if tag_id in readings:
            r = readings[tag_id]
            rows.append(
                {
                    "kind": "tag",
                    "key": f"tag:{tag_id}",
                    "asset": r.asset,
                    "tag": r.name,
                    "unit": r.unit,
                }
            )
            continue
        t = infos[tag_id]
        rows.append(
            {
                "kind": "tag",
                "key": f"tag:{tag_id}",
                "asset": t.asset,
                "tag": t.name,
                "unit": t.unit or None,
                "description": t.description or None,
                "scale": t.scale,
                "offset": t.offset,
                "clamp_low": t.clamp[0] if t.clamp else None,
                "clamp_high": t.clamp[1] if t.clamp else None,
                "source": t.source,
                "address": t.address,
                "source_unit": t.source_unit or None,
            }
        )
    for s in sorted(slots, key=lambda s: (s.asset, s.model)):
        rows.extend(_model_rows(s, facts))
    for row in rows:
        row.update(levels.levels_of(str(row["asset"])))
        attributes = {k: row.get(k) for k in _ATTRIBUTES}
        row["digest"] = hashlib.sha256(
            json.dumps(attributes, sort_keys=True, default=str).encode()
        ).hexdigest()[:32]
    return rows


def _model_rows(s: PredictionSlot, facts: Facts) -> list[dict[str, object]]:
    """The version serving the slot (``active``) and the model's candidate, if any (``shadow``
    or ``canary``), under keys of their own: a promotion is a new version of each row."""
    common: dict[str, object] = {
        "kind": "model",
        "asset": s.asset,
        "model": s.model,
        "labels": list(s.labels),
        "unit": s.unit or None,
        "inputs": [f"{tag} [{unit}]" if unit else tag for tag, unit in s.input_units],
        "revision": facts.revision or None,
    }
    key = f"model:{s.asset}/{s.model}"
    status = facts.statuses.get(s.model) if facts.statuses is not None else None
    if status is None:
        return [{**common, "key": key, "version": s.version, "sha256": s.sha256, "state": "active"}]
    rows: list[dict[str, object]] = [
        {
            **common,
            "key": key,
            "version": status.active_version,
            "sha256": status.active_sha256,
            "state": "active",
        }
    ]
    if status.candidate_version:
        rows.append(
            {
                **common,
                "key": f"{key}/candidate",
                "version": status.candidate_version,
                "sha256": status.candidate_sha256,
                "state": status.candidate_mode or "candidate",
            }
        )
    return rows


def _table(rows: Sequence[dict[str, object]], now_us: int, merge_key: bool) -> pa.Table:
    columns = {
        name: [r.get(name) for r in rows] for name in CONTEXT.names if name not in ("valid_from",)
    }
    columns["valid_from"] = [now_us] * len(rows)
    columns["valid_to"] = [None] * len(rows)
    table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in CONTEXT}, schema=CONTEXT)
    if merge_key:
        keys = [r.get("merge_key") for r in rows]
        table = table.append_column("merge_key", pa.array(keys, pa.string()))
    return table


def write_context(
    path: str,
    storage_options: dict[str, str] | None,
    rows: Sequence[dict[str, object]],
    now_us: int,
) -> ContextChange:
    """Bring the table at ``path`` to ``rows`` (blocking; one commit, or none if equal)."""
    try:
        dt: DeltaTable | None = DeltaTable(path, storage_options=storage_options)
    except Exception as exc:
        if type(exc).__name__ != "TableNotFoundError":
            raise
        dt = None
    if dt is None:
        if rows:
            write_deltalake(
                path, _table(rows, now_us, False), mode="append", storage_options=storage_options
            )
        return ContextChange(0, len(rows))
    current_table = dt.to_pyarrow_table(columns=["key", "digest", "valid_to"])
    current_table = current_table.filter(pc.is_null(current_table["valid_to"]))
    current = dict(
        zip(
            current_table["key"].to_pylist(),
            current_table["digest"].to_pylist(),
            strict=True,
        )
    )
    wanted = {str(r["key"]): r for r in rows}
    changed = [k for k, r in wanted.items() if k in current and current[k] != r["digest"]]
    gone = [k for k in current if k not in wanted]
    new = [k for k in wanted if k not in current]
    if not (changed or gone or new):
        return ContextChange(0, 0)
    # A MERGE source with a merge key: rows to close match their current version by key,
    # rows to insert carry none and match nothing.
    source_rows: list[dict[str, object]] = [{"key": k, "merge_key": k} for k in (*changed, *gone)]
    source_rows += [{**wanted[k], "merge_key": None} for k in (*changed, *new)]
    source = _table(source_rows, now_us, True)
    inserts = {name: f"s.{name}" for name in CONTEXT.names}
    (
        dt.merge(
            source,
            predicate="t.key = s.merge_key AND t.valid_to IS NULL",
            source_alias="s",
            target_alias="t",
            # A table written before a column was added gets it (null in its older rows).
            merge_schema=True,
        )
        .when_matched_update(updates={"valid_to": "s.valid_from"})
        .when_not_matched_insert(updates=inserts, predicate="s.merge_key IS NULL")
        .execute()
    )
    return ContextChange(len(changed) + len(gone), len(changed) + len(new))
