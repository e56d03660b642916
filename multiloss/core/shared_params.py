"""Which trainable variables are *shared*: those that two or more terms depend on.

* Named in the spec: ``weighting.shared: [layer, ...]`` — the variables of
  those layers (a layer nested in a sub-model is named by its own name).
* Functional and Sequential models: read from the Keras layer graph when
  ``ml.compile`` runs.  Walking back from the output tensors of each term
  (its ``outputs``) to the inputs collects the layers on its path; a
  variable is shared when the layers of two or more terms hold it.  A nested
  model met on a path counts as a whole (all its variables).
* Other (subclassed) models: from gradient connectivity inside the traced
  train step — the per-task gradient of a term is ``None`` for a variable
  its loss does not depend on — so the shared variables are those with two
  or more non-``None`` per-task gradients.  (This needs the per-task
  gradients of every variable, which PCGrad, MGDA and CAGrad compute anyway;
  GradNorm then needs ``params.layer`` or ``weighting.shared``.)
"""

from __future__ import annotations

import keras

from ..spec.validation import did_you_mean
from .keras_access import input_structure, output_structure, producer


def _output_tensors(model) -> dict | None:
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    struct = output_structure(model)
    if isinstance(struct, dict):
        return dict(struct)
    return dict(zip(model.output_names, outputs))


def _layers_on_path(tensors) -> list:
    """The layers on the paths from ``tensors`` back to the inputs, in the order they are met."""
    return list({id(op): op for op, _ in _nodes_on_path(tensors).values()}.values())


def term_variables(model, terms) -> dict[str, set[int]] | None:
    """``{term: ids of the trainable variables on its path}``, or None if the graph is unknown."""
    outputs = _output_tensors(model)
    if outputs is None:
        return None
    found = {}
    for t in terms:
        tensors = [outputs[o] for o in t.outputs if o in outputs]
        ids = set()
        for layer in _layers_on_path(tensors):
            ids.update(id(v) for v in getattr(layer, "trainable_variables", []))
        found[t.name] = ids
    return found


def layer_names(model) -> list[str]:
    """Names of every layer with trainable variables, nested ones included."""
    names = []
    for v in model.trainable_variables:
        for part in v.path.split("/")[:-1]:
            if part not in names:
                names.append(part)
    return names


def variables_of(model, names: list[str]) -> tuple[list, list[tuple[int, str]]]:
    """The trainable variables of the named layers, and ``[(index, problem)]``."""
    known = layer_names(model)
    problems, chosen = [], []
    for i, name in enumerate(names):
        if name not in known:
            problems.append((i, f"the model has no layer {name!r} with trainable variables; "
                                f"{did_you_mean(name, known)}layers: {known}"))
            continue
        for v in model.trainable_variables:
            if name in v.path.split("/")[:-1] and all(v is not c for c in chosen):
                chosen.append(v)
    return chosen, problems


def lone_layers(model, terms, names: list[str]) -> list[tuple[int, str]]:
    """``[(index, problem)]`` for each named layer (``weighting.shared``, GradNorm's ``layer``) that fewer
    than two terms use, from the layer graph; none when the graph is unknown (a subclassed model)."""
    per_term = term_variables(model, terms)
    if per_term is None:
        return []
    shared = sorted({n for v in infer_shared(model, terms) or [] for n in v.path.split("/")[:-1]})
    problems = []
    for i, name in enumerate(names):
        ids = {id(v) for v in variables_of(model, [name])[0]}
        if not ids:
            continue                       # not a layer of the model: variables_of says so
        users = [t for t, used in per_term.items() if used & ids]
        if len(users) < 2:
            who = f"only term {users[0]!r}" if users else "no term"
            problems.append((i, f"layer {name!r} is used by {who}, so it is not shared: a shared layer feeds "
                                f"two or more terms; the model's shared layers: {shared or 'none'}"))
    return problems


def infer_shared(model, terms) -> list | None:
    """The shared variables from the layer graph (model order), or None if it is unknown."""
    per_term = term_variables(model, terms)
    if per_term is None:
        return None
    counts: dict[int, int] = {}
    for ids in per_term.values():
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    return [v for v in model.trainable_variables if counts.get(id(v), 0) >= 2]


def last_layer(variables: list) -> list:
    """The variables of the last layer (by variable path) among ``variables``."""
    if not variables:
        return []
    owner = variables[-1].path.rsplit("/", 1)[0]
    return [v for v in variables if v.path.rsplit("/", 1)[0] == owner]


