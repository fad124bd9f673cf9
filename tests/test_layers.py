"""The declared import direction between trustplan's packages, and no import cycles between modules.

The source is read with ast, so for the direction imports made inside functions (the lazy ones) and
under TYPE_CHECKING count the same as those at the top of a module: a dependency is a dependency,
whenever it is loaded. For cycles, every import that runs counts (top or lazy); one under
TYPE_CHECKING never runs. docs/architecture.md draws the same table; tests/test_architecture_doc.py
checks that they agree.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Where each top folder's modules live in the package (pyproject.toml's package-dir).
FOLDERS = {
    "trustplan": "trustplan",
    "planner": "trustplan.planner",
    "providers": "trustplan.providers",
    "state": "trustplan.state",
    "schemas": "trustplan.schemas",
    "sim": "trustplan_sim",
}

#: The top-level import names of the distribution: the tool, and the simulator beside it.
ROOTS = frozenset({"trustplan", "trustplan_sim"})

#: The layer of a module: the first of these prefixes it falls under (longest first).
LAYER_OF_PREFIX = {
    "trustplan.planner": "planner",
    "trustplan.providers": "providers",
    "trustplan.state": "state",
    "trustplan.schemas": "schemas",
    "trustplan.errors": "errors",
    "trustplan.system": "system",
    "trustplan.talos": "talos",
    "trustplan.formats": "formats",
    "trustplan.engine": "engine",
    "trustplan.render": "render",
    "trustplan.cli": "cli",
    "trustplan.__main__": "cli",
    "trustplan_sim": "sim",
}
#: Modules that are a layer by their exact name (a prefix would give every new module a layer).
LAYER_OF_MODULE = {"trustplan": "init"}  # trustplan/__init__.py: the version and the checkout path

#: What each layer may import, of ours (a layer may always import its own modules).
#: `init` (trustplan/__init__.py, the version) and `schemas` (the JSON Schemas) import nothing of
#: ours; every layer but the pure core may read them.
ALLOWED: dict[str, frozenset[str]] = {
    "planner": frozenset(),
    "errors": frozenset(),
    "init": frozenset(),
    "schemas": frozenset(),
    "system": frozenset({"errors"}),
    "talos": frozenset({"errors", "system", "planner"}),
    "providers": frozenset({"errors", "system", "talos"}),
    "state": frozenset({"errors", "system", "talos"}),
    "formats": frozenset({"errors", "system", "talos", "planner", "providers", "state"}),
    "engine": frozenset({"errors", "system", "talos", "planner", "providers", "state", "formats"}),
    "render": frozenset({"errors", "system", "talos", "planner", "formats"}),
    "cli": frozenset(
        {"errors", "system", "talos", "planner", "providers", "state", "formats", "engine", "render", "sim"}
    ),
    # The simulator is the server side of the Talos API: a separate oracle that shares the wire
    # format (the protobuf stubs, the TLS setup) and certificate code with the tool, never its engine,
    # file formats, CLI or renderers.
    "sim": frozenset({"errors", "system", "talos", "providers"}),
}
LEAVES = frozenset({"init", "schemas"})

#: Imports that run against the direction today, each owned by another part of issue 11 that removes
#: it (docs/issue split: A `typed`, B `core`). An entry that no longer matches anything fails the test,
#: so the list only shrinks. Nothing else may be added here.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()

#: Module cycles owned by A or B, each given as the sorted modules of one cycle (strongly connected set).
KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module of ours it loads
    where: str  # file:line
    type_only: bool = False  # under `if TYPE_CHECKING:`: never runs, so it is no import cycle


def layer_of(module: str) -> str:
    if module in LAYER_OF_MODULE:
        return LAYER_OF_MODULE[module]
    for prefix in sorted(LAYER_OF_PREFIX, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYER_OF_PREFIX[prefix]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYER_OF_PREFIX in tests/test_layers.py")


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package, by dotted name -> file (generated protobuf code is left out)."""
    out: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder)
            if "proto" in rel.parts or "__pycache__" in rel.parts:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _is_package(module: str, known: dict[str, Path]) -> bool:
    path = known.get(module)
    return path is not None and path.name == "__init__.py"


