"""The node's parameters (superglue_ros/ros/parameters.py, derived from settings.py) with real rclpy nodes,
and the files that use them: config/*.yaml, launch/superglue.launch.py, rviz/superglue.rviz."""
import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter

from superglue_ros.ros import parameters
from superglue_ros.ros.parameters import ParameterError
from superglue_ros.settings import SETTINGS, resize_of

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO_ROOT / 'config').glob('*.yaml'))
LAUNCH_FILE = REPO_ROOT / 'launch' / 'superglue.launch.py'


def declared(context, *overrides, params_file=None):
    """parameters.declare() on a bare node named like the real one, with command-line style overrides."""
    args = ['--ros-args'] + [a for o in overrides for a in ('-p', o)]
    if params_file:
        args += ['--params-file', str(params_file)]
    node = Node('superglue', context=context, cli_args=args)
    try:
        return parameters.declare(node), node.describe_parameters(list(SETTINGS))
    finally:
        node.destroy_node()


@pytest.mark.parametrize('override, named, says', [
    ('match_threshold:=1.5', 'match_threshold', '[0, 1)'),
    ('max_keypoints:=0', 'max_keypoints', '-1 for all'),
    ('keyframe_max_age_s:=5', None, None),         # an integer for seconds: accepted as 5.0
    ('nms_radius:=abc', 'nms_radius', 'an integer in [0, 64]'),
    ('device:=gpu', 'device', "'auto', 'cpu'"),
    ('precision:=fp8', 'precision', "'fp16'"),
    ('resize:=[10,10]', 'resize', '[16, 8192]'),
    ('resize:=[100000,100000]', 'resize', '[16, 8192]'),
    ('cameras:=[]', 'cameras', 'non-empty list'),
    ('resize:=[640]', 'resize', '[width, height]'),
    ('geometric_verification:=affine', 'geometric_verification', "'essential'"),
    ('ransac_threshold_px:=0.0', 'ransac_threshold_px', '> 0'),
    ("cameras:=['left','left']", 'cameras', 'unique'),
    ('image_transport:=theora', 'image_transport', "'compressed'"),
])
def test_bad_start_values_name_the_parameter_and_what_it_accepts(context, override, named, says):
    if named is None:
        values, _ = declared(context, override)
        assert values['keyframe_max_age_s'] == 5.0 and isinstance(values['keyframe_max_age_s'], float)
        return
    with pytest.raises(ParameterError) as error:
        declared(context, override)
    message = str(error.value)
    assert message.startswith(f'{named} must be ') and says in message
    assert SETTINGS[named].accepted in message
    if override == 'cameras:=[]':
        assert message.endswith('got None (an empty list [] is read as no value)')


def test_unknown_parameters_are_named_with_the_closest_declared_one(context, tmp_path):
    """rclpy ignores parameters a node never declares; the node warns of each (the names it gets here)."""
    params_file = tmp_path / 'typo.yaml'
    params_file.write_text("/**:\n  ros__parameters:\n    max_keypoint: 100\n    match_threshold: 0.3\n")
    args = ['--ros-args', '-p', 'zzz:=1', '-p', 'qos_overrides./image.subscription.depth:=3',
            '--params-file', str(params_file)]
    node = Node('superglue', context=context, cli_args=args)
    try:
        parameters.declare(node)
        assert parameters.unknown_overrides(node) == {'max_keypoint': ['max_keypoints'], 'zzz': []}
    finally:
        node.destroy_node()


@pytest.mark.parametrize('override, expected', [('resize:=[]', None), ('resize:=[0,0]', None),
                                                ('resize:=[320,240]', (320, 240))])
def test_resize_forms(context, override, expected):
    values, _ = declared(context, override)
    assert resize_of(values['resize']) == expected


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_presets_use_declared_parameters_with_accepted_values(context, path):
    content = yaml.safe_load(path.read_text())
    assert list(content) == ['/**'], 'presets apply to the node under any name and namespace'
    preset = content['/**']['ros__parameters']
    unknown = set(preset) - set(SETTINGS)
    assert not unknown, f'{path.name} sets parameters the node does not declare: {sorted(unknown)}'
    # loaded by rclpy exactly as the node does: types and values accepted
    values, _ = declared(context, params_file=path)
    for name, value in preset.items():
        assert values[name] == value, name


def test_config_presets_exist():
    names = {path.stem for path in CONFIGS}
    assert {'indoor', 'outdoor', 'stereo', 'cpu'} <= names
    for weights in ('indoor', 'outdoor'):
        assert yaml.safe_load((REPO_ROOT / 'config' / f'{weights}.yaml').read_text())[
            '/**']['ros__parameters']['superglue_weights'] == weights
    stereo = yaml.safe_load((REPO_ROOT / 'config' / 'stereo.yaml').read_text())['/**']['ros__parameters']
    assert stereo['cameras'] == ['left', 'right'] and stereo['stereo_pairs'] == ['left:right']


