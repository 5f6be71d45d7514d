"""Stereo rigs: pairing images by stamp, the pair's geometry from its camera_infos, left-right
verification, disparity and depth. Pure: no ROS, no tensors.

    pairer = StampPairer(tolerance_s=0.005)              # software-synchronised cameras; 0: equal stamps
    for left, right in pairer.add(LEFT, stamp_ns, msg):  # pairs as soon as both halves are there
        ...
    geometry = StereoGeometry.from_camera_infos(left_info, right_info)   # None without P
    stereo = StereoVerification(row_threshold_px=2.0).verify(correspondences, geometry, left_keypoint_count)
    stereo.depth                                         # [K] metres, NaN where unknown
    stereo.keypoint_depth                                # [N] metres per left keypoint (Keyframe.depth)

Conventions (sensor_msgs/CameraInfo, image_pipeline): an image on a rectified topic is projected by P,
not by K and D. For the right camera of a rectified pair P = [fx' 0 cx' Tx; 0 fy' cy' 0; 0 0 1 0] with
Tx = -fx' * B, B the baseline in metres (the right camera sits B along the left camera's +x, ROS optical
frame: x right, y down, z forward). A point at depth Z (metres along the left camera's z) seen at
x_left in the left image is at x_right = x_left - fx' B / Z in the right one, on the same row, so

    disparity d = x_left - x_right (pixels),   Z = fx' B / (d - (cx_left - cx_right))

(stereo_image_proc's DisparityImage, whose delta_d is the cx difference; 0 with equal cx).
"""
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from .geometry import Calibration, Verification, reduced_matrices
from .settings import check, defaults
from .tracking import Correspondences, FrameResult

LEFT, RIGHT = 0, 1
NO_TRACK = np.iinfo(np.uint64).max  # track id of a stereo match whose left keypoint has none
PAIR_QUEUE_SIZE = 10  # frames of one side kept waiting for their partner (message_filters' queue_size)


class StampPairer:
    """Pairs the frames of a left and a right camera by stamp, like message_filters' TimeSynchronizer
    (tolerance 0: equal stamps) and, in spirit, its ApproximateTimeSynchronizer (the nearest stamp
    within the tolerance). Frames never pair with a frame of another time.

    Stamps are integer nanoseconds (header sec * 10**9 + nanosec) and increase on each side, except when
    they jump back (a restarted bag or driver): frames of before and after the jump still pair.
    A frame is dropped, and counted in `unpaired`, once it cannot be paired any more: the other side
    has a frame stamped more than the tolerance after it, or more than `queue_size` frames of its side
    are waiting. Not thread-safe: call add() from one thread (the node's callbacks hold a lock).
    """

    def __init__(self, tolerance_s: float = 0.0, queue_size: int = PAIR_QUEUE_SIZE):
        self.tolerance_ns = round(check('stereo_sync_tolerance_s', tolerance_s) * 1e9)
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f'queue_size must be an integer >= 1, got {queue_size!r}')
        self.queue_size = queue_size
        self._waiting = (deque(), deque())  # per side: (stamp_ns, item), oldest first
        self.unpaired = [0, 0]              # frames dropped without a partner, left and right

    def add(self, side: int, stamp_ns: int, item) -> list[tuple[object, object]]:
        """Offer a frame of `side` (LEFT or RIGHT); the (left item, right item) pairs it completes
        (none or one)."""
        if side not in (LEFT, RIGHT):
            raise ValueError(f'side must be LEFT (0) or RIGHT (1), got {side!r}')
        mine, other = self._waiting[side], self._waiting[1 - side]
        # the other side's frames stamped before this one by more than the tolerance can no longer pair
        while other and other[0][0] < stamp_ns - self.tolerance_ns:
            other.popleft()
            self.unpaired[1 - side] += 1
        # the nearest by a linear search (at most queue_size frames): after stamps jump back (a restarted bag
        # or driver) a queue holds the frames of before and after the jump, not in stamp order
        stamps = [stamp for stamp, _ in other]
        nearest = min(range(len(stamps)), key=lambda j: abs(stamps[j] - stamp_ns), default=None)
        if nearest is None or abs(stamps[nearest] - stamp_ns) > self.tolerance_ns:
            mine.append((stamp_ns, item))
            if len(mine) > self.queue_size:
                mine.popleft()
                self.unpaired[side] += 1
            return []
        for _ in range(nearest):  # older frames of the other side: their partner has gone by
            other.popleft()
            self.unpaired[1 - side] += 1
        _, partner = other.popleft()
        while mine:  # this side's older frames waited for a partner in vain
            mine.popleft()
            self.unpaired[side] += 1
        return [(item, partner) if side == LEFT else (partner, item)]


def _matrix(values, size: int, name: str) -> np.ndarray:
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size != size or not np.isfinite(values).all():
        raise ValueError(f'{name} must be {size} finite numbers, got {values.tolist()}')
    return values


