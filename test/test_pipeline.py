"""CameraPipeline and match_pair (superglue_ros.pipeline) on the real freiburg frames with confident random weights.

On the CPU (CI), against a sequential reference written here with the stable API (Matcher.extract / match,
then verify() and a KeyframeTracker):
  - one camera, pipelined (depth 2: frame N+1 extracted before frame N is collected) and one frame at a
    time, gives exactly the reference results over keyframe switches, a requested keyframe and a time jump;
  - three cameras on one shared Matcher, each driven by its own thread, give what each gives alone;
  - a ResourceError in matching drops that frame only (the tracker unchanged, the next frame works), also
    with a frame in flight; match_pair equals extract + match and leaves every camera's keyframe alone;
  - bad use is refused with a clear error; no device-wide synchronisation in the frame path (static check).
CUDA only (skipped without a GPU), released model size at 640x480: results agree with the CPU; two cameras'
work overlaps on the device; no torch.cuda.synchronize while frames run; fp16 agrees with fp32; no new
allocations in steady state.
"""
import ast
import os
import threading
from collections import deque
from contextlib import contextmanager, nullcontext
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import superglue_ros.pipeline as pipeline_module
from conftest import FRAMES_ARE_REAL
from model_fixtures import confident_weights
from superglue_ros.geometry import Verification
from superglue_ros.image import ImageError
from superglue_ros.matcher import Matcher, ResourceError, StageClock
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.pipeline import CameraPipeline, PairResult, match_pair, verify
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict
from superglue_ros.tracking import Correspondences, KeyframePolicy, KeyframeTracker

RESIZE = (256, 192)                                # the 640x480 frames / 2.5: fast tests
SUPERGLUE = {'gnn_layers': ['self', 'cross'] * 3}  # shorter GNN than the release's 9 pairs
SETTINGS = dict(max_keypoints=256, sinkhorn_iterations=20)
# a few 'few_matches' switches on the sequence: the synthetic scene (a clone without ../shared) keeps more
# matches per frame (about 205-235 of 256 keypoints) than the real one
POLICY = KeyframePolicy(min_matches=150 if FRAMES_ARE_REAL else 220, min_match_ratio=0.0)
OFF = KeyframePolicy(min_matches=0, min_match_ratio=0.0)
VERIFICATION = Verification('fundamental')
REQUEST_AFTER = 5                                  # request_new_keyframe once frame 5's result is out
STAGES = {'preprocess', 'upload', 'superpoint', 'superglue', 'download', 'verify', 'total'}
WAIT_S = 300                                       # bound on waiting for a camera thread (not a timing check)
SOURCES = [Path(pipeline_module.__file__).with_name(name) for name in
           ('pipeline.py', 'matcher.py', 'image.py', 'tracking.py')]

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


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


def make_matcher(models, device='cpu', resize=RESIZE, settings=SETTINGS, **options) -> Matcher:
    matcher = Matcher(*models, device=device, resize=resize, **options)
    matcher.configure(**settings)
    return matcher


def sequential(matcher: Matcher, frames, policy=POLICY, verification=VERIFICATION, request_after=None) -> list:
    """The reference: each frame extracted, matched against the keyframe, verified and tracked before the next."""
    tracker, results = KeyframeTracker(policy), []
    for image, stamp in frames:
        features = matcher.extract(image)
        keyframe = tracker.keyframe_for(stamp)
        correspondences = None
        if keyframe is not None:
            match = matcher.match(keyframe.features, features)
            correspondences = verify(Correspondences.from_matches(match.matches0, match.matching_scores0,
                                                                  keyframe.keypoints, features.keypoints_original()),
                                     verification)
        results.append(tracker.update(features, stamp, correspondences))
        if results[-1].frame_index == request_after:
            tracker.request_new_keyframe()
    return results


def run_camera(camera: CameraPipeline, frames, request_after=None) -> list:
    results = []
    for result in camera.process_stream(frames):
        results.append(result)
        if result.frame_index == request_after:
            camera.request_new_keyframe()
    return results


@pytest.fixture(scope='module')
def reference(models, frames):
    return sequential(make_matcher(models), frames, request_after=REQUEST_AFTER)


