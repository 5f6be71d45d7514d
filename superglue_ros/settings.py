"""Every setting of superglue_ros in one table: name, default, accepted values, description.

Everything else derives from SETTINGS:
  - the models' live config (SuperPoint / SuperGlue `default_config` take their defaults from here,
    and their config checks call check());
  - Matcher.configure and Matcher.from_weights;
  - the keyframe policy (tracking.KeyframePolicy), the geometric verification
    (geometry.Verification) and the left-right verification of stereo rigs (stereo.StereoVerification);
  - the ROS parameters (ros/parameters.py: type, description, read-only flag, the accepted values
    in the descriptor, and the validation of start-up and live values);
  - the CLI flags (match.py: `--max-keypoints`, ...).

So a value is accepted or refused identically everywhere, with the same message (check()), and
each setting has one default. The defaults are those of the original release
(magicleap/SuperGluePretrainedNetwork: SuperPoint / SuperGlue `default_config`); the presets in
config/*.yaml are the only other layer.

    from superglue_ros.settings import SETTINGS, check, defaults
    check('max_keypoints', 0)   # ValueError: max_keypoints must be an integer >= 1, or -1 for all; got 0
    defaults('superglue')       # {'match_threshold': 0.2, 'sinkhorn_iterations': 100, ...}
"""
import math
import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Callable

MIN_IMAGE_SIZE = 16  # SuperPoint works on 8x8 cells and needs a few of them (image.py)
MAX_RESIZE = 8192    # an 8K frame (7680 x 4320) fits; larger is a typo that would exhaust host memory


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _one_of(*choices) -> Callable:
    return lambda value: isinstance(value, str) and value in choices


def _integer(low: int, high: float = math.inf) -> Callable:
    return lambda value: _is_int(value) and low <= value <= high


def _number(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False) -> Callable:
    def valid(value):
        return (_is_number(value) and (value > low if low_open else value >= low)
                and (value < high if high_open else value <= high))
    return valid


def _resize(value) -> bool:
    if value is None:
        return True
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
        return False
    return list(value) in ([], [0, 0]) or (len(value) == 2 and MIN_IMAGE_SIZE <= min(value)
                                              and max(value) <= MAX_RESIZE)


def _device(value) -> bool:
    return isinstance(value, str) and re.fullmatch(r'auto|cpu|cuda(:\d+)?', value) is not None


CAMERA_NAME = r'[A-Za-z][A-Za-z0-9_]*(?:/[A-Za-z][A-Za-z0-9_]*)*'  # a named camera: a relative ROS name


def _cameras(value) -> bool:
    """Unique names, each '' (the unnamed camera) or a relative ROS name (letters, digits, '_', '/')."""
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        return False
    if len(set(value)) != len(value):
        return False
    return all(v == '' or re.fullmatch(CAMERA_NAME, v) for v in value)


def _split_mask(entry: str) -> tuple[str, str]:
    """'left:/path/left.png' -> ('left', '/path/left.png'); '/path/mask.png' -> ('', '/path/mask.png')."""
    named = re.fullmatch(f'({CAMERA_NAME}):(.+)', entry)
    return (named[1], named[2]) if named else ('', entry)


def _masks(value) -> bool:
    """[''] (none) or entries 'CAMERA:PATH' / 'PATH', at most one per camera."""
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        return False
    if list(value) == ['']:
        return True
    cameras = [_split_mask(v)[0] for v in value]
    return '' not in value and len(set(cameras)) == len(cameras)
def _stereo_pairs(value) -> bool:
    """None / [] (no rig) or 'left:right' strings of camera names, each camera in one pair at most."""
    if value is None:
        return True
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        return False
    names = [name for pair in value for name in pair.split(':')]
    return (all(re.fullmatch(f'{CAMERA_NAME}:{CAMERA_NAME}', pair) for pair in value)
            and len(set(names)) == len(names))


def _rectified_cameras(value) -> bool:
    """None / [] (none) or unique camera names ('' the unnamed camera)."""
    return value is None or (isinstance(value, (list, tuple)) and not value) or _cameras(value)


