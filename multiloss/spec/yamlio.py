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


SUFFIXES = (".yaml", ".yml", ".json")


def read_source(source: str | os.PathLike) -> tuple[str, str]:
    """Return ``(text, name)`` for a path or for literal YAML text.

    A ``Path`` (or a one-line string ending in ``.yaml``/``.yml``) is a file;
    it must exist, be a file and have a YAML suffix.
    """
    if isinstance(source, os.PathLike):
        path = Path(source)
    elif "\n" not in source and source.strip().endswith(SUFFIXES):
        path = Path(source.strip())
    else:
        return source, "<string>"
    if path.is_dir():
        raise SpecError([((), None, "is a directory; give a YAML file (e.g. configs/siamese.yaml)")],
                        str(path))
    if not path.exists():
        raise SpecError([((), None, "no such file")], str(path))
    if path.suffix.lower() not in SUFFIXES:
        raise SpecError([((), None, f"not a YAML file: the name must end in {', '.join(SUFFIXES)}")],
                        str(path))
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SpecError([((), None, f"cannot read file: {reason}")], str(path)) from None


def _duplicates(node: yaml.Node, path: tuple, out: list) -> None:
    """``(path, line, message)`` for every key given twice in one mapping."""
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key, value in node.value:
            k = key.value
            line = key.start_mark.line + 1
            if k in first:
                out.append((path + (k,), line, f"duplicate key {k!r} (first at line {first[k]}); YAML "
                                                "would silently keep only the last one: remove one"))
            else:
                first[k] = line
            _duplicates(value, path + (k,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, path + (i,), out)


def line_of(lines: Lines, path: tuple) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def load_yaml(text: str, name: str = "<string>") -> tuple[Any, Lines]:
    """Parse YAML text safely; return the data and a path -> line map."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        duplicates: list = []
        _duplicates(node, (), duplicates)
        if duplicates:
            raise SpecError(duplicates, name)
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
