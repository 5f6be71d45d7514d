"""Camera models and encodings as ROS reads them (issue 17, points 4 and 5): the node in its own process, fed
640x480 frames and camera_infos by a reliable driver in this process (test_node_process.py's NodeProcess and
Driver).

Camera models: a camera in rectified_cameras (image_rect with the raw camera's camera_info: a strong D, P from
getOptimalNewCameraMatrix) publishes normalised points from P, image_geometry's projectPixelTo3dRay, not the
pixels undistorted a second time (how far off that was is printed); a camera_info for 1280x960 with binning 2
(and 8 coefficients in D, Orbbec's layout) is used for 640x480 frames, as the full-resolution pixel
(u * 2, v * 2) undistorted with its K and D, instead of being refused.
Encodings: yuv422_yuy2 (usb_cam's YUYV) and Bayer (8 and 16 bit) frames built from the test frames are matched
instead of being counted as unsupported_encoding.
"""
import os

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from superglue_ros.ros.image_conversion import numpy_to_image_msg
from test_node_process import (FULL_SETTINGS, WAIT_S, Driver, NodeProcess, driver_publisher, full_frames,  # noqa: F401
                               wait_followed, weight_files)
from test_image_conversion import mosaic
from ros_helpers import Inbox, wait_until

STRONG_LENS = [-0.28, 0.07, 0.0008, -0.0005, 0.0]  # the wide-angle plumb_bob
K = np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]])
CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)


def rectified_info() -> CameraInfo:
    """The raw camera's camera_info that image_proc publishes beside image_rect: K, D of the lens, P of the
    rectified image (alpha 0)."""
    new, _ = cv2.getOptimalNewCameraMatrix(K, np.array(STRONG_LENS), (640, 480), 0)
    return CameraInfo(width=640, height=480, distortion_model='plumb_bob', d=STRONG_LENS, k=K.ravel().tolist(),
                      r=np.eye(3).ravel().tolist(), p=np.c_[new, np.zeros(3)].ravel().tolist())


def binned_info() -> CameraInfo:
    """A 1280x960 calibration (K of the full sensor) binned 2x2, D with 8 coefficients (five, then zeros)."""
    full = K * [[2], [2], [1]]
    return CameraInfo(width=1280, height=960, distortion_model='plumb_bob', d=STRONG_LENS[:3] + [0.0] * 5,
                      k=full.ravel().tolist(), r=np.eye(3).ravel().tolist(), p=np.c_[full, np.zeros(3)].ravel().tolist(),
                      binning_x=2, binning_y=2)


