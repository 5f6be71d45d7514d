"""Relative pose of a frame with respect to its keyframe, from verified correspondences (no ROS).

Convention (the one every API and message of this package uses): T_keyframe_frame, the pose of the
current frame expressed in the keyframe's camera optical frame (REP 103 optical: z forward, x right,
y down). A point p_frame in the current frame's optical frame maps to the keyframe's as

    p_keyframe = R p_frame + t

so t is the position of the current camera's centre in the keyframe's optical frame, and R rotates
the current camera's axes into the keyframe's.

Two estimators, both OpenCV's:
  'essential'  cv2.recoverPose on the essential matrix and its RANSAC inliers (normalised points):
               R and the direction of t, a unit vector (the scale of a monocular pair is unknown).
               Inliers: the essential inliers that also pass recoverPose's cheirality check (points
               in front of both cameras).
  'pnp'        cv2.solvePnPRansac of the keyframe's 3-D points (normalised point * depth, metres,
               keyframe optical frame) against the frame's normalised points: R and t in metres.
               Used when the keyframe has depth for at least MIN_PNP_POINTS correspondences and the
               fit keeps at least MIN_PNP_POINTS inliers; otherwise 'essential' is tried.
  'none'       no pose: fewer than MIN_ESSENTIAL_INLIERS cheirality inliers, no essential matrix.
The inlier count is the consumer's cue to trust the pose; no covariance is estimated.
"""
from dataclasses import dataclass, field

import cv2
import numpy as np

POSE_SOURCES = ('none', 'essential', 'pnp')
MIN_ESSENTIAL_INLIERS = 5  # Nister's five-point minimal sample: fewer cannot constrain R and t
MIN_PNP_POINTS = 6         # cv2.solvePnPRansac's default (iterative) solver needs 6 points in general position
PNP_ITERATIONS = 1000
PNP_CONFIDENCE = 0.999


@dataclass(frozen=True)
class RelativePose:
    """T_keyframe_frame (module doc): p_keyframe = rotation @ p_frame + translation."""
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))       # [3, 3] float64
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))  # [3] float64: unit ('essential'),
    #                                                                       metres ('pnp'), zero ('none')
    source: str = 'none'                                                  # one of POSE_SOURCES
    inliers: int = 0                                                      # correspondences that support it

    def quaternion(self) -> np.ndarray:
        """The rotation as a unit quaternion [x, y, z, w] (geometry_msgs/Quaternion order), w >= 0."""
        rvec = cv2.Rodrigues(np.asarray(self.rotation, np.float64))[0].reshape(3)  # axis * angle, radians
        angle = float(np.linalg.norm(rvec))
        axis = rvec / angle if angle > 0 else np.zeros(3)
        return np.append(np.sin(angle / 2) * axis, np.cos(angle / 2))


def _inverse(rotation: np.ndarray, translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of x' = R x + t -> (R^T, -R^T t), the transform back."""
    return rotation.T, -rotation.T @ translation.reshape(3)


def relative_pose(essential: np.ndarray | None, normalized0, normalized1, inlier, depth0=None,
                  pnp_threshold: float = 0.005) -> RelativePose:
    """T_keyframe_frame of the current frame (module doc) from its correspondences with the keyframe.

    essential: [3, 3] essential matrix with [n1, 1]^T E [n0, 1] = 0 (geometry.Verification.fit with
    'essential'), or None. normalized0 / normalized1: [K, 2] keyframe / frame points on the normalised
    image plane (z = 1, optical frame, distortion removed). inlier: [K] uint8 essential inliers.
    depth0: [K] depth in metres (z in the keyframe's optical frame) of each correspondence's keyframe
    keypoint, NaN (or <= 0) where unknown; None for a monocular camera. pnp_threshold: solvePnPRansac's
    reprojection threshold on the normalised plane (a pixel threshold / the focal length in pixels).
    ValueError for arrays of different lengths.
    """
    normalized0 = np.asarray(normalized0, np.float64).reshape(-1, 2)
    normalized1 = np.asarray(normalized1, np.float64).reshape(-1, 2)
    inlier = np.asarray(inlier, np.uint8).reshape(-1)
    if not len(normalized0) == len(normalized1) == len(inlier) or (depth0 is not None and len(depth0) != len(inlier)):
        raise ValueError(f'relative_pose: {len(normalized0)} keyframe points, {len(normalized1)} frame points, '
                         f'{len(inlier)} inlier flags' + (f', {len(depth0)} depths' if depth0 is not None else '')
                         + ': one per correspondence expected')
    if depth0 is not None:
        depth = np.asarray(depth0, np.float64).reshape(-1)
        known = np.isfinite(depth) & (depth > 0)
        if known.sum() >= MIN_PNP_POINTS:
            points3d = np.column_stack([normalized0[known] * depth[known, None], depth[known]])  # keyframe frame, m
            found, rvec, tvec, inliers = cv2.solvePnPRansac(
                points3d, normalized1[known], np.eye(3), None, iterationsCount=PNP_ITERATIONS,
                reprojectionError=float(pnp_threshold), confidence=PNP_CONFIDENCE)
            if found and inliers is not None and len(inliers) >= MIN_PNP_POINTS:
                # solvePnP: p_frame = R p_keyframe + t (T_frame_keyframe)
                rotation, translation = _inverse(cv2.Rodrigues(rvec)[0], tvec)
                return RelativePose(rotation, translation, 'pnp', len(inliers))
    if essential is None or inlier.sum() < MIN_ESSENTIAL_INLIERS:
        return RelativePose()
    mask = inlier.reshape(-1, 1).copy()
    # recoverPose: p_frame = R p_keyframe + t with |t| = 1 (points1 = keyframe, points2 = frame)
    count, rotation, translation, _ = cv2.recoverPose(np.asarray(essential, np.float64)[:3], normalized0,
                                                      normalized1, np.eye(3), mask=mask)
    if count < MIN_ESSENTIAL_INLIERS:
        return RelativePose()
    rotation, translation = _inverse(rotation, translation)
    return RelativePose(rotation, translation / np.linalg.norm(translation), 'essential', int(count))


def rotation_error_deg(rotation: np.ndarray, truth: np.ndarray) -> float:
    """Angle of rotation^T truth, degrees: 0 when the rotations are equal."""
    cos = (np.trace(np.asarray(rotation).T @ np.asarray(truth)) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def direction_error_deg(translation: np.ndarray, truth: np.ndarray) -> float:
    """Angle between two translation directions, degrees (180 for opposite ones); NaN if either is zero."""
    a, b = np.asarray(translation, np.float64).reshape(3), np.asarray(truth, np.float64).reshape(3)
    norms = np.linalg.norm(a) * np.linalg.norm(b)
    if norms == 0:
        return float('nan')
    return float(np.degrees(np.arccos(np.clip(a @ b / norms, -1.0, 1.0))))
