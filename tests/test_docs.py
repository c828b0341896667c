"""The docs match the code: the generated reference blocks are current, every repository path the docs name in
backticks exists, and docs/architecture.md's layer table is tests/test_layers.py's LAYERS.

Which backticked text is a path (the rule, kept simple so a failure is easy to read):
- the code span, or its first word when a space, ``:`` or ``,`` follows (``export/graph.py: InGraphProcessing``),
  made of path characters and holding a ``/``; fenced code blocks are examples, not references, and are skipped;
- it is checked when its first part is a top-level folder of the repository (``maefuse_deploy/``, ``tests/``,
  ``engines/``, ``benchmarks/``, ``scripts/``, ``docs/``, ``export/``) or a subpackage of maefuse_deploy
  (``backends/tensorrt.py``: package-relative); in docs/architecture.md and docs/backends.md, which describe the
  package, every path to a ``.py`` file is checked (a module of a renamed folder, ``engine/build.py``, too);
- it exists when it (a glob for ``*``) names something under the repository or under maefuse_deploy/, or the
  repository's .gitignore lists it (a build output such as ``benchmarks/gpu/wheels/``); a part in capitals
  (``NAME``, ``OUT``) is a placeholder, and such a path is not checked.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
from test_layers import LAYERS, ROOT

from maefuse_deploy.cli import reference

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "maefuse_deploy"
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
# The docs that describe the package itself: every path they name is checked.
PACKAGE_DOCS = {"docs/architecture.md", "docs/backends.md"}
TOP_FOLDERS = {"maefuse_deploy", "tests", "engines", "benchmarks", "scripts", "docs", "export"}
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_PATH = re.compile(r"^[A-Za-z_][\w.*-]*(/[\w.*-]+)*/?$")
_PLACEHOLDER = re.compile(r"^[A-Z]+(\.\w+)?$")


@pytest.mark.parametrize("doc", sorted({where for where, _ in reference.BLOCKS.values()}))
def test_generated_blocks_match_the_code(doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    assert reference.render(text, doc) == text, f"{doc} is stale: run `{reference.COMMAND}`"


def test_render_rewrites_a_stale_block_and_keeps_the_prose():
    marker, modules = reference.begin_marker("backends"), reference.begin_marker("backend-modules")
    stale = (f"prose before\n{marker}\n| old | table |\n{reference.END}\nprose between\n{modules}\n{reference.END}\n"
             "prose after\n")
    fresh = reference.render(stale, "docs/backends.md")
    assert fresh.startswith(f"prose before\n{marker}\n| backend |")
    assert fresh.endswith(f"{reference.END}\nprose after\n")
    assert "\nprose between\n" in fresh and "| `backends/registry.py` |" in fresh
    assert "`onnxruntime-int8`" in fresh and "`openvino`" in fresh and "| old | table |" not in fresh


def test_every_backend_and_console_script_is_in_the_docs():
    backends = (REPO / "docs/backends.md").read_text(encoding="utf-8")
    for name in reference.REGISTRY:
        assert f"| `{name}` |" in backends
    cli = (REPO / "docs/cli.md").read_text(encoding="utf-8")
    for name in reference.console_scripts():
        assert f"\n## {name}\n" in cli


def test_hidden_old_spellings_name_their_new_option():
    cli = reference.cli_reference()
    assert "- `--checkpoint`, `-c`: old spelling of `--model`" in cli
    assert "- `--calibration-pairs`: old spelling of `--int8-calibration-pairs`" in cli
    section = cli.split("## maefuse-stream\n")[1].split("\n## ")[0]
    assert "- `--policy`: old spelling of `--processing` or `--queue-policy`" in section


def _named_paths(doc: Path) -> list[tuple[int, str]]:
    # Fenced blocks become blank lines, so line numbers stay those of the file.
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), doc.read_text(encoding="utf-8"))
    found = []
    for match in _SPAN.finditer(text):
        word = re.split(r"[\s:,]", match.group(1).strip(), maxsplit=1)[0].rstrip(".")
        if "/" in word and _PATH.match(word):
            found.append((text.count("\n", 0, match.start()) + 1, word))
    return found


def _checked(doc: str, path: str) -> bool:
    parts = path.rstrip("/").split("/")
    if any(_PLACEHOLDER.match(part) for part in parts):
        return False
    in_package_doc = doc in PACKAGE_DOCS and path.endswith(".py")
    return in_package_doc or parts[0] in TOP_FOLDERS or (PACKAGE / parts[0] / "__init__.py").is_file()


def _exists(path: str) -> bool:
    return any(next(base.glob(path.rstrip("/")), None) is not None for base in (REPO, PACKAGE))


def _ignored(path: str) -> bool:
    """The repository's .gitignore lists the path or a folder above it (a build output, not a stale reference)."""
    lines = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip().strip("/") for line in lines if line.strip() and not line.startswith("#")]
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes for pattern in patterns)


def test_every_repository_path_in_the_docs_exists():
    missing = []
    for doc in DOCS:
        name = doc.relative_to(REPO).as_posix()
        missing += [(f"{name}:{line}", path) for line, path in _named_paths(doc)
                    if _checked(name, path) and not _exists(path) and not _ignored(path)]
    assert [f"{where}: {path}" for where, path in missing] == []


def test_the_path_rule_catches_a_moved_module(tmp_path):
    # The rule above is only as good as its parser: a stale package path must be found and judged missing.
    doc = tmp_path / "doc.md"
    doc.write_text("The sidecar (`engine/sidecar.py`), `tensorrt/sidecar.py: Sidecar`, `export/NAME.json`,\n"
                   "```\n`engine/build.py`\n```\n`registration/estimate.py` and `ir/`.\n")
    paths = _named_paths(doc)
    assert paths == [(1, "engine/sidecar.py"), (1, "tensorrt/sidecar.py"), (1, "export/NAME.json"),
                     (5, "registration/estimate.py"), (5, "ir/")]
    assert [p for _, p in paths if _checked("docs/architecture.md", p) and not _exists(p)] == ["engine/sidecar.py"]
    assert [p for _, p in paths if _checked("docs/cpp.md", p) and not _exists(p)] == []


def _layer_table() -> dict[str, int]:
    """docs/architecture.md's "| layer | parts | ..." table: each backticked part -> its layer number."""
    text = (REPO / "docs/architecture.md").read_text(encoding="utf-8")
    table = text.split("| layer | parts |", 1)[1].split("\n\n", 1)[0]
    layers = {}
    for row in table.splitlines()[2:]:
        cells = row.split("|")
        for part in re.findall(r"`([\w.]+)/?`", cells[2]):
            layers[part.removesuffix(".py")] = int(cells[1])
    return layers


def test_the_layer_table_is_the_layer_test():
    expected = {("maefuse_deploy" if name == ROOT else name): layer for name, layer in LAYERS.items()}
    assert _layer_table() == expected
