"""The ``multiloss`` commands.

The argument parser is :mod:`multiloss.cli.parser` (it imports no TensorFlow,
so ``--help`` and ``--version`` answer at once); the quiet start-up is the
console script ``multiloss_cli``.  Each command here imports what it needs.
Commands that run, check, evaluate or plot a run go through its run kind
(:mod:`multiloss.run.kinds`): ``train`` and ``incremental`` by name, a run
folder by the kind that recognises it.  Import strings (``--model mymodel:build``, a config's
``data.source: folders:load``) resolve from the current folder first, as ``python -m`` would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator


def _load(path: str):
    from ..spec.loss_spec import load_spec

    return load_spec(path)


def _model(ref: str):
    from ..spec.imports import import_object

    return import_object(ref)()


def cmd_validate(args) -> int:
    """A loss spec, a run config or an incremental config, each checked fully without training."""
    from pathlib import Path

    from ..spec.configfile import config_kind, read_config

    path = Path(args.file)
    data, _ = read_config(path, what="YAML file")
    if _is_sweep(data):
        from ..run.sweep import check_sweep

        print(f"{path}: OK ({check_sweep(path, args.set)})")
        return 0
    kind = config_kind(data)
    if kind == "spec":
        spec = _load(path)
        terms = spec.resolve()
        detail = f"loss spec, {len(terms)} terms: {', '.join(t.name for t in terms)}"
        if args.model:
            from ..core.compile import compile as ml_compile

            ml_compile(_model(args.model), spec)   # outputs, class ids, shared layers
            detail += f"; matches the model of {args.model}"
    else:
        from ..run.kinds import kind_of_config

        detail = kind_of_config(kind).check(path, args.set)
    if args.model and kind != "spec":
        print(f"note: --model is for loss specs; a {kind} config names its own model", file=sys.stderr)
    print(f"{path}: OK ({detail})")
    return 0


def _loss_text(term) -> str:
    params = ", ".join(f"{k}={v}" for k, v in term.loss.params.items())
    return f"{term.loss_label}({params})" if params else term.loss_label


def _spec_of(path: str):
    """The loss spec of a spec file, or of a run config (its ``loss:``): what ``describe`` and ``check``
    read; an incremental config has none."""
    from ..spec.configfile import config_kind, read_config
    from ..spec.errors import SpecError

    data, _ = read_config(path, what="YAML file")
    kind = config_kind(data)
    if kind == "run":
        from ..run.config import load_run_config

        return load_run_config(path).spec
    if kind != "spec":
        raise SpecError([((), None, f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} config has no loss spec of "
                                    "its own: its loss is its method's "
                                    "(see `multiloss validate` for what the config holds)")], path)
    return _load(path)


def cmd_describe(args) -> int:
    from ..run.console import round_weight, table

    spec = _spec_of(args.spec)
    metrics = spec.head_metrics()
    rows = []
    terms = spec.resolve()
    for t in terms:
        ms = sorted({m for o in t.outputs for m in metrics.get(o, [])})
        extras = []
        if t.class_weight:
            extras.append(f"class_weight={t.class_weight}")
        if t.mask_value is not None:
            extras.append(f"mask_value={t.mask_value:g}")
        rows.append([t.name, ",".join(t.outputs), _loss_text(t), f"{round_weight(t.weight):g}", t.reduction,
                     ",".join(ms) or "-", " ".join(extras) or "-"])
    print(table(rows, ["term", "outputs", "loss", "weight", "reduction", "metrics", "weights"]))
    w = spec.weighting
    strategy = "static" if w is None else w.strategy
    params = "" if w is None or not w.params else "(" + ", ".join(f"{k}={v}" for k, v in w.params.items()) + ")"
    shared = "" if w is None or not w.shared else f"; shared layers: {', '.join(w.shared)}"
    note = ("weights fixed" if strategy == "static" and not spec.schedules else
            "weights follow the schedules" if strategy == "static" else
            f"it multiplies each {'static × schedule ' if spec.schedules else ''}weight during training")
    print(f"weighting: {strategy}{params}{shared} ({note})")
    if spec.schedules:
        print(_schedule_table(spec, terms, strategy))
    return 0


def _schedule_table(spec, terms, strategy: str = "static") -> str:
    """Each term's weight: static, its schedule's ramp, static × schedule at step 0 and after the ramp
    (the effective weight without a strategy; a strategy's weight multiplies it, and is said so)."""
    from ..run.console import round_weight, table

    rows = []
    for t in terms:
        s = spec.schedules.get(t.name)
        if s is None:
            rows.append([t.name, f"{round_weight(t.weight):g}", "-", f"{round_weight(t.weight):g}",
                         f"{round_weight(t.weight):g}"])
            continue
        ramp = f"{s.kind} {s.start:g}→{s.end:g} over steps {s.warmup}–{s.warmup + s.steps}"
        ramp += f" in {s.stages} stages" if s.stages != 1 else ""
        rows.append([t.name, f"{round_weight(t.weight):g}", ramp, f"{round_weight(t.weight * s.start):g}",
                     f"{round_weight(t.weight * s.end):g}"])
    if strategy == "static":
        return table(rows, ["effective weight", "static", "schedule (factor)", "at step 0", "after the ramp"])
    return (table(rows, ["static × schedule", "static", "schedule (factor)", "at step 0", "after the ramp"])
            + f"\n(the effective weight, logged as <term>_weight, is this × the weight {strategy} computes "
              "for the term during training)")


def cmd_schema(args) -> int:
    from ..spec.loss_spec import LossSpec

    schema = LossSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "multiloss loss spec"
    print(json.dumps(schema, indent=2))
    return 0


def _synthetic_targets(composite, y_pred: dict, batch: int, rng) -> dict:
    from ..run.synthetic import synthetic_targets

    return synthetic_targets(composite, y_pred, batch, rng)


def _check_batch(args, model, rng):
    """``(x, y)`` of ``--batch`` samples: from ``--data``, or random inputs and no targets (``y`` None)."""
    from ..spec.imports import import_object

    if args.data:
        x, y = import_object(args.data)()
        x = {k: v[: args.batch] for k, v in x.items()} if isinstance(x, dict) else x[: args.batch]
        return x, {k: v[: args.batch] for k, v in y.items()}

    def rand(t):
        return rng.normal(size=(args.batch, *t.shape[1:])).astype("float32")

    x = {t.name.split(":")[0]: rand(t) for t in model.inputs} if len(model.inputs) > 1 else rand(model.inputs[0])
    return x, None


def _predict_random(args, model, x):
    """``model(x)`` on random inputs; a model they cannot feed (e.g. token ids) is a RunError naming why."""
    try:
        return model(x, training=False)
    except Exception as exc:
        import re

        from ..spec.errors import RunError

        shapes = {k: v.shape for k, v in x.items()} if isinstance(x, dict) else x.shape
        lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()]
        why = next((ln for ln in lines if ln and not ln.startswith("Exception encountered")), type(exc).__name__)
        raise RunError(f"{args.model}: the model does not run on random inputs shaped {shapes} ({why[:200]}); "
                       "pass real data with `--data package.module:function` returning (x, y)") from None


