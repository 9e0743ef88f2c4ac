"""Build the test-only ROS 2 interface packages of ``test/interfaces/`` (cached).

``vision_msgs`` is not on PyPI, so the node's ``detections`` topic
(vision_msgs/Detection2DArray) is exercised with copies of its message layouts, built
here with colcon, ament_cmake and rosidl_default_generators from the PyPI wheels of
this environment (see ``test/interfaces/wheel_fixes.cmake`` for what the wheels need).

* :func:`cache_key`: hash of a package's sources, the shared CMake fixes, this Python
  and the versions of the ROS wheels that generate and compile the code.
* :func:`build_interface`: colcon build into ``<cache>/<package dir>-<key>/``, or reuse
  that directory when it is complete; a file lock serialises concurrent builders.
* :func:`interface_env`: the environment a process needs to import the built package.

Nothing here is installed with satsam_ros: real workspaces use their distro's packages.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, Optional

INTERFACES = Path(__file__).resolve().parent / "interfaces"
#: CMake snippet every test interface package includes
WHEEL_FIXES = INTERFACES / "wheel_fixes.cmake"
#: written last into a finished install prefix
DONE_MARKER = ".satsam-interface-complete"
#: PyPI distributions whose versions change the generated or compiled code
_TOOL_PREFIXES = ("ros-rosidl-", "ros-ament-cmake", "ros-std-msgs", "ros-geometry-msgs",
                  "ros-builtin-interfaces", "ros-python-cmake-module", "colcon-")


def default_cache_root(repo: Path) -> Path:
    """Where built interface packages are kept between test runs.

    ``$SATSAM_TEST_INTERFACES_DIR`` when set, else ``<repo>/build/test_interfaces``
    (colcon's git-ignored build folder; ``make clean`` removes it).
    """
    chosen = os.environ.get("SATSAM_TEST_INTERFACES_DIR")
    return Path(chosen) if chosen else repo / "build" / "test_interfaces"


def _source_files(package: Path) -> Iterable[Path]:
    return sorted(p for p in package.rglob("*") if p.is_file())


def _tool_versions() -> str:
    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(_TOOL_PREFIXES):
            names.add(f"{name}=={dist.version}")
    return "\n".join(sorted(names))


def cache_key(package: Path) -> str:
    """16 hex digits identifying one build of ``package``.

    Covers every file under the package directory (relative path and bytes), the shared
    ``wheel_fixes.cmake``, this interpreter (version and path) and the installed
    versions of the ROS build wheels and colcon.
    """
    digest = hashlib.sha256()
    named = [(str(p.relative_to(package)), p) for p in _source_files(package)] + [("../wheel_fixes.cmake", WHEEL_FIXES)]
    for name, path in named:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"{sys.version}\n{sys.executable}\n".encode())
    digest.update(_tool_versions().encode())
    return digest.hexdigest()[:16]


def site_packages(prefix: Path) -> Path:
    """``<prefix>/lib/pythonX.Y/site-packages`` of a merged colcon install."""
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _build_env() -> Dict[str, str]:
    """This environment plus the venv prefix on the ament and CMake search paths."""
    env = dict(os.environ)
    for var in ("AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH"):
        env[var] = os.pathsep.join(p for p in (sys.prefix, env.get(var, "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def _colcon_build(package: Path, work: Path, timeout: float) -> Path:
    """Run colcon on ``package`` with everything under ``work``; the install prefix."""
    prefix = work / "install"
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        raise RuntimeError(f"colcon is not installed beside {sys.executable} (pip install colcon-common-extensions)")
    cmd = [
        str(colcon), "--log-base", str(work / "log"), "build",
        "--base-paths", str(package), "--build-base", str(work / "build"),
        "--install-base", str(prefix), "--merge-install",
        "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
        # the generated libraries find each other wherever the prefix lies
        "-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..",
    ]
    out = subprocess.run(cmd, env=_build_env(), capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        logs = sorted((work / "log").rglob("stderr.log"))
        detail = "\n".join(p.read_text(errors="replace")[-3000:] for p in logs) or out.stderr[-3000:]
        raise RuntimeError(f"colcon build of {package} failed (exit {out.returncode}):\n{detail}")
    return prefix


def build_interface(package: Path, cache_root: Path, timeout: float = 900.0) -> Path:
    """The install prefix of ``package`` built with colcon, built now or reused.

    The build goes to ``<cache_root>/<package name>-<cache_key>/``; a prefix that holds
    the completion marker is reused as it is. Concurrent callers (parallel test
    processes) wait on a file lock, so each key is built once. Raises RuntimeError
    with colcon's error output when the build fails.
    """
    package = package.resolve()
    cache_root.mkdir(parents=True, exist_ok=True)
    work = cache_root / f"{package.name}-{cache_key(package)}"
    prefix = work / "install"
    with open(cache_root / f"{package.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (prefix / DONE_MARKER).exists():
            return prefix
        if work.exists():  # an interrupted build: start again
            shutil.rmtree(work)
        start = time.monotonic()
        _colcon_build(package, work, timeout)
        (prefix / DONE_MARKER).write_text(f"built in {time.monotonic() - start:.1f} s\n")
    return prefix


def interface_env(prefix: Path, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``base`` (default os.environ) extended so a process can use the package at ``prefix``.

    PYTHONPATH gets its site-packages, AMENT_PREFIX_PATH the prefix, and
    LD_LIBRARY_PATH its ``lib`` (the rosidl typesupport dispatch opens the package's
    typesupport libraries by name at run time).
    """
    env = dict(os.environ if base is None else base)
    for var, path in (("PYTHONPATH", site_packages(prefix)), ("AMENT_PREFIX_PATH", prefix),
                      ("LD_LIBRARY_PATH", prefix / "lib")):
        env[var] = os.pathsep.join(p for p in (str(path), env.get(var, "")) if p)
    return env
