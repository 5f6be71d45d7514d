"""The VINS feature layout (features.py, ros/messages.features_message): which keypoints, which track ids,
velocities on the normalised plane, and the PointCloud decoded as VINS-Fusion's rosNodeTest.cpp
feature_callback decodes it. Pure state on fake features: no model. Over DDS: test_node_process.py."""
import numpy as np
import pytest
import torch
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud

from superglue_ros.features import FeatureVelocity
from superglue_ros.geometry import Calibration
from superglue_ros.matcher import Features
from superglue_ros.ros.messages import FEATURE_CHANNELS, features_message
from superglue_ros.tracking import Correspondences, KeyframePolicy, KeyframeTracker

CALIBRATION = Calibration([400.0, 0, 159.5, 0, 400.0, 119.5, 0, 0, 1])
NEVER = KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=0.0)


def features_at(keypoints) -> Features:
    keypoints = torch.as_tensor(np.asarray(keypoints, np.float32))
    return Features(keypoints, torch.rand(len(keypoints)), torch.zeros(256, len(keypoints)), (320, 240), (1.0, 1.0))


def vins_decode(msg: PointCloud) -> dict:
    """feature_callback of VINS-Fusion's rosNodeTest.cpp in Python: feature id -> [(camera_id, x, y, z, u, v,
    velocity_x, velocity_y)]; it reads channels 6-8 whenever there are more than 5 channels."""
    frame = {}
    for i, point in enumerate(msg.points):
        feature_id, camera_id = int(msg.channels[0].values[i]), int(msg.channels[1].values[i])
        u, v, vx, vy = (msg.channels[c].values[i] for c in (2, 3, 4, 5))
        if len(msg.channels) > 5:
            _ = [msg.channels[c].values[i] for c in (6, 7, 8)]  # IndexError with only 6 channels
        assert point.z == 1
        frame.setdefault(feature_id, []).append((camera_id, point.x, point.y, point.z, u, v, vx, vy))
    return frame


def step(tracker, features, stamp_s, inlier=None):
    """A frame matched keypoint i <-> keypoint i (for the keyframe's first len(inlier) keypoints), normalised
    with CALIBRATION, flagged by a 'fundamental' verification."""
    keyframe = tracker.keyframe_for(stamp_s)
    correspondences = None
    if keyframe is not None:
        count = len(inlier)
        correspondences = Correspondences.from_matches(
            np.r_[np.arange(count), np.full(len(keyframe.keypoints) - count, -1)], np.full(len(keyframe.keypoints), 0.9),
            keyframe.keypoints, features.keypoints_original())
        correspondences.normalized0 = CALIBRATION.normalize(correspondences.points0).astype(np.float32)
        correspondences.normalized1 = CALIBRATION.normalize(correspondences.points1).astype(np.float32)
        correspondences.inlier, correspondences.verified_with = np.asarray(inlier, np.uint8), 'fundamental'
    return tracker.update(features, stamp_s, correspondences, CALIBRATION)


