"""Model files by path: registration reads only regular files under the models directory, with a
size cap, and refuses everything else with one text that does not say whether a file exists;
a signature covers name, version and sha256; the production profile requires signatures;
``keygen`` never overwrites a key and creates the private key 0600 from the first byte."""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stores import temp_store

from bridge.inference.model import file_sha256
from bridge.lifecycle.files import ModelFileRefused, read_confined
from bridge.lifecycle.loading import ModelRefused
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.signature import (
    SignatureError,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_model,
)
from bridge.lifecycle.switching import RegistryWatcher
from bridge.store.db import Store
from bridge.store.registry import RegistryRepository, VersionRecord

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with temp_store("sqlite", tmp_path, "r.db") as s:
        yield s


@pytest.fixture
def models_dir(tmp_path: Path, variants: dict[str, Path]) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(variants["pump_health_v1"], d / "v1.onnx")
    shutil.copy(variants["pump_health_v2"], d / "v2.onnx")
    (tmp_path / "outside.onnx").write_bytes((d / "v1.onnx").read_bytes())
    os.symlink(tmp_path / "outside.onnx", d / "leaves.onnx")
    os.symlink("/etc/passwd", d / "passwd.onnx")
    os.mkfifo(d / "pipe.onnx")
    os.symlink(d / "v1.onnx", d / "inside-link.onnx")
    return d


def refusals(models_dir: Path) -> dict[str, str]:
    """Every path registration must refuse, as a user would give it."""
    return {
        "etc-passwd": "/etc/passwd",
        "dotdot": str(models_dir / ".." / "outside.onnx"),
        "relative-dotdot": "../outside.onnx",
        "fifo": str(models_dir / "pipe.onnx"),
        "relative-fifo": "pipe.onnx",
        "symlink-outside": str(models_dir / "leaves.onnx"),
        "symlink-passwd": "passwd.onnx",
        "missing": str(models_dir / "nothing-here.onnx"),
        "nul-byte": "v1.onnx\x00",
        "directory": str(models_dir),
        "dev-zero": "/dev/zero",
    }


def _bounded(fn: object, timeout_s: float = 10.0) -> object:
    """Run ``fn`` in a daemon thread: a FIFO that blocks the read fails the test, not the run."""
    out: list[object] = []

    def target() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except BaseException as exc:  # handed back to the test
            out.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "reading the model file blocked"
    return out[0]


def test_everything_but_a_regular_file_inside_is_refused_with_one_text(models_dir: Path) -> None:
    messages = {}
    for label, given in refusals(models_dir).items():
        result = _bounded(lambda g=given: read_confined(g, models_dir, 256 * MiB))
        assert isinstance(result, ModelFileRefused), (label, result)
        messages[label] = str(result)
    assert len(set(messages.values())) == 1, messages
    text = next(iter(messages.values()))
    # It says how to fix it, and gives away nothing about the file.
    assert str(models_dir.resolve()) in text and "gateway.models.directory" in text
    assert "passwd" not in text and "pipe" not in text


def test_regular_files_inside_are_read_by_absolute_or_relative_path(models_dir: Path) -> None:
    data = (models_dir / "v1.onnx").read_bytes()
    for given in ("v1.onnx", str(models_dir / "v1.onnx"), "inside-link.onnx", "./v1.onnx"):
        path, read = read_confined(given, models_dir, 256 * MiB)
        assert read == data and path == (models_dir / "v1.onnx").resolve()


def test_a_file_above_the_cap_is_refused_before_it_is_read(models_dir: Path) -> None:
    size = (models_dir / "v1.onnx").stat().st_size
    with pytest.raises(ModelFileRefused, match=r"larger than gateway\.models\.max_file_mib"):
        read_confined("v1.onnx", models_dir, size - 1)
    assert read_confined("v1.onnx", models_dir, size)[1] == (models_dir / "v1.onnx").read_bytes()


def test_registration_refuses_outside_paths_and_registers_a_good_file(
    store: Store, models_dir: Path
) -> None:
    svc = RegistryService(RegistryRepository(store), ModelPolicy(directory=models_dir))
    texts = set()
    for label, given in refusals(models_dir).items():
        result = _bounded(lambda g=given: svc.register(Path(g), "m", "9", actor="t"))
        assert isinstance(result, ModelFileRefused), (label, result)
        texts.add(str(result))
    assert len(texts) == 1
    assert svc.list("m") == []
    record = svc.register(Path("v1.onnx"), "m", "1", actor="t")
    assert isinstance(record, VersionRecord)
    assert record.path == str((models_dir / "v1.onnx").resolve())
    assert record.sha256 == file_sha256(models_dir / "v1.onnx")


def test_without_a_models_directory_nothing_registers_by_path(
    store: Store, models_dir: Path
) -> None:
    svc = RegistryService(RegistryRepository(store))
    with pytest.raises(ModelFileRefused, match=r"gateway\.models\.directory"):
        svc.register(models_dir / "v1.onnx", "m", "1", actor="t")


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    return tmp_path / "k", tmp_path / "k.pub"


