"""The ROS 2 shell around the core: the node, its parameter table, message conversion."""
