"""The one config loader: a YAML file (or text, or a dict), ``--set`` overrides, validation.

Every kind of run config (``multiloss train``, ``multiloss incremental``) is
read here, so every problem is reported the same way: the file and line of
the YAML path, or the ``--set`` override that caused it, with a did-you-mean
for misspelt keys.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import SpecError
from .validation import SHORTHANDS, Problems, did_you_mean, expand_shorthand, pydantic_problems
from .yamlio import Lines, line_of, load_yaml, read_source

M = TypeVar("M", bound=BaseModel)


@dataclass
class ConfigFile:
    """Where a config came from: its name, the line of every YAML path, the overrides applied."""

    name: str = "<config>"
    lines: Lines = field(default_factory=dict)
    applied: dict[tuple, str] = field(default_factory=dict)
    base: Path = Path(".")

    def origin(self, path: tuple) -> str | None:
        """The ``--set`` text that set ``path`` (or a parent or child of it), if any."""
        path = tuple(path)
        for key, text in self.applied.items():
            n = min(len(key), len(path))
            if n and key[:n] == path[:n]:
                return text
        return None

    def error(self, problems: Problems) -> SpecError:
        """A SpecError for ``[(path, message)]``: each with its line, or the ``--set`` it came from."""
        out = []
        for p, m in problems:
            origin = self.origin(p)
            if origin and "valid list" in m and _indexes_below(origin, tuple(p)):
                m += (f"; --set cannot add an item to a list the config does not have: give the whole list, "
                      f"--set '{'.'.join(map(str, p))}=[...]'")
            out.append((p, None, f"{m} (from --set {origin})") if origin else (p, line_of(self.lines, p), m))
        return SpecError(out, self.name)

    def resolve_path(self, path: str) -> Path:
        """A file named in the config: absolute, relative to the working folder, or to the config."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or p.exists() else self.base / p


def _indexes_below(override: str, path: tuple) -> bool:
    """Whether the ``--set`` text reaches below ``path`` by a list index (``terms.3.weight``)."""
    keys = parse_override(override)[0]
    return len(keys) > len(path) + 1 and tuple(map(str, path)) == tuple(keys[: len(path)]) \
        and keys[len(path)].lstrip("-").isdigit()


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=3`` -> (["train", "epochs"], 3); values are read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError([((), None, f"expected key.path=value, got {text!r}")], "--set")
    parsed, _ = load_yaml(value, f"--set {key}") if value.strip() else ("", {})
    return key.split("."), parsed


def list_item(node: list, part: str) -> int:
    """The index ``part`` names in a list: an index, or the name of an item that has one (``terms``);
    KeyError saying which there are."""
    if part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
        return int(part) % len(node)
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    names = [str(item["name"]) for item in node if isinstance(item, dict) and "name" in item]
    raise KeyError(f"no item {part!r} in this list; {did_you_mean(part, names)}give an index "
                   f"(0 to {len(node) - 1}) or an item's name: {', '.join(names) or 'none have one'}")


def dotted_parts(node: dict, rest: list[str]) -> int:
    """How many of the parts ``rest`` name one key of ``node``: the longest run of them, joined by dots,
    that is a key; in a mapping keyed by dotted config paths (a sweep's ``space``, an ``enqueue`` point)
    all of them when none is; else 1."""
    for n in range(len(rest), 1, -1):
        if ".".join(rest[:n]) in node:
            return n
    if rest[0] in node:                  # a plain key it has (a space's `seed`)
        return 1
    return len(rest) if any("." in str(k) for k in node) else 1


