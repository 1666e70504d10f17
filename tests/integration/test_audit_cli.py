"""``bridge audit export|verify|show`` as operators and auditors run them: real ``python -m
bridge`` processes on a real store (SQLite; PostgreSQL where the store matters).

- An export verifies with no store at all, from another directory (the file is
  self-contained); the same file with a line edited, a line removed, two lines swapped or
  the last entries cut exits 1 naming the broken entry; keys pinned with --public-key or the
  mapping's gateway.audit count, another key's checkpoint does not.
- The export: header (time, redacted source, count, signer keys), never overwritten without
  --force, no half file, nothing created when there is no store.
- ``show``: newest first, the filters, --json.
- ``verify --store`` / ``--mapping`` on a tampered store exits 1 naming the entry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from stores import PG_URL, pg_schema

from bridge.audit.checkpoints import sign_checkpoint
from bridge.cli import main
from bridge.ed25519 import generate_keypair, load_private_key, public_key_text
from bridge.store.audit import AuditRepository
from bridge.store.auditchain import NewAuditEntry, format_time
from bridge.store.db import Store, open_store

ROOT = Path(__file__).resolve().parents[2]
OK, FAILED, USAGE, STORE = 0, 1, 2, 4
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z; entry i is written at T0 + i


def bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def entry(i: int) -> NewAuditEntry:
    kinds = [
        ("key:aaaaaaaaaaaa", "rest", "model.activated", f"model:pump/{i}"),
        ("opcua:anna", "opcua", "alert.acknowledged", f"alert:{i}"),
        ("cli:root", "cli", "apikey.created", f"apikey:{i:012d}"),
    ]
    actor, channel, action, subject = kinds[i % 3]
    return NewAuditEntry(actor, channel, action, subject, {"n": i}, {"n": i + 1}, f"reason {i}")


@dataclass
class Ledger:
    store: Store
    url: str
    key: Path  # private key (PEM) that signed the checkpoint; its .pub beside it
    work: Path  # where the commands run


def fill(store: Store, key: Ed25519PrivateKey, n: int = 12, signed: int = 10) -> None:
    """``n`` entries by two gateways; a checkpoint of entry ``signed``."""
    for i in range(1, n + 1):
        AuditRepository(store, "gw-a" if i % 2 else "gw-b").append(entry(i), at=T0 + i)
        if i == signed:
            repo = AuditRepository(store, "gw-a")
            head = repo.head()
            assert head is not None
            at = format_time(round((T0 + i) * 1e6))
            repo.add_checkpoint(sign_checkpoint(key, head[0], head[1], at, "gw-a"))


def keypair(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_keypair(path, path.with_name(path.name + ".pub"))
    return path


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path / 'plant' / 'var' / 'bridge.db'}"
    store = open_store(url)
    key = keypair(tmp_path / "plant" / "var" / "audit-ed25519.pem")
    work = tmp_path / "work"
    work.mkdir()
    try:
        fill(store, load_private_key(key))
        yield Ledger(store, url, key, work)
    finally:
        store.dispose()


def export(ledger: Ledger, name: str = "audit.jsonl") -> Path:
    out = ledger.work / name
    done = bridge("audit", "export", "-o", str(out), "--store", ledger.url, cwd=ledger.work)
    assert done.returncode == OK, done.stderr
    assert "exported 12 entries (to seq 12) and " in done.stdout and str(out) in done.stdout
    return out


@pytest.fixture
def auditor(tmp_path: Path) -> Path:
    """The auditor's machine: an empty directory, no store anywhere."""
    here = tmp_path / "auditor"
    here.mkdir()
    return here


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def rewrite(path: Path, new: list[str]) -> Path:
    path.write_text("".join(new), encoding="utf-8")
    return path


def entry_line(all_lines: list[str], seq: int) -> int:
    """The index of the line of entry ``seq``."""
    return next(
        i for i, ln in enumerate(all_lines) if json.loads(ln).get("entry", {}).get("seq") == seq
    )


# -- export, then verify elsewhere --------------------------------------------------------------


