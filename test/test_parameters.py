"""The node's parameter table (superglue_ros/ros/parameters.py) with real rclpy nodes, and the files
that use it: config/*.yaml, launch/superglue.launch.py, rviz/superglue.rviz."""
import ast
import py_compile
from pathlib import Path

import pytest
import rclpy
import yaml
from rcl_interfaces.msg import ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

from ros_helpers import isolate_ros_network
from superglue_ros.ros import parameters
from superglue_ros.ros.parameters import PARAMETERS, ParameterError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / 'config').glob('*.yaml'))
LAUNCH_FILE = REPO_ROOT / 'launch' / 'superglue.launch.py'
RESTART_NEEDED = {'superglue_weights', 'superpoint_weights', 'device', 'precision', 'resize'}


@pytest.fixture(scope='module')
def context():
    isolate_ros_network()
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def declared(context, *overrides, params_file=None):
    """parameters.declare() on a bare node named like the real one, with command-line style overrides."""
    args = ['--ros-args'] + [a for o in overrides for a in ('-p', o)]
    if params_file:
        args += ['--params-file', str(params_file)]
    node = Node('superglue', context=context, cli_args=args)
    try:
        return parameters.declare(node), node.describe_parameters(list(PARAMETERS))
    finally:
        node.destroy_node()


def test_defaults_are_accepted_and_described(context):
    values, descriptors = declared(context)
    assert values == {name: spec.default for name, spec in PARAMETERS.items()}
    for descriptor in descriptors:
        spec = PARAMETERS[descriptor.name]
        assert len(descriptor.description) > 20 and spec.accepted in descriptor.additional_constraints
        assert descriptor.read_only == (descriptor.name in RESTART_NEEDED)
        if descriptor.type == ParameterType.PARAMETER_INTEGER:
            assert descriptor.integer_range[0].from_value <= spec.default <= descriptor.integer_range[0].to_value
        if descriptor.type == ParameterType.PARAMETER_DOUBLE:
            rng = descriptor.floating_point_range[0]
            assert rng.from_value <= spec.default <= rng.to_value


@pytest.mark.parametrize('override, named, says', [
    ('match_threshold:=1.5', 'match_threshold', 'out of range'),       # outside the descriptor range
    ('match_threshold:=1.0', 'match_threshold', '[0, 1)'),             # in range, refused by the matcher
    ('max_keypoints:=0', 'max_keypoints', '-1 for all'),
    ('keyframe_max_age_s:=5', 'keyframe_max_age_s', "expecting type 'DOUBLE'"),  # an integer for a float
    ('nms_radius:=abc', 'nms_radius', "expecting type 'INTEGER'"),
    ('device:=gpu', 'device', "'auto', 'cuda'"),
    ('precision:=fp8', 'precision', "'fp16'"),
    ('resize:=[10,10]', 'resize', '>= 16'),
    ('resize:=[640]', 'resize', '[width, height]'),
    ('geometric_verification:=affine', 'geometric_verification', "'fundamental'"),
    ('ransac_threshold_px:=0.0', 'ransac_threshold_px', 'out of range'),
])
def test_bad_start_values_name_the_parameter_and_what_it_accepts(context, override, named, says):
    with pytest.raises(ParameterError) as error:
        declared(context, override)
    message = str(error.value)
    assert f"parameter '{named}'" in message and says in message
    assert PARAMETERS[named].accepted in message


@pytest.mark.parametrize('override, expected', [('resize:=[]', None), ('resize:=[0,0]', None),
                                                ('resize:=[320,240]', (320, 240))])
def test_resize_forms(context, override, expected):
    values, _ = declared(context, override)
    assert parameters.resize_setting(values['resize']) == expected


def test_problem_and_the_frontend_objects():
    assert parameters.problem('keypoint_threshold', 0.01) is None
    assert 'keypoint_threshold' in parameters.problem('keypoint_threshold', 0.0)   # the matcher wants (0, 1)
    assert parameters.problem('keyframe_min_matches', -1) is not None
    policy = parameters.keyframe_policy({'keyframe_min_matches': 7, 'keyframe_max_age_s': 2.0})
    assert (policy.min_matches, policy.max_age_s) == (7, 2.0)
    assert parameters.keyframe_policy({'keyframe_min_match_ratio': 0.5}, policy).min_matches == 7  # others kept
    check = parameters.verification({'geometric_verification': 'homography', 'ransac_threshold_px': 2.0})
    assert (check.method, check.threshold_px) == ('homography', 2.0)
    assert parameters.model_settings({'match_threshold': 0.3, 'keyframe_min_matches': 3}) == {'match_threshold': 0.3}


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_presets_use_declared_parameters_with_accepted_values(context, path):
    content = yaml.safe_load(path.read_text())
    assert list(content) == ['/**'], 'presets apply to the node under any name and namespace'
    preset = content['/**']['ros__parameters']
    unknown = set(preset) - set(PARAMETERS)
    assert not unknown, f'{path.name} sets parameters the node does not declare: {sorted(unknown)}'
    # loaded by rclpy exactly as the node does: types and values accepted
    values, _ = declared(context, params_file=path)
    for name, value in preset.items():
        assert values[name] == value, name


def test_config_presets_exist_for_both_weights():
    names = {path.stem for path in CONFIGS}
    assert names == {'indoor', 'outdoor'}
    for path in CONFIGS:
        assert yaml.safe_load(path.read_text())['/**']['ros__parameters']['superglue_weights'] == path.stem


def test_launch_file_compiles_and_declares_its_arguments(tmp_path):
    # launch / launch_ros are not on PyPI: the file is compiled, not run (no .pyc left next to it)
    py_compile.compile(str(LAUNCH_FILE), cfile=str(tmp_path / 'launch.pyc'), doraise=True)
    tree = ast.parse(LAUNCH_FILE.read_text())
    arguments = next(node.value for node in tree.body
                     if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'ARGUMENTS')
    names = {key.value for key in arguments.keys}
    assert names == {'image', 'camera_info', 'config', 'superpoint_weights', 'superglue_weights', 'device',
                     'namespace', 'rviz'}
    overrides = {'superpoint_weights', 'superglue_weights', 'device'}
    assert overrides <= set(PARAMETERS)  # passed to the node under their own names


def test_rviz_shows_the_match_image():
    config = yaml.safe_load((REPO_ROOT / 'rviz' / 'superglue.rviz').read_text())
    displays = config['Visualization Manager']['Displays']
    images = [d for d in displays if d['Class'] == 'rviz_default_plugins/Image']
    assert [d['Topic']['Value'] for d in images] == ['/superglue/match_image']
    # a Reliable subscription: the node publishes ~/match_image reliably, so both match
    assert images[0]['Topic']['Reliability Policy'] == 'Reliable'


def test_declare_refuses_a_read_only_change(context):
    node = Node('superglue', context=context)
    try:
        parameters.declare(node)
        result = node.set_parameters([Parameter('device', value='cpu')])[0]
        assert not result.successful and 'read-only' in result.reason
    finally:
        node.destroy_node()
