"""Read YAML into plain data while remembering the line of every key, and substitute ``${ENV}``.

PyYAML's composer keeps a mark on every node; we walk the node tree ourselves so each key path
(``("assets", "pump-01", "template")``) maps to the line it was written on. Duplicate keys, which
PyYAML would silently overwrite, are reported.

Speed (a 100,000-tag mapping is ~1 MB of YAML): the node tree is composed by libyaml
(``CSafeLoader``, same marks) when PyYAML has it, with the cyclic garbage collector paused
(composing allocates ~10^5 nodes, and each generation-0 collection walks them all again: 5x the
parse itself). A file with a syntax error is parsed again by the pure-Python loader, so the
message and line are the ones it has always given.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import yaml

from bridge.errors import ConfigIssue

__all__ = ["LineIndex", "YamlDocument", "gc_paused", "read_yaml"]

Path_ = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FastLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextmanager
def _collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def gc_paused(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``func`` with the cyclic garbage collector paused: building ~10^5 small objects of
    config triggers a collection every 700 allocations, each walking all of them."""

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with _collector_paused():
            return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


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
    try:
        with _collector_paused():
            loader, root = _compose(_FastLoader, text)
    except yaml.YAMLError:
        loader, root = None, None
    if loader is None:
        # Only for a broken file: the pure-Python loader words errors as this reader always has.
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
    with _collector_paused():
        data = _build(root, (), index, issues, file, environ, loader)
    return YamlDocument(file, data, index, issues)


def _compose(
    loader_class: type[yaml.SafeLoader], text: str
) -> tuple[yaml.SafeLoader, yaml.Node | None]:
    loader = loader_class(text)
    try:
        return loader, loader.get_single_node()
    finally:
        loader.dispose()


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
            key = _scalar(key_node, loader)
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
    value = _scalar(node, loader)
    if isinstance(value, str) and "${" in value:
        return _substitute(value, path, node.start_mark.line + 1, issues, file, env)
    return value


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    # A plain string scalar is its own value (what SafeConstructor.construct_yaml_str returns);
    # skipping the constructor's dispatch for those is most of the walk's time.
    if type(node) is yaml.ScalarNode and node.tag == _STR_TAG:
        return node.value
    return loader.construct_object(node, deep=True)


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
