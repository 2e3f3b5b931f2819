"""The package's shape: no import cycle (module level or inside functions), each module says what it holds."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "llmprobe"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every llmprobe module this file imports, wherever the import statement stands."""
    me = _module(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            out |= {n for n in names + [target] if n.startswith("llmprobe")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("llmprobe")}
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        # "from . import views" names a module; "from .x import y" names x (y is an attribute)
        graph[name] = {t for t in _imports(path) if t in files and t != name}
    return graph


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph[n]):
            if m == "llmprobe" or m == n:
                continue  # the package root re-exports; importing it is not a dependency on a sibling
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


def test_every_module_opens_with_what_it_holds():
    for path in PKG.rglob("*.py"):
        if path.stat().st_size == 0:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{path.relative_to(PKG.parent)}: no one-line docstring"
