"""The shard's local deadline: past it nothing is published, whatever the leases say."""

from __future__ import annotations

from bridge.fleet.shard import Shard


def test_fences_are_given_until_the_deadline_and_none_after() -> None:
    now = [100.0]
    shard = Shard(clock=lambda: now[0])
    assert shard.fences() == {} and not shard.valid
    shard.update({"pump-01": 3, "pump-02": 7}, valid_until=104.0)
    assert shard.fences().get("pump-01") == 3 and shard.assets() == {"pump-01", "pump-02"}
    now[0] = 103.999
    assert shard.fences().get("pump-02") == 7
    now[0] = 104.0  # the leases were not renewed in time: stop publishing
    assert shard.fences() == {} and shard.fences().get("pump-01") is None and not shard.valid
    shard.update({"pump-02": 8}, valid_until=110.0)  # renewed (pump-01 went to another)
    assert shard.fences() == {"pump-02": 8}
    shard.clear()
    assert shard.assets() == frozenset()
