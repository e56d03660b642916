"""Turning validation failures into ``(path, message)`` problems users can act on.

Shared by the loss spec and every config: pydantic errors become one line
each, unknown keys get a did-you-mean and the list of valid keys, and
parameters are checked against the signature of what they will be passed to.
:data:`Integer` is the ``int`` of config fields (it refuses ``true``/``false``).
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ValidationError
from pydantic_core import PydanticCustomError

Problems = list[tuple[tuple, str]]


def _not_bool(value: Any) -> Any:
    # bool is an int subclass (pydantic's lax int takes true as 1), and lax mode reads "5" as 5 too
    if isinstance(value, (bool, str)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


#: An ``int`` field that refuses ``true``/``false`` (``batch_size: true`` is no batch size) and text
#: (``epochs: "5"``: a quoted number in YAML is a string).
Integer = Annotated[int, BeforeValidator(_not_bool)]


def plain_number(value: Any, annotation: Any) -> Any:
    """``value`` for a field annotated ``annotation``: a field of numbers (int, float, or a union with one,
    not with str or bool) refuses ``true``/``false`` and text, which pydantic's lax mode reads as numbers."""
    args = {typing.get_args(a)[0] if typing.get_origin(a) is Annotated else a
            for a in (typing.get_args(annotation) or (annotation,))}
    texts = any(a in (str, bool) or typing.get_origin(a) is typing.Literal for a in args)   # "auto" is an option
    if args & {int, float} and not texts and isinstance(value, (bool, str)):
        if float in args:
            raise PydanticCustomError("float_type", "Input should be a valid number")
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


#: The keys of a loss spec (so also of a run or incremental config's ``loss:``) whose plain value stands
#: for a mapping of one field: ``weighting: pcgrad`` is ``weighting: {strategy: pcgrad}``.
SHORTHANDS = {"weighting": "strategy"}
#: A sweep file's: ``sampler: tpe``, ``pruning: false``, ``storage: URL``.  (A run config's ``sampler:``
#: is another key: a task sampler, with no such mapping.)
SWEEP_SHORTHANDS = {"sampler": "name", "pruning": "enabled", "storage": "url"}


def expand_shorthand(key: Any, value: Any, shorthands: dict[str, str] = SHORTHANDS) -> Any:
    """``value`` under config key ``key`` as its mapping where it is one of ``shorthands``."""
    if key in shorthands and value is not None and not isinstance(value, (dict, list, BaseModel)):
        return {shorthands[key]: value}
    return value


def shorthand(key: str) -> BeforeValidator:
    """A before-validator that reads the plain value of config key ``key`` as its mapping
    (:data:`SHORTHANDS`, :data:`SWEEP_SHORTHANDS`)."""
    table = SHORTHANDS if key in SHORTHANDS else SWEEP_SHORTHANDS
    return BeforeValidator(lambda value: expand_shorthand(key, value, table))


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for a close match among ``options``, else ``""``."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=2, cutoff=0.6)
    return f"did you mean {' or '.join(map(repr, close))}? " if close else ""


def no_such(what: str, key: str, names: Iterable[str], note: str = "") -> str:
    """``"no <what> named 'x'; did you mean 'y'? [note; ]<what>s: [...]"``."""
    names = list(names)
    return f"no {what} named {key!r}; {did_you_mean(key, names)}{note + '; ' if note else ''}{what}s: {names}"


def unknown_key(key: str, valid: Iterable[str], what: str = "key") -> str:
    valid = list(valid)
    return f"unknown {what} {key!r}; {did_you_mean(key, valid)}valid: {', '.join(valid) or 'none'}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``X``, ``X | None``, ``list[X]``, ``dict[str, X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        models = [m for m in map(_model_in, typing.get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


def fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names valid at ``loc`` inside ``model`` (None when they cannot be told)."""
    skip = False   # the next part is a dict key or list index inside a container field
    for part in loc:
        if skip:
            skip = False
            continue
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        annotation = field.annotation
        sub = _model_in(annotation)
        if sub is None:
            inner = typing.get_args(annotation)
            origins = {typing.get_origin(annotation)} | {typing.get_origin(a) for a in inner}
            containers = [a for a in (annotation, *inner) if typing.get_origin(a) in (list, dict)]
            if containers and origins & {list, dict}:
                sub = _model_in(typing.get_args(containers[0])[-1])
                skip = True
        if sub is None:
            return None
        model = sub
    return None if skip else list(model.model_fields)


def _clean_loc(loc: tuple, drop: set[str]) -> tuple:
    return tuple(p for p in loc if not (isinstance(p, str) and (p in drop or "[" in p)))


_BOUNDS = {"greater_than_equal": ("≥", "ge"), "greater_than": (">", "gt"),
           "less_than": ("<", "lt"), "less_than_equal": ("≤", "le")}


_SCALAR_BRANCHES = {"str", "int", "float", "bool", "none"}


def _other_branch_fits_better(err: dict, errors: list[dict]) -> bool:
    """A union's scalar branch refusing a mapping or a list (``monitor: {k: up}`` is not a ``str``) when
    another branch of the same union says what is wrong inside it: that branch's errors are the news."""
    loc = err["loc"]
    if not (loc and loc[-1] in _SCALAR_BRANCHES and err["type"].endswith("_type")
            and isinstance(err["input"], (dict, list))):
        return False
    return any(len(o["loc"]) > len(loc) - 1 and o["loc"][: len(loc) - 1] == loc[:-1]
               and o["loc"][len(loc) - 1] not in _SCALAR_BRANCHES for o in errors)


