"""The keyframe tracker (superglue_ros.tracking): every rule in isolation on fake Features (pure state, no
model), then the tracker driven by a CameraPipeline on the real freiburg frames with confident random
weights: each rule, the keyframe extracted and encoded once, correspondences in pixels of the image as
given, live settings, threads, stamp jitter (issue 9) and track ids across keyframes (issue 8).

Thresholds of the match-count rules on real frames come from a reference run with every rule off, so the
tests do not depend on how many matches these particular weights give; they only need the count to fall
as the camera moves away from the keyframe.
"""
import threading

import cv2
import numpy as np
import pytest
import torch

from superglue_ros.geometry import Verification
from superglue_ros.image import ImageError
from superglue_ros.matcher import Features, Matcher
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.pipeline import CameraPipeline
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict
from superglue_ros.tracking import (KEYFRAME_REASONS, Correspondences, FrameResult, Keyframe, KeyframePolicy,
                                    KeyframeTracker)

RESIZE = (256, 192)                # processed size: the 640x480 frames / 2.5
SUPERGLUE = {'gnn_layers': ['self', 'cross'] * 3}  # a shorter GNN than the released 9 pairs: faster tests
SETTINGS = dict(max_keypoints=256, sinkhorn_iterations=20)
OFF = KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=0.0)
SUBSET = [0, 1, 5, 10]             # frames of the reference run: the view drifts away from frame 0
STAGES = {'preprocess', 'upload', 'superpoint', 'superglue', 'download', 'verify', 'total'}
WAIT_S = 120                       # bound on every wait for another thread (never a timing assertion)
NO_ID = np.iinfo(np.uint64).max


# -- pure state: fake features, no model --------------------------------------------------------------

