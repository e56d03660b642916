"""Structure rules the code keeps (docs/architecture.md): layers as folders, no import cycles, no
borrowed underscore names (imported or read as attributes), Keras internals in one module, and a
spec layer and pure strategies that import no TensorFlow."""

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "multiloss"
CONSOLE_SCRIPT = ROOT / "multiloss_cli.py"
KERAS_ACCESS = "multiloss.core.keras_access"

#: Each layer and the layers it may import (docs/architecture.md draws the same graph).
LAYERS = {
    "spec": set(),
    "losses": {"spec"},
    "weighting": {"spec"},
    "core": {"spec", "losses", "weighting"},
    "incremental": {"spec", "losses", "core", "run"},
    "run": {"spec", "losses", "weighting", "core"},
    "cli": {"spec", "losses", "weighting", "core", "run"},
}
#: Modules above the layers: the public API, the finder of old module paths, and the console script
#: (outside the package, so that `multiloss --help` imports no TensorFlow).
TOP = {"multiloss", "multiloss.__main__", "multiloss.compat", "multiloss_cli"}
#: Names of a namedtuple's public API (they start with an underscore to avoid clashing with fields).
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    out = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    out[_module_name(CONSOLE_SCRIPT)] = CONSOLE_SCRIPT
    return out


def _is_type_checking(node) -> bool:
    test = getattr(node, "test", None) if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, nested: bool = False) -> list[tuple[str, list[str]]]:
    """``(module, names)`` imported by ``path``: at module level, or anywhere with ``nested``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                   for stmt in block.body for n in ast.walk(stmt)}   # not run: no cycle
    out = []
    for node in ast.walk(tree) if nested else tree.body:
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            out.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def _graph(nested: bool) -> dict[str, set[str]]:
    """Module -> the multiloss modules it imports (at module level, or anywhere with ``nested``)."""
    modules = _sources()
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for target, names in _imports(path, nested):
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            if subs:                      # `from . import x`: the submodule x, not the package
                graph[m].update(subs)
            elif target in modules:
                graph[m].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every cycle met by a depth-first search, except a package and its own submodules."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "active"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "active":
                cycle = stack[stack.index(nxt):] + [nxt]
                if not all(part.startswith(cycle[0]) or cycle[0].startswith(part) for part in cycle):
                    found.append(" -> ".join(cycle))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "multiloss" and len(parts) > 1 and module not in TOP else None


def test_every_module_sits_in_a_layer_folder():
    stray = sorted(m for m in _sources() if m.startswith("multiloss") and m not in TOP and _layer(m) not in LAYERS)
    assert not stray, f"modules outside the layer folders {sorted(LAYERS)}: {stray}"


def test_layers_import_only_the_layers_below():
    """Deferred imports count: a layer reaches an upper one through a registry's provider instead."""
    offenders = []
    for module, targets in _graph(nested=True).items():
        layer = _layer(module)
        if layer is None:
            continue
        for target in targets:
            other = _layer(target)
            if other not in (None, layer) and other not in LAYERS[layer]:
                offenders.append(f"{module} ({layer}) imports {target} ({other})")
            elif target in TOP - {"multiloss"}:
                offenders.append(f"{module} imports {target}")
    assert not offenders, "\n".join(sorted(offenders))


def test_no_import_cycles_at_module_level():
    assert not _cycles(_graph(nested=False))


def test_no_import_cycles_even_through_deferred_imports():
    """Imports inside functions count too, the console script's included: a deferred import only hides a cycle."""
    assert not _cycles(_graph(nested=True))


def test_no_module_imports_another_modules_underscore_names():
    offenders = []
    for name, path in _sources().items():
        for target, names in _imports(path, nested=True):
            if target.startswith("multiloss") or target == "":
                offenders += [f"{name} imports {target}.{n}" for n in names
                              if n.startswith("_") and not n.startswith("__")]
    assert not offenders, "\n".join(offenders)


def _own_private_names(tree: ast.AST) -> set[str]:
    """Underscore names a module defines: functions, classes, attributes it assigns, fields it declares."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            own.add(node.target.id)
    return {n for n in own if n.startswith("_") and not n.startswith("__")}


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def _private_reads(path: Path) -> list[tuple[int, str]]:
    """``(line, attr)`` of each ``obj._name`` (read or written) that the module does not define itself:
    another module's, or Keras's (``model._compile_loss``, or ``self._compile_loss`` in a subclass)."""
    tree = ast.parse(path.read_text())
    own = _own_private_names(tree)
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in NAMEDTUPLE_API:
            continue
        if attr not in own:      # another module's, or one inherited from Keras (self._compile_loss)
            out.append((node.lineno, attr))
    return out


def test_private_attributes_of_other_modules_and_of_keras_are_read_in_one_place():
    """Outside core/keras_access.py no module reads an underscore attribute it does not define:
    neither another multiloss module's (``composite._values``) nor Keras's (``model._compile_loss``)."""
    offenders = []
    for name, path in sorted(_sources().items()):
        if name == KERAS_ACCESS:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{line}: .{attr}" for line, attr in _private_reads(path)]
    assert not offenders, "\n".join(offenders)


def test_keras_private_modules_are_imported_in_one_place():
    users = sorted(name for name, p in _sources().items() if "keras.src" in p.read_text())
    assert users == [KERAS_ACCESS], users


def test_spec_layer_and_pure_strategies_import_no_tensorflow_at_module_level():
    """They bind ``tf``/``keras``/``ops`` from multiloss.spec.lazy, imported on first use."""
    heavy = ("tensorflow", "keras")
    offenders = []
    for name, path in _sources().items():
        if _layer(name) not in ("spec", "weighting"):
            continue
        for target, _ in _imports(path, nested=False):
            if target.split(".")[0] in heavy:
                offenders.append(f"{name} imports {target}")
    assert not offenders, "\n".join(offenders)
