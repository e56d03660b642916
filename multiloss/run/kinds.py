"""Run kinds: a config to a run folder, and the folder back to figures.

A :class:`RunKind` is one top-level command that writes a run folder
(``multiloss train``, ``multiloss incremental``): it loads and checks its
config, runs it (fresh, resumed or replacing an old run), re-evaluates a saved
run and redraws its figures, and it recognises the folders it wrote, so that
``multiloss evaluate`` and ``plot`` dispatch on a folder alone.  What every kind
does alike is done here, once:

* :meth:`RunKind.folder`: the config's :class:`~multiloss.run.rundir.RunDir`,
  and on ``resume`` the fingerprint check (a resumed run must share the
  config of the run it continues; the refusal names the keys that differ);
* :meth:`RunKind.start`: the folder opened (fresh, resumed or replaced),
  ``config.yaml`` written, the seed set.

Kinds are found by name in the registry :data:`RUN_KINDS`, whose providers
(the modules that register the built-in kinds) are named by string and
imported on first use: this module imports neither TensorFlow nor the layers
above ``run/`` (the incremental kind lives in :mod:`multiloss.incremental.runner`).
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from ..spec.errors import RunError, SpecError
from ..spec.registry import Registry
from .rundir import RunDir


class KindConfig(Protocol):
    """What the shared parts read of a kind's config (``RunConfig``, ``IncrementalConfig``)."""

    name: str
    seed: int

    @property
    def run_dir(self) -> Path: ...

    def fingerprint(self) -> dict: ...

    def to_yaml(self) -> str: ...

    def error(self, problems: list[tuple[tuple, str]]) -> SpecError: ...


class RunKind(ABC):
    """One kind of run: ``multiloss NAME CONFIG`` writes its folder; ``evaluate`` and ``plot`` read it."""

    #: The command that starts a run (``multiloss NAME CONFIG``) and the kind's name in :data:`RUN_KINDS`.
    name: ClassVar[str]
    #: What :func:`multiloss.spec.configfile.config_kind` calls this kind's config.
    config_kind: ClassVar[str]
    #: The config fields a resumed run may change (they are left out of its fingerprint).
    may_change: ClassVar[str]
    #: What ``--resume`` continues from, for the message of an interrupted run.
    resumes_from: ClassVar[str]

    # --- what each kind does ---------------------------------------------------------

    @abstractmethod
    def load_config(self, source: str | os.PathLike | dict | None,
                    overrides: list[str] | None = None) -> KindConfig:
        """The validated config (``None``: the kind's default config, if it has one)."""

    @abstractmethod
    def check(self, config: str | os.PathLike | dict, overrides: list[str] | None = None) -> str:
        """Everything the run checks before it trains; writes nothing; a one-line description."""

    @abstractmethod
    def run(self, config: Any, overrides: list[str] | None = None, *, resume: bool = False,
            overwrite: bool = False) -> dict:
        """The run end to end, in its folder; returns its summary."""

    @abstractmethod
    def evaluate(self, run_dir: str | os.PathLike) -> dict:
        """Re-evaluate a saved run on its test split (``evaluation.json``)."""

    @abstractmethod
    def plot(self, run_dir: str | os.PathLike) -> list[Path]:
        """Redraw a run's figures from what it saved; returns the files written."""

    def dry_run(self, cfg: Any) -> object:
        """One batch through the loss without training (``--dry-run``), for kinds that offer it."""
        raise RunError(f"`multiloss {self.name}` has no dry run")

    def recognises(self, run_dir: Path) -> bool:
        """Whether ``run_dir`` holds a run of this kind (by default: its config.yaml is this kind's)."""
        from ..spec.configfile import config_kind, read_config

        config = Path(run_dir) / "config.yaml"
        return config.is_file() and config_kind(read_config(config)[0]) == self.config_kind

    # --- what every kind does alike ----------------------------------------------------

    @property
    def usage(self) -> str:
        return f"multiloss {self.name} CONFIG"

    @property
    def resume_hint(self) -> str:
        return f"`{self.usage} --resume` continues {self.resumes_from}"

    def folder(self, cfg: KindConfig, *, resume: bool = False, overwrite: bool = False,
               writer: bool = True) -> RunDir:
        """The config's run folder, not opened yet; on ``resume``, refused if the config changed."""
        run = RunDir(cfg.run_dir, resume=resume, overwrite=overwrite, writer=writer, hint=self.usage)
        if resume and run.holds_run():
            self.check_resume(cfg, run.read_state(), run.path)
        return run

    def check_resume(self, cfg: KindConfig, state: dict | None, where: Path) -> None:
        """Raise SpecError naming each key of the fingerprint that differs from the saved run's."""
        old = (state or {}).get("fingerprint")
        new = cfg.fingerprint()
        if old is None or old == new:
            return
        raise cfg.error([(path, f"differs from the run being resumed in {where}; resume with the same config "
                                f"(only {self.may_change} may change), or start another run (--set name=...); "
                                f"{_shown(was)} in the run, {_shown(now)} now")
                         for path, was, now in _differences(old, new)])

    def start(self, run: RunDir, cfg: KindConfig, say: Callable[..., object] = print,
              data: dict[str, str | None] | None = None) -> dict | None:
        """Open the folder, check a resumed run's data against ``data`` (the splits' digests), write
        ``config.yaml`` and set the seed; the state to resume from, or None.  A refused resume leaves
        the folder as it was, its config included."""
        import keras

        from .data import check_same_data

        state = run.open()
        if state is not None and data is not None:
            check_same_data(run.path, state.get("data"), data)
        if run.resume and state is None:
            absent = f"{run.path} did not exist (is the run's name right?)" if run.created else \
                f"no checkpoint in {run.checkpoints}"
            say(f"{absent}; --resume starts from scratch")
        run.write_text("config.yaml", cfg.to_yaml())
        keras.utils.set_random_seed(cfg.seed)
        return state


