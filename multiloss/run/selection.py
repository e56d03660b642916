"""Model selection for a run: early stopping on one logged key or on Δm over several, and ``best.keras``.

* **One key** (``monitor: val_seg_accuracy``): Keras's own ``EarlyStopping`` with the key's mode
  (:func:`multiloss.run.monitor.resolve_mode`).
* **Several keys** (``monitor: {val_depth_loss: min, val_seg_accuracy: max}``): each epoch logs
  ``delta_m``, the mean relative change of the keys against their baselines in percent,
  sign-flipped where higher is better (Maninis et al. 2019, the Δm% of multi-task papers), so
  lower is better and the keys' scales do not matter:

      Δm = 100/K · Σ_k σ_k (v_k − b_k) / |b_k|,   σ_k = +1 (min) or −1 (max).

  The baselines are the given single-task ``baselines`` or, by default, each key's first-epoch
  value (then Δm is the mean of the keys normalised by their first-epoch values, minus one).
  Early stopping then monitors ``delta_m`` in mode ``min``.
* The best epoch's model is kept as ``best.keras`` in the run folder (written atomically when the
  monitored value improves), ``restore_best_weights`` leaves the best weights in ``model.keras``,
  and ``--resume`` continues patience and the best value from the run's history.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import keras

from ..spec.errors import RunError
from .monitor import resolve_mode
from .rundir import RunDir

DELTA_M = "delta_m"
BEST = "best.keras"


def delta_m(values: Mapping[str, float], baselines: Mapping[str, float], modes: Mapping[str, str]) -> float:
    """Δm% of ``values`` against ``baselines`` over the keys of ``modes`` (lower is better)."""
    total = 0.0
    for key, mode in modes.items():
        base = float(baselines[key])
        if base == 0:
            raise RunError(f"train.callbacks.early_stopping: the baseline of {key!r} is 0, so Δm (a relative "
                           "change) is undefined; give `baselines:` with a non-zero value for it")
        total += (-1.0 if mode == "max" else 1.0) * (float(values[key]) - base) / abs(base)
    return 100.0 * total / len(modes)


class DeltaM(keras.callbacks.Callback):
    """Adds ``delta_m`` to each epoch's logs (before the history and early stopping read them)."""

    def __init__(self, modes: Mapping[str, str], baselines: Mapping[str, float] | None, history: list[dict]):
        super().__init__()
        self.modes, self.history = dict(modes), history
        self.baselines = dict(baselines) if baselines else None

    def on_epoch_end(self, epoch: int, logs=None):
        if logs is None or any(k not in logs for k in self.modes):
            return
        if self.baselines is None:       # the first epoch's values: from the history when resumed
            first = self.history[0] if self.history else logs
            self.baselines = {k: float(first[k]) for k in self.modes}
        logs[DELTA_M] = delta_m(logs, self.baselines, self.modes)


def replay(values: list[float | None], mode: Literal["min", "max"], min_delta: float, patience: int,
           ) -> tuple[float | None, int, int, bool]:
    """Keras's ``EarlyStopping`` rule over past epochs' values: (best, best epoch, wait, stopped).

    Used to continue a resumed run where it left off; the live decisions are Keras's own.
    """
    best, best_epoch, wait, stopped = None, 0, 0, False
    delta = abs(min_delta)
    for epoch, value in enumerate(values):
        if value is None:
            continue
        wait += 1
        if best is None or (value + delta < best if mode == "min" else value - delta > best):
            best, best_epoch, wait = value, epoch, 0
        elif wait >= patience and epoch > 0:
            stopped = True
            break
    return best, best_epoch, wait, stopped


class SelectBest(keras.callbacks.EarlyStopping):
    """Keras's ``EarlyStopping`` that keeps the best epoch's model as ``best.keras`` and resumes its state."""

    def __init__(self, run: RunDir, history: list[dict], **kwargs):
        super().__init__(**kwargs)
        self.run, self.history = run, history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if not self.history:
            return
        best, best_epoch, wait, _ = replay([row.get(self.monitor) for row in self.history], self.mode,
                                           self.min_delta, self.patience)
        if best is None:
            return
        self.best, self.best_epoch, self.wait = best, best_epoch, wait
        if self.restore_best_weights and self.run.file(BEST).is_file():
            self.best_weights = best_weights(self.run)

    def on_epoch_end(self, epoch: int, logs=None):
        before = self.best
        super().on_epoch_end(epoch, logs)
        if self.best is not None and self.best_epoch == epoch and (before is None or self.best != before):
            self.run.write_with(BEST, self.model.save)


