"""Early stopping on any key a run logs, with its mode resolved for multiloss's keys or given."""

import keras
import pytest

import multiloss as ml
from multiloss.run.compare import read_history
from multiloss.run.config import load_run_config
from multiloss.run.monitor import resolve_mode
from multiloss.run.train import default_config_path, run_callbacks, train

ES = "train.callbacks.early_stopping"


@pytest.mark.parametrize("key,mode", [("val_loss", "min"), ("ctg_out_1_loss", "min"), ("val_bin_out_accuracy", "max"),
                                      ("val_depth_mae", "min"), ("val_seg_auc", "max"), ("val_contrastive_weight", None)])
def test_auto_mode_follows_the_keys_ending(key, mode):
    assert resolve_mode(key) == mode
    assert resolve_mode(key, "max") == "max" and resolve_mode(key, "min") == "min"


def _config(*overrides, tmp_path=None):
    base = [f"output_dir={tmp_path}"] if tmp_path else []
    return load_run_config(default_config_path(), [*base, *overrides])


def test_a_heads_metric_gets_mode_max_and_a_weight_needs_a_mode(tmp_path):
    cfg = _config(f"{ES}.monitor=val_ctg_out_1_accuracy", tmp_path=tmp_path)
    stop = next(c for c in run_callbacks(cfg, _rundir(cfg), [], False) if isinstance(c, keras.callbacks.EarlyStopping))
    assert stop.mode == "max" and stop.monitor == "val_ctg_out_1_accuracy"
    with pytest.raises(ml.SpecError, match=rf"{ES}\.mode: mode auto cannot tell whether 'val_contrastive_weight'"):
        _config(f"{ES}.monitor=val_contrastive_weight")
    cfg = _config(f"{ES}.monitor=val_contrastive_weight", f"{ES}.mode=min", tmp_path=tmp_path)
    stop = next(c for c in run_callbacks(cfg, _rundir(cfg), [], False) if isinstance(c, keras.callbacks.EarlyStopping))
    assert stop.mode == "min"


def _rundir(cfg):
    from multiloss.run.rundir import RunDir

    return RunDir(cfg.run_dir)


def test_unknown_keys_and_modes_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ml.SpecError, match=r"'val_ctg_out_1_acuracy' is not a logged key; did you mean "
                                           r"'val_ctg_out_1_accuracy'"):
        train(default_config_path(), [f"output_dir={tmp_path}", f"{ES}.monitor=val_ctg_out_1_acuracy"])
    with pytest.raises(ml.SpecError, match=rf"{ES}\.mode"):
        _config(f"{ES}.mode=maximum")
    assert not any(tmp_path.iterdir())


def test_a_run_stops_early_on_a_heads_validation_accuracy(tmp_path):
    """Patience 0 and a learning rate of 1e-12: the accuracy never improves, so the run stops after epoch 2."""
    metrics = train(default_config_path(), [
        f"output_dir={tmp_path}", "train.epochs=5", "train.verbose=0", "optimizer.params.learning_rate=1e-12",
        f"{ES}.monitor=val_ctg_out_1_accuracy", f"{ES}.patience=0", "data.params.pairs_per_image=0.25"])
    history = read_history(tmp_path / "siamese_digits")
    assert [row["epoch"] for row in history] == [1, 2]
    assert "val_ctg_out_1_accuracy" in history[0] and metrics["test"]["loss"] > 0