def assert_same_results(actual: list, expected: list):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        where = f'frame {e.frame_index}'
        for name in ('frame_index', 'stamp_s', 'keyframe_id', 'keyframe_stamp_s', 'is_new_keyframe', 'new_keyframe_id',
                     'keyframe_reason', 'keyframe_keypoint_count', 'frame_keypoint_count', 'verified_with'):
            assert getattr(a, name) == getattr(e, name), f'{where}: {name}'
        for name in ('keyframe_points', 'frame_points', 'confidence', 'keyframe_indices', 'frame_indices', 'inlier',
                     'track_ids', 'keyframe_points_normalized', 'frame_points_normalized', 'new_keyframe_track_ids'):
            np.testing.assert_array_equal(getattr(a, name), getattr(e, name), err_msg=f'{where}: {name}')
        for name in ('keypoints', 'scores', 'descriptors'):
            assert torch.equal(getattr(a.frame_features, name).cpu(), getattr(e.frame_features, name).cpu()), name
        assert a.frame_features.scale == e.frame_features.scale


def test_reference_covers_every_keyframe_rule(reference):
    """The scenario means something: first frame, matched frames, switches by the policy, a request, a time jump."""
    reasons = [r.keyframe_reason for r in reference]
    assert reasons[0] == 'first'
    assert reasons[REQUEST_AFTER + 1] == 'requested'
    assert reasons[10] == 'time_jump'
    assert reasons.count('few_matches') >= 2, reasons
    assert sum(len(r.confidence) > 0 for r in reference) >= 8
    # verified: inliers and outliers both present, so track ids pass through inliers only
    assert all(r.verified_with == 'fundamental' and 0 < r.inlier.mean() < 1 for r in reference if len(r.confidence))


def test_one_frame_at_a_time_equals_sequential(models, frames, reference):
    camera = CameraPipeline(make_matcher(models), POLICY, VERIFICATION)
    assert camera.depth == 1  # the default on the CPU
    results = []
    for frame in frames:
        results.append(camera.process(*frame))
        assert camera.pending == 0 and set(results[-1].timings_ms) == STAGES
        if results[-1].frame_index == REQUEST_AFTER:
            camera.request_new_keyframe()
    assert_same_results(results, reference)


def test_pipelined_equals_sequential(models, frames, reference, monkeypatch):
    """Depth 2 (depth 1: test_one_frame_at_a_time_equals_sequential)."""
    matcher, depth = make_matcher(models), 2
    camera = CameraPipeline(matcher, POLICY, VERIFICATION, depth=depth)
    events, in_flight = [], []  # 'detect' / 'update' calls in order; frames in flight at each collect()
    detect, update, collect = matcher.detect, camera.tracker.update, camera.collect
    monkeypatch.setattr(matcher, 'detect', lambda *args: events.append('detect') or detect(*args))
    monkeypatch.setattr(camera.tracker, 'update', lambda *args: events.append('update') or update(*args))
    monkeypatch.setattr(camera, 'collect', lambda: in_flight.append(camera.pending) or collect())
    plain = []  # the synchronous calls are not the frame path
    for name in ('extract', 'extract_batch', 'match'):
        monkeypatch.setattr(matcher, name, lambda *args, name=name: plain.append(name))

    results = run_camera(camera, frames, REQUEST_AFTER)

    assert_same_results(results, reference)
    assert plain == []
    assert in_flight == [depth] * (len(frames) - 1) + [1]
    # frame N + 1's SuperPoint is enqueued before frame N's result is made (in that order on the CPU)
    assert events == ['detect'] + ['detect', 'update'] * (len(frames) - 1) + ['update']
    assert all(set(r.timings_ms) == STAGES and min(r.timings_ms.values()) >= 0 for r in results)


def test_cameras_concurrently_equal_one_at_a_time(models, frames):
    """Three cameras on one Matcher (one copy of the weights), each its own frames, in threads at once."""
    matcher = make_matcher(models)
    backwards = [(image, stamp) for (image, _), (_, stamp) in zip(frames[7:2:-1], frames[3:8])]  # stamps rise
    streams = [frames[:4], backwards[:4], frames[1:9:2]]  # different images and keyframes per camera
    alone = [run_camera(CameraPipeline(matcher, POLICY, VERIFICATION, depth=2), camera_frames, request_after=2)
             for camera_frames in streams]

    cameras = [CameraPipeline(matcher, POLICY, VERIFICATION, depth=2) for _ in streams]
    results, errors = [None] * len(cameras), []
    start = threading.Barrier(len(cameras))

    def work(i):
        try:
            start.wait(WAIT_S)
            results[i] = run_camera(cameras[i], streams[i], request_after=2)
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
    assert all(r[0].keyframe_id == 0 and r[0].keyframe_reason == 'first' for r in results)