def pydantic_problems(exc: ValidationError, model: type[BaseModel] | None = None,
                      drop: set[str] = frozenset()) -> Problems:
    """One ``(path, message)`` per pydantic error; unknown keys get a did-you-mean.

    ``model`` is the validated class (to list the valid keys); ``drop`` are
    discriminator tags to remove from error locations.
    """
    out, seen = [], set()
    errors = exc.errors(include_url=False)
    for err in errors:
        if _other_branch_fits_better(err, errors):
            continue
        loc = _clean_loc(err["loc"], set(drop))
        if loc and loc[-1] in _SCALAR_BRANCHES and err["type"].endswith("_type"):
            loc = loc[:-1]                   # a union's branch tag (`monitor.str`) is no key of the file
        if err["type"] == "extra_forbidden":
            valid = fields_at(model, loc[:-1]) if model is not None and loc else None
            if valid is not None:
                msg = unknown_key(loc[-1], valid)
            else:
                msg = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type") and model is not None \
                and (valid := fields_at(model, loc)):
            given = "null (an empty YAML value)" if err["input"] is None else repr(err["input"])
            msg = f"expected a mapping (keys: {', '.join(valid)}), got {given}"
        else:
            msg = error_message(err, loc)
        key = (loc, msg)
        if key not in seen:
            seen.add(key)
            out.append((loc, msg))
    return _union_types_joined(out)


def _union_types_joined(problems: Problems) -> Problems:
    """A value no branch of a union takes: one "should be a valid string or a valid dictionary, got 3"
    at its key, not one problem per branch."""
    out: Problems = []
    for loc, msg in problems:
        match = re.fullmatch(r"Input should be (a valid \w+), got (.*)", msg)
        before = re.fullmatch(r"Input should be (.*), got (.*)", out[-1][1]) if out and out[-1][0] == loc else None
        if match and before and before.group(2) == match.group(2):
            out[-1] = (loc, f"Input should be {before.group(1)} or {match.group(1)}, got {match.group(2)}")
        else:
            out.append((loc, msg))
    return out


def error_message(err: dict, loc: tuple = ()) -> str:
    """What one pydantic error (an item of ``exc.errors()``) says, with the value given and, for a
    misspelt option, a did-you-mean."""
    msg, kind = err["msg"], err["type"]
    if kind == "literal_error":
        msg = f"{msg}, got {err['input']!r}"
        if isinstance(err["input"], str):    # the options are quoted in ctx.expected: 'a', 'b' or 'c'
            close = did_you_mean(err["input"], re.findall(r"'([^']*)'", err["ctx"]["expected"]))
            msg = f"{msg}; {close.strip()}" if close else msg
    elif kind in ("float_type", "float_parsing") and loc and loc[-1] == "weight":
        msg = f"weight must be a non-negative number, got {err['input']!r}"
    elif kind == "finite_number":
        msg = f"must be a finite number, got {err['input']!r}"
    elif kind in _BOUNDS and isinstance(err["input"], float) and not math.isfinite(err["input"]):
        msg = "must be a finite number"          # as the finite check says it: one problem, not two
    elif kind in _BOUNDS:
        symbol, key = _BOUNDS[kind]
        msg = f"must be {symbol} {err['ctx'][key]}, got {err['input']!r}"
    elif kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "string_pattern_mismatch":
        msg = f"{msg}, got {err['input']!r}"
    elif kind.endswith(("_type", "_parsing")) and isinstance(err["input"], (str, int, float, bool)):
        msg = f"{msg}, got {err['input']!r}"
    return msg


def nonfinite_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every NaN or infinite float inside nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nonfinite_paths(v, path + (k,))]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in nonfinite_paths(v, path + (i,))]
    return []


def signature_params(fn: Callable, skip: Iterable[str] = ()) -> list[str] | None:
    """The keyword parameters ``fn`` accepts, or None when it takes ``**kwargs`` (or has no signature)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return [n for n, p in sig.parameters.items()
            if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY)]


def bind_problem(fn: Callable, *args: Any, **kwargs: Any) -> str | None:
    """Why ``fn(*args, **kwargs)`` cannot be called (``"missing a required argument: 'extra'"``), else None.

    None too when ``fn`` has no signature that can be read (some builtins).
    """
    try:
        sig = inspect.signature(fn, follow_wrapped=False)   # a decorator's own signature: it may supply arguments
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    return None


def check_params(fn: Callable, params: dict, path: tuple, skip: Iterable[str] = (),
                 valid: list[str] | None = None) -> Problems:
    """Problems of ``params`` for ``fn``: unknown names (with did-you-mean) and non-finite numbers."""
    problems: Problems = [(path + p, "must be a finite number") for p in nonfinite_paths(params)]
    valid = valid if valid is not None else signature_params(fn, skip)
    if valid is not None:
        problems += [(path + (key,), unknown_key(key, valid, "parameter")) for key in params
                     if key not in valid]
    return problems


__all__ = ["Problems", "Integer", "plain_number", "SHORTHANDS", "SWEEP_SHORTHANDS", "expand_shorthand", "shorthand", "did_you_mean", "unknown_key", "fields_at", "pydantic_problems", "error_message", "nonfinite_paths",
           "signature_params", "bind_problem", "check_params"]
