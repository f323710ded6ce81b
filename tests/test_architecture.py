"""The import rule of docs/architecture.md: the packages form layers, and imports only
point down (or sideways within a package, without a cycle)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "refbnn"

# Lowest first. A module may import modules of its own layer or of a lower one; packages
# that share a layer (a tuple) may not import each other.
LAYERS = ["semantics", "formats", "reports", "claims", "engines", "biterrors", "training", "importers", "export", "measure",
          "oracle", ("experiments", "testing", "demo"), "api", "cli"]
PACKAGES = {p: k for k, layer in enumerate(LAYERS) for p in (layer if isinstance(layer, tuple) else (layer,))}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every refbnn module that `path` imports, at any depth of its code (lazy imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("refbnn")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("refbnn"):
                # `from .pkg import module` imports a module; `from .mod import name` the module
                subs = [f"{target}.{a.name}" for a in node.names]
                out |= {s for s in subs if _exists(s)} or {target}
    return out


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").exists() or (PACKAGE.parent / rel / "__init__.py").exists()


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2:
        return PACKAGES["api"]   # the top-level package: the API, re-exported
    assert parts[1] in PACKAGES, f"{module}: not in a layer of docs/architecture.md; add it there and here"
    return PACKAGES[parts[1]]


GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_documented_layer():
    """Property: each module of refbnn belongs to one of the layers (no loose modules)."""
    loose = [m for m in GRAPH if m != "refbnn" and m.split(".")[1] not in PACKAGES]
    assert loose == []


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    """Property: no module imports a module of a higher layer."""
    upward = [t for t in GRAPH[module] if _layer(t) > _layer(module)]
    assert upward == [], f"{module} imports upward: {upward}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_packages_of_one_layer_stay_apart(module):
    """Property: packages that share a layer (a tuple in LAYERS: experiments and testing)
    never import each other."""
    own = module.split(".")[1] if module != "refbnn" else ""
    sideways = [t for t in GRAPH[module] if own in PACKAGES and _layer(t) == _layer(module)
                and t.split(".")[1] != own]
    assert sideways == [], f"{module} imports a sibling package: {sideways}"


def test_import_graph_has_no_cycle():
    """Property: the module import graph is acyclic (depth-first search finds no back edge)."""
    state: dict[str, int] = {}   # 1 = on the stack, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH.get(m, ())):
            if t == m or t not in GRAPH:
                continue
            if state.get(t) == 1:
                raise AssertionError(" -> ".join(path + [m, t]))
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])


def test_the_checker_sees_relative_imports():
    """The rule above could pass vacuously if relative imports were missed: the fast engine
    must be seen importing the semantics and its own incremental module."""
    assert {"refbnn.semantics.margin", "refbnn.engines.incremental"} <= GRAPH["refbnn.engines.fast"]


BENCHMARKS = PACKAGE.parent / "benchmarks"


def _sibling_imports(path: Path) -> set[str]:
    names = {p.stem for p in BENCHMARKS.glob("*.py")}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in names}
        elif isinstance(node, ast.ImportFrom) and node.module in names:
            out.add(node.module)
    return out


def test_benchmarks_share_one_workloads_module_and_import_no_cycle():
    """Property: the workloads live in benchmarks/workloads.py, which imports no other
    benchmark, and the benchmarks' imports of each other form no cycle (engine -> sweep ->
    workloads is allowed; sweep -> engine is not). train and estimate time whole commands
    and need no shared workload; fuzz times generated cases; authors_recipe trains in torch;
    mutation runs mutmut on the judgment layer."""
    graph = {p.stem: _sibling_imports(p) for p in BENCHMARKS.glob("*.py")}
    assert graph["workloads"] == set()
    assert all("workloads" in deps for name, deps in graph.items()
               if name not in ("workloads", "train", "estimate", "fuzz", "authors_recipe", "mutation"))
    for name, deps in graph.items():
        for dep in deps:
            assert name not in graph[dep], f"benchmarks/{name}.py and benchmarks/{dep}.py import each other"
    assert not any("sys.path" in p.read_text() for p in BENCHMARKS.glob("*.py"))