def run_dropping(camera: CameraPipeline, frames, request_after=None) -> tuple[list, list, list]:
    """process_stream, except that a frame failing with ResourceError (in submit or collect) is recorded and
    the stream goes on: (results, indices of the dropped frames, their errors)."""
    results, dropped, errors, submitted = [], [], [], deque()

    def collect():
        index = submitted.popleft()
        try:
            results.append(camera.collect())
        except ResourceError as error:
            dropped.append(index)
            errors.append(error)
            return
        if results[-1].frame_index == request_after:
            camera.request_new_keyframe()

    for index, frame in enumerate(frames):
        if camera.pending >= camera.depth:
            collect()
        try:
            camera.submit(*frame)
            submitted.append(index)
        except ResourceError as error:
            dropped.append(index)
            errors.append(error)
    while submitted:
        collect()
    assert camera.pending == 0
    return results, dropped, errors


@pytest.mark.parametrize('depth', [1, 2])
def test_resource_error_in_matching_drops_that_frame_only(models, frames, depth, monkeypatch):
    """The matching of frame 2 fails every time it is tried (as a pair over the memory limit does): that frame
    is dropped with the error; the tracker is unchanged (the request made before it is still pending, its
    stamp does not count), and the frames after it give the results of the sequence without it."""
    matcher = make_matcher(models)
    detected, detect, superglue_match = [], matcher.detect, matcher.superglue_match

    def recording_detect(*args):
        features = detect(*args)
        detected.extend(features)
        return features

    def failing_match(features0, features1):
        if len(detected) > 2 and features1 is detected[2]:
            raise ResourceError('out of GPU memory while matching 256 x 256 keypoints on cuda:0: lower max_keypoints')
        return superglue_match(features0, features1)

    monkeypatch.setattr(matcher, 'detect', recording_detect)
    monkeypatch.setattr(matcher, 'superglue_match', failing_match)
    shown = frames[:5]
    shown[2] = (shown[2][0], shown[2][1] + 100.0)  # a stamp that would make the next one a time jump
    results, dropped, errors = run_dropping(CameraPipeline(matcher, POLICY, VERIFICATION, depth=depth), shown, 1)
    assert dropped == [2] and 'out of GPU memory' in str(errors[0])
    expected = sequential(make_matcher(models), shown[:2] + shown[3:], request_after=1)
    assert_same_results(results, expected)
    assert [r.keyframe_reason for r in results] == ['first', '', 'requested', '']


def test_memory_limit_drops_the_frame_with_one_in_flight(models, frames, reference):
    """max_matching_memory_mb lowered while frame 3 is in flight behind frame 2: frame 2 (matched already)
    comes out, frame 3 is refused with the keypoint counts, and so is frame 4 sent alone (process(): refused
    in submit()). With the limit back, frame 3 sent again is matched as if nothing had happened."""
    matcher = make_matcher(models)
    camera = CameraPipeline(matcher, POLICY, VERIFICATION, depth=2)
    results = [camera.process(*frames[0]), camera.process(*frames[1])]
    camera.submit(*frames[2])
    camera.submit(*frames[3])
    matcher.configure(max_matching_memory_mb=1)
    results.append(camera.collect())
    keyframe = camera.tracker.keyframe
    with pytest.raises(ResourceError, match=r'256 x \d+ keypoints would need about 2 MiB') as error:
        camera.collect()
    assert '\n' not in str(error.value) and camera.pending == 0 and camera.tracker.keyframe is keyframe
    with pytest.raises(ResourceError, match='max_matching_memory_mb = 1'):
        camera.process(*frames[4])  # nothing left in flight
    assert camera.pending == 0 and camera.tracker.keyframe is keyframe
    matcher.configure(max_matching_memory_mb=4096)
    results.append(camera.process(*frames[3]))
    assert_same_results(results, reference[:4])


