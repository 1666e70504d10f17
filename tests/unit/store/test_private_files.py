"""The SQLite store (with its -wal and -shm files), the demo's API key file and the file of
`bridge apikeys create --output` are readable by their owner only (0600) from the moment they
exist, whatever the umask: they hold API key hashes, production data and bearer keys."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from structlog.testing import capture_logs

from bridge.cli import main
from bridge.simulators.demo import demo_api_key
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import open_store


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_sqlite_files_are_created_0600(tmp_path: Path, mask: int) -> None:
    db = tmp_path / "data" / "gateway.db"
    with umask(mask):
        store = open_store(f"sqlite:///{db}")
        try:
            # Stated as soon as the store is open: the schema is in, WAL files exist.
            with store.engine.begin() as conn:
                conn.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
                conn.execute(text("INSERT INTO probe VALUES (1)"))
                wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
                assert wal.exists() and shm.exists()
                assert {p.name: oct(mode(p)) for p in (db, wal, shm)} == {
                    p.name: "0o600" for p in (db, wal, shm)
                }
        finally:
            store.dispose()


def test_existing_database_readable_by_others_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "gateway.db"
    open_store(f"sqlite:///{db}").dispose()
    db.chmod(0o644)
    with capture_logs() as logs:
        open_store(f"sqlite:///{db}").dispose()
    [warning] = [e for e in logs if e["event"] == "store_file_readable_by_others"]
    assert warning["mode"] == "0o644" and f"chmod 600 {db}" in warning["fix"]


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_demo_api_key_file_is_created_0600(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        key = demo_api_key(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path)
    key_file = tmp_path / "api-key"
    assert key_file.read_text().strip() == key
    assert oct(mode(key_file)) == "0o600"


def test_demo_api_key_replaces_a_stale_world_readable_file(tmp_path: Path) -> None:
    # A stale key in a 0644 file (an older demo, or copied around): the new key must not
    # inherit the old file's mode, nor be written through a symbolic link planted there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not a key\n")
    elsewhere.chmod(0o644)
    key_file = tmp_path / "api-key"
    key_file.symlink_to(elsewhere)
    with umask(0o022):
        key = demo_api_key(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path)
    assert not key_file.is_symlink()
    assert key_file.read_text().strip() == key
    assert oct(mode(key_file)) == "0o600"
    assert elsewhere.read_text() == "not a key\n"


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_apikeys_create_output_writes_a_0600_file(tmp_path: Path, mask: int) -> None:
    store = f"sqlite:///{tmp_path / 'gw.db'}"
    out = tmp_path / "reader.key"
    with umask(mask):
        result = CliRunner().invoke(
            main, ["apikeys", "create", "reader", "--store", store, "--output", str(out)]
        )
    assert result.exit_code == 0, result.output
    assert oct(mode(out)) == "0o600"
    key = out.read_text().strip()
    assert key and key not in result.output  # written to the file only
    opened = open_store(store)
    try:
        assert ApiKeyRepository(opened).authenticate(key) is not None
    finally:
        opened.dispose()


@pytest.mark.parametrize("planted", ["file", "symlink"])
def test_apikeys_create_output_never_overwrites(tmp_path: Path, planted: str) -> None:
    store = f"sqlite:///{tmp_path / 'gw.db'}"
    out = tmp_path / "reader.key"
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    if planted == "file":
        out.write_text("keep me too\n")
    else:
        out.symlink_to(target)
    result = CliRunner().invoke(
        main, ["apikeys", "create", "reader", "--store", store, "--output", str(out)]
    )
    assert result.exit_code == 2 and "exists" in result.output
    assert target.read_text() == "keep me\n"
    assert planted == "symlink" or out.read_text() == "keep me too\n"
    listed = CliRunner().invoke(main, ["apikeys", "list", "--store", store])
    assert "reader" not in listed.output  # refused before any key was made
