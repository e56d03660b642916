"""``multiloss compare RUN_DIR...``: the same terms and metrics of several runs, overlaid.

Each run folder's history (``history.json``, or ``history.csv``) is read; one
PNG overlays, per panel, the total loss, each term's loss and each metric
across the runs (train solid, validation dashed, one colour per run), and a
Markdown table gives each run's final-epoch values, the best per row in bold.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..spec.errors import RunError
from .monitor import direction, resolve_mode
from .plots import epoch_axis, is_flat, new_figure, save_figure


def read_history(run_dir: str | Path) -> list[dict]:
    """A run folder's history rows (``history.json``, else ``history.csv``), epochs ascending.

    In an incremental run's history (rows with ``step``/``stage``), epochs are
    numbered through all steps and stages.
    """
    run_dir = Path(run_dir)
    if (run_dir / "history.json").exists():
        rows = json.loads((run_dir / "history.json").read_text())
    elif (run_dir / "history.csv").exists():
        with open(run_dir / "history.csv", newline="") as f:
            rows = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
                    for r in csv.DictReader(f)]
    else:
        raise FileNotFoundError(f"{run_dir}: no history.json or history.csv (is it a multiloss run folder?)")
    if any("step" in r or "stage" in r for r in rows):
        # An incremental run: epochs restart at every step and stage; count them through.
        for i, r in enumerate(rows):
            r["epoch"] = i + 1
        return rows
    for i, r in enumerate(rows):
        r["epoch"] = int(r.get("epoch") or i + 1)
    return sorted(rows, key=lambda r: r["epoch"])


def _labels(run_dirs: list[Path]) -> list[str]:
    """Short distinct names: the folder names, with parents added where two clash."""
    labels = [p.name or str(p) for p in run_dirs]
    depth = 1
    while len(set(labels)) < len(labels) and depth < 6:
        depth += 1
        labels = ["/".join(p.resolve().parts[-depth:]) for p in run_dirs]
    return labels


def _keys(histories: list[list[dict]]) -> tuple[list[str], list[str]]:
    """``(losses, metrics)``: training keys shown; ``loss`` first, then per-term losses, then metrics."""
    seen: dict[str, None] = {}
    for h in histories:
        for row in h:
            seen.update(dict.fromkeys(k for k, v in row.items() if isinstance(v, (int, float))))
    keys = [k for k in seen if k not in ("epoch", "step", "stage", "learning_rate") and not k.startswith("val_")]
    losses = (["loss"] if "loss" in keys else []) + sorted(k for k in keys if k.endswith("_loss"))
    weights = sorted(k for k in keys if k.endswith("_weight"))
    metrics = sorted(k for k in keys if k not in losses and k not in weights) + weights
    return losses, metrics


def _constant(histories: list[list[dict]], key: str) -> float | None:
    """The value of ``key`` when it is the same in every epoch of every run (train and validation)."""
    values = [v for h in histories for k in (key, f"val_{key}") for v in _series(h, k)[1]]
    return values[0] if values and is_flat(values) else None


def _series(history: list[dict], key: str):
    pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _out_paths(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    if out.is_dir() or str(out).endswith(("/", "\\")):
        return out / "compare.png", out / "compare.md"
    if out.suffix in (".png", ".md"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".png"), out.with_name(out.name + ".md")


def final_values(history: list[dict]) -> dict:
    """The latest logged value of each key in a history."""
    return {k: v for r in history for k, v in r.items() if v is not None}


def delta_m_row(histories: list[list[dict]], baselines: dict[str, float]) -> str:
    """``| Δm% | ...``: each run's final-epoch values of the baselines' keys against them (lower is
    better; bold: the best), "–" for a run that lacks one of the keys."""
    from .selection import delta_m

    finals = [final_values(h) for h in histories]
    # Keys no history logs (baselines.json's test_ figures, from metrics.json) are left out, and said so.
    used = {k: v for k, v in baselines.items() if any(k in last for last in finals)}
    modes = {k: resolve_mode(k) or "min" for k in used}
    scores = [delta_m(last, used, modes) if used and all(k in last for k in used) else None for last in finals]
    valid = [s for s in scores if s is not None]
    best = min(valid) if len(set(valid)) > 1 else None
    cells = ["–" if s is None else (f"**{s:+.2f}**" if s == best else f"{s:+.2f}") for s in scores]
    over = f" (over {', '.join(used) or 'none'}: no history logs {', '.join(k for k in baselines if k not in used)})" \
        if len(used) < len(baselines) else ""
    return f"| Δm% vs baselines{over} | " + " | ".join(cells) + " |"


def compare_table(labels: list[str], histories: list[list[dict]], baselines: dict[str, float] | None = None) -> str:
    """The Markdown table: one row per key, one column per run, ``train / validation`` at the last epoch;
    with ``baselines`` (``{key: single-task value}``) a first row of Δm%."""
    losses, metrics = _keys(histories)
    header = "| | " + " | ".join(f"`{lab}`" for lab in labels) + " |"
    lines = [header, "|---|" + "---:|" * len(labels)]
    lines.append("| epochs | " + " | ".join(str(len(h)) for h in histories) + " |")
    if baselines:
        lines.append(delta_m_row(histories, baselines))
    for key in losses + metrics:
        if key.endswith("_weight") and _constant(histories, key) is not None:
            continue  # the same fixed weight everywhere says nothing about the runs
        finals = []
        for h in histories:
            last = final_values(h)
            val = None if key.endswith("_weight") else last.get(f"val_{key}")  # val weight = train weight
            finals.append((last.get(key), val))
        better = direction(key)
        scores = [(v if v is not None else t) for t, v in finals]
        valid = [s for s in scores if s is not None]
        best = (max(valid) if better > 0 else min(valid)) if better and len(set(valid)) > 1 else None
        cells = []
        for (t, v), score in zip(finals, scores):
            text = "–" if t is None and v is None else (
                f"{t:.4g}" if v is None else f"{t:.4g} / {v:.4g}" if t is not None else f"– / {v:.4g}")
            cells.append(f"**{text}**" if best is not None and score == best else text)
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    has_val = any(f"val_{k}" in r for h in histories for r in h for k in losses)
    note = ("Final epoch, train / validation; bold: the best run (validation when logged)."
            if has_val else "Final epoch; bold: the best run.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def read_baselines(path: str | Path) -> dict[str, float]:
    """The ``values`` of a ``baselines.json`` written by ``multiloss baselines`` (or a plain ``{key: value}``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"--baselines {path}: cannot read it ({exc}); give the baselines.json that "
                       "`multiloss baselines RUN_CONFIG` writes") from None
    values = data.get("values", data) if isinstance(data, dict) else None
    if not isinstance(values, dict) or not values or not all(isinstance(v, (int, float)) for v in values.values()):
        raise RunError(f"--baselines {path}: expected {{key: number}} (or baselines.json's `values`)")
    return {k: float(v) for k, v in values.items()}


