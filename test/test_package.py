"""The ROS 2 package as declared (package.xml) and as installed by `make setup` (install/)."""
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL = REPO_ROOT / 'install'


@pytest.fixture(scope='module')
def install_prefix():
    if not (INSTALL / 'setup.bash').is_file():
        pytest.fail(f'ROS build missing: {INSTALL}/setup.bash does not exist. Run `make setup` in {REPO_ROOT}.')
    return INSTALL


def test_package_xml_declares_an_interface_package():
    root = ET.parse(REPO_ROOT / 'package.xml').getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'superglue_ros'
    assert root.findtext('export/build_type') == 'ament_cmake'
    assert root.findtext('member_of_group') == 'rosidl_interface_packages'
    deps = {element.text for element in root if element.tag.endswith('depend')}
    assert {'rosidl_default_generators', 'rosidl_default_runtime', 'rclpy', 'sensor_msgs', 'std_msgs',
            'std_srvs', 'diagnostic_msgs', 'cv_bridge', 'message_filters', 'launch_ros',
            'lifecycle_msgs'} <= deps


def test_install_has_every_source_module_and_share_file(install_prefix):
    # On a robot install/ is all there is: each module and each launch/config/rviz file must be in it.
    site_packages = next(install_prefix.glob('lib/python3*/site-packages'))
    sources = [p.relative_to(REPO_ROOT) for p in (REPO_ROOT / 'superglue_ros').rglob('*.py')
               if '__pycache__' not in p.parts]
    missing = [str(p) for p in sources if not (site_packages / p).is_file()]
    for folder in ('launch', 'config', 'rviz'):
        for path in (REPO_ROOT / folder).rglob('*'):
            if path.is_file() and not (install_prefix / 'share' / 'superglue_ros' / path.relative_to(REPO_ROOT)).is_file():
                missing.append(str(path.relative_to(REPO_ROOT)))
    assert not missing, f'not installed (stale install/? run `make setup`): {missing}'
    # The installed __init__ must be ours (extend_path), not the empty one rosidl generates.
    assert 'extend_path' in (site_packages / 'superglue_ros' / '__init__.py').read_text()


def test_node_executable_is_installed_for_ros2_run(install_prefix):
    for name in ('superglue_node', 'superglue_lifecycle_node'):  # the plain node and the managed one
        executable = install_prefix / 'lib' / 'superglue_ros' / name
        assert executable.is_file() and os.access(executable, os.X_OK)
        assert 'superglue_ros.node' in executable.read_text()
