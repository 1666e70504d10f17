"""The audit ledger on a real store (SQLite and PostgreSQL): entries chain, and every way of
tampering with the rows by hand is found and named by the verification.

- Appends make one chain: seq 1, 2, 3, ..., each ``prev_hash`` the hash before, each ``hash``
  the sha256 of what is stored; an entry appended in a transaction that rolls back leaves no
  gap.
- Tampering with SQL, each reported at the entry it touched: (a) a field edited, (b) a field
  edited and the entry's hash made again (found at the next entry, or by the checkpoint that
  signed it; a whole rewritten tail only by the checkpoint), (c) an entry deleted, (d) two
  rows' seq swapped, (e) the tail cut after a checkpoint signed it; entries cut from the
  unsigned tail show at the next append. (f) A checkpoint signed by another key is refused
  when the keys are pinned; a checkpoint edited fails its signature.
- Four writers with their own store connections append 50 entries each at the same time: one
  valid chain of 200, seq 1..200 with no gap. The head row deleted by hand does not stop
  appends.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text, update
from stores import BACKENDS, PG_URL, pg_schema, temp_store

from bridge.audit.checkpoints import sign_checkpoint
from bridge.audit.verify import Verification, verify_chain
from bridge.ed25519 import public_key_text
from bridge.errors import StoreError
from bridge.store.audit import AuditEntryRow, AuditHeadRow, AuditRepository, append_entry
from bridge.store.auditchain import (
    GENESIS,
    AuditEntry,
    NewAuditEntry,
    canonical,
    entry_hash,
    format_time,
)
from bridge.store.db import Store, open_store

T0 = 1_780_000_000.0  # 2026-05-28: entries are written at T0 + i, so times are distinct


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "audit.db", prefix="bridge_audit") as s:
        yield s


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def change(i: int) -> NewAuditEntry:
    return NewAuditEntry(
        actor=f"key:{i % 3:012d}",
        channel="rest",
        action="model.activated" if i % 2 else "apikey.created",
        subject=f"model:pump/{i}",
        before={"state": "registered", "n": i, "ratio": 0.1 * i},
        after={"state": "active", "note": "Druck über Grenzwert", "tags": [i, None, True]},
        reason=f"change {i}",
    )


def fill(repo: AuditRepository, n: int, start: int = 1) -> list[AuditEntry]:
    return [repo.append(change(i), at=T0 + i) for i in range(start, start + n)]


def sign(repo: AuditRepository, key: Ed25519PrivateKey) -> int:
    """A checkpoint of the chain's end, as the gateway makes it; returns the seq it signs."""
    head = repo.head()
    assert head is not None
    seq, hash_ = head
    repo.add_checkpoint(
        sign_checkpoint(key, seq, hash_, format_time(round(T0 * 1e6) + seq), repo.gateway)
    )
    return seq


def verify(repo: AuditRepository, keys: Sequence[str] | None = None) -> Verification:
    checkpoints = repo.checkpoints()
    return verify_chain(repo.iter_entries(), checkpoints, keys)


def sql(store: Store, statement: str, **params: Any) -> None:
    """Tampering by hand: one statement, committed, outside the ledger's code."""
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def first(result: Verification) -> tuple[int, str]:
    assert not result.ok, "the tampering was not found"
    problem = result.first_problem
    assert problem is not None
    return problem.seq, problem.kind


def head_hash(repo: AuditRepository) -> str:
    head = repo.head()
    assert head is not None
    return head[1]


def pinned(key: Ed25519PrivateKey) -> list[str]:
    return [public_key_text(key.public_key())]


# -- a clean chain ------------------------------------------------------------------------------


def test_appends_make_one_chain_and_it_verifies(store: Store, key: Ed25519PrivateKey) -> None:
    repo = AuditRepository(store, "gw-a")
    assert verify(repo).ok and repo.head() is None
    written = fill(repo, 12)
    assert [e.seq for e in written] == list(range(1, 13))
    assert written[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(written):
        assert after.prev_hash == before.hash
    read = list(repo.iter_entries(batch=5))  # across pages
    assert read == written  # what was hashed is what is stored, JSON and all
    for entry in read:
        assert entry.hash == entry_hash(entry.fields())
        assert entry.gateway == "gw-a"
    assert read[2].at == "2026-05-28T20:26:43.000000Z"
    assert read[2].after == {
        "state": "active",
        "note": "Druck über Grenzwert",
        "tags": [3, None, True],
    }

    # The canonical JSON: sorted keys, no blanks, UTF-8 (not \\u escapes), as documented.
    encoded = canonical(read[2].fields()).decode("utf-8")
    assert encoded.startswith('{"action":"model.activated","actor":"key:000000000000"')
    assert '"after":{"note":"Druck über Grenzwert","state":"active","tags":[3,null,true]}' in (
        encoded
    )

    assert sign(repo, key) == 12
    fill(repo, 3, start=13)
    result = verify(repo, pinned(key))
    assert result.ok, result.to_json()
    assert (result.entries, result.last_seq, result.last_hash) == (15, 15, head_hash(repo))
    assert (result.checkpoints, result.last_checkpoint_seq, result.unsigned_tail) == (1, 12, 3)
    assert result.to_json()["first_problem"] is None


def test_an_entry_rolled_back_with_its_change_leaves_no_gap(store: Store) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 3)

    class Refused(Exception):
        pass

    with pytest.raises(Refused), store.sessions.begin() as session:
        append_entry(session, "gw-a", change(99), at=T0 + 99)
        raise Refused  # the change it records failed: neither is kept
    assert repo.count() == 3
    nxt = repo.append(change(4), at=T0 + 4)
    assert nxt.seq == 4
    assert verify(repo).ok


