"""The shape of the code, read from its own imports (ast, nothing is imported):

* no import cycle in satsam_ros or satsam_training (function-level imports included,
  relative imports resolved);
* the layers import only downwards: the core imports nothing else of the package,
  nothing on the running path imports deploy/, tools/ or the training package, only
  the ROS shell (and the bag replayer) imports rclpy;
* no file of the runtime package is longer than MAX_LINES, and the node shell
  (satsam_ros/ros/node.py) no longer than NODE_MAX_LINES.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"satsam_ros": REPO / "satsam_ros", "satsam_training": REPO / "training" / "satsam_training"}
MAX_LINES = 600
#: runtime files allowed over MAX_LINES, with the reason (none today)
LONG_FILE_EXCEPTIONS: Dict[str, str] = {}
#: the node shell holds the lifecycle node, its parameter wiring and callbacks; publishing
#: is ros/outputs.py, the worker thread ros/worker.py
NODE_FILE = REPO / "satsam_ros" / "ros" / "node.py"
NODE_MAX_LINES = 400


def module_files(root: Path, package: str) -> Dict[str, Path]:
    """{dotted module name: file} of every .py file of a package (models/ holds data)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = [package, *rel.parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: Set[str]) -> List[Tuple[str, int]]:
    """(imported module, line) for every import statement in the file, at any depth
    (function-level imports included), resolved against ``known`` modules: ``from P
    import n`` names module ``P.n`` when that is a module, else ``P`` itself."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.append((full if full in known else target, node.lineno))
    return found


def import_graph(packages: Dict[str, Path]) -> Dict[str, Dict[str, int]]:
    """{module: {imported module of these packages: line of the import}}."""
    files: Dict[str, Path] = {}
    for package, root in packages.items():
        files.update(module_files(root, package))
    known = set(files)
    graph: Dict[str, Dict[str, int]] = {}
    for name, path in files.items():
        edges: Dict[str, int] = {}
        for target, line in imports_of(name, path, known):
            while target and target not in known:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def cycles(graph: Dict[str, Dict[str, int]]) -> List[List[str]]:
    """Every strongly connected group of two or more modules, as one cycle through it
    (Tarjan's algorithm, then a path back to the start inside the group)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_through(graph, group) for group in groups]


def _cycle_through(graph: Dict[str, Dict[str, int]], group: List[str]) -> List[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w == start:
                    return paths[v] + [start]
                if w in members and w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return group


def describe(graph: Dict[str, Dict[str, int]], cycle: List[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# --------------------------------------------------------------------------- the checker


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "demo"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import thing\n")
    (pkg / "c.py").write_text("import demo.a\nthing = 1\n")
    (pkg / "d.py").write_text("from . import c\n")  # reaches the cycle, is not in it
    graph = import_graph({"demo": pkg})
    assert graph["demo.a"] == {"demo.sub.b": 1} and graph["demo.sub.b"] == {"demo.c": 2}
    assert cycles(graph) == [["demo.a", "demo.sub.b", "demo.c", "demo.a"]]
    (pkg / "c.py").write_text("thing = 1\n")
    assert cycles(import_graph({"demo": pkg})) == []


# --------------------------------------------------------------------------- the code


GRAPH = import_graph(PACKAGES)


#: cycles known and left on purpose, with the reason and the way out; a listed cycle
#: that no longer exists fails the test too, so the list only shrinks
KNOWN_CYCLES: dict = {}


def test_no_import_cycles():
    found = cycles(GRAPH)
    unknown = [c for c in found if frozenset(c) not in KNOWN_CYCLES]
    assert not unknown, "import cycles:\n" + "\n".join(describe(GRAPH, c) for c in unknown)
    gone = [sorted(k) for k in KNOWN_CYCLES if k not in {frozenset(c) for c in found}]
    assert not gone, f"these cycles are gone: take them off KNOWN_CYCLES: {gone}"


def test_the_graph_covers_both_packages():
    assert "satsam_ros.ros.node" in GRAPH and "satsam_training.fit" in GRAPH
    assert "satsam_ros.runtime" in GRAPH["satsam_ros.ros.node"]  # a function-level import is seen
    assert "satsam_ros.core.preprocess" in GRAPH["satsam_training.patch_data"]


#: (importer prefix, forbidden prefixes, why)
LAYERS = [
    ("satsam_ros.core", ("satsam_ros.", "satsam_training"), "the core imports nothing outside itself"),
    ("satsam_ros.backends", ("satsam_ros.deploy", "satsam_ros.runtime", "satsam_ros.ros", "satsam_ros.tools",
                             "satsam_training"), "engines run; they neither choose nor build artefacts"),
    ("satsam_ros.artefacts", ("satsam_ros.deploy", "satsam_ros.runtime", "satsam_ros.backends",
                              "satsam_ros.ros", "satsam_ros.tools"), "finding artefacts needs no engine"),
    ("satsam_ros.model", ("satsam_ros.deploy", "satsam_ros.runtime", "satsam_ros.backends", "satsam_ros.ros",
                          "satsam_ros.tools"), "models know no engine"),
    ("satsam_ros.sam2_family", ("satsam_ros.",), "a model family imports nothing of the package (model.py "
     "registers it)"),
    ("satsam_ros.deploy", ("satsam_ros.runtime", "satsam_ros.ros", "satsam_ros.tools", "satsam_training"),
     "deploy makes artefacts for the runtime, never the other way round"),
    ("satsam_ros.runtime", ("satsam_ros.ros", "satsam_ros.tools", "satsam_training"),
     "the runtime opens detectors for the shells and tools"),
    ("satsam_ros.ros", ("satsam_ros.deploy", "satsam_ros.tools", "satsam_training"),
     "the ROS shell runs what the runtime opens"),
    ("satsam_ros.dataset", ("satsam_ros.deploy", "satsam_ros.runtime", "satsam_ros.ros", "satsam_ros.tools",
                            "satsam_training"), "reading datasets is plain data code"),
    ("satsam_training", ("satsam_ros.tools", "satsam_ros.ros", "satsam_ros.deploy"),
     "training uses the runtime's library, not its tools"),
    ("satsam_ros.figures", ("satsam_ros.", "satsam_training"), "figures plot plain dicts; they import nothing of "
     "the package"),
]


@pytest.mark.parametrize("importer,forbidden,why", LAYERS, ids=[layer[0] for layer in LAYERS])
def test_layers_import_only_downwards(importer, forbidden, why):
    bad = []
    for module, edges in GRAPH.items():
        if module != importer and not module.startswith(importer + "."):
            continue
        for target, line in edges.items():
            inside = target == importer or target.startswith(importer + ".")
            if not inside and target.startswith(forbidden):
                bad.append(f"{module} imports {target} (line {line})")
    assert not bad, f"{why}:\n" + "\n".join(bad)


def _external_imports(prefix: str, top_level_only: bool) -> Dict[str, Set[str]]:
    """{module: top-level names of the third-party modules it imports} for a package part."""
    out: Dict[str, Set[str]] = {}
    files = module_files(PACKAGES["satsam_ros"], "satsam_ros")
    for name, path in files.items():
        if name != prefix and not name.startswith(prefix + "."):
            continue
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else list(ast.walk(tree))
        names = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
        out[name] = names
    return out


ROS_MODULES = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "diagnostic_msgs", "vision_msgs", "launch")


def test_only_the_ros_shell_and_the_bag_replayer_import_ros():
    allowed = ("satsam_ros.ros", "satsam_ros.tools.bag.replay")
    bad = [f"{m}: {sorted(names & set(ROS_MODULES))}" for m, names in _external_imports("satsam_ros", False).items()
           if names & set(ROS_MODULES) and not m.startswith(allowed)]
    assert not bad, "\n".join(bad)


#: what a core module may import at module level: the standard library parts it uses, numpy, OpenCV
CORE_MODULE_LEVEL = {"__future__", "abc", "collections", "dataclasses", "json", "math", "pathlib", "struct", "time",
                     "typing", "numpy", "cv2"}


def test_the_core_imports_numpy_and_opencv_only_at_module_level():
    imported = _external_imports("satsam_ros.core", top_level_only=True)
    bad = [f"{m}: {sorted(names - CORE_MODULE_LEVEL)}" for m, names in imported.items() if names - CORE_MODULE_LEVEL]
    assert not bad, "torch, rclpy and the like are imported inside functions in the core:\n" + "\n".join(bad)


def test_no_runtime_file_is_longer_than_the_limit():
    too_long = []
    for name, path in module_files(PACKAGES["satsam_ros"], "satsam_ros").items():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and name not in LONG_FILE_EXCEPTIONS:
            too_long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not too_long, f"over {MAX_LINES} lines (split it, or justify it in LONG_FILE_EXCEPTIONS):\n" + \
        "\n".join(too_long)


def test_the_node_shell_is_no_longer_than_its_limit():
    lines = len(NODE_FILE.read_text().splitlines())
    assert lines <= NODE_MAX_LINES, (f"{NODE_FILE.relative_to(REPO)}: {lines} lines, over {NODE_MAX_LINES} (move "
                                     "what is not the lifecycle, parameters or callbacks to a module beside it)")