def test_an_export_verifies_with_no_store(ledger: Ledger, auditor: Path) -> None:
    out = export(ledger)
    ledger.store.dispose()
    Path(ledger.url.removeprefix("sqlite:///")).rename(ledger.work / "moved-away.db")
    copy = auditor / "audit.jsonl"
    copy.write_bytes(out.read_bytes())

    done = bridge("audit", "verify", "audit.jsonl", cwd=auditor)
    assert done.returncode == OK, done.stdout + done.stderr
    assert "audit chain of audit.jsonl: OK" in done.stdout
    assert "entries:          12 (seq 1-12)" in done.stdout
    assert "last checkpoint:  entry 10" in done.stdout
    assert "unsigned tail:    2 entr(ies)" in done.stdout
    assert "NOT pinned" in done.stdout
    assert done.stderr == ""
    assert {p.name for p in auditor.iterdir()} == {"audit.jsonl"}  # nothing created

    pub = ledger.key.with_name(ledger.key.name + ".pub")
    pinned = bridge("audit", "verify", "audit.jsonl", "--public-key", str(pub), cwd=auditor)
    assert pinned.returncode == OK, pinned.stdout
    assert "pinned (1 trusted key(s))" in pinned.stdout

    other = keypair(auditor / "keys" / "other.pem")
    wrong = bridge("audit", "verify", "audit.jsonl", "--public-key", f"{other}.pub", cwd=auditor)
    assert wrong.returncode == FAILED, wrong.stdout
    assert "first broken entry: 10 (untrusted_key)" in wrong.stdout

    as_json = bridge("audit", "verify", "audit.jsonl", "--json", cwd=auditor)
    assert as_json.returncode == OK
    report = json.loads(as_json.stdout)
    assert report["ok"] is True and report["entries"] == 12 and report["last_checkpoint_seq"] == 10
    assert report["unsigned_tail"] == 2 and report["signer_pinned"] is False


def test_the_export_header_describes_it(tmp_path: Path) -> None:
    """From PostgreSQL with a password in the URL: the header names the source without it."""
    with pg_schema("bridge_audit_cli") as schema:
        with_password = PG_URL.replace("root@", "root:s3cret-pw@")  # trust auth ignores it
        url = f"{with_password}?options={quote(f'-csearch_path={schema}')}"
        store = open_store(url)
        key = Ed25519PrivateKey.generate()
        try:
            fill(store, key)
        finally:
            store.dispose()
        out = tmp_path / "pg.jsonl"
        done = bridge("audit", "export", "-o", str(out), "--store", url, cwd=tmp_path)
        assert done.returncode == OK, done.stderr
    text_ = out.read_text(encoding="utf-8")
    assert "s3cret-pw" not in text_ + done.stdout + done.stderr
    header = json.loads(text_.splitlines()[0])
    assert header["format"] == "bridge-audit-v1"
    assert header["source"].startswith("postgresql+psycopg://***@127.0.0.1:5432/test?options=")
    assert (header["entries"], header["last_seq"], header["checkpoints"]) == (12, 12, 1)
    assert header["exported_at"].endswith("Z") and header["exported_by"].startswith("cli@")
    assert header["public_keys"] == [public_key_text(key.public_key())]
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    verified = bridge("audit", "verify", str(out), cwd=tmp_path)
    assert verified.returncode == OK, verified.stdout


def _edit(all_lines: list[str], seq: int) -> list[str]:
    i = entry_line(all_lines, seq)
    data = json.loads(all_lines[i])
    data["entry"]["reason"] = "nothing happened"
    return [*all_lines[:i], json.dumps(data) + "\n", *all_lines[i + 1 :]]


def _remove(all_lines: list[str], seq: int) -> list[str]:
    i = entry_line(all_lines, seq)
    return [*all_lines[:i], *all_lines[i + 1 :]]


def _swap(all_lines: list[str], seq: int) -> list[str]:
    i, j = entry_line(all_lines, seq), entry_line(all_lines, seq + 1)
    swapped = list(all_lines)
    swapped[i], swapped[j] = all_lines[j], all_lines[i]
    return swapped


def _cut(all_lines: list[str], seq: int) -> list[str]:
    """Every entry from ``seq`` on removed (the checkpoints, at the end, stay)."""
    return [ln for ln in all_lines if json.loads(ln).get("entry", {}).get("seq", 0) < seq]


