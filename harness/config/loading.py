"""YAML loading helpers: locations of fields in the source file, merging presets, dotted overrides."""

from __future__ import annotations

import copy
from typing import Any

import yaml
from pydantic import ValidationError

from harness.errors import SpecError


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node that `loc` reaches."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                break
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


class FieldConflict(ValueError):
    """A cross-section rule broken at a known field (raised in a spec validator): its error names that field."""

    def __init__(self, message: str, loc: tuple[Any, ...]) -> None:
        super().__init__(message)
        self.loc = loc


def _describe(errors: ValidationError, source: str, root: yaml.Node | None, prefix: tuple = ()) -> str:
    lines = []
    for err in errors.errors():
        conflict = (err.get("ctx") or {}).get("error")
        raw_loc = conflict.loc if isinstance(conflict, FieldConflict) else err["loc"]
        loc = prefix + tuple(p for p in raw_loc if not (isinstance(p, str) and p.startswith("function-")))
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{source}:{line}" if line else source
        msg = "unknown field (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        if isinstance(conflict, FieldConflict):
            msg = str(conflict)
        lines.append(f"{where}: field '{field}': {msg}")
    return "\n".join(lines)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a copy of `raw` with `a.b.c` set to value."""
    out = copy.deepcopy(raw)
    node: Any = out
    parts = key.split(".")
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]  # e.g. contestants.0.endpoint.url
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise SpecError(f"'{key}': '{part}' is not a section")
    if isinstance(node, list) and parts[-1].isdigit() and int(parts[-1]) < len(node):
        node[int(parts[-1])] = value
    elif isinstance(node, dict):
        node[parts[-1]] = value
    else:
        raise SpecError(f"'{key}': cannot set '{parts[-1]}' there")
    return out