def cmd_check(args) -> int:
    import numpy as np
    from keras import ops

    from ..core.compile import build_loss
    from ..run.console import table

    spec = _spec_of(args.spec)
    model = _model(args.model)
    composite = build_loss(spec, model)
    rng = np.random.default_rng(0)
    x, y = _check_batch(args, model, rng)
    y_pred = model(x, training=False) if args.data else _predict_random(args, model, x)
    y_pred = y_pred if isinstance(y_pred, dict) else composite.keyed(y_pred, "y_pred")
    if y is None:
        y = _synthetic_targets(composite, y_pred, args.batch, rng)
    elements = composite.elementwise(y, y_pred)
    result = composite.compute(y, y_pred)
    rows = []
    for t in composite.terms:
        values, _ = elements[t.name]
        pshape = " ".join(str(tuple(y_pred[o].shape)) for o in t.outputs)
        rows.append([t.name, pshape, str(tuple(values.shape)), t.reduction,
                     f"{t.weight:g}", f"{float(ops.convert_to_numpy(result.losses[t.name])):.6g}"])
    print(table(rows, ["term", "y_pred shape", "loss shape (L)", "reduction", "weight", "value"]))
    print(f"total = Σ weight·value = {float(ops.convert_to_numpy(result.total)):.6g}"
          + ("" if args.data else "  (random inputs and synthetic targets; pass --data for real ones)"))
    return 0


def cmd_quickstart(args) -> int:
    from ..run.quickstart import run

    run(args.out, epochs=args.epochs)
    return 0


def cmd_run(args) -> int:
    """``multiloss KIND [CONFIG]``: a run of the kind named by the command (``train``, ``incremental``)."""
    from pathlib import Path

    from ..run.kinds import get_kind

    kind = get_kind(args.command)
    cfg = kind.load_config(Path(args.config) if args.config else None, args.set)
    if getattr(args, "dry_run", False):
        kind.dry_run(cfg)
        return 0
    kind.run(cfg, resume=args.resume, overwrite=args.overwrite)
    return 0


