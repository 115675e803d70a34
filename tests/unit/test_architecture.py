"""The code's shape, checked with `ast`: no import cycle and no module over 400 lines anywhere under `src/`
(progress_monitor, cademi_sim, devstack); in progress_monitor imports only go down, and every Pub/Sub body and
object name is built only in `contracts`."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "progress_monitor"
SRC_PACKAGES = ("progress_monitor", "cademi_sim", "devstack")  # every package under src/, checked as one graph
MAX_LINES = 400
# The layers, bottom up: a module imports its own package and layers below it, never above. Features (the
# deployed functions' code) never import one another; the operator commands are the top, imported by nothing.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("contracts", "errors"),  # pure: no I/O, nothing of ours above
    ("settings",),
    ("platform",),  # Google Cloud adapters: BigQuery queries, the buckets, secrets, logs, access needs
    ("cademi", "slack"),  # the two outside APIs' clients
    ("services",),  # builds the clients once per instance; the adapters pass them down
    ("carrying",),
    ("pipeline",),
    ("privacy",),
    ("stages", "tutors", "add_tag"),  # features
    ("commands", "__main__"),
)
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
FEATURES = LAYERS[-2]
PURE = LAYERS[0]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """`root` is a package's folder, named as the package: `<root>/stages/load.py` -> `<package>.stages.load`."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(*roots: Path) -> dict[str, set[str]]:
    """Module -> the modules of the given packages (progress_monitor by default) it imports (`from pkg import mod`
    counts as importing `pkg.mod`); a package's own `__init__` is no edge."""
    roots = roots or (PACKAGE,)
    modules = {module_name(p, root): p for root in roots for p in root.rglob("*.py")}
    ours = tuple(root.name for root in roots)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ours:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] in ours}
        graph[name] = {m for m in found if m in modules and m != name and m not in ours}
    return graph


def src_graph(src: Path = SRC) -> dict[str, set[str]]:
    """The import graph of every package under `src`, as one graph (a cycle may cross packages)."""
    return import_graph(*(src / package for package in SRC_PACKAGES))


def long_modules(src: Path = SRC) -> dict[str, int]:
    """Modules of every package under `src` longer than MAX_LINES, with their length."""
    return {
        module_name(path, src / package): n
        for package in SRC_PACKAGES
        for path in (src / package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    """`progress_monitor.pipeline.loader` -> `pipeline`; a root module is its own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "contracts"  # the package's own __init__ imports nothing


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that do not go down: into a layer above or beside (the pure layer's two packages excepted), a
    feature into another feature, or a package unknown to LAYERS."""
    wrong = []
    for module, imported in sorted(graph.items()):
        mine = package_of(module)
        for target in sorted(imported):
            theirs = package_of(target)
            if mine == theirs:
                continue
            if mine not in RANK or theirs not in RANK:
                wrong.append(f"{module} -> {target} (a package not in LAYERS)")
            elif RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine] and mine not in PURE):
                wrong.append(f"{module} -> {target}")
    return wrong


def test_no_import_cycle_under_src() -> None:
    assert cycles(src_graph()) == []


def test_imports_only_go_down() -> None:
    assert upward_imports(import_graph()) == []


def test_no_module_under_src_is_over_400_lines() -> None:
    assert long_modules() == {}


