"""The package's shape: no import cycle (module level or inside functions), each module says what it holds."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "llmprobe"
KERNELS = PKG.parent / "kernels"   # the device code, installed as llmprobe.kernels


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = ["llmprobe", *rel.parts] if rel.parts[0] == "kernels" else list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files() -> list[Path]:
    return [*PKG.rglob("*.py"), *KERNELS.glob("*.py")]


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
    files = {_module(p): p for p in _files()}
    graph = {}
    for name, path in files.items():
        # "from . import views" names a module; "from .x import y" names x (y is an attribute)
        graph[name] = {t for t in _imports(path) if t in files and t != name}
    return graph


def test_no_import_cycle():
    _assert_acyclic(_graph())


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph[n]):
            if m == "llmprobe" or m == n or m not in graph:
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
    for path in _files():
        if path.stat().st_size == 0:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()[0]) > 20, f"{path.relative_to(PKG.parent)}: no one-line docstring"


# Each module's layer: a module imports from its own layer or below, never above. The analytic core knows nothing
# of records; records know nothing of how they were measured; analysis reads records, never the engines;
# presentation formats what analysis computed; commands wire them to the CLI.
LAYERS = [
    ("core", {"errors", "units", "dtypes", "models", "hardware", "comm", "costs", "memory", "bounds", "pricing",
              "timing", "workload", "kernels", "kernels.traffic", "kernels.triton_stream", "kernels.triton_matmul", "data",
              "data.models"}),
    ("records", {"records", "provenance"}),
    ("measurement", {"hostload", "telemetry", "traces", "profiling", "serving", "engines", "engines.*", "microbench",
                     "microbench.*"}),
    ("analysis", {"context", "explain", "underload", "predict", "compare", "audit"}),
    ("presentation", {"labels", "tables", "terminal", "views", "plots", "report"}),
    ("commands", {"commands", "cli", "__main__", ""}),
]


def _layer(module: str) -> int:
    name = module.removeprefix("llmprobe").removeprefix(".")
    for i, (_, names) in enumerate(LAYERS):
        if name in names or any(n.endswith(".*") and name.startswith(n[:-1]) for n in names):
            return i
    raise AssertionError(f"{module}: in no layer of tests/test_architecture.py's LAYERS")


def test_layers_import_downward_only():
    bad = [f"{m} ({LAYERS[_layer(m)][0]}) imports {t} ({LAYERS[_layer(t)][0]})"
           for m, targets in _graph().items() if m != "llmprobe" for t in targets
           if t != "llmprobe" and _layer(t) > _layer(m)]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_between_subpackages():
    """engines and microbench each taken as one node beside the top-level modules: a subpackage that imports a
    module importing it back is a cycle even when no two files form one."""
    def node(m: str) -> str:
        parts = m.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 else m
    graph: dict[str, set[str]] = {}
    for m, targets in _graph().items():
        graph.setdefault(node(m), set()).update(node(t) for t in targets if node(t) != node(m))
    _assert_acyclic(graph)


def test_the_package_exports_the_roofline_function_not_a_module():
    import llmprobe
    assert callable(llmprobe.roofline) and llmprobe.roofline(1e12, 1e9, 1e15, 1e12) > 0