def test_settings_apply_to_frames_submitted_after(models, frames):
    matcher = make_matcher(models)
    camera = CameraPipeline(matcher, OFF, depth=2)
    camera.submit(*frames[0])
    camera.submit(*frames[1])
    matcher.configure(max_keypoints=64)
    camera.collect()
    camera.submit(*frames[2])
    first, second = camera.collect(), camera.collect()
    assert first.frame_keypoint_count == SETTINGS['max_keypoints']  # extracted before the change
    assert second.frame_keypoint_count == 64
    assert camera.pending == 0


def test_match_pair_equals_extract_and_match_and_leaves_the_keyframes(models, frames, reference):
    matcher = make_matcher(models)
    cameras = [CameraPipeline(matcher, POLICY, VERIFICATION) for _ in range(2)]
    cameras[0].process(*frames[0])
    cameras[1].process(*frames[7])
    keyframes = [camera.tracker.keyframe for camera in cameras]

    verification = Verification('homography')
    pair = match_pair(matcher, frames[2][0], frames[3][0][:, :, ::-1], color_order1='rgb', verification=verification)
    features0, features1 = matcher.extract(frames[2][0]), matcher.extract(frames[3][0])
    match = matcher.match(features0, features1)
    expected = verify(Correspondences.from_matches(match.matches0, match.matching_scores0, features0.keypoints_original(),
                                                   features1.keypoints_original()), verification)
    c = pair.correspondences
    assert isinstance(pair, PairResult) and len(c.confidence) > 50 and c.verified_with == 'homography' and pair.keypoint_counts == (256, 256)
    for name in ('points0', 'points1', 'confidence', 'indices0', 'indices1', 'inlier'):
        np.testing.assert_array_equal(getattr(c, name), getattr(expected, name), err_msg=name)
    assert torch.equal(pair.features1.keypoints, features1.keypoints)
    assert set(pair.timings_ms) == {'preprocess', 'superpoint', 'superglue', 'verify', 'total'}

    # the same picture in both colour orders: every keypoint matches itself
    image = frames[5][0]
    same = match_pair(matcher, image, image[:, :, ::-1].copy(), color_order1='rgb', verification=verification)
    c = same.correspondences
    assert len(c.confidence) > 0.9 * same.keypoint_counts[0]
    np.testing.assert_array_equal(c.indices0, c.indices1)
    np.testing.assert_array_equal(c.points0, c.points1)
    assert c.inlier.all() and c.points0.dtype == np.float32 and c.indices0.dtype == np.int32

    # each camera kept its keyframe and goes on as if nothing happened
    assert all(camera.tracker.keyframe is keyframe for camera, keyframe in zip(cameras, keyframes))
    assert_same_results([cameras[0].process(*frames[1])], reference[1:2])
    other = cameras[1].process(*frames[8])
    match = matcher.match(keyframes[1].features, other.frame_features)
    np.testing.assert_array_equal(other.keyframe_indices, match.pairs()[0])
    np.testing.assert_array_equal(other.confidence, match.pairs()[2])
    assert (other.keyframe_id, other.frame_index, other.keyframe_features) == (0, 1, keyframes[1].features)


def test_bad_use_is_refused_and_changes_nothing(models, frames):
    matcher = make_matcher(models)
    assert CameraPipeline(matcher).depth == 1  # the default on the CPU: nothing to overlap
    with pytest.raises(TypeError, match='Matcher'):
        CameraPipeline(object())
    with pytest.raises(TypeError, match='Verification'):
        CameraPipeline(matcher, verification='fundamental')
    with pytest.raises(TypeError, match='KeyframePolicy'):
        CameraPipeline(matcher, policy={'min_matches': 3})
    for depth in (0, 1.5, True):
        with pytest.raises(ValueError, match='depth'):
            CameraPipeline(matcher, depth=depth)
    camera = CameraPipeline(matcher, POLICY, depth=2)
    with pytest.raises(RuntimeError, match='submit'):
        camera.collect()
    with pytest.raises(ImageError):
        camera.submit(np.zeros((8, 8), np.uint8), 1.0)
    with pytest.raises(ValueError, match='stamp_s'):
        camera.submit(frames[0][0], float('nan'))
    assert camera.pending == 0
    camera.submit(*frames[0])
    with pytest.raises(RuntimeError, match='collect'):
        camera.process(*frames[1])
    camera.submit(*frames[1])
    with pytest.raises(RuntimeError, match='depth 2'):
        camera.submit(*frames[2])
    assert camera.pending == 2
    results = [camera.collect(), camera.collect()]
    assert [r.frame_index for r in results] == [0, 1] and results[0].keyframe_reason == 'first'


