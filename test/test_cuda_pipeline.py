"""CameraPipeline (superglue_ros.cuda_pipeline) on the real freiburg frames with confident random weights.

Every test runs on the CPU (the same scheduling without streams) and again on CUDA when present:
  - the pipelined path (frame N+1 submitted before frame N is collected) gives exactly the results of
    the sequential KeyframeFrontend, over keyframe switches, a requested keyframe and a time jump,
    and every frame really went through the prefetched (overlapped) path;
  - several cameras sharing one Matcher, run concurrently in threads, give the results of one camera
    at a time;
  - live settings apply to frames submitted after the change; bad use fails with a clear error.
CUDA only: no device-wide synchronisation, no new device or pinned host allocations in steady state.
"""
import threading

import cv2
import numpy as np
import pytest
import torch

from superglue_ros.cuda_pipeline import CameraPipeline, StreamFeatures
from superglue_ros.frontend import KeyframeFrontend, KeyframePolicy
from superglue_ros.image import ImageError
from superglue_ros.matcher import Matcher
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict

RESIZE = (256, 192)                                # the 640x480 frames / 2.5: fast tests
SUPERGLUE = {'gnn_layers': ['self', 'cross'] * 3}  # shorter GNN than the release's 9 pairs
SETTINGS = dict(max_keypoints=256, sinkhorn_iterations=20)
POLICY = KeyframePolicy(min_matches=150, min_match_ratio=0.0)  # a few 'few_matches' switches on this sequence
REQUEST_AFTER = 5                                  # request_new_keyframe once frame 5's result is out
STAGES = ('preprocess', 'upload', 'superpoint', 'superglue', 'download', 'extract', 'match', 'verify', 'total')
WAIT_S = 300                                       # bound on waiting for a camera thread (not a timing check)

