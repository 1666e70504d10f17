"""The spool of one table: appends survive a reopen, a torn tail (an append a crash cut) is cut
back to the last whole batch, segment numbers never repeat, and sealing by size or age."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa

from bridge.connectors.lakehouse.spool import TableSpool, read_segment

SCHEMA = pa.schema([("id", pa.string()), ("n", pa.int64())])


def _rows(*ns: int) -> pa.Table:
    return pa.table({"id": [f"r{n}" for n in ns], "n": list(ns)}, schema=SCHEMA)


def test_a_reopened_spool_seals_what_it_finds_and_numbers_on(tmp_path: Path) -> None:
    spool = TableSpool(tmp_path, "t")
    spool.append(_rows(1, 2))
    spool.append(_rows(3))
    # The process dies without sealing: a new spool finds the segment, whole.
    again = TableSpool(tmp_path, "t")
    (segment,) = again.sealed()
    assert (segment.seq, segment.rows) == (1, 3)
    table = read_segment(segment.path)
    assert table is not None and table["n"].to_pylist() == [1, 2, 3]
    again.append(_rows(4))
    again.seal()
    assert [s.seq for s in again.sealed()] == [1, 2]


def test_a_torn_tail_is_cut_back_to_the_last_whole_batch(tmp_path: Path) -> None:
    spool = TableSpool(tmp_path, "t")
    spool.append(_rows(1))
    spool.append(_rows(2, 3))
    path = tmp_path / "t" / "00000000000001.arrows"
    os.truncate(path, path.stat().st_size - 7)  # the second append was cut by a crash
    again = TableSpool(tmp_path, "t")
    (segment,) = again.sealed()
    assert segment.rows == 1
    table = read_segment(segment.path)
    assert table is not None and table["n"].to_pylist() == [1]
    assert segment.size == path.stat().st_size


def test_numbers_are_never_handed_out_twice_after_every_segment_left(tmp_path: Path) -> None:
    spool = TableSpool(tmp_path, "t")
    spool.append(_rows(1))
    spool.seal()
    (segment,) = spool.sealed()
    spool.forget(segment)
    assert not list((tmp_path / "t").glob("*.arrows"))
    again = TableSpool(tmp_path, "t")
    again.append(_rows(2))
    again.seal()
    assert [s.seq for s in again.sealed()] == [2]


def test_sealed_by_size_by_age_and_by_a_new_schema(tmp_path: Path) -> None:
    spool = TableSpool(tmp_path, "t")
    spool.append(_rows(1))
    assert not spool.seal_due(max_bytes=1 << 20, max_age_s=60)
    assert spool.seal_due(max_bytes=10, max_age_s=60)
    spool.append(_rows(2))
    time.sleep(0.05)
    assert spool.seal_due(max_bytes=1 << 20, max_age_s=0.01)
    spool.append(_rows(3))
    spool.append(_rows(4).append_column("extra", pa.array(["e"])))
    spool.seal()
    assert [s.rows for s in spool.sealed()] == [1, 1, 1, 1]
    assert spool.backlog()[:2] == (4, 4)


def test_a_kept_segment_moves_out_of_the_spool(tmp_path: Path) -> None:
    spool = TableSpool(tmp_path, "t")
    spool.append(_rows(1))
    spool.seal()
    (segment,) = spool.sealed()
    spool.forget(segment, keep_in=tmp_path / "t" / "done")
    assert (tmp_path / "t" / "done" / segment.path.name).exists()
    assert TableSpool(tmp_path, "t").sealed() == []
