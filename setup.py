"""ament_python install rules for satsam_ros (also works with plain pip)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "satsam_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["models/builtin/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools", "numpy", "opencv-python-headless"],
    python_requires=">=3.8",
    zip_safe=True,
    maintainer="satsam_ros developers",
    maintainer_email="dev@satsam-ros.invalid",
    description="Patch-tiled SAM satellite detection node for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "detect_node = satsam_ros.ros.main:main",
            "satsam = satsam_ros.tools.cli:main",
        ],
    },
)
