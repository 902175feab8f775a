"""The package layout's dependency rule, read from the source's import statements.

Each package may import only the packages below it, so the architecture a reader sees in the
tree is the one the code keeps: `ingest` and `search` stand on `store` and `encoders` and never
on each other; only `training` (and the CLI commands that call it) reaches torch; nothing
imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shopsearch"

# What each top-level part of shopsearch may import from shopsearch (besides itself).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "encoders": {"errors"},
    "store": {"errors", "encoders"},
    "search": {"errors", "encoders", "store"},
    "ingest": {"errors", "encoders", "store"},
    "evaluation": {"errors", "encoders", "store", "search", "ingest"},
    "training": {"errors", "encoders", "store", "ingest"},
    "service": {"errors", "encoders", "store", "search", "ingest"},
    "cli": {"errors", "encoders", "store", "search", "ingest", "evaluation", "training", "service"},
}
HEAVY = ("torch", "transformers", "sentence_transformers", "optimum", "datasets", "accelerate")
# The CLI commands that run training or export; they import `training` inside the command.
HEAVY_ALLOWED = {"training", "cli/commands_train.py", "cli/commands_model.py"}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def test_every_part_of_the_package_has_a_rule():
    parts = {_part(p) for p in SOURCES} - {"__init__"}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path: Path):
    part = _part(path)
    allowed = set(ALLOWED) - {"cli"} if part == "__init__" else ALLOWED[part] | {part}
    wrong = [
        f"line {line}: {module}"
        for line, module in _imports(path)
        if module.startswith("shopsearch.") and module.split(".")[1] not in allowed
    ]
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part}) may import only {sorted(allowed)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_training_imports_torch(path: Path):
    rel = path.relative_to(PACKAGE).as_posix()
    if _part(path) in HEAVY_ALLOWED or rel in HEAVY_ALLOWED:
        return
    heavy = [
        f"line {line}: {module}" for line, module in _imports(path) if module.split(".")[0] in HEAVY
    ]
    assert not heavy, f"{rel} imports the training stack"
