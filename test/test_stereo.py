"""Stereo rigs without ROS (issue 15): superglue_ros/stereo.py and a rig's frame path in pipeline.py.

Depth arithmetic on exact correspondences of the synthetic rectified rig (demo/synthetic.py), the
rectified check from the camera_infos, the left-right verification, pairing by stamp (exact, and with
software jitter within a tolerance), the stereo settings, and CameraPipeline given the right image:
one SuperPoint batch, Keyframe.depth, track ids shared by both cameras.
"""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from superglue_ros.demo.synthetic import stereo_sequence
from superglue_ros.geometry import Verification
from superglue_ros.image import ImageError
from superglue_ros.matcher import Matcher
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.pipeline import CameraPipeline
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict
from superglue_ros.settings import check, rectified_cameras_of, stereo_pairs_of
from superglue_ros.stereo import (LEFT, NO_TRACK, RIGHT, StampPairer, StereoGeometry, StereoVerification,
                                  stamp_ns)
from superglue_ros.tracking import Correspondences, KeyframePolicy

SIZE = (320, 240)


@pytest.fixture(scope='module')
def rig():
    """Three poses of the synthetic rectified rig at 320x240 (baseline 0.25 m, fx 256 px)."""
    return stereo_sequence(3, SIZE)


def infos(frame, **changes):
    left, right = dict(frame.left_info), dict(frame.right_info)
    for key, value in changes.items():
        side, field = key.split('_', 1)
        (left if side == 'left' else right)[field] = value
    return SimpleNamespace(**left), SimpleNamespace(**right)


def correspondences(left, right) -> Correspondences:
    n = len(left)
    return Correspondences(np.float32(left), np.float32(right), np.ones(n, np.float32), np.arange(n, dtype=np.int32),
                           np.arange(n, dtype=np.int32))


def test_synthetic_rig_ground_truth(rig):
    """The rendered right image shows each left pixel where right_points() puts it (rectified: same row), and the
    camera_infos say so: right P = [K | (-fx B, 0, 0)], R = identity."""
    frame = rig[1]
    grey = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32) for image in (frame.left, frame.right)]
    y, x = np.mgrid[30:SIZE[1] - 30:3, 80:SIZE[0] - 30:3]
    left = np.stack([x.ravel(), y.ravel()], 1).astype(np.float64)
    right = frame.right_points(left).astype(np.float32)
    assert np.all(right[:, 1] == left[:, 1]) and np.all(right[:, 0] < left[:, 0])

    def sampled(shift):
        values = cv2.remap(grey[1], right[:, :1] + shift, right[:, 1:], cv2.INTER_LINEAR)[:, 0]
        return np.abs(values - grey[0][y.ravel(), x.ravel()]).mean()
    assert sampled(0) < 1.0 and sampled(2) > 4 * sampled(0)  # grey levels
    assert frame.right_info['p'][3] == pytest.approx(-frame.K[0, 0] * frame.baseline_m)
    assert frame.left_info['r'] == frame.right_info['r'] == np.eye(3).ravel().tolist()
    np.testing.assert_allclose(frame.depth[y.ravel(), x.ravel()], frame.depth_at(left), rtol=1e-6)


def test_depth_of_exact_correspondences(rig):
    frame = rig[0]
    rng = np.random.default_rng(0)
    left = rng.uniform([20, 20], [SIZE[0] - 20, SIZE[1] - 20], (200, 2))
    geometry = StereoGeometry.from_camera_infos(*infos(frame))
    assert geometry.baseline_m == pytest.approx(0.25) and geometry.fx == frame.K[0, 0] and geometry.rectified
    stereo = StereoVerification().verify(correspondences(left, frame.right_points(left)), geometry, 300)
    truth = frame.depth_at(left)
    np.testing.assert_allclose(stereo.depth, truth, rtol=1e-5)  # float32 points: ~1e-6 of the disparity
    np.testing.assert_allclose(stereo.disparity, frame.K[0, 0] * 0.25 / truth, rtol=1e-4)
    assert stereo.correspondences.verified_with == 'rectified' and stereo.correspondences.inlier.all()
    assert stereo.keypoint_depth.dtype == np.float32 and len(stereo.keypoint_depth) == 300
    np.testing.assert_array_equal(stereo.keypoint_depth[:200], stereo.depth)
    assert np.isnan(stereo.keypoint_depth[200:]).all()
    # normalised points from P: the rectified left camera's ray of each point
    np.testing.assert_allclose(stereo.correspondences.normalized0, (left - frame.K[:2, 2]) / frame.K[0, 0], atol=1e-6)


