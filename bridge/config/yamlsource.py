"""Read YAML into plain data while remembering the line of every key, and substitute ``${ENV}``.

PyYAML's composer keeps a mark on every node; we walk the node tree ourselves so each key path
(``("assets", "pump-01", "template")``) maps to the line it was written on. Duplicate keys, which
PyYAML would silently overwrite, are reported.

Speed (a 100,000-tag mapping is ~1 MB of YAML): the node tree is composed by libyaml
(``CSafeLoader``, same marks) when PyYAML has it, with the cyclic garbage collector paused
(composing allocates ~10^5 nodes, and each generation-0 collection walks them all again: 5x the
parse itself). A file with a syntax error is parsed again by the pure-Python loader, so the
message and line are the ones it has always given.

Aliases are allowed (OT engineers anchor a block once and repeat it with ``*name`` or
``<<: *name``) but bounded before anything is built: the composed node graph is walked once,
each node's expanded size remembered, so a "billion laughs" document is refused in
milliseconds without being expanded. Limits: aliases may add at most ``MAX_ALIAS_VALUES``
values, nesting may go ``MAX_DEPTH`` levels deep, and an alias inside the block it names
(``a: &a [*a]``, which would repeat forever) is an error at its key.

Substituted ``${ENV}`` values are recorded (path -> text as written, value -> placeholder) so
that errors can show the placeholder instead of a secret.
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

__all__ = [
    "MAX_ALIAS_VALUES",
    "MAX_DEPTH",
    "LineIndex",
    "Substitutions",
    "YamlDocument",
    "gc_paused",
    "read_yaml",
]

Path_ = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FastLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR_TAG = "tag:yaml.org,2002:str"
_ANCHOR = re.compile(r"&([^\s,\[\]{}]+)")

# About the number of values a 100,000-tag mapping holds: aliases may double the largest
# mapping we measured, no more. A billion-laughs file (10^9 values) is stopped at this count.
MAX_ALIAS_VALUES = 1_000_000
# Real mappings nest ~8 levels (templates.<t>.tags.<tag>.address.<key>); the walk below and
# the builder recurse once per level.
MAX_DEPTH = 64

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
class Substitutions:
    """Where ``${ENV}`` values went: errors show what was written, never the value."""

    # Key path -> the scalar as written in the file (with its ``${NAME}`` placeholders).
    written: dict[Path_, str] = field(default_factory=dict)
    # Substituted value -> its placeholder, for scrubbing text that quotes a value.
    values: dict[str, str] = field(default_factory=dict)
    # Read without the environment (``bridge validate --no-env``): variable -> the key paths
    # whose value keeps its ``${NAME}`` unfilled, to be given at run time.
    needs: dict[str, list[Path_]] = field(default_factory=dict)

    def unfilled(self, path: Path_) -> bool:
        """Whether ``path`` or a key above it holds a placeholder left unfilled: its value can
        only be checked at run time."""
        if not self.needs:
            return False
        held = {p for paths in self.needs.values() for p in paths}
        return any(path[:n] in held for n in range(len(path) + 1))

    def scrub(self, text: str, min_length: int = 4) -> str:
        """``text`` with every substituted value of ``min_length`` characters or more replaced
        by its placeholder (shorter ones would also hit ordinary words and numbers)."""
        for value in sorted(self.values, key=len, reverse=True):
            if len(value) >= min_length and value in text:
                text = text.replace(value, self.values[value])
        return text


@dataclass
class YamlDocument:
    file: str
    data: Any
    index: LineIndex
    issues: list[ConfigIssue]
    substitutions: Substitutions = field(default_factory=Substitutions)


def read_yaml(
    path: Path, env: Mapping[str, str] | None = None, *, placeholders: bool = False
) -> YamlDocument:
    """Parse ``path``; syntax errors, duplicate keys and unset ``${VARS}`` come back as issues.

    With ``placeholders`` an unset ``${VAR}`` (without ``:-default``) is no issue: the value
    keeps the placeholder as written and ``Substitutions.needs`` lists it."""
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
        except RecursionError:
            # libyaml stops at 1,000 levels; the pure-Python composer recurses per level.
            issue = ConfigIssue(
                file,
                None,
                "(yaml syntax)",
                "the file is nested too deeply to read",
                f"a mapping needs far fewer than {MAX_DEPTH} levels: flatten the structure",
            )
            return YamlDocument(file, None, index, [issue])
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
        shape_issue = _check_shape(root, file, text)
    if shape_issue is not None:
        return YamlDocument(file, None, index, [shape_issue])
    substitutions = Substitutions()
    with _collector_paused():
        data = _build(root, (), index, issues, file, environ, loader, substitutions, placeholders)
    return YamlDocument(file, data, index, issues, substitutions)


def _check_shape(root: yaml.Node, file: str, text: str) -> ConfigIssue | None:
    """The first alias that loops or overruns the budget, or the first too-deep block.

    Depth-first over the composed graph, in document order; a block reached again (through an
    alias) is not entered again: its remembered size is charged to the alias budget. Scalars
    count 1 and are not tracked (an aliased scalar adds one value: no bomb), which keeps this
    walk at a fraction of the build's time on a 100,000-tag mapping.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    added = 0

    def issue(path: Path_, line: int, message: str, hint: str) -> ConfigIssue:
        return ConfigIssue(file, line, _dotted(path), message, hint)

    def walk(node: yaml.Node, path: Path_, line: int) -> int | ConfigIssue:
        nonlocal added
        key = id(node)
        if key in open_nodes:
            anchor_line = node.start_mark.line + 1
            name = _anchor_at(text, node.start_mark)
            alias = f"alias *{name}" if name else "an alias"
            where = f"&{name} on line {anchor_line}" if name else f"on line {anchor_line}"
            return issue(
                path,
                line,
                f"{alias} is used inside the block it names (anchored as {where}): "
                "it would repeat forever",
                "an alias may only repeat a block that does not contain it: write the "
                "values out, or use `templates:` for repeated tags",
            )
        known = sizes.get(key)
        if known is not None:
            added += known
            if added > MAX_ALIAS_VALUES:
                return issue(
                    path,
                    line,
                    f"aliases would add more than {MAX_ALIAS_VALUES:,} values to the mapping "
                    "(a 'billion laughs' document?)",
                    "repeat fewer or smaller blocks with aliases; for repeated tags use "
                    "`templates:` and `vars:`",
                )
            return known
        if len(path) > MAX_DEPTH:
            return issue(
                path,
                line,
                f"nested more than {MAX_DEPTH} levels deep",
                "flatten the structure: a mapping needs far fewer levels",
            )
        size = 1
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child: Path_ | None = None
                for part in (key_node, value_node):
                    if isinstance(part, yaml.ScalarNode):
                        size += 1
                        continue
                    if child is None:
                        child = (*path, _key_label(key_node))
                    result = walk(part, child, key_node.start_mark.line + 1)
                    if isinstance(result, ConfigIssue):
                        return result
                    size += result
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                if isinstance(item, yaml.ScalarNode):
                    size += 1
                    continue
                # An alias's node marks its anchor, elsewhere: point at the sequence instead.
                reached = id(item) in sizes or id(item) in open_nodes
                result = walk(item, (*path, i), line if reached else item.start_mark.line + 1)
                if isinstance(result, ConfigIssue):
                    return result
                size += result
        open_nodes.discard(key)
        sizes[key] = size
        return size

    result = walk(root, (), root.start_mark.line + 1)
    return result if isinstance(result, ConfigIssue) else None


