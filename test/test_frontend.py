"""The keyframe front-end (superglue_ros.frontend) on the real freiburg frames with confident random
weights: each keyframe rule, caching of the keyframe (never re-extracted, encoded once), the
correspondences in original pixels, live settings, threads, match_pair.

Thresholds of the match-count rules come from a reference run with every rule off, so the tests do
not depend on how many matches these particular weights give; they only need the count to fall as
the camera moves away from the keyframe.
"""
import threading

import cv2
import numpy as np
import pytest

from superglue_ros.frontend import KEYFRAME_REASONS, FrameResult, KeyframeFrontend, KeyframePolicy, PairResult
from superglue_ros.geometry import Verification
from superglue_ros.image import ImageError
from superglue_ros.matcher import Matcher
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict

RESIZE = (256, 192)                # processed size: the 640x480 frames / 2.5
SUPERGLUE = {'gnn_layers': ['self', 'cross'] * 3}  # a shorter GNN than the released 9 pairs: faster tests
SETTINGS = dict(max_keypoints=256, sinkhorn_iterations=20)
OFF = KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=0.0)
SUBSET = [0, 1, 5, 10]             # frames of the reference run: the view drifts away from frame 0
WAIT_S = 120                       # bound on every wait for another thread (never a timing assertion)


@pytest.fixture(scope='module')
def frames(freiburg_paths):
    """(BGR image, stamp in seconds) of every frame; the file names are the capture times."""
    return [(cv2.imread(str(path), cv2.IMREAD_COLOR), float(path.stem)) for path in freiburg_paths]


@pytest.fixture(scope='module')
def weights():
    return superpoint_state_dict(seed=0), superglue_state_dict(seed=0, config=SUPERGLUE)


class Counting:
    """Counts the matcher's SuperPoint runs (per image) and SuperGlue encodings (per image)."""

    def __init__(self, matcher: Matcher):
        self.extracted = self.encoded = 0
        extract_batch, encode = matcher.extract_batch, matcher.superglue.encode

        def counted_extract_batch(images, *args, **kwargs):
            self.extracted += len(images)
            return extract_batch(images, *args, **kwargs)

        def counted_encode(keypoints, *args, **kwargs):
            self.encoded += keypoints.shape[0]
            return encode(keypoints, *args, **kwargs)

        matcher.extract_batch, matcher.superglue.encode = counted_extract_batch, counted_encode


def make_frontend(weights, policy=OFF, resize=RESIZE, **kwargs) -> tuple[KeyframeFrontend, Counting]:
    superpoint, superglue = SuperPoint(), SuperGlue(SUPERGLUE)
    superpoint.load_state_dict(weights[0])
    superglue.load_state_dict(weights[1])
    matcher = Matcher(superpoint, superglue, device='cpu', resize=resize)
    matcher.configure(**SETTINGS)
    return KeyframeFrontend(matcher, policy, **kwargs), Counting(matcher)


def check_correspondences(result: FrameResult, keyframe_image: np.ndarray, frame_image: np.ndarray,
                          match_threshold: float = 0.2):
    """Consistent lengths and types; points are the listed keypoints, in pixels of the original images."""
    k = len(result.confidence)
    assert result.keyframe_points.shape == result.frame_points.shape == (k, 2)
    assert result.keyframe_indices.shape == result.frame_indices.shape == (k,)
    assert result.keyframe_points.dtype == result.frame_points.dtype == result.confidence.dtype == np.float32
    assert result.keyframe_indices.dtype == result.frame_indices.dtype == np.int32
    assert result.inlier.dtype == np.uint8
    assert result.keyframe_keypoint_count == len(result.keyframe_features.keypoints)
    assert result.frame_keypoint_count == len(result.frame_features.keypoints)
    assert result.keyframe_reason in KEYFRAME_REASONS + ('',)
    assert result.is_new_keyframe == bool(result.keyframe_reason) == (result.new_keyframe_id is not None)
    # one-to-one matches between listed keypoints
    assert len(set(result.keyframe_indices.tolist())) == len(set(result.frame_indices.tolist())) == k
    np.testing.assert_array_equal(result.keyframe_points,
                                  result.keyframe_features.keypoints_original()[result.keyframe_indices])
    np.testing.assert_array_equal(result.frame_points, result.frame_features.keypoints_original()[result.frame_indices])
    if k:
        assert np.all((result.confidence > match_threshold) & (result.confidence <= 1))
    for points, image in ((result.keyframe_points, keyframe_image), (result.frame_points, frame_image)):
        height, width = image.shape[:2]
        assert np.all((points >= 0) & (points <= [width - 1, height - 1])), 'points outside the original image'


