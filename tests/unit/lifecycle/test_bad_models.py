"""A bad model never stops the gateway, and the registry says what serves.

Real ONNX variants (``bridge.simulators.plant.model_variants``), a real runner over a real tag table
(``rig``, see conftest.py), the registry on a real SQLite file and the registry watcher the
gateway runs. pump-a is healthy (vibration mean 2), pump-b faulty (20), pump-c has Bad inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pump_mapping import pump_mapping
from support import wait_until

from bridge.cli import main
from bridge.inference import LoadedModel
from bridge.lifecycle.deployment import Deployment, Served
from bridge.lifecycle.policy import ModelPolicy
from bridge.lifecycle.service import RegistryService
from bridge.lifecycle.switching import RegistryWatcher
from bridge.store.db import Store, open_store
from bridge.store.registry import RegistryRepository
from bridge.types import Prediction, Quality

ASSETS = ("pump-a", "pump-b", "pump-c")  # the rig's (conftest.py)

MODEL = "pump-health"


def _served(path: Path, version: str) -> Served:
    loaded = LoadedModel.load(path)
    return Served(version, loaded.sha256, loaded, loaded.labels)


def _by_asset(predictions: Sequence[Prediction]) -> dict[str, Prediction]:
    return {p.asset: p for p in predictions}


@dataclasses.dataclass
class Fleet:
    """The registry of a store shared by gateways, and one gateway's runner and watcher."""

    url: str
    store: Store
    repo: RegistryRepository
    service: RegistryService  # no mapping: what `bridge models --store` does
    watcher: RegistryWatcher
    rig: Any  # conftest.Rig

    def states(self) -> dict[str, str]:
        return {r.version: r.state for r in self.repo.list(MODEL)}


@pytest.fixture
def fleet(rig: Any, variants: dict[str, Path], tmp_path: Path) -> Iterator[Fleet]:
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    store = open_store(url)
    repo = RegistryRepository(store)
    policy = ModelPolicy(directory=variants["pump_health_v1"].parent)
    watcher = RegistryWatcher(repo, [rig.runner], poll_s=0.1, policy=policy)
    try:
        yield Fleet(url, store, repo, RegistryService(repo, policy), watcher, rig)
    finally:
        store.dispose()


# -- point 2: a bad model never stops the gateway --------------------------------------------


async def test_model_failing_for_some_inputs_gives_bad_predictions_and_ticks_go_on(
    rig: Any, variants: dict[str, Path]
) -> None:
    # Passes every load check (right shapes on a batch of zeros), fails as soon as a faulty
    # pump is in the batch: its label output then has fewer rows than the batch.
    rig.runner.swap(Deployment(_served(variants["drops_faulty_rows"], "odd")))
    for _ in range(3):
        made = _by_asset(await rig.runner.tick())
    assert {a: p.quality for a, p in made.items()} == {
        "pump-a": Quality.BAD,
        "pump-b": Quality.BAD,
        "pump-c": Quality.BAD,
    }
    for asset in ("pump-a", "pump-b"):
        assert made[asset].value is None
        assert "inference failed" in made[asset].reason and "shape [1]" in made[asset].reason
    health = rig.runner.health()
    assert health.state == "degraded" and "expected [2]" in health.detail
    assert health.counters["errors"] == 3 and rig.runner.runs == 3

    # Without the faulty pump in the batch (its inputs turn Bad) the model serves again.
    rig.feed("pump-b", {"vibration": 20.0}, Quality.BAD)
    made = _by_asset(await rig.runner.tick())
    assert (made["pump-a"].quality, made["pump-a"].value) == (Quality.GOOD, "healthy")
    assert made["pump-b"].quality is Quality.BAD and "inference" not in made["pump-b"].reason
    assert rig.runner.health().state == "ok"


async def test_nan_output_is_a_bad_prediction_never_a_good_null(
    rig: Any, variants: dict[str, Path]
) -> None:
    rig.runner.swap(Deployment(_served(variants["nan_when_calm"], "nan")))
    made = _by_asset(await rig.runner.tick())
    calm, faulty = made["pump-a"], made["pump-b"]
    assert (calm.quality, calm.value, calm.score) == (Quality.BAD, None, None)
    assert "not a finite number" in calm.reason
    assert (faulty.quality, faulty.value) == (Quality.GOOD, "bearing_fault")
    assert faulty.score is not None and faulty.score > 0.9


