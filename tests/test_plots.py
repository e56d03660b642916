"""Run figures: which files, what they show (read back from the figures' axes)."""

import importlib

import matplotlib
import numpy as np
import pytest

import multiloss.run.plots as plots

TERMS = ["ctg", "bin", "contrastive"]


def _history(epochs=5, ramp=False):
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 0.0, "val_loss": 0.0}
        weights = {"ctg": 1.0, "bin": 0.5, "contrastive": 0.1 + 0.6 * (e - 1) if ramp else 0.09999995678663254}
        for i, t in enumerate(TERMS):
            loss = (i + 1) / e
            row[f"{t}_loss"], row[f"val_{t}_loss"] = loss, 1.2 * loss
            row[f"{t}_weight"] = row[f"val_{t}_weight"] = weights[t]
            row["loss"] += weights[t] * loss
            row["val_loss"] += weights[t] * 1.2 * loss
        row.update(ctg_accuracy=1 - 0.5 / e, val_ctg_accuracy=1 - 0.6 / e, bin_accuracy=0.6 + 0.05 * e,
                   val_bin_accuracy=0.55 + 0.05 * e, bin_auc=0.5, val_bin_auc=0.5)
        rows.append(row)
    return rows


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved, by file name."""
    saved = {}
    original = plots.save_figure

    def keep(fig, path):
        saved[str(path).rsplit("/", 1)[-1]] = fig
        original(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    return saved


def _epoch_axes(fig):
    return [ax for ax in fig.axes if ax.get_xlabel() == "epoch"]


def test_files_and_no_weights_panel_for_fixed_weights(tmp_path, figures):
    (tmp_path / "weights.png").write_bytes(b"stale")
    written = plots.plot_history(_history(), TERMS, tmp_path)
    assert [p.name for p in written] == ["terms.png", "contribution.png", "metrics.png", "total.png"]
    assert all(p.stat().st_size > 5000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)
    assert not (tmp_path / "weights.png").exists()  # fixed weights: no panel of flat lines
    titles = [ax.get_title() for ax in figures["terms.png"].axes if ax.get_visible() and ax.axison]
    assert titles == ["ctg  (weight 1)", "bin  (weight 0.5)", "contrastive  (weight 0.1)"]
    # Integer epoch ticks on every epoch axis.
    for name in ("terms.png", "contribution.png", "metrics.png", "total.png"):
        for ax in _epoch_axes(figures[name]):
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)


def test_metrics_grouped_and_flat_ones_in_a_note(tmp_path, figures):
    plots.plot_history(_history(), TERMS, tmp_path)
    fig = figures["metrics.png"]
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == ["accuracy  (dashed: validation)"]
    assert sorted(t.get_text() for t in panels[0].get_legend().get_texts()) == ["bin", "ctg"]
    assert "bin_auc = 0.5" in fig.get_supxlabel()


def test_weights_panel_when_weights_change(tmp_path, figures):
    written = plots.plot_history(_history(ramp=True), TERMS, tmp_path)
    assert "weights.png" in [p.name for p in written]
    (ax,) = figures["weights.png"].axes
    assert ax.get_yscale() == "log"  # 0.1 … 2.5: a factor 25 needs a log axis
    labels = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    assert set(labels) == {"ctg", "bin", "contrastive"}
    np.testing.assert_allclose(labels["contrastive"], [0.1, 0.7, 1.3, 1.9, 2.5])
    plots.plot_history(_history(ramp=True)[:2], TERMS, tmp_path)
    assert figures["weights.png"].axes[0].get_yscale() == "linear"  # 0.1 … 1: one scale, from 0


def test_contributions_are_weighted_term_losses(tmp_path, figures):
    hist = _history(ramp=True)
    epochs, parts = plots.contributions(hist, TERMS)
    assert epochs == [1, 2, 3, 4, 5]
    # Epoch 3: losses 1/3, 2/3, 1; weights 1, 0.5, 1.3.
    np.testing.assert_allclose(parts[:, 2], [1 / 3, 1 / 3, 1.3])
    np.testing.assert_allclose(parts.sum(0), [r["loss"] for r in hist])
    plots.plot_history(hist, TERMS, tmp_path)
    train = figures["contribution.png"].axes[0]
    # The stacked areas' top edge is 100 %.
    tops = max(np.max(c.get_paths()[0].vertices[:, 1]) for c in train.collections)
    assert tops == pytest.approx(100)
    legend = [t.get_text() for t in figures["contribution.png"].legends[0].get_texts()]
    last = parts[:, -1] / parts[:, -1].sum() * 100
    assert legend == [f"{t}  {s:.0f}%" for t, s in zip(TERMS, last)][::-1]


def test_single_epoch_history(tmp_path):
    written = plots.plot_history(_history(epochs=1), TERMS, tmp_path)
    assert [p.name for p in written] == ["terms.png", "contribution.png", "metrics.png", "total.png"]


def test_importing_plots_keeps_the_backend(tmp_path):
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        importlib.reload(plots)
        plots.plot_history(_history(), TERMS, tmp_path)
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)


def test_confusion_colour_bar_label_and_upright_ticks(tmp_path, monkeypatch):
    import multiloss.incremental.plots as iplots

    saved = []
    monkeypatch.setattr(iplots, "save_figure", lambda fig, path: saved.append(fig))
    m = np.diag([5, 6, 7]) + 1
    iplots.plot_confusion(m, ["0", "1", "2"], tmp_path / "c.png")
    iplots.plot_confusion(m, ["T-shirt", "Trouser", "Pullover"], tmp_path / "d.png")
    short, long_ = saved
    ax, cbar = short.axes
    assert "fraction" in cbar.get_ylabel()
    assert all(t.get_rotation() == 0 for t in ax.get_xticklabels())
    assert all(t.get_rotation() == 45 for t in long_.axes[0].get_xticklabels())
    # The colours are row fractions: the first row is [6, 1, 1] / 8.
    np.testing.assert_allclose(ax.images[0].get_array()[0], [0.75, 0.125, 0.125])
