"""The package's layers (README/BRIEF: cli -> bench/export/train -> runtime -> backends -> engine/model/processing ->
contract) hold: no module imports a higher layer, at module level or inside a function, and there is no import cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "maefuse_deploy"
# Higher number = higher layer. A module may import its own layer's modules or lower ones.
LAYERS = {
    "cli": 6,
    "bench": 5, "export": 5, "train": 5, "stream": 5, "serve": 5,
    "runtime": 4,
    "backends": 3,
    "engine": 2, "model": 2, "processing": 2, "registration": 2, "io": 2, "metrics": 2, "sample_pairs": 2,
    "contract": 1, "errors": 1, "atomic": 1, "compare": 1, "hashing": 1, "checks": 1,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported maefuse_deploy module, imported at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("maefuse_deploy"):
                found.append((name, id(node) in top_level or _guarded_top(tree, node)))
    return found


def _guarded_top(tree: ast.Module, node: ast.AST) -> bool:
    """An import inside a module-level ``if``/``try`` (still runs at import time), not a TYPE_CHECKING block."""
    for statement in tree.body:
        if isinstance(statement, (ast.If, ast.Try)) and any(child is node for child in ast.walk(statement)):
            return not (isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test))
    return False


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    upward = []
    for module, path in modules.items():
        for target, at_import in _imports(path, module):
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]  # "pkg.mod.Name" -> "pkg.mod"
            if target == module or target not in modules:
                continue
            mine, theirs = _layer(module), _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} imports {target} (layer {theirs} > {mine})")
            if at_import:
                edges[module].add(target)
    return edges, upward


def test_every_top_level_part_has_a_layer():
    parts = {p.stem for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts - {"__init__"} <= set(LAYERS), f"give these a layer: {sorted(parts - {'__init__'} - set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    _, upward = _graph()
    assert upward == []


def test_no_import_cycles():
    edges, _ = _graph()
    # A package's __init__ importing its own submodules is how packages work, not a cycle between layers.
    for module, targets in edges.items():
        edges[module] = {t for t in targets if not (module == t.rpartition(".")[0] and _is_package(module))}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()
