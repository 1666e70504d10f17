"""Rendezvous hashing: every gateway gets its share, and a join or a leave moves only the
share of the gateway that joined or left."""

from __future__ import annotations

from bridge.fleet.hashing import owner, share

ASSETS = [f"pump-{i:04d}" for i in range(2000)]


def _owners(members: list[str]) -> dict[str, str]:
    return {a: owner(a, members) for a in ASSETS}


def test_three_gateways_get_about_a_third_each_and_every_asset_once() -> None:
    members = ["gw-a", "gw-b", "gw-c"]
    shares = [share(m, ASSETS, members) for m in members]
    assert set().union(*shares) == set(ASSETS)
    assert sum(len(s) for s in shares) == len(ASSETS)  # disjoint
    for s in shares:
        assert 0.28 * len(ASSETS) < len(s) < 0.39 * len(ASSETS), [len(x) for x in shares]


def test_a_leave_moves_only_the_leavers_assets_spread_over_the_others() -> None:
    before = _owners(["gw-a", "gw-b", "gw-c"])
    after = _owners(["gw-a", "gw-b"])
    moved = [a for a in ASSETS if before[a] != after[a]]
    assert moved and all(before[a] == "gw-c" for a in moved)
    assert len(moved) == sum(1 for a in ASSETS if before[a] == "gw-c")
    to_a = sum(1 for a in moved if after[a] == "gw-a")
    assert 0.35 * len(moved) < to_a < 0.65 * len(moved)


def test_a_join_takes_only_its_share_from_everyone() -> None:
    before = _owners(["gw-a", "gw-b"])
    after = _owners(["gw-a", "gw-b", "gw-c"])
    moved = [a for a in ASSETS if before[a] != after[a]]
    assert moved and all(after[a] == "gw-c" for a in moved)
    assert {before[a] for a in moved} == {"gw-a", "gw-b"}


def test_the_answer_does_not_depend_on_the_order_of_members() -> None:
    assert _owners(["gw-c", "gw-a", "gw-b"]) == _owners(["gw-a", "gw-b", "gw-c"])
    assert owner("pump-0001", []) == ""
    assert share("gw-a", ASSETS[:10], []) == set(ASSETS[:10])  # alone, it serves everything