def test_depth_uses_p_with_its_cx_difference_not_k(rig):
    """A right P with another cx' (rectification with alpha != 0): Z = fx' B / (d - (cx_l - cx_r)); K and D of
    the camera_info (the raw camera) play no part for rectified images."""
    frame = rig[0]
    p = np.array(frame.right_info['p']).reshape(3, 4)
    p[0, 2] -= 10
    geometry = StereoGeometry.from_camera_infos(*infos(frame, right_p=p.ravel().tolist(), left_k=[300, 0, 100, 0, 300,
                                                                                                   100, 0, 0, 1],
                                                       left_d=[0.3, -0.1, 0, 0, 0]))
    left = np.array([[100.0, 120.0], [250.0, 60.0]])
    right = frame.right_points(left) - [10, 0]
    stereo = StereoVerification().verify(correspondences(left, right), geometry, 2)
    np.testing.assert_allclose(stereo.depth, frame.depth_at(left), rtol=1e-5)
    np.testing.assert_allclose(stereo.disparity, left[:, 0] - right[:, 0], rtol=1e-6)


def test_rectified_check_from_the_camera_infos(rig):
    frame = rig[0]
    rotated = np.eye(3)
    rotated[:2, :2] = [[np.cos(0.01), -np.sin(0.01)], [np.sin(0.01), np.cos(0.01)]]
    verification = StereoVerification()
    rectified = StereoGeometry.from_camera_infos(*infos(frame))
    raw_r = StereoGeometry.from_camera_infos(*infos(frame, left_r=rotated.ravel().tolist()))
    told = StereoGeometry.from_camera_infos(*infos(frame, left_r=rotated.ravel().tolist()), rectified=True)
    no_tx = StereoGeometry.from_camera_infos(*infos(frame, right_p=frame.left_info['p']))
    no_tx_told = StereoGeometry.from_camera_infos(*infos(frame, right_p=frame.left_info['p']), rectified=True)
    assert verification.is_rectified(rectified) and verification.is_rectified(told)  # image_rect: the node is told
    assert not verification.is_rectified(raw_r)
    assert not verification.is_rectified(no_tx) and not verification.is_rectified(no_tx_told)
    assert StereoGeometry.from_camera_infos(*infos(frame, right_p=[0.0] * 12)) is None  # uncalibrated
    assert StereoGeometry.from_camera_infos(None, infos(frame)[1], rectified=True) is None
    assert not verification.is_rectified(None)
    with pytest.raises(ValueError, match='right_p .* is not a rectified projection matrix'):
        StereoGeometry.from_camera_infos(*infos(frame, right_p=[1.0] * 12))
    with pytest.raises(ValueError, match='left_p .* must be 12 finite numbers'):
        StereoGeometry.from_camera_infos(*infos(frame, left_p=[1.0] * 9))


def test_rectified_verification_rows_and_positive_disparity(rig):
    frame = rig[0]
    geometry = StereoGeometry.from_camera_infos(*infos(frame))
    left = np.array([[100.0, 100.0], [150.0, 80.0], [200.0, 50.0], [120.0, 200.0]])
    right = frame.right_points(left)
    right[1, 1] += 2.5    # off its row by more than 2 px
    right[2, 1] -= 1.9    # within 2 px
    right[3, 0] = left[3, 0] + 5  # negative disparity: behind the rig
    stereo = StereoVerification(row_threshold_px=2.0).verify(correspondences(left, right), geometry, 4)
    assert list(stereo.correspondences.inlier) == [1, 0, 1, 0]
    assert np.isnan(stereo.depth[[1, 3]]).all() and np.isfinite(stereo.depth[[0, 2]]).all()
    assert list(StereoVerification(row_threshold_px=3.0).verify(correspondences(left, right), geometry,
                                                                4).correspondences.inlier) == [1, 1, 1, 0]