@dataclass(frozen=True)
class Setting:
    """One row of the table.

    scope: who reads it ('superpoint' / 'superglue': the model's live config; 'matcher': the
    Matcher; 'tracker': tracking.KeyframePolicy; 'verification': geometry.Verification;
    'keyframes': keyframes.KeyframeStore; 'loop': keyframes.LoopPolicy; 'stereo': stereo.StereoVerification;
    'weights'; 'node': the ROS node only). live: may change while running (otherwise a ROS
    parameter is read-only). cli: a flag of `python -m superglue_ros.match`.
    """
    name: str
    default: object
    accepted: str                       # in words; ends every refusal message
    valid: Callable[[object], bool]
    description: str
    scope: str
    live: bool = True
    cli: bool = False

    def check(self, value):
        """The value as used (plain int / float / str / list), or ValueError naming what is accepted."""
        if not self.valid(value):
            raise ValueError(f'{self.name} must be {self.accepted}; got {value!r}')
        if isinstance(self.default, bool):
            return bool(value)
        if isinstance(self.default, float):
            return float(value)
        if isinstance(self.default, int):
            return int(value)
        if isinstance(self.default, list):
            return list(value or [])
        return value


_ROWS = [
    # -- weights, device, input: chosen at start-up -------------------------------------------
    Setting('superglue_weights', 'indoor',
            "a preset ('indoor', 'outdoor'), a Hugging Face hub id (magic-leap-community/superglue_indoor"
            "[@revision]), an original .pth file, a .safetensors file or a Hugging Face checkpoint directory",
            lambda v: isinstance(v, str) and v != '',
            'SuperGlue weights. Presets are read from the weights cache (fetched with '
            '`python -m superglue_ros.download`); a Hugging Face SuperGlue checkpoint also supplies SuperPoint',
            'weights', live=False, cli=True),
    Setting('superpoint_weights', '',
            "empty, the preset 'superpoint', a Hugging Face hub id (magic-leap-community/superpoint), "
            'a .pth / .safetensors file or a Hugging Face checkpoint directory',
            lambda v: isinstance(v, str),
            "SuperPoint weights. Empty: from superglue_weights (the SuperPoint inside a Hugging Face "
            "SuperGlue checkpoint, otherwise the 'superpoint' preset)",
            'weights', live=False, cli=True),
    Setting('device', 'auto', "'auto', 'cpu', 'cuda' or 'cuda:N'", _device,
            "Inference device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'",
            'matcher', live=False, cli=True),
    Setting('precision', 'fp32', "'fp32', 'bf16' or 'fp16'", _one_of('fp32', 'bf16', 'fp16'),
            "Inference precision. 'fp32': the original computation. 'bf16' / 'fp16': the convolutions and "
            'GNN layers in half precision, detection scores, descriptor normalisation, the score matrix and '
            'Sinkhorn in float32 (bf16 on CPUs with AMX or AVX512-BF16 and on GPUs, fp16 on GPUs). Check '
            'the agreement on your images first: python -m superglue_ros.precision_check',
            'matcher', live=False, cli=True),
    Setting('resize', [0, 0], f'[0, 0] (none) or [width, height], both integers in [{MIN_IMAGE_SIZE}, {MAX_RESIZE}]',
            _resize,
            'Size [width, height] images are resized to before inference (INTER_AREA); [0, 0]: as given. '
            'Published coordinates are always pixels of the image as given',
            'matcher', live=False, cli=True),
    # -- deployment runtimes (export.py, runtime.py): chosen at start-up ----------------------
    Setting('backend', 'torch', "'torch', 'onnxruntime' or 'auto'", _one_of('torch', 'onnxruntime', 'auto'),
            "What runs the networks. 'torch': the PyTorch models. 'onnxruntime': SuperPoint's dense network and "
            "SuperGlue's encoder and GNN exported to ONNX (python -m superglue_ros.export, cached by weights and "
            'settings) and run by ONNX Runtime, on the CPU or CUDA as device says, fp32 only; keypoint selection, '
            "Sinkhorn and the mutual check stay in torch, so every setting stays live. 'auto' (the presets): "
            'onnxruntime on a CPU in fp32 where it is installed (measured faster there, same results within the '
            'fidelity gate), torch elsewhere',
            'matcher', live=False, cli=True),
    Setting('static_shapes', False, 'true or false', lambda v: isinstance(v, bool),
            'SuperGlue on every image padded to max_keypoints, with padding masks: the same matches, at one shape. '
            "With backend 'torch' on a GPU, each camera's SuperGlue is captured once in a CUDA graph and replayed "
            "(no per-kernel launch cost); with 'onnxruntime', the static export runs (no TensorRT engine rebuild; "
            'needs a resize, and max_keypoints stays at most its start-up value). Needs max_keypoints >= 1; '
            'on a CPU it only costs time', 'matcher', live=False),
    # -- SuperPoint (models/superpoint.py), live ----------------------------------------------
    Setting('max_keypoints', -1, 'an integer >= 1, or -1 for all', lambda v: _is_int(v) and (v == -1 or v >= 1),
            'Most keypoints kept per image, highest detection scores first; -1: all', 'superpoint', cli=True),
    Setting('keypoint_threshold', 0.005, 'a number in [0, 1)', _number(0, 1, high_open=True),
            'SuperPoint detection score below which a keypoint is dropped', 'superpoint', cli=True),
    # the max-pool window is 2 r + 1 pixels: beyond 64 it would suppress all but a few keypoints per image
    Setting('nms_radius', 4, 'an integer in [0, 64]', _integer(0, 64),
            'SuperPoint non-maximum suppression radius, pixels of the processed image', 'superpoint', cli=True),
    # -- SuperGlue (models/superglue.py), live ------------------------------------------------
    # a matching score is <= 1, so a threshold of 1 would drop every match
    Setting('match_threshold', 0.2, 'a number in [0, 1)', _number(0, 1, high_open=True),
            'SuperGlue matching score below which a match is dropped', 'superglue', cli=True),
    # the original runs 100; more only costs time (a frame stays busy, the camera's newer frames are dropped)
    Setting('sinkhorn_iterations', 100, 'an integer in [1, 1000]', _integer(1, 1000),
            'Sinkhorn (optimal transport) iterations of SuperGlue', 'superglue', cli=True),
    Setting('max_matching_memory_mb', 4096, 'an integer >= 1', _integer(1),
            'Largest estimated memory, in MiB, of one SuperGlue match (its N x M attention and score '
            'matrices); a larger pair is refused with the keypoint counts and the estimate, instead of '
            'running out of memory. 640x480 images with 2048 keypoints need about 0.2 GiB',
            'matcher', cli=True),
    # -- keyframe policy (tracking.py), live --------------------------------------------------
    Setting('keyframe_min_matches', 50, 'an integer >= 0', _integer(0),
            'New keyframe when a frame has fewer matches with the keyframe than this; 0: off', 'tracker'),
    Setting('keyframe_min_match_ratio', 0.2, 'a number in [0, 1]', _number(0, 1),
            'New keyframe when matches / keyframe keypoints falls below this; 0: off', 'tracker'),
    Setting('keyframe_max_age_s', 0.0, 'a number of seconds >= 0', _number(0),
            'New keyframe when the keyframe is older than this, by image stamps; 0: off', 'tracker'),
    Setting('time_jump_threshold_s', 1.0, 'a number of seconds > 0', _number(0, low_open=True),
            'A frame stamped more than this before the previous frame (a restarted bag or camera) resets '
            'the keyframe; smaller backward steps (stamp jitter) are matched as usual', 'tracker'),
    # -- geometric verification (geometry.py), live -------------------------------------------
    Setting('geometric_verification', 'none', "'none', 'fundamental', 'homography' or 'essential'",
            _one_of('none', 'fundamental', 'homography', 'essential'),
            "Two-view model fitted with RANSAC to flag inlier correspondences: 'fundamental' (any static "
            "scene), 'homography' (planar scene, pure rotation), 'essential' (calibrated camera: on the "
            "undistorted normalised points; frames without calibration fall back to 'fundamental')",
            'verification'),
    Setting('ransac_threshold_px', 3.0, 'a number of pixels > 0', _number(0, low_open=True),
            'RANSAC inlier threshold in pixels of the images as given', 'verification'),
    # -- node only ----------------------------------------------------------------------------
    Setting('cameras', [''], "a non-empty list of unique camera names: '' (topics image, camera_info) or "
            "relative ROS names such as 'left' or 'rig/left' (letters, digits and _, each part starting with a "
            "letter; topics left/image, left/camera_info)", _cameras,
            "Cameras matched by this node, each against its own keyframe. '': subscribes image and "
            'camera_info, publishes ~/matches, ~/keyframe, ~/match_image. A name such as left: subscribes '
            'left/image and left/camera_info, publishes ~/left/matches, ~/left/keyframe, ~/left/match_image',
            'node', live=False),
    Setting('image_transport', 'raw', "'raw' or 'compressed'", _one_of('raw', 'compressed'),
            "'raw': sensor_msgs/Image on the image topic. 'compressed': sensor_msgs/CompressedImage (JPEG or "
            'PNG, as image_transport writes it) on the resolved image topic + /compressed',
            'node', live=False),
    Setting('match_image_max_lines', 300, 'an integer >= 0', _integer(0),
            'Most correspondences drawn on ~/match_image (the most confident); 0: none', 'node'),
    # -- issue 15 (i15b): VINS feature topic, detection masks --------------------------------------
    Setting('publish_features', False, 'true or false', lambda v: isinstance(v, bool),
            'Publish ~/features (~/<camera>/features): sensor_msgs/PointCloud of each frame\'s tracked features '
            'in the layout of the VINS-Fusion feature tracker (README); needs camera_info with a calibration',
            'node', live=False),
    Setting('masks', [''], "[''] (none), or a list of 'CAMERA:PATH' entries (a camera of cameras) or one 'PATH' "
            'for the unnamed camera, at most one per camera', _masks,
            'Detection masks: mono8 images of the camera\'s image size, zero where no keypoint may be (e.g. the '
            'robot\'s own body); applied to the SuperPoint scores before the threshold and max_keypoints',
            'node', live=False),
    # -- stereo rigs (issue 15: stereo.py; the node pairs the images) ---------------------------
    Setting('stereo_pairs', [], "[] (no rig) or a list of 'left:right' pairs of two different names of cameras, "
            'each camera in one pair at most', _stereo_pairs,
            "Stereo rigs among the cameras: for 'left:right', the left and right images are paired by stamp, "
            'SuperPoint runs on both in one batch, the left image is matched against its keyframe and against the '
            'right image; publishes ~/left_right/stereo_matches (disparity, depth, shared track ids) and '
            '~/left_right/match_image (left | right)', 'node', live=False),
    Setting('stereo_sync_tolerance_s', 0.0, 'a number of seconds >= 0', _number(0),
            'Largest stamp difference of a left and a right image paired together (software-synchronised '
            'cameras; keep it under half the frame period); 0: equal stamps only (hardware-synchronised)',
            'node', live=False),
    Setting('rectified_cameras', [], "[] (none) or a list of unique names of cameras ('' the unnamed camera)",
            _rectified_cameras,
            "Cameras whose images are already rectified (image_proc's image_rect, with the raw camera's camera_info): "
            "their points are mapped with the camera_info's P and no distortion (image_geometry's "
            'projectPixelTo3dRay), not undistorted with K and D. A stereo rig lists both its cameras: with a right P '
            'whose Tx (P[3]) is non-zero and rectified images (this, or R identity in both camera_infos), left-right '
            'matches are checked on image rows and get a depth', 'node', live=False),
    Setting('stereo_row_threshold_px', 2.0, 'a number of pixels > 0', _number(0, low_open=True),
            'Rectified rig: a left-right match is an inlier when its rows differ by at most this (|y_left - '
            'y_right|, pixels of the images as given) and its disparity is positive', 'stereo'),
    # -- loop closure: keyframe store and loop candidates (keyframes.py) ----------------------
    # 500 keyframes of 1024 keypoints hold about 270 MiB (fp16 descriptors): the store's memory is on /diagnostics
    Setting('keyframe_store_size', 500, 'an integer >= 1', _integer(1),
            'Keyframes kept per camera for ~/match_keyframes and loop candidates; when full, the oldest is '
            'evicted. The newest is the keyframe frames are matched against',
            'keyframes', live=False),
    Setting('loop_candidates_k', 5, 'an integer >= 0', _integer(0),
            'Most loop candidates published on ~/loop_candidates for each new keyframe, most similar first; '
            '0: none (the message is still published, empty)', 'loop'),
    Setting('loop_exclude_recent', 10, 'an integer >= 0', _integer(0),
            'The most recent keyframes before a new keyframe that are never its loop candidates (they overlap it '
            'anyway: that is odometry, not a loop)', 'loop'),
    # 0.3: recall@1 0.86 at precision 0.85 on the synthetic revisit sequence with random weights (docs/BENCHMARKS.md)
    Setting('loop_min_score', 0.3, 'a number in [-1, 1]', _number(-1, 1),
            'Similarity of the global descriptors (cosine, -1..1) below which a keyframe is not a loop candidate',
            'loop'),
]
SETTINGS: dict[str, Setting] = {row.name: row for row in _ROWS}