def test_no_device_wide_synchronisation_in_the_frame_path():
    """Static: neither torch.cuda.synchronize nor a stream's / device's synchronize() in the frame path's
    modules (CUDA events are waited on instead; test_no_synchronize_while_frames_run checks it on a GPU)."""
    for path in SOURCES:
        source = path.read_text()
        assert 'cuda.synchronize' not in source, f'{path.name} calls torch.cuda.synchronize'
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'synchronize':
                target = ast.unparse(node.func.value)
                assert 'stream' not in target.lower() and 'device' not in target.lower() and target != 'torch.cuda', \
                    f'{path.name}:{node.lineno}: {target}.synchronize() waits for more than one event'


# -- CUDA only: the released model size at 640x480 ------------------------------------------------------

RELEASED = dict(max_keypoints=1024)  # and the release's 9 GNN pairs, 100 Sinkhorn iterations
MIN_AGREEMENT = 0.99


@pytest.fixture(scope='module')
def released():
    weights = confident_weights(seed=0)

    def make(device, **options) -> Matcher:
        superpoint, superglue = SuperPoint(), SuperGlue()
        superpoint.load_state_dict(weights[0])
        superglue.load_state_dict(weights[1])
        return make_matcher((superpoint, superglue), device, resize=None, settings=RELEASED, **options)
    return make


