# superglue_ros: one command each on a fresh machine.
#   make setup       venv (.venv: core deps, test tools, ROS 2 Jazzy wheels, colcon) + colcon build into install/
#   make test        pytest over $(TESTS) (default test/) in the ROS environment (depends on setup)
#   make demo        python -m superglue_ros.demo $(DEMO_ARGS)
#   make benchmark   every benchmarks/*.py, $(BENCHMARK_ARGS) passed to each
#   make clean       remove build/ install/ log/ (make distclean also removes the venv)
# A shell with everything: . .venv/bin/activate && . install/setup.bash
SHELL := /bin/bash
.DEFAULT_GOAL := setup

VENV ?= .venv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
TESTS ?= test
TEST_TIMEOUT ?= 300
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCHMARK_ARGS ?=

# Each `make test` / `make demo` run gets its own DDS domain, and discovery stays on this host, so
# parallel runs (other engineers, CI) never see each other's topics. Set ROS_DOMAIN_ID to override.
ROS_DOMAIN_ID ?= $(shell echo $$(( $$$$ % 100 + 1 )))
ROS_ENV = . $(VENV)/bin/activate && . install/setup.bash && \
	export ROS_DOMAIN_ID=$(ROS_DOMAIN_ID) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST &&

VENV_STAMP := $(VENV)/.superglue_ros-setup
BUILD_STAMP := install/.superglue_ros-build
# Everything the colcon build installs: a change to any of these rebuilds install/, nothing else does.
BUILD_INPUTS := CMakeLists.txt package.xml scripts/build_ros.sh scripts/superglue_node \
	$(wildcard msg/*.msg srv/*.srv) \
	$(shell find superglue_ros launch config rviz -type f -not -path '*/__pycache__/*' -not -name '*.pyc' 2>/dev/null)

.PHONY: setup test demo benchmark clean distclean
setup: $(BUILD_STAMP)

$(VENV_STAMP): requirements-dev.txt requirements-ros.txt scripts/setup_venv.sh scripts/patch_ros_wheels.py
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/setup_venv.sh
	touch $@

$(BUILD_STAMP): $(VENV_STAMP) $(BUILD_INPUTS)
	VENV=$(VENV) bash scripts/build_ros.sh
	touch $@

test: setup
	$(ROS_ENV) python -m pytest $(TESTS) --timeout=$(TEST_TIMEOUT) $(PYTEST_ARGS)

demo: setup
	$(ROS_ENV) python -m superglue_ros.demo $(DEMO_ARGS)

benchmark: setup
	@scripts=(benchmarks/*.py); [ -e "$${scripts[0]}" ] || { echo "no benchmarks/*.py" >&2; exit 1; }; \
	$(ROS_ENV) for script in "$${scripts[@]}"; do \
		echo "== $$script"; python "$$script" $(BENCHMARK_ARGS) || exit 1; \
	done

clean:
	rm -rf build install log

distclean: clean
	rm -rf $(VENV)
