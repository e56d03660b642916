"""The quickstart job: three heads on scikit-learn's digits, end to end.

Loads the packaged spec, trains with ``ml.compile`` + ``model.fit``, prints
every term's loss and weight and every head's metrics, saves the model and
loads it back.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import keras
import numpy as np

from ..core.compile import compile as ml_compile
from ..spec.errors import RunError
from ..spec.loss_spec import load_spec
from . import atomic
from .console import table
from .rundir import RunDir


def digits_multitask_data(seed: int = 0):
    """Digits as (x, y) with targets for the class, parity and reconstruction heads."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = {
        "digit": d.target.astype("int32"),
        "parity": (d.target % 2).astype("float32")[:, None],
        "reconstruction": x,
    }
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], {k: v[order] for k, v in y.items()}


def run(out_dir: str | Path = "runs/quickstart", epochs: int = 15, verbose: int = 2) -> dict:
    """Train, report, save and reload; returns the final history row."""
    from .examples import digits_multitask_model

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file; give a folder (quickstart writes model.keras in it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {out}: cannot create the folder ({exc.strerror}); give a writable one") from None
    RunDir(out).check_writable()        # before training, not after it
    keras.utils.set_random_seed(0)
    spec_file = resources.files("multiloss") / "configs" / "quickstart.yaml"
    spec = load_spec(spec_file.read_text(), name="multiloss/configs/quickstart.yaml")
    x, y = digits_multitask_data()
    n_val = len(x) // 5
    x_tr, x_val = x[n_val:], x[:n_val]
    y_tr = {k: v[n_val:] for k, v in y.items()}
    y_val = {k: v[:n_val] for k, v in y.items()}

    model = digits_multitask_model()
    ml_compile(model, spec, optimizer=keras.optimizers.Adam(3e-3))
    start = time.perf_counter()
    history = model.fit(x_tr, y_tr, validation_data=(x_val, y_val), epochs=epochs,
                        batch_size=64, verbose=verbose)
    seconds = time.perf_counter() - start
    last = {k: v[-1] for k, v in history.history.items()}

    terms = model.loss.term_names
    rows = [[t, f"{last[f'{t}_weight']:.3g}", f"{last[f'{t}_loss']:.4f}",
             f"{last[f'val_{t}_loss']:.4f}"] for t in terms]
    print("\nterms (final epoch)")
    print(table(rows, ["term", "weight", "train loss", "val loss"]))
    metric_keys = [k for k in last if not k.startswith("val_") and k != "loss"
                   and not k.endswith(("_loss", "_weight"))]
    print("\nmetrics (final epoch)")
    print(table([[k, f"{last[k]:.4f}", f"{last['val_' + k]:.4f}"] for k in metric_keys],
                       ["metric", "train", "val"]))
    check = sum(last[f"{t}_weight"] * last[f"{t}_loss"] for t in terms)
    print(f"\nloss = {last['loss']:.6f};  Σ weight·term_loss = {check:.6f}  ({seconds:.1f}s training)")

    path = out / "model.keras"
    atomic.write_with(path, model.save)
    reloaded = keras.saving.load_model(path)
    a = model.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"]
    b = reloaded.evaluate(x_val, y_val, verbose=0, return_dict=True)["loss"]
    print(f"saved {path}; reloaded model's validation loss {b:.6f} (before saving {a:.6f})")
    return last