# --- the shared representation (gradients: representation) ----------------------------


class Representation:
    """Where the heads read the trunk: the tensors Z, the trunk's variables, and a model returning both.

    ``model(x)`` returns ``[*Z, *flat outputs]``; ``pack`` rebuilds the original
    model's output structure from the flat outputs.
    """

    def __init__(self, model, tensors: list, names: list[str]):
        self.tensors = tensors
        self.names = names
        struct = output_structure(model)
        if struct is None:
            struct = model.outputs
        self.struct = struct
        flat = keras.tree.flatten(struct)
        inputs = input_structure(model)
        if inputs is None:
            inputs = model.inputs
        self.model = keras.Model(inputs, [*tensors, *flat], name=f"{model.name}_representation")
        self.trunk = [v for layer in _layers_on_path(tensors) for v in getattr(layer, "trainable_variables", [])]
        trunk_ids = {id(v) for v in self.trunk}
        self.trunk = [v for v in model.trainable_variables if id(v) in trunk_ids]
        self.heads = [v for v in model.trainable_variables if id(v) not in trunk_ids]
        self.size = None

    def __call__(self, x, training):
        out = self.model(x, training=training)
        k = len(self.tensors)
        return list(out[:k]), keras.tree.pack_sequence_as(self.struct, list(out[k:]))


def _nodes_on_path(tensors) -> dict:
    """``{id(node): (layer, node)}`` for every node on the paths from ``tensors`` back to the inputs."""
    seen, stack = {}, list(tensors)
    while stack:
        made = producer(stack.pop())
        if made is None:
            continue
        op, node = made
        if isinstance(op, keras.layers.InputLayer):
            continue
        if id(node) in seen:
            continue
        seen[id(node)] = (op, node)
        stack.extend(node.input_tensors)
    return seen


def _made_by(tensor, nodes) -> bool:
    """Whether a node among ``nodes`` (ids) made ``tensor``."""
    made = producer(tensor)
    return made is not None and id(made[1]) in nodes


def find_representation(model, terms, names: list[str] | None = None):
    """``(Representation, None)`` or ``(None, problem)`` for ``gradients: representation``.

    Named: the outputs of those (top-level) layers in the model's graph.  Inferred:
    the nodes on the paths of two or more terms are the trunk; Z are the trunk's
    tensors that a node of one term only (a head) reads, or that are outputs.
    Every shared variable must lie before Z.
    """
    outputs = _output_tensors(model)
    if outputs is None:
        return None, ("gradients: representation needs the layer graph of a functional or Sequential model; "
                      "a subclassed model has none (use gradients: parameters)")
    per_term = {t.name: _nodes_on_path([outputs[o] for o in t.outputs if o in outputs]) for t in terms}
    every = {}
    for nodes in per_term.values():
        every.update(nodes)
    if names:
        known = [layer.name for layer in model.layers]
        tensors = []
        for name in names:
            if name not in known:
                return None, f"the model has no layer {name!r}; {did_you_mean(name, known)}layers: {known}"
            for layer, node in every.values():
                if layer.name == name:
                    tensors.extend(keras.tree.flatten(node.output_tensors))
        if not tensors:
            return None, f"no term's loss depends on the output of {names}"
    else:
        counts: dict[int, int] = {}
        for nodes in per_term.values():
            for k in nodes:
                counts[k] = counts.get(k, 0) + 1
        trunk = {k for k, c in counts.items() if c >= 2}
        if not trunk:
            return None, "no layer feeds two or more terms, so there is no shared representation"
        tensors, seen = [], set()

        def add(t):
            if id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)

        for k, (_layer, node) in every.items():
            if k in trunk:
                continue
            for t in node.input_tensors:
                if _made_by(t, trunk):
                    add(t)
        for t in outputs.values():
            if _made_by(t, trunk):
                add(t)
    rep = Representation(model, tensors, names or [producer(t)[0].name for t in tensors])
    shared = infer_shared(model, terms) or []
    trunk_ids = {id(v) for v in rep.trunk}
    after = [v.path for v in shared if id(v) not in trunk_ids]
    if after:
        return None, (f"the shared variables {after} lie after the representation {rep.names}, where the heads "
                      "would train them with their plain gradients; name a later layer in "
                      "weighting.representation (or use gradients: parameters)")
    return rep, None