class FakeLaunch:
    """launch / launch_ros are not on PyPI: these stand-ins record what the launch file builds, so that
    its logic (config, overrides, remappings, rviz) runs here. ros2 launch itself is verified on a robot."""

    def __init__(self, share: Path):
        self.share = share

    def modules(self) -> dict:
        fake = self

        class LaunchConfiguration:
            def __init__(self, name):
                self.name = name

            def perform(self, context):
                return context[self.name]

        class FindPackageShare:
            def __init__(self, package):
                assert package == 'superglue_ros'

            def perform(self, context):
                return str(fake.share)

        def record(kind):
            return lambda *args, **kwargs: (kind, args, kwargs)

        launch = types.ModuleType('launch')
        launch.LaunchDescription = lambda actions: actions
        actions = types.ModuleType('launch.actions')
        actions.DeclareLaunchArgument, actions.OpaqueFunction = record('argument'), record('opaque')
        substitutions = types.ModuleType('launch.substitutions')
        substitutions.LaunchConfiguration = LaunchConfiguration
        launch_ros = types.ModuleType('launch_ros')
        ros_actions = types.ModuleType('launch_ros.actions')
        ros_actions.Node = lambda **kwargs: kwargs
        ros_actions.LifecycleNode = lambda **kwargs: {**kwargs, 'lifecycle_node': True}
        ros_substitutions = types.ModuleType('launch_ros.substitutions')
        ros_substitutions.FindPackageShare = FindPackageShare
        return {'launch': launch, 'launch.actions': actions, 'launch.substitutions': substitutions,
                'launch_ros': launch_ros, 'launch_ros.actions': ros_actions,
                'launch_ros.substitutions': ros_substitutions}

    def nodes(self, monkeypatch, **arguments) -> list[dict]:
        for name, module in self.modules().items():
            monkeypatch.setitem(sys.modules, name, module)
        spec = importlib.util.spec_from_file_location('superglue_launch', LAUNCH_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        declared = {kwargs.get('name', args[0] if args else None): kwargs['default_value']
                    for kind, args, kwargs in description if kind == 'argument'}
        context = {**declared, **arguments}
        opaque, = [kwargs['function'] for kind, _, kwargs in description if kind == 'opaque']
        return opaque(context)


@pytest.fixture
def fake_launch():
    return FakeLaunch(REPO_ROOT)


def test_launch_one_camera(fake_launch, monkeypatch):
    node, = fake_launch.nodes(monkeypatch, image='/camera/image_raw', camera_info='/camera/camera_info',
                              device='cpu')
    assert node['executable'] == 'superglue_node' and node['name'] == 'superglue' and 'lifecycle_node' not in node
    config, overrides = node['parameters']
    assert config == str(REPO_ROOT / 'config' / 'indoor.yaml') and overrides == {'device': 'cpu'}
    assert node['remappings'] == [('image', '/camera/image_raw'), ('camera_info', '/camera/camera_info')]
    assert set(overrides) <= set(SETTINGS)  # passed to the node under their own names


def test_launch_stereo_preset_and_cameras_argument(fake_launch, monkeypatch):
    node, = fake_launch.nodes(monkeypatch, config='stereo', namespace='stereo', image='image_raw')
    assert node['namespace'] == 'stereo' and node['parameters'][1] == {}
    assert ('left/image', 'left/image_raw') in node['remappings']
    assert ('right/camera_info', 'right/camera_info') in node['remappings']
    node, rviz = fake_launch.nodes(monkeypatch, cameras='front, back', rviz='true')
    assert node['parameters'][1] == {'cameras': ['front', 'back']}
    assert [r[0] for r in node['remappings']] == ['front/image', 'front/camera_info', 'back/image', 'back/camera_info']
    assert rviz['remappings'] == [('/superglue/match_image', '/superglue/front/match_image')]
    with pytest.raises(RuntimeError, match='absolute topic.*image:=image_raw'):
        fake_launch.nodes(monkeypatch, config='stereo', image='/camera/image_raw')


def test_launch_lifecycle_argument_starts_the_managed_node(fake_launch, monkeypatch):
    plain, = fake_launch.nodes(monkeypatch, namespace='robot', device='cpu')
    node, = fake_launch.nodes(monkeypatch, namespace='robot', device='cpu', lifecycle='true')
    assert node.pop('lifecycle_node') and node['executable'] == 'superglue_lifecycle_node'
    assert {**node, 'executable': 'superglue_node'} == plain  # the same parameters, remappings, name, namespace
    assert (REPO_ROOT / 'scripts' / 'superglue_lifecycle_node').stat().st_mode & 0o111


def test_launch_arguments_are_described():
    tree = ast.parse(LAUNCH_FILE.read_text())
    arguments = next(node.value for node in tree.body
                     if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'ARGUMENTS')
    names = {key.value for key in arguments.keys}
    assert names == {'image', 'camera_info', 'cameras', 'config', 'superpoint_weights', 'superglue_weights',
                     'device', 'namespace', 'rviz', 'lifecycle'}


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