# -- tampering ----------------------------------------------------------------------------------

EDITS = {
    "actor": ("UPDATE audit_entries SET actor = 'key:intruder' WHERE seq = :k", {}),
    "time": ("UPDATE audit_entries SET at_us = at_us - 3600000000 WHERE seq = :k", {}),
    "after": ("UPDATE audit_entries SET after = :v WHERE seq = :k", {"v": '{"state":"retired"}'}),
    "reason": ("UPDATE audit_entries SET reason = '' WHERE seq = :k", {}),
    "gateway": ("UPDATE audit_entries SET gateway = 'gw-b' WHERE seq = :k", {}),
}


@pytest.mark.parametrize("field", EDITS)
def test_a_field_edited_is_found_at_that_entry(store: Store, field: str) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    statement, params = EDITS[field]
    sql(store, statement, k=6, **params)
    result = verify(repo)
    assert first(result) == (6, "changed")
    assert [p.seq for p in result.problems] == [6]  # one change, one problem
    assert "entry 6 was changed" in result.problems[0].message


def _rehash(store: Store, seqs: Sequence[int], reason: str) -> None:
    """What a careful intruder does: change entry ``seqs[0]``, then make its hash (and that of
    each later one in ``seqs``, relinked) match again."""
    repo = AuditRepository(store, "reader")
    by_seq = {e.seq: e for e in repo.iter_entries()}
    prev = by_seq[seqs[0]].prev_hash
    for seq in seqs:
        fields = by_seq[seq].fields()
        fields["prev_hash"] = prev
        if seq == seqs[0]:
            fields["reason"] = reason
        digest = entry_hash(fields)
        with store.sessions.begin() as s:
            s.execute(
                update(AuditEntryRow)
                .where(AuditEntryRow.seq == seq)
                .values(reason=fields["reason"], prev_hash=prev, hash=digest)
            )
        prev = digest


def test_an_entry_edited_and_rehashed_is_found_at_the_next(store: Store) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    _rehash(store, [4], "nothing to see")
    result = verify(repo)
    assert first(result) == (5, "broken_link")
    assert "entry 5 does not follow the entry before it" in result.problems[0].message
    assert "changed and its hash made again" in result.problems[0].message
    assert next(e for e in repo.iter_entries() if e.seq == 4).reason == "nothing to see"


def test_the_last_entry_edited_and_rehashed_is_found_by_its_checkpoint(
    store: Store, key: Ed25519PrivateKey
) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    sign(repo, key)
    _rehash(store, [10], "nothing to see")  # no later entry links to it
    result = verify(repo, pinned(key))
    assert first(result) == (10, "changed")
    assert "entry 10 is not the one the checkpoint at entry 10" in result.problems[0].message


def test_a_rewritten_tail_is_found_by_a_pinned_checkpoint_only(
    store: Store, key: Ed25519PrivateKey
) -> None:
    """Entries 4..10 rewritten and relinked: the chain itself is consistent again; the trusted
    checkpoint at 10 still holds the old hash. The intruder's own checkpoint does not help him
    once the keys are pinned."""
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    sign(repo, key)
    _rehash(store, list(range(4, 11)), "rewritten")
    assert first(verify(repo, pinned(key))) == (10, "changed")

    sql(store, "DELETE FROM audit_checkpoints")
    intruder = Ed25519PrivateKey.generate()
    sign(repo, intruder)
    assert verify(repo).ok  # unpinned: a valid signature by anyone counts
    result = verify(repo, pinned(key))
    assert first(result) == (10, "untrusted_key")
    assert public_key_text(intruder.public_key()) in result.problems[0].message
    assert result.checkpoints == 0 and result.unsigned_tail == 10


def test_an_entry_deleted_is_found_at_its_seq(store: Store) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    sql(store, "DELETE FROM audit_entries WHERE seq = :k", k=7)
    result = verify(repo)
    assert first(result) == (7, "missing")
    assert "entry 7 missing (deleted) before entry 8" in result.problems[0].message
    assert result.entries == 9


def test_two_rows_with_their_seq_swapped_are_found(store: Store) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    # Through a free seq: the primary key forbids two rows with one seq even for a moment.
    sql(store, "UPDATE audit_entries SET seq = -1 WHERE seq = 3")
    sql(store, "UPDATE audit_entries SET seq = 3 WHERE seq = 8")
    sql(store, "UPDATE audit_entries SET seq = 8 WHERE seq = -1")
    result = verify(repo)
    assert first(result) == (3, "changed")
    # Each moved row fails its own hash, and the entry after it no longer links to it.
    kinds = [(p.seq, p.kind) for p in result.problems]
    assert kinds == [(3, "changed"), (4, "broken_link"), (8, "changed"), (9, "broken_link")]


