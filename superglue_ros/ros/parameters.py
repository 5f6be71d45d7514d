"""The node's parameters: one table of defaults, descriptions and accepted values.

The table gives the ParameterDescriptors (`ros2 param describe /superglue <name>`), the start-up
and live validation, and the names config/*.yaml may use. Values are checked by the module that
uses them (Matcher settings, KeyframePolicy, Verification), so a parameter accepts exactly what its
module accepts. read_only parameters need a restart: they choose the weights, the device and the
input size. All thresholds can be changed while the node runs.
"""
from dataclasses import dataclass, replace
from typing import Callable

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, ParameterException

from ..frontend import KeyframePolicy
from ..geometry import METHODS, Verification
from ..matcher import PRECISIONS, SETTINGS, Matcher, check_resize, resolve_device


@dataclass(frozen=True)
class Spec:
    default: object
    description: str
    accepted: str                        # in words, for errors and the descriptor
    check: Callable[[object], None]      # raises ValueError saying what is wrong
    range: tuple | None = None           # (low, high) for the descriptor of an int / float parameter
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only,
                                         additional_constraints=f'accepted: {self.accepted}')
        if self.range and isinstance(self.default, int):
            descriptor.integer_range = [IntegerRange(from_value=self.range[0], to_value=self.range[1], step=1)]
        elif self.range:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=self.range[0], to_value=self.range[1], step=0.0)]
        return descriptor


def _no_check(value):
    pass


def _one_of(value, accepted, name):
    if value not in accepted:
        raise ValueError(f'{name} must be one of {", ".join(map(repr, accepted))}, got {value!r}')


def _model_setting(name):
    def check(value):
        if not SETTINGS[name][1](value):
            raise ValueError(f'{name} must be {SETTINGS[name][2]}')
    return check


def _policy_field(field):
    return lambda value: KeyframePolicy(**{field: value})


def _verification_field(field):
    return lambda value: Verification(**{field: value})


def resize_setting(value) -> tuple[int, int] | None:
    """resize parameter -> Matcher's resize: (width, height), or None for [] / [0, 0] (an empty
    list in YAML or on the command line arrives as None)."""
    if value is None or list(value) in ([], [0, 0]):
        return None
    return check_resize(list(value))


def _check_device(value):
    if value not in ('auto', 'cpu') and not str(value).startswith('cuda'):
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {value!r}")
    resolve_device(value)  # 'cuda' without CUDA: says so


