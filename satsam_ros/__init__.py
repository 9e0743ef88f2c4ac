"""satsam_ros: patch-tiled SAM satellite detection for ROS 2."""

__version__ = "0.1.0"
