"""Keyframe front-end: what the node runs for every camera frame, free of ROS.

Each frame is matched against the current keyframe. The keyframe's features, and the SuperGlue
encoding cached in them on its first match, stay on the matcher's device and are never recomputed.
After matching, the frame becomes the keyframe for the following frames when a KeyframePolicy rule
fires or a new keyframe was requested. A frame with nothing to match against (the first one, or one
whose stamp is earlier than the previous frame's: a bag restarted) becomes the keyframe directly.

Correspondences are returned in pixels of the original images, whatever resize the matcher uses.
Threads: process() and match_pair() may run in one thread while request_new_keyframe(), the policy
and verification setters and configure() are called from others.
"""
import math
import threading
import time
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from .geometry import Verification
from .matcher import Features, Matcher, MatchResult

# Why a frame became the keyframe; when several rules fire, the first one listed is given.
KEYFRAME_REASONS = ('first', 'time_jump', 'requested', 'few_matches', 'low_match_ratio', 'max_age')


@dataclass(frozen=True)
class KeyframePolicy:
    """When a matched frame becomes the keyframe for the following frames. 0 turns a rule off.
    The defaults are the node's (config/ and ros/parameters.py)."""
    min_matches: int = 50         # fewer matches with the keyframe than this
    min_match_ratio: float = 0.2  # matches / keyframe keypoints below this
    max_age_s: float = 0.0        # keyframe older than this, by image stamps

    def __post_init__(self):
        if isinstance(self.min_matches, bool) or not isinstance(self.min_matches, Integral) or self.min_matches < 0:
            raise ValueError(f'min_matches must be an integer >= 0 (0: off), got {self.min_matches!r}')
        if not (isinstance(self.min_match_ratio, Real) and 0 <= self.min_match_ratio <= 1):
            raise ValueError(f'min_match_ratio must be a number in [0, 1] (0: off), got {self.min_match_ratio!r}')
        if not (isinstance(self.max_age_s, Real) and 0 <= self.max_age_s < math.inf):
            raise ValueError(f'max_age_s must be a finite number of seconds >= 0 (0: off), got {self.max_age_s!r}')


@dataclass
class FrameResult:
    """One processed frame. Correspondence k: keyframe_points[k] <-> frame_points[k]."""
    frame_index: int                 # frames processed since start, this one: 0, 1, ...
    stamp_s: float                   # this frame's stamp
    keyframe_id: int                 # keyframe the correspondences refer to (first / time_jump: this frame's new id)
    keyframe_stamp_s: float          # that keyframe's stamp
    is_new_keyframe: bool            # this frame is the keyframe for the following frames
    new_keyframe_id: int | None      # its id when is_new_keyframe, else None
    keyframe_reason: str             # why (one of KEYFRAME_REASONS), '' when not a new keyframe
    keyframe_features: Features      # the keyframe's (first / time_jump: this frame's, the same object)
    frame_features: Features
    keyframe_points: np.ndarray      # [K, 2] float32, pixels of the keyframe image as given
    frame_points: np.ndarray         # [K, 2] float32, pixels of this image as given
    confidence: np.ndarray           # [K] float32, SuperGlue matching score
    keyframe_indices: np.ndarray     # [K] int32, into keyframe_features' keypoints
    frame_indices: np.ndarray        # [K] int32, into frame_features' keypoints
    inlier: np.ndarray               # [K] uint8, 1 = fits the two-view geometry; empty when verification is off
    keyframe_keypoint_count: int
    frame_keypoint_count: int
    # 'extract', 'match', 'verify', 'total' (wall clock of each step of this call), and the matcher's
    # stage timings 'preprocess', 'superpoint', 'superglue_encode', 'superglue_match' (the last two when matched)
    timings_ms: dict = field(default_factory=dict)


