"""Two-view geometric verification: flag the matches consistent with one epipolar geometry
(fundamental matrix, any static scene) or one homography (planar scene, pure rotation), fitted
with RANSAC (OpenCV's USAC MAGSAC++ where available, else classic RANSAC).
"""
from dataclasses import dataclass
from numbers import Integral, Real

import cv2
import numpy as np

METHODS = ('none', 'fundamental', 'homography')
# Fewer matches than a model's minimal sample cannot verify anything: all flagged outliers.
# The fundamental matrix takes 8 (OpenCV's RANSAC needs 8; a 7-point fit always explains its 7 points).
MIN_POINTS = {'fundamental': 8, 'homography': 4}
_USAC = getattr(cv2, 'USAC_MAGSAC', None)  # OpenCV >= 4.5


@dataclass(frozen=True)
class Verification:
    """Which model to fit and how: the defaults are the node's (verification off)."""
    method: str = 'none'         # one of METHODS
    threshold_px: float = 3.0    # RANSAC inlier threshold: reprojection / epipolar distance in pixels
    confidence: float = 0.999    # RANSAC stops when the model is found with this probability
    max_iterations: int = 10000

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f'verification method must be one of {METHODS}, got {self.method!r}')
        if not (isinstance(self.threshold_px, Real) and 0 < self.threshold_px < float('inf')):
            raise ValueError(f'verification threshold_px must be a positive number of pixels, '
                             f'got {self.threshold_px!r}')
        if not (isinstance(self.confidence, Real) and 0 < self.confidence < 1):
            raise ValueError(f'verification confidence must be a number in (0, 1), got {self.confidence!r}')
        if not (isinstance(self.max_iterations, Integral) and self.max_iterations > 0):
            raise ValueError(f'verification max_iterations must be a positive integer, got {self.max_iterations!r}')

    @property
    def enabled(self) -> bool:
        return self.method != 'none'

    def inliers(self, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
        """Inlier mask of the correspondences points0[i] <-> points1[i].

        points0, points1: [K, 2] (x, y) pixels. Returns uint8 [K], 1 = inlier; all zeros when K is
        below the model's minimal sample or no model was found; empty when the method is 'none'.
        """
        points0, points1 = _check_points(points0, points1)
        if not self.enabled:
            return np.zeros(0, np.uint8)
        if len(points0) < MIN_POINTS[self.method]:
            return np.zeros(len(points0), np.uint8)
        if self.method == 'fundamental':
            _, mask = cv2.findFundamentalMat(points0, points1, _USAC if _USAC is not None else cv2.FM_RANSAC,
                                             float(self.threshold_px), self.confidence, self.max_iterations)
        else:
            _, mask = cv2.findHomography(points0, points1, _USAC if _USAC is not None else cv2.RANSAC,
                                         float(self.threshold_px), maxIters=self.max_iterations,
                                         confidence=self.confidence)
        if mask is None:  # degenerate configuration (e.g. all points equal): no model
            return np.zeros(len(points0), np.uint8)
        return (mask.reshape(-1) > 0).astype(np.uint8)


def _check_points(points0, points1) -> tuple[np.ndarray, np.ndarray]:
    points0 = np.asarray(points0)
    points1 = np.asarray(points1)
    for name, points in (('points0', points0), ('points1', points1)):
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f'{name} must be an array of shape [K, 2] (x, y), got shape {points.shape}')
        if not np.isfinite(points).all():
            raise ValueError(f'{name} contains NaN or inf')
    if len(points0) != len(points1):
        raise ValueError(f'points0 and points1 must have the same length, got {len(points0)} and {len(points1)}')
    # OpenCV wants contiguous float32 [K, 2]
    return np.ascontiguousarray(points0, np.float32), np.ascontiguousarray(points1, np.float32)