def check(name: str, value):
    """Value of setting `name` as used, or ValueError('<name> must be <accepted>; got <value>')."""
    if name not in SETTINGS:
        raise ValueError(f'unknown setting {name!r}; known: {", ".join(SETTINGS)}')
    return SETTINGS[name].check(value)


def check_all(values: dict) -> dict:
    """check() of every item; one ValueError listing every bad value (nothing is half-applied)."""
    checked, problems = {}, []
    for name, value in values.items():
        try:
            checked[name] = check(name, value)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError('; '.join(problems))
    return checked


def names(scope: str) -> tuple[str, ...]:
    """The settings of one scope, in table order."""
    return tuple(row.name for row in _ROWS if row.scope == scope)


def defaults(scope: str) -> dict:
    """{name: default} of one scope (a fresh copy)."""
    return {row.name: SETTINGS[row.name].check(row.default) for row in _ROWS if row.scope == scope}


def resize_of(value) -> tuple[int, int] | None:
    """The resize setting as (width, height), or None for [0, 0] / [] / None (an empty list in
    YAML or on a ROS command line arrives as None). ValueError as check()."""
    value = check('resize', value)
    return None if value in ([], [0, 0]) else (value[0], value[1])


def mask_paths(value) -> dict[str, str]:
    """The masks setting as {camera name: path} ('' the unnamed camera; {} for ['']). ValueError as check()."""
    value = check('masks', value)
    return dict(_split_mask(entry) for entry in value if entry)


