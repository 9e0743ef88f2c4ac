"""The ``detect_node`` process: rclpy set up, the node served until it is told to stop.

:func:`main` makes the :class:`~satsam_ros.ros.node.DetectorNode` (a bad parameter ends
start-up with status 2 and a message naming it), brings it to active with
``autostart`` (a model or backend that does not load ends it the same way) or leaves it
unconfigured for a lifecycle manager, and spins until SIGINT, SIGTERM or the
``shutdown`` transition; then the node shuts down from whatever state it is in and the
process exits with status 0.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable, List, Optional

from .node import RCLPY_IMPORT_ERROR, DetectorNode, StartupError

try:
    import rclpy
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy_impl
except ImportError:  # pragma: no cover - main() reports it
    RCLError = RuntimeError
else:
    RCLError = _rclpy_impl.RCLError


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT and SIGTERM set ``stop``; returns a function restoring the old handlers."""
    previous = {}

    def handler(signum, _frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _init_rclpy(args: List[str]) -> None:
    """rclpy.init without rclpy's own signal handlers (ours set the stop event instead)."""
    try:
        from rclpy.signals import SignalHandlerOptions
    except ImportError:  # rclpy older than Humble: its handlers are replaced afterwards
        rclpy.init(args=args)
    else:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


def _spin(node: DetectorNode, stop: threading.Event) -> None:
    """Serve the node (frames, parameters, lifecycle services, diagnostics) until ``stop``."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set():
            try:
                executor.spin_once(timeout_sec=0.1)
            except RCLError as exc:  # Humble: a transition requested from the wrong state
                node.get_logger().error(f"lifecycle request refused: {exc}")
        # a shutdown transition requested by a manager was answered inside spin_once
        node.get_logger().info(f"shutting down from state {node.lifecycle_state()}")
    finally:
        executor.remove_node(node)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``detect_node``: run until shutdown, SIGINT or SIGTERM; the exit status.

    0 after a clean shutdown (from any lifecycle state); 2 when the node cannot start
    (the reason is printed on stderr and names the parameter and its allowed values,
    or, under autostart, the model or backend that failed to load).
    """
    if RCLPY_IMPORT_ERROR is not None:
        print(f"detect_node: rclpy is not importable ({RCLPY_IMPORT_ERROR}); source a ROS 2 "
              "installation or install the ROS 2 Python wheels", file=sys.stderr)
        return 2
    _init_rclpy(sys.argv if argv is None else argv)
    stop = threading.Event()
    restore = _install_signal_handlers(stop)
    node = None
    try:
        try:
            node = DetectorNode(stop)
        except StartupError as exc:
            print(f"detect_node: {exc}", file=sys.stderr)
            return 2
        if node.settings["autostart"]:
            problem = node.start_up()
            if problem:
                print(f"detect_node: {problem}", file=sys.stderr)
                return 2
        else:
            node.get_logger().info(f"unconfigured, waiting for a lifecycle manager: request configure and "
                                   f"activate on {node.get_fully_qualified_name()}/change_state")
        _spin(node, stop)
        return 0
    finally:
        if node is not None:
            node.finish()
            node.destroy_node()
        rclpy.try_shutdown()
        restore()


if __name__ == "__main__":
    sys.exit(main())