def cmd_evaluate(args) -> int:
    from ..run.kinds import kind_of_run

    kind_of_run(args.run_dir).evaluate(args.run_dir)
    return 0


def cmd_plot(args) -> int:
    from ..run.kinds import kind_of_run

    kind_of_run(args.run_dir).plot(args.run_dir)
    return 0


def cmd_compare(args) -> int:
    from ..run.compare import compare_runs

    png, md = compare_runs(args.run_dirs, args.out, args.baselines)
    print(md.read_text().split("\n\n![")[0])
    print(f"wrote {png} and {md}")
    return 0


def cmd_export(args) -> int:
    from ..run.serve import export_run

    export_run(args.run_dir, args.format, args.out)
    return 0


def cmd_predict(args) -> int:
    from ..run.serve import predict_run

    predict_run(args.run_dir, args.input, args.out)
    return 0


def _is_sweep(data) -> bool:
    from ..run.sweep_config import is_sweep_file

    return is_sweep_file(data)


def cmd_sweep(args) -> int:
    """``multiloss sweep SWEEP.yaml``, ``sweep show SWEEP_DIR``, ``sweep best SWEEP_DIR --pick ...``."""
    from ..spec.errors import RunError

    action, rest = args.target, [args.sweep_dir] if args.sweep_dir else []
    if action in ("show", "best"):
        if len(rest) != 1:
            raise RunError(f"usage: multiloss sweep {action} SWEEP_DIR" + (" [--pick NAME=WEIGHT,...]"
                                                                          if action == "best" else ""))
        from ..run.sweep import best_config, show_sweep

        if action == "show":
            show_sweep(rest[0])
        else:
            best_config(rest[0], args.pick, args.out)
        return 0
    if rest:
        raise RunError(f"multiloss sweep takes one sweep file, got {action} {args.sweep_dir} (or: sweep show "
                       "SWEEP_DIR, sweep best SWEEP_DIR)")
    from ..run.sweep import run_sweep

    run_sweep(action, args.set, workers=args.workers, resume=args.resume, overwrite=args.overwrite)
    return 0


def cmd_baselines(args) -> int:
    from ..run.sweep_baselines import run_baselines

    run_baselines(args.config, args.set, resume=args.resume, overwrite=args.overwrite)
    return 0


#: Commands other than the run kinds' (``train``, ``incremental``: :func:`cmd_run`).
COMMANDS = {
    "validate": cmd_validate, "describe": cmd_describe, "schema": cmd_schema, "check": cmd_check,
    "evaluate": cmd_evaluate, "plot": cmd_plot, "compare": cmd_compare, "quickstart": cmd_quickstart,
    "export": cmd_export, "predict": cmd_predict, "sweep": cmd_sweep, "baselines": cmd_baselines,
}


def _resume_hint(command: str) -> str:
    """What to type to continue an interrupted run of ``command`` ("" for commands that are no run kind)."""
    if command in COMMANDS:
        return ""
    from ..run.kinds import get_kind

    return get_kind(command).resume_hint


@contextlib.contextmanager
def own_warnings_in_one_line() -> Iterator[None]:
    """User warnings (multiloss's, and Keras's) formatted as ``warning: <message>``: Python shows the file,
    the line and the source line of the call, which mean nothing to a user of the command; other
    categories (deprecations, runtime warnings) as Python does.  Only the text changes: a caller's
    ``warnings.catch_warnings(record=True)`` still records them."""
    import warnings

    formatted = warnings.formatwarning

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 line: str | None = None) -> str:
        if issubclass(category, UserWarning):
            return f"warning: {message}\n"
        return formatted(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = formatted


def run_command(args: argparse.Namespace) -> int:
    """Run parsed command-line arguments; user errors become one message and an exit status."""
    from ..spec.errors import run_guarded
    from ..spec.imports import importable_from

    quiet = open(os.devnull, "w") if getattr(args, "quiet", False) else None  # noqa: SIM115
    with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext(), importable_from(os.getcwd()), \
            own_warnings_in_one_line():
        try:
            return run_guarded(lambda: COMMANDS.get(args.command, cmd_run)(args), _resume_hint(args.command))
        finally:
            if quiet:
                quiet.close()


def main(argv: list[str] | None = None) -> int:
    """``multiloss ARGS`` in this process (``python -m multiloss``, tests)."""
    from .parser import parse

    return run_command(parse(argv))


if __name__ == "__main__":
    sys.exit(main())
