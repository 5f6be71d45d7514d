"""Relative pose (pose.py) on ground-truth correspondences: synthetic 3-D points seen by a camera moved
by a known T_keyframe_frame, projected with a known K; exact, with pixel noise, with outliers, and with
keyframe depth (metric PnP). Errors are printed and bounded."""
import cv2
import numpy as np
import pytest

from superglue_ros.geometry import Calibration, Verification
from superglue_ros.pipeline import verify
from superglue_ros.pose import (MIN_PNP_POINTS, RelativePose, direction_error_deg, relative_pose,
                                rotation_error_deg)
from superglue_ros.tracking import Correspondences

K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
CALIBRATION = Calibration(K.ravel())
# T_keyframe_frame: the frame's camera is 0.3 m right, 0.1 m down, 0.2 m forward of the keyframe's, turned
# by about 6 degrees. p_keyframe = R p_frame + t.
R_TRUE = cv2.Rodrigues(np.array([0.04, -0.08, 0.05]))[0]
T_TRUE = np.array([0.3, 0.1, 0.2])


def scene(count=300, noise_px=0.0, outliers=0.0, seed=0):
    """Pixels of `count` points in the keyframe and the frame (a fraction `outliers` of the frame's replaced
    by random pixels), their depths in the keyframe (m) and the outlier flags."""
    rng = np.random.default_rng(seed)
    keyframe_points = np.column_stack([rng.uniform(-1.6, 1.6, count), rng.uniform(-1.2, 1.2, count),
                                       rng.uniform(3.0, 8.0, count)])            # keyframe optical frame, m
    frame_points = (keyframe_points - T_TRUE) @ R_TRUE                          # p_frame = R^T (p_kf - t)

    def project(points):
        pixels = points @ K.T
        return pixels[:, :2] / pixels[:, 2:]
    pixels0, pixels1 = project(keyframe_points), project(frame_points)
    pixels0 += rng.normal(0, noise_px, pixels0.shape)
    pixels1 += rng.normal(0, noise_px, pixels1.shape)
    wrong = rng.random(count) < outliers
    pixels1[wrong] = rng.uniform([0, 0], [640, 480], (wrong.sum(), 2))
    return pixels0.astype(np.float32), pixels1.astype(np.float32), keyframe_points[:, 2].astype(np.float32), wrong


def estimate(pixels0, pixels1, depth=None, threshold_px=1.0):
    c = Correspondences(pixels0, pixels1, np.ones(len(pixels0), np.float32),
                        np.arange(len(pixels0), dtype=np.int32), np.arange(len(pixels0), dtype=np.int32))
    return verify(c, Verification('essential', threshold_px=threshold_px), CALIBRATION, CALIBRATION, depth)


def errors(pose: RelativePose) -> tuple[float, float]:
    return rotation_error_deg(pose.rotation, R_TRUE), direction_error_deg(pose.translation, T_TRUE)


@pytest.mark.parametrize('noise_px, outliers, max_rotation_deg, max_direction_deg', [
    (0.0, 0.0, 0.01, 0.05),
    (0.5, 0.0, 0.2, 2.0),
    (0.5, 0.3, 0.3, 3.0),
])
def test_essential_pose_recovers_the_true_motion(noise_px, outliers, max_rotation_deg, max_direction_deg):
    pixels0, pixels1, _, wrong = scene(noise_px=noise_px, outliers=outliers)
    c = estimate(pixels0, pixels1)
    pose = c.pose
    rotation_deg, direction_deg = errors(pose)
    print(f'\n[pose] essential, noise {noise_px} px, {wrong.mean():.0%} outliers: rotation error {rotation_deg:.4f} deg, '
          f'translation direction error {direction_deg:.3f} deg, {pose.inliers} inliers of {len(wrong)}')
    assert pose.source == 'essential' and c.verified_with == 'essential'
    assert np.isclose(np.linalg.norm(pose.translation), 1.0)
    assert rotation_deg < max_rotation_deg and direction_deg < max_direction_deg
    assert pose.inliers <= (~wrong).sum() + 0.05 * len(wrong) and pose.inliers >= 0.8 * (~wrong).sum()