def fake_features(count: int, seed: int = 0) -> Features:
    """Features of `count` distinct keypoints on a 320x240 pixel grid (zero descriptors): nothing is computed."""
    cells = np.random.default_rng(seed).choice(320 * 240, count, replace=False)
    keypoints = torch.from_numpy(np.stack([cells % 320, cells // 320], 1).astype(np.float32))
    return Features(keypoints, torch.rand(count), torch.zeros(256, count), (320, 240), (1.0, 1.0))


def pairs_of(keyframe: Keyframe, frame: Features, pairs) -> Correspondences:
    """Correspondences keyframe keypoint i <-> frame keypoint j for each (i, j) in pairs, as the pipeline
    builds them from SuperGlue's matches0."""
    matches0 = np.full(len(keyframe.keypoints), -1, np.int64)
    for i, j in pairs:
        matches0[i] = j
    return Correspondences.from_matches(matches0, np.full(len(matches0), 0.9, np.float32), keyframe.keypoints,
                                        frame.keypoints_original())


def first(k: int) -> list:
    """k correspondences: keyframe keypoint i <-> frame keypoint i."""
    return [(i, i) for i in range(k)]


def step(tracker: KeyframeTracker, frame: Features, stamp_s: float, pairs=(), inlier=None,
         frame_id: str = '') -> FrameResult:
    """One frame as the pipeline drives the tracker: keyframe_for(stamp, frame_id), then update() with `pairs`
    against that keyframe (None when it names none). inlier: [K] flags of a 'fundamental' verification, in the
    order of the correspondences (sorted by keyframe index)."""
    keyframe = tracker.keyframe_for(stamp_s, frame_id)
    correspondences = None
    if keyframe is not None:
        correspondences = pairs_of(keyframe, frame, pairs)
        if inlier is not None:
            correspondences.inlier, correspondences.verified_with = np.asarray(inlier, np.uint8), 'fundamental'
    return tracker.update(frame, stamp_s, correspondences, frame_id=frame_id)


def test_first_frame_becomes_keyframe_0():
    tracker, frame = KeyframeTracker(OFF), fake_features(40)
    assert tracker.keyframe is None and tracker.keyframe_for(5.0) is None
    result = step(tracker, frame, 5.0)
    assert (result.frame_index, result.keyframe_id, result.new_keyframe_id) == (0, 0, 0)
    assert result.is_new_keyframe and result.keyframe_reason == 'first'
    assert result.keyframe_features is result.frame_features is frame and result.keyframe_stamp_s == 5.0
    assert result.keyframe_points.shape == result.frame_points.shape == (0, 2) and len(result.confidence) == 0
    assert result.track_ids.dtype == np.uint64 and len(result.track_ids) == 0 and len(result.inlier) == 0
    assert result.keyframe_keypoint_count == result.frame_keypoint_count == 40
    np.testing.assert_array_equal(result.new_keyframe_track_ids, np.arange(40, dtype=np.uint64))
    keyframe = tracker.keyframe
    assert (keyframe.id, keyframe.stamp_s, keyframe.features) == (0, 5.0, frame)
    np.testing.assert_array_equal(keyframe.keypoints, frame.keypoints_original())
    assert keyframe.track_ids is result.new_keyframe_track_ids
    assert tracker.keyframe_for(5.1) is keyframe


def test_matched_frame_keeps_the_keyframe():
    tracker = KeyframeTracker(OFF)
    step(tracker, fake_features(40), 0.0)
    keyframe, frame = tracker.keyframe, fake_features(30, seed=1)
    result = step(tracker, frame, 0.1, [(5, 2), (1, 7), (9, 0)])
    assert (result.frame_index, result.keyframe_id, result.is_new_keyframe) == (1, 0, False)
    assert result.keyframe_reason == '' and result.new_keyframe_id is None and result.new_keyframe_track_ids is None
    assert result.keyframe_features is keyframe.features and result.frame_features is frame
    np.testing.assert_array_equal(result.keyframe_indices, [1, 5, 9])
    np.testing.assert_array_equal(result.frame_indices, [7, 2, 0])
    np.testing.assert_array_equal(result.keyframe_points, keyframe.keypoints[[1, 5, 9]])
    np.testing.assert_array_equal(result.frame_points, frame.keypoints_original()[[7, 2, 0]])
    np.testing.assert_array_equal(result.track_ids, keyframe.track_ids[[1, 5, 9]])
    assert tracker.keyframe is keyframe


@pytest.mark.parametrize('threshold', [1.0, 5.0])
def test_time_jump_only_beyond_the_threshold(threshold):
    """Backward steps up to time_jump_threshold_s are stamp jitter and are matched; a larger one resets
    the keyframe on the frame itself; forward jumps never do."""
    tracker = KeyframeTracker(KeyframePolicy(min_matches=0, min_match_ratio=0.0, time_jump_threshold_s=threshold))
    step(tracker, fake_features(40), 100.0)
    keyframe = tracker.keyframe
    back = step(tracker, fake_features(40, 1), 100.0 - threshold, first(20))  # exactly the threshold back
    assert (back.keyframe_id, back.is_new_keyframe) == (0, False) and tracker.keyframe is keyframe
    tracker.request_new_keyframe()  # satisfied by the time-jump keyframe
    jumped = step(tracker, fake_features(30, 2), 100.0 - 2 * threshold - 0.01)  # past it, from the last frame
    assert jumped.is_new_keyframe and jumped.keyframe_reason == 'time_jump' and jumped.frame_index == 2
    assert jumped.keyframe_id == jumped.new_keyframe_id == 1 and jumped.keyframe_features is jumped.frame_features
    assert jumped.keyframe_stamp_s == jumped.stamp_s and len(jumped.confidence) == 0
    np.testing.assert_array_equal(jumped.new_keyframe_track_ids, 40 + np.arange(30, dtype=np.uint64))  # none inherited
    ahead = step(tracker, fake_features(30, 3), 1e6, first(20))  # forward: matched (max_age off)
    assert (ahead.keyframe_id, ahead.is_new_keyframe, ahead.keyframe_reason) == (1, False, '')


def test_frame_id_change_makes_the_frame_the_keyframe():
    """Issue 17 point 8: a frame whose frame_id is not its keyframe's is not matched against it (another
    optical frame) and becomes the keyframe itself, reason 'frame_changed', without inheriting track ids;
    the next frames of that frame_id match it; a request is satisfied by it, as by a time jump."""
    tracker = KeyframeTracker(OFF)
    step(tracker, fake_features(40), 0.0, frame_id='camera_a')
    assert tracker.keyframe.frame_id == 'camera_a'
    assert not step(tracker, fake_features(40, 1), 0.1, first(30), frame_id='camera_a').is_new_keyframe
    assert tracker.keyframe_for(0.2, 'camera_b') is None and tracker.keyframe_for(0.2, 'camera_a') is tracker.keyframe
    tracker.request_new_keyframe()
    changed = step(tracker, fake_features(30, 2), 0.2, first(20), frame_id='camera_b')
    assert changed.is_new_keyframe and changed.keyframe_reason == 'frame_changed' and changed.frame_index == 2
    assert changed.keyframe_id == changed.new_keyframe_id == 1 and changed.keyframe_features is changed.frame_features
    assert len(changed.confidence) == 0 and tracker.keyframe.frame_id == 'camera_b'
    np.testing.assert_array_equal(changed.new_keyframe_track_ids, 40 + np.arange(30, dtype=np.uint64))
    after = step(tracker, fake_features(30, 3), 0.3, first(20), frame_id='camera_b')  # the request was used up
    assert (after.keyframe_id, after.is_new_keyframe, len(after.confidence)) == (1, False, 20)
    # a frame_id change and a time jump at once: frame_changed, listed first
    both = step(tracker, fake_features(30, 4), -10.0, frame_id='camera_a')
    assert both.keyframe_reason == 'frame_changed' and both.new_keyframe_id == 2


def test_requested_keyframe():
    tracker = KeyframeTracker(OFF)
    tracker.request_new_keyframe()  # before the first frame: satisfied by it
    assert step(tracker, fake_features(40), 0.0).keyframe_reason == 'first'
    assert not step(tracker, fake_features(40, 1), 0.1, first(30)).is_new_keyframe
    tracker.request_new_keyframe()
    tracker.request_new_keyframe()  # two requests before a frame: one new keyframe
    requested = step(tracker, fake_features(40, 2), 0.2, first(30))
    assert requested.keyframe_reason == 'requested' and (requested.keyframe_id, requested.new_keyframe_id) == (0, 1)
    assert len(requested.confidence) == 30 and tracker.keyframe.features is requested.frame_features
    after = step(tracker, fake_features(40, 3), 0.3, first(30))
    assert (after.keyframe_id, after.is_new_keyframe) == (1, False)


def test_request_from_another_thread_during_a_frame():
    """A request made while a frame is between keyframe_for() and update() (being matched) returns at once
    and applies to that frame."""
    tracker = KeyframeTracker(OFF)
    step(tracker, fake_features(40), 0.0)
    matching, release, results = threading.Event(), threading.Event(), []

    def frame_thread():
        frame = fake_features(40, 1)
        keyframe = tracker.keyframe_for(0.1)
        matching.set()
        assert release.wait(WAIT_S), 'the test did not release the frame'
        results.append(tracker.update(frame, 0.1, pairs_of(keyframe, frame, first(30))))

    worker = threading.Thread(target=frame_thread)
    worker.start()
    try:
        assert matching.wait(WAIT_S)
        service = threading.Thread(target=tracker.request_new_keyframe)
        service.start()
        service.join(WAIT_S)
        assert not service.is_alive() and worker.is_alive(), 'request_new_keyframe() waited for the frame'
    finally:
        release.set()
        worker.join(WAIT_S)
    assert results[0].keyframe_reason == 'requested'


def test_few_matches():
    tracker = KeyframeTracker(KeyframePolicy(min_matches=10, min_match_ratio=0.0))
    step(tracker, fake_features(100), 0.0)
    assert not step(tracker, fake_features(50, 1), 0.1, first(10)).is_new_keyframe  # not below
    result = step(tracker, fake_features(50, 2), 0.2, first(9))
    assert result.keyframe_reason == 'few_matches' and (result.keyframe_id, result.new_keyframe_id) == (0, 1)
    tracker.policy = OFF  # 0: off, even with no match at all
    assert not step(tracker, fake_features(50, 3), 0.3).is_new_keyframe


def test_low_match_ratio():
    """The ratio is matches / keyframe keypoints (not the frame's)."""
    tracker = KeyframeTracker(KeyframePolicy(min_matches=0, min_match_ratio=0.2))
    step(tracker, fake_features(100), 0.0)
    assert not step(tracker, fake_features(1000, 1), 0.1, first(20)).is_new_keyframe
    result = step(tracker, fake_features(1000, 2), 0.2, first(19))
    assert result.keyframe_reason == 'low_match_ratio' and result.new_keyframe_id == 1
    tracker.policy = OFF
    assert not step(tracker, fake_features(50, 3), 0.3).is_new_keyframe


def test_keyframe_without_keypoints_is_replaced():
    """A blank keyframe (no keypoints) matches nothing: the next frame replaces it."""
    for policy, reason in ((KeyframePolicy(), 'few_matches'), (KeyframePolicy(min_matches=0), 'low_match_ratio')):
        tracker = KeyframeTracker(policy)
        step(tracker, fake_features(0), 0.0)
        assert step(tracker, fake_features(50, 1), 0.1).keyframe_reason == reason


def test_max_age():
    """The age is the frame's stamp minus the keyframe's (not the previous frame's)."""
    tracker = KeyframeTracker(KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=1.0))
    step(tracker, fake_features(40), 10.0)
    assert not step(tracker, fake_features(40, 1), 10.6, first(30)).is_new_keyframe
    assert not step(tracker, fake_features(40, 2), 11.0, first(30)).is_new_keyframe  # not older than 1 s
    result = step(tracker, fake_features(40, 3), 11.01, first(30))
    assert result.keyframe_reason == 'max_age' and result.keyframe_stamp_s == 10.0
    assert tracker.keyframe.stamp_s == 11.01
    tracker.policy = OFF  # 0: off
    assert not step(tracker, fake_features(40, 4), 1e6, first(30)).is_new_keyframe


@pytest.mark.parametrize('request_it, matches, stamp, reason', [
    (True, 5, 20.0, 'requested'),        # every rule fires: the first listed wins
    (False, 5, 20.0, 'few_matches'),
    (False, 15, 20.0, 'low_match_ratio'),
    (False, 60, 20.0, 'max_age'),
    (False, 60, 10.5, ''),
])
def test_rule_order(request_it, matches, stamp, reason):
    assert KEYFRAME_REASONS == ('first', 'frame_changed', 'time_jump', 'requested', 'few_matches', 'low_match_ratio',
                                'max_age')
    tracker = KeyframeTracker(KeyframePolicy(min_matches=10, min_match_ratio=0.5, max_age_s=1.0))
    step(tracker, fake_features(100), 10.0)
    if request_it:
        tracker.request_new_keyframe()
    assert step(tracker, fake_features(100, 1), stamp, first(matches)).keyframe_reason == reason


def test_keyframe_ids_and_frame_indices():
    tracker = KeyframeTracker(OFF)
    keyframe_id, switches = 0, 0
    for index in range(30):
        if index % 4 == 3:
            tracker.request_new_keyframe()
        result = step(tracker, fake_features(20, index), index * 0.1, first(10))
        assert result.frame_index == index and result.keyframe_id == keyframe_id
        if result.is_new_keyframe and index:
            assert result.new_keyframe_id == keyframe_id + 1 and tracker.keyframe.id == keyframe_id + 1
            keyframe_id, switches = keyframe_id + 1, switches + 1
    assert switches == 7


def test_track_ids_inherited_through_correspondences():
    tracker = KeyframeTracker(OFF)
    step(tracker, fake_features(10), 0.0)
    np.testing.assert_array_equal(tracker.keyframe.track_ids, np.arange(10, dtype=np.uint64))
    tracker.request_new_keyframe()
    result = step(tracker, fake_features(8, 1), 0.1, [(3, 0), (7, 5), (1, 2)])
    np.testing.assert_array_equal(result.track_ids, [1, 3, 7])  # in keyframe-index order
    # frame keypoints 0, 5, 2 inherit 3, 7, 1; the others get new ids, in keypoint order
    np.testing.assert_array_equal(result.new_keyframe_track_ids, [3, 10, 1, 11, 12, 7, 13, 14])
    assert result.new_keyframe_track_ids is tracker.keyframe.track_ids

    # verified: only inliers pass their ids on. Keyframe keypoints 1, 3, 7 (ids 10, 11, 14) <-> frame keypoints
    # 2, 0, 5; the second correspondence is an outlier: frame keypoint 0 gets a new id, not 11
    tracker.request_new_keyframe()
    result = step(tracker, fake_features(8, 2), 0.2, [(3, 0), (7, 5), (1, 2)], inlier=[1, 0, 1])
    np.testing.assert_array_equal(result.track_ids, [10, 11, 14])
    np.testing.assert_array_equal(result.new_keyframe_track_ids, [15, 16, 10, 17, 18, 14, 19, 20])


def test_track_ids_never_reused_across_many_switches():
    rng = np.random.default_rng(3)
    tracker, issued = KeyframeTracker(OFF), set()
    previous = step(tracker, fake_features(50), 0.0).new_keyframe_track_ids
    issued.update(previous.tolist())
    for index in range(1, 60):
        count = int(rng.integers(0, 80))
        frame = fake_features(count, index)
        k = int(rng.integers(0, min(count, len(previous)) + 1))
        pairs = list(zip(rng.choice(len(previous), k, replace=False), rng.choice(count, k, replace=False)))
        inlier = rng.integers(0, 2, k) if index % 2 else None
        tracker.request_new_keyframe()
        result = step(tracker, frame, index * 0.1, pairs, inlier)
        ids = result.new_keyframe_track_ids
        assert ids.dtype == np.uint64 and len(ids) == count and len(set(ids.tolist())) == count  # unique
        np.testing.assert_array_equal(result.track_ids, previous[result.keyframe_indices])
        kept = np.ones(k, bool) if inlier is None else np.asarray(result.inlier, bool)
        np.testing.assert_array_equal(ids[result.frame_indices[kept]], result.track_ids[kept])
        fresh = np.setdiff1d(np.arange(count), result.frame_indices[kept])
        assert issued.isdisjoint(ids[fresh].tolist()), 'a track id was reused'
        issued.update(ids[fresh].tolist())
        previous = ids
    assert NO_ID not in issued


def test_policy_settings():
    assert KeyframePolicy() == KeyframePolicy(min_matches=50, min_match_ratio=0.2, max_age_s=0.0,
                                              time_jump_threshold_s=1.0)  # settings.py
    policy = KeyframePolicy.from_settings({'keyframe_min_matches': 7, 'time_jump_threshold_s': 2.5, 'other': 1}, OFF)
    assert policy == KeyframePolicy(min_matches=7, min_match_ratio=0.0, max_age_s=0.0, time_jump_threshold_s=2.5)
    assert type(KeyframePolicy(min_matches=np.int64(3)).min_matches) is int
    assert type(KeyframePolicy(max_age_s=2).max_age_s) is float
    tracker = KeyframeTracker()
    with pytest.raises(TypeError, match='KeyframePolicy'):
        tracker.policy = {'min_matches': 3}
    assert tracker.policy == KeyframePolicy()


@pytest.mark.parametrize('settings, message', [
    (dict(min_matches=-1), 'keyframe_min_matches must be an integer >= 0; got -1'),
    (dict(min_matches=2.5), 'keyframe_min_matches must be an integer >= 0; got 2.5'),
    (dict(min_matches=True), 'keyframe_min_matches must be an integer >= 0; got True'),
    (dict(min_match_ratio=1.5), 'keyframe_min_match_ratio must be a number in [0, 1]; got 1.5'),
    (dict(min_match_ratio=-0.1), 'keyframe_min_match_ratio must be a number in [0, 1]'),
    (dict(max_age_s=-1.0), 'keyframe_max_age_s must be a number of seconds >= 0; got -1.0'),
    (dict(max_age_s=float('inf')), 'keyframe_max_age_s must be a number of seconds >= 0; got inf'),
    (dict(time_jump_threshold_s=0), 'time_jump_threshold_s must be a number of seconds > 0; got 0'),
    (dict(time_jump_threshold_s=float('nan')), 'time_jump_threshold_s must be a number of seconds > 0'),
])
def test_policy_validation(settings, message):
    with pytest.raises(ValueError) as error:
        KeyframePolicy(**settings)
    assert message in str(error.value)


# -- real frames through a CameraPipeline ---------------------------------------------------------------

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
        detect, encode = matcher.detect, matcher.superglue.encode

        def counted_detect(images, uploads, masks=None):
            self.extracted += len(uploads)
            return detect(images, uploads, masks)

        def counted_encode(keypoints, *args, **kwargs):
            self.encoded += keypoints.shape[0]
            return encode(keypoints, *args, **kwargs)

        matcher.detect, matcher.superglue.encode = counted_detect, counted_encode


def make_camera(weights, policy=OFF, resize=RESIZE, **kwargs) -> tuple[CameraPipeline, Counting]:
    superpoint, superglue = SuperPoint(), SuperGlue(SUPERGLUE)
    superpoint.load_state_dict(weights[0])
    superglue.load_state_dict(weights[1])
    matcher = Matcher(superpoint, superglue, device='cpu', resize=resize)
    matcher.configure(**SETTINGS)
    return CameraPipeline(matcher, policy, **kwargs), Counting(matcher)


def check_correspondences(result: FrameResult, keyframe_image: np.ndarray, frame_image: np.ndarray,
                          match_threshold: float = 0.2):
    """Consistent lengths and types; points are the listed keypoints, in pixels of the original images."""
    k = len(result.confidence)
    assert result.keyframe_points.shape == result.frame_points.shape == (k, 2)
    assert result.keyframe_indices.shape == result.frame_indices.shape == result.track_ids.shape == (k,)
    assert result.keyframe_points.dtype == result.frame_points.dtype == result.confidence.dtype == np.float32
    assert result.keyframe_indices.dtype == result.frame_indices.dtype == np.int32
    assert result.inlier.dtype == np.uint8 and result.track_ids.dtype == np.uint64
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
    assert set(result.timings_ms) == STAGES and min(result.timings_ms.values()) >= 0


@pytest.fixture(scope='module')
def reference(weights, frames):
    """SUBSET processed with every rule off: all matched against frame 0."""
    camera, counting = make_camera(weights)
    results = [camera.process(*frames[i]) for i in SUBSET]
    counts = [len(r.confidence) for r in results[1:]]
    assert counts[0] > 20, f'frame {SUBSET[1]} should match its neighbour well, got {counts[0]} matches'
    assert min(counts[1:]) < counts[0], f'matches should fall as the view drifts from frame 0: {counts}'
    return results, counting


def test_tracking_against_one_keyframe(reference, frames):
    results, counting = reference
    first_result = results[0]
    assert (first_result.frame_index, first_result.keyframe_id, first_result.new_keyframe_id) == (0, 0, 0)
    assert first_result.is_new_keyframe and first_result.keyframe_reason == 'first'
    assert first_result.keyframe_features is first_result.frame_features
    assert first_result.keyframe_stamp_s == first_result.stamp_s
    assert len(first_result.confidence) == 0 and first_result.keyframe_points.shape == (0, 2)
    check_correspondences(first_result, frames[0][0], frames[0][0])
    keyframe_ids = first_result.new_keyframe_track_ids
    for index, (i, result) in enumerate(zip(SUBSET[1:], results[1:]), start=1):
        assert result.frame_index == index and result.stamp_s == frames[i][1]
        assert (result.keyframe_id, result.is_new_keyframe, result.keyframe_reason) == (0, False, '')
        assert result.keyframe_stamp_s == frames[0][1]
        assert result.keyframe_features is first_result.frame_features
        assert len(result.inlier) == 0 and result.verified_with == 'none'  # verification off
        check_correspondences(result, frames[0][0], frames[i][0])
        np.testing.assert_array_equal(result.track_ids, keyframe_ids[result.keyframe_indices])


def test_keyframe_is_extracted_and_encoded_once(reference):
    results, counting = reference
    # one SuperPoint run per frame; one encoding per matched frame plus one for the keyframe
    assert counting.extracted == len(SUBSET)
    assert counting.encoded == len(SUBSET)
    keyframe = results[0].frame_features
    assert keyframe.encoded is not None and all(r.keyframe_features.encoded is keyframe.encoded for r in results)


def test_resize_gives_original_pixels(reference, weights, frames):
    """Processed at 1 / 2.5: a processed pixel centre x is (x + 0.5) * 2.5 - 0.5 in the original frame."""
    results, _ = reference
    result = results[1]
    assert result.frame_features.image_size == RESIZE and result.frame_features.scale == (2.5, 2.5)
    processed = result.frame_features.keypoints.numpy()[result.frame_indices]
    np.testing.assert_allclose(result.frame_points, (processed + 0.5) * 2.5 - 0.5, rtol=1e-6)
    assert result.frame_points[:, 0].max() > RESIZE[0] and result.frame_points[:, 1].max() > RESIZE[1]

    # unequal scales: 640x480 processed as 320x120 -> (2, 4)
    camera, _ = make_camera(weights, resize=(320, 120))
    camera.process(*frames[0])
    result = camera.process(*frames[1])
    assert result.frame_features.scale == (2.0, 4.0) and len(result.confidence) > 0
    processed = result.frame_features.keypoints.numpy()[result.frame_indices]
    np.testing.assert_allclose(result.frame_points, (processed + 0.5) * [2.0, 4.0] - 0.5, rtol=1e-6)
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
    camera, _ = make_camera(weights, KeyframePolicy(min_matches=min_matches, min_match_ratio=0.0))
    results = [camera.process(*frames[i]) for i in SUBSET]
    for index in range(1, first_switch):
        assert not results[index].is_new_keyframe
    assert results[first_switch].keyframe_reason == 'few_matches' and results[first_switch].keyframe_id == 0
    check_match_count_rule(results, frames, lambda r: len(r.confidence) < min_matches, 'few_matches')


def test_match_ratio_rule(reference, weights, frames):
    keyframe_keypoints = reference[0][1].keyframe_keypoint_count
    ratios = [len(r.confidence) / keyframe_keypoints for r in reference[0][1:]]
    min_ratio = ratios[0]
    first_switch = next(i for i, ratio in enumerate(ratios, start=1) if ratio < min_ratio)
    camera, _ = make_camera(weights, KeyframePolicy(min_matches=0, min_match_ratio=min_ratio))
    results = [camera.process(*frames[i]) for i in SUBSET]
    assert results[first_switch].keyframe_reason == 'low_match_ratio'
    check_match_count_rule(results, frames,
                           lambda r: len(r.confidence) / r.keyframe_keypoint_count < min_ratio, 'low_match_ratio')


def test_max_age_rule(weights, frames):
    """Frames ~1 s apart, keyframes live at most 1.5 s: the third frame becomes the keyframe."""
    camera, counting = make_camera(weights, KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=1.5))
    keyframe_stamp, keyframe_id, switches = frames[0][1], 0, 0
    for i in range(4):
        image, stamp = frames[i]
        result = camera.process(image, stamp)
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


def test_requested_keyframe_on_real_frames(weights, frames):
    camera, counting = make_camera(weights)
    camera.process(*frames[0])
    assert not camera.process(*frames[1]).is_new_keyframe
    camera.request_new_keyframe()
    camera.request_new_keyframe()  # two requests before a frame: one new keyframe
    requested = camera.process(*frames[2])
    assert requested.is_new_keyframe and requested.keyframe_reason == 'requested'
    assert (requested.keyframe_id, requested.new_keyframe_id) == (0, 1) and len(requested.confidence) > 0
    check_correspondences(requested, frames[0][0], frames[2][0])
    after = camera.process(*frames[3])
    assert (after.keyframe_id, after.is_new_keyframe) == (1, False)
    assert after.keyframe_features is requested.frame_features
    check_correspondences(after, frames[2][0], frames[3][0])
    # the new keyframe was encoded while it was matched as a frame: no second encoding
    assert counting.extracted == 4 and counting.encoded == 4


def test_request_from_another_thread_while_matching(weights, frames):
    """The service thread's request returns while the camera thread is inside SuperGlue, and applies to that frame."""
    camera, _ = make_camera(weights)
    camera.process(*frames[0])
    matching, release = threading.Event(), threading.Event()
    superglue_match = camera.matcher.superglue_match

    def blocking_match(*args):
        matching.set()
        assert release.wait(WAIT_S), 'test did not release the matcher'
        return superglue_match(*args)

    camera.matcher.superglue_match = blocking_match
    results = []
    worker = threading.Thread(target=lambda: results.append(camera.process(*frames[1])))
    worker.start()
    try:
        assert matching.wait(WAIT_S), 'process() did not reach matching'
        service = threading.Thread(target=camera.request_new_keyframe)
        service.start()
        service.join(WAIT_S)
        assert not service.is_alive(), 'request_new_keyframe() blocked behind process()'
    finally:
        release.set()
        worker.join(WAIT_S)
    assert not worker.is_alive() and results[0].keyframe_reason == 'requested'


def test_time_jump_restarts_on_the_frame(weights, frames):
    camera, counting = make_camera(weights)
    camera.process(*frames[0])
    camera.process(*frames[1])
    camera.request_new_keyframe()  # satisfied by the time-jump keyframe
    image, _ = frames[2]
    jumped = camera.process(image, frames[0][1] - 100.0)  # bag restarted
    assert jumped.is_new_keyframe and jumped.keyframe_reason == 'time_jump'
    assert jumped.keyframe_id == jumped.new_keyframe_id == 1 and jumped.frame_index == 2
    assert jumped.keyframe_features is jumped.frame_features and jumped.keyframe_stamp_s == jumped.stamp_s
    assert len(jumped.confidence) == 0 and jumped.keyframe_points.shape == (0, 2)
    after = camera.process(frames[3][0], jumped.stamp_s)  # an equal stamp is no jump
    assert (after.keyframe_id, after.is_new_keyframe, after.keyframe_reason) == (1, False, '')
    check_correspondences(after, image, frames[3][0])
    assert counting.extracted == 4


def test_stamp_jitter_is_matched_and_a_real_jump_resets(weights, frames):
    """Issue 9: a frame stamped a little before the previous one (0.062 after 0.067, less than
    time_jump_threshold_s back) is matched against keyframe 0 exactly as with monotonic stamps; a 5 s
    step back resets the keyframe on that frame."""
    images = [image for image, _ in frames[:5]]

    def run(stamps):
        camera, _ = make_camera(weights, KeyframePolicy())  # the default policy and 1 s threshold
        return [camera.process(image, stamp) for image, stamp in zip(images, stamps)]

    monotonic, jitter = run([0, .033, .067, .1, .133]), run([0, .033, .067, .062, .133])
    assert [r.keyframe_reason for r in jitter] == ['first', '', '', '', '']
    assert (jitter[3].keyframe_id, jitter[3].keyframe_stamp_s, jitter[3].stamp_s) == (0, 0.0, .062)
    assert len(jitter[3].confidence) > 50
    for a, b in zip(jitter, monotonic):
        assert (a.keyframe_id, a.is_new_keyframe, a.frame_index) == (b.keyframe_id, b.is_new_keyframe, b.frame_index)
        for name in ('keyframe_points', 'frame_points', 'confidence', 'keyframe_indices', 'frame_indices', 'track_ids'):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f'frame {a.frame_index}: {name}')

    jump = run([0, .033, .067, .067 - 5, .133])
    assert [r.keyframe_reason for r in jump] == ['first', '', '', 'time_jump', '']
    assert (jump[3].keyframe_id, jump[3].new_keyframe_id, len(jump[3].confidence)) == (1, 1, 0)
    assert jump[4].keyframe_id == 1 and jump[4].keyframe_features is jump[3].frame_features


