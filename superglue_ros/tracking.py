"""Keyframe tracker of one camera: pure state, computes nothing.

For every frame it is given the frame's features, its correspondences with the current keyframe
(or None when keyframe_for() said there is nothing to match against) and its stamp. It decides
whether the frame becomes the keyframe, keeps the keyframe, its id and the track ids of its
keypoints, and returns the FrameResult. Every keyframe rule lives here and only here:

  nothing to match against  keyframe_for(): no keyframe yet ('first'), the frame's frame_id is
                            not the keyframe's ('frame_changed': another optical frame, e.g. a
                            driver reconfigured or two cameras on one topic: its pixels do not
                            compare with the keyframe's), or the stamp went back by more than
                            time_jump_threshold_s ('time_jump': a restarted bag or camera;
                            smaller backward steps are stamp jitter and are matched)
  new keyframe after a match  a request ('requested'), fewer matches than min_matches
                            ('few_matches'), matches / keyframe keypoints below min_match_ratio
                            ('low_match_ratio'), keyframe older than max_age_s ('max_age')
  track ids                 each keyframe keypoint has a track id (uint64). A new keyframe's
                            keypoint matched to the old keyframe (and an inlier, when geometric
                            verification is on) inherits that keypoint's track id; every other
                            keypoint gets a new id. Ids are never reused within a camera, as the
                            feature trackers of VINS-Mono and rtabmap number their landmarks.
  keyframe store            the keyframe is the newest entry of the camera's KeyframeStore
                            (keyframes.py), which keeps the earlier ones and names each new
                            keyframe's loop candidates (FrameResult.loop_candidates).

Threads: keyframe_for() and update() belong to the camera's frame thread; request_new_keyframe()
and the policy setter may be called from any thread.
"""
import math
import threading
from dataclasses import dataclass, field, fields, replace

import numpy as np

from .keyframes import KeyframeStore, LoopCandidates
from .matcher import Features
from .pose import RelativePose
from .settings import check, defaults

# Why a frame became the keyframe; when several rules fire, the first one listed is given.
KEYFRAME_REASONS = ('first', 'frame_changed', 'time_jump', 'requested', 'few_matches', 'low_match_ratio', 'max_age')


@dataclass(frozen=True)
class KeyframePolicy:
    """When a frame becomes the keyframe (module doc). Defaults and accepted values: settings.py
    (keyframe_min_matches, keyframe_min_match_ratio, keyframe_max_age_s, time_jump_threshold_s)."""
    min_matches: int = defaults('tracker')['keyframe_min_matches']            # 0: off
    min_match_ratio: float = defaults('tracker')['keyframe_min_match_ratio']  # 0: off
    max_age_s: float = defaults('tracker')['keyframe_max_age_s']              # seconds, 0: off
    time_jump_threshold_s: float = defaults('tracker')['time_jump_threshold_s']

    # field -> setting name
    SETTINGS = {'min_matches': 'keyframe_min_matches', 'min_match_ratio': 'keyframe_min_match_ratio',
                'max_age_s': 'keyframe_max_age_s', 'time_jump_threshold_s': 'time_jump_threshold_s'}

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, check(self.SETTINGS[f.name], getattr(self, f.name)))

    @classmethod
    def from_settings(cls, values: dict, current: 'KeyframePolicy | None' = None) -> 'KeyframePolicy':
        """`current` (default: the defaults) with the tracker settings among `values` applied."""
        return replace(current or cls(), **{f: values[s] for f, s in cls.SETTINGS.items() if s in values})


@dataclass
class Correspondences:
    """Correspondences of a frame with its keyframe (or of two images): k-th keyframe point <-> k-th
    frame point. Pixel coordinates of the images as given; normalised ones are (x, y) on the
    z = 1 plane of the calibrated camera with distortion removed, [0, 2] without a calibration."""
    points0: np.ndarray              # [K, 2] float32, keyframe / image0 pixels
    points1: np.ndarray              # [K, 2] float32, frame / image1 pixels
    confidence: np.ndarray           # [K] float32, SuperGlue matching score
    indices0: np.ndarray             # [K] int32, into the keyframe's / image0's keypoints
    indices1: np.ndarray             # [K] int32, into the frame's / image1's keypoints
    inlier: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # [K] uint8; [0] when unverified
    normalized0: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    normalized1: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    verified_with: str = 'none'      # geometric model the inliers come from ('fundamental' when an
                                     # 'essential' verification had no calibration)
    model: np.ndarray | None = None  # [3, 3] float64 matrix of that model (geometry.Verification.fit), or None
    pose: RelativePose = field(default_factory=RelativePose)  # T_keyframe_frame / T_image0_image1 (pose.py)

    @classmethod
    def empty(cls) -> 'Correspondences':
        return cls.from_matches(np.zeros(0, np.int64), np.zeros(0, np.float32),
                                np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32))

    @classmethod
    def from_matches(cls, matches0: np.ndarray, scores0: np.ndarray, keypoints0: np.ndarray,
                     keypoints1: np.ndarray) -> 'Correspondences':
        """From SuperGlue's matches0 [N0] (index into keypoints1, -1 = none) and matching_scores0
        [N0], with keypoints0 [N0, 2] and keypoints1 [N1, 2] in pixels of the images as given."""
        indices0 = np.flatnonzero(np.asarray(matches0) > -1)
        indices1 = np.asarray(matches0)[indices0]
        return cls(keypoints0[indices0].astype(np.float32), keypoints1[indices1].astype(np.float32),
                   np.asarray(scores0, np.float32)[indices0], indices0.astype(np.int32), indices1.astype(np.int32))

    def kept(self) -> np.ndarray:
        """[K] bool: the correspondences a new keyframe inherits track ids through (the inliers when
        verified, otherwise all)."""
        return tracks_continue(self.inlier, self.verified_with, len(self.confidence))


