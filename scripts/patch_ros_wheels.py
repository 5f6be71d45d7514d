"""Point the CMake files of the ROS 2 PyPI wheels at this Python's include directories.

The message wheels (std_msgs, sensor_msgs, ...) are built in a manylinux container, and their exported
CMake targets `<pkg>::<pkg>__rosidl_generator_py` keep that container's paths:
    /opt/python/cp311-cp311/include/python3.11
    /opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
CMake refuses imported targets whose include directories do not exist, so a package that generates
its own messages against them fails to configure. This rewrites those two paths to the running
interpreter's Python headers and numpy headers. Idempotent: a second run finds nothing to change.

    python scripts/patch_ros_wheels.py [PREFIX]     # PREFIX: the venv (default sys.prefix)
"""
import re
import sys
import sysconfig
from pathlib import Path

import numpy

BUILDER_PYTHON_INCLUDE = re.compile(r'/opt/python/cp3\d+-cp3\d+/include/python3\.\d+')
BUILDER_NUMPY_INCLUDE = re.compile(
    r'/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_)?core/include')


def main() -> int:
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    python_include = sysconfig.get_paths()['include']
    numpy_include = numpy.get_include()
    for path in (python_include, numpy_include):
        if not Path(path).is_dir():
            sys.exit(f'patch_ros_wheels: include directory {path} does not exist; '
                     'install the Python development headers (python3-dev) or reinstall numpy')

    changed = 0
    for cmake_file in sorted(prefix.glob('share/*/cmake/*.cmake')):
        text = cmake_file.read_text()
        if '/opt/python/' not in text:
            continue
        new = BUILDER_NUMPY_INCLUDE.sub(numpy_include, text)
        new = BUILDER_PYTHON_INCLUDE.sub(python_include, new)
        if new != text:
            cmake_file.write_text(new)
            changed += 1
        leftover = re.search(r'"[^"]*/opt/python/[^"]*"', new)
        if leftover:
            sys.exit(f'patch_ros_wheels: {cmake_file} still names the wheel builder path '
                     f'{leftover.group(0)}; extend the patterns in {__file__}')
    print(f'patch_ros_wheels: {changed} CMake file(s) now use {python_include} and {numpy_include}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
