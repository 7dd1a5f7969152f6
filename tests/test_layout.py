"""The package's import rules, read from the source (every import, at module level or inside a
function): data flows one way, so a layer never imports one above it.

- Nothing that reads a checkpoint (inference, chat, server, export, evaluation, report) imports
  `scratchlm.training`.
- `model.py` imports nothing of ours but `config.py`; the bottom modules import no package above.
- argparse is imported only under `scratchlm/cli/`.
- No import circle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "scratchlm"
READERS = ("inference", "chat", "server", "export", "evaluation", "report")
# The bottom layer: what every package may use, and which uses no package.
BOTTOM = (
    "errors",
    "io_utils",
    "config",
    "model",
    "kv_cache",
    "tokenizer",
    "chat_template",
    "checkpoint",
    "device",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            found.add(base)
            # `from scratchlm.x import y` may name a module y.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def our_modules() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {
            imported for imported in imports_of(path) if imported in modules and imported != name
        }
        for name, path in modules.items()
    }


def test_nothing_that_reads_a_checkpoint_imports_the_trainer() -> None:
    offenders = [
        f"{name} imports {imported}"
        for name, imported_names in our_modules().items()
        if name.split(".")[1:2] and name.split(".")[1] in READERS
        for imported in sorted(imported_names)
        if imported.startswith("scratchlm.training")
    ]
    assert offenders == []


def test_the_bottom_layer_imports_no_package_above_it() -> None:
    graph = our_modules()
    offenders = [
        f"{name} imports {imported}"
        for name in (f"scratchlm.{bottom}" for bottom in BOTTOM)
        for imported in sorted(graph.get(name, set()))
        if imported != "scratchlm" and imported.split(".")[1] not in BOTTOM
    ]
    assert offenders == []
    assert graph["scratchlm.model"] <= {
        "scratchlm.config",
        "scratchlm.kv_cache",
        "scratchlm.errors",
    }


def test_argparse_lives_only_in_the_cli_package() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "argparse" in imports_of(path) and not module_name(path).startswith("scratchlm.cli")
    ]
    assert offenders == []


def test_no_import_circle() -> None:
    graph = our_modules()
    # A package's __init__ is imported with each of its modules; an edge to it from its own
    # submodule is not a circle of ours.
    edges = {
        name: {
            imported
            for imported in targets
            if not (name.startswith(imported + ".") and imported != "scratchlm")
        }
        for name, targets in graph.items()
    }
    edges["scratchlm"] = set()  # the Python API imports lazily, for its users
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for imported in sorted(edges.get(name, set())):
            if state.get(imported) == 1:
                circles.append(" -> ".join([*stack[stack.index(imported) :], imported]))
            elif imported not in state:
                visit(imported)
        stack.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert circles == []