def test_unrectified_pair_falls_back_to_the_fundamental_matrix_without_depth(rig):
    """No P, or a right P without Tx: OpenCV's fundamental matrix (ransac_threshold_px) flags the inliers."""
    frame = rig[0]
    rng = np.random.default_rng(1)
    left = rng.uniform([20, 20], [SIZE[0] - 20, SIZE[1] - 20], (60, 2))
    right = left - [[frame.K[0, 0] * 0.25, 0]] / rng.uniform(1, 5, (60, 1))  # points at 1 to 5 m: not a plane
    right[:10] = rng.uniform([0, 0], SIZE, (10, 2))  # 10 wrong matches
    for geometry in (None, StereoGeometry.from_camera_infos(*infos(frame, right_p=frame.left_info['p']))):
        stereo = StereoVerification(fallback=Verification('fundamental', 1.0)).verify(
            correspondences(left, right), geometry, 60)
        c = stereo.correspondences
        assert c.verified_with == 'fundamental' and np.isnan(stereo.depth).all() and np.isnan(stereo.keypoint_depth).all()
        assert c.inlier[10:].sum() >= 48 and c.inlier[:10].sum() <= 1
    assert StereoVerification.from_settings({'ransac_threshold_px': 1.5, 'stereo_row_threshold_px': 1.0}) == \
        StereoVerification(1.0, Verification('fundamental', 1.5))


# -- pairing by stamp ---------------------------------------------------------------------------

def feed(pairer, arrivals):
    """Offer (side, stamp_ns, item) in order; all pairs formed."""
    return [pair for side, stamp, item in arrivals for pair in pairer.add(side, stamp, item)]


def test_exact_pairing_never_pairs_other_times():
    pairer = StampPairer()
    arrivals = [(LEFT, 100, 'l0'), (RIGHT, 100, 'r0'), (RIGHT, 200, 'r1'), (LEFT, 201, 'l1'),
                (LEFT, 300, 'l2'), (LEFT, 400, 'l3'), (RIGHT, 400, 'r3')]
    assert feed(pairer, arrivals) == [('l0', 'r0'), ('l3', 'r3')]
    assert pairer.unpaired == [2, 1]  # l1 (201: no right of its stamp) and l2; r1


def test_pairing_with_5ms_software_jitter_within_a_tolerance():
    """Two 30 Hz cameras with independent stamp jitter (together up to 5 ms), each frame arriving 0 to 20 ms
    after its stamp (so either side may come first); the right camera loses some frames. Tolerance 10 ms: every frame with a partner pairs with
    it, the others are counted, none pairs with another time. With tolerance 0 nothing pairs."""
    rng = np.random.default_rng(0)
    period, n = 33_333_333, 300
    base = 1_700_000_000 * 10 ** 9 + np.arange(n) * period
    left = base + rng.integers(-2_500_000, 2_500_001, n)
    right = base + rng.integers(-2_500_000, 2_500_001, n)
    lost = set(rng.choice(n, 20, replace=False).tolist())
    frames = [(LEFT, int(s), i) for i, s in enumerate(left)] + \
        [(RIGHT, int(s), i) for i, s in enumerate(right) if i not in lost]
    delays = rng.integers(0, 20_000_000, len(frames))  # transport and executor: 0 to 20 ms after the stamp
    arrivals = [frames[i] for i in np.argsort([stamp + delay for (_, stamp, _), delay in zip(frames, delays)])]
    order = {(side, i): k for k, (side, _, i) in enumerate(arrivals)}
    right_first = [order[RIGHT, i] < order[LEFT, i] for i in range(n) if i not in lost]
    assert 0 < sum(right_first) < len(right_first)  # both orders happen
    assert max(abs(left - right)) <= 5_000_000
    pairer = StampPairer(0.010)
    pairs = feed(pairer, arrivals)
    assert all(l == r for l, r in pairs)
    assert len(pairs) == n - len(lost) and pairer.unpaired == [len(lost), 0]
    print(f'\n[pairing] {n} left and {n - len(lost)} right frames at 30 Hz, stamps jittered by up to '
          f'{max(abs(left - right)) / 1e6:.1f} ms, arrivals 0-20 ms late, tolerance 10 ms: {len(pairs)} pairs, all of '
          f'one time; unpaired {pairer.unpaired} (left, right)')

    exact = StampPairer(0.0)
    assert feed(exact, arrivals) == [] and sum(exact.unpaired) >= 2 * (n - len(lost)) - 2 * exact.queue_size


