"""The package's import graph: folders point one way, and nothing imports back.

Parses every module's imports with ``ast`` (lazy imports inside functions included) and
checks the direction documented in docs/development.md (Layout):

    cli -> study -> {engine, data, scores};  bench -> {engine, data};  engine -> data (the
    ``Dataset`` value);  scores -> numpy/scipy only;  everything -> errors, rng, jsonable, config.

and that no module uses another module's private (underscore) names.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jmem"
FOLDERS = ("engine", "data", "scores", "study", "bench")
FOUNDATION = ("jmem.errors", "jmem.rng", "jmem.jsonable")  # import no other jmem module
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax")

# Parts an importer part must not import (a part: a folder, a top-level jmem module, or a
# third-party package's top-level name).
FORBIDDEN = {
    "scores": {"engine", "data", "study", "bench", "jmem.cli", "jmem.rng", "jmem.config", *HEAVY},
    "engine": {"study", "bench", "scores", "jmem.cli", "jmem.config"},
    "data": {"engine", "study", "bench", "scores", "jmem.cli", "jmem.config", "flax", "optax", "orbax"},
    "bench": {"study", "scores", "jmem.cli"},
    "study": {"jmem.cli", "bench"},
    "jmem.config": {"study", "bench", "scores", "jmem.cli"},
}


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, package: str) -> set[str]:
    """Modules imported by ``source`` (code of a module in ``package``), absolute names.

    ``from jmem.x import y`` gives ``jmem.x`` and ``jmem.x.y`` (``y`` may be a submodule)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, package: str, modules: set[str]) -> list[str]:
    """Private names ``source`` (a module of ``package``) takes from other jmem ``modules``:
    ``from jmem.x import _y`` and ``x._y`` / ``jmem.x._y`` where ``x`` is an imported module."""
    tree = ast.parse(source)
    aliases = {}  # local name -> jmem module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    aliases[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if _is_private(alias.name) and base in modules:
                    found.append(f"{base}.{alias.name}")
                if f"{base}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in aliases:
                target = ".".join([aliases[value.id], *chain])
                if target in modules:
                    found.append(f"{target}.{node.attr}")
    return sorted(set(found))


def part_of(module: str) -> str:
    """A folder name (``engine``), a top-level jmem module (``jmem.cli``), or a package (``jax``)."""
    bits = module.split(".")
    if bits[0] != "jmem":
        return bits[0]
    if len(bits) >= 2 and bits[1] in FOLDERS:
        return bits[1]
    return ".".join(bits[:2])


def package_graph() -> dict[str, set[str]]:
    """jmem module -> every module it imports (jmem modules that exist, and third-party names)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {m for m in imports_of(path.read_text(), package)
                       if m in paths or not m.startswith("jmem")}
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in graph.items():
        me = part_of(src)
        for dst in targets:
            there = part_of(dst)
            if there in FORBIDDEN.get(me, ()):
                bad.append(f"{src} imports {dst}")
            if src in FOUNDATION and dst.startswith("jmem") and part_of(dst) != me:
                bad.append(f"{src} (foundation) imports {dst}")
    return sorted(bad)


def find_cycle(nodes: dict[str, set[str]]) -> list[str] | None:
    """A cycle of a directed graph (node -> successors), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(nodes.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if not state.get(m):
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        found = None if state.get(n) else visit(n)
        if found:
            return found
    return None


def jmem_edges(graph):
    """Module -> imported jmem modules, without a package's edges to and from its own files
    (an ``__init__`` re-exporting its files is not a cycle of the design)."""
    return {src: {d for d in targets if d in graph and not (d.startswith(src + ".") or src.startswith(d + "."))}
            for src, targets in graph.items()}


def folder_graph(graph):
    edges: dict[str, set[str]] = {}
    for src, targets in jmem_edges(graph).items():
        for dst in targets:
            if part_of(src) != part_of(dst):
                edges.setdefault(part_of(src), set()).add(part_of(dst))
    return edges


def test_folders_exist():
    for folder in FOLDERS:
        assert (PACKAGE / folder / "__init__.py").is_file(), folder


def test_no_forbidden_edge():
    assert violations(package_graph()) == []


def test_no_cycle_between_modules():
    assert find_cycle(jmem_edges(package_graph())) is None


def test_no_cycle_between_folders():
    assert find_cycle(folder_graph(package_graph())) is None


def test_only_the_cli_imports_the_study():
    for src, targets in package_graph().items():
        if part_of(src) not in ("study", "jmem.cli"):
            assert not any(part_of(t) == "study" for t in targets), src


def test_no_module_uses_another_modules_private_names():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths) | {"jmem"}
    bad = []
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        bad += [f"{name} uses {use}" for use in private_uses(path.read_text(), package, modules - {name})]
    assert bad == []


def test_checks_catch_what_they_forbid():
    # Positive controls: each check fails on a graph that breaks its rule.
    lazy = imports_of("def f():\n    import jax\n    from ..engine import trainer\n", "jmem.scores")
    assert {"jax", "jmem.engine", "jmem.engine.trainer"} <= lazy
    assert violations({"jmem.scores.estimators": lazy}) == [
        "jmem.scores.estimators imports jax", "jmem.scores.estimators imports jmem.engine",
        "jmem.scores.estimators imports jmem.engine.trainer"]
    assert violations({"jmem.rng": {"jmem.data.subsets"}}) == ["jmem.rng (foundation) imports jmem.data.subsets"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert folder_graph({"jmem.engine.x": {"jmem.study.y"}, "jmem.study.y": {"jmem.engine.x"}}) == {
        "engine": {"study"}, "study": {"engine"}}
    modules = {"jmem", "jmem.study", "jmem.study.training", "jmem.study.scoring"}
    source = ("from jmem.study import training\nfrom jmem.study.scoring import _rows, load_run\n"
              "import jmem.study.scoring\nx = training._Start, training.run, training.__doc__\n"
              "y = jmem.study.scoring._take\ndef f(self):\n    return self._private\n")
    assert private_uses(source, "jmem.study", modules) == [
        "jmem.study.scoring._rows", "jmem.study.scoring._take", "jmem.study.training._Start"]


MAX_LINES = 600  # a module longer than this wants splitting into parts that say what they are


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