def test_a_tail_cut_after_its_checkpoint_is_truncated(store: Store, key: Ed25519PrivateKey) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    assert sign(repo, key) == 10
    sql(store, "DELETE FROM audit_entries WHERE seq > 7")
    result = verify(repo, pinned(key))
    assert first(result) == (10, "truncated")
    assert "the chain ends at entry 7" in result.problems[0].message
    assert result.last_seq == 7


def test_a_cut_in_the_unsigned_tail_shows_at_the_next_append(
    store: Store, key: Ed25519PrivateKey
) -> None:
    """What no checkpoint covers can be cut without trace (``unsigned_tail`` says how much):
    until the next entry, which continues from where the chain really ended."""
    repo = AuditRepository(store, "gw-a")
    fill(repo, 10)
    sign(repo, key)
    fill(repo, 3, start=11)
    assert verify(repo, pinned(key)).unsigned_tail == 3
    sql(store, "DELETE FROM audit_entries WHERE seq > 11")
    assert verify(repo, pinned(key)).ok
    assert repo.append(change(14), at=T0 + 14).seq == 14
    assert first(verify(repo, pinned(key))) == (12, "missing")


def test_a_checkpoint_by_another_key_is_refused_when_keys_are_pinned(
    store: Store, key: Ed25519PrivateKey
) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 5)
    sign(repo, key)
    fill(repo, 5, start=6)
    other = Ed25519PrivateKey.generate()
    sign(repo, other)
    assert verify(repo).ok
    result = verify(repo, pinned(key))
    assert first(result) == (10, "untrusted_key")
    assert result.last_checkpoint_seq == 5 and result.checkpoints == 1
    # Both keys trusted (a fleet): fine.
    both = [*pinned(key), *pinned(other)]
    assert verify(repo, both).ok


def test_a_checkpoint_edited_fails_its_signature(store: Store, key: Ed25519PrivateKey) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 6)
    sign(repo, key)
    _rehash(store, [6], "rewritten")
    sql(store, "UPDATE audit_checkpoints SET hash = :h", h=head_hash(repo))
    assert first(verify(repo, pinned(key))) == (6, "bad_signature")


# -- writers at the same time -------------------------------------------------------------------


def _stores(backend: str, tmp_path: Path, schema: str, n: int) -> list[Store]:
    """``n`` stores on one database, each with its own connections, as n gateways have."""
    if backend == "sqlite":
        return [open_store(f"sqlite:///{tmp_path / 'fleet.db'}") for _ in range(n)]
    return [open_store(PG_URL, schema=schema) for _ in range(n)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_four_writers_at_once_make_one_chain_with_no_gap(backend: str, tmp_path: Path) -> None:
    writers, each = 4, 50
    on_pg = backend == "postgresql"
    with pg_schema("bridge_audit") if on_pg else contextlib.nullcontext("") as schema:
        stores = _stores(backend, tmp_path, schema, writers)
        try:
            start = threading.Barrier(writers, timeout=30)

            def write(i: int) -> list[int]:
                repo = AuditRepository(stores[i], f"gw-{i}")
                start.wait()  # all at once, not one after another
                return [repo.append(change(n)).seq for n in range(each)]

            with ThreadPoolExecutor(writers) as pool:
                futures = [pool.submit(write, i) for i in range(writers)]
                got = [f.result(timeout=90) for f in futures]
            seqs = sorted(s for one in got for s in one)
            assert seqs == list(range(1, writers * each + 1))
            for one in got:
                assert one == sorted(one)  # each writer's entries in its own order
            repo = AuditRepository(stores[0], "reader")
            entries = list(repo.iter_entries())
            assert [e.seq for e in entries] == list(range(1, writers * each + 1))
            for i in range(writers):
                assert sum(e.gateway == f"gw-{i}" for e in entries) == each
            result = verify(repo)
            assert result.ok, result.to_json()
            assert result.entries == writers * each
        finally:
            for s in stores:
                s.dispose()


def test_a_head_row_deleted_by_hand_does_not_stop_appends(store: Store) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 5)
    sql(store, "DELETE FROM audit_head")
    assert repo.append(change(6), at=T0 + 6).seq == 6  # continues from the last entry
    assert repo.append(change(7), at=T0 + 7).seq == 7
    with store.sessions() as s:
        assert s.execute(select(AuditHeadRow.seq)).scalars().all() == [7]
    assert verify(repo).ok


def test_a_store_that_cannot_be_written_says_so(store: Store) -> None:
    repo = AuditRepository(store, "gw-a")
    fill(repo, 1)
    sql(store, "DROP TABLE audit_head")
    with pytest.raises(StoreError, match="cannot append to the audit ledger"):
        repo.append(change(2))
