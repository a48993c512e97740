"""The layering of numbaconv's modules, read from their source with ``ast`` (nothing is imported).

The rules:

- The tools (numbaconv/tools/, and numbaconv/__main__.py, which only runs the command) import
  the library; no library module imports them.
- spec.py and reference.py (the argument rules and the float64 oracle) import no Numba: not
  themselves, and not through the numbaconv modules they import at module level.
- No circles among numbaconv's modules. Every import statement counts, those inside functions
  too: the lazy imports of the CUDA modules (numbaconv/cuda/, imported on first use of a GPU)
  need no exception, since they form no circle.

An edge is the module an import names: ``from . import dispatch`` in numbaconv/tuning.py is
numbaconv.tuning -> numbaconv.dispatch, ``from .version import __version__`` is
-> numbaconv.version, ``from . import __version__`` would be -> numbaconv (the package's
__init__.py). A package's __init__.py, which Python runs before any module inside it, is
not an edge of its own (else every module would sit in a circle with numbaconv/__init__.py).
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "numbaconv"
NO_NUMBA = ("numbaconv.spec", "numbaconv.reference")


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_tool(module: str) -> bool:
    return module in ("numbaconv.tools", "numbaconv.__main__") or module.startswith("numbaconv.tools.")


def _is_numba(module: str) -> bool:
    return module == "numba" or module.startswith("numba.")


def _imports(module: str):
    """``(imported module, line, at module level)`` for every import statement of ``module``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, top_level):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1])
                    base = f"{base}.{child.module}" if child.module else base
                else:
                    base = child.module
                for alias in child.names:   # "from package import module" names the module
                    named = f"{base}.{alias.name}"
                    found.append((named if named in MODULES else base, child.lineno, top_level))
            visit(child, top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return found


IMPORTS = {module: _imports(module) for module in MODULES}


def _edges(top_level_only=False) -> dict:
    return {module: sorted({target for target, _, top in found
                            if target in MODULES and (top or not top_level_only)})
            for module, found in IMPORTS.items()}


def test_the_parser_sees_known_imports():
    """Guards against a check that passes because it reads nothing."""
    edges = _edges()
    assert len(MODULES) > 20
    assert "numbaconv.tuning" in edges["numbaconv.functional"]
    assert "numbaconv.cpu.workspace" in edges["numbaconv.dispatch"]
    assert "numbaconv.cuda.direct" in edges["numbaconv.dispatch"]        # inside a function
    assert "numbaconv.tools.bench" in edges["numbaconv.tools.cli"]
    assert ("numba", True) in {(target, top) for target, _, top in IMPORTS["numbaconv.cpu.direct"]}


def test_every_numbaconv_import_names_a_module_here():
    for module, found in IMPORTS.items():
        for target, line, _ in found:
            if target == "numbaconv" or target.startswith("numbaconv."):
                assert target in MODULES, f"{MODULES[module]}:{line} imports {target}, which is not in numbaconv/"


def test_the_library_never_imports_the_tools():
    for module, found in IMPORTS.items():
        if _is_tool(module):
            continue
        for target, line, _ in found:
            assert not _is_tool(target), f"{MODULES[module]}:{line}: the library module {module} imports {target}"
    for module, found in IMPORTS.items():
        assert "numbaconv.__main__" not in {target for target, _, _ in found}, f"{module} imports __main__"


@pytest.mark.parametrize("module", NO_NUMBA)
def test_spec_and_reference_import_no_numba(module):
    edges = _edges(top_level_only=True)
    reached, stack = {module}, [module]
    while stack:
        for target in edges[stack.pop()]:
            if target not in reached:
                reached.add(target)
                stack.append(target)
    for current in sorted(reached):
        for target, line, top in IMPORTS[current]:
            if current == module or top:
                assert not _is_numba(target), \
                    f"{module} imports Numba: {MODULES[current]}:{line} imports {target}"


def test_no_import_circles():
    edges = _edges()
    state, path = {}, []     # state: 1 on the current path, 2 done

    def visit(module):
        state[module] = 1
        path.append(module)
        for target in edges[module]:
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module)