@pytest.fixture(scope='module')
def reference(weights, frames):
    """SUBSET processed with every rule off: all matched against frame 0."""
    frontend, counting = make_frontend(weights)
    results = [frontend.process(*frames[i]) for i in SUBSET]
    counts = [len(r.confidence) for r in results[1:]]
    assert counts[0] > 20, f'frame {SUBSET[1]} should match its neighbour well, got {counts[0]} matches'
    assert min(counts[1:]) < counts[0], f'matches should fall as the view drifts from frame 0: {counts}'
    return results, counting


def test_tracking_against_one_keyframe(reference, frames):
    results, counting = reference
    first = results[0]
    assert (first.frame_index, first.keyframe_id, first.new_keyframe_id) == (0, 0, 0)
    assert first.is_new_keyframe and first.keyframe_reason == 'first'
    assert first.keyframe_features is first.frame_features and first.keyframe_stamp_s == first.stamp_s
    assert len(first.confidence) == 0 and first.keyframe_points.shape == (0, 2)
    check_correspondences(first, frames[0][0], frames[0][0])
    for index, (i, result) in enumerate(zip(SUBSET[1:], results[1:]), start=1):
        assert result.frame_index == index and result.stamp_s == frames[i][1]
        assert (result.keyframe_id, result.is_new_keyframe, result.keyframe_reason) == (0, False, '')
        assert result.keyframe_stamp_s == frames[0][1]
        assert result.keyframe_features is first.frame_features
        assert len(result.inlier) == 0  # verification off
        check_correspondences(result, frames[0][0], frames[i][0])
        assert set(result.timings_ms) >= {'extract', 'match', 'verify', 'total', 'superpoint', 'superglue_match'}


def test_keyframe_is_extracted_and_encoded_once(reference):
    results, counting = reference
    # one SuperPoint run per frame; one encoding per matched frame plus one for the keyframe
    assert counting.extracted == len(SUBSET)
    assert counting.encoded == len(SUBSET)
    keyframe = results[0].frame_features
    assert keyframe.encoded is not None and all(r.keyframe_features.encoded is keyframe.encoded for r in results)


def test_resize_gives_original_pixels(reference, weights, frames):
    """Processed at 1 / 2.5: the points are 2.5 x the processed keypoints, spread over the full frame."""
    results, _ = reference
    result = results[1]
    assert result.frame_features.image_size == RESIZE and result.frame_features.scale == (2.5, 2.5)
    processed = result.frame_features.keypoints.numpy()[result.frame_indices]
    np.testing.assert_allclose(result.frame_points, processed * 2.5, rtol=1e-6)
    assert result.frame_points[:, 0].max() > RESIZE[0] and result.frame_points[:, 1].max() > RESIZE[1]

    # unequal scales: 640x480 processed as 320x120 -> (2, 4)
    frontend, _ = make_frontend(weights, resize=(320, 120))
    frontend.process(*frames[0])
    result = frontend.process(*frames[1])
    assert result.frame_features.scale == (2.0, 4.0) and len(result.confidence) > 0
    processed = result.frame_features.keypoints.numpy()[result.frame_indices]
    np.testing.assert_allclose(result.frame_points, processed * [2.0, 4.0], rtol=1e-6)
    assert result.frame_points[:, 1].max() > 120
    check_correspondences(result, frames[0][0], frames[1][0])


def check_match_count_rule(results, frames, fires, reason):
    """After the first frame, the rule decides every frame, against the keyframe of the moment."""
    keyframe_frame, keyframe_id, switches = SUBSET[0], 0, 0
    for i, result in zip(SUBSET[1:], results[1:]):
        assert result.keyframe_id == keyframe_id, f'frame {i}'
        check_correspondences(result, frames[keyframe_frame][0], frames[i][0])
        assert result.is_new_keyframe == fires(result), f'frame {i}'
        if result.is_new_keyframe:
            assert result.keyframe_reason == reason and result.new_keyframe_id == keyframe_id + 1
            keyframe_frame, keyframe_id, switches = i, result.new_keyframe_id, switches + 1
    assert switches > 0


def test_few_matches_rule(reference, weights, frames):
    counts = [len(r.confidence) for r in reference[0][1:]]
    min_matches = counts[0]  # frame SUBSET[1] keeps the keyframe, a later one has fewer matches
    first_switch = next(i for i, count in enumerate(counts, start=1) if count < min_matches)
    frontend, _ = make_frontend(weights, KeyframePolicy(min_matches=min_matches, min_match_ratio=0.0))
    results = [frontend.process(*frames[i]) for i in SUBSET]
    for index in range(1, first_switch):
        assert not results[index].is_new_keyframe
    assert results[first_switch].keyframe_reason == 'few_matches' and results[first_switch].keyframe_id == 0
    check_match_count_rule(results, frames, lambda r: len(r.confidence) < min_matches, 'few_matches')


