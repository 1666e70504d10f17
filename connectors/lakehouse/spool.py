"""The durable local spool of one table: rows wait here, fsync'd, until their Delta commit.

A table's spool is a directory of numbered segments, each an Arrow IPC stream (a schema
message, then one record-batch message per append). ``append`` writes and fsyncs before it
returns, so an accepted row survives a kill -9. A segment is sealed by size or age (or when the
rows' schema changes) and committed as one Delta transaction whose application version is the
segment's number (``committer.py``): numbers only grow, also across restarts (the ``next``
file), so a committed segment is recognised by the table itself.

After a crash the open segment may end in a torn message (an append that never returned): it
is cut back to its last whole batch when the spool is opened, and every segment found then is
sealed (a stream cannot be appended to by a new writer).

Blocking file I/O: the destination calls these methods in worker threads; a lock guards the
open segment, which appends (event loop side) and seals (committer side) share.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]

__all__ = ["Segment", "TableSpool", "read_segment"]

_SUFFIX = ".arrows"
_DIGITS = 14


@dataclass(frozen=True, slots=True)
class Segment:
    """A sealed segment: committed in ``seq`` order."""

    seq: int
    path: Path
    rows: int
    size: int


def _name(seq: int) -> str:
    return f"{seq:0{_DIGITS}d}{_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    # A new or renamed file survives a power cut only once its directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The whole batches of a segment; stops at a torn tail (an append cut by a crash)."""
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            return  # not even its schema is whole: nothing in it was ever acknowledged
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, OSError):
                return


def read_segment(path: Path) -> pa.Table | None:
    """A segment's rows (None if it holds none)."""
    batches = list(_batches(path))
    if not batches:
        return None
    return pa.Table.from_batches(batches)


class _Open:
    """The segment appends go to."""

    def __init__(self, seq: int, path: Path, schema: pa.Schema) -> None:
        self.seq = seq
        self.path = path
        self.schema = schema
        self.file = open(path, "wb")  # noqa: SIM115 - held open across appends
        self.file.write(schema.serialize())
        self.rows = 0
        self.size = self.file.tell()
        self.opened = time.monotonic()


class TableSpool:
    """The spool of one table under ``root/<table>``."""

    def __init__(self, root: Path, table: str) -> None:
        self.table = table
        self.dir = root / table
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._open: _Open | None = None
        self._sealed: list[Segment] = []
        self._next = 1
        self._recover()

    # -- opening -----------------------------------------------------------------------------

    def _recover(self) -> None:
        seqs: list[int] = []
        for path in self.dir.glob(f"*{_SUFFIX}"):
            if path.stem.isdigit():
                seqs.append(int(path.stem))
            else:
                path.unlink()  # a rewrite cut short (below): its original is still there
        next_file = self.dir / "next"
        written = int(next_file.read_text()) if next_file.exists() else 1
        self._next = max([written, *(s + 1 for s in seqs)])
        for seq in sorted(seqs):
            segment = self._seal_found(seq, self.dir / _name(seq))
            if segment is not None:
                self._sealed.append(segment)

    def _seal_found(self, seq: int, path: Path) -> Segment | None:
        batches = list(_batches(path))
        rows = sum(b.num_rows for b in batches)
        if rows == 0:
            path.unlink()
            return None
        stream = pa.BufferOutputStream()
        with pa.ipc.new_stream(stream, batches[0].schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        whole = stream.getvalue()
        if whole.size < path.stat().st_size:
            # A torn tail: write the whole batches aside, then replace the segment with them.
            aside = path.with_name(path.name + ".tmp")
            with open(aside, "wb") as f:
                f.write(whole)
                f.flush()
                os.fsync(f.fileno())
            os.replace(aside, path)
            _fsync_dir(self.dir)
        return Segment(seq, path, rows, path.stat().st_size)

    # -- appending ---------------------------------------------------------------------------

    def append(self, table: pa.Table) -> int:
        """Write ``table``'s rows to the open segment and fsync; returns the bytes written. A
        table with another schema than the open segment's seals it first."""
        if table.num_rows == 0:
            return 0
        with self._lock:
            current = self._open
            if current is not None and not current.schema.equals(table.schema):
                self._seal_locked()
                current = None
            if current is None:
                current = self._start(table.schema)
            before = current.size
            f = current.file
            for batch in table.to_batches():
                f.write(batch.serialize())
            f.flush()
            os.fsync(f.fileno())
            current.size = f.tell()
            current.rows += table.num_rows
            return current.size - before

    def _start(self, schema: pa.Schema) -> _Open:
        seq = self._next
        self._next += 1
        # The next number is on disk before a segment carries this one: a spool whose every
        # segment was committed and deleted never hands out a number twice.
        marker = self.dir / "next.tmp"
        marker.write_text(str(self._next))
        with open(marker, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(marker, self.dir / "next")
        opened = _Open(seq, self.dir / _name(seq), schema)
        _fsync_dir(self.dir)
        self._open = opened
        return opened

    # -- sealing -----------------------------------------------------------------------------

    def seal_due(self, max_bytes: int, max_age_s: float) -> bool:
        """Seal the open segment when it reached ``max_bytes`` or ``max_age_s``."""
        with self._lock:
            current = self._open
            if current is None:
                return False
            if current.size < max_bytes and time.monotonic() - current.opened < max_age_s:
                return False
            self._seal_locked()
            return True

    def seal(self) -> None:
        with self._lock:
            self._seal_locked()

    def _seal_locked(self) -> None:
        current, self._open = self._open, None
        if current is None:
            return
        current.file.close()  # every append was fsync'd already
        if current.rows == 0:
            current.path.unlink()
            return
        self._sealed.append(Segment(current.seq, current.path, current.rows, current.size))

    # -- the committer's side ----------------------------------------------------------------

    def sealed(self) -> list[Segment]:
        with self._lock:
            return list(self._sealed)

    def forget(self, segment: Segment, keep_in: Path | None = None) -> None:
        """A committed segment leaves the spool: deleted, or moved to ``keep_in``."""
        with self._lock:
            self._sealed = [s for s in self._sealed if s.seq != segment.seq]
        if keep_in is None:
            segment.path.unlink(missing_ok=True)
        else:
            keep_in.mkdir(exist_ok=True)
            os.replace(segment.path, keep_in / segment.path.name)

    def close(self) -> None:
        """Seal the open segment (its rows are committed by the next run if not by this)."""
        self.seal()

    # -- figures -----------------------------------------------------------------------------

    @property
    def open_rows(self) -> int:
        current = self._open
        return 0 if current is None else current.rows

    def backlog(self) -> tuple[int, int, int]:
        """(segments, rows, bytes) not committed yet, the open segment included."""
        with self._lock:
            segments = len(self._sealed)
            rows = sum(s.rows for s in self._sealed)
            size = sum(s.size for s in self._sealed)
            if self._open is not None:
                segments += 1
                rows += self._open.rows
                size += self._open.size
            return segments, rows, size
