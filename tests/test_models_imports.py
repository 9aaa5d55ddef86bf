"""No import cycle among the modules of ``rdpo_jax.models``: the graph is read from the source (AST), counting
imports anywhere in a module (function-level ones too), so a cycle hidden behind a lazy import is one.

Run as a script to print the graph: ``python tests/test_models_imports.py``.
"""
import ast
from pathlib import Path

PACKAGE = "rdpo_jax.models"
ROOT = Path(__file__).resolve().parents[1] / "rdpo_jax" / "models"  # read, not imported


def _module_names() -> dict[str, Path]:
    """Module name -> source file, for the package's ``__init__`` and its ``.py`` modules."""
    names = {PACKAGE: ROOT / "__init__.py"}
    for path in sorted(ROOT.glob("*.py")):
        if path.name != "__init__.py":
            names[f"{PACKAGE}.{path.stem}"] = path
    return names


def _imported(node: ast.AST, module: str, is_package: bool, names) -> set[str]:
    """The modules of ``names`` that one statement imports: ``import P.m`` and ``from P.m import x`` name
    ``P.m``; ``from P import m`` names the submodule ``P.m`` when there is one, else ``P`` itself."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & set(names)
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:  # relative: resolve against the importing module's package
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in names else base)
    return found & set(names)


def import_graph() -> dict[str, set[str]]:
    """Edges module -> the ``rdpo_jax.models`` modules it imports anywhere in its source (itself excluded)."""
    names = _module_names()
    graph = {}
    for module, path in names.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for node in ast.walk(tree):
            targets |= _imported(node, module, path.name == "__init__.py", names)
        graph[module] = targets - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of the directed graph, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_models_modules_have_no_import_cycle():
    graph = import_graph()
    assert f"{PACKAGE}.attention" in graph and f"{PACKAGE}.splash" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_and_import_reader():
    """The finder itself (a two-module cycle and a longer one are found, a DAG has none) and the reader
    (function-level, submodule-from-package and relative imports are edges)."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    names = _module_names()
    lazy = ast.parse("def f():\n    from rdpo_jax.models.splash import splash_attend\n").body[0].body[0]
    assert _imported(lazy, f"{PACKAGE}.attention", False, names) == {f"{PACKAGE}.splash"}
    sub = ast.parse("from rdpo_jax.models import safetensors_io, DecoderLM").body[0]
    assert _imported(sub, f"{PACKAGE}.hf_io", False, names) == {f"{PACKAGE}.safetensors_io", PACKAGE}
    rel = ast.parse("from .masks import AttentionMask").body[0]
    assert _imported(rel, f"{PACKAGE}.splash", False, names) == {f"{PACKAGE}.masks"}


if __name__ == "__main__":
    for mod, deps in sorted(import_graph().items()):
        print(mod, "->", ", ".join(sorted(deps)) or "-")
    print("cycle:", find_cycle(import_graph()))
