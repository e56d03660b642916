"""Early stopping on any key a run logs, with its mode resolved for multiloss's keys or given."""

import json

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


# --- several heads: delta_m, the best epoch's model, resume ------------------------------------------

def test_delta_m_is_the_papers_mean_relative_change_by_hand():
    from multiloss.run.selection import delta_m

    modes = {"val_a_loss": "min", "val_b_accuracy": "max"}
    # a: (0.5 - 1.0) / 1.0 = -0.5;  b: -(0.9 - 0.6) / 0.6 = -0.5;  mean -0.5 -> -50 %
    assert delta_m({"val_a_loss": 0.5, "val_b_accuracy": 0.9}, {"val_a_loss": 1.0, "val_b_accuracy": 0.6},
                   modes) == pytest.approx(-50.0)
    # worse on both: a +100 %, b -(0.3 - 0.6) / 0.6 = +50 %  -> +75 %
    assert delta_m({"val_a_loss": 2.0, "val_b_accuracy": 0.3}, {"val_a_loss": 1.0, "val_b_accuracy": 0.6},
                   modes) == pytest.approx(75.0)


@pytest.mark.parametrize("values,mode,patience", [
    ([1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.87], "min", 2),
    ([0.1, 0.3, 0.2, 0.25, 0.29, 0.5], "max", 3),
    ([1.0, 1.0, 1.0], "min", 0),
    ([0.5, 0.6, 0.4, 0.7], "max", 1),
])
def test_the_resume_replay_follows_keras_early_stopping(values, mode, patience):
    """Keras's own EarlyStopping fed the same values is the reference: best, best epoch and the stop."""
    from multiloss.run.selection import replay

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    keras_stop = keras.callbacks.EarlyStopping(monitor="m", mode=mode, patience=patience, min_delta=0.01)
    keras_stop.set_model(model)
    model.stop_training = False
    keras_stop.on_train_begin()
    ran = 0
    for epoch, v in enumerate(values):
        keras_stop.on_epoch_end(epoch, {"m": v})
        ran = epoch + 1
        if model.stop_training:
            break
    best, best_epoch, wait, stopped = replay(values[:ran], mode, 0.01, patience)
    assert (best, best_epoch, wait, stopped) == (keras_stop.best, keras_stop.best_epoch, keras_stop.wait,
                                                  model.stop_training)


def test_several_keys_are_refused_with_their_path_and_what_would_be_valid():
    with pytest.raises(ml.SpecError) as err:
        _config(f"{ES}.monitor={{val_ctg_out_1_acuracy: max, val_bin_out_loss: auto, val_contrastive_weight: auto}}",
                f"{ES}.baselines={{val_bin_out_loss: 0.3}}")
    text = str(err.value)
    assert f"{ES}.monitor.val_ctg_out_1_acuracy: 'val_ctg_out_1_acuracy' is not a logged key; did you mean" in text
    assert f"{ES}.monitor.val_contrastive_weight: mode auto cannot tell" in text
    assert f"{ES}.baselines: give one baseline for each monitored key" in text
    with pytest.raises(ml.SpecError, match=rf"{ES}\.baselines: baselines are for a monitor of several keys"):
        _config(f"{ES}.baselines={{val_loss: 1.0}}")



def test_a_bad_mode_in_a_monitor_mapping_is_its_only_problem():
    """`monitor: {val_loss: min, val_bin_out_loss: up}` was also told `monitor.str: Input should be a valid
    string` (the union's other branch) and "give two or more keys" (the rest without the bad key)."""
    with pytest.raises(ml.SpecError) as err:
        _config(f"{ES}.monitor={{val_loss: min, val_bin_out_loss: up}}")
    assert err.value.problems == [((*ES.split("."), "monitor", "val_bin_out_loss"), None,
                                   f"Input should be 'auto', 'min' or 'max', got 'up' (from --set {ES}.monitor="
                                   "{val_loss: min, val_bin_out_loss: up})")]
    with pytest.raises(ml.SpecError, match=rf"{ES}\.monitor: Input should be a valid string or a valid dictionary, got 3 "):
        _config(f"{ES}.monitor=3")            # no branch takes it: one problem, not one per branch


