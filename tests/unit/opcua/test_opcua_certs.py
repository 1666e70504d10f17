"""`bridge certs create`: the private key is never readable by others, not even for a moment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bridge.connectors.opcua.certs import create_application_certificate


def test_private_key_created_0600_from_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process stopped between writing and a later chmod leaves the key as it was created:
    # with chmod made a no-op, the mode seen is the mode the file was created with.
    monkeypatch.setattr(Path, "chmod", lambda *_a, **_k: None)
    monkeypatch.setattr(os, "chmod", lambda *_a, **_k: None)
    old = os.umask(0o022)
    try:
        create_application_certificate(tmp_path / "cert.der", tmp_path / "key.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "key.pem").stat().st_mode) == 0o600
    assert (tmp_path / "key.pem").read_bytes().startswith(b"-----BEGIN")


def test_existing_key_or_planted_symlink_is_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "key.pem").symlink_to(target)
    with pytest.raises(FileExistsError):
        create_application_certificate(tmp_path / "cert.der", tmp_path / "key.pem")
    assert target.read_text() == "keep"
    create_application_certificate(tmp_path / "cert.der", tmp_path / "key.pem", overwrite=True)
    assert target.read_text() == "keep"  # the link was replaced, not followed
    assert not (tmp_path / "key.pem").is_symlink()
