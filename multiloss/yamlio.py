"""Safe YAML loading that remembers the line of every key and item.

Only PyYAML's safe loader is used; tags that would build Python objects
are refused with the line they stand on.  ``1e-4`` loads as a float
(YAML 1.1 would read it as a string).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError

Lines = dict[tuple, int]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also resolves ``1e-4``-style floats."""


_Loader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _line_map(node: yaml.Node, path: tuple, out: Lines) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            if key.tag == "tag:yaml.org,2002:int":
                try:
                    k = int(k)
                except ValueError:
                    pass
            out[path + (k,)] = key.start_mark.line + 1
            _line_map(value, path + (k,), out)
            out[path + (k,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)


def read_source(source: str | os.PathLike) -> tuple[str, str]:
    """Return ``(text, name)`` for a path or for literal YAML text."""
    if isinstance(source, os.PathLike):
        path = Path(source)
    elif "\n" not in source and source.strip().endswith((".yaml", ".yml")):
        path = Path(source)
    else:
        return source, "<string>"
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise SpecError([((), None, f"cannot read file: {exc.strerror}")], str(path)) from None


def load_yaml(text: str, name: str = "<string>") -> tuple[Any, Lines]:
    """Parse YAML text safely; return the data and a path -> line map."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        data = loader.construct_document(node)
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        tag = (exc.problem or "").split("tag ")[-1]
        raise SpecError(
            [((), line, f"refused YAML tag {tag}: only plain mappings, lists, "
              "strings, numbers, booleans and null are allowed (safe loading)")],
            name,
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([((), line, f"YAML syntax error: {problem}")], name) from None
    finally:
        loader.dispose()
    lines: Lines = {}
    _line_map(node, (), lines)
    return data, lines


def dump_yaml(data: Any) -> str:
    """Dump plain data as block-style YAML with keys in their given order."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