def test_a_signature_covers_name_version_and_sha256(
    store: Store, models_dir: Path, tmp_path: Path
) -> None:
    private, public = _keys(tmp_path)
    policy = ModelPolicy(public_key=load_public_key(public), directory=models_dir)
    svc = RegistryService(RegistryRepository(store), policy)
    sha = file_sha256(models_dir / "v1.onnx")
    sig = sign_model(load_private_key(private), "pump-health", "1", sha)
    with pytest.raises(ModelRefused, match="not signed for other-model 1"):
        svc.register(Path("v1.onnx"), "other-model", "1", actor="t", signature=sig)
    with pytest.raises(ModelRefused, match="not signed for pump-health 2"):
        svc.register(Path("v1.onnx"), "pump-health", "2", actor="t", signature=sig)
    with pytest.raises(ModelRefused, match="not signed for pump-health 1"):  # other bytes
        svc.register(Path("v2.onnx"), "pump-health", "1", actor="t", signature=sig)
    assert svc.list() == []
    record = svc.register(Path("v1.onnx"), "pump-health", "1", actor="t", signature=sig)
    assert record.signature == sig


def test_a_name_or_version_with_a_line_break_cannot_be_signed(tmp_path: Path) -> None:
    private, _ = _keys(tmp_path)
    with pytest.raises(SignatureError, match="line break"):
        sign_model(load_private_key(private), "a\nb", "1", "0" * 64)


def test_production_refuses_unsigned_models_at_register_activate_and_load(
    store: Store, models_dir: Path, tmp_path: Path
) -> None:
    repo = RegistryRepository(store)
    # Registered before the production profile was switched on: unsigned.
    lax = RegistryService(repo, ModelPolicy(directory=models_dir))
    lax.register(Path("v1.onnx"), "m", "1", actor="t", activate=True)
    lax.register(Path("v2.onnx"), "m", "0", actor="t")
    production = RegistryService(repo, ModelPolicy(require_signature=True, directory=models_dir))
    reason = "production profile .* requires signed models: set gateway.models.public_key"
    with pytest.raises(ModelRefused, match=reason):
        production.register(Path("v2.onnx"), "m", "2", actor="t")
    with pytest.raises(ModelRefused, match=reason):
        production.activate("m", "0", "t")
    # With the key configured, an unsigned version is refused as well; a signed one is not.
    private, public = _keys(tmp_path)
    keyed = RegistryService(
        repo,
        ModelPolicy(
            public_key=load_public_key(public), require_signature=True, directory=models_dir
        ),
    )
    with pytest.raises(ModelRefused, match="has no signature"):
        keyed.register(Path("v2.onnx"), "m", "2", actor="t")
    sig = sign_model(load_private_key(private), "m", "2", file_sha256(models_dir / "v2.onnx"))
    keyed.register(Path("v2.onnx"), "m", "2", actor="t", signature=sig)
    assert keyed.activate("m", "2", "t").state == "active"
    with pytest.raises(ModelRefused, match="has no signature"):
        keyed.rollback("m", "t")  # back to the unsigned version 1: refused


def test_keygen_refuses_to_overwrite_and_creates_the_key_0600(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: str, flags: int, mode: int = 0o777, **kw: object) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    old_umask = os.umask(0)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(os, "open", spy)
            generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    created = [c for c in calls if c[0] == str(tmp_path / "k")]
    assert created, calls
    _, flags, mode = created[0]
    assert flags & os.O_CREAT and flags & os.O_EXCL and mode == 0o600
    before = (tmp_path / "k").read_bytes(), (tmp_path / "k.pub").read_bytes()
    with pytest.raises(SignatureError, match=r"exists .*not overwritten"):
        generate_keypair(tmp_path / "k", tmp_path / "other.pub")
    with pytest.raises(SignatureError, match=r"exists .*not overwritten"):
        generate_keypair(tmp_path / "other", tmp_path / "k.pub")
    assert ((tmp_path / "k").read_bytes(), (tmp_path / "k.pub").read_bytes()) == before
    assert not (tmp_path / "other.pub").exists() and not (tmp_path / "other").exists()


async def test_production_start_refuses_a_mapping_model_not_signed_for_its_version(
    store: Store, rig: Any, tmp_path: Path
) -> None:
    """The mapping's own model serves from the first tick: with the production profile it
    must carry ``<file>.sig``, made for its name and version, or the gateway does not start."""
    model = rig.runner.model.path
    private, public = _keys(tmp_path)
    policy = ModelPolicy(public_key=load_public_key(public), require_signature=True)
    repo = RegistryRepository(store)
    watcher = RegistryWatcher(repo, [rig.runner], policy=policy)
    with pytest.raises(ModelRefused, match=rf"has no signature.*read from {model.name}\.sig"):
        await watcher.seed()
    sha = file_sha256(model)
    sig = model.with_name(model.name + ".sig")
    try:
        sig.write_text(sign_model(load_private_key(private), "pump-health", "2", sha) + "\n")
        with pytest.raises(ModelRefused, match="not signed for pump-health 1"):
            await watcher.seed()
        assert repo.list("pump-health") == []
        sig.write_text(sign_model(load_private_key(private), "pump-health", "1", sha) + "\n")
        await watcher.seed()
        (seeded,) = repo.list("pump-health")
        assert (seeded.version, seeded.state) == ("1", "active")
        assert seeded.signature == sig.read_text().strip()
    finally:  # the model file is shared by the session's tests
        sig.unlink(missing_ok=True)
