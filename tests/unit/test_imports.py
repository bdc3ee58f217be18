"""The import graph holds the layout of docs/architecture.md ("Package boundaries").

Every ``import`` and ``from ... import`` in seed_rl/, actors/ and learner/ is read from the
source (function-level imports too: a circle hidden inside a function is still a circle),
and the test fails on

- any import circle between modules;
- actors/ importing learner/ or torch (an actor install has no torch);
- seed_rl/ importing actors/ or learner/ (the CLI names the roles' modules as strings), or
  torch outside seed_rl/functional/;
- a learner role importing a role above it: watching < training < serving < running <
  deploying < conformance.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("seed_rl", "actors", "learner")
#: learner roles, lowest first: a role may import itself and the roles before it
LEARNER_LAYERS = ("watching", "training", "serving", "running", "deploying",
                  "conformance")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "proto" in path.relative_to(ROOT).parts:  # generated gRPC modules
                continue
            modules[module_name(path)] = path
    return modules


def imported_names(path: Path, name: str) -> set[str]:
    """Every dotted name ``path`` imports; ``from a import b`` gives ``a.b`` (module ``a.b``
    when there is one, else ``a``: see :func:`import_graph`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (the longest known prefix of each name)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path, name):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def external_imports() -> dict[str, set[str]]:
    """module -> top-level names of what it imports (``torch``, ``grpc``, ...)."""
    return {name: {n.split(".")[0] for n in imported_names(path, name)}
            for name, path in project_modules().items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_finds_circles() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_is_read_from_the_code() -> None:
    graph = import_graph()
    assert "learner.serving.service" in graph["learner.running.learner"]
    assert "seed_rl.wire" in graph["actors.client"]
    assert sum(len(targets) for targets in graph.values()) > 100


def test_no_import_circles() -> None:
    found = circles(import_graph())
    assert not found, "import circles (break each by moving code to the role it serves): " + \
        "; ".join(" <-> ".join(component) for component in found)


def test_actors_never_import_the_learner_or_torch() -> None:
    graph, external = import_graph(), external_imports()
    for name in graph:
        if name.startswith("actors"):
            assert not [t for t in graph[name] if t.startswith("learner")], name
            assert "torch" not in external[name], f"{name} imports torch"


def test_the_shared_core_imports_no_role() -> None:
    graph, external = import_graph(), external_imports()
    for name in graph:
        if name.split(".")[0] != "seed_rl":
            continue
        roles = [t for t in graph[name] if t.split(".")[0] in ("actors", "learner")]
        assert not roles, f"{name} imports {roles}"
        if not name.startswith("seed_rl.functional"):
            assert "torch" not in external[name], f"{name} imports torch"


@pytest.mark.parametrize("layer", LEARNER_LAYERS)
def test_learner_roles_import_only_the_roles_below(layer: str) -> None:
    allowed = set(LEARNER_LAYERS[: LEARNER_LAYERS.index(layer) + 1])
    graph = import_graph()
    members = [name for name in graph if name.startswith(f"learner.{layer}")]
    assert members, f"learner/{layer}/ has no modules"
    for name in members:
        for target in graph[name]:
            parts = target.split(".")
            if parts[0] == "learner" and len(parts) > 1:
                assert parts[1] in allowed, f"{name} imports {target}, a role above {layer}"