PARAMETERS = {
    # Weights, device, input size: chosen at start-up.
    'superglue_weights': Spec(
        'indoor', "SuperGlue weights: preset 'indoor' or 'outdoor' (in the weights cache, fetched with "
        '`python -m superglue_ros.download`), an original .pth file, a .safetensors file or a Hugging Face '
        'checkpoint directory', 'a preset name or a path', _no_check, read_only=True),
    'superpoint_weights': Spec(
        '', "SuperPoint weights: preset 'superpoint', a .pth / .safetensors file or a Hugging Face directory. "
        "Empty: from superglue_weights (the 'superpoint' preset for a preset, the SuperPoint inside a Hugging "
        'Face SuperGlue checkpoint)', 'empty, a preset name or a path', _no_check, read_only=True),
    'device': Spec('auto', "Inference device: 'auto' (CUDA when available, else CPU), 'cuda' or 'cpu'",
                   "'auto', 'cuda' (or 'cuda:N') or 'cpu'", _check_device, read_only=True),
    'precision': Spec('fp32', "Inference precision: 'fp32', or 'fp16' / 'bf16' (autocast of SuperPoint and the "
                      'SuperGlue GNN: faster on GPUs with tensor cores)', ', '.join(map(repr, PRECISIONS)),
                      lambda value: _one_of(value, PRECISIONS, 'precision'), read_only=True),
    'resize': Spec([0, 0], 'Size [width, height] images are resized to (INTER_AREA) before inference; '
                   '[0, 0] or []: as published. Published coordinates are always pixels of the published image',
                   '[0, 0], [] or [width, height] with both >= 16', resize_setting, read_only=True),
    # SuperPoint / SuperGlue (Matcher.configure), live.
    'max_keypoints': Spec(1024, 'Most keypoints kept per image (highest scores first); -1: all',
                          SETTINGS['max_keypoints'][2], _model_setting('max_keypoints'), range=(-1, 100000)),
    'keypoint_threshold': Spec(0.005, 'SuperPoint detection score below which a keypoint is dropped',
                               SETTINGS['keypoint_threshold'][2], _model_setting('keypoint_threshold'),
                               range=(0.0, 1.0)),
    'nms_radius': Spec(4, 'SuperPoint non-maximum suppression radius, pixels of the processed image',
                       SETTINGS['nms_radius'][2], _model_setting('nms_radius'), range=(0, 64)),
    'match_threshold': Spec(0.2, 'SuperGlue matching score below which a match is dropped',
                            SETTINGS['match_threshold'][2], _model_setting('match_threshold'), range=(0.0, 1.0)),
    'sinkhorn_iterations': Spec(20, 'Sinkhorn iterations of SuperGlue',
                                SETTINGS['sinkhorn_iterations'][2], _model_setting('sinkhorn_iterations'),
                                range=(1, 1000)),
    # Keyframe policy (frontend.KeyframePolicy), live.
    'keyframe_min_matches': Spec(KeyframePolicy.min_matches, 'New keyframe when a frame has fewer matches; 0: off',
                                 'an integer >= 0', _policy_field('min_matches'), range=(0, 100000)),
    'keyframe_min_match_ratio': Spec(
        KeyframePolicy.min_match_ratio, "New keyframe when matches / keyframe keypoints falls below this; 0: off",
        'a number in [0, 1]', _policy_field('min_match_ratio'), range=(0.0, 1.0)),
    'keyframe_max_age_s': Spec(KeyframePolicy.max_age_s,
                               'New keyframe when the keyframe is older than this (image stamps); 0: off',
                               'a number of seconds >= 0', _policy_field('max_age_s'), range=(0.0, 86400.0)),
    # Geometric verification (geometry.Verification), live.
    'geometric_verification': Spec(
        Verification.method, "Two-view model fitted with RANSAC to flag inlier matches: 'none', 'fundamental' "
        "(any static scene) or 'homography' (planar scene, pure rotation)", ', '.join(map(repr, METHODS)),
        _verification_field('method')),
    'ransac_threshold_px': Spec(Verification.threshold_px, 'RANSAC inlier threshold in pixels of the images',
                                'a number of pixels > 0', _verification_field('threshold_px'),
                                range=(0.01, 100.0)),
    # Visualisation, live.
    'match_image_max_lines': Spec(300, 'Most match lines drawn on ~/match_image (the most confident); 0: none',
                                  'an integer >= 0', _no_check, range=(0, 100000)),
}


class ParameterError(ValueError):
    """A parameter value that is not accepted; the message names the parameter and what is accepted."""


def problem(name: str, value) -> str | None:
    """Why `value` is not accepted for parameter `name`, or None when it is."""
    spec = PARAMETERS[name]
    try:
        spec.check(value)
    except (ValueError, TypeError) as e:
        accepted = '' if spec.accepted in str(e) else f' (accepted: {spec.accepted})'
        return f"parameter '{name}' = {value!r} is not accepted: {e}{accepted}"
    return None


def declare(node) -> dict:
    """Declare every parameter on `node`; return their values by name, checked.

    Raises ParameterError naming the parameter and what it accepts when an override (command line,
    YAML file) has the wrong type or a value that is not accepted.
    """
    values = {}
    for name, spec in PARAMETERS.items():
        try:
            value = node.declare_parameter(name, spec.default, spec.descriptor()).value
        except ParameterException as e:  # wrong type, or outside the descriptor's range
            reason = str(e.args[0]).removesuffix(f': {name}')
            if isinstance(e, InvalidParameterTypeException) and isinstance(spec.default, float):
                reason += ' (write floating point values with a decimal point: 5.0, not 5)'
            raise ParameterError(f"parameter '{name}': {reason} (accepted: {spec.accepted})") from None
        reason = problem(name, value)
        if reason:
            raise ParameterError(reason)
        values[name] = value
    return values


def model_settings(values: dict) -> dict:
    """Matcher.MODEL_SETTINGS among `values`."""
    return {name: values[name] for name in Matcher.MODEL_SETTINGS if name in values}


def keyframe_policy(values: dict, current: KeyframePolicy | None = None) -> KeyframePolicy:
    fields = {'keyframe_min_matches': 'min_matches', 'keyframe_min_match_ratio': 'min_match_ratio',
              'keyframe_max_age_s': 'max_age_s'}
    return replace(current or KeyframePolicy(), **{fields[k]: v for k, v in values.items() if k in fields})


def verification(values: dict, current: Verification | None = None) -> Verification:
    fields = {'geometric_verification': 'method', 'ransac_threshold_px': 'threshold_px'}
    return replace(current or Verification(), **{fields[k]: v for k, v in values.items() if k in fields})