def test_the_checks_catch_a_planted_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The graph checks can fail: a copy of the package with a planted loop and a feature importing a feature."""
    root = tmp_path / "progress_monitor"
    for path in PACKAGE.rglob("*.py"):
        target = root / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (root / "errors.py").write_text("from progress_monitor import services\n", encoding="utf-8")
    (root / "tutors" / "worker.py").write_text("from progress_monitor.stages import load\n", encoding="utf-8")
    (root / "platform" / "logs.py").write_text("from progress_monitor.pipeline import runs\n", encoding="utf-8")
    (root / "newpkg").mkdir()
    (root / "newpkg" / "__init__.py").write_text("from progress_monitor import settings\n", encoding="utf-8")
    graph = import_graph(root)
    assert any("progress_monitor.errors" in c and "progress_monitor.services" in c for c in cycles(graph))
    wrong = upward_imports(graph)
    assert "progress_monitor.tutors.worker -> progress_monitor.stages.load" in wrong
    assert "progress_monitor.errors -> progress_monitor.services" in wrong
    assert "progress_monitor.platform.logs -> progress_monitor.pipeline.runs" in wrong
    assert "progress_monitor.newpkg -> progress_monitor.settings (a package not in LAYERS)" in wrong


def test_the_src_checks_catch_planted_cycles_and_long_modules(tmp_path: Path) -> None:
    """The checks over all of src/ can fail: a copy of every package, with a loop planted in each of devstack and
    cademi_sim and one across packages, and a module of 401 lines in each package."""
    for package in SRC_PACKAGES:
        for path in (SRC / package).rglob("*.py"):
            target = tmp_path / package / path.relative_to(SRC / package)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert cycles(src_graph(tmp_path)) == [] and long_modules(tmp_path) == {}
    (tmp_path / "devstack" / "wiring.py").write_text("from devstack import stack\n", encoding="utf-8")
    (tmp_path / "cademi_sim" / "scenario.py").write_text("import cademi_sim.truth\n", encoding="utf-8")
    (tmp_path / "progress_monitor" / "errors.py").write_text("from devstack.procs import spawn\n", encoding="utf-8")
    (tmp_path / "devstack" / "procs.py").write_text("from progress_monitor import errors\n", encoding="utf-8")
    found = cycles(src_graph(tmp_path))
    assert any({"devstack.wiring", "devstack.stack"} <= set(c) for c in found), found
    assert ["cademi_sim.scenario", "cademi_sim.truth"] in found, found
    assert ["devstack.procs", "progress_monitor.errors"] in found, found
    for planted in ("progress_monitor/stages/planted.py", "cademi_sim/planted.py", "devstack/planted.py"):
        (tmp_path / planted).write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    assert long_modules(tmp_path) == {
        "progress_monitor.stages.planted": MAX_LINES + 1,
        "cademi_sim.planted": MAX_LINES + 1,
        "devstack.planted": MAX_LINES + 1,
    }


# -- one home for every message body and object name -------------------------------------------------------

CONTRACTS = PACKAGE / "contracts"
# An f-string starting like an object path of the buckets, or a JSON body handed to a publish.
OBJECT_PREFIXES = ("progress/", "rosters/", "contacts/", "lanes/", "budget/", "slack/")
OBJECT_NAME = re.compile(r"(progress|rosters|contacts|lanes|budget|slack)/[\w=./-]+\.(json|ndjson)")


def object_paths_outside_contracts(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "contracts"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                head = str(node.values[0].value)
                if head.startswith(OBJECT_PREFIXES):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and OBJECT_NAME.fullmatch(node.value):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found)


def publishes_outside_contracts(root: Path = PACKAGE) -> list[str]:
    """`publish(..., json.dumps(...) ...)`: a message body built by hand instead of by its contract."""
    found = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name == "publish" and any("json" in ast.unparse(arg) for arg in node.args):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found)


def test_object_names_are_built_only_in_contracts() -> None:
    assert object_paths_outside_contracts() == []


def test_message_bodies_are_built_only_in_contracts() -> None:
    assert publishes_outside_contracts() == []


@pytest.mark.parametrize(
    ("source", "check"),
    [
        ('def f(d):\n    return f"slack/digests/{d}/C1.json"\n', object_paths_outside_contracts),
        ('NAME = "budget/cademi.json"\n', object_paths_outside_contracts),
        (
            'import json\ndef f(c, t):\n    runtime.publish(c, t, json.dumps({"kind": "x"}).encode())\n',
            publishes_outside_contracts,
        ),
    ],
)
def test_the_contract_checks_catch_a_planted_path_or_body(tmp_path: Path, source: str, check: Any) -> None:
    (tmp_path / "planted.py").write_text(source, encoding="utf-8")
    found = check(tmp_path)
    assert len(found) == 1 and found[0].startswith("planted.py:")
