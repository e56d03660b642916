"""Structure rules the code keeps: no import cycles, no borrowed underscore names, Keras internals in one place."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "multiloss"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        imports = _imports(path, nested)
        for target, names in imports:
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


def test_no_import_cycles_at_module_level():
    assert not _cycles(_graph(nested=False))


def test_no_import_cycles_even_through_deferred_imports():
    """Imports inside functions count too: a deferred import only hides a cycle."""
    assert not _cycles(_graph(nested=True))


def test_no_module_imports_another_modules_underscore_names():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for target, names in _imports(path, nested=True):
            if target.startswith("multiloss") or target == "":
                offenders += [f"{_module_name(path)} imports {target}.{n}" for n in names
                              if n.startswith("_") and not n.startswith("__")]
    assert not offenders, "\n".join(offenders)


def test_keras_private_modules_are_imported_in_one_place():
    users = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if "keras.src" in p.read_text())
    assert users == ["multiloss.core.keras_access"], users