def rectified_cameras_of(rectified, cameras, pairs) -> set[str]:
    """rectified_cameras as a set, checked against `cameras` and the stereo rigs `pairs` ((left, right) names, as
    stereo_pairs_of gives them): ValueError as check(), or naming a camera not in cameras, or a rig listed by one
    camera only (a pair's images are rectified together)."""
    rectified, cameras = set(check('rectified_cameras', rectified)), check('cameras', cameras)
    unknown = sorted(rectified - set(cameras))
    if unknown:
        raise ValueError(f'rectified_cameras names {", ".join(map(repr, unknown))}, not in cameras {cameras}: list '
                         'cameras of this node whose images are rectified (image_rect)')
    for pair in pairs:
        if len(rectified & set(pair)) == 1:
            raise ValueError(f'rectified_cameras lists {next(iter(rectified & set(pair)))!r} of the stereo pair '
                             f'{":".join(pair)!r} but not the other camera: a rig\'s images are rectified together, '
                             'list both or neither')
    return rectified


def stereo_pairs_of(pairs, cameras) -> list[tuple[str, str]]:
    """stereo_pairs as (left, right) names, checked against `cameras`: ValueError as check(), or naming a
    camera of a pair that is not in cameras."""
    pairs, cameras = check('stereo_pairs', pairs), check('cameras', cameras)
    result = [tuple(pair.split(':')) for pair in pairs]
    unknown = [name for pair in result for name in pair if name not in cameras]
    if unknown:
        raise ValueError(f'stereo_pairs names {", ".join(map(repr, unknown))}, not in cameras {cameras}: '
                         "add it to cameras, or pair cameras that are there (e.g. cameras: ['left', 'right'], "
                         "stereo_pairs: ['left:right'])")
    return result