TAMPERING = {
    "line edited": (_edit, 5, "first broken entry: 5 (changed): entry 5 was changed"),
    "line removed": (_remove, 5, "first broken entry: 5 (missing): entry 5 missing"),
    "lines swapped": (_swap, 5, "first broken entry: 5 (missing)"),
    "tail cut": (_cut, 9, "first broken entry: 10 (truncated): the chain ends at entry 8"),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_an_export_tampered_with_fails_naming_the_entry(
    ledger: Ledger, auditor: Path, how: str
) -> None:
    tamper, seq, expected = TAMPERING[how]
    out = export(ledger)
    bad = rewrite(auditor / "audit.jsonl", tamper(lines(out), seq))
    done = bridge("audit", "verify", str(bad), cwd=auditor)
    assert done.returncode == FAILED, done.stdout + done.stderr
    assert "audit chain of" in done.stdout and ": BROKEN" in done.stdout
    assert expected in done.stdout, done.stdout
    report = json.loads(bridge("audit", "verify", str(bad), "--json", cwd=auditor).stdout)
    assert report["ok"] is False
    assert report["first_problem"]["seq"] == (10 if how == "tail cut" else seq)


def test_a_file_that_is_not_an_audit_file_is_refused(auditor: Path) -> None:
    bad = auditor / "notes.jsonl"
    bad.write_text('{"entry": {"seq": 1}}\nnot json\n', encoding="utf-8")
    done = bridge("audit", "verify", str(bad), cwd=auditor)
    assert done.returncode == FAILED
    assert done.stderr.startswith(f"error: {bad}:1: incomplete line"), done.stderr
    missing = bridge("audit", "verify", "absent.jsonl", cwd=auditor)
    assert missing.returncode == USAGE and "does not exist" in missing.stderr


def test_export_never_overwrites_without_force(ledger: Ledger) -> None:
    out = export(ledger)
    before = out.read_bytes()
    again = bridge("audit", "export", "-o", str(out), "--store", ledger.url, cwd=ledger.work)
    assert again.returncode == USAGE
    assert again.stderr == f"error: {out} exists; give a new file name or --force\n"
    assert out.read_bytes() == before
    forced = bridge(
        "audit", "export", "-o", str(out), "--force", "--store", ledger.url, cwd=ledger.work
    )
    assert forced.returncode == OK, forced.stderr
    assert out.read_bytes() != before  # a new exported_at at least
    assert sorted(p.name for p in ledger.work.iterdir()) == ["audit.jsonl"]  # no .part left


def test_export_without_a_store_creates_nothing(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    done = bridge("audit", "export", "-o", "a.jsonl", "--store", "sqlite:///var/x.db", cwd=work)
    assert done.returncode == STORE and "error: no store at var/x.db" in done.stderr
    assert list(work.iterdir()) == []
    both = bridge("audit", "verify", "a.jsonl", "--store", "sqlite:///x.db", cwd=tmp_path)
    assert both.returncode == USAGE


# -- verify the store ---------------------------------------------------------------------------

MAPPING = """
version: 1
gateway:
  id: gw-a
  store: sqlite:///var/bridge.db
  audit: {{signing_key: var/audit-ed25519.pem{trusted}}}
sources:
  plc: {{kind: modbus, host: 127.0.0.1, port: 5020}}
assets:
  line:
    tags:
      pressure: {{source: plc, address: {{table: holding, address: 0, type: uint16}}}}
"""


def test_verify_the_store_by_url_and_by_mapping(ledger: Ledger, tmp_path: Path) -> None:
    mapping = tmp_path / "plant" / "mapping.yaml"
    mapping.write_text(MAPPING.format(trusted=""), encoding="utf-8")
    by_url = bridge("audit", "verify", "--store", ledger.url, cwd=ledger.work)
    assert by_url.returncode == OK, by_url.stdout + by_url.stderr
    assert f"audit chain of {ledger.url}: OK" in by_url.stdout and "NOT pinned" in by_url.stdout
    by_mapping = bridge("audit", "verify", "--mapping", str(mapping), cwd=ledger.work)
    assert by_mapping.returncode == OK, by_mapping.stdout + by_mapping.stderr
    assert "pinned (1 trusted key(s))" in by_mapping.stdout
    # Whoever verifies needs the public half only (an auditor never gets the private key).
    ledger.key.rename(tmp_path / "private-elsewhere.pem")
    by_public = bridge("audit", "verify", "--mapping", str(mapping), cwd=ledger.work)
    assert by_public.returncode == OK, by_public.stdout + by_public.stderr
    assert "pinned (1 trusted key(s))" in by_public.stdout
    pub = ledger.key.with_name(ledger.key.name + ".pub")
    pub.rename(tmp_path / "public-elsewhere.pem")
    no_key = bridge("audit", "verify", "--mapping", str(mapping), cwd=ledger.work)
    assert no_key.returncode == FAILED, no_key.stdout
    assert "pinned to no key" in no_key.stdout and "10 (untrusted_key)" in no_key.stdout
    (tmp_path / "public-elsewhere.pem").rename(pub)

    # Another gateway of the fleet signs too: refused until the mapping trusts its key.
    other = keypair(tmp_path / "plant" / "keys" / "gw-b.pem")
    repo = AuditRepository(ledger.store, "gw-b")
    head = repo.head()
    assert head is not None
    at = format_time(round((T0 + 20) * 1e6))
    repo.add_checkpoint(sign_checkpoint(load_private_key(other), head[0], head[1], at, "gw-b"))
    refused = bridge("audit", "verify", "--mapping", str(mapping), cwd=ledger.work)
    assert refused.returncode == FAILED
    assert "first broken entry: 12 (untrusted_key)" in refused.stdout
    mapping.write_text(MAPPING.format(trusted=", trusted_keys: [keys/gw-b.pem.pub]"))
    trusted = bridge("audit", "verify", "--mapping", str(mapping), cwd=ledger.work)
    assert trusted.returncode == OK, trusted.stdout
    assert "pinned (2 trusted key(s))" in trusted.stdout and "unsigned tail:    0" in trusted.stdout
    # The mapping only names the keys when a file is verified.
    out = export(ledger)
    assert (
        bridge("audit", "verify", str(out), "--mapping", str(mapping), cwd=tmp_path).returncode
        == OK
    )


def _tamper(store: Store, statement: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement))


def test_verify_a_tampered_sqlite_store_fails(ledger: Ledger) -> None:
    _tamper(ledger.store, "UPDATE audit_entries SET actor = 'cli:nobody' WHERE seq = 7")
    done = bridge("audit", "verify", "--store", ledger.url, cwd=ledger.work)
    assert done.returncode == FAILED, done.stdout + done.stderr
    assert "first broken entry: 7 (changed)" in done.stdout


def test_verify_a_tampered_postgresql_store_fails(tmp_path: Path) -> None:
    with pg_schema("bridge_audit_cli") as schema:
        url = f"{PG_URL}?options={quote(f'-csearch_path={schema}')}"
        store = open_store(url)
        try:
            fill(store, Ed25519PrivateKey.generate())
            assert bridge("audit", "verify", "--store", url, cwd=tmp_path).returncode == OK
            _tamper(store, "DELETE FROM audit_entries WHERE seq = 4")
            _tamper(store, "DELETE FROM audit_entries WHERE seq > 10")  # after the checkpoint
            done = bridge("audit", "verify", "--store", url, "--max-problems", "5", cwd=tmp_path)
        finally:
            store.dispose()
    assert done.returncode == FAILED, done.stdout + done.stderr
    assert "first broken entry: 4 (missing): entry 4 missing (deleted) before entry 5" in (
        done.stdout
    )
    assert "entries:          9 (seq 1-10)" in done.stdout


# -- show ---------------------------------------------------------------------------------------


def show(ledger: Ledger, *args: str) -> list[dict[str, object]]:
    done = CliRunner().invoke(main, ["audit", "show", "--store", ledger.url, "--json", *args])
    assert done.exit_code == OK, done.output
    return [json.loads(line) for line in done.stdout.splitlines()]


def seqs(rows: list[dict[str, object]]) -> list[object]:
    return [r["seq"] for r in rows]


def test_show_lists_entries_newest_first_with_filters(ledger: Ledger) -> None:
    assert seqs(show(ledger)) == list(range(12, 0, -1))
    assert seqs(show(ledger, "--limit", "3")) == [12, 11, 10]
    assert seqs(show(ledger, "--action", "model.activated")) == [12, 9, 6, 3]
    assert seqs(show(ledger, "--action", "alert.")) == [10, 7, 4, 1]
    assert seqs(show(ledger, "--action", "alert")) == []  # exact unless it ends in "."
    assert seqs(show(ledger, "--actor", "cli:root")) == [11, 8, 5, 2]
    assert seqs(show(ledger, "--subject", "alert:7")) == [7]
    # Inclusive at both ends; ISO 8601 and epoch seconds.
    since, until = "2023-11-14T22:13:23Z", str(T0 + 5)
    assert seqs(show(ledger, "--since", since, "--until", until)) == [5, 4, 3]
    assert seqs(show(ledger, "--since", "1h")) == []  # all written in 2023
    assert seqs(show(ledger, "--until", "1d", "--limit", "2")) == [12, 11]
    row = show(ledger, "--subject", "alert:7")[0]
    assert row["at"] == "2023-11-14T22:13:27.000000Z" and row["gateway"] == "gw-a"
    assert row["before"] == {"n": 7} and len(str(row["hash"])) == 64

    table = CliRunner().invoke(main, ["audit", "show", "--store", ledger.url, "--limit", "2"])
    assert table.exit_code == OK, table.output
    head, first, second = table.stdout.splitlines()
    assert head.split() == ["SEQ", "TIME", "GATEWAY", "ACTOR", "CHANNEL", "ACTION", "SUBJECT",
                            "REASON"]  # fmt: skip
    assert first.split() == ["12", "2023-11-14T22:13:32Z", "gw-b", "key:aaaaaaaaaaaa", "rest",
                             "model.activated", "model:pump/12", "reason", "12"]  # fmt: skip
    assert second.split()[0] == "11"
    bad = CliRunner().invoke(main, ["audit", "show", "--store", ledger.url, "--since", "soon"])
    assert bad.exit_code == USAGE and "neither ISO 8601" in bad.output
