"""The detect_node process a bag evaluation replays into: found, started, stopped.

The node runs as colcon installed it, in a process of its own, with DDS on loopback and
a ROS_DOMAIN_ID of its own; its output goes to a log file.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Dict, Optional

from .io import BagError

LOOPBACK_ENV = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_LOCALHOST_ONLY": "1"}
MAX_DOMAIN_ID = 101


def find_node_executable(explicit: Optional[str] = None) -> Path:
    """The colcon-installed ``detect_node``: ``explicit``, else ``lib/satsam_ros/detect_node``
    under each AMENT_PREFIX_PATH entry, else under this source tree's ``install/``.
    BagError listing the places searched when none exists."""
    if explicit:
        path = Path(explicit).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BagError(f"--node-exe {path}: not an executable file")
        return path
    candidates = [Path(p) / "lib" / "satsam_ros" / "detect_node"
                  for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    repo = Path(__file__).resolve().parents[3]
    candidates += [repo / "install" / "satsam_ros" / "lib" / "satsam_ros" / "detect_node",
                   repo / "install" / "lib" / "satsam_ros" / "detect_node"]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    searched = "\n".join(f"  {p}" for p in candidates)
    raise BagError("the detect_node executable was not found; build it (make build, or colcon build) and "
                   "source install/setup.bash, pass --node-exe PATH, or start the node yourself and use "
                   f"--attach. Searched:\n{searched}")


def fresh_domain_id(rng: Optional[random.Random] = None) -> int:
    """A random ROS_DOMAIN_ID in 1..101 other than the current one (0 is left to real systems)."""
    rng = rng or random.SystemRandom()
    current = os.environ.get("ROS_DOMAIN_ID", "")
    return rng.choice([d for d in range(1, MAX_DOMAIN_ID + 1) if str(d) != current])


def node_environment(exe: Path, domain_id: int) -> Dict[str, str]:
    """Environment for a launched node: DDS on loopback, ``domain_id``, the install
    prefix of ``exe`` on AMENT_PREFIX_PATH/PYTHONPATH, this source tree on PYTHONPATH."""
    env = dict(os.environ)
    env.update(LOOPBACK_ENV)
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["PYTHONUNBUFFERED"] = "1"
    exe = Path(os.path.abspath(str(exe)))  # not resolved: a symlink-install script may point into build/
    prefix = exe.parents[2] if len(exe.parents) > 2 else exe.parent
    python_paths = [str(p) for p in sorted((prefix / "lib").glob("python*/site-packages"))]
    python_paths.append(str(Path(__file__).resolve().parents[3]))
    env["PYTHONPATH"] = os.pathsep.join(p for p in python_paths + [env.get("PYTHONPATH", "")] if p)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (str(prefix), env.get("AMENT_PREFIX_PATH", "")) if p)
    return env


class NodeLauncher:
    """``detect_node`` in a process of its own; stdout and stderr go to ``log_path``.

    The node runs in ``namespace`` with its ``image`` input remapped to
    ``input_topic`` and ``params`` as ``-p name:=value``.
    """

    def __init__(self, exe: Path, namespace: str, input_topic: str, params: Dict[str, str], env: Dict[str, str],
                 log_path: Path):
        self.args = [str(exe), "--ros-args", "-r", f"__ns:={namespace}", "-r", f"image:={input_topic}"]
        for name, value in params.items():
            self.args += ["-p", f"{name}:={value}"]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        """SIGINT and wait (SIGKILL after ``timeout``); the exit status."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
            return self.proc.returncode
        finally:
            self._log.close()
