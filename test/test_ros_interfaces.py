"""The cached build of the test-only interface packages, and that it stays test-only."""

from __future__ import annotations

import shutil
import subprocess
import time

from conftest import REPO, install_prefix
from ros_interfaces import DONE_MARKER, INTERFACES, build_interface, cache_key, interface_env, site_packages

PACKAGES = ("vision_msgs_2", "vision_msgs_3", "vision_msgs_4")


def test_cache_key_follows_the_sources(tmp_path):
    pkg = tmp_path / "vision_msgs_4"
    shutil.copytree(INTERFACES / "vision_msgs_4", pkg)
    key = cache_key(pkg)
    assert len(key) == 16 and key == cache_key(INTERFACES / "vision_msgs_4")  # content, not location
    (pkg / "msg" / "Point2D.msg").write_text("float64 x\nfloat64 y\nfloat64 z\n")
    assert cache_key(pkg) != key
    assert len({cache_key(INTERFACES / name) for name in PACKAGES}) == len(PACKAGES)


def test_a_completed_build_is_reused_without_running_colcon(tmp_path):
    pkg = INTERFACES / "vision_msgs_4"
    prefix = tmp_path / f"vision_msgs_4-{cache_key(pkg)}" / "install"
    prefix.mkdir(parents=True)
    (prefix / DONE_MARKER).write_text("built\n")
    start = time.monotonic()
    assert build_interface(pkg, tmp_path) == prefix
    assert time.monotonic() - start < 5.0
    assert not (prefix.parent / "log").exists(), "colcon ran"


def test_interface_env_puts_the_prefix_first(tmp_path):
    env = interface_env(tmp_path, {"PYTHONPATH": "/a", "LD_LIBRARY_PATH": "/b"})
    assert env["PYTHONPATH"].split(":") == [str(site_packages(tmp_path)), "/a"]
    assert env["LD_LIBRARY_PATH"].split(":") == [str(tmp_path / "lib"), "/b"]
    assert env["AMENT_PREFIX_PATH"] == str(tmp_path)


def _colcon_names(base: str) -> list:
    colcon = REPO / ".venv" / "bin" / "colcon"
    out = subprocess.run([str(colcon) if colcon.exists() else "colcon", "list", "--names-only", "--base-paths", base],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_a_workspace_never_sees_the_test_packages():
    """A clone in a workspace's src/ must not shadow the distro's vision_msgs.

    colcon and rosdep (catkin_pkg) find satsam_ros only: they stop at the package root,
    and test/interfaces carries COLCON_IGNORE for any crawl that starts below it.
    """
    from catkin_pkg.packages import find_packages

    assert sorted(p.name for p in find_packages(str(REPO)).values()) == ["satsam_ros"]
    assert _colcon_names(str(REPO)) == ["satsam_ros"]
    for below in (REPO / "test", INTERFACES):
        assert find_packages(str(below)) == {}, below
        assert _colcon_names(str(below)) == [], below
    # and colcon's install of satsam_ros holds no vision_msgs
    assert not [p for p in install_prefix().rglob("*vision_msgs*")]
