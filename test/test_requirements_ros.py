"""Installing into a real ROS 2 workspace: requirements-ros.txt, package.xml, README, Docker.

Offline checks. That the file resolves for Python 3.8 to 3.12 with the distros' numpy
held is `make check-reqs` (scripts/check_ros_requirements.py, needs the package index);
its pure parts are tested here.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import REPO
from packaging.requirements import Requirement

FILE = REPO / "requirements-ros.txt"
_spec = importlib.util.spec_from_file_location("check_ros_requirements", REPO / "scripts" / "check_ros_requirements.py")
check = importlib.util.module_from_spec(_spec)
sys.modules["check_ros_requirements"] = check  # dataclasses look their module up there
_spec.loader.exec_module(check)

# Every third-party module satsam_ros and its launch file import, and where it comes from
# in a real ROS 2 workspace.
ROSDEP = {  # module -> rosdep key declared in package.xml
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs", "diagnostic_msgs": "diagnostic_msgs", "vision_msgs": "vision_msgs",
    "launch": "launch", "launch_ros": "launch_ros", "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy", "cv2": "python3-opencv", "tqdm": "python3-tqdm",
}
REQUIREMENTS_ROS = {"torch": "torch", "transformers": "transformers", "onnx": "onnx", "timm": "timm"}
OPTIONAL = {"onnxruntime": "onnxruntime"}  # the README's optional line (or onnxruntime-gpu)
NOT_FOR_THE_NODE = {  # module -> why a ROS install does without it
    "tensorrt": "part of JetPack / TensorRT installs, never pip-installed here",
    "rosbags": "`satsam bag` (bag files; development venv)",
    "matplotlib": "`satsam bag eval` plots (development venv)",
    "pycocotools": "`satsam bag` COCO export (development venv)",
    "psutil": "`satsam bench` (development venv)",
    "satsam_training": "the training side package",
}


def _names(reqs):
    return {check._canonical(r.name) for r in reqs}


def test_runtime_file_has_no_ros_wheels_numpy_or_dev_tools():
    required, optional = check.read_requirements(FILE)
    names = _names(required + optional)
    assert {"torch", "transformers", "onnx"} <= names and _names(optional) == {"onnxruntime"}
    assert not [n for n in names if n.startswith("ros-") or n.startswith("colcon")], names
    assert not names & {"numpy", "opencv-python", "opencv-python-headless", "pyyaml", "cv-bridge"}, names
    assert not names & check.DEV_TOOLS, names
    assert not names & {check._canonical(n) for n in NOT_FOR_THE_NODE}, names
    # ranges, not pins
    for req in required + optional:
        assert req.specifier and not any(s.operator in ("==", "===") for s in req.specifier), req
    assert check.policy_problems(required + optional) == []


def test_every_line_of_the_file_is_a_plain_requirement():
    for line in FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            Requirement(line)  # raises on options such as -r, --index-url
    assert not [line for line in FILE.read_text().splitlines() if line.startswith("-")]


@pytest.mark.parametrize("line,words", [
    ("ros-rclpy>=9", ["ROS packages come from the distro"]),
    ("numpy>=1.21", ["python3-numpy"]),
    ("opencv-python-headless>=4", ["python3-opencv"]),
    ("pytest>=8", ["development/test/training tool"]),
    ("colcon-core>=0.15", ["development/test/training tool"]),
    ("torch==2.13.0", ["exact pin"]),
    ("torch", ["give a version range"]),
])
def test_policy_names_what_is_wrong(line, words):
    (problem,) = check.policy_problems([Requirement(line)])
    assert line.split(">")[0].split("=")[0] in problem
    for word in words:
        assert word in problem, problem


def test_read_requirements_refuses_options(tmp_path):
    bad = tmp_path / "r.txt"
    bad.write_text("torch>=2\n-r requirements.txt\n")
    with pytest.raises(ValueError, match="r.txt:2: options are not allowed"):
        check.read_requirements(bad)


def test_markers_are_evaluated_for_the_target_python():
    """pip's --python-version does not apply to markers, so the checker does it."""
    required, _ = check.read_requirements(FILE)
    for py, has_transformers in (("3.8", False), ("3.9", False), ("3.10", True), ("3.12", True)):
        names = {Requirement(s).name for s in check.for_python(required, py)}
        assert ("transformers" in names) == has_transformers, (py, names)
        assert ("timm" in names) == has_transformers, (py, names)  # EdgeTAM's backbones: with transformers
        assert {"torch", "onnx"} <= names
        assert all(Requirement(s).marker is None for s in check.for_python(required, py))


