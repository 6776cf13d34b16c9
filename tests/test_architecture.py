"""The layout holds: no import cycles (counting imports inside functions), and the core
never imports the periphery (the REST API in ``asyncq.api``, the command line in
``asyncq.cli``, the testing kit in ``asyncq.contrib``), nor the REST API the command
line, and nothing imports the testing kit.

Imports are read from the source with ``ast``, not by importing anything. Imports
under ``if TYPE_CHECKING:`` are left out: they are for the type checker and never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "asyncq"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str) -> set[str]:
    """The asyncq modules that module ``name`` imports, anywhere in its body."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
    while stack:
        node = stack.pop()
        if is_type_checking_block(node):
            continue
        stack.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    return found


def wing(name: str) -> str:
    """'api', 'cli', 'contrib' or 'core'. ``python -m asyncq`` (``asyncq.__main__``) is the
    command line."""
    if name == "asyncq.__main__":
        return "cli"
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("api", "cli", "contrib") else "core"


def test_the_reader_sees_every_module_and_its_imports():
    # a check of the check: it finds modules of each wing and imports inside functions
    assert {"asyncq.app", "asyncq.broker", "asyncq.worker", "asyncq.api", "asyncq.cli"} <= \
        set(MODULES)
    assert "asyncq.broker" in GRAPH["asyncq.app"]
    assert {wing(name) for name in MODULES} == {"core", "api", "cli", "contrib"}


def test_no_module_imports_itself_back_through_others():
    assert cycles() == []


def test_the_core_imports_neither_the_rest_api_nor_the_command_line():
    reaching_out = {name: sorted(target for target in GRAPH[name] if wing(target) != "core")
                    for name in MODULES if wing(name) == "core"}
    assert {name: targets for name, targets in reaching_out.items() if targets} == {}


def test_the_rest_api_never_imports_the_command_line():
    crossing = {name: sorted(target for target in GRAPH[name] if wing(target) == "cli")
                for name in MODULES if wing(name) == "api"}
    assert {name: targets for name, targets in crossing.items() if targets} == {}


def test_nothing_imports_the_testing_kit():
    importing = {name: sorted(target for target in GRAPH[name] if wing(target) == "contrib")
                 for name in MODULES if wing(name) != "contrib"}
    assert {name: targets for name, targets in importing.items() if targets} == {}
