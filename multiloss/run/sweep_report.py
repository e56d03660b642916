"""What a sweep shows: the trial table, the Pareto front, ``trials.csv``, ``summary.md``, ``pareto.png``,
the progress display, and the trial a ``--pick`` of objective weights prefers.

Everything here works on :class:`TrialRow` (plain values read from the study), so the front and the
reports can be checked on a hand-made table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec.errors import RunError
from . import atomic
from .sweep_config import Sweep, trial_name
from .sweep_space import short_name

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


@dataclass
class TrialRow:
    """One trial: its number, how it ended, its sampled values and its objectives."""

    number: int
    state: str
    values: dict[str, float] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None
    front: bool = False
    delta_m: float | None = None

    @property
    def folder(self) -> str:
        return trial_name(self.number)


def dominates(a: dict[str, float], b: dict[str, float], modes: dict[str, str]) -> bool:
    """Whether ``a`` is no worse than ``b`` in every objective and better in one (``modes``: min or max)."""
    signs = {k: (1.0 if m == "max" else -1.0) for k, m in modes.items()}
    no_worse = all(signs[k] * a[k] >= signs[k] * b[k] for k in modes)
    return no_worse and any(signs[k] * a[k] > signs[k] * b[k] for k in modes)


def pareto_front(rows: Sequence[TrialRow], modes: dict[str, str]) -> list[TrialRow]:
    """The complete trials no other complete trial dominates, by trial number."""
    done = [r for r in rows if r.state == "complete" and r.values is not None]
    return [r for r in done if not any(dominates(o.values, r.values, modes) for o in done if o is not r)]


def baseline_values(sweep: Sweep) -> dict[str, float] | None:
    """The single-task values Δm is measured against (``baselines:`` as a mapping, or a baselines.json)."""
    given = sweep.config.baselines
    if given is None:
        return None
    if isinstance(given, dict):
        return dict(given)
    return json.loads(sweep.relative_file(given).read_text(encoding="utf-8"))["values"]


def mark(rows: list[TrialRow], sweep: Sweep) -> list[TrialRow]:
    """Set each row's ``front`` and, with baselines, its Δm% (:func:`multiloss.run.selection.delta_m`)."""
    front = {r.number for r in pareto_front(rows, sweep.modes)}
    baselines = baseline_values(sweep)
    for r in rows:
        r.front = r.number in front
        if baselines is not None and r.values is not None:
            from .selection import delta_m

            r.delta_m = delta_m(r.values, baselines, sweep.modes)
    return rows


