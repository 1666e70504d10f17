"""The Delta Lake operations of the destination, through delta-rs (``deltalake``): blocking
calls, made by the committer in a worker thread, one table at a time.

Exactly once rests on Delta application transactions: each append commits, in the same
transaction as its files, ``(app_id, version = spool segment number)``; the table itself then
says which segments it holds (``committed``), however the gateway stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa  # type: ignore[import-untyped]
from deltalake import CommitProperties, DeltaTable, Schema, Transaction, write_deltalake
from deltalake.exceptions import TableNotFoundError

__all__ = ["Compaction", "DeltaTables", "SchemaConflictError"]


class SchemaConflictError(Exception):
    """Rows whose column has another type than the table's: refused (additive evolution only)."""

    def __init__(self, table: str, column: str, old: str, new: str) -> None:
        super().__init__(
            f"table {table!r}: column {column!r} is {old} in the table but {new} in the rows "
            "to write: a column's type is never changed (only new columns are added); the rows "
            "stay in the spool. Convert the table's column, or point `uri` at a new location"
        )
        self.table = table
        self.column = column


@dataclass(frozen=True, slots=True)
class Compaction:
    files_before: int
    files_after: int
    files_added: int
    files_removed: int


def _type_name(delta_type: object) -> str:
    """``string``, ``double`` ... for a primitive type, the type's JSON otherwise."""
    name = getattr(delta_type, "type", None)
    if isinstance(name, str) and name not in ("array", "struct", "map"):
        return name
    to_json = getattr(delta_type, "to_json", None)
    return str(to_json()) if callable(to_json) else str(delta_type)


def _local(uri: str) -> bool:
    scheme = urlsplit(uri).scheme.lower()
    return len(scheme) <= 1 or scheme == "file"


def _file_sizes(dt: DeltaTable) -> dict[str, int]:
    """The table's current files (path -> bytes)."""
    actions = pa.table(dt.get_add_actions(flatten=False))
    paths = actions["path"].to_pylist()
    sizes = actions["size_bytes"].to_pylist()
    return dict(zip(paths, sizes, strict=True))


class DeltaTables:
    """The tables under one URI (``<uri>/<table>``), with their partition columns."""

    def __init__(
        self, uri: str, storage_options: dict[str, str], partitions: dict[str, list[str]]
    ) -> None:
        self.uri = uri.rstrip("/")
        self._options = dict(storage_options) or None
        self._partitions = partitions
        self._open: dict[str, DeltaTable] = {}

    def path(self, table: str) -> str:
        return f"{self.uri}/{table}"

    def table(self, table: str) -> DeltaTable | None:
        """The table as of now (None if it does not exist yet)."""
        cached = self._open.get(table)
        try:
            if cached is not None:
                cached.update_incremental()
                return cached
            opened = DeltaTable(self.path(table), storage_options=self._options)
        except TableNotFoundError:
            self._open.pop(table, None)
            if _local(self.uri) and os.path.exists(os.path.join(self.path(table), "_delta_log")):
                # There is a log we cannot read: not "no table" (writing anew would repeat
                # committed segments), an error to retry.
                raise
            return None
        except Exception:
            self._open.pop(table, None)
            raise
        self._open[table] = opened
        return opened

    def committed(self, table: str, app_id: str) -> int | None:
        """The newest segment number ``app_id`` committed to ``table`` (None: none)."""
        dt = self.table(table)
        return None if dt is None else dt.transaction_version(app_id)

    def _current(self, table: str) -> DeltaTable | None:
        """The handle the committer refreshed at the start of its pass (``table``), kept
        current by the writes through it; opened if there is none."""
        cached = self._open.get(table)
        return cached if cached is not None else self.table(table)

    def check_schema(self, table: str, schema: pa.Schema) -> None:
        """Raise ``SchemaConflictError`` if a column of ``schema`` has another type in the table."""
        dt = self._current(table)
        if dt is None:
            return
        existing = {f.name: f.type for f in dt.schema().fields}
        for f in Schema.from_arrow(schema).fields:
            old = existing.get(f.name)
            if old is not None and str(old) != str(f.type):
                raise SchemaConflictError(table, f.name, _type_name(old), _type_name(f.type))

    def append(
        self,
        table: str,
        data: pa.Table,
        app_id: str,
        version: int,
        target_file_size: int,
        create: bool = False,
    ) -> list[tuple[str, int]]:
        """One commit: the rows and the transaction ``(app_id, version)``; new columns are
        added to the table's schema. Returns the Parquet files it added (path in the table,
        bytes).

        ``create``: the table was not found when the committer asked which segments it holds.
        Then (and whenever the table is not found now) the table is created with mode
        ``error``, which fails if a table is there after all: an object store answering "not
        found" for a table that exists makes the commit fail and be retried (asking again),
        never take a segment the table holds a second time. On an object store, creating
        version 0 is a put-if-absent (delta-rs needs conditional puts or a lock there anyway).
        """
        dt = None if create else self._current(table)
        before = _file_sizes(dt) if dt is not None else {}
        write_deltalake(
            dt if dt is not None else self.path(table),
            data,
            mode="append" if dt is not None else "error",
            partition_by=self._partitions.get(table) or None,
            schema_mode="merge",
            storage_options=self._options,
            target_file_size=target_file_size,
            commit_properties=CommitProperties(
                app_transactions=[Transaction(app_id, version)],
                custom_metadata={"bridge.segment": str(version), "bridge.app": app_id},
            ),
        )
        # A write through a handle brings it to the new version; a created table is opened.
        after = dt if dt is not None else self.table(table)
        if after is None:
            return []
        return [(path, size) for path, size in _file_sizes(after).items() if path not in before]

    def files(self, table: str) -> int:
        dt = self.table(table)
        return 0 if dt is None else len(dt.file_uris())

    def optimize(self, table: str, target_size: int) -> Compaction | None:
        dt = self.table(table)
        if dt is None:
            return None
        before = len(dt.file_uris())
        metrics = dt.optimize.compact(target_size=target_size)
        dt.update_incremental()
        return Compaction(
            before,
            len(dt.file_uris()),
            int(metrics.get("numFilesAdded", 0)),
            int(metrics.get("numFilesRemoved", 0)),
        )

    def vacuum(self, table: str, retention_hours: int) -> Sequence[str]:
        dt = self.table(table)
        if dt is None:
            return []
        return dt.vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False
        )

    def forget(self, table: str) -> None:
        """Drop the cached handle (after an error, the next call opens the table afresh)."""
        self._open.pop(table, None)
