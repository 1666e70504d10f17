"""Durable delivery sits above the store: the store, and the drift package beside the outbox,
import nothing of ``bridge.outbox``, directly or through another module, not even inside a
function. The outbox hands them its feeds as ``OutboxHook``/``EventStager`` callbacks instead.

Checked on the import graph (grimp, which import-linter uses) until the ``layers`` contract
covers it.
"""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("bridge", cache_dir=None)


@pytest.mark.parametrize("importer", ["bridge.store", "bridge.drift"])
def test_no_import_chain_leads_to_the_outbox(graph: grimp.ImportGraph, importer: str) -> None:
    chain = graph.find_shortest_chain(importer, "bridge.outbox", as_packages=True)
    assert chain is None, f"{importer} reaches bridge.outbox: {' -> '.join(chain or ())}"


def test_the_graph_sees_the_imports_it_judges(graph: grimp.ImportGraph) -> None:
    # The check above would pass on an empty graph: the outbox does import the store.
    assert graph.chain_exists("bridge.outbox", "bridge.store", as_packages=True)
    assert "bridge.store.outbox" in graph.find_modules_directly_imported_by("bridge.outbox.feed")
