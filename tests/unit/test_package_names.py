"""One name per module: connectors/ and simulators/ are installed and imported as
``bridge.connectors`` and ``bridge.simulators`` only (generic top-level names collide with other
distributions), and the import contracts still cover the whole core."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINKED = ("connectors", "simulators")


@pytest.mark.parametrize(
    "module", ["connectors", "simulators", "connectors.opcua", "simulators.demo"]
)
def test_the_old_top_level_names_refuse_to_import_from_the_checkout(module: str) -> None:
    # From the checkout root, where the folders are on sys.path under their own name.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    top = module.split(".")[0]
    assert done.returncode != 0, f"import {module} worked"
    assert f"ImportError: import bridge.{top}, not {top}" in done.stderr, done.stderr[-2000:]


def test_the_project_names_import_and_are_the_folders() -> None:
    import bridge.connectors.opcua
    import bridge.simulators.demo

    for name in LINKED:
        link = ROOT / "bridge" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()
    assert Path(bridge.connectors.opcua.__file__).resolve().is_relative_to(ROOT / "connectors")
    assert bridge.simulators.demo.DEFAULT_MAPPING.is_file()
    assert not any(m == n or m.startswith(f"{n}.") for m in sys.modules for n in LINKED)


def _core() -> set[str]:
    names = set()
    for child in (ROOT / "bridge").iterdir():
        if child.name in (*LINKED, "__init__.py"):
            continue
        if child.is_dir() and (child / "__init__.py").is_file():
            names.add(f"bridge.{child.name}")
        elif child.suffix == ".py":
            names.add(f"bridge.{child.stem}")
    return names


def test_the_core_contract_names_every_core_module() -> None:
    # A forbidden contract cannot say "bridge minus bridge.connectors": the core is listed, and a
    # module added to bridge/ without being listed would escape the rule.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    linter = config["tool"]["importlinter"]
    assert linter["root_packages"] == ["bridge"]
    (core,) = [
        c
        for c in linter["contracts"]
        if c["name"] == "The core imports no connector, simulator or protocol library"
    ]
    assert set(core["source_modules"]) == _core()
    assert {"bridge.connectors", "bridge.simulators", "asyncua", "pymodbus"} <= set(
        core["forbidden_modules"]
    )
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["bridge*"]
    assert not set(LINKED) & set(config["tool"]["mypy"]["packages"])
