"""The one settings table (superglue_ros/settings.py) drives every interface: a test walks the table.

For every setting, sample values are accepted or refused identically, with the same message, by
settings.check, the module that uses it (the models' config, Matcher.configure, KeyframePolicy,
Verification), the ROS parameters (at start-up and live) and the CLI flags; and every interface
has the table's default.
"""
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter

from superglue_ros import match as cli
from superglue_ros.geometry import Verification
from superglue_ros.keyframes import KeyframeStore, LoopPolicy
from superglue_ros.matcher import Matcher
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.random_weights import random_superglue, random_superpoint
from superglue_ros.ros import parameters
from superglue_ros.settings import SETTINGS, check, names, resize_of
from superglue_ros.stereo import StereoVerification
from superglue_ros.tracking import KeyframePolicy

# name -> (accepted values, refused values). Every row of the table must be here.
SAMPLES = {
    'superglue_weights': (['indoor', 'outdoor', '/some/file.pth'], ['', 3]),
    'superpoint_weights': (['', 'superpoint', 'dir/x.safetensors'], [5, None]),
    'device': (['auto', 'cpu', 'cuda', 'cuda:1'], ['gpu', 'cuda:x', '', 0]),
    'precision': (['fp32', 'bf16', 'fp16'], ['fp8', 'FP32', 1]),
    'backend': (['torch', 'onnxruntime', 'auto'], ['onnx', 'ORT', 'tensorrt', 'AUTO', 1]),
    'static_shapes': ([True, False], [1, 'true', None]),
    'resize': ([[0, 0], [], [320, 240], [16, 16], [8192, 4320]], [[640], [10, 10], [320.0, 240.0], 'big', [-1, -1],
                                                                  [100000, 100000], [8193, 16]]),
    'max_keypoints': ([-1, 1, 1024], [0, -2, 1.5, True, '5']),
    'keypoint_threshold': ([0.0, 0.005, 0.99], [1.0, -0.1, float('nan'), 'x']),
    'nms_radius': ([0, 4, 64], [-1, 2.5, False, 65, 1000000000]),
    'match_threshold': ([0.0, 0.2, 0.999], [1.0, -0.5, float('inf')]),
    'sinkhorn_iterations': ([1, 20, 100, 1000], [0, -1, 3.0, 1001, 100000000]),
    'max_matching_memory_mb': ([1, 4096], [0, -5, 1.5]),
    'keyframe_min_matches': ([0, 50], [-1, 2.5]),
    'keyframe_min_match_ratio': ([0, 0.2, 1], [1.5, -0.1, float('nan')]),
    'keyframe_max_age_s': ([0, 0.0, 2.5], [-1.0, float('inf')]),
    'time_jump_threshold_s': ([0.001, 1, 3600.0], [0, 0.0, -1.0]),
    'geometric_verification': (['none', 'fundamental', 'homography', 'essential'], ['affine', None]),
    'ransac_threshold_px': ([0.5, 3], [0, -1.0, float('nan')]),
    'cameras': ([[''], ['left', 'right'], ['cam/front']], [[], ['left', 'left'], ['/abs'], ['1cam'], ['a-b'], 'left']),
    'image_transport': (['raw', 'compressed'], ['theora', '']),
    'match_image_max_lines': ([0, 300], [-1, 1.5]),
    'publish_features': ([True, False], [1, 'true', None]),
    'masks': ([[''], ['/m.png'], ['left:/l.png', 'rig/right:r.png', 'c:/a:b.png']],
              [[], ['', 'left:/l.png'], ['left:/a.png', 'left:/b.png'], ['/a.png', '/b.png'], 'left:/l.png', [3]]),
    'stereo_pairs': ([[], ['left:right'], ['rig/left:rig/right', 'a:b']],
                     [['left:left'], ['a:b', 'b:c'], ['left'], ['a:b:c'], 'left:right', [3]]),
    'stereo_sync_tolerance_s': ([0, 0.005, 1], [-0.001, float('nan'), 'x']),
    'rectified_cameras': ([[], [''], ['left', 'right'], ['rig/left']], [['left', 'left'], ['/abs'], 'left', [3], True]),
    'stereo_row_threshold_px': ([0.5, 2], [0, -1.0, float('inf')]),
    'keyframe_store_size': ([1, 500, 10000], [0, -1, 2.5, True]),
    'loop_candidates_k': ([0, 5, 100], [-1, 1.5]),
    'loop_exclude_recent': ([0, 10], [-1, 2.0]),
    'loop_min_score': ([-1, 0.0, 0.2, 1], [1.5, -1.01, float('nan'), 'x']),
}


