"""Import layering of the package, read from the source with ``ast`` (nothing is imported).

* The core (every module outside ``cryorestore.cli`` and ``cryorestore.__main__``) never imports
  the command line: the commands sit on top of the library, not inside it.
* The import graph between cryorestore modules has no cycle. Imports inside functions count as
  much as module-level ones (a lazy import hides a cycle, it does not remove it), and importing
  ``a.b.c`` from outside package ``a.b`` also runs ``a.b``'s ``__init__``, so it counts as an edge to
  ``a.b`` as well.

docs/architecture.md describes the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "python"
PACKAGE = "cryorestore"
ENTRY_POINTS = {f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}  # the command line and what starts it


def module_files(root: Path = PACKAGE_ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name → source file, for every module and package of ``package`` under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return name in files and files[name].name == "__init__.py"


def imported_modules(name: str, path: Path, files: dict[str, Path]) -> set[str]:
    """The cryorestore modules that ``name`` (source ``path``) imports anywhere in its body."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    base = name if _is_package(name, files) else name.rpartition(".")[0]  # what a level-1 import is relative to
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in files else module)
    resolved = set()
    for target in targets:
        if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
            continue
        while target not in files and "." in target:  # `import a.b.attr` style: the longest module prefix
            target = target.rpartition(".")[0]
        # importing a.b.c runs the __init__ of every package above it that `name` is not inside
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in files and not (name == prefix or name.startswith(prefix + ".")):
                resolved.add(prefix)
    resolved.discard(name)
    return resolved


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, files) for name, path in files.items()}


def is_core(name: str) -> bool:
    return not any(name == e or name.startswith(e + ".") for e in ENTRY_POINTS)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (iterative depth-first search)."""
    colour = dict.fromkeys(graph, 0)  # 0 unseen, 1 on the current path, 2 done
    for start in sorted(graph):
        if colour[start]:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        colour[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                colour[path.pop()] = 2
                stack.pop()
            elif colour.get(nxt, 2) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt, 2) == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_scanner_sees_every_kind_of_import(tmp_path):
    """The checks below are only as good as the scanner: feed it a toy package with every form."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "cli").mkdir()
    for rel in ("__init__.py", "cli/__init__.py", "cli/common.py", "sub/__init__.py", "sub/leaf.py", "x.py", "y.py"):
        (pkg / rel).write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import thing\n")
    (pkg / "x.py").write_text(
        "import cryorestore.y\n"
        "def f():\n    from cryorestore.cli.common import resolve\n"
        "def g():\n    from cryorestore import sub\n")
    (pkg / "sub" / "leaf.py").write_text("from .. import x\nthing = 1\n")
    files = module_files(tmp_path)
    graph = {n: imported_modules(n, p, files) for n, p in files.items()}
    assert graph[f"{PACKAGE}.x"] == {f"{PACKAGE}.y", f"{PACKAGE}.cli", f"{PACKAGE}.cli.common", f"{PACKAGE}.sub"}
    assert graph[f"{PACKAGE}.sub"] == {f"{PACKAGE}.sub.leaf"}
    assert graph[f"{PACKAGE}.sub.leaf"] == {f"{PACKAGE}.x"}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and {f"{PACKAGE}.x", f"{PACKAGE}.sub"} <= set(cycle)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_core_modules_never_import_the_command_line():
    graph = import_graph()
    assert f"{PACKAGE}.train" in graph and f"{PACKAGE}.cli.common" in graph  # the scan found the package
    bad = sorted(f"{name} imports {dep}" for name, deps in graph.items() if is_core(name)
                 for dep in deps if not is_core(dep))
    assert not bad, "core modules must not import the command line:\n" + "\n".join(bad)


def test_no_import_cycles_between_cryorestore_modules():
    cycle = find_cycle(import_graph())
    if cycle:
        pytest.fail("import cycle: " + " -> ".join(cycle))
