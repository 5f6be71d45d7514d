"""The keyframe store (superglue_ros.keyframes) and match_keyframes: the tracker's keyframe is the store's
newest entry, older ones move to the host, the bound evicts the oldest, the memory is counted, unknown ids
are named; loop candidates leave out the recent keyframes and find a revisited place; match_keyframes
equals Matcher.match on the stored features, before and after a keyframe moved to the host.

Features come from confident random weights on synthetic frames (demo/synthetic.py) at 320x240.
"""
import numpy as np
import pytest
import torch

from superglue_ros.demo.synthetic import generate_sequence
from superglue_ros.geometry import Verification
from superglue_ros.keyframes import STORED_DESCRIPTORS, KeyframeStore, LoopPolicy
from superglue_ros.matcher import Features, Matcher
from superglue_ros.pipeline import CameraPipeline, match_keyframes
from superglue_ros.random_weights import random_superglue, random_superpoint
from superglue_ros.tracking import Correspondences, Keyframe, KeyframePolicy

EVERY = KeyframePolicy(min_matches=100000)   # every frame becomes a keyframe ('few_matches')


@pytest.fixture(scope='module')
def matcher():
    matcher = Matcher(random_superpoint(), random_superglue(), device='cpu', resize=(320, 240))
    matcher.configure(max_keypoints=256, sinkhorn_iterations=20)
    return matcher


@pytest.fixture(scope='module')
def revisit(tmp_path_factory):
    """A camera circling over a plane and back over its start: frames 0..39."""
    return generate_sequence(tmp_path_factory.mktemp('revisit'), num_frames=40, size=(320, 240), path='revisit')


def fake_keyframe(keyframe_id: int, count: int = 10) -> Keyframe:
    generator = torch.Generator().manual_seed(keyframe_id)
    descriptors = torch.nn.functional.normalize(torch.randn(256, count, generator=generator), dim=0)
    features = Features(torch.rand(count, 2, generator=generator) * 300, torch.rand(count, generator=generator),
                        descriptors, (320, 240), (1.0, 1.0))
    keypoints = features.keypoints_original()
    return Keyframe(keyframe_id, float(keyframe_id), features, keypoints, np.arange(count, dtype=np.uint64))


def test_the_bound_evicts_the_oldest_and_the_memory_is_counted():
    store = KeyframeStore(3)
    memory = []
    for k in range(5):
        store.add(fake_keyframe(k, count=10 * (k + 1)))
        memory.append(store.memory_bytes())
    assert store.ids() == [2, 3, 4] and len(store) == 3 and store.evicted == 2
    # three keyframes of 30, 40, 50 keypoints: fp16 descriptors on the host, the newest also in float32 on the
    # device, keypoints (processed and given, float32), scores, track ids (uint64), and the global descriptors
    expected = sum(n * (256 * 2 + 2 * 4 + 4 + 2 * 4 + 8 + 2 * 4) for n in (30, 40, 50)) + 50 * 256 * 4
    expected += store._vectors.nbytes + store._row_ids.nbytes
    assert memory[-1] == expected
    assert memory[0] < memory[1] < memory[2]
    for keyframe_id, says in ((0, 'keyframe 0 is evicted'), (9, 'keyframe 9 is not taken yet')):
        with pytest.raises(KeyError) as error:
            store.get(keyframe_id)
        assert says in error.value.args[0] and 'stored: 2..4' in error.value.args[0]
    with pytest.raises(KeyError, match='no keyframe stored yet'):
        KeyframeStore(2).get(0)
    with pytest.raises(ValueError, match='ids must increase'):
        store.add(fake_keyframe(4))
    with pytest.raises(ValueError, match='keyframe_store_size must be an integer >= 1'):
        KeyframeStore(0)


def test_the_newest_is_the_tracker_keyframe_and_older_ones_move_to_the_host(matcher, revisit):
    camera = CameraPipeline(matcher, EVERY, keyframes=KeyframeStore(4))
    results = [camera.process(revisit.image(i), float(i)) for i in range(3)]
    store = camera.keyframes
    assert camera.tracker.keyframe is store.newest is store.get(2)
    assert store.newest.features is results[2].frame_features     # the tracker's own object, not a copy
    assert results[2].keyframe_features is results[1].frame_features  # as it was matched (float32)
    for k in (0, 1):
        stored = store.get(k).features
        assert stored.descriptors.dtype == STORED_DESCRIPTORS and stored.descriptors.device.type == 'cpu'
        assert stored.encoded is None
        torch.testing.assert_close(stored.descriptors.float(), results[k].frame_features.descriptors,
                                   atol=1e-3, rtol=0)
        np.testing.assert_array_equal(store.get(k).keypoints, results[k].frame_features.keypoints_original())
    assert [r.loop_candidates.keyframe_id for r in results] == [0, 1, 2]