DEVICES = ['cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason='needs a CUDA device'))]


@pytest.fixture(scope='module', autouse=True)
def one_thread_per_camera():
    """Camera threads each run torch: one intra-op thread each, no oversubscription of the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def frames(freiburg_paths):
    """(BGR image, stamp) of 10 frames, then 3 again with their old stamps: a time jump (bag restarted)."""
    frames = [(cv2.imread(str(path), cv2.IMREAD_COLOR), float(path.stem)) for path in freiburg_paths[:10]]
    return frames + frames[:3]


@pytest.fixture(scope='module')
def models():
    superpoint, superglue = SuperPoint(), SuperGlue(SUPERGLUE)
    superpoint.load_state_dict(superpoint_state_dict(seed=0))
    superglue.load_state_dict(superglue_state_dict(seed=0, config=SUPERGLUE))
    return superpoint, superglue


def make_matcher(models, device, **options) -> Matcher:
    matcher = Matcher(*models, device=device, resize=RESIZE, **options)
    matcher.configure(**SETTINGS)
    return matcher


def sequential(matcher: Matcher, frames, request_after=None) -> list:
    frontend = KeyframeFrontend(matcher, POLICY)
    results = []
    for frame in frames:
        results.append(frontend.process(*frame))
        if results[-1].frame_index == request_after:
            frontend.request_new_keyframe()
    return results


def run_camera(pipeline: CameraPipeline, frames, request_after=None) -> list:
    results = []
    for result in pipeline.process_stream(frames):
        results.append(result)
        if result.frame_index == request_after:
            pipeline.request_new_keyframe()
    return results


@pytest.fixture(scope='module', params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope='module')
def reference(models, device, frames):
    """The sequential KeyframeFrontend's results, for one device."""
    return sequential(make_matcher(models, device), frames, REQUEST_AFTER)


def assert_same_results(actual: list, expected: list):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        where = f'frame {e.frame_index}'
        for name in ('frame_index', 'stamp_s', 'keyframe_id', 'keyframe_stamp_s', 'is_new_keyframe',
                     'new_keyframe_id', 'keyframe_reason', 'keyframe_keypoint_count', 'frame_keypoint_count'):
            assert getattr(a, name) == getattr(e, name), f'{where}: {name}'
        for name in ('keyframe_points', 'frame_points', 'confidence', 'keyframe_indices', 'frame_indices', 'inlier'):
            np.testing.assert_array_equal(getattr(a, name), getattr(e, name), err_msg=f'{where}: {name}')
        np.testing.assert_array_equal(a.frame_features.keypoints.cpu(), e.frame_features.keypoints.cpu())
        np.testing.assert_array_equal(a.frame_features.descriptors.cpu(), e.frame_features.descriptors.cpu())


def test_reference_covers_every_keyframe_rule(reference):
    """The scenario means something: first frame, matched frames, switches by the policy, a request, a time jump."""
    reasons = [r.keyframe_reason for r in reference]
    assert reasons[0] == 'first'
    assert reasons[REQUEST_AFTER + 1] == 'requested'
    assert reasons[10] == 'time_jump'
    assert reasons.count('few_matches') >= 2
    assert sum(len(r.confidence) > 0 for r in reference) >= 8


@pytest.mark.parametrize('depth', [2, 3])
def test_pipelined_equals_sequential(models, device, frames, reference, depth, monkeypatch):
    pipeline = CameraPipeline(make_matcher(models, device), POLICY, depth=depth)
    in_flight = []  # frames in flight each time a result is collected
    collect = pipeline.collect
    monkeypatch.setattr(pipeline, 'collect', lambda: in_flight.append(pipeline.pending) or collect())
    plain_calls = []  # the plain Matcher path: taken only when a prefetched result was not used
    for name in ('extract', 'match'):
        def counted(self, *args, name=name, plain=getattr(Matcher, name)):
            plain_calls.append(name)
            return plain(self, *args)
        monkeypatch.setattr(Matcher, name, counted)

    results = run_camera(pipeline, frames, REQUEST_AFTER)

    assert_same_results(results, reference)
    assert plain_calls == []
    # frame N + 1 (and N + 2 for depth 3) was submitted before frame N was collected
    assert in_flight == [depth] * (len(frames) - depth + 1) + list(range(depth - 1, 0, -1))
    assert all(isinstance(r.frame_features, StreamFeatures) for r in results)
    assert all(set(STAGES) <= set(r.timings_ms) and min(r.timings_ms.values()) >= 0 for r in results)


def test_process_one_frame_at_a_time_equals_sequential(models, device, frames, reference):
    pipeline = CameraPipeline(make_matcher(models, device), POLICY)
    results = []
    for frame in frames:
        results.append(pipeline.process(*frame))
        assert pipeline.pending == 0
        if results[-1].frame_index == REQUEST_AFTER:
            pipeline.request_new_keyframe()
    assert_same_results(results, reference)


def test_cameras_concurrently_equal_one_at_a_time(models, device, frames):
    """Three cameras on one Matcher (one copy of the weights), each its own frames, in threads at once."""
    matcher = make_matcher(models, device)
    backwards = [(image, stamp) for (image, _), (_, stamp) in zip(frames[7:2:-1], frames[3:8])]  # stamps rise
    streams = [frames[:5], backwards, frames[1:10:2]]  # different images and keyframes per camera
    alone = [run_camera(CameraPipeline(matcher, POLICY, depth=2), camera_frames) for camera_frames in streams]

    cameras = [CameraPipeline(matcher, POLICY, depth=2) for _ in streams]
    results, errors = [None] * len(cameras), []
    start = threading.Barrier(len(cameras))

    def work(i):
        try:
            start.wait(WAIT_S)
            results[i] = run_camera(cameras[i], streams[i])
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cameras))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not any(thread.is_alive() for thread in threads), f'a camera thread still runs after {WAIT_S} s'
    assert errors == []
    for concurrent, one_at_a_time in zip(results, alone):
        assert_same_results(concurrent, one_at_a_time)


def test_settings_apply_to_frames_submitted_after(models, device, frames):
    pipeline = CameraPipeline(make_matcher(models, device), KeyframePolicy(min_matches=0, min_match_ratio=0.0),
                              depth=2)
    pipeline.submit(*frames[0])
    pipeline.submit(*frames[1])
    pipeline.configure(max_keypoints=64)
    pipeline.collect()
    pipeline.submit(*frames[2])
    first, second = pipeline.collect(), pipeline.collect()
    assert first.frame_keypoint_count == SETTINGS['max_keypoints']  # extracted before the change
    assert second.frame_keypoint_count == 64
    assert pipeline.pending == 0


