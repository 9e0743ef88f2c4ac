"""Packaging: colcon install layout, no rclpy in the core, Python 3.8 floor."""

import subprocess
import sys
import xml.etree.ElementTree as ET

from conftest import REPO, install_prefix

CORE = [
    "satsam_ros.core.imaging",
    "satsam_ros.core.tiling",
    "satsam_ros.core.postprocess",
    "satsam_ros.model",
    "satsam_ros.backends",
    "satsam_ros.backends.torch_backend",
    "satsam_ros.core.detector",
    "satsam_ros.tools.cli",
]


def test_core_imports_no_rclpy():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'sensor_msgs', 'launch')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_colcon_install_layout():
    prefix = install_prefix()
    for rel in ("lib/satsam_ros/detect_node", "lib/satsam_ros/satsam",
                "share/satsam_ros/launch/detect.launch.py", "share/satsam_ros/config/detect.yaml",
                "share/satsam_ros/package.xml", "share/ament_index/resource_index/packages/satsam_ros"):
        assert (prefix / rel).exists(), rel


def test_package_manifest():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "satsam_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "vision_msgs"} <= deps


def test_runtime_supports_python_38():
    vermin = REPO / ".venv" / "bin" / "vermin"
    exe = str(vermin) if vermin.exists() else "vermin"
    out = subprocess.run([exe, "--target=3.8-", "--violations", "--no-tips", "--eval-annotations",
                          "--backport", "dataclasses", str(REPO / "satsam_ros")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
