"""Read YAML into plain data while remembering the line of every key, and substitute ``${ENV}``.

PyYAML's composer keeps a mark on every node; we walk the node tree ourselves so each key path
(``("assets", "pump-01", "template")``) maps to the line it was written on. Duplicate keys, which
PyYAML would silently overwrite, are reported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.errors import ConfigIssue

__all__ = ["LineIndex", "YamlDocument", "read_yaml"]

Path_ = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class LineIndex:
    """Key path -> 1-based line number."""

    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path`` or of its deepest known ancestor.

        Paths from validators may hold steps that are not in the file (a discriminated union's
        tag, a list index into a default): those steps are skipped, not fatal.
        """
        best: int | None = self.lines.get(())
        known: Path_ = ()
        for step in path:
            candidate = (*known, step)
            if candidate in self.lines:
                known = candidate
                best = self.lines[candidate]
        return best


@dataclass
class YamlDocument:
    file: str
    data: Any
    index: LineIndex
    issues: list[ConfigIssue]


def read_yaml(path: Path, env: Mapping[str, str] | None = None) -> YamlDocument:
    """Parse ``path``; syntax errors, duplicate keys and unset ``${VARS}`` come back as issues."""
    environ = os.environ if env is None else env
    file = str(path)
    issues: list[ConfigIssue] = []
    index = LineIndex()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        issue = ConfigIssue(
            file,
            None,
            "(file)",
            f"cannot read the mapping: {exc.strerror}",
            "check the path and permissions",
        )
        return YamlDocument(file, None, index, [issue])
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or str(exc)
        issue = ConfigIssue(
            file,
            line,
            "(yaml syntax)",
            problem,
            "check indentation and that every 'key: value' has a space after ':'",
        )
        return YamlDocument(file, None, index, [issue])
    finally:
        loader.dispose()
    if root is None:
        return YamlDocument(file, {}, index, issues)
    index.lines[()] = root.start_mark.line + 1
    data = _build(root, (), index, issues, file, environ, loader)
    return YamlDocument(file, data, index, issues)


def _build(
    node: yaml.Node,
    path: Path_,
    index: LineIndex,
    issues: list[ConfigIssue],
    file: str,
    env: Mapping[str, str],
    loader: yaml.SafeLoader,
) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys ("<<: *anchor")
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                issues.append(
                    ConfigIssue(
                        file,
                        key_node.start_mark.line + 1,
                        _dotted(path),
                        "a key must be a plain word",
                        "quote the key",
                    )
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if key in out:
                issues.append(
                    ConfigIssue(
                        file,
                        line,
                        _dotted(child),
                        f"duplicate key (first written on line {index.lines.get(child)})",
                        "remove one of the two; YAML would silently keep only the last",
                    )
                )
            index.lines[child] = line
            out[key] = _build(value_node, child, index, issues, file, env, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            index.lines[child] = item.start_mark.line + 1
            items.append(_build(item, child, index, issues, file, env, loader))
        return items
    value = loader.construct_object(node, deep=True)
    if isinstance(value, str) and "${" in value:
        return _substitute(value, path, node.start_mark.line + 1, issues, file, env)
    return value


def _substitute(
    text: str, path: Path_, line: int, issues: list[ConfigIssue], file: str, env: Mapping[str, str]
) -> str:
    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        issues.append(
            ConfigIssue(
                file,
                line,
                _dotted(path),
                f"environment variable {name} is not set",
                f"export {name}=... before starting bridge, or write ${{{name}:-default}}",
            )
        )
        return ""

    return _ENV.sub(repl, text)


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path) or "(top level)"
