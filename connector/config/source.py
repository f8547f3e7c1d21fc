"""Reading mappings YAML while remembering where every key and value stands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Problem

KeyPath = tuple[str | int, ...]


@dataclass
class Located:
    """The plain data of one or more YAML files and the file:line of every path in it."""

    data: dict[str, Any] = field(default_factory=dict)
    lines: dict[KeyPath, tuple[str, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def where(self, path: KeyPath) -> tuple[str, int | None]:
        """The file and line of path, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        files = {f for f, _ in self.lines.values()}
        return (sorted(files)[0] if files else "mappings", None)

    def problem(self, path: KeyPath, message: str, hint: str = "") -> Problem:
        file, line = self.where(path)
        return Problem(file, line, dotted(path), message, hint)


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_file(path: Path, shown_as: str, into: Located) -> None:
    """Merge one YAML file's top-level keys into `into`, recording lines and problems."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        into.problems.append(Problem(shown_as, None, "", f"cannot read the file: {exc}"))
        return
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        into.problems.append(
            Problem(shown_as, line, "", f"not valid YAML: {reason}", "check indentation and quotes")
        )
        return
    if node is None:
        return
    if not isinstance(node, yaml.MappingNode):
        into.problems.append(
            Problem(shown_as, node.start_mark.line + 1, "", "the file must hold a mapping of keys")
        )
        return
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        top: KeyPath = (str(key),)
        existing = into.data.get(str(key))
        if isinstance(existing, dict) and isinstance(value_node, yaml.MappingNode):
            # inputs:, metrics:, scores: may be spread over several files, one entry each
            extra = _plain(value_node, top, shown_as, into, seen=existing)
            existing.update(extra)
            continue
        if top in into.lines:
            first_file, first_line = into.lines[top]
            into.problems.append(
                Problem(
                    shown_as,
                    key_node.start_mark.line + 1,
                    str(key),
                    f"already defined in {first_file}:{first_line}",
                    "each top-level key may appear in one file only",
                )
            )
            continue
        into.lines[top] = (shown_as, key_node.start_mark.line + 1)
        into.data[str(key)] = _plain(value_node, top, shown_as, into)


_CONSTRUCTOR = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    return _CONSTRUCTOR.construct_object(node)


def _plain(
    node: yaml.Node, path: KeyPath, file: str, into: Located, seen: dict[Any, Any] | None = None
) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if isinstance(key, bool | float) or key is None:
                key = key_node.value  # 'yes', '1.5', '~' stay the text the admin wrote
            child = (*path, str(key))
            line = key_node.start_mark.line + 1
            if key in out or (seen is not None and key in seen):
                into.problems.append(
                    Problem(
                        file,
                        line,
                        dotted(child),
                        "defined twice (first at {}:{})".format(*into.lines[child]),
                        "YAML keeps only the last one; remove or rename one of them",
                    )
                )
                continue
            into.lines[child] = (file, line)
            out[key] = _plain(value_node, child, file, into)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            into.lines[child] = (file, item.start_mark.line + 1)
            items.append(_plain(item, child, file, into))
        return items
    return _scalar(node)