def apply_overrides(data: dict, overrides: list[str], lines: Lines,
                    shorthands: dict[str, str] = SHORTHANDS) -> dict[tuple, str]:
    """Set each ``key.path=value`` in ``data`` (a list's item by its index or its ``name``:
    ``loss.terms.0.weight``, ``loss.terms.pair.weight``; a key inside one of ``shorthands`` into its
    mapping); return {concrete path: override text}."""
    applied = {}
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        concrete: list = []
        i = 0
        while i < len(path):
            part = path[i]
            if isinstance(node, dict):       # a mapping keyed by dotted paths (a sweep's space) takes several
                n = dotted_parts(node, path[i:])
                part, i = ".".join(path[i:i + n]), i + n - 1
            try:
                key = list_item(node, part) if isinstance(node, list) else part
            except KeyError as exc:
                raise SpecError([(tuple(concrete), None, f"{exc.args[0]} (--set {text})")], "--set") from None
            concrete.append(key)
            i += 1
            if i == len(path):
                node[key] = value
                break
            child = expand_shorthand(key, node.get(key) if isinstance(node, dict) else node[key], shorthands)
            if isinstance(child, dict):          # `weighting: dwa` set inside: {strategy: dwa, ...}
                node[key] = child
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, (dict, list)):
                raise SpecError([(tuple(concrete), None,
                                  f"is {type(child).__name__} {child!r}, not a mapping or a list, so --set {text} "
                                  "cannot set a key inside it")], "--set")
            node = child
        applied[tuple(concrete)] = text
        for key in [k for k in lines if k[: len(concrete)] == tuple(concrete)]:
            lines.pop(key)
    return applied


def read_config(source: str | os.PathLike | dict, overrides: list[str] | None = None,
                what: str = "config", shorthands: dict[str, str] = SHORTHANDS) -> tuple[dict, ConfigFile]:
    """Read a config's plain data and apply ``--set`` overrides (through its kind's ``shorthands``);
    no validation yet."""
    cf = ConfigFile()
    if isinstance(source, dict):
        data, cf.name = copy.deepcopy(source), "<dict>"     # --set must not reach into the caller's dict
    else:
        text, cf.name = read_source(source)
        data, cf.lines = load_yaml(text, cf.name)
        if cf.name != "<string>":
            cf.base = Path(cf.name).parent
    if data is None:
        raise SpecError([((), None, f"the {what} is empty")], cf.name)
    if not isinstance(data, dict):
        raise SpecError([((), 1, f"a {what} must be a mapping of keys to values, "
                                 f"got a {type(data).__name__}")], cf.name)
    cf.applied = apply_overrides(data, list(overrides or []), cf.lines, shorthands)
    return data, cf


def validate_rest(model: type[M], data: dict, cf: ConfigFile) -> tuple[M, Problems]:
    """``(config, problems)``: the schema's problems, and the config validated without the keys that have
    them (their defaults in their place), so that the checks after the schema's see the rest of the file
    and every problem is reported in one pass.  Raises when the rest does not validate either."""
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        problems = pydantic_problems(exc, model)
    rest, _ = validate_without(model, data, problems, lambda exc: pydantic_problems(exc, model))
    if rest is None:
        raise cf.error(problems) from None
    return rest, problems


def validate_without(model: type[M], data: dict, problems: Problems,
                     problems_of: Callable[[ValidationError], Problems]) -> tuple[M | None, list[tuple]]:
    """``model`` validated from a copy of ``data`` without the values at ``problems``' paths (their
    defaults in their place), a few rounds while new problems appear (``problems_of`` reads them); and
    the paths left out.  None for the model when the rest does not validate."""
    pruned, dropped = copy.deepcopy(data), []
    for _ in range(4):
        for path, _msg in problems:
            gone = drop_path(pruned, path)
            if gone is not None:
                dropped.append(gone)
        try:
            return model.model_validate(pruned), dropped
        except ValidationError as exc:
            problems = problems_of(exc)
    return None, dropped


def drop_path(data: Any, path: tuple) -> tuple | None:
    """Remove the key at ``path`` (its first mapping key whose value is a scalar, a list or does not exist)
    from ``data``, in place; the path removed, or None when nothing was."""
    for i, key in enumerate(path):
        if not isinstance(data, dict) or key not in data:
            return None
        if i == len(path) - 1 or not isinstance(data[key], dict):
            del data[key]
            return tuple(path[: i + 1])
        data = data[key]
    return None


def config_kind(data: Any) -> str:
    """What a YAML document is: ``"spec"``, ``"run"`` or ``"incremental"`` (by its keys)."""
    if isinstance(data, dict):
        keys = set(data)
        if "scenario" in keys or "method" in keys:
            return "incremental"
        if keys & {"model", "data", "optimizer", "train", "output_dir"}:
            return "run"
    return "spec"


__all__ = ["ConfigFile", "parse_override", "list_item", "apply_overrides", "read_config", "validate_rest",
           "validate_without", "drop_path", "config_kind"]
