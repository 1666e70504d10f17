"""Durable delivery sits above the store: the store, and the drift package beside the outbox,
import nothing of ``bridge.outbox`` (not even inside a function). The outbox hands the store
its feeds as ``OutboxHook``/``EventStager`` callbacks instead.

Checked on the import graph (grimp, which import-linter uses) until the ``layers`` contract
covers it.
"""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("bridge", cache_dir=None)


def outbox_modules(graph: grimp.ImportGraph) -> set[str]:
    return {"bridge.outbox", *graph.find_descendants("bridge.outbox")}


def test_no_store_module_reaches_the_outbox(graph: grimp.ImportGraph) -> None:
    chain = graph.find_shortest_chain("bridge.store", "bridge.outbox", as_packages=True)
    assert chain is None, f"the store reaches the outbox: {' -> '.join(chain or ())}"


def test_the_drift_alert_writer_reaches_no_outbox_module(graph: grimp.ImportGraph) -> None:
    chains = {m: graph.find_shortest_chain("bridge.drift.writer", m) for m in outbox_modules(graph)}
    assert {m: c for m, c in chains.items() if c is not None} == {}


def test_the_graph_sees_the_imports_it_judges(graph: grimp.ImportGraph) -> None:
    # The check above would pass on an empty graph: the outbox does import the store.
    assert graph.chain_exists("bridge.outbox", "bridge.store", as_packages=True)
    assert "bridge.store.outbox" in graph.find_modules_directly_imported_by("bridge.outbox.feed")