@dataclass(frozen=True)
class StereoGeometry:
    """The two cameras of a rig as their sensor_msgs/CameraInfo give them: P (3x4, row-major, pixels of
    the rectified image, adjusted for ROI and binning as geometry.reduced_matrices) of each, and whether the
    images are rectified.

    fx, cx: of the left P; baseline_m = -Tx / fx' from the right P (module doc). ValueError naming the
    field when a P is not a projection matrix [fx 0 cx Tx; 0 fy cy Ty; 0 0 1 0] with fx, fy > 0.
    """
    left_p: tuple
    right_p: tuple
    rectified: bool = False  # the images are rectified: both R are the identity, or the node was told

    def __post_init__(self):
        for name in ('left_p', 'right_p'):
            p = _matrix(getattr(self, name), 12, f'{name} (P of the camera_info)')
            object.__setattr__(self, name, tuple(p.tolist()))
            if not (p[0] > 0 and p[5] > 0 and p[1] == p[4] == p[8] == p[9] == p[11] == 0 and p[10] == 1):
                raise ValueError(f'{name} = {p.tolist()} is not a rectified projection matrix [fx, 0, cx, Tx, 0, fy, cy, '
                                 'Ty, 0, 0, 1, 0] with fx, fy > 0 pixels: check the stereo calibration')

    @classmethod
    def from_camera_infos(cls, left, right, rectified: bool = False) -> 'StereoGeometry | None':
        """From two sensor_msgs/CameraInfo (any objects with k, p and r, optionally binning and roi); None
        when either has no P (all zero: uncalibrated). rectified: the images are rectified whatever R says
        (image_proc's image_rect: both cameras in the node's rectified_cameras); otherwise they are when both
        R are the identity. ValueError as the constructor, or for an R that is not 9 numbers."""
        if left is None or right is None or not (np.any(np.asarray(left.p)) and np.any(np.asarray(right.p))):
            return None
        identity = all(np.allclose(_matrix(info.r, 9, 'R of the camera_info'), np.eye(3).reshape(-1), atol=1e-9)
                       for info in (left, right))
        for info, side in ((left, 'left'), (right, 'right')):
            _matrix(info.p, 12, f'{side}_p (P of the camera_info)')  # a malformed P named by its side
        return cls(reduced_matrices(left)[1].reshape(-1), reduced_matrices(right)[1].reshape(-1), rectified or identity)

    @property
    def fx(self) -> float:
        return self.left_p[0]

    @property
    def baseline_m(self) -> float:
        """B = -Tx / fx' of the right P, metres; 0 when Tx is 0 (not a stereo calibration)."""
        return -self.right_p[3] / self.right_p[0]

    def calibration(self, side: int) -> Calibration:
        """The rectified camera of `side` as a geometry.Calibration: K' = P's left 3x3, no distortion (a
        rectified image is projected by P, not by the camera_info's K and D: image_pipeline's convention)."""
        p = np.asarray(self.left_p if side == LEFT else self.right_p).reshape(3, 4)
        return Calibration(p[:, :3].reshape(-1).tolist(), 'plumb_bob', (), rectified=True)

    def normalize(self, points, side: int) -> np.ndarray:
        """Pixels [K, 2] of a rectified image of `side` -> [K, 2] float32 (x, y) on that rectified camera's
        normalised image plane (z = 1): ((x - cx') / fx', (y - cy') / fy') with its own P."""
        p = self.left_p if side == LEFT else self.right_p
        points = np.asarray(points, np.float64).reshape(-1, 2)
        return np.stack([(points[:, 0] - p[2]) / p[0], (points[:, 1] - p[6]) / p[5]], 1).astype(np.float32)

    def depth(self, disparity) -> np.ndarray:
        """Depth Z = fx' B / (d - (cx_left - cx_right)) in metres of disparities d = x_left - x_right
        (pixels) [K]; NaN where that denominator is not positive (the point would be behind the rig or
        at infinity) or there is no baseline."""
        shifted = np.asarray(disparity, np.float64) - (self.left_p[2] - self.right_p[2])
        with np.errstate(divide='ignore', invalid='ignore'):
            depth = self.fx * self.baseline_m / shifted
        return np.where((shifted > 0) & (self.baseline_m > 0), depth, np.nan).astype(np.float32)


@dataclass
class StereoResult:
    """The left-right matches of one stereo pair. Correspondence k: correspondences.points0[k] (left image)
    <-> points1[k] (right image); indices0 / indices1 index the left / right keypoints."""
    correspondences: Correspondences  # verified_with: 'rectified', 'fundamental' or 'none'
    disparity: np.ndarray             # [K] float32, x_left - x_right, pixels
    depth: np.ndarray                 # [K] float32 metres along the left optical axis; NaN where unknown
    keypoint_depth: np.ndarray        # [N_left] float32 metres per left keypoint (inliers only), NaN elsewhere
    baseline_m: float                 # 0 without a stereo calibration
    right_features: object = None     # matcher.Features of the right image
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # [K] uint64 (with_track_ids)

    def with_track_ids(self, frame: FrameResult) -> 'StereoResult':
        """Each inlier gets the track id of its left keypoint in `frame` (the left image's FrameResult):
        one landmark, one id in both cameras. Left keypoints of a new keyframe all have one; otherwise
        those matched to the keyframe carry their correspondence's. NO_TRACK elsewhere."""
        if frame.is_new_keyframe:
            ids = frame.new_keyframe_track_ids.copy()
        else:
            ids = np.full(frame.frame_keypoint_count, NO_TRACK, np.uint64)
            ids[frame.frame_indices] = frame.track_ids
        c = self.correspondences
        self.track_ids = np.where(c.kept(), ids[c.indices0], NO_TRACK).astype(np.uint64)
        return self