@dataclass
class PairResult:
    """Two images matched with each other (match_pair). Correspondence k: points0[k] <-> points1[k]."""
    points0: np.ndarray              # [K, 2] float32, pixels of image0 as given
    points1: np.ndarray              # [K, 2] float32, pixels of image1 as given
    confidence: np.ndarray           # [K] float32
    indices0: np.ndarray             # [K] int32, into features0's keypoints
    indices1: np.ndarray             # [K] int32, into features1's keypoints
    inlier: np.ndarray               # [K] uint8; empty when verification is off
    keypoint_count0: int
    keypoint_count1: int
    features0: Features
    features1: Features
    timings_ms: dict = field(default_factory=dict)  # 'extract', 'match', 'verify', 'total', 'superglue_*'


@dataclass
class _Keyframe:
    id: int
    stamp_s: float
    features: Features
    keypoints: np.ndarray  # [N, 2] float32 original pixels, fetched from the device once


@dataclass
class _Correspondences:
    points0: np.ndarray
    points1: np.ndarray
    confidence: np.ndarray
    indices0: np.ndarray
    indices1: np.ndarray
    inlier: np.ndarray

    @classmethod
    def empty(cls):
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.uint8))

    @classmethod
    def from_match(cls, match: MatchResult, keypoints0: np.ndarray, keypoints1: np.ndarray,
                   verification: Verification):
        indices0, indices1, confidence = match.pairs()
        points0, points1 = keypoints0[indices0], keypoints1[indices1]
        return cls(points0.astype(np.float32), points1.astype(np.float32), confidence.astype(np.float32),
                   indices0.astype(np.int32), indices1.astype(np.int32), verification.inliers(points0, points1))


def _ms(start: float, end: float) -> float:
    return (end - start) * 1e3


