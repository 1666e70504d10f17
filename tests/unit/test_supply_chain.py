"""Supply chain: both locks pin every dependency with hashes, scripts/setup and the image install
only from them, and the image holds the gateway alone (no simulators), runs unprivileged and
has a health check. The image cannot be built here (no container engine), so its Dockerfile is
read; what a build would do with it (missing simulators) is run for real below."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=~!;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _locked(path: Path) -> dict[str, list[str]]:
    """Package -> its hashes, from a pip-compile --generate-hashes file."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in path.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            current = _name(line.split("==")[0])
            assert "==" in line, f"{path.name}: {line!r} is not pinned"
            found[current] = []
        elif "--hash=sha256:" in line:
            found[current].append(line.split("--hash=sha256:")[1].split()[0])
    return found


def _requirements(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    return {_name(r) for r in wanted}


def test_locks_pin_every_dependency_with_hashes() -> None:
    for lock, extras in (
        (ROOT / "scripts" / "requirements.lock", ("dev", "model", "postgresql")),
        (ROOT / "deploy" / "requirements.lock", ("postgresql",)),
    ):
        locked = _locked(lock)
        missing = _requirements(extras) - set(locked)
        assert not missing, f"{lock.name} lacks {sorted(missing)}: run scripts/lock"
        assert all(locked.values()), f"{lock.name}: a package without --hash"
    # The CVE floor holds in what is installed, not only in pyproject.
    h11 = next(line for line in (ROOT / "scripts/requirements.lock").read_text().splitlines()
               if line.startswith("h11=="))  # fmt: skip
    assert tuple(int(x) for x in h11.split("==")[1].split()[0].split(".")[:2]) >= (0, 16)


def test_setup_and_image_install_only_from_the_locks() -> None:
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "--require-hashes -r scripts/requirements.lock" in setup
    assert "--no-deps -e ." in setup
    docker = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in docker
    installs = [line for line in docker.splitlines() if "pip install" in line]
    assert all("--require-hashes" in line or "--no-deps" in line for line in installs), installs


def test_image_holds_the_gateway_only_runs_unprivileged_and_checks_health() -> None:
    lines = [line.strip() for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()]
    copied = [line.split()[1] for line in lines if line.startswith("COPY")]
    assert not {"simulators", "tests", "bench", "."} & set(copied), copied
    users = [line.split()[1] for line in lines if line.startswith("USER")]
    assert users and users[-1] not in ("root", "0"), users
    last_user = max(i for i, line in enumerate(lines) if line.startswith("USER"))
    assert not any(line.startswith("RUN") for line in lines[last_user:])
    assert any(line.startswith("HEALTHCHECK") for line in lines)


def test_commands_of_a_missing_package_say_so() -> None:
    # What the image does: the simulators' entry points remain, their package does not.
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'bridge.simulators' or name.startswith('bridge.simulators.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from bridge.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    listed = subprocess.run(
        [sys.executable, "-c", blocker, "--help"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert "demo" in listed.stdout and "(not installed here)" in listed.stdout
    demo = subprocess.run(
        [sys.executable, "-c", blocker, "demo", "--duration", "5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 2
    assert "`bridge demo` is not part of this installation" in demo.stderr
    assert "Traceback" not in demo.stderr