def test_track_ids_across_verified_keyframes(weights, frames):
    """Issue 8: every frame is made the keyframe (requests), with fundamental-matrix verification: a new
    keyframe keypoint inherits the id of the old keyframe keypoint it matches only when that correspondence
    is an inlier; outliers and unmatched keypoints get new ids; no id is ever reused."""
    camera, _ = make_camera(weights, verification=Verification('fundamental', threshold_px=1.0))
    first_result = camera.process(*frames[0])
    ids = first_result.new_keyframe_track_ids
    np.testing.assert_array_equal(ids, np.arange(first_result.frame_keypoint_count, dtype=np.uint64))
    issued, outliers, inherited = set(ids.tolist()), 0, 0
    for image, stamp in frames[1:7]:
        camera.request_new_keyframe()
        result = camera.process(image, stamp)
        assert result.keyframe_reason == 'requested' and result.verified_with == 'fundamental'
        new_ids = result.new_keyframe_track_ids
        assert len(set(new_ids.tolist())) == len(new_ids) == result.frame_keypoint_count
        np.testing.assert_array_equal(result.track_ids, ids[result.keyframe_indices])
        inlier = result.inlier.astype(bool)
        np.testing.assert_array_equal(new_ids[result.frame_indices[inlier]], result.track_ids[inlier])
        fresh = np.setdiff1d(np.arange(len(new_ids)), result.frame_indices[inlier])
        assert issued.isdisjoint(new_ids[fresh].tolist()), 'an outlier or unmatched keypoint got an old id'
        issued.update(new_ids[fresh].tolist())
        outliers, inherited = outliers + int((~inlier).sum()), inherited + int(inlier.sum())
        ids = new_ids
    np.testing.assert_array_equal(camera.tracker.keyframe.track_ids, ids)
    assert inherited > 100 and outliers > 0, f'{inherited} inliers, {outliers} outliers: the test needs both'