def imports_of(module: str, source: str, known: dict[str, Path], filename: str = "<src>") -> Iterator[Import]:
    """The modules of ours `source` imports, wherever in the file the import statement is."""
    package = module if _is_package(module, known) else module.rpartition(".")[0]
    seen: set[tuple[str, str]] = set()
    for imp in _imports(module, package, source, known, filename):
        if (imp.target, imp.where) not in seen:
            seen.add((imp.target, imp.where))
            yield imp


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside an `if TYPE_CHECKING:` body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _names_type_checking(node.test):
            for stmt in node.body:
                inside.update(id(n) for n in ast.walk(stmt))
    return inside


def _names_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, package: str, source: str, known: dict[str, Path], filename: str) -> Iterator[Import]:
    tree = ast.parse(source, filename)
    type_only = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        typed = id(node) in type_only
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ROOTS:
                    yield Import(module, _ours(alias.name, known), where, typed)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in ROOTS:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # `from pkg import module` loads that module; `from pkg import name` loads pkg
                yield Import(module, sub if sub in known else _ours(target, known), where, typed)
        elif isinstance(node, ast.Call) and _is_import_module(node) and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.split(".")[0] in ROOTS:
                yield Import(module, _ours(arg.value, known), where, typed)


def _is_import_module(call: ast.Call) -> bool:
    f = call.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name in {"import_module", "__import__"}


def _ours(name: str, known: dict[str, Path]) -> str:
    """The module `name` refers to: itself when it is a module, else its nearest parent that is."""
    while name not in known and "." in name:
        name = name.rpartition(".")[0]
    return name


def all_imports(modules: dict[str, Path]) -> list[Import]:
    out: list[Import] = []
    for name, path in modules.items():
        out += imports_of(name, path.read_text(encoding="utf-8"), modules, str(path.relative_to(ROOT)))
    return out


def direction_violations(imports: Iterable[Import]) -> list[Import]:
    """The imports that run against ALLOWED."""
    bad = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if not (src == dst or dst in ALLOWED[src] or (dst in LEAVES and src != "planner")):
            bad.append(imp)
    return bad


def describe(imp: Import) -> str:
    return f"{imp.where}: {imp.source} ({layer_of(imp.source)}) imports {imp.target} ({layer_of(imp.target)})"


def cycles(imports: Iterable[Import]) -> list[frozenset[str]]:
    """The import cycles between modules: every strongly connected set of more than one module
    (Tarjan's algorithm). Imports that run count, at the top of a module or inside a function;
    those under `if TYPE_CHECKING:` never run (two classes that name each other in annotations)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.type_only:
            continue
        graph.setdefault(imp.source, set())
        graph.setdefault(imp.target, set())
        if imp.source != imp.target:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


MODULES = package_modules()
IMPORTS = all_imports(MODULES)


def _short(module: str) -> str:
    return module.removeprefix("trustplan.")


def test_every_module_has_a_layer() -> None:
    assert len(MODULES) > 50, "the package was not found"
    for module in MODULES:
        assert layer_of(module) in ALLOWED


def test_imports_follow_the_declared_direction() -> None:
    found = direction_violations(IMPORTS)
    unexpected = [describe(i) for i in found if (_short(i.source), _short(i.target)) not in KNOWN_VIOLATIONS]
    assert unexpected == [], "imports against the declared direction:\n" + "\n".join(unexpected)
    stale = KNOWN_VIOLATIONS - {(_short(i.source), _short(i.target)) for i in found}
    assert not stale, f"fixed, so remove from KNOWN_VIOLATIONS: {sorted(stale)}"


def test_no_import_cycles_between_modules() -> None:
    found = {frozenset(_short(m) for m in c) for c in cycles(IMPORTS)}
    unexpected = found - KNOWN_CYCLES
    assert not unexpected, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in unexpected)
    stale = KNOWN_CYCLES - found
    assert not stale, f"fixed, so remove from KNOWN_CYCLES: {[sorted(c) for c in stale]}"


#: The simulator is the oracle trustplan is judged by: it reads machine configs with its own reader
#: (trustplan_sim.oracle), so it never loads trustplan's reader or validator, directly, lazily or
#: through any module it loads at run time (a type-only import loads nothing).
SIM_NEVER_LOADS = frozenset({"trustplan.talos.machineconfig", "trustplan.talos.validation"})


def loaded_at_run_time(module: str, imports: Iterable[Import]) -> dict[str, str]:
    """Every module that loading `module` loads (type-only imports left out) -> the chain that loads it."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_only:
            graph.setdefault(imp.source, set()).add(imp.target)
    chains = {module: module}
    todo = [module]
    while todo:
        current = todo.pop()
        for target in sorted(graph.get(current, ())):
            if target not in chains:
                chains[target] = f"{chains[current]} -> {target}"
                todo.append(target)
    return chains


