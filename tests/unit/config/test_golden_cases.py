"""Golden mapping mistakes: each folder in tests/cases/config holds a broken mapping.yaml and an
expected.txt listing every issue as `<line> <key> | <text> | <text>...` (texts are fragments the
issue must contain). The loader must report exactly these issues, each with a fix hint. A case
may give the environment in env.txt (`NAME=value` lines): no issue may show any of its values
(substituted secrets are shown as their `${NAME}` placeholder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError, ConfigIssue
from bridge.prepare import prepare

CASES = Path(__file__).resolve().parents[2] / "cases" / "config"


def _expected(case: Path) -> list[tuple[int, str, list[str]]]:
    out = []
    for raw in (case / "expected.txt").read_text().splitlines():
        if not raw.strip():
            continue
        head, *fragments = [part.strip() for part in raw.split("|")]
        line, key = head.split(" ", 1)
        out.append((int(line), key, [f for f in fragments if f]))
    return out


def _env(case: Path) -> dict[str, str]:
    file = case / "env.txt"
    if not file.exists():
        return {}
    pairs = (line.split("=", 1) for line in file.read_text().splitlines() if line.strip())
    return {name: value for name, value in pairs}


@pytest.mark.parametrize(
    "case", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name
)
def test_golden_case(case: Path) -> None:
    env = _env(case)
    with pytest.raises(ConfigError) as info:
        prepare(case / "mapping.yaml", env=env)
    issues: list[ConfigIssue] = info.value.issues
    expected = _expected(case)
    rendered = "\n".join(str(i) for i in issues)
    assert len(issues) == len(expected), f"got:\n{rendered}"
    for line, key, fragments in expected:
        matches = [
            i
            for i in issues
            if i.line == line and i.key == key and all(f in str(i) for f in fragments)
        ]
        assert matches, f"no issue at line {line} key {key} with {fragments}; got:\n{rendered}"
    for issue in issues:
        assert issue.file.endswith("mapping.yaml")
        assert issue.hint, f"issue without a fix hint: {issue}"
    for name, value in env.items():
        assert value not in rendered, f"the value of ${name} is shown:\n{rendered}"
        assert value not in str(info.value)