def test_match_ratio_rule(reference, weights, frames):
    keyframe_keypoints = reference[0][1].keyframe_keypoint_count
    ratios = [len(r.confidence) / keyframe_keypoints for r in reference[0][1:]]
    min_ratio = ratios[0]
    first_switch = next(i for i, ratio in enumerate(ratios, start=1) if ratio < min_ratio)
    frontend, _ = make_frontend(weights, KeyframePolicy(min_matches=0, min_match_ratio=min_ratio))
    results = [frontend.process(*frames[i]) for i in SUBSET]
    assert results[first_switch].keyframe_reason == 'low_match_ratio'
    check_match_count_rule(results, frames,
                           lambda r: len(r.confidence) / r.keyframe_keypoint_count < min_ratio, 'low_match_ratio')


def test_max_age_rule(weights, frames):
    """Frames ~1 s apart, keyframes live at most 1.5 s: the third frame becomes the keyframe."""
    frontend, counting = make_frontend(weights, KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=1.5))
    keyframe_stamp, keyframe_id, switches = frames[0][1], 0, 0
    for i in range(4):
        image, stamp = frames[i]
        result = frontend.process(image, stamp)
        assert result.keyframe_id == keyframe_id and result.keyframe_stamp_s == keyframe_stamp
        expected = i > 0 and stamp - keyframe_stamp > 1.5
        assert result.is_new_keyframe == (i == 0 or expected)
        if expected:
            assert result.keyframe_reason == 'max_age' and len(result.confidence) > 0
            switches += 1
        if result.is_new_keyframe:
            keyframe_stamp, keyframe_id = stamp, result.new_keyframe_id
    assert switches == 1
    assert counting.extracted == 4


def test_requested_keyframe(weights, frames):
    frontend, counting = make_frontend(weights)
    frontend.process(*frames[0])
    assert not frontend.process(*frames[1]).is_new_keyframe
    frontend.request_new_keyframe()
    frontend.request_new_keyframe()  # two requests before a frame: one new keyframe
    requested = frontend.process(*frames[2])
    assert requested.is_new_keyframe and requested.keyframe_reason == 'requested'
    assert (requested.keyframe_id, requested.new_keyframe_id) == (0, 1) and len(requested.confidence) > 0
    check_correspondences(requested, frames[0][0], frames[2][0])
    after = frontend.process(*frames[3])
    assert (after.keyframe_id, after.is_new_keyframe) == (1, False)
    assert after.keyframe_features is requested.frame_features
    check_correspondences(after, frames[2][0], frames[3][0])
    # the new keyframe was encoded while it was matched as a frame: no second encoding
    assert counting.extracted == 4 and counting.encoded == 4


def test_request_from_another_thread_while_processing(weights, frames):
    """The service thread's request returns while the worker is inside process() and applies to that frame."""
    frontend, _ = make_frontend(weights)
    frontend.process(*frames[0])
    matching, release = threading.Event(), threading.Event()
    match = frontend.matcher.match

    def blocking_match(*args):
        matching.set()
        assert release.wait(WAIT_S), 'test did not release the matcher'
        return match(*args)

    frontend.matcher.match = blocking_match
    results = []
    worker = threading.Thread(target=lambda: results.append(frontend.process(*frames[1])))
    worker.start()
    try:
        assert matching.wait(WAIT_S), 'process() did not reach matching'
        service = threading.Thread(target=frontend.request_new_keyframe)
        service.start()
        service.join(WAIT_S)
        assert not service.is_alive(), 'request_new_keyframe() blocked behind process()'
    finally:
        release.set()
        worker.join(WAIT_S)
    assert not worker.is_alive() and results[0].keyframe_reason == 'requested'


def test_time_jump_restarts_on_the_frame(weights, frames):
    frontend, counting = make_frontend(weights)
    frontend.process(*frames[0])
    frontend.process(*frames[1])
    frontend.request_new_keyframe()  # satisfied by the time-jump keyframe
    image, _ = frames[2]
    jumped = frontend.process(image, frames[0][1] - 100.0)  # bag restarted
    assert jumped.is_new_keyframe and jumped.keyframe_reason == 'time_jump'
    assert jumped.keyframe_id == jumped.new_keyframe_id == 1 and jumped.frame_index == 2
    assert jumped.keyframe_features is jumped.frame_features and jumped.keyframe_stamp_s == jumped.stamp_s
    assert len(jumped.confidence) == 0 and jumped.keyframe_points.shape == (0, 2)
    after = frontend.process(frames[3][0], jumped.stamp_s)  # an equal stamp is no jump
    assert (after.keyframe_id, after.is_new_keyframe, after.keyframe_reason) == (1, False, '')
    check_correspondences(after, image, frames[3][0])
    assert counting.extracted == 4