def monitored(es) -> tuple[str, str]:
    """The key an ``early_stopping`` config watches and its mode (``delta_m``, min, for several keys)."""
    if isinstance(es.monitor, str):
        return es.monitor, resolve_mode(es.monitor, es.mode)
    return DELTA_M, "min"


def criterion(es) -> dict | None:
    """What chooses the best epoch (``best.keras``): the monitor, its mode, the baselines and ``min_delta``;
    a resumed run must keep it (patience and ``restore_best_weights`` may change)."""
    if es is None:
        return None
    return {"monitor": es.monitor, "mode": es.mode, "baselines": es.baselines, "min_delta": es.min_delta}


def resume_problems(es, state: dict | None) -> list[tuple[tuple, str]]:
    """A resumed run whose best epoch was chosen by another criterion (its ``best.keras`` would stand for
    the old monitor while ``metrics.json`` named the new one's epoch); nothing to compare for a run saved
    before the criterion was recorded, or with early stopping added or removed."""
    old, new = (state or {}).get("selection"), criterion(es)
    if old is None or new is None or old == new:
        return []
    changed = [k for k in new if old.get(k) != new[k]]
    return [(("train", "callbacks", "early_stopping", k),
             f"differs from the run being resumed ({old.get(k)!r} there): its best.keras was chosen by it; resume "
             "with the same monitor, mode, baselines and min_delta (patience and restore_best_weights may change), "
             "or start another run (--set name=...)") for k in changed]


def stopped_before(es, history: list[dict]) -> bool:
    """Whether a resumed run's history had already met its stopping rule (it then trains no further)."""
    monitor, mode = monitored(es)
    return replay([row.get(monitor) for row in history], mode, es.min_delta, es.patience)[3]


def summary(es, run: RunDir, history: list[dict]) -> dict:
    """What model selection chose, for ``metrics.json``: the monitored key and mode, the best value and
    its epoch (1-based), whether the run stopped early and whether ``model.keras`` holds the best weights."""
    monitor, mode = monitored(es)
    best, best_epoch, _, stopped = replay([row.get(monitor) for row in history], mode, es.min_delta, es.patience)
    return {"monitor": monitor, "mode": mode, "best": best, "best_epoch": None if best is None else best_epoch + 1,
            "stopped_early": stopped, "restored_best_weights": bool(es.restore_best_weights and run.file(BEST).is_file())}


def restore_best(es, run: RunDir, model: keras.Model) -> None:
    """Give ``model`` the weights of ``best.keras`` where ``restore_best_weights`` asks and the file exists."""
    if es.restore_best_weights and run.file(BEST).is_file():
        model.set_weights(best_weights(run))


def best_weights(run: RunDir) -> list:
    """The weights of the run's ``best.keras``."""
    return run.read_archive(run.file(BEST), lambda p: keras.saving.load_model(p, compile=False)).get_weights()


def callbacks(es, run: RunDir, history: list[dict]) -> list[keras.callbacks.Callback]:
    """The callbacks of an ``early_stopping`` config: :class:`DeltaM` for several keys, then :class:`SelectBest`."""
    monitor, mode = monitored(es)
    extra = [] if isinstance(es.monitor, str) else [
        DeltaM({k: resolve_mode(k, m) for k, m in es.monitor.items()}, es.baselines, history)]
    return [*extra, SelectBest(run, history, monitor=monitor, mode=mode, patience=es.patience,
                               min_delta=es.min_delta, restore_best_weights=es.restore_best_weights)]


__all__ = ["summary", "BEST", "DELTA_M", "DeltaM", "SelectBest", "callbacks", "criterion", "delta_m", "monitored",
           "replay", "restore_best", "resume_problems", "stopped_before"]