@pytest.mark.parametrize('noise_px, outliers, max_error_m', [(0.0, 0.0, 1e-4), (0.5, 0.3, 0.02)])
def test_depth_gives_a_metric_pose_by_pnp(noise_px, outliers, max_error_m):
    pixels0, pixels1, depth, wrong = scene(noise_px=noise_px, outliers=outliers)
    depth[::3] = np.nan  # unknown for a third of the keypoints (no stereo match)
    pose = estimate(pixels0, pixels1, depth).pose
    rotation_deg, _ = errors(pose)
    error_m = float(np.linalg.norm(pose.translation - T_TRUE))
    print(f'\n[pose] pnp, noise {noise_px} px, {wrong.mean():.0%} outliers: translation error {error_m * 1e3:.2f} mm '
          f'of {np.linalg.norm(T_TRUE):.3f} m, rotation error {rotation_deg:.4f} deg, {pose.inliers} inliers')
    assert pose.source == 'pnp'
    assert error_m < max_error_m and rotation_deg < 0.3
    assert pose.inliers <= (~wrong[~np.isnan(depth)]).sum() + 5


def test_the_convention_maps_frame_points_into_the_keyframe():
    """p_keyframe = R p_frame + t, checked on the 3-D points themselves, and the quaternion is R's."""
    pixels0, pixels1, depth, _ = scene(count=50)
    pose = estimate(pixels0, pixels1, depth).pose
    normalized0 = CALIBRATION.normalize(pixels0)
    keyframe_points = np.column_stack([normalized0 * depth[:, None], depth])
    frame_points = (keyframe_points - T_TRUE) @ R_TRUE
    np.testing.assert_allclose(frame_points @ pose.rotation.T + pose.translation, keyframe_points, atol=1e-3)
    x, y, z, w = pose.quaternion()
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(rotation, pose.rotation, atol=1e-9)


def test_too_little_depth_falls_back_to_essential_and_too_few_points_give_none():
    pixels0, pixels1, depth, _ = scene()
    depth[MIN_PNP_POINTS - 1:] = np.nan
    assert estimate(pixels0, pixels1, depth).pose.source == 'essential'
    few = estimate(pixels0[:4], pixels1[:4]).pose
    assert (few.source, few.inliers) == ('none', 0)
    np.testing.assert_array_equal(few.rotation, np.eye(3))
    np.testing.assert_array_equal(few.translation, np.zeros(3))


def test_no_pose_without_essential_verification():
    pixels0, pixels1, depth, _ = scene()
    for method, calibration in (('fundamental', CALIBRATION), ('essential', None), ('homography', CALIBRATION)):
        c = Correspondences(pixels0, pixels1, np.ones(len(pixels0), np.float32),
                            np.arange(len(pixels0), dtype=np.int32), np.arange(len(pixels0), dtype=np.int32))
        c = verify(c, Verification(method), calibration, calibration, depth)
        assert c.pose.source == 'none' and c.model is not None and c.model.shape == (3, 3), method


def test_depth_is_indexed_by_the_keyframe_keypoint():
    """depth0 is per keyframe keypoint; each correspondence takes the depth of its keyframe keypoint."""
    pixels0, pixels1, depth, _ = scene(count=100)
    order = np.random.default_rng(1).permutation(100)  # keyframe keypoint order[i] is correspondence i's
    keyframe_depth = np.full(100, np.nan, np.float32)
    keyframe_depth[order] = depth
    c = Correspondences(pixels0, pixels1, np.ones(100, np.float32), order.astype(np.int32),
                        np.arange(100, dtype=np.int32))
    pose = verify(c, Verification('essential', threshold_px=1.0), CALIBRATION, CALIBRATION, keyframe_depth).pose
    assert pose.source == 'pnp' and np.linalg.norm(pose.translation - T_TRUE) < 1e-3


def test_relative_pose_refuses_arrays_of_different_lengths():
    with pytest.raises(ValueError, match='one per correspondence'):
        relative_pose(np.eye(3), np.zeros((5, 2)), np.zeros((4, 2)), np.ones(5, np.uint8))
    with pytest.raises(ValueError, match='3 depths'):
        relative_pose(np.eye(3), np.zeros((5, 2)), np.zeros((5, 2)), np.ones(5, np.uint8), np.ones(3))


def test_a_camera_that_did_not_move_or_only_turned_gives_no_pose():
    """README: with no baseline every point triangulates at infinity and fails recoverPose's cheirality check,
    so the pose is 'none' (not a random unit translation) although the essential fit flags inliers."""
    pixels0, _, _, _ = scene()
    still = estimate(pixels0, pixels0.copy())
    turned = (np.column_stack([(pixels0 - K[:2, 2]) / 500.0, np.ones(len(pixels0))]) @ R_TRUE.T) @ K.T
    turned = estimate(pixels0, (turned[:, :2] / turned[:, 2:]).astype(np.float32))
    for c in (still, turned):
        assert c.inlier.sum() > 0 and (c.pose.source, c.pose.inliers) == ('none', 0)
        np.testing.assert_array_equal(c.pose.translation, np.zeros(3))
