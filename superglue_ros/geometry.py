"""Two-view geometric verification and camera calibration.

Verification flags the matches consistent with one epipolar geometry (fundamental matrix, any static
scene; essential matrix, the same on calibrated cameras) or one homography (planar scene, pure
rotation), fitted with RANSAC (OpenCV's USAC MAGSAC++ where available, else classic RANSAC).
Calibration maps pixels to the normalised image plane with lens distortion removed, from the fields of
a sensor_msgs/CameraInfo, read without importing ROS, as image_geometry's PinholeCameraModel reads them:
K and P adjusted for the ROI and binning (REP 104), raw images undistorted with K and D, rectified images
(image_proc's image_rect) projected by P with no distortion.
"""
from dataclasses import dataclass, replace
from numbers import Integral, Real

import cv2
import numpy as np

from .settings import check, defaults

METHODS = ('none', 'fundamental', 'homography', 'essential')
# Fewer matches than a model's minimal sample cannot verify anything: all flagged outliers.
# The fundamental matrix takes 8 (OpenCV's RANSAC needs 8; a 7-point fit always explains its 7 points);
# the essential matrix 5 (Nister's five-point solver, which cv2.findEssentialMat runs).
MIN_POINTS = {'fundamental': 8, 'homography': 4, 'essential': 5}
_USAC = getattr(cv2, 'USAC_MAGSAC', None)  # OpenCV >= 4.5

# sensor_msgs/CameraInfo distortion_model -> the lengths of D accepted. sensor_msgs names plumb_bob k1 k2 t1 t2
# k3 and rational_polynomial k1 k2 t1 t2 k3 k4 k5 k6, but image_geometry hands D to OpenCV whatever its length,
# and OpenCV takes 4, 5, 8, 12 or 14 (k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 s3 s4 [tx ty]]]]): drivers publish 4
# (kalibr's radtan), 8 for plumb_bob (five, then zeros) and 14. equidistant: k1 k2 k3 k4 (cv2.fisheye).
# An empty or all-zero D means no distortion, whatever the model (image_geometry's rule).
_OPENCV_LENGTHS = (4, 5, 8, 12, 14)
DISTORTION_MODELS = {'plumb_bob': _OPENCV_LENGTHS, 'rational_polynomial': _OPENCV_LENGTHS, 'equidistant': (4,)}
# Iterative undistortion until the point reprojects within 1e-6 px (cv2.undistortPoints stops after
# 5 iterations by default: up to 5e-4 off on the normalised plane at the corners of a strong lens).
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-6)


def is_calibrated(camera_info) -> bool:
    """True when a sensor_msgs/CameraInfo (or None) carries a calibration: K not all zero (REP 104:
    an uncalibrated camera publishes K = 0)."""
    return camera_info is not None and bool(np.any(np.asarray(camera_info.k, np.float64) != 0))


def _binning(camera_info) -> tuple[int, int]:
    """(binning_x, binning_y) of a camera_info, 0 read as 1 (REP 104)."""
    return tuple(max(1, int(getattr(camera_info, name, 0) or 0)) for name in ('binning_x', 'binning_y'))


def _roi(camera_info) -> tuple[int, int, int, int]:
    """(x_offset, y_offset, width, height) of a camera_info's ROI in full-resolution pixels; an all-zero ROI
    (or none) is the full image (REP 104)."""
    roi = getattr(camera_info, 'roi', None)
    fields = tuple(int(getattr(roi, name, 0)) for name in ('x_offset', 'y_offset', 'width', 'height'))
    return fields if any(fields) else (0, 0, int(getattr(camera_info, 'width', 0)), int(getattr(camera_info, 'height', 0)))


def image_size(camera_info) -> tuple[int, int] | None:
    """(width, height) in pixels of the images a sensor_msgs/CameraInfo describes: its ROI (the full
    width x height when the ROI is all zero) divided by its binning, as image_geometry's
    reducedResolution(); None when it gives no size (width 0 and no ROI)."""
    _, _, width, height = _roi(camera_info)
    if not (width and height):
        return None
    binning_x, binning_y = _binning(camera_info)
    return width // binning_x, height // binning_y