def test_match_keyframes_is_matcher_match_on_the_stored_features(matcher, revisit):
    camera = CameraPipeline(matcher, EVERY, Verification('fundamental'), keyframes=KeyframeStore(10))
    for i in (0, 2):
        camera.process(revisit.image(i), float(i))
    newest = match_keyframes(matcher, camera.keyframes, 0, 1, Verification('fundamental'))
    camera.process(revisit.image(4), 4.0)  # keyframe 1 moves to the host
    stored = match_keyframes(matcher, camera.keyframes, 0, 1, Verification('fundamental'))

    keyframe0, features0 = camera.keyframes.for_matching(0, matcher.device)
    keyframe1, features1 = camera.keyframes.for_matching(1, matcher.device)
    match = matcher.match(features0, features1)
    reference = Correspondences.from_matches(match.matches0, match.matching_scores0, keyframe0.keypoints,
                                             keyframe1.keypoints)
    for result in (newest, stored):
        c = result.pair.correspondences
        assert len(c.confidence) > 20 and c.verified_with == 'fundamental' and len(c.inlier) == len(c.confidence)
        for name in ('points0', 'points1', 'confidence', 'indices0', 'indices1'):
            np.testing.assert_array_equal(getattr(c, name), getattr(reference, name), err_msg=name)
        np.testing.assert_array_equal(result.track_ids[0], keyframe0.track_ids[c.indices0])
        np.testing.assert_array_equal(result.track_ids[1], keyframe1.track_ids[c.indices1])
    np.testing.assert_array_equal(newest.pair.correspondences.inlier, stored.pair.correspondences.inlier)
    with pytest.raises(KeyError, match='keyframe 7 is not taken yet'):
        match_keyframes(matcher, camera.keyframes, 0, 7)


def test_loop_candidates_leave_out_recent_keyframes_and_find_the_revisited_start(matcher, revisit):
    policy = LoopPolicy(candidates_k=3, exclude_recent=5, min_score=-1.0)
    camera = CameraPipeline(matcher, EVERY, keyframes=KeyframeStore(100, policy))
    frames = list(range(0, 40, 2))                       # keyframe k is frame 2 k
    candidates = [camera.process(revisit.image(i), float(i)).loop_candidates for i in frames]
    for k, found in enumerate(candidates):
        assert found.keyframe_id == k and len(found.ids) == min(max(k - 5, 0), 3)
        assert all(i < k - 5 for i in found.ids) and list(found.scores) == sorted(found.scores, reverse=True)
        assert found.ids.dtype == np.uint64 and found.scores.dtype == np.float32
    # the last keyframes fly over the first places again: their best candidate overlaps them
    revisits = [k for k in range(len(frames)) if revisit.overlap(frames[k], 0) > 0.5 and k > 10]
    assert revisits
    for k in revisits:
        assert revisit.overlap(frames[k], frames[int(candidates[k].ids[0])]) > 0.3, (k, candidates[k].ids)

    camera.keyframes.policy = LoopPolicy(candidates_k=3, exclude_recent=5, min_score=1.0)  # live: nothing passes
    assert len(camera.process(revisit.image(0), 40.0).loop_candidates.ids) == 0
    with pytest.raises(TypeError, match='keyframes.LoopPolicy'):
        camera.keyframes.policy = {'loop_min_score': 0.5}


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_store_on_cuda_moves_older_keyframes_to_the_host_and_matches_them(revisit):
    """On a GPU the newest keyframe's features stay on the device, older ones move to the host, and
    match_keyframes gives the same before and after the move."""
    matcher = Matcher(random_superpoint(), random_superglue(), device='cuda', resize=(320, 240))
    matcher.configure(max_keypoints=256, sinkhorn_iterations=20)
    camera = CameraPipeline(matcher, EVERY, keyframes=KeyframeStore(10))
    for i in (0, 2):
        camera.process(revisit.image(i), float(i))
    assert camera.keyframes.newest.features.descriptors.device.type == 'cuda'
    newest = match_keyframes(matcher, camera.keyframes, 0, 1)
    camera.process(revisit.image(4), 4.0)
    assert camera.keyframes.get(1).features.descriptors.device.type == 'cpu'
    stored = match_keyframes(matcher, camera.keyframes, 0, 1)
    assert len(stored.pair.correspondences.confidence) > 20
    for name in ('indices0', 'indices1', 'confidence'):
        np.testing.assert_array_equal(getattr(newest.pair.correspondences, name),
                                      getattr(stored.pair.correspondences, name), err_msg=name)


