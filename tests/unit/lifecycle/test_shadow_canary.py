"""Shadow and canary runs through a real runner: agreement matches a hand-computed case,
canary assets get the candidate, sequences go on across swaps. (``rig``: see conftest.py.)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.inference import LoadedModel
from bridge.lifecycle.canary import canary_assets, canary_count, rank
from bridge.lifecycle.canary_guard import CanaryGuard
from bridge.lifecycle.deployment import Deployment, Served
from bridge.lifecycle.shadow import CandidateComparison, agrees
from bridge.runtime.live_models import stored_comparison
from bridge.store.db import open_store
from bridge.store.registry import RegistryRepository
from bridge.types import Quality


def _served(path: Path, version: str) -> Served:
    loaded = LoadedModel.load(path)
    return Served(version, loaded.sha256, loaded, loaded.labels)


async def test_shadow_agreement_matches_hand_computed_case(
    rig: Any, variants: dict[str, Path], tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'cmp.db'}")
    repo = RegistryRepository(store)
    stored: list[CandidateComparison] = []

    async def record(rows: Sequence[CandidateComparison]) -> None:
        stored.extend(rows)
        repo.add_comparisons([stored_comparison(c) for c in rows])

    rig.runner.record_comparisons = record
    active = rig.runner.deployment.active
    # The candidate says bearing_fault for every row: it agrees with v1 exactly where v1 says
    # bearing_fault, i.e. on pump-b (3 of 3 ticks) and never on pump-a (0 of 3); pump-c is
    # blocked (Bad inputs) and is not compared at all.
    rig.runner.swap(Deployment(active, _served(variants["always_fault"], "fault"), mode="shadow"))
    for _ in range(3):
        await rig.runner.tick()
    published = {(p.asset, p.version, p.value) for p in rig.published}
    assert published == {
        ("pump-a", "1", "healthy"),
        ("pump-b", "1", "bearing_fault"),
        ("pump-c", "1", None),
    }, "shadow outputs must never be published"
    tally = rig.runner.stats["fault"].agreement
    assert (tally.rate("pump-a"), tally.rate("pump-b"), tally.rate("pump-c")) == (0.0, 1.0, None)
    assert tally.total == 6 and tally.disagreement == 0.5
    assert {(c.asset, c.agree) for c in stored} == {("pump-a", False), ("pump-b", True)}
    by_asset = {a.asset: (a.compared, a.agreed) for a in repo.agreement("pump-health", "fault")}
    assert by_asset == {"pump-a": (3, 0), "pump-b": (3, 3)}
    store.dispose()


async def test_canary_serves_listed_assets_and_sequences_continue(
    rig: Any, variants: dict[str, Path]
) -> None:
    await rig.runner.tick()
    active = rig.runner.deployment.active
    rig.runner.swap(
        Deployment(
            active,
            _served(variants["always_healthy"], "calm"),
            mode="canary",
            canary_assets=frozenset({"pump-b"}),
        )
    )
    await rig.runner.tick()
    rig.runner.swap(Deployment(active))  # rollback
    await rig.runner.tick()
    by_asset: dict[str, list[tuple[int, str, object]]] = {}
    for p in rig.published:
        by_asset.setdefault(p.asset, []).append((p.seq, p.version, p.value))
    assert by_asset["pump-b"] == [
        (1, "1", "bearing_fault"),
        (2, "calm", "healthy"),
        (3, "1", "bearing_fault"),
    ]
    assert [v for _, v, _ in by_asset["pump-a"]] == ["1", "1", "1"]
    assert [s for s, _, _ in by_asset["pump-c"]] == [1, 2, 3]
    assert all(p.quality is Quality.BAD for p in rig.published if p.asset == "pump-c")
    calm = rig.runner.stats["calm"]
    assert calm.predictions == 1 and calm.labels == {"healthy": 1}
    assert calm.agreement.rate("pump-b") == 0.0 and calm.agreement.rate("pump-a") is None


async def test_canary_guard_trips_on_disagreement(rig: Any, variants: dict[str, Path]) -> None:
    active = rig.runner.deployment.active
    rig.runner.swap(
        Deployment(
            active,
            _served(variants["always_healthy"], "calm"),
            mode="canary",
            canary_share=100.0,
            canary_assets=canary_assets("pump-health", rig.runner.model.assets, 100.0),
            guard=CanaryGuard(max_disagreement=0.2, min_samples=2),
        )
    )
    await rig.runner.tick()  # pump-a agrees, pump-b does not: 0.5 > 0.2
    assert rig.runner.guard_tripped is not None and "disagreement" in rig.runner.guard_tripped


def test_canary_share_serves_exactly_round_share_times_n_assets() -> None:
    # The reported case: 50 % of 4 assets served none under the per-asset hash threshold.
    four = [f"pump-{i:02d}" for i in range(1, 5)]
    assert len(canary_assets("pump-health", four, 50.0)) == 2
    for total in (1, 2, 3, 4, 7, 10, 4000):
        assets = [f"pump-{i:04d}" for i in range(total)]
        for share in (1.0, 10.0, 25.0, 50.0, 75.0, 100.0):
            want = int(share * total / 100 + 0.5)
            assert len(canary_assets("pump-health", assets, share)) == want, (total, share)
    assert canary_count(50.0, 1) == 1 and canary_count(49.0, 1) == 0  # halves round up
    assert canary_assets("m", ["a", "b"], 0.0) == frozenset()
    assert canary_assets("m", ["a", "b"], None) == frozenset()


def test_canary_assignment_is_stable_and_grows_with_the_share() -> None:
    assets = [f"pump-{i:04d}" for i in range(400)]
    chosen = canary_assets("pump-health", assets, 10.0)
    # The same in every gateway, whatever order its mapping lists the assets in.
    assert canary_assets("pump-health", list(reversed(assets)), 10.0) == chosen
    # Growing the share only adds assets: a canary at 20 % keeps the 10 % ones.
    assert chosen < canary_assets("pump-health", assets, 20.0)
    # Another model ranks the assets differently (its canary lands elsewhere).
    assert canary_assets("other-model", assets, 10.0) != chosen
    # Known value: sha256 over model NUL asset, the same in every process (no salted hash()).
    assert rank("pump-health", "pump-0001").hex()[:16] == "d84e1fbd054825c0"
    # An explicit list wins, restricted to the model's own assets.
    assert canary_assets("m", ["a", "b"], 100.0, ["a", "zz"]) == frozenset({"a"})


def test_agreement_rules() -> None:
    assert agrees("healthy", "healthy") is True
    assert agrees("healthy", "bearing_fault") is False
    assert agrees(100.0, 100.5) is True and agrees(100.0, 102.0) is False
    assert agrees(None, "x") is None and agrees(1.0, float("nan")) is False
