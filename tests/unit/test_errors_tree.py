"""The exception tree drawn in ``bridge.errors``'s docstring is the real one: every
``BridgeError`` subclass defined under ``bridge`` (``bridge.connectors`` included) is drawn, in
the module it lives in, under its base class, and nothing drawn is gone."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import bridge
import bridge.errors
from bridge.errors import BridgeError

# ``python -m bridge`` runs the CLI when imported; Alembic's env and scripts run only inside
# Alembic (they define tables, not errors); the simulators are test equipment, not the gateway.
_SKIP = ("bridge.__main__", "bridge.store.migrations", "bridge.simulators")

# "    ├── Name   module.path   text": the name's column gives its depth (4 per level).
_ENTRY = re.compile(r"^(?P<lead>[ │├└─]*?)(?P<name>[A-Z]\w+)\s+(?P<module>bridge\.[\w.]+)")


def _import_everything() -> list[str]:
    failed = []
    for package in (bridge,):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.startswith(_SKIP):
                continue
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # reported below: an unimportable module hides its errors
                failed.append(f"{info.name}: {exc!r}")
    return failed


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    subs: list[type] = cls.__subclasses__()
    for sub in subs:
        found |= {sub, *_subclasses(sub)}
    return found


def _ours(cls: type) -> bool:
    return cls.__module__.startswith("bridge.") and not cls.__module__.startswith(_SKIP)


def _drawn(module: ModuleType) -> dict[str, tuple[str, str | None]]:
    """name -> (module, drawn parent) for every entry of the drawing."""
    entries: dict[str, tuple[str, str | None]] = {}
    parents: list[str] = []  # parents[d] = the last entry seen at depth d
    for line in (module.__doc__ or "").splitlines():
        m = _ENTRY.match(line)
        if m is None:
            continue
        depth = (len(m["lead"]) - 4) // 4
        del parents[depth:]
        entries[m["name"]] = (m["module"], parents[-1] if parents else None)
        parents.append(m["name"])
    return entries


def test_every_bridge_error_is_drawn_where_it_lives_under_its_base() -> None:
    assert _import_everything() == []
    drawn = _drawn(bridge.errors)
    assert drawn.get("BridgeError") == ("bridge.errors", None)
    real = {cls for cls in _subclasses(BridgeError) if _ours(cls)}
    names = [cls.__name__ for cls in real]
    assert len(names) == len(set(names)), "two BridgeError subclasses share a name"
    for cls in real:
        assert cls.__name__ in drawn, f"{cls.__module__}.{cls.__name__} is not drawn"
        module, parent = drawn[cls.__name__]
        assert module == cls.__module__, f"{cls.__name__} lives in {cls.__module__}"
        assert parent in {base.__name__ for base in cls.__bases__}, (
            f"{cls.__name__} is drawn under {parent}, its bases are {cls.__bases__}"
        )
    gone = set(drawn) - {"BridgeError"} - set(names)
    assert not gone, f"drawn but not defined any more: {sorted(gone)}"


def test_the_drawing_parser_sees_the_whole_tree() -> None:
    # Guards the test above against a parser that reads nothing (and so checks nothing).
    drawn = _drawn(bridge.errors)
    assert drawn["NotConnected"] == ("bridge.errors", "ConnectorError")
    assert drawn["RegistryConflict"] == ("bridge.store.registry", "RegistryError")
    assert drawn["StoreError"] == ("bridge.errors", "BridgeError")