def test_pairing_queues_are_bounded():
    pairer = StampPairer(0.0, queue_size=3)
    assert feed(pairer, [(LEFT, t, t) for t in range(10)]) == []
    assert pairer.unpaired == [7, 0]
    assert pairer.add(RIGHT, 9, 'r') == [(9, 'r')] and pairer.unpaired == [9, 0]
    with pytest.raises(ValueError, match='stereo_sync_tolerance_s must be a number of seconds >= 0'):
        StampPairer(-0.001)
    assert stamp_ns(12, 345) == 12_000_000_345


def test_stereo_settings():
    assert check('stereo_pairs', ['left:right']) == ['left:right'] and check('stereo_pairs', None) == []
    for bad in (['left:left'], ['left:right', 'right:back'], ['left'], ['left:right:x'], 'left:right', ['/a:b']):
        with pytest.raises(ValueError, match="stereo_pairs must be .* two different names of cameras, each camera "
                                             'in one pair at most'):
            check('stereo_pairs', bad)
    assert stereo_pairs_of(['rig/left:rig/right'], ['rig/left', 'rig/right', 'front']) == [('rig/left', 'rig/right')]
    with pytest.raises(ValueError, match=r"stereo_pairs names 'rigth', not in cameras \['left', 'right'\]"):
        stereo_pairs_of(['left:rigth'], ['left', 'right'])


def test_rectified_cameras_setting():
    """A rig is rectified as a whole: listed by both its cameras or by neither; names must be cameras."""
    cameras, pairs = ['left', 'right', 'front'], [('left', 'right')]
    assert rectified_cameras_of(None, cameras, pairs) == set() and rectified_cameras_of([''], [''], []) == {''}
    assert rectified_cameras_of(['left', 'right', 'front'], cameras, pairs) == {'left', 'right', 'front'}
    with pytest.raises(ValueError, match=r"rectified_cameras lists 'right' of the stereo pair 'left:right' but not "
                                         'the other camera'):
        rectified_cameras_of(['right', 'front'], cameras, pairs)
    with pytest.raises(ValueError, match=r"rectified_cameras names 'back', not in cameras"):
        rectified_cameras_of(['back'], cameras, pairs)


# -- a rig's frame path (pipeline.py) --------------------------------------------------------------

@pytest.fixture(scope='module')
def matcher():
    config = {'gnn_layers': ['self', 'cross'] * 3}
    superpoint, superglue = SuperPoint(), SuperGlue(config)
    superpoint.load_state_dict(superpoint_state_dict(seed=0))
    superglue.load_state_dict(superglue_state_dict(seed=0, config=config))
    matcher = Matcher(superpoint, superglue, device='cpu')
    matcher.configure(max_keypoints=200, sinkhorn_iterations=20)
    return matcher


def test_rig_pipeline_depth_and_shared_track_ids(matcher, rig):
    geometry = StereoGeometry.from_camera_infos(*infos(rig[0]))
    camera = CameraPipeline(matcher, KeyframePolicy(min_matches=0, min_match_ratio=0.0))
    results = [camera.process(frame.left, frame.stamp, right=frame.right, stereo_geometry=geometry) for frame in rig]

    first = results[0]
    stereo = first.stereo
    c = stereo.correspondences
    assert first.is_new_keyframe and c.verified_with == 'rectified' and c.inlier.sum() > 20
    # one batch of two gives each image's own SuperPoint result
    for image, features in ((rig[0].left, first.frame_features), (rig[0].right, stereo.right_features)):
        np.testing.assert_array_equal(matcher.extract(image).keypoints_original(), features.keypoints_original())
    # the new keyframe carries the depth of its left keypoints: the stereo inliers', NaN elsewhere
    keyframe = camera.tracker.keyframe
    assert keyframe.depth.dtype == np.float32 and keyframe.depth.shape == (first.frame_keypoint_count,)
    inliers = c.indices0[c.inlier > 0]
    np.testing.assert_array_equal(keyframe.depth[inliers], stereo.depth[c.inlier > 0])
    assert np.isfinite(keyframe.depth[inliers]).all() and np.isnan(np.delete(keyframe.depth, inliers)).all()
    # every inlier of the new keyframe shares its left keypoint's track id; outliers have none
    np.testing.assert_array_equal(stereo.track_ids[c.inlier > 0], first.new_keyframe_track_ids[inliers])
    assert (stereo.track_ids[c.inlier == 0] == NO_TRACK).all()

    later = results[2]
    assert not later.is_new_keyframe and camera.tracker.keyframe is keyframe
    ids = dict(zip(later.frame_indices.tolist(), later.track_ids.tolist()))
    c = later.stereo.correspondences
    shared = [(ids[i], t) for i, t, inlier in zip(c.indices0.tolist(), later.stereo.track_ids.tolist(), c.inlier)
              if inlier and i in ids]
    assert len(shared) > 20 and all(a == b for a, b in shared)
    assert all(t == NO_TRACK for i, t in zip(c.indices0.tolist(), later.stereo.track_ids.tolist()) if i not in ids)

    inlier = c.inlier > 0  # depth fx' B / d of the pixels as given (keypoints at 320x240: whole pixels)
    np.testing.assert_allclose(later.stereo.depth[inlier], 256 * 0.25 / later.stereo.disparity[inlier], rtol=1e-5)