def size_problem(camera_info, size: tuple[int, int], images: str = 'the images') -> str | None:
    """Why a camera_info does not describe images of `size` (width, height): one phrase naming both sizes and
    the ROI / binning that gave the camera_info's ('it is for 1280x960 images with binning 2x2, i.e. 640x480,
    <images> are 320x240', or 'its ROI 640x480 at (600, 0) runs past the 640x480 sensor'); None when it does,
    or gives no size."""
    x, y, width, height = _roi(camera_info)
    sensor = int(getattr(camera_info, 'width', 0)), int(getattr(camera_info, 'height', 0))
    if all(sensor) and (x + width > sensor[0] or y + height > sensor[1]):
        return f'its ROI {width}x{height} at ({x}, {y}) runs past the {sensor[0]}x{sensor[1]} sensor'
    expected = image_size(camera_info)
    if expected is None or tuple(size) == expected:
        return None
    how = reduction(camera_info)
    said = f'it is for {camera_info.width}x{camera_info.height} images' + (
        f' with {how}, i.e. {expected[0]}x{expected[1]}' if how else '')
    return f'{said}, {images} are {size[0]}x{size[1]}'


def reduction(camera_info) -> str:
    """The ROI and binning of a camera_info in words ('ROI 640x480 at (8, 4), binning 2x2'), '' without."""
    roi, binning = _roi(camera_info), _binning(camera_info)
    full = (0, 0, int(getattr(camera_info, 'width', 0)), int(getattr(camera_info, 'height', 0)))
    return ', '.join(([f'ROI {roi[2]}x{roi[3]} at ({roi[0]}, {roi[1]})'] if roi != full else [])
                     + ([f'binning {binning[0]}x{binning[1]}'] if binning != (1, 1) else []))


def reduced_matrices(camera_info) -> tuple[np.ndarray, np.ndarray]:
    """K [3, 3] and P [3, 4] (float64, pixels) of a sensor_msgs/CameraInfo for the images it describes, as
    image_geometry's PinholeCameraModel.fromCameraInfo adjusts them (REP 104): the ROI offset subtracted from
    the principal points, then fx, cx, Tx divided by binning_x and fy, cy, Ty by binning_y. The message's K
    and P are for the full-resolution sensor. ValueError when K is not 9 numbers or P not 12."""
    k, p = np.asarray(camera_info.k, np.float64).reshape(-1), np.asarray(getattr(camera_info, 'p', np.zeros(12)),
                                                                         np.float64).reshape(-1)
    if k.size != 9 or p.size != 12:
        raise ValueError(f'camera_info K must be 9 numbers and P 12, got {k.size} and {p.size}')
    k, p = k.reshape(3, 3).copy(), p.reshape(3, 4).copy()
    x, y, _, _ = _roi(camera_info)
    k[0, 2] -= x
    k[1, 2] -= y
    p[0, 2] -= x
    p[1, 2] -= y
    binning_x, binning_y = _binning(camera_info)
    k[0, :] /= [binning_x, 1, binning_x]
    k[1, :] /= [1, binning_y, binning_y]
    p[0, :] /= [binning_x, 1, binning_x, binning_x]
    p[1, :] /= [1, binning_y, binning_y, binning_y]
    return k, p


