"""Registering a model by path over the real REST API (uvicorn on 127.0.0.1): only a regular
file under the models directory registers; ``/etc/passwd``, a FIFO (bounded: it must not hang
the request), a symbolic link leaving the directory, ``../`` and a missing file all get the same
422 text, so the API does not tell which files exist. With the production profile an unsigned
version is refused, and a signature made for another name or version does not count."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from support import free_port

from bridge.api import ApiServices, create_app
from bridge.api.view import ModelInfo, TagState
from bridge.auth import Scope
from bridge.inference.model import file_sha256
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.signature import (
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_model,
)
from bridge.runtime.apiserver import ApiServer
from bridge.simulators.plant.model_variants import write_variants
from bridge.store import open_store
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.registry import RegistryRepository
from bridge.types import ComponentHealth, Prediction

pytestmark = pytest.mark.timeout(60)


@dataclass
class View:
    start: float = field(default_factory=time.time)
    gateway_id: str = "gw-model-files"

    def tag_states(self) -> Sequence[TagState]:
        return []

    def latest_predictions(self) -> Sequence[Prediction]:
        return []

    def models(self) -> Sequence[ModelInfo]:
        return []

    def health(self) -> Sequence[ComponentHealth]:
        return []

    def started_at(self) -> float:
        return self.start


@dataclass
class Api:
    http: httpx.AsyncClient
    models: Path
    keys: Path
    outside: Path


@pytest.fixture
async def api(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    models = tmp_path / "models"
    variants = write_variants(models)
    os.rename(variants["pump_health_v1"], models / "v1.onnx")
    (tmp_path / "outside.onnx").write_bytes((models / "v1.onnx").read_bytes())
    os.mkfifo(models / "pipe.onnx")
    os.symlink(tmp_path / "outside.onnx", models / "leaves.onnx")
    generate_keypair(tmp_path / "k", tmp_path / "k.pub")
    production = getattr(request, "param", False)
    policy = ModelPolicy(
        public_key=load_public_key(tmp_path / "k.pub") if production else None,
        require_signature=production,
        directory=models,
    )
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    key = ApiKeyRepository(store).create("admin", Scope.ADMIN)[1]
    registry = RegistryService(RegistryRepository(store), policy)
    app = create_app(ApiServices.from_store(View(), store, registry=registry))
    server = ApiServer(app, "127.0.0.1", free_port())
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"X-API-Key": key}, timeout=10
        ) as http:
            yield Api(http, models, tmp_path / "k", tmp_path / "outside.onnx")
    finally:
        await server.stop()
        store.dispose()


async def _register(api: Api, path: str, version: str = "1", **extra: str) -> httpx.Response:
    return await api.http.post(
        "/api/v1/models/pump-health/versions", json={"version": version, "path": path, **extra}
    )


async def test_only_regular_files_under_the_models_directory_register(api: Api) -> None:
    details = {}
    for label, path in {
        "etc-passwd": "/etc/passwd",
        "fifo": str(api.models / "pipe.onnx"),
        "relative-fifo": "pipe.onnx",
        "symlink-outside": str(api.models / "leaves.onnx"),
        "dotdot": "../outside.onnx",
        "missing": str(api.models / "nothing.onnx"),
        "nul-byte": "v1.onnx\x00",
        "device": "/dev/zero",
    }.items():
        r = await _register(api, path)  # the client's 10 s timeout bounds a hanging FIFO
        assert r.status_code == 422, (label, r.text)
        details[label] = r.json()["detail"]
    assert len(set(details.values())) == 1, details
    assert "gateway.models.directory" in details["missing"]
    r = await api.http.get("/api/v1/models/pump-health/versions")
    assert r.json() == []

    r = await _register(api, "v1.onnx")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["path"] == str((api.models / "v1.onnx").resolve())
    assert body["sha256"] == file_sha256(api.models / "v1.onnx")


@pytest.mark.parametrize("api", [True], indirect=True, ids=["production"])
async def test_production_requires_a_signature_for_this_name_and_version(api: Api) -> None:
    r = await _register(api, "v1.onnx")
    assert r.status_code == 422 and "has no signature" in r.json()["detail"], r.text
    sha = file_sha256(api.models / "v1.onnx")
    signature = sign_model(load_private_key(api.keys), "pump-health", "1", sha)
    r = await _register(api, "v1.onnx", version="2", signature=signature)
    assert r.status_code == 422, r.text
    assert "not signed for pump-health 2" in r.json()["detail"], r.text
    r = await api.http.post(
        "/api/v1/models/other-model/versions",
        json={"version": "1", "path": "v1.onnx", "signature": signature},
    )
    assert r.status_code == 422 and "not signed for other-model 1" in r.json()["detail"]
    r = await _register(api, "v1.onnx", signature=signature)
    assert r.status_code == 201 and r.json()["signed"] is True, r.text