def test_rig_pipeline_refuses_a_right_image_that_does_not_fit(matcher, rig):
    camera = CameraPipeline(matcher)
    with pytest.raises(ImageError, match='right image .* must have the size and type of the left one'):
        camera.submit(rig[0].left, 1.0, right=rig[0].right[:200])
    with pytest.raises(ImageError, match='^right image: '):
        camera.submit(rig[0].left, 1.0, right=np.zeros((4, 4, 3), np.uint8))
    assert camera.pending == 0
    mono = camera.process(rig[0].left, 1.0)  # the monocular path: no stereo, no depth
    assert mono.stereo is None and camera.tracker.keyframe.depth is None


def test_rig_pipeline_masks_each_image_with_its_camera_mask(matcher, rig):
    """A rig's left and right cameras have masks of their own (masks: ['left:...', 'right:...']): each image of
    the one SuperPoint batch loses exactly the keypoints its own mask forbids."""
    frame = rig[0]
    height, width = frame.left.shape[:2]
    left_mask, right_mask = np.ones((height, width), bool), np.ones((height, width), bool)
    left_mask[:, : width // 2] = False   # left half of the left image, right half of the right one
    right_mask[:, width // 2:] = False
    for masks in ((left_mask, None), (None, right_mask), (left_mask, right_mask)):
        camera = CameraPipeline(matcher, mask=masks[0], right_mask=masks[1])
        result = camera.process(frame.left, frame.stamp, right=frame.right,
                                stereo_geometry=StereoGeometry.from_camera_infos(*infos(frame)))
        for image, features, mask in ((frame.left, result.frame_features, masks[0]),
                                      (frame.right, result.stereo.right_features, masks[1])):
            keypoints = features.keypoints_original()
            unmasked = matcher.extract(image).keypoints_original()
            if mask is None:
                np.testing.assert_array_equal(keypoints, unmasked)
                continue
            x, y = keypoints.round().astype(int).T
            assert len(keypoints) > 20 and mask[y, x].all()
            ux, uy = unmasked.round().astype(int).T
            assert not mask[uy, ux].all()  # the mask had keypoints to remove


def test_a_swapped_pair_is_not_rectified_and_says_why(rig):
    """A right P with Tx > 0 (the rig named 'right:left', or a sign error in the calibration) would make every
    disparity negative: no rectified inlier, silently. It is verified with the fundamental matrix instead and
    the reason names the swap; a malformed P is named with plain numbers."""
    frame = rig[0]
    p = list(frame.right_info['p'])
    p[3] = -p[3]
    swapped = StereoGeometry.from_camera_infos(*infos(frame, right_p=p), rectified=True)
    assert swapped.baseline_m < 0
    verification = StereoVerification()
    assert not verification.is_rectified(swapped)
    assert 'swapped' in verification.not_rectified_because(swapped)
    left = np.array([[100.0, 100.0], [150.0, 80.0], [200.0, 50.0], [120.0, 200.0], [60.0, 40.0], [250.0, 150.0],
                     [30.0, 220.0], [280.0, 30.0]])
    stereo = verification.verify(correspondences(left, frame.right_points(left)), swapped, 8)
    assert stereo.correspondences.verified_with == 'fundamental'
    assert verification.not_rectified_because(StereoGeometry.from_camera_infos(*infos(frame))) is None
    with pytest.raises(ValueError) as raised:
        StereoGeometry.from_camera_infos(*infos(frame, right_p=[1.0] * 12))
    assert 'np.float64' not in str(raised.value) and '[1.0, 1.0,' in str(raised.value)


def test_pairing_recovers_every_pair_across_a_backward_stamp_jump():
    """A restarted bag: the left camera's frames of after the jump (stamps 0..4) arrive while the right one's
    last frames of before it (103, 104) are still on their way. The queue then holds stamps out of order, and the
    bisection found neither 103 nor 0 in it: three pairs were lost. Every pair is formed."""
    pairer = StampPairer(0.0)
    arrivals = ([(LEFT, t, ('l', t)) for t in range(100, 105)] + [(RIGHT, t, ('r', t)) for t in range(100, 103)]
                + [(LEFT, t, ('l', t)) for t in range(0, 5)] + [(RIGHT, t, ('r', t)) for t in range(103, 105)]
                + [(RIGHT, t, ('r', t)) for t in range(0, 5)])
    pairs = feed(pairer, arrivals)
    assert all(left[1] == right[1] for left, right in pairs)  # never another time
    assert sorted(left[1] for left, _ in pairs) == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert pairer.unpaired == [0, 0]


def test_an_unrectified_pair_has_no_points_normalised_with_p(rig):
    """P projects the rectified images: raw images (R not the identity, not in rectified_cameras) normalised with it
    gave wrong points in StereoMatches and in the right camera's ~/features (VINS). They now have none."""
    frame = rig[0]
    rotated = np.eye(3)
    rotated[:2, :2] = [[np.cos(0.05), -np.sin(0.05)], [np.sin(0.05), np.cos(0.05)]]
    raw = StereoGeometry.from_camera_infos(*infos(frame, left_r=rotated.ravel().tolist()))
    left = np.array([[100.0, 100.0], [150.0, 80.0], [200.0, 50.0], [120.0, 200.0], [60.0, 40.0], [250.0, 150.0],
                     [30.0, 220.0], [280.0, 30.0]])
    stereo = StereoVerification().verify(correspondences(left, frame.right_points(left)), raw, 8)
    c = stereo.correspondences
    assert c.verified_with == 'fundamental' and len(c.normalized0) == 0 == len(c.normalized1)
    told = StereoGeometry.from_camera_infos(*infos(frame, left_r=rotated.ravel().tolist()), rectified=True)
    stereo = StereoVerification().verify(correspondences(left, frame.right_points(left)), told, 8)
    assert stereo.correspondences.verified_with == 'rectified' and len(stereo.correspondences.normalized1) == 8


def test_rig_pipeline_with_a_resize_takes_a_side_already_at_that_size(matcher, rig):
    """With a resize the two images of a pair may have other sizes (the refusal says so), but one that was
    already at the resize size stayed in colour while the other was resized to grey: the pair was refused.
    Both now go in as grey, and each side's keypoints come back in its own pixels."""
    import cv2

    resized = Matcher(matcher.superpoint, matcher.superglue, device='cpu', resize=(160, 120))
    resized.configure(max_keypoints=200, sinkhorn_iterations=20)
    camera = CameraPipeline(resized)
    geometry = StereoGeometry.from_camera_infos(*infos(rig[0]))
    small_right = cv2.resize(rig[0].right, (160, 120), interpolation=cv2.INTER_AREA)
    result = camera.process(rig[0].left, 1.0, right=small_right, stereo_geometry=geometry)  # 320x240 | 160x120
    assert result.stereo is not None and len(result.stereo.correspondences.confidence) > 0
    right_points = result.stereo.correspondences.points1
    assert right_points.max(0)[0] < 160 and right_points.max(0)[1] < 120  # the right image's own pixels
    with pytest.raises(ImageError, match='must have the size and type of the left one'):  # a dtype still differs
        camera.submit(rig[0].left, 2.0, right=small_right.astype(np.uint16) * 257)