def test_live_policy_and_matcher_settings(weights, frames):
    frontend, counting = make_frontend(weights)
    frontend.process(*frames[0])
    frontend.configure(max_keypoints=40, match_threshold=0.3)
    result = frontend.process(*frames[1])
    assert result.frame_keypoint_count == 40 and result.keyframe_keypoint_count == 256  # keyframe kept as extracted
    check_correspondences(result, frames[0][0], frames[1][0], match_threshold=0.3)
    assert not result.is_new_keyframe
    frontend.policy = KeyframePolicy(min_matches=10 ** 6, min_match_ratio=0.0)
    result = frontend.process(*frames[2])
    assert result.keyframe_reason == 'few_matches'
    assert counting.extracted == 3
    with pytest.raises(ValueError, match='max_keypoints'):
        frontend.configure(max_keypoints=0)
    with pytest.raises(TypeError, match='KeyframePolicy'):
        frontend.policy = {'min_matches': 3}


def test_geometric_verification(weights, frames):
    frontend, _ = make_frontend(weights, verification=Verification('fundamental', threshold_px=2.0))
    frontend.process(*frames[0])
    result = frontend.process(*frames[1])
    assert result.inlier.shape == result.confidence.shape and result.inlier.dtype == np.uint8
    assert set(np.unique(result.inlier).tolist()) <= {0, 1}
    assert result.inlier.mean() > 0.5, 'neighbouring frames: most matches should fit one epipolar geometry'
    np.testing.assert_array_equal(result.inlier, Verification('fundamental', threshold_px=2.0).inliers(
        result.keyframe_points, result.frame_points))
    frontend.verification = Verification()  # off again, live
    assert len(frontend.process(*frames[2]).inlier) == 0


def test_match_pair_leaves_the_keyframe(weights, frames):
    frontend, counting = make_frontend(weights, verification=Verification('homography'))
    frontend.process(*frames[0])
    image = frames[5][0]
    pair = frontend.match_pair(image, image[:, :, ::-1].copy(), color_order1='rgb')  # same picture
    assert isinstance(pair, PairResult) and pair.keypoint_count0 == pair.keypoint_count1 > 0
    assert len(pair.confidence) > 0.9 * pair.keypoint_count0
    np.testing.assert_array_equal(pair.indices0, pair.indices1)
    np.testing.assert_array_equal(pair.points0, pair.points1)
    assert pair.inlier.shape == pair.confidence.shape and pair.inlier.all()
    assert pair.points0.dtype == np.float32 and pair.indices0.dtype == np.int32
    result = frontend.process(*frames[1])
    assert (result.keyframe_id, result.frame_index, result.is_new_keyframe) == (0, 1, False)
    assert counting.extracted == 4 and counting.encoded == 4


def test_unusable_image_changes_nothing(weights, frames):
    frontend, _ = make_frontend(weights)
    frontend.process(*frames[0])
    with pytest.raises(ImageError):
        frontend.process(np.zeros((8, 8), np.uint8), frames[1][1])
    with pytest.raises(ValueError, match='stamp_s must be a finite number'):
        frontend.process(frames[1][0], float('nan'))
    result = frontend.process(*frames[1])
    assert (result.frame_index, result.keyframe_id, result.is_new_keyframe) == (1, 0, False)


@pytest.mark.parametrize('settings, message', [
    (dict(min_matches=-1), 'min_matches must be an integer >= 0'),
    (dict(min_matches=2.5), 'min_matches must be an integer >= 0'),
    (dict(min_matches=True), 'min_matches must be an integer >= 0'),
    (dict(min_match_ratio=1.5), 'min_match_ratio must be a number in [0, 1]'),
    (dict(min_match_ratio=-0.1), 'min_match_ratio must be a number in [0, 1]'),
    (dict(max_age_s=-1.0), 'max_age_s must be a finite number of seconds >= 0'),
    (dict(max_age_s=float('inf')), 'max_age_s must be a finite number of seconds >= 0'),
])
def test_policy_validation(settings, message):
    with pytest.raises(ValueError) as error:
        KeyframePolicy(**settings)
    assert message in str(error.value)