def sim_oracle_violations(imports: Iterable[Import], modules: Iterable[str]) -> list[str]:
    imports = list(imports)
    found = []
    for module in modules:
        if layer_of(module) != "sim":
            continue
        chains = loaded_at_run_time(module, imports)
        found += [chains[m] for m in sorted(SIM_NEVER_LOADS & chains.keys())]
        found += [describe(i) for i in imports if i.source == module and i.target in SIM_NEVER_LOADS and i.type_only]
    return found


def test_the_simulator_never_loads_trustplans_config_reader() -> None:
    found = sim_oracle_violations(IMPORTS, MODULES)
    assert found == [], "the simulator loads trustplan's config reader:\n" + "\n".join(found)


#: The engine drives providers through the Provider protocol (providers/base.py). Only these engine
#: modules reach into the Talos provider's package, to read the operator's talosconfig or make a Talos
#: client credential; the runner, the applier, the rollback... stay provider-neutral, and write every
#: output through trustplan.formats.outputs (docs/architecture.md).
ENGINE_TALOS_READERS = frozenset(
    {"trustplan.engine.access", "trustplan.engine.credentials", "trustplan.engine.workertrust"}
)


def engine_talos_violations(imports: Iterable[Import]) -> list[str]:
    return [describe(i) for i in imports if layer_of(i.source) == "engine" and i.source not in ENGINE_TALOS_READERS
            and i.target.startswith("trustplan.providers.talos")]


def test_the_engine_reaches_the_talos_provider_only_through_its_readers() -> None:
    found = engine_talos_violations(IMPORTS)
    assert found == [], "engine modules importing the Talos provider:\n" + "\n".join(found)
    assert MODULES.keys() >= ENGINE_TALOS_READERS


def test_the_engine_rule_catches_the_runner_writing_a_talosconfig_itself() -> None:
    known = {**FAKE, "trustplan.engine.runner": Path("/x/trustplan/engine/runner.py"),
             "trustplan.providers.talos": Path("/x/trustplan/providers/talos/__init__.py"),
             "trustplan.providers.talos.talosconfig": Path("/x/trustplan/providers/talos/talosconfig.py")}
    source = "def f():\n    from trustplan.providers.talos.talosconfig import write_talosconfig"
    assert len(engine_talos_violations(imports_of("trustplan.engine.runner", source, known, "x.py"))) == 1
    assert engine_talos_violations(imports_of("trustplan.engine.access", source, known, "x.py")) == []


# --- the checker is not a test of nothing ---

FAKE = {
    name: Path(f"/x/{name.replace('.', '/')}{'/__init__' if pkg else ''}.py")
    for name, pkg in [
        ("trustplan", True),
        ("trustplan.errors", False),
        ("trustplan.engine", True),
        ("trustplan.engine.planning", False),
        ("trustplan.render", True),
        ("trustplan.render.text", False),
        ("trustplan.render.markdown", False),
        ("trustplan.providers", True),
        ("trustplan.providers.base", False),
        ("trustplan.formats", True),
        ("trustplan.formats.outputs", False),
        ("trustplan.planner", True),
        ("trustplan.planner.plan", False),
        ("trustplan.schemas", True),
        ("trustplan_sim", True),
        ("trustplan_sim.node", False),
        ("trustplan.cli", True),
        ("trustplan.cli.sim", False),
    ]
}


def _check(module: str, source: str) -> list[str]:
    return [describe(i) for i in direction_violations(imports_of(module, source, FAKE, "x.py"))]


