"""The ROS 2 node (filled in by the node issue)."""

import sys


def main(argv=None) -> int:
    print("detect_node: the ROS 2 node is not implemented yet", file=sys.stderr)
    return 1
