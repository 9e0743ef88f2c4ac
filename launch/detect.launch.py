"""Start the satsam detector: ``ros2 launch satsam_ros detect.launch.py size:=1024 image:=/my/camera``.

``image_transport:=compressed`` reads ``<image>/compressed`` (JPEG / PNG); ``cascade:=0``
runs the full patch grid at size 1024 / 2048 (-1: the checkpoint's coarse-to-fine setting);
``autostart:=false`` leaves the lifecycle node unconfigured for a lifecycle manager.

Thin on purpose: it declares arguments and hands them to the node as typed
parameters (after ``params_file``, so the arguments win); the node validates every
value itself and exits non-zero naming a bad one. Defaults, allowed values and
descriptions come from the node's own parameter table (satsam_ros.ros.params), so
they cannot drift apart. No eval, no network, nothing installed at launch.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from satsam_ros.ros.params import NODE_NAME, PARAM_SPECS

PACKAGE = "satsam_ros"
#: node parameters that are also launch arguments (the launch argument wins over params_file)
PARAMETER_ARGUMENTS = ("size", "model", "backend", "device", "threshold", "cascade", "cascade_max_patches",
                       "image_transport", "autostart")


def launch_value(value) -> str:
    """A parameter default as a launch argument's text (booleans as ROS writes them)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def parameter_argument(name: str) -> DeclareLaunchArgument:
    """A launch argument for node parameter ``name``: its default, choices and description."""
    spec = PARAM_SPECS[name]
    choices = [str(c) for c in spec.choices] or (["true", "false"] if isinstance(spec.default, bool) else None)
    return DeclareLaunchArgument(name, default_value=launch_value(spec.default), choices=choices,
                                 description=spec.description)


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "detect.yaml")
    args = [parameter_argument(name) for name in PARAMETER_ARGUMENTS] + [
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Input image topic, remapped to the node's 'image' (with "
                                          "image_transport:=compressed the node reads '<image>/compressed')."),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML with the other node parameters (launch arguments win)."),
        DeclareLaunchArgument("namespace", default_value="satsam",
                              description="Namespace of the node and its topics."),
    ]
    overrides = {name: ParameterValue(LaunchConfiguration(name), value_type=type(PARAM_SPECS[name].default))
                 for name in PARAMETER_ARGUMENTS}
    node = Node(
        package=PACKAGE,
        executable="detect_node",
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        remappings=[("image", LaunchConfiguration("image"))],
        parameters=[LaunchConfiguration("params_file"), overrides],
    )
    return LaunchDescription(args + [node])
