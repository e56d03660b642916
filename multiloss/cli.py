"""The ``multiloss`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _load(path: str):
    from .spec import load_spec

    return load_spec(path)


def _model(ref: str):
    from .imports import import_object

    return import_object(ref)()


def cmd_validate(args) -> int:
    from .keras_compile import build_loss

    spec = _load(args.spec)
    terms = spec.resolve()
    if args.model:
        build_loss(spec, _model(args.model))
    print(f"{args.spec}: OK ({len(terms)} terms: {', '.join(t.name for t in terms)})")
    return 0


def _loss_text(term) -> str:
    params = ", ".join(f"{k}={v}" for k, v in term.loss.params.items())
    return f"{term.loss_label}({params})" if params else term.loss_label


def cmd_describe(args) -> int:
    from .quickstart import format_table

    spec = _load(args.spec)
    metrics = spec.head_metrics()
    rows = []
    for t in spec.resolve():
        ms = sorted({m for o in t.outputs for m in metrics.get(o, [])})
        extras = []
        if t.class_weight:
            extras.append(f"class_weight={t.class_weight}")
        if t.mask_value is not None:
            extras.append(f"mask_value={t.mask_value:g}")
        rows.append([t.name, ",".join(t.outputs), _loss_text(t), f"{t.weight:g}", t.reduction,
                     ",".join(ms) or "-", " ".join(extras) or "-"])
    print(format_table(rows, ["term", "outputs", "loss", "weight", "reduction", "metrics", "weights"]))
    return 0


def cmd_schema(args) -> int:
    from .spec import LossSpec

    schema = LossSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "multiloss loss spec"
    print(json.dumps(schema, indent=2))
    return 0


def _synthetic_targets(composite, y_pred: dict, batch: int, rng) -> dict:
    import numpy as np

    y = {}
    for t in composite.terms:
        if t.target is None or t.target in y:
            continue
        pred = y_pred[t.outputs[0]]
        shape = tuple(pred.shape)
        if t.loss.target == "sparse":
            y[t.target] = rng.integers(0, shape[-1], size=shape[:-1]).astype("int32")
        elif t.loss.target == "same" and len(t.outputs) == 1:
            if shape[-1] > 1:
                y[t.target] = np.eye(shape[-1], dtype="float32")[rng.integers(0, shape[-1], size=shape[:-1])]
            else:
                y[t.target] = rng.integers(0, 2, size=shape).astype("float32")
        else:
            y[t.target] = rng.integers(0, 2, size=(batch,)).astype("float32")
    return y


def cmd_check(args) -> int:
    import numpy as np
    from keras import ops

    from .imports import import_object
    from .keras_compile import build_loss
    from .quickstart import format_table

    spec = _load(args.spec)
    model = _model(args.model)
    composite = build_loss(spec, model)
    rng = np.random.default_rng(0)
    if args.data:
        x, y = import_object(args.data)()
        x = {k: v[: args.batch] for k, v in x.items()} if isinstance(x, dict) else x[: args.batch]
        y = {k: v[: args.batch] for k, v in y.items()}
    else:
        def rand(t):
            return rng.normal(size=(args.batch, *t.shape[1:])).astype("float32")

        x = {t.name.split(":")[0]: rand(t) for t in model.inputs} if len(model.inputs) > 1 \
            else rand(model.inputs[0])
        y = None
    y_pred = model(x, training=False)
    y_pred = y_pred if isinstance(y_pred, dict) else composite._as_dict(y_pred, "y_pred")
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
    print(format_table(rows, ["term", "y_pred shape", "loss shape (L)", "reduction", "weight", "value"]))
    print(f"total = Σ weight·value = {float(ops.convert_to_numpy(result.total)):.6g}"
          + ("" if args.data else "  (random inputs and synthetic targets; pass --data for real ones)"))
    return 0


def cmd_quickstart(args) -> int:
    from .quickstart import run

    run(args.out, epochs=args.epochs)
    return 0


def cmd_train(args) -> int:
    from .runner import default_config_path, train

    config = args.config or str(default_config_path())
    train(config, args.set, resume=args.resume)
    return 0


def cmd_evaluate(args) -> int:
    from .runner import evaluate_run

    evaluate_run(args.run_dir)
    return 0


def cmd_plot(args) -> int:
    from .runner import plot_run

    plot_run(args.run_dir)
    return 0


def cmd_incremental(args) -> int:
    from .incremental import main as incremental_main

    return incremental_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="multiloss", description="Multi-task loss composition for Keras 3.")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="validate a spec; exit 0 if valid, 1 if not")
    v.add_argument("spec")
    v.add_argument("--model", help="module:function returning the Keras model, to check output names")
    v.set_defaults(fn=cmd_validate)
    d = sub.add_parser("describe", help="print a table of the spec's terms")
    d.add_argument("spec")
    d.set_defaults(fn=cmd_describe)
    s = sub.add_parser("schema", help="print the spec's JSON Schema")
    s.set_defaults(fn=cmd_schema)
    c = sub.add_parser("check", help="run one dry batch and print each term's shapes and value")
    c.add_argument("spec")
    c.add_argument("--model", required=True, help="module:function returning the Keras model")
    c.add_argument("--data", help="module:function returning (x, y); default: random data")
    c.add_argument("--batch", type=int, default=2)
    c.set_defaults(fn=cmd_check)
    t = sub.add_parser("train", help="train from a run config (default: the packaged Siamese digits run)")
    t.add_argument("config", nargs="?", help="run config YAML; omitted: the packaged default")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    t.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config field (repeatable), e.g. --set train.epochs=3")
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("evaluate", help="re-evaluate a saved run on its test split")
    e.add_argument("run_dir")
    e.set_defaults(fn=cmd_evaluate)
    pl = sub.add_parser("plot", help="redraw a run's figures from its history")
    pl.add_argument("run_dir")
    pl.set_defaults(fn=cmd_plot)
    inc = sub.add_parser("incremental", help="run a class-incremental scenario from a config",
                         description="multiloss incremental CONFIG [--resume] [--set key.path=value ...]")
    inc.add_argument("rest", nargs=argparse.REMAINDER, help="CONFIG [--resume] [--set k=v ...]")
    inc.set_defaults(fn=cmd_incremental)
    q = sub.add_parser("quickstart", help="train the three-head digits example end to end")
    q.add_argument("--out", default="runs/quickstart")
    q.add_argument("--epochs", type=int, default=15)
    q.set_defaults(fn=cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["incremental"] and argv[1:2] not in (["-h"], ["--help"]):
        # Its own parser takes the rest (argparse's REMAINDER refuses a leading option).
        args = argparse.Namespace(fn=cmd_incremental, rest=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    return run_guarded(lambda: args.fn(args),
                       "`multiloss train CONFIG --resume` continues from the last checkpoint")


def run_guarded(call, resume_hint: str) -> int:
    """Run a command; report user errors as one message (no traceback) and an exit status."""
    from .errors import SpecError

    try:
        status = call()
        return status if isinstance(status, int) else 0
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (LookupError, FileNotFoundError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; {resume_hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