def test_match_pair_takes_the_plain_path(models, device, frames):
    pipeline = CameraPipeline(make_matcher(models, device), POLICY)
    pipeline.process(*frames[0])
    pair = pipeline.match_pair(frames[0][0], frames[3][0])
    expected = KeyframeFrontend(make_matcher(models, device), POLICY).match_pair(frames[0][0], frames[3][0])
    np.testing.assert_array_equal(pair.points0, expected.points0)
    np.testing.assert_array_equal(pair.confidence, expected.confidence)


def test_bad_use_is_refused_and_changes_nothing(models, frames):
    matcher = make_matcher(models, 'cpu')
    assert CameraPipeline(matcher).depth == 1  # the default on the CPU: nothing to overlap
    with pytest.raises(TypeError, match='Matcher'):
        CameraPipeline(object())
    for depth in (0, 1.5, True):
        with pytest.raises(ValueError, match='depth'):
            CameraPipeline(matcher, depth=depth)
    pipeline = CameraPipeline(matcher, POLICY, depth=2)
    with pytest.raises(RuntimeError, match='submit'):
        pipeline.collect()
    with pytest.raises(ImageError):
        pipeline.submit(np.zeros((8, 8), np.uint8), 1.0)
    with pytest.raises(ValueError, match='stamp_s'):
        pipeline.submit(frames[0][0], float('nan'))
    assert pipeline.pending == 0
    pipeline.submit(*frames[0])
    with pytest.raises(RuntimeError, match='collect'):
        pipeline.process(*frames[1])
    pipeline.submit(*frames[1])
    with pytest.raises(RuntimeError, match='depth 2'):
        pipeline.submit(*frames[2])
    assert pipeline.pending == 2
    results = [pipeline.collect(), pipeline.collect()]
    assert [r.frame_index for r in results] == [0, 1] and results[0].keyframe_reason == 'first'


# -- CUDA only ----------------------------------------------------------------------------------

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@cuda_only
@pytest.mark.parametrize('options', [{'precision': 'fp16'}, {'precision': 'bf16'},
                                     {'precision': 'fp16', 'attention': 'sdpa', 'channels_last': True}],
                         ids=lambda options: '+'.join(f'{k}={v}' for k, v in options.items()))
def test_speed_options_pipelined_equal_sequential(models, frames, options):
    expected = sequential(make_matcher(models, 'cuda', **options), frames, REQUEST_AFTER)
    pipeline = CameraPipeline(make_matcher(models, 'cuda', **options), POLICY)
    assert_same_results(run_camera(pipeline, frames, REQUEST_AFTER), expected)


@cuda_only
def test_no_device_wide_synchronisation(models, frames, monkeypatch):
    pipeline = CameraPipeline(make_matcher(models, 'cuda'), POLICY)

    def forbidden(*args, **kwargs):
        raise AssertionError('torch.cuda.synchronize called: the pipeline must wait on events only')

    monkeypatch.setattr(torch.cuda, 'synchronize', forbidden)
    monkeypatch.setattr(torch.cuda.Stream, 'synchronize', forbidden)
    assert len(list(pipeline.process_stream(frames))) == len(frames)


@cuda_only
def test_no_allocations_in_steady_state(models, frames):
    """After warm-up passes, a pass over the frames needs no new device memory (cudaMalloc) and no new
    pinned host memory (cudaHostAlloc): buffers are reused."""
    pipeline = CameraPipeline(make_matcher(models, 'cuda'), POLICY)
    stamp = 0.0

    def one_pass():
        nonlocal stamp
        for _ in pipeline.process_stream([(image, stamp := stamp + 0.1) for image, _ in frames]):
            pass

    def allocations():
        device = torch.cuda.memory_stats()['segment.all.allocated']  # cudaMalloc calls so far
        return device, torch.cuda.host_memory_stats()['num_host_alloc']  # cudaHostAlloc calls

    one_pass()
    one_pass()
    before = allocations()
    one_pass()
    assert allocations() == before