def trial_rows(sweep: Sweep, study) -> list[TrialRow]:
    """The study's trials as rows, front and Δm% marked."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = dict(zip(sweep.objectives, t.values)) if t.values is not None else None
        rows.append(TrialRow(t.number, STATES.get(t.state.name, t.state.name.lower()), values,
                             dict(t.user_attrs.get("config", {})), t.user_attrs.get("seconds"),
                             t.user_attrs.get("error")))
    return mark(rows, sweep)


# --- text ---------------------------------------------------------------------------------------

def number(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def column_names(paths: list[str]) -> dict[str, str]:
    """Short names of the searched paths (``bin_out`` for ``loss.outputs.bin_out.weight``), full where two clash."""
    shorts = [short_name(p) for p in paths]
    return {p: s if shorts.count(s) == 1 else p for p, s in zip(paths, shorts)}


def values_text(sweep: Sweep, row: TrialRow) -> str:
    names = column_names(list(sweep.paths()))
    objectives = ", ".join(f"{k}={number(v)}" for k, v in (row.values or {}).items())
    config = ", ".join(f"{names.get(p, p)}={number(v)}" for p, v in row.config.items())
    return "; ".join(x for x in (objectives, config) if x)


def arrow(mode: str) -> str:
    return "↑" if mode == "max" else "↓"


def counts(rows: list[TrialRow]) -> str:
    by = {s: sum(r.state == s for r in rows) for s in dict.fromkeys(r.state for r in rows)}
    return ", ".join(f"{n} {s}" for s, n in by.items()) or "none yet"


def summary_text(sweep: Sweep, rows: list[TrialRow]) -> str:
    """The summary in Markdown: the front's trials with their values, best per objective in bold, and the
    failed trials with why."""
    paths = list(sweep.paths())
    names = column_names(paths)
    front = [r for r in rows if r.front]
    done = [r for r in rows if r.state == "complete"]
    with_dm = any(r.delta_m is not None for r in front)
    best = {k: (max if m == "max" else min)(r.values[k] for r in done) for k, m in sweep.modes.items()} if done else {}
    objectives = ", ".join(f"{k} ({sweep.modes[k]})" for k in sweep.objectives)
    lines = [f"# Sweep `{sweep.name}`", "",
             f"{len(rows)} of {sweep.config.trials} trials: {counts(rows)}. Objectives: {objectives}. "
             f"Run config: `{sweep.run_path.resolve()}`.", ""]
    title = "Pareto front" if len(sweep.objectives) > 1 else "Best trial"
    lines += [f"## {title} ({len(front)} of {len(done)} complete trials)", ""]
    if front:
        header = ["trial", *(names[p] for p in paths), *(f"{k} {arrow(sweep.modes[k])}" for k in sweep.objectives)]
        header += ["Δm% ↓"] if with_dm else []
        lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
        for r in front:
            cells = [f"`{r.folder}`", *(number(r.config.get(p, "–")) for p in paths)]
            cells += [f"**{number(r.values[k])}**" if r.values[k] == best[k] else number(r.values[k])
                      for k in sweep.objectives]
            cells += [number(r.delta_m) if r.delta_m is not None else "–"] if with_dm else []
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Bold: the best value of each objective over all complete trials (the final model's "
                      "values, from each trial's metrics.json)."
                  + (" Δm%: the mean relative change against the single-task baselines, lower is better."
                     if with_dm else ""), ""]
    failed = [r for r in rows if r.state == "failed"]
    if failed:
        lines += ["## Failed trials", "", "| trial | why |", "|---|---|"]
        lines += [f"| `{r.folder}` | {(r.error or '–').splitlines()[0]} |" for r in failed]
        lines.append("")
    return "\n".join(lines)


def trials_csv(sweep: Sweep, rows: list[TrialRow]) -> str:
    """Every trial: state, front, seconds, the sampled values, the objectives, Δm%, the error."""
    paths = list(sweep.paths())
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["trial", "state", "front", "seconds", *paths, *sweep.objectives, "delta_m", "error"])
    for r in rows:
        values = r.values or {}
        writer.writerow([r.number, r.state, int(r.front), "" if r.seconds is None else r.seconds,
                         *(json.dumps(r.config[p]) if isinstance(r.config.get(p), (dict, list)) else
                           r.config.get(p, "") for p in paths),
                         *(repr(values[k]) if k in values else "" for k in sweep.objectives),
                         "" if r.delta_m is None else repr(r.delta_m), r.error or ""])
    return buf.getvalue()


# --- the figure ---------------------------------------------------------------------------------

def point_label(sweep: Sweep, row: TrialRow) -> str:
    names = column_names(list(sweep.paths()))
    return f"{row.number}: " + ", ".join(f"{names[p]}={v:.3g}" if isinstance(v, float) else f"{names[p]}={number(v)}"
                                         for p, v in row.config.items() if p in names)


def plot_pareto(sweep: Sweep, rows: list[TrialRow], path: Path) -> Path:
    """``pareto.png``: the front over two objectives (dominated trials grey, front points labelled with their
    values), parallel coordinates for more, each trial's value for one."""
    from .plots import new_figure, save_figure

    done = [r for r in rows if r.state == "complete"]
    keys = sweep.objectives
    fig = new_figure(7.5, 5.2)
    ax = fig.subplots()
    if not done:
        ax.text(0.5, 0.5, "no complete trial yet", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
    elif len(keys) == 1:
        one_objective(ax, sweep, done)
    elif len(keys) == 2:
        two_objectives(ax, sweep, done)
    else:
        parallel_coordinates(ax, sweep, done)
    fig.suptitle(f"sweep {sweep.name}: {len(rows)} trials, {len(done)} complete", fontsize=10)
    save_figure(fig, path)
    return path


def axis_label(sweep: Sweep, key: str) -> str:
    return f"{key} ({'higher' if sweep.modes[key] == 'max' else 'lower'} is better)"


def one_objective(ax, sweep: Sweep, done: list[TrialRow]) -> None:
    key = sweep.objectives[0]
    xs, ys = [r.number for r in done], [r.values[key] for r in done]
    better = max if sweep.modes[key] == "max" else min
    running = [better(ys[: i + 1]) for i in range(len(ys))]
    ax.scatter(xs, ys, color="0.6", s=18, label="trial")
    ax.step(xs, running, where="post", color="C0", label="best so far")
    best = next(r for r in done if r.front)
    ax.annotate(point_label(sweep, best), (best.number, best.values[key]), fontsize=7, xytext=(4, 4),
                textcoords="offset points")
    ax.set_xlabel("trial")
    ax.set_ylabel(axis_label(sweep, key))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def two_objectives(ax, sweep: Sweep, done: list[TrialRow]) -> None:
    kx, ky = sweep.objectives
    rest = [r for r in done if not r.front]
    front = sorted((r for r in done if r.front), key=lambda r: r.values[kx])
    ax.scatter([r.values[kx] for r in rest], [r.values[ky] for r in rest], color="0.75", s=18,
               label=f"dominated ({len(rest)})")
    ax.plot([r.values[kx] for r in front], [r.values[ky] for r in front], "-o", color="C0", ms=5,
            label=f"Pareto front ({len(front)})")
    middle = (min(r.values[kx] for r in done) + max(r.values[kx] for r in done)) / 2
    for r in front:
        right = r.values[kx] > middle
        ax.annotate(point_label(sweep, r), (r.values[kx], r.values[ky]), fontsize=7, xytext=(-4 if right else 4, 4),
                    textcoords="offset points", ha="right" if right else "left")
    ax.set_xlabel(axis_label(sweep, kx))
    ax.set_ylabel(axis_label(sweep, ky))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def parallel_coordinates(ax, sweep: Sweep, done: list[TrialRow]) -> None:
    """One vertical axis per objective, scaled to [0, 1] over the complete trials, best at the top."""
    keys = sweep.objectives
    lows = {k: min(r.values[k] for r in done) for k in keys}
    highs = {k: max(r.values[k] for r in done) for k in keys}

    def scaled(r: TrialRow) -> list[float]:
        out = []
        for k in keys:
            span = highs[k] - lows[k]
            v = 0.5 if span == 0 else (r.values[k] - lows[k]) / span
            out.append(v if sweep.modes[k] == "max" else 1 - v)
        return out

    xs = list(range(len(keys)))
    for r in (r for r in done if not r.front):
        ax.plot(xs, scaled(r), color="0.8", lw=1)
    for i, r in enumerate(r for r in done if r.front):
        ax.plot(xs, scaled(r), "-o", color=f"C{i % 10}", lw=1.6, ms=4, label=point_label(sweep, r))
    ax.set_xticks(xs, [f"{k}\n{number(highs[k] if sweep.modes[k] == 'max' else lows[k])} (best)\n"
                       f"{number(lows[k] if sweep.modes[k] == 'max' else highs[k])}" for k in keys], fontsize=7)
    ax.set_yticks([0, 1], ["worst", "best"])
    ax.legend(fontsize=7, title="Pareto front (others grey)", title_fontsize=7)
    ax.grid(alpha=0.3, axis="x")


def write_reports(sweep: Sweep, study, folder: Path) -> list[TrialRow]:
    """``trials.csv``, ``summary.md`` and ``pareto.png`` in the sweep folder, each written atomically."""
    rows = trial_rows(sweep, study)
    atomic.write_text(folder / "trials.csv", trials_csv(sweep, rows))
    atomic.write_text(folder / "summary.md", summary_text(sweep, rows) + "\n![Pareto front](pareto.png)\n")
    plot_pareto(sweep, rows, folder / "pareto.png")
    return rows


# --- picking one trial --------------------------------------------------------------------------

def words_in(name: str, key: str) -> bool:
    """Whether ``name`` is whole ``_``-separated words of ``key`` (``a`` of ``val_a_accuracy``, not of
    ``val_c_loss``)."""
    words, part = key.split("_"), name.split("_")
    return any(words[i:i + len(part)] == part for i in range(len(words) - len(part) + 1))


def parse_pick(text: str | None, objectives: list[str]) -> dict[str, float]:
    """``depth=0.7,seg=0.3`` -> {objective: weight}; a name is an objective, whole words of one name
    only (a head ``a`` of ``val_a_accuracy``), or a part of one name only."""
    if not text:
        return dict.fromkeys(objectives, 1.0)
    weights: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        matches = ([k for k in objectives if k == name] or [k for k in objectives if name and words_in(name, k)]
                   or [k for k in objectives if name and name in k])
        if not sep or len(matches) != 1:
            why = "expected NAME=WEIGHT" if not sep else (
                f"{name!r} names no objective" if not matches else f"{name!r} names several: {', '.join(matches)}")
            raise RunError(f"--pick {text}: {why}; objectives: {', '.join(objectives)} (e.g. --pick "
                           f"{','.join(f'{k}=0.5' for k in objectives[:2])})")
        try:
            weights[matches[0]] = float(value)
        except ValueError:
            raise RunError(f"--pick {text}: the weight of {name!r} is not a number: {value!r}") from None
    if any(w < 0 or not math.isfinite(w) for w in weights.values()) or sum(weights.values()) <= 0:
        raise RunError(f"--pick {text}: give weights ≥ 0, not all 0")
    return weights


def pick_trial(rows: list[TrialRow], sweep: Sweep, weights: dict[str, float]) -> TrialRow:
    """The front trial with the least weighted sum of its objectives, each scaled over the front to [0, 1]
    (0: the front's best value, 1: its worst); ties go to the lower trial number."""
    front = [r for r in rows if r.front]
    if not front:
        raise RunError(f"the sweep {sweep.name} has no complete trial yet; nothing to pick")

    def score(r: TrialRow) -> float:
        total = 0.0
        for k, w in weights.items():
            values = [o.values[k] for o in front]
            best, worst = (max(values), min(values)) if sweep.modes[k] == "max" else (min(values), max(values))
            total += 0.0 if best == worst else w * (r.values[k] - best) / (worst - best)
        return total

    return min(front, key=lambda r: (score(r), r.number))


# --- progress -----------------------------------------------------------------------------------

def best_text(sweep: Sweep, rows: list[TrialRow]) -> str:
    front = [r for r in rows if r.front]
    if not front:
        return "no complete trial yet"
    if len(sweep.objectives) == 1:
        key = sweep.objectives[0]
        return f"best: {front[0].folder} {key}={number(front[0].values[key])}"
    return f"front: {len(front)} trials ({', '.join(str(r.number) for r in front)})"


class SweepProgress:
    """Trial n/N and the best so far: a ``rich`` progress bar on a terminal, plain lines otherwise."""

    def __init__(self, sweep: Sweep, done: int, say: Callable[[str], object] = print, terminal: bool | None = None):
        self.sweep, self.done, self.say = sweep, done, say
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self.bar = None

    def __enter__(self) -> SweepProgress:
        total = self.sweep.config.trials
        if self.terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("sweep {task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[best]}"))
            self.bar.start()
            self.task = self.bar.add_task(self.sweep.name, total=total, completed=self.done, best="")
        else:
            self.say(f"sweep {self.sweep.name}: {total} trials ({self.done} already in the study)")
        return self

    def update(self, result, rows: list[TrialRow]) -> None:
        finished = sum(r.state in ("complete", "pruned", "failed") for r in rows)
        row = next((r for r in rows if r.number == result.number), None)
        detail = values_text(self.sweep, row) if row is not None and result.state == "complete" else (
            (result.error or "").splitlines()[0] if result.error else "")
        line = (f"{trial_name(result.number)} {result.state} ({result.seconds:.1f}s)"
                + (f": {detail}" if detail else "") + f" | {finished}/{self.sweep.config.trials} | "
                + best_text(self.sweep, rows))
        if self.bar is not None:
            self.bar.update(self.task, completed=finished, best=best_text(self.sweep, rows))
            self.bar.console.print(line, markup=False, highlight=False)
        else:
            self.say(line)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


__all__ = ["SweepProgress", "TrialRow", "dominates", "parse_pick", "pareto_front", "pick_trial", "plot_pareto",
           "summary_text", "trial_rows", "trials_csv", "values_text", "write_reports"]