def _key_label(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "(complex key)"


def _anchor_at(text: str, mark: yaml.Mark) -> str | None:
    """The anchor's name written where ``mark`` points (marks of an anchored node start at
    its ``&name``; the composed graph keeps no names)."""
    lines = text.splitlines()
    if not 0 <= mark.line < len(lines):
        return None
    match = _ANCHOR.match(lines[mark.line], mark.column)
    return match.group(1) if match else None


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
    subs: Substitutions,
    placeholders: bool = False,
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
            out[key] = _build(
                value_node, child, index, issues, file, env, loader, subs, placeholders
            )
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            index.lines[child] = item.start_mark.line + 1
            items.append(_build(item, child, index, issues, file, env, loader, subs, placeholders))
        return items
    value = _scalar(node, loader)
    if isinstance(value, str) and "${" in value:
        line = node.start_mark.line + 1
        return _substitute(value, path, line, issues, file, env, subs, placeholders)
    return value


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    # A plain string scalar is its own value (what SafeConstructor.construct_yaml_str returns);
    # skipping the constructor's dispatch for those is most of the walk's time.
    if type(node) is yaml.ScalarNode and node.tag == _STR_TAG:
        return node.value
    return loader.construct_object(node, deep=True)


def _substitute(
    text: str,
    path: Path_,
    line: int,
    issues: list[ConfigIssue],
    file: str,
    env: Mapping[str, str],
    subs: Substitutions,
    placeholders: bool = False,
) -> str:
    subs.written[path] = text

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            value = env[name]
            if value:
                subs.values.setdefault(value, f"${{{name}}}")
            return value
        if default is not None:
            return default
        if placeholders:
            subs.needs.setdefault(name, []).append(path)
            return match.group(0)
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