@contextmanager
def no_tf32():
    """float32 convolutions and matrix products in full float32 (not TF32): the CPU's arithmetic."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def pair_set(result) -> set:
    """A frame's correspondences as ((keyframe x, y), (frame x, y)) coordinate pairs: comparable even when the
    keypoint lists differ."""
    return {(tuple(a), tuple(b)) for a, b in zip(result.keyframe_points.tolist(), result.frame_points.tolist())}


def agreement(results_a: list, results_b: list) -> float:
    """Correspondences present in both runs / correspondences of the larger run, over all frames."""
    common = sum(len(pair_set(a) & pair_set(b)) for a, b in zip(results_a, results_b))
    total = sum(max(len(a.confidence), len(b.confidence)) for a, b in zip(results_a, results_b))
    return common / max(total, 1)


def cuda_frames(frames):
    """Frames 0-4, then 0-1 with their old stamps (a time jump); run with a request after frame 2."""
    return frames[:5] + frames[:2]


@pytest.fixture(scope='module')
def cpu_released(released, frames):
    """The sequential results of cuda_frames on the CPU, released model size (with up to 8 CPU threads: the
    GPU check runs every CUDA test within a few minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    try:
        return sequential(released('cpu'), cuda_frames(frames), OFF, request_after=2)
    finally:
        torch.set_num_threads(threads)


@cuda_only
@pytest.mark.parametrize('tf32', [False, True], ids=['float32', 'tf32-defaults'])
def test_cuda_agrees_with_cpu(released, frames, cpu_released, tf32):
    """Without TF32 (the CPU's arithmetic) the keypoints are identical and >= 99% of the correspondences;
    with torch's defaults (TF32 convolutions) >= 99% of both."""
    cpu = cpu_released
    with nullcontext() if tf32 else no_tf32():
        cuda = run_camera(CameraPipeline(released('cuda'), OFF, VERIFICATION), cuda_frames(frames), request_after=2)
    assert [r.keyframe_id for r in cuda] == [r.keyframe_id for r in cpu]
    assert [r.keyframe_reason for r in cuda] == [r.keyframe_reason for r in cpu]
    same_keypoints = [torch.equal(a.frame_features.keypoints.cpu(), b.frame_features.keypoints.cpu())
                      for a, b in zip(cuda, cpu)]
    if not tf32:
        assert all(same_keypoints), f'keypoints differ from the CPU in frames {same_keypoints}'
    else:
        kept = [len({tuple(p) for p in a.frame_features.keypoints.cpu().tolist()}
                    & {tuple(p) for p in b.frame_features.keypoints.cpu().tolist()}) / max(b.frame_keypoint_count, 1)
                for a, b in zip(cuda, cpu)]
        assert min(kept) >= MIN_AGREEMENT, f'keypoints in common with the CPU per frame: {kept}'
    assert agreement(cuda, cpu) >= MIN_AGREEMENT, f'{agreement(cuda, cpu):.4f} of the correspondences agree'


@cuda_only
def test_cuda_pipelined_agrees_with_sequential(released, frames):
    """On one device: the same keyframes and keypoints, >= 99% of the correspondences (cuBLAS may pick other
    kernels on other streams, so not necessarily bit for bit). A race between the streams (a buffer read
    before its copy ended) would give other keypoints."""
    run = cuda_frames(frames)
    expected = sequential(released('cuda'), run, OFF, request_after=2)
    for depth in (1, 2):
        results = run_camera(CameraPipeline(released('cuda'), OFF, VERIFICATION, depth=depth), run, request_after=2)
        assert [r.keyframe_reason for r in results] == [r.keyframe_reason for r in expected]
        for a, e in zip(results, expected):
            assert torch.equal(a.frame_features.keypoints, e.frame_features.keypoints), f'frame {e.frame_index}'
        assert agreement(results, expected) >= MIN_AGREEMENT
        assert all(set(r.timings_ms) == STAGES and min(r.timings_ms.values()) >= 0 for r in results)


@cuda_only
def test_two_cameras_overlap_on_the_device(released, frames, monkeypatch):
    """Two cameras in two threads on one Matcher: some stage (SuperPoint or SuperGlue) of one camera runs on the
    device while a stage of the other is between its start and end events (CUDA event times)."""
    clocks = {}  # thread id -> StageClocks of that camera's frames

    class RecordingClock(StageClock):
        def __init__(self, device):
            super().__init__(device)
            clocks.setdefault(threading.get_ident(), []).append(self)

    monkeypatch.setattr(pipeline_module, 'StageClock', RecordingClock)
    matcher = released('cuda')
    cameras = [CameraPipeline(matcher, OFF) for _ in range(2)]
    for camera in cameras:  # warm-up: kernels chosen, buffers allocated
        list(camera.process_stream(frames[:2]))
    clocks.clear()
    origin = torch.cuda.Event(enable_timing=True)
    origin.record()
    streams = [frames[:8], frames[8:10] + frames[:6]]
    start, errors = threading.Barrier(2), []

    def work(i):
        try:
            start.wait(WAIT_S)
            list(cameras[i].process_stream([(image, 100.0 + k) for k, (image, _) in enumerate(streams[i])]))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert errors == [] and len(clocks) == 2

    def intervals(camera_clocks):
        return [(origin.elapsed_time(c.marks[a]), origin.elapsed_time(c.marks[b]))
                for c in camera_clocks for a, b in (('extract_start', 'extracted'), ('match_start', 'matched'))]

    first, second = (intervals(c) for c in clocks.values())
    overlaps = sum(a0 < b1 and b0 < a1 for a0, a1 in first for b0, b1 in second)
    assert overlaps > 0, f'no stage of one camera overlapped one of the other: {first} {second}'


@cuda_only
def test_no_synchronize_while_frames_run(released, frames, monkeypatch):
    camera = CameraPipeline(released('cuda'), POLICY, VERIFICATION)

    def forbidden(*args, **kwargs):
        raise AssertionError('torch.cuda.synchronize called: the frame path must wait on events only')

    monkeypatch.setattr(torch.cuda, 'synchronize', forbidden)
    monkeypatch.setattr(torch.cuda.Stream, 'synchronize', forbidden)
    results = run_camera(camera, cuda_frames(frames), request_after=2)
    assert len(results) == len(cuda_frames(frames)) and results[3].keyframe_reason == 'requested'


@cuda_only
def test_fp16_agrees_with_fp32(released, frames):
    try:
        half = released('cuda', precision='fp16')
    except (ValueError, NotImplementedError, AttributeError, RuntimeError) as error:
        pytest.skip(f"Matcher(..., precision='fp16') is not available: {error}")
    run = frames[:8]
    fp32 = run_camera(CameraPipeline(released('cuda'), OFF), run)
    fp16 = run_camera(CameraPipeline(half, OFF), run)
    assert [r.keyframe_id for r in fp16] == [r.keyframe_id for r in fp32]
    assert agreement(fp16, fp32) >= MIN_AGREEMENT, f'{agreement(fp16, fp32):.4f} of the correspondences agree'


@cuda_only
def test_no_allocations_in_steady_state(released, frames):
    """After warm-up passes, a pass over the frames needs no new device memory (cudaMalloc) and no new
    pinned host memory (cudaHostAlloc): buffers are reused."""
    camera = CameraPipeline(released('cuda'), POLICY)
    stamp = 0.0

    def one_pass():
        nonlocal stamp
        for _ in camera.process_stream([(image, stamp := stamp + 0.1) for image, _ in frames[:8]]):
            pass

    def allocations():
        device = torch.cuda.memory_stats()['segment.all.allocated']  # cudaMalloc calls so far
        host = getattr(torch.cuda, 'host_memory_stats', None)  # cudaHostAlloc calls, where torch counts them
        return device, host()['num_host_alloc'] if host else None

    one_pass()
    one_pass()
    before = allocations()
    one_pass()
    assert allocations() == before


def test_a_detection_mask_with_a_resize_keeps_keypoints_out_of_the_masked_area(models, freiburg_paths, tmp_path):
    """Issue 15: a camera's mask (a mono8 file of the camera's size) is resized to the processed size with
    INTER_NEAREST; no keypoint lands in the masked area, in pixels of the image as given; an image of another
    size is refused with one line (ImageError) and the next frame works."""
    from superglue_ros.image import read_mask

    image = cv2.imread(str(freiburg_paths[0]), cv2.IMREAD_COLOR)
    file = tmp_path / 'mask.png'
    mask = np.full((480, 640), 255, np.uint8)
    mask[:, :320] = 0                            # the left half
    cv2.imwrite(str(file), mask)
    matcher = make_matcher(models, resize=(320, 240), settings={**SETTINGS, 'max_keypoints': 256})
    camera = CameraPipeline(matcher, mask=read_mask(file))
    keypoints = camera.process(image, 1.0).frame_features.keypoints_original()
    assert len(keypoints) == 256 and (keypoints[:, 0] > 319).all()
    with pytest.raises(ImageError, match='the detection mask is 640x480 pixels, this image 320x240'):
        camera.process(cv2.resize(image, (320, 240)), 2.0)
    assert len(camera.process(image, 3.0).confidence) > 0


@pytest.mark.parametrize('content, says', [
    (b'not an image', 'cannot read it as an image'), (None, 'mono8'), (b'', 'is an empty file'),
    ('missing', 'does not exist'), ('directory', 'is a directory'), ('zero', 'zero everywhere'),
    ('jpeg', 'grey levels')])
def test_an_unusable_mask_file_is_refused_in_one_line(tmp_path, capfd, content, says):
    from superglue_ros.image import read_mask

    file = tmp_path / 'mask.png'
    if content is None:
        cv2.imwrite(str(file), np.zeros((48, 64, 3), np.uint8))  # colour, not mono8
    elif content == 'directory':
        file.mkdir()
    elif content == 'zero':                                       # masks out every pixel: nothing could be detected
        cv2.imwrite(str(file), np.zeros((48, 64), np.uint8))
    elif content == 'jpeg':  # a disc masked, saved lossy: zero pixels at its edge come back as 1, 2, ...: usable
        file = tmp_path / 'mask.jpg'
        disc = cv2.circle(np.full((48, 64), 255, np.uint8), (32, 24), 15, 0, -1)
        cv2.imwrite(str(file), disc, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert (cv2.imread(str(file), cv2.IMREAD_UNCHANGED)[disc == 0] != 0).any()
    elif content != 'missing':
        file.write_bytes(content)
    capfd.readouterr()
    with pytest.raises(ValueError, match=says) as error:
        read_mask(file)
    assert str(file) in str(error.value) and '\n' not in str(error.value)
    if content in ('missing', 'directory', b''):  # the one line is ours: no OpenCV warning on stderr before it
        assert 'imread' not in capfd.readouterr().err