def compare_runs(run_dirs: list[str | Path], out: str | Path, baselines: str | Path | None = None
                 ) -> tuple[Path, Path]:
    """Overlay the runs' losses and metrics in one PNG and write a Markdown table.

    ``out`` is a path stem (``cmp`` gives ``cmp.png`` and ``cmp.md``) or an
    existing folder (``compare.png`` and ``compare.md`` in it).  Returns
    ``(png_path, md_path)``.  Raises ``FileNotFoundError`` for a folder
    without a history.
    """
    base = read_baselines(baselines) if baselines is not None else None
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("compare needs at least one run folder")
    histories = [read_history(d) for d in dirs]
    labels = _labels(dirs)
    png, md = _out_paths(out)
    png.parent.mkdir(parents=True, exist_ok=True)

    losses, metrics = _keys(histories)
    constant = {k: c for k in losses + metrics if (c := _constant(histories, k)) is not None}
    keys = [k for k in losses + metrics if k not in constant]
    cols = min(3, max(1, len(keys)))
    rows = (len(keys) + cols - 1) // cols
    fig = new_figure(4.4 * cols, 3.0 * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    has_val = False
    for ax, key in zip(axes.flat, keys):
        for i, (lab, h) in enumerate(zip(labels, histories)):
            xs, ys = _series(h, key)
            marker = "o" if len(xs) <= 12 else None
            if xs:
                ax.plot(xs, ys, "-", color=f"C{i % 10}", marker=marker, ms=3, label=lab)
            xs, ys = _series(h, f"val_{key}") if not key.endswith("_weight") else ([], [])
            has_val = has_val or bool(xs)
            if xs:
                ax.plot(xs, ys, "--", color=f"C{i % 10}", marker=marker, ms=3, alpha=0.8)
        ax.set_title(key + ("  (total)" if key == "loss" else ""), fontsize=10)
        ax.grid(alpha=0.3)
        epoch_axis(ax)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if constant:
        fig.supxlabel("the same in every epoch of every run (no panel): "
                      + ", ".join(f"{k} = {v:.4g}" for k, v in constant.items()), fontsize=9, color="0.3")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside upper center", ncol=min(len(labels), 4), fontsize=9,
               title="solid: train, dashed: validation" if has_val else "train", title_fontsize=8)
    save_figure(fig, png)

    from . import atomic

    text = f"# Runs compared\n\n{compare_table(labels, histories, base)}\n![runs compared]({png.name})\n"
    atomic.write_text(md, text)
    return png, md


__all__ = ["compare_runs", "compare_table", "delta_m_row", "final_values", "read_baselines", "read_history"]