@pytest.mark.slow
def test_delta_m_over_two_heads_keeps_the_best_epochs_model_and_resume_respects_the_stop(tmp_path):
    """delta_m recomputed from the history by numpy; best.keras and model.keras evaluated on the
    validation split give the best epoch's logged values; a resumed run that had stopped trains no more."""
    import numpy as np

    from multiloss.run.train import KIND

    monitor = "{val_ctg_out_1_accuracy: max, val_bin_out_loss: auto}"
    args = [f"output_dir={tmp_path}", "train.epochs=6", "train.verbose=0", "data.params.pairs_per_image=0.25",
            f"{ES}.monitor={monitor}", f"{ES}.patience=1", "optimizer.params.learning_rate=1.0"]
    train(default_config_path(), args)
    run = tmp_path / "siamese_digits"
    history = read_history(run)
    acc = np.array([r["val_ctg_out_1_accuracy"] for r in history])
    loss = np.array([r["val_bin_out_loss"] for r in history])
    expected = 100 * (-(acc - acc[0]) / acc[0] + (loss - loss[0]) / loss[0]) / 2
    np.testing.assert_allclose([r["delta_m"] for r in history], expected, rtol=1e-5, atol=1e-6)
    best = int(np.argmin(expected))
    assert best < len(history) - 1 < 5, "Adam at lr 1 is meant to get worse after its best epoch and stop"
    chosen = json.loads((run / "metrics.json").read_text())["selection"]
    assert chosen == {"monitor": "delta_m", "mode": "min", "best": pytest.approx(expected[best], rel=1e-5, abs=1e-6),
                      "best_epoch": best + 1, "stopped_early": True, "restored_best_weights": True}

    cfg = KIND.load_config(default_config_path(), args)
    from multiloss.run.train import load_splits, prepare

    x, y = prepare(load_splits(cfg).val, cfg, "val")
    for name in ("best.keras", "model.keras"):
        got = keras.saving.load_model(run / name).evaluate(x, y, verbose=0, return_dict=True)
        assert got["ctg_out_1_accuracy"] == pytest.approx(acc[best], abs=1e-6), name
        assert got["bin_out_loss"] == pytest.approx(loss[best], rel=1e-5), name

    train(default_config_path(), [*args, "train.epochs=9"], resume=True)     # it had stopped: no more epochs
    assert len(read_history(run)) == len(history)
    got = keras.saving.load_model(run / "model.keras").evaluate(x, y, verbose=0, return_dict=True)
    assert got["ctg_out_1_accuracy"] == pytest.approx(acc[best], abs=1e-6)


def class_margin(y_true, y_pred):
    """A user's metric, named in the config by import string; Keras logs it as ``<head>_class_margin``."""
    return keras.ops.max(y_pred, axis=-1)


def test_an_import_string_metric_is_monitored_by_the_name_keras_logs_it_under(tmp_path):
    metric = "loss.outputs.ctg_out_1.metrics=[accuracy, 'test_early_stopping:class_margin']"
    cfg = _config(metric, f"{ES}.monitor=val_ctg_out_1_class_margin", f"{ES}.mode=max", tmp_path=tmp_path)
    stop = next(c for c in run_callbacks(cfg, _rundir(cfg), [], False) if isinstance(c, keras.callbacks.EarlyStopping))
    assert stop.monitor == "val_ctg_out_1_class_margin"
    with pytest.raises(ml.SpecError, match=r"val_ctg_out_1_test_early_stopping:class_margin"):
        _config(metric, f"{ES}.monitor=val_ctg_out_1_test_early_stopping:class_margin", f"{ES}.mode=max")


def test_a_resume_that_changes_the_monitor_is_refused_and_one_that_changes_patience_goes_on(tmp_path):
    """A resume under another monitor replayed the history with it and named its best epoch in
    metrics.json, while best.keras (and so model.keras) stayed the old monitor's choice."""
    args = [f"output_dir={tmp_path}", "train.epochs=2", "train.verbose=0", "data.params.pairs_per_image=0.25",
            f"{ES}.monitor=val_ctg_out_1_accuracy", f"{ES}.patience=5"]
    train(default_config_path(), args)
    run = tmp_path / "siamese_digits"
    before = (run / "config.yaml").read_text(), (run / "checkpoints" / "state.json").read_text()
    with pytest.raises(ml.SpecError, match=rf"{ES}\.monitor: differs from the run being resumed "
                                           r"\('val_ctg_out_1_accuracy' there\): its best.keras was chosen by it"):
        train(default_config_path(), [*args, "train.epochs=3", f"{ES}.monitor=val_loss"], resume=True)
    assert ((run / "config.yaml").read_text(), (run / "checkpoints" / "state.json").read_text()) == before
    train(default_config_path(), [*args, "train.epochs=3", f"{ES}.patience=4"], resume=True)
    assert [row["epoch"] for row in read_history(run)] == [1, 2, 3]