@pytest.mark.parametrize(
    "module, source, target",
    [
        ("trustplan.render.text", "from trustplan.engine.planning import make", "trustplan.engine.planning"),
        ("trustplan.render.text", "def f():\n    from trustplan.engine import planning", "trustplan.engine.planning"),
        ("trustplan.render.text", "import trustplan.engine.planning as p", "trustplan.engine.planning"),
        ("trustplan.render.text", "from ..engine.planning import make", "trustplan.engine.planning"),
        ("trustplan.providers.base", "from trustplan.formats.outputs import write", "trustplan.formats.outputs"),
        ("trustplan.providers.base", "if TYPE_CHECKING:\n    from trustplan.formats import outputs",
         "trustplan.formats.outputs"),
        ("trustplan.planner.plan", "from trustplan.errors import TrustplanError", "trustplan.errors"),
        ("trustplan.planner.plan", "from trustplan import __version__", "trustplan"),
        ("trustplan.errors", "import importlib\nm = importlib.import_module('trustplan.render.text')",
         "trustplan.render.text"),
        ("trustplan_sim.node", "from trustplan.engine.planning import make", "trustplan.engine.planning"),
        ("trustplan_sim.node", "from trustplan.formats import outputs", "trustplan.formats.outputs"),
        ("trustplan_sim.node", "import trustplan.render.text", "trustplan.render.text"),
        ("trustplan.providers.base", "from trustplan_sim import node", "trustplan_sim.node"),
    ],
)
def test_the_checker_catches_an_import_against_the_direction(module: str, source: str, target: str) -> None:
    found = _check(module, source)
    assert len(found) == 1 and f"imports {target} " in found[0], found


def test_the_checker_allows_the_declared_direction() -> None:
    assert _check("trustplan.engine.planning", "from trustplan.formats.outputs import write") == []
    assert _check("trustplan.render.text", "from .markdown import render\nfrom trustplan.errors import E") == []
    assert _check("trustplan.formats.outputs", "from trustplan import schemas, __version__") == []
    assert _check("trustplan.planner.plan", "from trustplan.planner import plan") == []
    assert _check("trustplan.cli.sim", "from trustplan_sim import node") == []
    sim_source = "from trustplan.providers.base import NodeRef\nfrom trustplan.errors import E"
    assert _check("trustplan_sim.node", sim_source) == []


@pytest.mark.parametrize(
    "source",
    [
        "from trustplan.talos.machineconfig import parse",
        "def f():\n    from trustplan.talos import validation",
        "if TYPE_CHECKING:\n    from trustplan.talos.machineconfig import MachineConfig",
        "from trustplan.providers.base import NodeRef",  # which loads the reader (below)
    ],
)
def test_the_checker_catches_the_simulator_loading_trustplans_reader(source: str) -> None:
    fake = {**FAKE, **{m: Path(f"/x/{m.replace('.', '/')}.py") for m in SIM_NEVER_LOADS}}
    fake["trustplan.talos"] = Path("/x/trustplan/talos/__init__.py")
    imports = list(imports_of("trustplan_sim.node", source, fake, "x.py"))
    imports += imports_of("trustplan.providers.base", "from trustplan.talos.machineconfig import Role", fake, "y.py")
    found = sim_oracle_violations(imports, ["trustplan_sim.node"])
    assert len(found) == 1 and "trustplan.talos." in found[0], found


def test_a_new_top_level_module_has_no_layer_until_declared() -> None:
    with pytest.raises(AssertionError, match="belongs to no layer"):
        layer_of("trustplan.newthing")
    assert layer_of("trustplan") == "init"


def test_the_checker_finds_a_cycle_even_through_a_lazy_import() -> None:
    imports = [
        *imports_of("trustplan.render.text", "from trustplan.render.markdown import x", FAKE),
        *imports_of("trustplan.render.markdown", "def f():\n    from trustplan.render import text", FAKE),
        *imports_of("trustplan.engine.planning", "from trustplan.render.text import y", FAKE),
    ]
    assert cycles(imports) == [frozenset({"trustplan.render.text", "trustplan.render.markdown"})]
    assert cycles(imports[:1] + imports[2:]) == []


def test_a_type_checking_import_is_a_dependency_but_no_cycle() -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trustplan.render.text import x"
    back = list(imports_of("trustplan.render.markdown", source, FAKE))
    assert [i.type_only for i in back] == [True]
    forth = list(imports_of("trustplan.render.text", "from trustplan.render.markdown import y", FAKE))
    assert cycles(back + forth) == []
    assert _check("trustplan.providers.base", source.replace("render.text", "engine.planning")) != []
