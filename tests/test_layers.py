"""The package's layers (README: cli -> bench/export/train/stream/serve -> runtime -> backends -> tensorrt/model/
processing -> contract) hold: no module imports a higher layer, at module level or inside a function, and there is
no import cycle between modules or between packages, counting imports inside functions (a cycle hidden in a
function body is still a cycle: the two modules cannot be understood, tested or moved apart).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "maefuse_deploy"
ROOT = "maefuse_deploy"
# Higher number = higher layer. A module may import its own layer's modules or lower ones. The root package
# (maefuse_deploy/__init__.py) re-exports the Fuser for users, so it sits above everything it exposes: no module of
# the package may import it (the version lives in version.py, at the bottom, for that reason).
LAYERS = {
    ROOT: 7,
    "cli": 6,
    "bench": 5, "export": 5, "train": 5, "stream": 5, "serve": 5,
    "runtime": 4,
    "backends": 3,
    "tensorrt": 2, "model": 2, "processing": 2, "registration": 2, "io": 2, "metrics": 2, "sample_pairs": 2,
    "contract": 1, "errors": 1, "atomic": 1, "compare": 1, "hashing": 1, "checks": 1, "version": 1,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str) -> list[str]:
    """Every maefuse_deploy name ``path`` imports, at module level or inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
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
        found.extend(name for name in names if name.startswith(ROOT))
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else LAYERS[ROOT]


def _package(module: str) -> str:
    """The top-level part a module belongs to: ``maefuse_deploy.stream.gst`` -> ``maefuse_deploy.stream``."""
    return ".".join(module.split(".")[:2])


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    upward = []
    for module, path in modules.items():
        for target in _imports(path, module):
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]  # "pkg.mod.Name" -> "pkg.mod"
            if target == module or target not in modules:
                continue
            mine, theirs = _layer(module), _layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{module} imports {target} (layer {theirs} > {mine})")
            edges[module].add(target)
    return edges, upward


def test_every_top_level_part_has_a_layer():
    parts = {p.stem for p in PACKAGE.iterdir() if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts - {"__init__"} <= set(LAYERS), f"give these a layer: {sorted(parts - {'__init__'} - set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    _, upward = _graph()
    assert upward == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return cycles


def _module_edges() -> dict[str, set[str]]:
    edges, _ = _graph()
    # A package's __init__ importing its own submodules is how packages work, not a cycle between layers.
    return {module: {t for t in targets if not (module == t.rpartition(".")[0] and _is_package(module))}
            for module, targets in edges.items()}


def test_no_import_cycles_between_modules():
    assert _cycles(_module_edges()) == []


def test_no_import_cycles_between_packages():
    packages: dict[str, set[str]] = {}
    for module, targets in _module_edges().items():
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module))
    assert _cycles(packages) == []


def test_the_checks_see_imports_inside_functions(tmp_path):
    # The checks above are only as good as the import finder: one inside a function body must count.
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from .sources import Frame\n    return Frame\n")
    assert _imports(source, "maefuse_deploy.stream.probe") == [
        "maefuse_deploy.stream.sources", "maefuse_deploy.stream.sources.Frame"]
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()
