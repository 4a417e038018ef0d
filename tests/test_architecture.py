"""The import graph of ``src/owlkit``: no cycles between modules or packages, and the bottom layers (errors,
formats, store, terms) and the store-free engines (runtime, adapt, quantize) import only what is below
them: an engine takes paths and tensors, never the store.

Every ``import`` and ``from … import`` counts, at module level or inside a function (a lazy import is
still a dependency), read from the source with ``ast``: nothing is imported to build the graph."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

# Bottom up: each of these packages may import only the ones listed (and itself).
LOWER_LAYERS = {
    "errors": set(),
    "offline": set(),
    "formats": {"errors"},
    "store": {"errors", "formats"},
    "terms": {"errors", "formats", "store"},
    "runtime": {"errors", "formats"},
    "adapt": {"errors", "formats", "runtime"},
    "metrics": {"errors", "formats", "runtime"},
    "quantize": {"errors", "formats", "runtime", "adapt", "metrics"},
}


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "owlkit").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the owlkit modules it imports (a name imported from a package counts as that package,
    unless the name is itself a module)."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                found = owner(target) if target.startswith("owlkit") else None
                if found and found != mod:
                    graph[mod].add(found)
    return graph


def cycles(nodes: list[str], graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def package(mod: str) -> str:
    return mod.split(".")[1] if "." in mod else mod


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for mod, targets in import_graph().items():
        for target in targets:
            if package(mod) != package(target):
                graph[package(mod)].add(package(target))
    return graph


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "owlkit.runtime.load" in graph["owlkit.adapt.nf4"]  # module level
    assert "owlkit.adapt.ddp" in graph["owlkit.adapt.train"]  # inside a function
    assert cycles(["a", "b", "c"], {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [{"a", "b", "c"}]
    assert cycles(["a", "b"], {"a": {"b"}}) == []


def test_no_module_imports_itself_through_others() -> None:
    graph = import_graph()
    assert cycles(sorted(modules()), graph) == []


def test_lower_layers_import_only_what_is_below_them() -> None:
    graph = package_graph()
    wrong = {
        f"{layer} -> {target}"
        for layer, allowed in LOWER_LAYERS.items()
        for target in graph.get(layer, set()) - allowed - {"owlkit"}
    }
    assert wrong == set()


# The whole stack, bottom up (docs/architecture.md draws it): a package imports only packages on lower
# rows (LOWER_LAYERS narrows the bottom ones further). `serve` is the OpenAI HTTP app over the backends,
# which `Owl.serve` runs; `owl serve` (cli) and the demo are its front ends.
LAYERS = [
    {"errors", "offline", "version"},
    {"formats"},
    {"store"},
    {"terms"},
    {"runtime"},
    {"metrics"},
    {"adapt"},
    {"quantize"},
    {"recipes"},
    {"backends"},
    {"evaluate", "serve"},
    {"api"},
    {"cli", "demo"},
]


def test_every_package_has_a_layer_and_imports_only_below_it() -> None:
    row = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}
    packages = {package(m) for m in modules()} - {"owlkit"}
    assert packages <= set(row), f"packages with no layer: {sorted(packages - set(row))} (add them to LAYERS)"
    wrong = sorted(
        f"{pkg} -> {target}"
        for pkg, targets in package_graph().items()
        if pkg != "owlkit"
        for target in targets - {"owlkit", pkg}
        if row[target] >= row[pkg]
    )
    assert wrong == []


def test_no_package_imports_itself_through_others() -> None:
    graph = package_graph()
    assert cycles(sorted({package(m) for m in modules()}), graph) == []


# Front ends hold no business logic: the CLI reaches owlkit only through the API (and the errors and
# version it prints); what it renders comes from the API's results.
CLI_MAY_IMPORT = {"api", "errors", "version", "cli"}


def test_the_cli_imports_only_the_api() -> None:
    graph = import_graph()
    wrong = sorted(
        f"{mod} -> {target}"
        for mod, targets in graph.items()
        if package(mod) == "cli"
        for target in targets
        if package(target) not in CLI_MAY_IMPORT
    )
    assert wrong == [], "the CLI must call owlkit.api, not " + ", ".join(wrong)
