#!/usr/bin/env bash
# Build the ROS 2 package (messages, service, Python package, node executable) with colcon into
# install/, against ROS 2 Jazzy in the venv made by scripts/setup_venv.sh. Incremental: a second run
# with nothing changed only re-checks.
#
#   scripts/build_ros.sh             # then: . .venv/bin/activate && . install/setup.bash
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${VENV:-.venv}"
if [ ! -f "$VENV/local_setup.sh" ]; then
  echo "build_ros: $VENV is not set up; run scripts/setup_venv.sh (or make setup) first" >&2
  exit 1
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# Only the venv as underlay (it has a local_setup file, so install/setup.bash will source it), whatever
# the calling shell had sourced before.
unset AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH
# shellcheck disable=SC1091
. "$VENV/local_setup.sh"

# --paths .: only this package; a recursive crawl would also find the package.xml files in the venv.
colcon build \
  --merge-install \
  --paths . \
  --cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" -DBUILD_TESTING=OFF
