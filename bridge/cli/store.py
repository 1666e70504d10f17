"""The one way a ``bridge`` command finds and opens a gateway's store.

Exactly one of ``--mapping FILE`` (the mapping's ``gateway.store``, opened with the mapping's
durability settings, so a command writes with the same ``synchronous`` level as the gateway it
serves) or ``--store URL`` (a database URL, with the store's defaults). The mapping, when given,
is handed back too: some commands take more from it (the models' policy and names).

SQLAlchemy and the mapping loader are imported when a store is opened, not when the command
group is built: ``bridge validate`` and ``bridge --help`` should not pay for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from bridge.config import Mapping
    from bridge.store.db import Store

__all__ = ["OpenedStore", "opened_store", "store_options"]

F = TypeVar("F", bound=Callable[..., Any])

_MAPPING_HELP = "Use the store of this mapping's gateway.store (with its durability settings)."


def store_options(mapping_help: str = _MAPPING_HELP) -> Callable[[F], F]:
    """``--mapping FILE`` and ``--store URL``, passed as ``mapping`` and ``store_url``."""

    def add(command: F) -> F:
        command = click.option(
            "--store", "store_url", help="Database URL of the store (instead of --mapping)."
        )(command)
        return click.option("--mapping", type=click.Path(path_type=Path), help=mapping_help)(
            command
        )

    return add


@dataclass(frozen=True, slots=True)
class OpenedStore:
    store: Store
    mapping: Mapping | None  # None with --store


@contextmanager
def opened_store(
    mapping: Path | None, store_url: str | None, *, create: bool = False
) -> Iterator[OpenedStore]:
    """Open the chosen store and dispose of it afterwards.

    Only a command that adds something (``create``: a key, a model version) makes a store that
    is not there yet; every other one fails with "no store at ..." and creates nothing (a
    mistyped path or another working directory must not leave an empty database behind).

    Raises ``click.UsageError`` unless exactly one of the two is given, ``ConfigError`` for a
    mapping with problems and ``StoreError`` for a store that cannot be opened.
    """
    if (mapping is None) == (store_url is None):
        raise click.UsageError("give exactly one of --mapping FILE or --store URL")
    from bridge.store.db import open_store

    loaded: Mapping | None = None
    if mapping is not None:
        from bridge.config.loader import load_mapping

        loaded = load_mapping(mapping)
        durability = loaded.gateway.durability
        store = open_store(
            loaded.gateway.store,
            synchronous=durability.synchronous,
            profile=durability.profile,
            must_exist=not create,
        )
    else:
        assert store_url is not None
        store = open_store(store_url, must_exist=not create)
    try:
        yield OpenedStore(store, loaded)
    finally:
        store.dispose()