_ABSENT = object()


def _differences(old: Any, new: Any, path: tuple = ()) -> list[tuple[tuple, Any, Any]]:
    """``(path, old value, new value)`` of each key that differs between two fingerprints, down to the
    deepest mapping key (``("train", "batch_size")``); a missing key's value is ``_ABSENT``."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [(path, old, new)]
    out = []
    for key in dict.fromkeys([*old, *new]):
        out += _differences(old.get(key, _ABSENT), new.get(key, _ABSENT), (*path, key))
    return out


def _shown(value: Any) -> str:
    """A fingerprint value as a message shows it (JSON-like; ``_ABSENT``: not set)."""
    if value is _ABSENT:
        return "not set"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


# --- the registry ---------------------------------------------------------------------

def _is_kind(obj: object) -> str | None:
    return None if isinstance(obj, RunKind) else f"a run kind is a RunKind instance, not {type(obj).__name__}"


#: Run kinds by name.  Its providers register the built-in kinds (``train``, ``incremental``) and are
#: imported, by string, the first time it is read: this module imports neither TensorFlow nor the
#: incremental package.
RUN_KINDS: Registry[RunKind] = Registry(
    "run kind", providers=("multiloss.run.train", "multiloss.incremental.runner"), check=_is_kind,
    hint="run kinds: {valid}")


def register_kind(kind: RunKind) -> RunKind:
    """Add a run kind under its ``name``: ``multiloss evaluate`` and ``plot`` then find its folders."""
    return RUN_KINDS.register(kind.name, kind)


def get_kind(name: str) -> RunKind:
    """The run kind called ``name``."""
    return RUN_KINDS.get(name)


def all_kinds() -> list[RunKind]:
    """Every run kind: the built-in ones in the order of the providers, then the others as registered."""
    rank = {module: i for i, module in enumerate(RUN_KINDS.providers)}
    return sorted(dict.fromkeys(RUN_KINDS.values()), key=lambda kind: rank.get(type(kind).__module__, len(rank)))


def _built_in(kind: RunKind) -> bool:
    return type(kind).__module__ in RUN_KINDS.providers


def kind_of_config(config_kind: str) -> RunKind:
    """The run kind whose configs :func:`~multiloss.spec.configfile.config_kind` calls ``config_kind``."""
    for kind in all_kinds():
        if kind.config_kind == config_kind:
            return kind
    raise LookupError(f"no run kind runs a {config_kind} config")


def kind_of_run(run_dir: str | os.PathLike) -> RunKind:
    """The run kind that wrote ``run_dir``; RunError if none recognises it.

    Kinds registered besides the built-in ones are asked first: they may claim a folder whose
    config.yaml the built-in kinds would take for theirs.
    """
    path = Path(run_dir)
    for kind in sorted(all_kinds(), key=_built_in):
        if kind.recognises(path):
            return kind
    commands = " or ".join(f"`multiloss {kind.name}`" for kind in all_kinds())
    if path.is_file():
        raise RunError(f"{run_dir} is a file; give the run folder that holds it ({path.parent}), the folder "
                       f"that {commands} wrote")
    if not (path / "config.yaml").is_file():
        raise RunError(f"{run_dir} is not a run folder: it has no config.yaml (give the folder that "
                       f"{commands} wrote, e.g. runs/NAME)")
    raise RunError(f"{run_dir} is not a run folder: its config.yaml is not the config of a run "
                   f"(give the folder that {commands} wrote, e.g. runs/NAME)")


__all__ = ["RUN_KINDS", "KindConfig", "RunKind", "all_kinds", "get_kind", "kind_of_config", "kind_of_run",
           "register_kind"]