@dataclass(frozen=True)
class StereoVerification:
    """Left-right verification of a rig (settings.py: stereo_row_threshold_px).

    A pair is treated as rectified when the right P has a non-zero Tx and the images are rectified
    (StereoGeometry.rectified: both cameras in rectified_cameras, or both camera_infos have R = identity).
    Then a match is an
    inlier when its rows differ by at most row_threshold_px and its disparity gives a positive depth,
    and it has a depth (module doc). Otherwise `fallback` (the fundamental matrix with the node's
    ransac_threshold_px, OpenCV's USAC MAGSAC) flags the inliers, and there is no depth.
    """
    row_threshold_px: float = defaults('stereo')['stereo_row_threshold_px']
    fallback: Verification = Verification('fundamental')

    SETTINGS = {'row_threshold_px': 'stereo_row_threshold_px'}

    def __post_init__(self):
        for name, setting in self.SETTINGS.items():
            object.__setattr__(self, name, check(setting, getattr(self, name)))
        if not isinstance(self.fallback, Verification) or self.fallback.method != 'fundamental':
            raise ValueError(f'fallback must be a fundamental-matrix geometry.Verification, got {self.fallback!r}')

    @classmethod
    def from_settings(cls, values: dict, current: 'StereoVerification | None' = None) -> 'StereoVerification':
        """`current` (default: the defaults) with the stereo settings of `values`, and ransac_threshold_px
        for the fundamental-matrix fallback."""
        current = current or cls()
        fallback = replace(current.fallback, threshold_px=values.get('ransac_threshold_px',
                                                                     current.fallback.threshold_px))
        return replace(current, fallback=fallback,
                       **{f: values[s] for f, s in cls.SETTINGS.items() if s in values})

    def is_rectified(self, geometry: StereoGeometry | None) -> bool:
        return self.not_rectified_because(geometry) is None

    def not_rectified_because(self, geometry: StereoGeometry | None) -> str | None:
        """Why the pair is not treated as rectified (one phrase for the node's warning), None when it is.
        A right P with Tx > 0 (a negative baseline) is the left camera's P seen from the right one: the
        pair is swapped (every disparity would be negative, so no match could be a rectified inlier)."""
        if geometry is None:
            return 'no camera_info with a P, or one ignored as logged'
        if geometry.baseline_m == 0:
            return 'the right P has Tx = 0: no baseline'
        if geometry.baseline_m < 0:
            return (f'the right P has Tx = {geometry.right_p[3]:g} > 0, a baseline of {geometry.baseline_m:g} m: '
                    'the right camera is on the left, so the pair looks swapped; stereo_pairs takes "left:right"')
        if not geometry.rectified:
            return 'R is not the identity'
        return None

    def verify(self, correspondences: Correspondences, geometry: StereoGeometry | None,
               left_keypoint_count: int) -> StereoResult:
        """The StereoResult of left-right correspondences (pixels of the images as given; completed in
        place: inlier, normalized points from P when the pair is rectified, verified_with)."""
        if not (isinstance(left_keypoint_count, int) and left_keypoint_count >= 0):
            raise ValueError(f'left_keypoint_count must be an integer >= 0, got {left_keypoint_count!r}')
        c = correspondences
        disparity = (c.points0[:, 0] - c.points1[:, 0]).astype(np.float32)
        depth = np.full(len(disparity), np.nan, np.float32)
        if self.is_rectified(geometry):  # P maps rectified images only: raw ones keep no normalised points
            c.normalized0, c.normalized1 = geometry.normalize(c.points0, LEFT), geometry.normalize(c.points1, RIGHT)
            depth = geometry.depth(disparity)
            rows = np.abs(c.points0[:, 1] - c.points1[:, 1]) <= self.row_threshold_px
            c.inlier = (rows & np.isfinite(depth)).astype(np.uint8)
            c.verified_with = 'rectified'
            depth[c.inlier == 0] = np.nan
        else:
            c.inlier = self.fallback.inliers(c.points0, c.points1)
            c.verified_with = 'fundamental'
        keypoint_depth = np.full(left_keypoint_count, np.nan, np.float32)
        keypoint_depth[c.indices0] = depth
        return StereoResult(c, disparity, depth, keypoint_depth, geometry.baseline_m if geometry else 0.0)


def stamp_ns(sec: int, nanosec: int) -> int:
    """A header stamp as integer nanoseconds (exact, unlike float seconds)."""
    return int(sec) * 1_000_000_000 + int(nanosec)

