"""Start the satsam detector: ``ros2 launch satsam_ros detect.launch.py size:=1024 image:=/my/camera``.

Thin on purpose: it declares arguments and hands them to the node as typed
parameters (after ``params_file``, so the arguments win); the node validates every
value itself and exits non-zero naming a bad one. No eval, no network, nothing
installed at launch.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "satsam_ros"


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "detect.yaml")
    args = [
        DeclareLaunchArgument("size", default_value="512", choices=["512", "1024", "2048"],
                              description="Frames are resized to size x size before tiling."),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Input sensor_msgs/Image topic (remapped to the node's 'image')."),
        DeclareLaunchArgument("model", default_value="builtin",
                              description="builtin (the shipped model), tiny (random weights, tests only), vit-b, "
                                          "a checkpoint directory or a hub id."),
        DeclareLaunchArgument("backend", default_value="auto",
                              choices=["auto", "torch", "onnxruntime", "tensorrt"],
                              description="Inference engine."),
        DeclareLaunchArgument("device", default_value="auto", choices=["auto", "cpu", "cuda"],
                              description="Where the model runs."),
        DeclareLaunchArgument("threshold", default_value="-1.0",
                              description="Mask threshold in [0, 1]; -1 takes the checkpoint's tuned value."),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML with the other node parameters (launch arguments win)."),
        DeclareLaunchArgument("namespace", default_value="satsam",
                              description="Namespace of the node and its topics."),
    ]
    node = Node(
        package=PACKAGE,
        executable="detect_node",
        name="satsam_detector",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        remappings=[("image", LaunchConfiguration("image"))],
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "size": ParameterValue(LaunchConfiguration("size"), value_type=int),
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "threshold": ParameterValue(LaunchConfiguration("threshold"), value_type=float),
            },
        ],
    )
    return LaunchDescription(args + [node])