@dataclass(frozen=True)
class Calibration:
    """Intrinsics of one camera as sensor_msgs/CameraInfo gives them.

    k: the 3x3 camera matrix K, row-major (fx 0 cx; 0 fy cy; 0 0 1), pixels.
    distortion_model: 'plumb_bob', 'rational_polynomial' or 'equidistant' (DISTORTION_MODELS), with d
    their coefficients; an empty or all-zero d means no distortion (any model name then).
    rectified: the images are rectified and k is the left 3x3 of the camera_info's P (no distortion):
    image_geometry's projectPixelTo3dRay, ((u - cx') / fx', (v - cy') / fy') in the rectified camera's frame.
    Raises ValueError naming the field when K is not a camera matrix or the model / d do not fit.
    """
    k: tuple
    distortion_model: str = 'plumb_bob'
    d: tuple = ()
    rectified: bool = False

    def __post_init__(self):
        k = np.asarray(self.k, np.float64).reshape(-1)
        d = np.asarray(self.d, np.float64).reshape(-1)
        object.__setattr__(self, 'k', tuple(k.tolist()))  # hashable, comparable value object
        object.__setattr__(self, 'd', tuple(d.tolist()))
        if k.size != 9 or not np.isfinite(k).all():
            raise ValueError(f'camera matrix K must be 9 finite numbers (3x3 row-major), got {list(self.k)}')
        fx, skew, _, zero0, fy, _, zero1, zero2, one = k
        if not (fx > 0 and fy > 0 and zero0 == zero1 == zero2 == 0 and one == 1):
            raise ValueError(f'K = {list(self.k)} is not a camera matrix [fx, 0, cx, 0, fy, cy, 0, 0, 1] '
                             'with fx, fy > 0 pixels: check the camera calibration')
        if not np.isfinite(d).all():
            raise ValueError(f'distortion coefficients D must be finite, got {list(self.d)}')
        if self.rectified and self.distorted:
            raise ValueError(f'a rectified camera has no distortion, got D = {list(self.d)}')
        if self.distorted:
            lengths = DISTORTION_MODELS.get(self.distortion_model)
            if lengths is None:
                raise ValueError(f'unsupported distortion_model {self.distortion_model!r}; supported: '
                                 f'{", ".join(DISTORTION_MODELS)} (or D empty / all zero for none)')
            if d.size not in lengths:
                raise ValueError(f'distortion_model {self.distortion_model!r} takes '
                                 f'{" or ".join(map(str, lengths))} coefficients in D, got {d.size}: {list(self.d)}')

    @classmethod
    def from_camera_info(cls, camera_info, rectified: bool = False) -> 'Calibration | None':
        """The calibration of a sensor_msgs/CameraInfo for the images it describes (K, P adjusted for its
        ROI and binning: reduced_matrices), None when there is none (camera_info None or K all zero).

        camera_info: a sensor_msgs/CameraInfo, or any object with k, distortion_model and d (and optionally
        p, width, height, binning_x, binning_y, roi). rectified: the images are rectified (image_proc's
        image_rect): the rays come from P, with no distortion; ValueError when P is all zero. Otherwise K
        and D (the raw camera). The image size is not checked here: size_problem. ValueError as the
        constructor."""
        if not is_calibrated(camera_info):
            return None
        k, p = reduced_matrices(camera_info)
        if rectified:
            if not p.any():
                raise ValueError('the images are rectified but the camera_info has no P (all zero): publish the '
                                 'rectified calibration, or take the camera off rectified_cameras')
            try:
                return cls(p[:, :3].reshape(-1), 'plumb_bob', (), rectified=True)
            except ValueError as e:
                raise ValueError(f'P = {np.asarray(camera_info.p).tolist()}: its left 3x3 {e}') from None
        return cls(k.reshape(-1), camera_info.distortion_model, camera_info.d)

    @property
    def camera_matrix(self) -> np.ndarray:
        """K as a float64 [3, 3] array."""
        return np.array(self.k).reshape(3, 3)

    @property
    def focal_px(self) -> float:
        """(fx + fy) / 2, pixels: the scale between pixel and normalised-plane distances."""
        return (self.k[0] + self.k[4]) / 2

    @property
    def distorted(self) -> bool:
        return any(self.d)

    @property
    def model(self) -> str:
        """Which camera model maps the pixels, in words (the node logs it once per camera)."""
        if self.rectified:
            return 'rectified input, rays from P (no distortion)'
        if self.distorted:
            return f'{self.distortion_model} with {len(self.d)} coefficients, undistorted with K and D'
        return 'no distortion (D empty or all zero), rays from K'

    def normalize(self, points) -> np.ndarray:
        """Pixels [N, 2] (x, y) of the distorted image -> [N, 2] float64 (x, y) on the normalised image
        plane (z = 1 in the camera frame, +x right, +y down), distortion removed.

        plumb_bob / rational_polynomial: cv2.undistortPoints; equidistant: cv2.fisheye.undistortPoints;
        both iterated to 1e-6 px (_UNDISTORT_CRITERIA). ValueError for points not of shape [N, 2] or not finite.
        """
        points = _check_points(points)
        if not len(points):
            return np.zeros((0, 2))
        pixels, K, D = points.astype(np.float64).reshape(-1, 1, 2), self.camera_matrix, np.array(self.d)
        if not self.distorted:
            D = np.zeros(0)
        if self.distortion_model == 'equidistant' and self.distorted:
            normalised = cv2.fisheye.undistortPoints(pixels, K, D, criteria=_UNDISTORT_CRITERIA)
        else:
            normalised = cv2.undistortPoints(pixels, K, D, criteria=_UNDISTORT_CRITERIA)
        return normalised.reshape(-1, 2)


