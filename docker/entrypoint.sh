#!/bin/bash
# Entrypoint of the satsam_ros images: source ROS 2 and the colcon workspace, then run
# the command (default: ros2 launch satsam_ros detect.launch.py, see the Dockerfiles).
set -eo pipefail

if [ -z "${ROS_DISTRO:-}" ] || [ ! -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]; then
    echo "satsam entrypoint: ROS_DISTRO='${ROS_DISTRO:-}' has no /opt/ros/<distro>/setup.bash" >&2
    exit 2
fi
# ROS setup scripts read unset variables; source them without -u.
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck disable=SC1091
source /ws/install/setup.bash

# Engines and ONNX exports made at start-up are kept in the cache volume.
export SATSAM_CACHE_DIR="${SATSAM_CACHE_DIR:-/cache}"
mkdir -p "${SATSAM_CACHE_DIR}"

exec "$@"