def tracks_continue(inlier: np.ndarray, verified_with: str, count: int) -> np.ndarray:
    """[count] bool: the correspondences that continue their tracks: the inliers when verified, otherwise all."""
    if len(inlier) == count and verified_with != 'none':
        return inlier.astype(bool)
    return np.ones(count, bool)


@dataclass
class Keyframe:
    """The keyframe of a camera: its features (on the matcher's device, their SuperGlue encoding
    cached on first match), keypoints in pixels of the image as given, and track ids."""
    id: int
    stamp_s: float
    features: Features
    keypoints: np.ndarray            # [N, 2] float32 pixels of the image as given
    track_ids: np.ndarray            # [N] uint64
    calibration: object = None       # geometry.Calibration of the camera when it was taken, or None
    depth: np.ndarray | None = None  # [N] float32 metres (z, optical frame) per keypoint from a stereo pair,
                                     # NaN where unknown; None for a monocular camera
    frame_id: str = ''               # the optical frame of its image (std_msgs/Header.frame_id; '' when unknown)


@dataclass
class FrameResult:
    """One processed frame. Correspondence k: keyframe_points[k] <-> frame_points[k]."""
    frame_index: int                 # frames processed by this camera since start: 0, 1, ...
    stamp_s: float                   # this frame's stamp, seconds
    keyframe_id: int                 # keyframe the correspondences refer to (first / frame_changed / time_jump:
                                     # this frame's new id)
    keyframe_stamp_s: float          # that keyframe's stamp
    is_new_keyframe: bool            # this frame is the keyframe for the following frames
    new_keyframe_id: int | None      # its id when is_new_keyframe, else None
    keyframe_reason: str             # why (one of KEYFRAME_REASONS), '' when not a new keyframe
    keyframe_features: Features      # the keyframe's (first / frame_changed / time_jump: this frame's, the same object)
    frame_features: Features
    keyframe_points: np.ndarray      # [K, 2] float32, pixels of the keyframe image as given
    frame_points: np.ndarray         # [K, 2] float32, pixels of this image as given
    confidence: np.ndarray           # [K] float32, SuperGlue matching score
    keyframe_indices: np.ndarray     # [K] int32, into keyframe_features' keypoints
    frame_indices: np.ndarray        # [K] int32, into frame_features' keypoints
    inlier: np.ndarray               # [K] uint8, 1 = fits the two-view geometry; empty when verification is off
    track_ids: np.ndarray            # [K] uint64, track id of each correspondence's keyframe keypoint
    keyframe_points_normalized: np.ndarray  # [K, 2] float32 normalised image plane; [0, 2] without calibration
    frame_points_normalized: np.ndarray
    verified_with: str               # model the inliers come from: 'none', 'fundamental', 'homography', 'essential'
    relative_pose: RelativePose      # T_keyframe_frame (pose.py): 'essential' or 'pnp' when verified_with is
                                     # 'essential', else source 'none'
    keyframe_keypoint_count: int
    frame_keypoint_count: int
    new_keyframe_track_ids: np.ndarray | None  # [frame_keypoint_count] uint64 when is_new_keyframe, else None
    stereo: object = None            # stereo.StereoResult of the left image of a rig (pipeline.py), else None
    # milliseconds per stage, filled by the pipeline: 'preprocess', 'upload', 'superpoint', 'superglue',
    # 'download', 'verify', 'total' (see pipeline.py)
    timings_ms: dict = field(default_factory=dict)
    # the new keyframe's loop candidates among the camera's earlier keyframes (keyframes.py); None when
    # this frame is not a new keyframe
    loop_candidates: LoopCandidates | None = None