@dataclass(frozen=True)
class Verification:
    """Which model to fit and how: the defaults are the node's (verification off).

    'essential' fits E = [t]x R to the normalised points of both images (Calibration.normalize, each image
    with its own calibration). The threshold stays in pixels: it is threshold_px / f on the normalised
    plane, f = (fx0 + fy0 + fx1 + fy1) / 4 the mean focal length. As cv2.findEssentialMat's two-camera
    overload does, the undistorted points are handed to OpenCV scaled by f with camera matrix
    diag(f, f, 1) (measured here: MAGSAC++ on the unit-focal points with threshold / f lost true inliers).
    A pair where either image has no calibration falls back to 'fundamental' on the pixels: method_for()
    says which model a pair gets, so the caller can warn.
    """
    # defaults and accepted values of method / threshold_px: settings.py (geometric_verification,
    # ransac_threshold_px), as KeyframePolicy's (tracking.py)
    method: str = defaults('verification')['geometric_verification']   # one of METHODS
    threshold_px: float = defaults('verification')['ransac_threshold_px']  # RANSAC inlier threshold, pixels
    confidence: float = 0.999    # RANSAC stops when the model is found with this probability
    max_iterations: int = 10000

    # field -> setting name
    SETTINGS = {'method': 'geometric_verification', 'threshold_px': 'ransac_threshold_px'}

    def __post_init__(self):
        for name, setting in self.SETTINGS.items():
            object.__setattr__(self, name, check(setting, getattr(self, name)))
        if not (isinstance(self.confidence, Real) and 0 < self.confidence < 1):
            raise ValueError(f'verification confidence must be a number in (0, 1), got {self.confidence!r}')
        if not (isinstance(self.max_iterations, Integral) and self.max_iterations > 0):
            raise ValueError(f'verification max_iterations must be a positive integer, got {self.max_iterations!r}')

    @classmethod
    def from_settings(cls, values: dict, current: 'Verification | None' = None) -> 'Verification':
        """`current` (default: the defaults) with geometric_verification / ransac_threshold_px of `values`."""
        return replace(current or cls(), **{f: values[s] for f, s in cls.SETTINGS.items() if s in values})

    @property
    def enabled(self) -> bool:
        return self.method != 'none'

    def method_for(self, calibration0: Calibration | None = None, calibration1: Calibration | None = None) -> str:
        """The model fitted to a pair of images with these calibrations (None: uncalibrated): the method,
        except 'essential' -> 'fundamental' unless both images are calibrated."""
        for name, calibration in (('calibration0', calibration0), ('calibration1', calibration1)):
            if not (calibration is None or isinstance(calibration, Calibration)):
                raise TypeError(f'{name} must be a geometry.Calibration or None (build it with '
                                f'Calibration.from_camera_info), got {type(calibration).__name__}')
        if self.method == 'essential' and (calibration0 is None or calibration1 is None):
            return 'fundamental'
        return self.method

    def normalized_threshold(self, calibration0: Calibration, calibration1: Calibration) -> float:
        """threshold_px on the normalised image plane: threshold_px / f, f the mean focal length of the
        two cameras (class doc)."""
        return float(self.threshold_px) / _mean_focal_px(calibration0, calibration1)

    def inliers(self, points0, points1, calibration0: Calibration | None = None,
                calibration1: Calibration | None = None, normalized=None) -> np.ndarray:
        """Inlier mask of the correspondences points0[i] <-> points1[i]: fit()'s first half."""
        return self.fit(points0, points1, calibration0, calibration1, normalized)[0]

    def fit(self, points0, points1, calibration0: Calibration | None = None, calibration1: Calibration | None = None,
            normalized=None) -> tuple[np.ndarray, np.ndarray | None]:
        """The model of method_for() fitted to the correspondences points0[i] <-> points1[i], and its inliers.

        points0, points1: [K, 2] (x, y) pixels of image 0 and image 1; calibration0 / calibration1: their
        cameras (used by 'essential' only; see method_for). normalized: (calibration0.normalize(points0),
        calibration1.normalize(points1)) when the caller has them already, else None (computed here, for
        'essential' only). Returns (inlier, model): inlier uint8 [K], 1 = inlier; all zeros when either
        image has fewer distinct points than the model's minimal sample or no model was found; empty
        when the method is 'none'. model: the 3x3 float64 matrix fitted, None when there is none:
        'fundamental' F with [p1, 1]^T F [p0, 1] = 0 (pixels), 'homography' H with p1 ~ H p0 (pixels),
        'essential' E with [n1, 1]^T E [n0, 1] = 0 (normalised points; pose.relative_pose takes it).
        ValueError for points of another shape, of different lengths, or not finite.
        """
        points0, points1 = _check_points(points0, 'points0'), _check_points(points1, 'points1')
        if len(points0) != len(points1):
            raise ValueError(f'points0 and points1 must have the same length, got {len(points0)} and {len(points1)}')
        method = self.method_for(calibration0, calibration1)
        if method == 'none':
            return np.zeros(0, np.uint8), None
        points0, points1 = np.ascontiguousarray(points0, np.float32), np.ascontiguousarray(points1, np.float32)
        if min(len(np.unique(points, axis=0)) for points in (points0, points1)) < MIN_POINTS[method]:
            return np.zeros(len(points0), np.uint8), None  # fewer distinct points than a minimal sample
        if method == 'fundamental':
            model, mask = cv2.findFundamentalMat(points0, points1, _USAC if _USAC is not None else cv2.FM_RANSAC,
                                                 float(self.threshold_px), self.confidence, self.max_iterations)
        elif method == 'homography':
            model, mask = cv2.findHomography(points0, points1, _USAC if _USAC is not None else cv2.RANSAC,
                                             float(self.threshold_px), maxIters=self.max_iterations,
                                             confidence=self.confidence)
        else:
            focal = _mean_focal_px(calibration0, calibration1)
            normalized0, normalized1 = normalized or (calibration0.normalize(points0), calibration1.normalize(points1))
            model, mask = cv2.findEssentialMat(normalized0 * focal, normalized1 * focal, np.diag([focal, focal, 1.0]),
                                               _USAC if _USAC is not None else cv2.RANSAC, self.confidence,
                                               float(self.threshold_px), self.max_iterations)
        if mask is None or model is None or model.shape[0] < 3:  # degenerate configuration: no model
            return np.zeros(len(points0), np.uint8), None
        # a minimal solver can return several solutions stacked (3k x 3); RANSAC's best is the first
        return (mask.reshape(-1) > 0).astype(np.uint8), np.asarray(model[:3], np.float64)


def _mean_focal_px(calibration0: Calibration, calibration1: Calibration) -> float:
    return (calibration0.focal_px + calibration1.focal_px) / 2


def _check_points(points, name: str = 'points') -> np.ndarray:
    points = np.asarray(points)
    if points.dtype.kind not in 'iuf' or points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'{name} must be an array of shape [K, 2] (x, y) of numbers, got shape {points.shape} '
                         f'and dtype {points.dtype}')
    if not np.isfinite(points).all():
        raise ValueError(f'{name} contains NaN or inf')
    return points
