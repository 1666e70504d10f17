"""Accuracy of the active and the candidate version from operator labels, joined with the stored
shadow/canary comparisons, against a hand-computed case on real SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import pytest
from emptyview import EmptyView
from stores import BACKENDS, temp_store

from bridge.api import ApiServices, create_app
from bridge.auth import Scope
from bridge.lifecycle.accuracy import accuracy, with_accuracy
from bridge.lifecycle.shadow import judge
from bridge.store.apikeys import ApiKeyRepository
from bridge.store.db import Store
from bridge.store.labels import LabelRepository
from bridge.store.registry import Comparison, RegistryRepository, VersionRecord
from bridge.types import Feedback, FeedbackAction, ModelStatus

Mode = Literal["shadow", "canary"]
T0 = 1714564800.0


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with temp_store(request.param, tmp_path, "a.db") as s:
        yield s


def test_judge() -> None:
    assert judge("confirm", "ok", "ok") is True
    assert judge("confirm", "ok", "fault") is False
    assert judge("reject", "ok", "ok") is False
    assert judge("reject", "ok", "fault") is None  # the right label is not known
    assert judge("acknowledge", "ok", "ok") is None
    assert judge("confirm", "1.0", "1.005") is True  # numbers within the agreement tolerance
    assert judge("confirm", "1.0", "1.5") is False


def _seed(store: Store) -> RegistryRepository:
    repo, labels = RegistryRepository(store), LabelRepository(store)
    rows: list[Comparison] = []

    def compare(
        pid: str, asset: str, a: str, c: str, mode: Mode = "shadow", cand: str = "2"
    ) -> None:
        rows.append(Comparison("m", asset, mode, "1", cand, pid, a, c, None, a == c, T0, "gw"))

    def label(pid: str, asset: str, action: FeedbackAction, shown: str, at: float) -> None:
        labels.add(Feedback(pid, asset, "m", action, "op", "rest", T0, shown), at=at)

    # pump-a, shadow: the operator judged the active version's (published) value.
    compare("a1", "pump-a", "ok", "ok")
    label("a1", "pump-a", "confirm", "ok", T0 + 1)  # active right, candidate right
    compare("a2", "pump-a", "ok", "fault")
    label("a2", "pump-a", "confirm", "ok", T0 + 1)  # active right, candidate wrong
    compare("a3", "pump-a", "fault", "ok")
    label("a3", "pump-a", "reject", "fault", T0 + 1)  # active wrong, candidate not judged
    compare("a4", "pump-a", "fault", "fault")
    label("a4", "pump-a", "reject", "fault", T0 + 1)  # both wrong
    compare("a5", "pump-a", "ok", "ok")
    label("a5", "pump-a", "acknowledge", "ok", T0 + 1)  # seen only: judges nothing
    compare("a6", "pump-a", "ok", "fault")
    label("a6", "pump-a", "confirm", "ok", T0 + 1)
    label("a6", "pump-a", "reject", "ok", T0 + 2)  # the latest answer counts: active wrong
    compare("a7", "pump-a", "ok", "ok")  # never labelled
    # pump-b, canary serving the candidate: the operator judged the candidate's value.
    compare("b1", "pump-b", "ok", "fault", mode="canary")
    label("b1", "pump-b", "confirm", "fault", T0 + 1)  # active wrong, candidate right
    compare("b2", "pump-b", "fault", "fault", mode="canary")
    label("b2", "pump-b", "reject", "fault", T0 + 1)  # both wrong
    # Another candidate's comparison, and a label of another model: not counted.
    compare("x1", "pump-a", "ok", "ok", cand="3")
    label("x1", "pump-a", "confirm", "ok", T0 + 1)
    labels.add(Feedback("a7", "pump-a", "other", "reject", "op", "rest", T0, "ok"), at=T0 + 1)
    repo.add_comparisons(rows)
    return repo


def test_accuracy_matches_a_hand_computed_case(store: Store) -> None:
    repo = _seed(store)
    got = {r.asset: r for r in accuracy(repo, "m", "2")}
    assert set(got) == {"pump-a", "pump-b"}
    a, b = got["pump-a"], got["pump-b"]
    assert (a.labelled, a.active_judged, a.active_correct) == (5, 5, 2)
    assert (a.candidate_judged, a.candidate_correct) == (3, 1)
    assert a.active_rate == pytest.approx(0.4) and a.candidate_rate == pytest.approx(1 / 3)
    assert (b.labelled, b.active_judged, b.active_correct) == (2, 2, 0)
    assert (b.candidate_judged, b.candidate_correct) == (2, 1)
    assert b.active_rate == 0.0 and b.candidate_rate == 0.5

    status = ModelStatus(
        "m", "1", "s1", "2", "s2", "shadow", agreement=(("pump-a", 0.5), ("pump-c", None))
    )
    (shown,) = with_accuracy(repo, [status])
    assert shown.accuracy[0][0] == "pump-a"
    assert shown.accuracy[0][1:] == pytest.approx((0.4, 1 / 3))
    assert shown.accuracy[1] == ("pump-c", None, None)
    # No candidate: nothing to judge against, the status is left as it is.
    plain = ModelStatus("m", "1", "s1", agreement=(("pump-a", None),))
    assert with_accuracy(repo, [plain]) == [plain]


async def test_rest_metrics_show_the_accuracy(store: Store) -> None:
    repo = _seed(store)
    for version in ("1", "2"):
        repo.add(
            VersionRecord(
                "m",
                version,
                "0" * 64,
                "m.onnx",
                1,
                None,
                {},
                None,
                {},
                "t",
                T0,
                "shadow" if version == "2" else "active",
                None,
                None,
                None,
                T0,
            ),
            "t",
        )
    key = ApiKeyRepository(store).create("reader", Scope.READ)[1]
    transport = httpx.ASGITransport(
        app=create_app(ApiServices.from_store(EmptyView("gw", T0), store))
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as http:
        r = await http.get(
            "/api/v1/models/m/versions/2/metrics", headers={"Authorization": f"Bearer {key}"}
        )
    assert r.status_code == 200, r.text
    got = {a["asset"]: a for a in r.json()["accuracy"]}
    assert got["pump-a"]["active_accuracy"] == pytest.approx(0.4)
    assert got["pump-a"]["candidate_accuracy"] == pytest.approx(1 / 3)
    assert (got["pump-a"]["candidate_judged"], got["pump-a"]["labelled"]) == (3, 5)
    assert got["pump-b"]["candidate_accuracy"] == 0.5 and got["pump-b"]["active_version"] == "1"