def test_lowest_numpy_that_the_optional_lines_accept():
    assert check.lowest_numpy(["numpy<2.0", "numpy>=1.21.6"], "1.21.5") == "1.21.6"
    assert check.lowest_numpy(["numpy>=1.20"], "1.26.4") == "1.26.4"


def test_targets_hold_humble_and_jazzy_numpy():
    targets = {t.python: t for t in check.TARGETS}
    assert sorted(targets) == ["3.10", "3.11", "3.12", "3.8", "3.9"]
    assert targets["3.10"].numpy == "1.21.5" and targets["3.12"].numpy == "1.26.4"


def _imports():
    found = {}
    for path in sorted((REPO / "satsam_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path.relative_to(REPO))
    return {m: p for m, p in found.items() if m not in sys.stdlib_module_names and m != "satsam_ros"}


def test_every_import_has_a_source_in_a_ros_workspace():
    root = ET.parse(REPO / "package.xml").getroot()
    exec_keys = {e.text for e in root.findall("exec_depend")}
    required, optional = check.read_requirements(FILE)
    unclassified = []
    for module, where in _imports().items():
        if module in ROSDEP:
            assert ROSDEP[module] in exec_keys, f"{module} ({where}): add <exec_depend>{ROSDEP[module]}"
        elif module in REQUIREMENTS_ROS:
            assert REQUIREMENTS_ROS[module] in _names(required), module
        elif module in OPTIONAL:
            assert OPTIONAL[module] in _names(optional), module
        elif module not in NOT_FOR_THE_NODE:
            unclassified.append(f"{module} ({where})")
    assert not unclassified, f"imports with no source in a ROS workspace: {unclassified}"
    # and nothing declared that is not imported
    assert exec_keys == set(ROSDEP.values()), exec_keys ^ set(ROSDEP.values())
    assert {e.text for e in root.findall("test_depend")} == {"cv_bridge", "python3-pytest"}


def test_readme_recipe_is_rosdep_then_the_runtime_file_then_colcon():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## With a real ROS 2 install"):]
    block = section[section.index("```bash"):section.index("```", section.index("```bash") + 7)]
    lines = [line.split("#")[0].strip() for line in block.splitlines()]

    def at(pattern):
        hits = [i for i, line in enumerate(lines) if re.search(pattern, line)]
        assert hits, f"README recipe lacks {pattern!r}"
        return hits[0]

    rosdep = at(r"^rosdep install --from-paths src --ignore-src -y$")
    pip = at(r"pip install .*-r src/satsam_ros/requirements-ros\.txt$")
    build = at(r"^colcon build")
    assert rosdep < pip < build
    (opt,) = check.read_requirements(FILE)[1]
    quoted = re.search(r'"([^"]+)"$', lines[at(r"onnxruntime")]).group(1)
    assert Requirement(quoted) == opt, f"README's optional line {quoted!r} differs from the file's {opt}"
    assert "requirements.txt" not in block.replace("requirements-ros.txt", "")


@pytest.mark.parametrize("dockerfile", ["Dockerfile.desktop", "Dockerfile.jetson"])
def test_dockerfiles_install_the_runtime_file(dockerfile):
    text = (REPO / "docker" / dockerfile).read_text()
    assert re.search(r"COPY [^\n]*requirements-ros\.txt", text)
    assert re.search(r"pip\"? install -r requirements-ros\.txt", text)
    assert "requirements.txt" not in text.replace("requirements-ros.txt", "")
    if dockerfile == "Dockerfile.desktop":
        assert "rosdep install --from-paths /ws/src --ignore-src -y" in text
