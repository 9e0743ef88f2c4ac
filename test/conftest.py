"""Shared test setup: DDS kept on loopback with a per-run domain id, and paths.

Every test process (and every node it starts, which inherits os.environ) talks DDS
only on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (Iron and newer) and
ROS_LOCALHOST_ONLY=1 (older distros), on a domain id drawn for this run.
"""

import atexit
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# A domain of our own for this run (1..101; 0 is ROS' default, left to real systems).
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 101))
# ONNX/TensorRT exports made by tests (and by nodes they start) go to a per-run cache,
# never into the user's ~/.cache.
if "SATSAM_CACHE_DIR" not in os.environ:
    os.environ["SATSAM_CACHE_DIR"] = tempfile.mkdtemp(prefix="satsam-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SATSAM_CACHE_DIR"], ignore_errors=True)


def install_prefix() -> Path:
    """The colcon install prefix of satsam_ros (isolated or merged layout)."""
    for candidate in (REPO / "install" / "satsam_ros", REPO / "install"):
        if (candidate / "lib" / "satsam_ros" / "detect_node").exists():
            return candidate
    raise FileNotFoundError("satsam_ros is not built: run `make build` (colcon build) first")


def node_env() -> dict:
    """Environment for a node process started as colcon installed it."""
    env = dict(os.environ)
    prefix = install_prefix()
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(REPO), env.get("PYTHONPATH", "")) if p)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def installed_node():
    """Path of the colcon-installed detect_node executable."""
    return install_prefix() / "lib" / "satsam_ros" / "detect_node"