def test_rectified_and_binned_camera_infos_over_dds(context, weight_files, full_frames):  # noqa: F811
    cameras = ('rect', 'binned')
    node = NodeProcess(f'/test_camera_models_{os.getpid()}', {**FULL_SETTINGS, **weight_files,
                                                               'cameras': "['rect','binned']",
                                                               'rectified_cameras': "['rect']"})
    driver = Driver(context, node, cameras=cameras)
    try:
        infos = {camera: driver_publisher(driver.helper, CameraInfo, f'{camera}/camera_info') for camera in cameras}
        for publisher in infos.values():
            wait_followed(node, publisher)
        frames = [numpy_to_image_msg(frame, 'bgr8') for frame in full_frames[:2]]

        rect = rectified_info()
        driver.send_with_info('rect', infos['rect'], rect, frames[0])
        matches = driver.send_with_info('rect', infos['rect'], rect, frames[1])
        points = np.asarray(matches.frame_points, np.float64).reshape(-1, 2)
        normalized = np.asarray(matches.frame_points_normalized, np.float64).reshape(-1, 2)
        assert len(points) > 20 and normalized.shape == points.shape
        P = np.asarray(rect.p).reshape(3, 4)
        rays = np.c_[(points[:, 0] - P[0, 2]) / P[0, 0], (points[:, 1] - P[1, 2]) / P[1, 1]]  # projectPixelTo3dRay
        np.testing.assert_allclose(normalized, rays, atol=1e-5)
        keyframe_points = np.asarray(matches.keyframe_points, np.float64).reshape(-1, 2)
        np.testing.assert_allclose(np.asarray(matches.keyframe_points_normalized).reshape(-1, 2),
                                   np.c_[(keyframe_points[:, 0] - P[0, 2]) / P[0, 0],
                                         (keyframe_points[:, 1] - P[1, 2]) / P[1, 1]], atol=1e-5)
        old = cv2.undistortPoints(points.reshape(-1, 1, 2), K, np.array(STRONG_LENS), criteria=CRITERIA).reshape(-1, 2)
        off_px = np.linalg.norm(old - rays, axis=1) * P[0, 0]
        print(f'\n[rectified input over DDS] {len(points)} matched 640x480 image_rect points: undistorting them '
              f'again (the old handling) was off by {off_px.mean():.1f} px on average, {off_px.max():.1f} px at '
              f"most (units of fx' = {P[0, 0]:.0f} px)")
        assert off_px.mean() > 1

        binned = binned_info()
        driver.send_with_info('binned', infos['binned'], binned, frames[0])
        matches = driver.send_with_info('binned', infos['binned'], binned, frames[1])
        points = np.asarray(matches.frame_points, np.float64).reshape(-1, 2)
        normalized = np.asarray(matches.frame_points_normalized, np.float64).reshape(-1, 2)
        assert len(points) > 20 and normalized.shape == points.shape  # used, not refused as one for 1280x960
        expected = cv2.undistortPoints((points * 2).reshape(-1, 1, 2), np.asarray(binned.k).reshape(3, 3),
                                       np.asarray(binned.d), criteria=CRITERIA).reshape(-1, 2)
        np.testing.assert_allclose(normalized, expected, atol=1e-5)

        assert "camera 'rect': rectified input, rays from P (no distortion)" in node.output
        assert ("camera 'binned': plumb_bob with 8 coefficients, undistorted with K and D (binning 2x2 of the "
                'camera_info applied)') in node.output
        assert 'ignored' not in node.output, node.output

        # two unusable camera_infos one after the other: each refused with its own line (not throttled away
        # as the same message), and /diagnostics names the one in use now
        from diagnostic_msgs.msg import DiagnosticArray
        diagnostics = Inbox('/diagnostics')
        driver.helper.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
        for length in (3, 6):
            bad = binned_info()
            bad.d = bad.d[:length]
            driver.send_with_info('binned', infos['binned'], bad, frames[1])
            assert f'coefficients in D, got {length}:' in node.output, node.output
        diagnostics.wait_for(lambda array: any(
            'coefficients in D, got 6:' in {v.key: v.value for v in status.values}.get('camera_info ignored', '')
            and status.level == status.WARN for status in array.status), 'the camera_info ignored now', WAIT_S)
    finally:
        driver.close()


def yuyv(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_YUY2)  # [H, W, 2]: Y0 U Y1 V, OpenCV's BT.601


@pytest.mark.parametrize('encoding, convert', [
    ('yuv422_yuy2', yuyv),
    ('bayer_rggb8', lambda bgr: mosaic(bgr, 'rggb')),
    ('bayer_gbrg16', lambda bgr: mosaic(bgr.astype(np.uint16) * 257, 'gbrg')),
], ids=['yuv422_yuy2', 'bayer_rggb8', 'bayer_gbrg16'])
def test_yuv_and_bayer_frames_over_dds_are_matched(context, weight_files, full_frames, encoding, convert):  # noqa: F811
    node = NodeProcess(f'/test_encodings_{encoding}_{os.getpid()}', {**FULL_SETTINGS, **weight_files})
    driver = Driver(context, node)
    try:
        messages = [numpy_to_image_msg(convert(frame), encoding) for frame in full_frames[:3]]
        assert (messages[0].encoding, messages[0].width, messages[0].height) == (encoding, 640, 480)
        first = driver.send('', messages[0])
        later = [driver.send('', msg) for msg in messages[1:]]
        assert first.is_new_keyframe and all(m.keyframe_id == first.keyframe_id for m in later)
        print(f'\n[{encoding} over DDS] matches with the keyframe: {[len(m.confidence) for m in later]}')
        assert all(len(m.confidence) > 20 for m in later)
        assert 'unsupported_encoding' not in node.output and 'skipped' not in node.output, node.output
    finally:
        driver.close()