def test_live_policy_and_matcher_settings(weights, frames):
    camera, counting = make_camera(weights)
    camera.process(*frames[0])
    camera.matcher.configure(max_keypoints=40, match_threshold=0.3)
    result = camera.process(*frames[1])
    assert result.frame_keypoint_count == 40 and result.keyframe_keypoint_count == 256  # keyframe kept as extracted
    check_correspondences(result, frames[0][0], frames[1][0], match_threshold=0.3)
    assert not result.is_new_keyframe
    camera.policy = KeyframePolicy(min_matches=10 ** 6, min_match_ratio=0.0)
    assert camera.tracker.policy is camera.policy
    result = camera.process(*frames[2])
    assert result.keyframe_reason == 'few_matches'
    assert counting.extracted == 3
    with pytest.raises(ValueError, match='max_keypoints'):
        camera.matcher.configure(max_keypoints=0)
    with pytest.raises(TypeError, match='KeyframePolicy'):
        camera.policy = {'min_matches': 3}


def test_geometric_verification(weights, frames):
    camera, _ = make_camera(weights, verification=Verification('fundamental', threshold_px=2.0))
    camera.process(*frames[0])
    result = camera.process(*frames[1])
    assert result.inlier.shape == result.confidence.shape and result.inlier.dtype == np.uint8
    assert set(np.unique(result.inlier).tolist()) <= {0, 1} and result.verified_with == 'fundamental'
    assert result.inlier.mean() > 0.5, 'neighbouring frames: most matches should fit one epipolar geometry'
    np.testing.assert_array_equal(result.inlier, Verification('fundamental', threshold_px=2.0).inliers(
        result.keyframe_points, result.frame_points))
    camera.verification = Verification()  # off again, live
    result = camera.process(*frames[2])
    assert len(result.inlier) == 0 and result.verified_with == 'none'
    with pytest.raises(TypeError, match='Verification'):
        camera.verification = 'fundamental'


def test_unusable_image_changes_nothing(weights, frames):
    camera, _ = make_camera(weights)
    camera.process(*frames[0])
    with pytest.raises(ImageError):
        camera.process(np.zeros((8, 8), np.uint8), frames[1][1])
    for stamp in (float('nan'), float('inf'), None, True):
        with pytest.raises(ValueError, match='stamp_s must be a finite number'):
            camera.process(frames[1][0], stamp)
    result = camera.process(*frames[1])
    assert (result.frame_index, result.keyframe_id, result.is_new_keyframe) == (1, 0, False)
