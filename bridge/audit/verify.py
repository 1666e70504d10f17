"""Walking the audit chain: every entry's hash, its link to the one before, the sequence with no
gap, and the signed checkpoints (which show a chain cut short after them)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bridge.store.auditchain import GENESIS, AuditCheckpoint, AuditEntry, entry_hash

from .checkpoints import signature_valid

__all__ = ["Problem", "Verification", "verify_chain"]


@dataclass(frozen=True, slots=True)
class Problem:
    seq: int  # the entry where the chain first breaks (for a checkpoint: the seq it signs)
    # changed | missing | out_of_order | broken_link | truncated | bad_signature | untrusted_key
    kind: str
    message: str

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, "kind": self.kind, "message": self.message}


@dataclass(slots=True)
class Verification:
    entries: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    @property
    def unsigned_tail(self) -> int:
        """Entries after the last valid checkpoint: a cut there cannot be told from the chain."""
        return max(0, self.last_seq - self.last_checkpoint_seq)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "checkpoints": self.checkpoints,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "unsigned_tail": self.unsigned_tail,
            "first_problem": None if self.first_problem is None else self.first_problem.to_json(),
            "problems": [p.to_json() for p in self.problems],
        }


_MAX_PROBLEMS = 100  # a wrecked chain reports its first breaks, not a million lines


def verify_chain(
    entries: Iterable[AuditEntry],
    checkpoints: Sequence[AuditCheckpoint],
    trusted_keys: Sequence[str] | None = None,
) -> Verification:
    """``entries`` in the order they are stored (seq order); ``trusted_keys``: base64 raw
    Ed25519 public keys whose checkpoints count (None: any key that signed validly, which
    proves the chain was not cut but not who signed it)."""
    result = Verification()
    hashes: dict[int, str] = {}
    wanted = {c.seq for c in checkpoints}
    expected_seq = 1
    prev_hash = GENESIS

    def problem(seq: int, kind: str, message: str) -> None:
        if len(result.problems) < _MAX_PROBLEMS:
            result.problems.append(Problem(seq, kind, message))

    for entry in entries:
        result.entries += 1
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                missing = (
                    f"entry {expected_seq}"
                    if entry.seq == expected_seq + 1
                    else f"entries {expected_seq}-{entry.seq - 1}"
                )
                problem(
                    expected_seq, "missing", f"{missing} missing (deleted) before entry {entry.seq}"
                )
            else:
                problem(
                    entry.seq,
                    "out_of_order",
                    f"entry {entry.seq} comes after entry {expected_seq - 1} (reordered or "
                    "repeated)",
                )
        computed = entry_hash(entry.fields())
        if computed != entry.hash:
            problem(
                entry.seq,
                "changed",
                f"entry {entry.seq} was changed after it was written (its hash does not match "
                "its content)",
            )
        elif entry.prev_hash != prev_hash:
            problem(
                entry.seq,
                "broken_link",
                f"entry {entry.seq} does not follow the entry before it (its prev_hash differs: "
                "that entry was changed and its hash made again, replaced, or entries were "
                "moved)",
            )
        prev_hash = entry.hash
        # An entry out of order (lower than expected) does not move the expectation on: the
        # entries after it are judged against the highest seq seen, not each flagged in turn.
        expected_seq = max(expected_seq, entry.seq + 1)
        result.last_seq = max(result.last_seq, entry.seq)
        result.last_hash = entry.hash
        if entry.seq in wanted:
            hashes[entry.seq] = entry.hash
    trusted = None if trusted_keys is None else set(trusted_keys)
    for cp in checkpoints:
        where = f"at entry {cp.seq} ({cp.at}, {cp.gateway})"
        if not signature_valid(cp):
            problem(cp.seq, "bad_signature", f"the checkpoint {where} has an invalid signature")
            continue
        if trusted is not None and cp.public_key not in trusted:
            problem(
                cp.seq,
                "untrusted_key",
                f"the checkpoint {where} is signed by a key that is not trusted ({cp.public_key})",
            )
            continue
        result.checkpoints += 1
        if cp.seq > result.last_seq:
            problem(
                cp.seq,
                "truncated",
                f"the chain ends at entry {result.last_seq} but the checkpoint {where} vouches "
                f"for entry {cp.seq}: entries after {result.last_seq} were removed",
            )
        elif hashes.get(cp.seq) != cp.hash:
            problem(
                cp.seq, "changed", f"entry {cp.seq} is not the one the checkpoint {where} signed"
            )
        else:
            result.last_checkpoint_seq = max(result.last_checkpoint_seq, cp.seq)
    result.problems.sort(key=lambda p: p.seq)
    return result