def refusal(function, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as error:
        function(*args, **kwargs)
    return str(error.value)


def test_every_setting_is_sampled_and_its_default_accepted():
    assert set(SAMPLES) == set(SETTINGS)
    for name, setting in SETTINGS.items():
        assert check(name, setting.default) == setting.default
        assert setting.description and setting.accepted


@pytest.mark.parametrize('name', list(SETTINGS))
def test_the_table_says_what_is_accepted(name):
    good, bad = SAMPLES[name]
    for value in good:
        check(name, value)
    for value in bad:
        message = refusal(check, name, value)
        assert message == f'{name} must be {SETTINGS[name].accepted}; got {value!r}'


@pytest.fixture(scope='module')
def models():
    return random_superpoint(), random_superglue()


@pytest.mark.parametrize('name', names('superpoint') + names('superglue'))
def test_models_refuse_with_the_same_message(name, models):
    model = SuperPoint if name in names('superpoint') else SuperGlue
    assert model.default_config[name] == SETTINGS[name].default
    good, bad = SAMPLES[name]
    for value in good:
        model({name: value})
    for value in bad:
        assert refusal(model, {name: value}) == refusal(check, name, value)


@pytest.mark.parametrize('name', Matcher.MODEL_SETTINGS)
def test_matcher_configure_takes_the_same_values(name, models):
    matcher = Matcher(*models, device='cpu')
    assert matcher.settings[name] == SETTINGS[name].default
    good, bad = SAMPLES[name]
    for value in good:
        matcher.configure(**{name: value})
        assert matcher.settings[name] == value
    before = matcher.settings
    for value in bad:
        assert refusal(matcher.configure, **{name: value}) == refusal(check, name, value)
        assert matcher.settings == before  # all or nothing


def test_matcher_start_up_settings(models):
    for value in SAMPLES['resize'][1]:
        assert refusal(Matcher, *models, device='cpu', resize=value) == refusal(check, 'resize', value)
    for value in SAMPLES['precision'][1]:
        assert refusal(Matcher, *models, device='cpu', precision=value) == refusal(check, 'precision', value)
    for value in ('gpu', 'cuda:x', ''):
        assert refusal(Matcher, *models, device=value) == refusal(check, 'device', value)
    for value in SAMPLES['backend'][1]:
        assert refusal(Matcher, *models, device='cpu', backend=value) == refusal(check, 'backend', value)
    assert Matcher(*models, device='cpu', resize=[320, 240]).resize == resize_of([320, 240]) == (320, 240)


@pytest.mark.parametrize('cls, name', [(KeyframePolicy, name) for name in names('tracker')]
                         + [(Verification, name) for name in names('verification')]
                         + [(StereoVerification, name) for name in names('stereo')]
                         + [(LoopPolicy, name) for name in names('loop')])
def test_keyframe_policy_verification_and_loop_policy_refuse_with_the_same_message(cls, name):
    scope = {KeyframePolicy: 'tracker', Verification: 'verification', StereoVerification: 'stereo',
             LoopPolicy: 'loop'}[cls]
    assert set(cls.SETTINGS.values()) == set(names(scope))
    field = {v: k for k, v in cls.SETTINGS.items()}[name]
    assert getattr(cls(), field) == SETTINGS[name].default
    good, bad = SAMPLES[name]
    for value in good:
        assert getattr(cls.from_settings({name: value}), field) == value
    for value in bad:
        assert refusal(cls, **{field: value}) == refusal(check, name, value)


# -- ROS parameters ---------------------------------------------------------------------------

def test_keyframe_store_size_is_the_table():
    assert names('keyframes') == ('keyframe_store_size',)
    assert KeyframeStore().size == SETTINGS['keyframe_store_size'].default
    for value in SAMPLES['keyframe_store_size'][0]:
        assert KeyframeStore(value).size == value
    for value in SAMPLES['keyframe_store_size'][1]:
        assert refusal(KeyframeStore, value) == refusal(check, 'keyframe_store_size', value)


def test_ros_parameters_are_the_table(context):
    node = Node('superglue', context=context)
    try:
        values = parameters.declare(node)
        assert values == {name: setting.default for name, setting in SETTINGS.items()}
        for descriptor in node.describe_parameters(list(SETTINGS)):
            setting = SETTINGS[descriptor.name]
            assert descriptor.description == setting.description
            assert setting.accepted in descriptor.additional_constraints
            assert descriptor.read_only == (not setting.live)
    finally:
        node.destroy_node()


def ros_samples(values) -> list:
    """The samples a ROS parameter can carry (not None, not empty or mixed-type lists)."""
    return [v for v in values if v is not None and v != [] and not (isinstance(v, list) and len({type(x) for x in v}) > 1)]


@pytest.mark.parametrize('name', list(SETTINGS))
def test_ros_start_up_and_live_values_are_refused_with_the_same_message(context, name):
    good, bad = (ros_samples(v) for v in SAMPLES[name])
    for value in bad:
        node = Node('superglue', context=context, parameter_overrides=[Parameter(name, value=value)])
        try:
            with pytest.raises(parameters.ParameterError) as error:
                parameters.declare(node)
            assert str(error.value) == refusal(check, name, value)
        finally:
            node.destroy_node()
    if not SETTINGS[name].live:
        return
    node = Node('superglue', context=context)
    try:
        parameters.declare(node)
        node.add_on_set_parameters_callback(parameters.validate)  # what the node registers
        for value in bad:
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful and result.reason == refusal(check, name, value)
        for value in good:
            assert node.set_parameters([Parameter(name, value=value)])[0].successful, value
    finally:
        node.destroy_node()


# -- CLI flags ---------------------------------------------------------------------------------

CLI_SETTINGS = [name for name, setting in SETTINGS.items() if setting.cli]


def test_cli_flags_are_the_table():
    parser = cli.build_parser()
    flags = {action.dest: action for action in parser._actions if action.option_strings}
    for name in CLI_SETTINGS:
        assert name in flags, f'the CLI has no flag for {name}'
        if name == 'resize':  # the CLI resizes as the original's read_image, not as the node (match.py)
            assert 'cv2.resize' in flags[name].help and 'pixels of the resized images' in flags[name].help
            continue
        assert SETTINGS[name].description.split('.')[0] in flags[name].help


@pytest.mark.parametrize('name', CLI_SETTINGS)
def test_cli_refuses_with_the_same_message(name, capsys, tmp_path):
    """Each refused sample that a command line can carry: exit code 2 and the table's message, one line."""
    flag = '--' + name.replace('_', '-')
    image = tmp_path / 'missing.png'  # never read: the settings are checked first
    exercised = 0
    for value in SAMPLES[name][1]:
        words = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        parsed = _parsed(name, words)
        if parsed is None or _accepted(name, parsed):
            continue  # not expressible on a command line, or a different value once parsed (3 -> '3')
        if name == 'resize' and parsed[1] == -1:
            continue  # WIDTH -1 is the original's form (the longest side; -1 -1: as given): test_cli
        assert cli.main([str(image), str(image), flag, *words]) == 2
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and refusal(check, name, parsed) in err
        exercised += 1
    if not exercised:  # only a setting that takes any string has nothing a command line can get wrong
        assert isinstance(SETTINGS[name].default, str) and _accepted(name, '') and _accepted(name, 'x y')


def _accepted(name, value) -> bool:
    try:
        check(name, value)
    except ValueError:
        return False
    return True


def _parsed(name, words):
    """The value argparse makes of the words for this flag, or None when it cannot."""
    setting = SETTINGS[name]
    kind = int if isinstance(setting.default, list) else type(setting.default)
    try:
        values = [kind(word) for word in words]
    except ValueError:
        return None
    if isinstance(setting.default, list):
        return values if len(values) == 2 else None
    return values[0] if len(values) == 1 else None


def test_the_readme_parameter_table_is_the_table():
    from pathlib import Path
    import re

    readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
    rows = {name: (default, accepted) for name, default, accepted
            in re.findall(r'^\| `(\w+)` \| `([^`]*)` \| ([^|]*) \|', readme, re.M)}
    assert set(rows) == set(SETTINGS)
    for name, setting in SETTINGS.items():
        assert rows[name] == (repr(setting.default), setting.accepted), name
