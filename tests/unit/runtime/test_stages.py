"""Gateway stages: parts start in order and close in reverse, a failed start closes exactly what
started, a failing close does not keep the others open; tasks stop by exact name."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from bridge.runtime.stages import Hook, Stage, Tasks
from bridge.runtime.tasks import TaskSet


class Part:
    def __init__(self, name: str, log: list[str], fail_start: bool = False) -> None:
        self.name, self._log, self._fail_start = name, log, fail_start

    async def start(self) -> None:
        if self._fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self._log.append(f"start {self.name}")

    async def close(self) -> None:
        self._log.append(f"close {self.name}")


async def test_parts_close_in_reverse_and_a_failed_start_closes_only_what_started() -> None:
    log: list[str] = []
    stage = Stage("sinks", [Part("a", log), Part("b", log), Part("c", log, fail_start=True)])
    with pytest.raises(RuntimeError, match="c cannot start"):
        await stage.start()
    await stage.close()
    assert log == ["start a", "start b", "close b", "close a"]
    await stage.close()  # closing twice closes nothing twice
    assert log == ["start a", "start b", "close b", "close a"]


async def test_a_failing_close_is_logged_and_the_others_still_close() -> None:
    log: list[str] = []

    async def broken() -> None:
        raise OSError("port busy")

    stage = Stage("sinks", [Part("a", log), Hook("server", on_close=broken), Part("c", log)])
    await stage.start()
    with capture_logs() as events:
        await stage.close()
    assert log == ["start a", "start c", "close c", "close a"]
    [failed] = [e for e in events if e["event"] == "part_close_failed"]
    assert (failed["stage"], failed["part"]) == ("sinks", "server")


async def test_tasks_stop_by_exact_name_then_drain() -> None:
    stop = asyncio.Event()
    tasks = TaskSet(stop)
    drained: list[str] = []

    async def forever() -> None:
        await asyncio.Event().wait()

    pump = Tasks("models", tasks, [("model:pump", forever)], then=lambda: drained.append("x"))
    pump2 = Tasks("others", tasks, [("model:pump2", forever)])
    await pump.start()
    await pump2.start()
    await pump.close()
    assert drained == ["x"]
    running = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("model:")]
    assert running == ["model:pump2"]  # a prefix would have taken it too
    assert not stop.is_set()  # cancelled on purpose: no failure
    await pump2.close()


async def test_a_crashed_task_sets_the_stop_event_given_at_run() -> None:
    tasks = TaskSet()
    stop = asyncio.Event()
    tasks.stop_on(stop)

    async def crash() -> None:
        raise ValueError("bug")

    await Tasks("t", tasks, [("crash", crash)]).start()
    await asyncio.wait_for(stop.wait(), 1)
    assert isinstance(tasks.failure, ValueError)
