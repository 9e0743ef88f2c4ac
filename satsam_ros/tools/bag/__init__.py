"""Rosbag2 files for evaluation: make them, read them, replay them through the live node."""