def test_match_keyframes_gives_the_relative_pose_metric_from_a_rigs_stored_depth(matcher):
    """With essential verification, match_keyframes also gives T_keyframe0_keyframe1 (pose.py): metric by PnP
    when keyframe 0 was taken by a stereo rig (its stored Keyframe.depth), and its form checked; the arithmetic
    itself is test_pose.py's."""
    from sensor_msgs.msg import CameraInfo

    from superglue_ros.demo.synthetic import stereo_sequence
    from superglue_ros.geometry import Calibration
    from superglue_ros.stereo import StereoGeometry

    rig = stereo_sequence(3, size=(320, 240))
    infos = [CameraInfo(width=f['width'], height=f['height'], distortion_model=f['distortion_model'], d=f['d'],
                        k=f['k'], r=f['r'], p=f['p']) for f in (rig[0].left_info, rig[0].right_info)]
    geometry, calibration = StereoGeometry.from_camera_infos(*infos), Calibration.from_camera_info(infos[0])
    camera = CameraPipeline(matcher, EVERY, Verification('essential'), keyframes=KeyframeStore(5, LoopPolicy()))
    for frame in rig:
        camera.process(frame.left, frame.stamp, calibration=calibration, right=frame.right, stereo_geometry=geometry)
    assert all(np.isfinite(camera.keyframes.get(i).depth).sum() > 20 for i in range(3))
    pose = match_keyframes(matcher, camera.keyframes, 0, 2, Verification('essential')).pair.correspondences.pose
    assert pose.source == 'pnp' and pose.inliers >= 6
    np.testing.assert_allclose(pose.rotation @ pose.rotation.T, np.eye(3), atol=1e-9)
    mono = match_keyframes(matcher, camera.keyframes, 0, 2, Verification('fundamental')).pair.correspondences.pose
    assert mono.source == 'none'


def test_a_rigs_keyframe_depth_is_counted_in_the_memory():
    """A stereo rig's keyframes keep their depth ([N] float32) in the store: /diagnostics' 'keyframe store
    memory (bytes)' left it out."""
    store, with_depth = KeyframeStore(3), KeyframeStore(3)
    for k in range(2):
        store.add(fake_keyframe(k, count=100))
        keyframe = fake_keyframe(k, count=100)
        keyframe.depth = np.full(100, 2.0, np.float32)
        with_depth.add(keyframe)
    assert with_depth.memory_bytes() - store.memory_bytes() == 2 * 100 * 4


def test_keyframes_without_keypoints_do_not_use_up_the_vocabulary_schedule():
    """A camera starting in the dark (or with its lens cap on) takes a keyframe per frame, none with a keypoint.
    The centroids were learned only at the 1st, 2nd, 4th, ... 64th keyframe added: after 64 empty ones, never,
    and the camera had no loop candidates for the rest of its run, silently. Keyframes with keypoints count."""
    store = KeyframeStore(200, LoopPolicy(candidates_k=5, exclude_recent=0, min_score=-1.0))
    for k in range(70):
        assert len(store.add(fake_keyframe(k, count=0)).ids) == 0
    candidates = [store.add(fake_keyframe(k, count=50)) for k in range(70, 75)]
    assert store._vlad.centroids is not None
    assert sorted(candidates[-1].ids.tolist()) == [70, 71, 72, 73]  # the black keyframes are none


def test_a_keyframe_without_keypoints_is_no_loop_candidate_and_has_none():
    """A black keyframe's global descriptor was the zero vector: cosine 0 with everything, so at a loop_min_score
    <= 0 it was published as a candidate of every keyframe and got every keyframe as its candidates."""
    store = KeyframeStore(50, LoopPolicy(candidates_k=50, exclude_recent=0, min_score=-1.0))
    for k in range(4):
        store.add(fake_keyframe(k, count=50))
    assert len(store.add(fake_keyframe(4, count=0)).ids) == 0
    for k in range(5, 9):
        store.add(fake_keyframe(k, count=50))  # the 8th relearns the centroids and describes the stored ones again
    candidates = store.add(fake_keyframe(9, count=50))
    assert 4 not in candidates.ids.tolist() and len(candidates.ids) == 8


def test_a_large_store_size_costs_memory_only_for_the_keyframes_stored():
    """keyframe_store_size accepts any integer >= 1, and the global descriptors were preallocated for all of them
    at the first keyframe: 20,000 took 328 MB for three keyframes (1,000,000: 16 GiB, and the first query reads
    it all: the node is killed for memory). They grow with the keyframes stored; candidates are unchanged."""
    big, small = (KeyframeStore(size, LoopPolicy(candidates_k=5, exclude_recent=0, min_score=-1.0))
                  for size in (20_000, 8))
    for k in range(5):
        found = [store.add(fake_keyframe(k, count=50)) for store in (big, small)]
        assert found[0].ids.tolist() == found[1].ids.tolist()
        np.testing.assert_allclose(found[0].scores, found[1].scores, atol=1e-6)
    assert big.memory_bytes() < 2 ** 20, big.memory_bytes()
    for k in range(5, 20):  # past the small store's size: its rows wrap, the ids evicted leave
        small.add(fake_keyframe(k, count=50))
    assert len(small._row_ids) == 8 and sorted(small._row_ids.tolist()) == list(range(12, 20))