async def test_a_failing_tick_does_not_end_the_runner(rig: Any, variants: dict[str, Path]) -> None:
    """Whatever escapes a tick (here the sink raising once) is logged and counted; the runner
    goes on with the next tick instead of ending the gateway."""
    calls = 0
    published: list[Prediction] = []

    async def flaky(batch: Sequence[Prediction]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("sink bug")
        published.extend(batch)

    rig.runner.publish = flaky
    rig.runner.model = dataclasses.replace(rig.runner.model, period_s=0.02)
    task = asyncio.create_task(rig.runner.run())
    try:
        await wait_until(lambda: len(published) >= 6, 5, 0.01, "ticks after the failed one")
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert rig.runner.errors >= 1
    assert {p.quality for p in published if p.asset == "pump-a"} == {Quality.GOOD}


@pytest.mark.parametrize(
    ("variant", "asset", "why"),
    [("drops_faulty_rows", "pump-b", "shape"), ("nan_when_calm", "pump-a", "not a finite")],
)
async def test_failing_canary_is_retired_while_the_active_version_serves(
    fleet: Fleet, variants: dict[str, Path], variant: str, asset: str, why: str
) -> None:
    runner = fleet.rig.runner
    await fleet.watcher.seed()  # the mapping's model is version "1", active
    fleet.service.register(variants[variant], MODEL, "2", actor="test")
    fleet.service.canary(MODEL, "2", "test", assets=[asset])
    await fleet.watcher.sync()
    assert runner.deployment.candidate is not None  # it passed every load check

    made = _by_asset(await runner.tick())
    # The candidate failed on its asset: that asset got the active version's prediction.
    assert {(a, p.version, p.quality) for a, p in made.items() if a != "pump-c"} == {
        ("pump-a", "1", Quality.GOOD),
        ("pump-b", "1", Quality.GOOD),
    }
    assert runner.guard_tripped is not None and why in runner.guard_tripped

    await fleet.watcher.sync()  # retires it in the registry ...
    await fleet.watcher.sync()  # ... and serves without it
    assert fleet.states() == {"1": "active", "2": "retired"}
    event = next(e for e in fleet.repo.events(MODEL) if e.action == "rollback-candidate")
    assert event.version == "2" and "candidate 2 failed" in event.detail["reason"]
    assert why in event.detail["reason"]
    assert runner.deployment.candidate is None
    made = _by_asset(await runner.tick())
    assert made["pump-a"].quality is Quality.GOOD and made["pump-b"].quality is Quality.GOOD


async def test_wrong_shape_canary_from_the_shared_registry_is_refused_by_every_gateway(
    fleet: Fleet,
    variants: dict[str, Path],
    tmp_path: Path,
    rig_factory: Callable[[Path, Path], Any],
) -> None:
    """The fleet crash-loop: every gateway loads the canary from the shared registry. Each
    refuses it at load (the probe batch shows [2N]); the first records it, v1 serves on."""
    (tmp_path / "other").mkdir()
    other = rig_factory(tmp_path / "other", variants["pump_health_v1"])
    other_watcher = RegistryWatcher(
        fleet.repo, [other.runner], poll_s=0.1, policy=fleet.watcher.policy
    )
    await fleet.watcher.seed()
    fleet.service.register(variants["wrong_output_shape"], MODEL, "2", actor="test")
    fleet.service.canary(MODEL, "2", "test", share=100.0)
    serving = fleet.repo.serving()  # what both gateways read before either refused it
    await fleet.watcher._sync_one(fleet.rig.runner, serving)
    await other_watcher._sync_one(other.runner, serving)

    assert fleet.states() == {"1": "active", "2": "refused"}
    refusals = [e for e in fleet.repo.events(MODEL) if e.action == "refuse"]
    assert len(refusals) == 1, refusals  # the second gateway found it already recorded
    assert "output 'label' has shape [2], expected [1]" in refusals[0].detail["reason"]
    for rig in (fleet.rig, other):
        assert rig.runner.deployment.candidate is None
        made = _by_asset(await rig.runner.tick())
        assert {made[a].quality for a in ("pump-a", "pump-b")} == {Quality.GOOD}
        health = rig.runner.health()
        assert health.state == "degraded" and "registry version 2 (canary)" in health.detail
        assert health.counters["refused_versions"] == 1


# -- point 12: the registry says what serves -------------------------------------------------


async def test_version_the_runtime_refuses_is_refused_and_the_old_one_stays_active(
    fleet: Fleet, variants: dict[str, Path], tmp_path: Path
) -> None:
    await fleet.watcher.seed()
    await fleet.watcher.sync()
    # Registered and activated without the mapping (`--store`): nothing could check the fit.
    fleet.service.register(variants["five_features"], MODEL, "3", actor="test")
    fleet.service.activate(MODEL, "3", "test")
    assert fleet.states() == {"1": "retired", "3": "active"}

    await fleet.watcher.sync()
    runner = fleet.rig.runner
    assert runner.deployment.active.version == "1"
    assert fleet.states() == {"1": "active", "3": "refused"}
    refuse = next(e for e in fleet.repo.events(MODEL) if e.action == "refuse")
    assert refuse.detail["restored"] == "1"
    assert "expects 5 values per row, the mapping builds 7 features" in refuse.detail["reason"]
    health = runner.health()
    assert health.state == "degraded"
    assert "registry version 3 (active) refused, 1 serves" in health.detail
    assert "expects 5 values per row" in health.detail

    # Settled: the registry and the runtime agree, nothing is retried or swapped.
    await fleet.watcher.sync()
    assert fleet.states() == {"1": "active", "3": "refused"}
    assert fleet.watcher.refusals == 1 and runner.deployment.active.version == "1"

    out = CliRunner().invoke(main, ["models", "list", "--store", fleet.url])
    assert out.exit_code == 0, out.output
    listed = {line.split("\t")[1]: line.split("\t")[2] for line in out.stdout.splitlines()}
    assert listed == {"1": "active", "3": "refused"}
    out = CliRunner().invoke(main, ["models", "show", MODEL, "3", "--store", fleet.url])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["state"] == "refused" and "expects 5 values per row" in shown["refusal"]

    # A later good version serves and the refusal leaves the health detail.
    fleet.service.register(variants["pump_health_v2"], MODEL, "4", actor="test")
    fleet.service.activate(MODEL, "4", "test")
    await fleet.watcher.sync()
    assert runner.deployment.active.version == "4" and runner.health().state == "ok"


def test_cli_refuses_an_unfitting_version_when_it_knows_the_mapping(
    variants: dict[str, Path], tmp_path: Path
) -> None:
    models = tmp_path / "models"  # gateway.models.directory's default, beside the mapping
    models.mkdir()
    for name in ("pump_health_v1", "five_features"):
        shutil.copy(variants[name], models / f"{name}.onnx")
    db = tmp_path / "bridge.db"
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(pump_mapping(store=db, model=models / "pump_health_v1.onnx", assets=ASSETS))
    cli = CliRunner()

    def models_cmd(*args: str) -> Any:
        return cli.invoke(main, ["models", *args])

    why = "expects 5 values per row, the mapping builds 7 features"
    for_mapping = ("--mapping", str(mapping))
    bad = str(models / "five_features.onnx")
    good = str(models / "pump_health_v1.onnx")
    assert (
        models_cmd("register", good, "--name", MODEL, "--version", "1", *for_mapping).exit_code == 0
    )
    assert models_cmd("activate", MODEL, "1", *for_mapping).exit_code == 0

    out = models_cmd("register", bad, "--name", MODEL, "--version", "3", *for_mapping)
    assert out.exit_code == 1 and why in _error(out), out.stderr
    assert "does not fit the mapping's model pump-health" in _error(out)

    # Registered without the mapping (nothing to check it against) ...
    url = f"sqlite:///{db}"
    out = models_cmd(
        "register",
        bad,
        "--name",
        MODEL,
        "--version",
        "3",
        "--store",
        url,
        "--models-dir",
        str(models),
    )
    assert out.exit_code == 0, out.stderr
    # ... it still cannot start serving where the mapping is known.
    for args in (
        ("activate", MODEL, "3"),
        ("shadow", MODEL, "3"),
        ("canary", MODEL, "3", "--share", "50%"),
    ):
        out = models_cmd(*args, *for_mapping)
        assert out.exit_code == 1 and why in _error(out), (args, out.stderr)
    listed = models_cmd("list", *for_mapping).stdout.splitlines()
    assert {line.split("\t")[1]: line.split("\t")[2] for line in listed} == {
        "1": "active",
        "3": "registered",
    }


def _error(result: Any) -> str:
    return next((ln for ln in result.stderr.splitlines() if ln.startswith("error:")), "")