class KeyframeTracker:
    """Keyframe state of one camera (module doc). policy: KeyframePolicy, replaceable live.
    keyframes: the camera's KeyframeStore (default: one of the default size)."""

    def __init__(self, policy: KeyframePolicy | None = None, keyframes: KeyframeStore | None = None):
        self.policy = KeyframePolicy() if policy is None else policy
        self.keyframes = KeyframeStore() if keyframes is None else keyframes
        self._request = threading.Lock()   # guards _requested only
        self._requested = False
        self._next_keyframe_id = 0
        self._next_track_id = 0
        self._frame_index = 0
        self._last_stamp_s = -math.inf

    @property
    def policy(self) -> KeyframePolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: KeyframePolicy):
        if not isinstance(policy, KeyframePolicy):
            raise TypeError(f'policy must be a tracking.KeyframePolicy, got {type(policy).__name__}')
        self._policy = policy

    @property
    def keyframe(self) -> Keyframe | None:
        """The current keyframe: the newest entry of the keyframe store."""
        return self.keyframes.newest

    def request_new_keyframe(self):
        """The next frame to be matched becomes the keyframe (reason 'requested'); returns at once."""
        with self._request:
            self._requested = True

    def _take_request(self) -> bool:
        with self._request:
            requested, self._requested = self._requested, False
        return requested

    def keyframe_for(self, stamp_s: float, frame_id: str = '') -> Keyframe | None:
        """The keyframe a frame with this stamp (seconds) and frame_id (its optical frame) is matched
        against, or None when there is nothing to match against (no keyframe yet, another frame_id, or a
        time jump): update() then makes it the keyframe."""
        keyframe = self.keyframe
        if (keyframe is None or keyframe.frame_id != frame_id
                or stamp_s < self._last_stamp_s - self.policy.time_jump_threshold_s):
            return None
        return keyframe

    def update(self, frame: Features, stamp_s: float, correspondences: Correspondences | None,
               calibration=None, depth: np.ndarray | None = None, frame_id: str = '') -> FrameResult:
        """The result of a frame, and the keyframe updated.

        correspondences: the frame's correspondences with the keyframe keyframe_for(stamp_s) returned,
        None when it returned None. calibration: the camera's geometry.Calibration at this frame, and
        depth ([N] float32 metres per frame keypoint, NaN where unknown: the left image of a stereo rig;
        None otherwise), kept with the frame when it becomes the keyframe (Keyframe.depth), as is frame_id
        (the frame's optical frame, as given to keyframe_for)."""
        keyframe, policy = self.keyframe, self.policy
        # as matched: a new keyframe moves the old one's features to the host (keyframes.py)
        keyframe_features = frame if keyframe is None else keyframe.features
        frame_keypoints = frame.keypoints_original()
        direct = correspondences is None
        if direct:
            reason = ('first' if keyframe is None else 'frame_changed' if keyframe.frame_id != frame_id
                      else 'time_jump')
            self._take_request()  # satisfied by this keyframe
            correspondences = Correspondences.empty()
        else:
            matches = len(correspondences.confidence)
            if self._take_request():
                reason = 'requested'
            elif matches < policy.min_matches:
                reason = 'few_matches'
            elif matches / max(len(keyframe.keypoints), 1) < policy.min_match_ratio:
                reason = 'low_match_ratio'
            elif policy.max_age_s > 0 and stamp_s - keyframe.stamp_s > policy.max_age_s:
                reason = 'max_age'
            else:
                reason = ''
        track_ids = np.zeros(0, np.uint64) if direct else keyframe.track_ids[correspondences.indices0]

        new_track_ids = loop_candidates = None
        if reason:
            new_track_ids = np.full(len(frame_keypoints), np.iinfo(np.uint64).max, np.uint64)
            if not direct:
                kept = correspondences.kept()
                new_track_ids[correspondences.indices1[kept]] = track_ids[kept]
            fresh = new_track_ids == np.iinfo(np.uint64).max
            new_track_ids[fresh] = self._next_track_id + np.arange(fresh.sum(), dtype=np.uint64)
            self._next_track_id += int(fresh.sum())
            new_keyframe = Keyframe(self._next_keyframe_id, float(stamp_s), frame, frame_keypoints,
                                    new_track_ids, calibration, depth, frame_id)
            loop_candidates = self.keyframes.add(new_keyframe)
            self._next_keyframe_id += 1
            if direct:
                keyframe, keyframe_features = new_keyframe, frame  # the (empty) correspondences refer to the frame

        result = FrameResult(
            frame_index=self._frame_index, stamp_s=float(stamp_s),
            keyframe_id=keyframe.id, keyframe_stamp_s=keyframe.stamp_s,
            is_new_keyframe=bool(reason), new_keyframe_id=new_keyframe.id if reason else None,
            keyframe_reason=reason, keyframe_features=keyframe_features, frame_features=frame,
            keyframe_points=correspondences.points0, frame_points=correspondences.points1,
            confidence=correspondences.confidence,
            keyframe_indices=correspondences.indices0, frame_indices=correspondences.indices1,
            inlier=correspondences.inlier, track_ids=track_ids,
            keyframe_points_normalized=correspondences.normalized0,
            frame_points_normalized=correspondences.normalized1,
            verified_with=correspondences.verified_with, relative_pose=correspondences.pose,
            keyframe_keypoint_count=len(keyframe.keypoints), frame_keypoint_count=len(frame_keypoints),
            new_keyframe_track_ids=new_track_ids, loop_candidates=loop_candidates)
        self._frame_index += 1
        self._last_stamp_s = float(stamp_s)
        return result