class KeyframeFrontend:
    """Keyframe matching over a stream of frames with one Matcher (see the module doc).

    policy: KeyframePolicy; verification: geometry.Verification of the correspondences (default off).
    Both can be replaced while running (frontend.policy = ...), the matcher's settings changed with
    configure().
    """

    def __init__(self, matcher: Matcher, policy: KeyframePolicy | None = None,
                 verification: Verification | None = None):
        self.matcher = matcher
        self.policy = KeyframePolicy() if policy is None else policy
        self.verification = Verification() if verification is None else verification
        self._engine = threading.Lock()    # one frame / pair / configure at a time on the matcher
        self._request = threading.Lock()   # guards _requested only: never waits for the models
        self._requested = False
        self._keyframe: _Keyframe | None = None
        self._next_keyframe_id = 0
        self._frame_index = 0
        self._last_stamp_s = -math.inf

    # Live settings: each is replaced as a whole, and a frame reads each once.
    @property
    def policy(self) -> KeyframePolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: KeyframePolicy):
        if not isinstance(policy, KeyframePolicy):
            raise TypeError(f'policy must be a KeyframePolicy, got {type(policy).__name__}')
        self._policy = policy

    @property
    def verification(self) -> Verification:
        return self._verification

    @verification.setter
    def verification(self, verification: Verification):
        if not isinstance(verification, Verification):
            raise TypeError(f'verification must be a geometry.Verification, got {type(verification).__name__}')
        self._verification = verification

    def configure(self, **settings):
        """Matcher.configure (Matcher.MODEL_SETTINGS), applied between frames. The keyframe's
        features stay as they were extracted."""
        with self._engine:
            self.matcher.configure(**settings)

    def request_new_keyframe(self):
        """The next frame to finish matching becomes the keyframe (reason 'requested'). Returns at
        once, also while a frame is being processed."""
        with self._request:
            self._requested = True

    def _take_request(self) -> bool:
        with self._request:
            requested, self._requested = self._requested, False
        return requested

    def process(self, image: np.ndarray, stamp_s: float, color_order: str = 'bgr') -> FrameResult:
        """Match one camera frame against the keyframe and update the keyframe.

        image: as Matcher.extract takes it (grey or colour numpy array, see image.py); stamp_s: its
        capture time in seconds. An image that cannot be processed raises ImageError and leaves the
        state unchanged.
        """
        if isinstance(stamp_s, bool) or not (isinstance(stamp_s, Real) and math.isfinite(stamp_s)):
            raise ValueError(f'stamp_s must be a finite number of seconds, got {stamp_s!r}')
        with self._engine:
            start = time.perf_counter()
            frame = self.matcher.extract(image, color_order)
            frame_keypoints = frame.keypoints_original()
            extracted = matched = verified = time.perf_counter()
            timings = dict(frame.timings_ms)
            keyframe = self._keyframe
            direct = keyframe is None or stamp_s < self._last_stamp_s  # nothing to match against
            if direct:
                reason = 'first' if keyframe is None else 'time_jump'
                self._take_request()  # satisfied by this keyframe
                correspondences = _Correspondences.empty()
            else:
                match = self.matcher.match(keyframe.features, frame)
                matched = time.perf_counter()
                timings.update(match.timings_ms)
                correspondences = _Correspondences.from_match(match, keyframe.keypoints, frame_keypoints,
                                                              self.verification)
                verified = time.perf_counter()
                reason = self._keyframe_reason(len(correspondences.confidence), keyframe, stamp_s)
            if reason:
                self._keyframe = _Keyframe(self._next_keyframe_id, stamp_s, frame, frame_keypoints)
                self._next_keyframe_id += 1
            if direct:
                keyframe = self._keyframe  # the (empty) correspondences refer to the frame itself
            result = FrameResult(
                frame_index=self._frame_index, stamp_s=float(stamp_s),
                keyframe_id=keyframe.id, keyframe_stamp_s=float(keyframe.stamp_s),
                is_new_keyframe=bool(reason), new_keyframe_id=self._keyframe.id if reason else None,
                keyframe_reason=reason,
                keyframe_features=keyframe.features, frame_features=frame,
                keyframe_points=correspondences.points0, frame_points=correspondences.points1,
                confidence=correspondences.confidence,
                keyframe_indices=correspondences.indices0, frame_indices=correspondences.indices1,
                inlier=correspondences.inlier,
                keyframe_keypoint_count=len(keyframe.keypoints), frame_keypoint_count=len(frame_keypoints),
                timings_ms={**timings, 'extract': _ms(start, extracted), 'match': _ms(extracted, matched),
                            'verify': _ms(matched, verified), 'total': _ms(start, time.perf_counter())})
            self._frame_index += 1
            self._last_stamp_s = stamp_s
            return result

    def _keyframe_reason(self, num_matches: int, keyframe: _Keyframe, stamp_s: float) -> str:
        """Why this matched frame becomes the new keyframe, or ''."""
        policy = self.policy
        if self._take_request():
            return 'requested'
        if num_matches < policy.min_matches:
            return 'few_matches'
        if num_matches / max(len(keyframe.keypoints), 1) < policy.min_match_ratio:
            return 'low_match_ratio'
        if policy.max_age_s > 0 and stamp_s - keyframe.stamp_s > policy.max_age_s:
            return 'max_age'
        return ''

    def match_pair(self, image0: np.ndarray, image1: np.ndarray, color_order0: str = 'bgr',
                   color_order1: str = 'bgr') -> PairResult:
        """Match two images with the front-end's matcher and verification; the keyframe is untouched."""
        with self._engine:
            start = time.perf_counter()
            features0 = self.matcher.extract(image0, color_order0)
            features1 = self.matcher.extract(image1, color_order1)
            keypoints0, keypoints1 = features0.keypoints_original(), features1.keypoints_original()
            extracted = time.perf_counter()
            match = self.matcher.match(features0, features1)
            matched = time.perf_counter()
            correspondences = _Correspondences.from_match(match, keypoints0, keypoints1, self.verification)
            end = time.perf_counter()
        return PairResult(
            points0=correspondences.points0, points1=correspondences.points1, confidence=correspondences.confidence,
            indices0=correspondences.indices0, indices1=correspondences.indices1, inlier=correspondences.inlier,
            keypoint_count0=len(keypoints0), keypoint_count1=len(keypoints1),
            features0=features0, features1=features1,
            timings_ms={**match.timings_ms, 'extract': _ms(start, extracted), 'match': _ms(extracted, matched),
                        'verify': _ms(matched, end), 'total': _ms(start, end)})
