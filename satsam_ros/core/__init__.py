"""The pure core: one frame in, mask + probability + boxes out.

numpy and OpenCV only: no rclpy, and torch is never imported at module level, so the
core is importable and testable anywhere (the ROS shell, the tools and the training
package build on it; it builds on nothing of theirs).
"""
