"""YAML aliases are bounded: a recursive alias is an error at its key, a "billion laughs" file
is refused quickly in bounded memory, nesting is limited; ordinary anchors keep working.

(The file-level golden cases yaml_recursive_alias, yaml_recursive_merge and yaml_alias_bomb in
tests/cases/config show the exact issues.)"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from bridge.config import load_mapping
from bridge.config.yamlsource import MAX_ALIAS_VALUES, MAX_DEPTH, read_yaml
from bridge.errors import ConfigError


def _laughs(levels: int, width: int) -> str:
    lines = ["version: 1", "sources: {}", "assets: {}", "templates:"]
    lines.append("  l0: &l0 [" + ", ".join(['"lol"'] * width) + "]")
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "mapping.yaml"
    file.write_text(text, encoding="utf-8")
    return file


@pytest.mark.serial
@pytest.mark.parametrize(("levels", "width"), [(10, 10), (40, 10), (9, 1000)])
def test_billion_laughs_is_refused_fast_in_bounded_memory(
    tmp_path: Path, levels: int, width: int
) -> None:
    # (40, 10) would expand to 10^40 values; (9, 1000) to 10^27 from a 60 kB file.
    file = _write(tmp_path, _laughs(levels, width))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            load_mapping(file, env={})
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [issue] = info.value.issues
    assert f"more than {MAX_ALIAS_VALUES:,} values" in issue.message
    assert issue.key.startswith("templates.l")
    assert issue.line is not None and issue.hint
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert peak < 64 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize(
    ("text", "key", "line", "anchor"),
    [
        ("a: &a [*a]\n", "a.0", 1, "&a on line 1"),
        ("a: &a {b: *a}\n", "a.b", 1, "&a on line 1"),
        ("top:\n  list: &x\n    - 1\n    - inner: *x\n", "top.list.1.inner", 4, "&x on line 2"),
        ("base: &b\n  unit: bar\n  more:\n    <<: *b\n", "base.more.<<", 4, "&b on line 1"),
    ],
)
def test_recursive_alias_is_a_config_issue(
    tmp_path: Path, text: str, key: str, line: int, anchor: str
) -> None:
    doc = read_yaml(_write(tmp_path, text), env={})
    assert doc.data is None
    [issue] = doc.issues
    assert (issue.key, issue.line) == (key, line), str(issue)
    assert anchor in issue.message and "repeat forever" in issue.message
    assert issue.hint


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    depth = MAX_DEPTH + 10
    doc = read_yaml(_write(tmp_path, "a: " + "[" * depth + "]" * depth + "\n"), env={})
    [issue] = doc.issues
    assert f"more than {MAX_DEPTH} levels" in issue.message


def test_nesting_beyond_libyaml_limit_is_an_issue_not_a_crash(tmp_path: Path) -> None:
    # libyaml stops at 1,000 levels; the pure-Python reader that words syntax errors then
    # recursed past Python's limit.
    depth = 5000
    doc = read_yaml(_write(tmp_path, "a: " + "[" * depth + "]" * depth + "\n"), env={})
    [issue] = doc.issues
    assert "nested" in issue.message and issue.hint


def test_ordinary_anchors_and_merges_still_work(tmp_path: Path) -> None:
    # 2,000 assets merging one defaults block and aliasing one address block: what OT
    # engineers write, far below the limits.
    lines = [
        "version: 1",
        "sources:",
        "  plc: {kind: modbus, host: 127.0.0.1}",
        "x-defaults: &tag {source: plc, unit: bar, deadband: 0.1}",
        "x-address: &addr {table: holding, address: 0}",
        "assets:",
    ]
    for i in range(2000):
        lines += [
            f"  a{i}:",
            "    tags:",
            "      level:",
            "        <<: *tag",
            "        address: *addr",
        ]
    text = "\n".join(lines) + "\n"
    doc = read_yaml(_write(tmp_path, text), env={})
    assert doc.issues == []
    assert doc.data["assets"]["a1999"]["tags"]["level"]["unit"] == "bar"
    assert doc.data["assets"]["a1999"]["tags"]["level"]["address"]["table"] == "holding"