def test_tracked_features_ids_and_velocities():
    rng = np.random.default_rng(0)
    points = rng.uniform([10, 10], [310, 230], (40, 2)).round()
    tracker, velocity = KeyframeTracker(NEVER), FeatureVelocity(camera_id=1)

    first = velocity.features(step(tracker, features_at(points), 10.0), CALIBRATION)
    # a new keyframe: all its keypoints, with Keyframe.track_ids (new ones), velocity 0
    np.testing.assert_array_equal(first.track_ids, np.arange(40, dtype=np.uint64))
    np.testing.assert_array_equal(first.pixels, points.astype(np.float32))
    np.testing.assert_allclose(first.normalized, CALIBRATION.normalize(points))
    assert first.camera_id == 1 and not first.velocity.any()

    inlier = np.ones(30, np.uint8)
    inlier[[3, 7]] = 0                              # outliers of the verification: no track continues through them
    moved = points + [4.0, -2.0]                    # 4 px right, 2 px up in 0.5 s
    second_result = step(tracker, features_at(moved), 10.5, inlier)
    second = velocity.features(second_result, CALIBRATION)
    kept = np.flatnonzero(inlier)
    np.testing.assert_array_equal(second.track_ids, kept.astype(np.uint64))  # = Matches.track_ids of the inliers
    np.testing.assert_array_equal(second.track_ids, second_result.track_ids[inlier.astype(bool)])
    np.testing.assert_allclose(second.pixels, moved[kept].astype(np.float32))
    np.testing.assert_allclose(second.velocity, np.tile([4.0 / 400 / 0.5, -2.0 / 400 / 0.5], (len(kept), 1)), rtol=1e-4)

    # the next frame becomes a keyframe (requested): all keypoints, the matched ones keep their tracks
    tracker.request_new_keyframe()
    third_result = step(tracker, features_at(moved + [2.0, 0.0]), 11.0, np.ones(35, np.uint8))
    third = velocity.features(third_result, CALIBRATION)
    np.testing.assert_array_equal(third.track_ids, third_result.new_keyframe_track_ids)
    assert len(third.track_ids) == 40 and set(range(35)) <= set(third.track_ids.tolist())
    expected = np.zeros((40, 2))
    expected[kept, 0] = 2.0 / 400 / 0.5             # tracked in the previous frame; the others: 0
    np.testing.assert_allclose(third.velocity, expected, atol=1e-6)

    assert velocity.features(step(tracker, features_at(moved), 11.5, np.ones(5, np.uint8)), None) is None


def test_the_message_decodes_as_vins_fusion_reads_it_for_one_and_two_cameras():
    tracker = KeyframeTracker(NEVER)
    left = FeatureVelocity(0).features(step(tracker, features_at([[20, 30], [100, 200]]), 1.0), CALIBRATION)
    right = FeatureVelocity(1).features(step(KeyframeTracker(NEVER), features_at([[25, 30]]), 1.0), CALIBRATION)
    msg = deserialize_message(serialize_message(features_message(PointCloud().header, [left, right])),
                              PointCloud)
    assert [c.name for c in msg.channels] == list(FEATURE_CHANNELS) and len(msg.channels) == 9
    decoded = vins_decode(msg)
    x, y = CALIBRATION.normalize([[20, 30]])[0]
    assert decoded[0][0] == pytest.approx((0, x, y, 1.0, 20.0, 30.0, 0.0, 0.0), abs=1e-6)
    assert [d[0] for d in decoded[0]] == [0, 1] and len(decoded[1]) == 1  # track 0 in both cameras, 1 in the left
    with pytest.raises(ValueError, match='at least one camera'):
        features_message(PointCloud().header, [])


def test_a_feature_that_did_not_move_has_zero_velocity():
    """Identical frames: the tracked pixels are those of the keyframe, so the velocity is exactly zero (the
    keyframe's normalised points and the frame's must come from the same computation, not float64 vs float32)."""
    points = np.random.default_rng(1).uniform([10, 10], [310, 230], (40, 2)).round()
    tracker, velocity = KeyframeTracker(NEVER), FeatureVelocity()
    velocity.features(step(tracker, features_at(points), 10.0), CALIBRATION)
    still = velocity.features(step(tracker, features_at(points), 10.1, np.ones(40, np.uint8)), CALIBRATION)
    assert len(still.track_ids) == 40
    np.testing.assert_array_equal(still.velocity, 0.0)
    np.testing.assert_array_equal(still.normalized, CALIBRATION.normalize(points))


def test_track_ids_past_2_to_the_24_stay_distinct_in_the_float32_channel():
    """A long run numbers more than 2^24 tracks (16.7 M: 1024 new ids per keyframe for 16 k keyframes); float32
    cannot hold those ids exactly, and neighbouring tracks would reach VINS as one feature. They are sent
    modulo 2^24 (README), exact and distinct for any tracks less than 2^24 ids apart."""
    from superglue_ros.features import TrackedFeatures

    ids = np.array([2 ** 24 - 1, 2 ** 24, 2 ** 24 + 1, 2 ** 25 + 3], np.uint64)
    features = TrackedFeatures(0, ids, np.zeros((4, 2), np.float32), np.zeros((4, 2)), np.zeros((4, 2)))
    msg = deserialize_message(serialize_message(features_message(PointCloud().header, [features])), PointCloud)
    sent = [int(v) for v in msg.channels[0].values]
    assert sent == [2 ** 24 - 1, 0, 1, 3]
