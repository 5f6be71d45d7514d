"""Matcher (superglue_ros.matcher) on real freiburg frames with confident random weights: results equal
the raw models', the SuperGlue encoding of a Features object is computed once, configure() validates
and acts live without making cached encodings stale, defaults from settings.py, extract_batch equals
extract, resize and keypoints_original (pixel centres), devices, from_weights; the SuperGlue memory
estimate and limit, and memory_guard (running out of memory becomes a one-line ResourceError)."""
import dataclasses

import cv2
import numpy as np
import pytest
import torch

from model_fixtures import confident_weights, write_original
from superglue_ros.image import prepare_image
from superglue_ros.matcher import Features, Matcher, ResourceError, matching_memory_bytes, memory_guard
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict
from superglue_ros.settings import defaults
from superglue_ros.weights import WeightsError

# Smaller than the release everywhere, for fast tests: the Matcher does not depend on these sizes.
SETTINGS = dict(max_keypoints=256, sinkhorn_iterations=20)
SUPERGLUE = {'gnn_layers': ['self', 'cross'] * 3}
RESIZE = (256, 192)  # the 640x480 frames / 2.5


@pytest.fixture(scope='module')
def weights():
    return superpoint_state_dict(seed=0), superglue_state_dict(seed=0, config=SUPERGLUE)


def models(weights, **settings):
    """Fresh SuperPoint, SuperGlue with the given weights and settings (each test its own: configure
    changes the models' config)."""
    settings = {**SETTINGS, **settings}
    superpoint = SuperPoint({k: v for k, v in settings.items() if k in SuperPoint.default_config})
    superglue = SuperGlue({**SUPERGLUE, **{k: v for k, v in settings.items() if k in SuperGlue.default_config}})
    superpoint.load_state_dict(weights[0])
    superglue.load_state_dict(weights[1])
    return superpoint.eval(), superglue.eval()


def make_matcher(weights, resize=RESIZE, **settings):
    return Matcher(*models(weights, **settings), device='cpu', resize=resize)


@pytest.fixture(scope='module')
def frames(freiburg_paths):
    return [cv2.imread(str(freiburg_paths[i]), cv2.IMREAD_COLOR) for i in (0, 1, 2)]


@pytest.fixture(scope='module')
def extracted(weights, frames):
    """Features of the three frames; tests match uncached() copies."""
    return make_matcher(weights).extract_batch(frames)


def count_encodings(matcher: Matcher) -> list:
    """Replace matcher.superglue.encode by a wrapper that records each call; returns the record."""
    calls, encode = [], matcher.superglue.encode

    def counted(keypoints, *args):
        calls.append(keypoints.shape[1])
        return encode(keypoints, *args)

    matcher.superglue.encode = counted
    return calls


def uncached(features: Features) -> Features:
    return dataclasses.replace(features, encoded=None)


def test_results_equal_the_raw_models(weights, frames):
    matcher = make_matcher(weights)
    superpoint, superglue = models(weights)  # same weights and settings, used directly
    features = [matcher.extract(frame) for frame in frames[:2]]
    result = matcher.match(*features)

    with torch.inference_mode():
        images = torch.stack([torch.from_numpy(prepare_image(frame, RESIZE)[0]) for frame in frames[:2]])[:, None]
        raw = superpoint(images)
        for i, f in enumerate(features):
            assert torch.equal(f.keypoints, raw['keypoints'][i])
            assert torch.equal(f.scores, raw['scores'][i])
            assert torch.equal(f.descriptors, raw['descriptors'][i])
            assert f.image_size == RESIZE
        raw_matches = superglue({**{f'{k}s{i}': raw[f'{k}s'][i][None] for k in ('keypoint', 'score', 'descriptor')
                                    for i in (0, 1)}, 'image_size0': RESIZE, 'image_size1': RESIZE})
    np.testing.assert_array_equal(result.matches0, raw_matches['matches0'][0].numpy())
    np.testing.assert_array_equal(result.matching_scores0, raw_matches['matching_scores0'][0].numpy())
    assert result.matches0.dtype == np.int64 and result.matching_scores0.dtype == np.float32
    idx0, idx1, confidence = result.pairs()
    assert len(idx0) > 100, 'confident random weights should match a good part of two neighbouring frames'
    np.testing.assert_array_equal(idx1, result.matches0[idx0])
    assert len(np.unique(idx1)) == len(idx1)  # mutual: each keypoint of image 1 used once
    assert (confidence > matcher.settings['match_threshold']).all()
    assert set(features[0].timings_ms) == {'preprocess', 'superpoint'}
    assert set(result.timings_ms) == {'superglue'}
    assert min(features[0].timings_ms.values()) >= 0 and result.timings_ms['superglue'] > 0


def test_encoding_computed_once_and_reused(weights, extracted):
    matcher = make_matcher(weights)
    calls = count_encodings(matcher)
    keyframe, frame1, frame2 = (uncached(f) for f in extracted)
    assert keyframe.encoded is None and calls == []

    first = matcher.match(keyframe, frame1)
    encoded = keyframe.encoded
    assert encoded is not None and encoded.shape == (1, 256, len(keyframe.scores))
    assert len(calls) == 2
    second = matcher.match(keyframe, frame2)
    assert len(calls) == 3 and keyframe.encoded is encoded  # only frame 2 was encoded
    assert matcher.match(frame1, keyframe).matches0.shape == frame1.scores.shape  # either side
    assert len(calls) == 3

    # the cached encoding gives exactly what a fresh computation gives
    for result, frame in ((first, frame1), (second, frame2)):
        fresh = matcher.match(uncached(keyframe), uncached(frame))
        np.testing.assert_array_equal(result.matches0, fresh.matches0)
        np.testing.assert_array_equal(result.matching_scores0, fresh.matching_scores0)


def test_superglue_settings_act_live_and_keep_the_cache(weights, extracted):
    matcher = make_matcher(weights)
    calls = count_encodings(matcher)
    features = [uncached(f) for f in extracted[:2]]
    before = matcher.match(*features)

    matcher.configure(match_threshold=0.6, sinkhorn_iterations=50)
    assert matcher.settings['match_threshold'] == 0.6 and matcher.settings['sinkhorn_iterations'] == 50
    after = matcher.match(*features)
    assert len(calls) == 2  # no re-encoding: the encoding does not depend on these settings
    _, _, confidence = after.pairs()
    assert (confidence > 0.6).all() and 0 < len(confidence) < len(before.pairs()[0])

    # same as a matcher built with these settings from the start
    reference = make_matcher(weights, match_threshold=0.6, sinkhorn_iterations=50)
    expected = reference.match(*(uncached(f) for f in features))
    np.testing.assert_array_equal(after.matches0, expected.matches0)
    np.testing.assert_array_equal(after.matching_scores0, expected.matching_scores0)


def test_superpoint_settings_act_live(weights, frames):
    matcher = make_matcher(weights, max_keypoints=-1)
    everything = matcher.extract(frames[0])
    matcher.configure(max_keypoints=100)
    best = matcher.extract(frames[0])
    assert len(everything.scores) > 100 and len(best.scores) == 100
    assert best.scores.min() >= everything.scores.topk(100).values.min()

    matcher.configure(max_keypoints=-1, keypoint_threshold=0.05)
    strong = matcher.extract(frames[0])
    assert 0 < len(strong.scores) < len(everything.scores) and (strong.scores > 0.05).all()

    matcher.configure(keypoint_threshold=0.005, nms_radius=8)
    sparse = matcher.extract(frames[0])
    assert 0 < len(sparse.scores) < len(everything.scores)
    distances = torch.cdist(sparse.keypoints, sparse.keypoints) + 1e3 * torch.eye(len(sparse.scores))
    assert distances.min() > 8  # no two maxima within the NMS radius
    assert matcher.settings == {'max_keypoints': -1, 'keypoint_threshold': 0.005, 'nms_radius': 8,
                                'match_threshold': 0.2, 'sinkhorn_iterations': 20, 'max_matching_memory_mb': 4096}


@pytest.mark.parametrize('name, value', [
    ('max_keypoints', 0), ('max_keypoints', -2), ('max_keypoints', 1.5), ('max_keypoints', True),
    ('keypoint_threshold', 1), ('keypoint_threshold', -0.1),
    ('keypoint_threshold', float('nan')), ('keypoint_threshold', '0.1'),
    ('nms_radius', -1), ('nms_radius', 2.0),
    ('match_threshold', -0.1), ('match_threshold', 1.0), ('match_threshold', float('inf')),
    ('sinkhorn_iterations', 0), ('sinkhorn_iterations', 10.0),
    ('max_matching_memory_mb', 0), ('max_matching_memory_mb', 1.5),
    ('max_features', 100), ('time_jump_threshold_s', 1.0),  # unknown here, or a setting of another scope
])
def test_configure_rejects_bad_values_and_changes_nothing(weights, name, value):
    matcher = make_matcher(weights)
    before = matcher.settings
    with pytest.raises(ValueError, match=name):
        matcher.configure(**{'sinkhorn_iterations': 7, name: value})  # a good and a bad one: all or nothing
    assert matcher.settings == before


def test_configure_accepts_limits_and_numpy_numbers(weights):
    matcher = make_matcher(weights)
    matcher.configure(max_keypoints=np.int64(1), keypoint_threshold=0, nms_radius=0,
                      match_threshold=np.float32(0.5), sinkhorn_iterations=1, max_matching_memory_mb=1)
    settings = matcher.settings
    assert settings == {'max_keypoints': 1, 'keypoint_threshold': 0, 'nms_radius': 0, 'match_threshold': 0.5,
                        'sinkhorn_iterations': 1, 'max_matching_memory_mb': 1}
    assert type(settings['max_keypoints']) is int and type(settings['keypoint_threshold']) is float
    matcher.configure(max_keypoints=-1)
    assert matcher.settings['max_keypoints'] == -1


def test_extract_batch_equals_extract(weights, frames, extracted):
    matcher = make_matcher(weights)
    for frame, features in zip(frames[:2], extracted):
        single = matcher.extract(frame)
        assert torch.equal(features.keypoints, single.keypoints)
        torch.testing.assert_close(features.scores, single.scores)
        torch.testing.assert_close(features.descriptors, single.descriptors)
        assert (features.image_size, features.scale) == (single.image_size, single.scale)
    assert matcher.extract_batch([]) == []

    # images of different sizes: one batch only when a resize makes them equal
    small = cv2.resize(frames[1], (400, 300))
    assert [f.image_size for f in matcher.extract_batch([frames[0], small])] == [RESIZE, RESIZE]
    with pytest.raises(ValueError, match='one size'):
        make_matcher(weights, resize=None).extract_batch([frames[0], small])


@pytest.mark.parametrize('resize', [(320, 240), (200, 300)])
def test_resize_and_keypoints_original(weights, frames, resize):
    matcher = make_matcher(weights, resize=resize)
    features = matcher.extract(frames[0])
    width, height = resize
    scale = (640 / width, 480 / height)
    assert features.image_size == resize and features.scale == scale
    keypoints = features.keypoints.numpy()
    assert (keypoints >= 0).all() and (keypoints < [width, height]).all()
    original = features.keypoints_original()
    assert original.dtype == np.float32 and original.shape == keypoints.shape
    # pixel centres: a processed pixel spans scale input pixels (image.to_original)
    np.testing.assert_allclose(original, (keypoints + 0.5) * scale - 0.5, rtol=1e-6)
    assert original[:, 0].max() > 400 and original[:, 1].max() > 300  # spread over the original frame

    # the same as resizing the grey image (INTER_AREA, as image.py) and extracting at that size
    resized = cv2.resize(cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY), resize, interpolation=cv2.INTER_AREA)
    plain = make_matcher(weights, resize=None).extract(resized)
    assert torch.equal(plain.keypoints, features.keypoints)


def test_no_keypoints(weights, extracted):
    matcher = make_matcher(weights)
    blank = matcher.extract(np.full((480, 640, 3), 128, np.uint8))
    frame = uncached(extracted[0])
    assert blank.keypoints.shape == (0, 2) and blank.keypoints_original().shape == (0, 2)
    for pair in ((blank, frame), (frame, blank), (blank, blank)):
        result = matcher.match(*pair)
        assert len(result.matches0) == len(pair[0].scores) and (result.matches0 == -1).all()
        assert all(len(a) == 0 for a in result.pairs())


def test_devices_and_resize_checked(weights):
    if not torch.cuda.is_available():
        assert make_matcher(weights).device == torch.device('cpu')
        assert Matcher(*models(weights), device='auto').device == torch.device('cpu')
        with pytest.raises(ValueError, match='CUDA is not available'):
            Matcher(*models(weights), device='cuda')
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got 'tpu'"):
        Matcher(*models(weights), device='tpu')
    with pytest.raises(ValueError, match="precision must be 'fp32', 'bf16' or 'fp16'; got 'fp64'"):
        Matcher(*models(weights), device='cpu', precision='fp64')
    assert make_matcher(weights).precision == 'fp32'
    for resize in ((640,), (8, 8), (640.0, 480), '640x480'):
        with pytest.raises(ValueError, match='resize'):
            Matcher(*models(weights), device='cpu', resize=resize)
    superpoint, superglue = models(weights)
    with pytest.raises(TypeError, match='SuperPoint'):
        Matcher(superglue, superpoint)


def test_from_weights(weights, tmp_path):
    weights = confident_weights(seed=0)  # the released architecture, as a .pth has it
    sp_path = write_original(tmp_path / 'sp.pth', weights[0])
    sg_path = write_original(tmp_path / 'sg.pth', weights[1])
    matcher = Matcher.from_weights(sp_path, sg_path, device='cpu', resize=RESIZE, max_keypoints=256,
                                   match_threshold=0.3)
    assert matcher.settings['max_keypoints'] == 256 and matcher.settings['match_threshold'] == 0.3
    assert not matcher.superpoint.training and not matcher.superglue.training
    for model, state in zip((matcher.superpoint, matcher.superglue), weights):
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    # bad settings fail before any weights are read; missing weights say what to do
    with pytest.raises(ValueError, match='match_threshold'):
        Matcher.from_weights(tmp_path / 'missing.pth', sg_path, match_threshold=2)
    with pytest.raises(WeightsError, match='missing.pth'):
        Matcher.from_weights(tmp_path / 'missing.pth', sg_path)


def test_defaults_come_from_the_settings_table():
    """A Matcher on plain models has the table's defaults: those of the original release."""
    matcher = Matcher(SuperPoint(), SuperGlue(SUPERGLUE), device='cpu')
    table = {**defaults('superpoint'), **defaults('superglue'), **defaults('matcher')}
    assert matcher.settings == {name: table[name] for name in Matcher.MODEL_SETTINGS}
    assert matcher.settings == {'max_keypoints': -1, 'keypoint_threshold': 0.005, 'nms_radius': 4,
                                'match_threshold': 0.2, 'sinkhorn_iterations': 100, 'max_matching_memory_mb': 4096}
    assert matcher.resize is None and matcher.precision == 'fp32'


def fake_features(count: int, size=(640, 480)) -> Features:
    """Features of `count` keypoints (zero descriptors): enough for the memory check, never computed on."""
    return Features(torch.zeros(count, 2), torch.ones(count), torch.zeros(256, count), size, (1.0, 1.0))


def test_matching_memory_estimate_and_limit(weights, extracted):
    # the largest of: attention logits + probabilities (cross N x M, self N x N / M x M) and Sinkhorn
    assert matching_memory_bytes(2048, 2048, 4) == 4 * 2 * 4 * 2048 ** 2
    assert matching_memory_bytes(3000, 10, 4) == matching_memory_bytes(10, 3000, 4) == 4 * 2 * 4 * 3000 ** 2
    assert matching_memory_bytes(100, 50, 1) == 24 * 101 * 51  # one head: Sinkhorn's matrices dominate
    matcher = make_matcher(weights)
    assert matcher.settings['max_matching_memory_mb'] == 4096
    matcher.check_matching_memory(2048, 2048)  # 640x480 images with 2048 keypoints: far below the default
    matcher.check_matching_memory(4800, 4800)  # even one keypoint per 8x8 cell of 640x480

    estimate_mib = matching_memory_bytes(20000, 20000, 4) / 2 ** 20
    with pytest.raises(ResourceError) as error:
        matcher.check_matching_memory(20000, 20000)
    message = str(error.value)
    assert '20000 x 20000' in message and f'{estimate_mib:.0f} MiB' in message and '\n' not in message
    assert 'max_matching_memory_mb = 4096' in message and 'max_keypoints' in message  # what to lower

    # match() refuses such a pair before computing anything, and the matcher goes on working
    calls = count_encodings(matcher)
    with pytest.raises(ResourceError, match='20000 x 300'):
        matcher.match(fake_features(20000), fake_features(300))
    assert calls == []
    # the limit is live: the test frames' 256 x 256 keypoints need about 2 MiB
    frame0, frame1 = (uncached(f) for f in extracted[:2])
    matcher.configure(max_matching_memory_mb=1)
    with pytest.raises(ResourceError, match='256 x 256 keypoints would need about 2 MiB'):
        matcher.match(frame0, frame1)
    matcher.configure(max_matching_memory_mb=2)
    assert len(matcher.match(frame0, frame1).pairs()[0]) > 100


def allocation_failure():
    """The RuntimeError of c10's CPU allocator, for real: 2^62 bytes exist nowhere."""
    try:
        torch.empty(2 ** 62, dtype=torch.uint8)
    except RuntimeError as error:
        return error
    pytest.fail('allocating 2^62 bytes succeeded')


@pytest.mark.parametrize('device, make_error, memory', [
    ('cuda', lambda: torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 12.00 GiB. GPU 0 has a '
                                                 'total capacity of 139.81 GiB\nof which 1.2 GiB is free.'), 'GPU'),
    ('cpu', allocation_failure, 'host'),
    ('cpu', MemoryError, 'host'),
], ids=['cuda-oom', 'cpu-allocator', 'memory-error'])
def test_memory_guard_turns_out_of_memory_into_one_line(device, make_error, memory, monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, 'empty_cache', lambda: emptied.append(True))
    with pytest.raises(ResourceError) as error:
        with memory_guard(torch.device(device), 'matching 9000 x 9000 keypoints', 'max_keypoints'):
            raise make_error()
    message = str(error.value)
    assert '\n' not in message and error.value.__cause__ is None and error.value.__suppress_context__
    assert message == f'out of {memory} memory while matching 9000 x 9000 keypoints on {device}: lower max_keypoints'
    assert emptied == ([True] if device == 'cuda' else [])  # a GPU's cached blocks are freed for the next frame


@pytest.mark.parametrize('error', [ValueError('bad shape'), RuntimeError('mat1 and mat2 shapes cannot be multiplied'),
                                   KeyError('keypoints'), ResourceError('already a ResourceError')])
def test_memory_guard_passes_other_errors_through(error):
    with pytest.raises(type(error)) as raised:
        with memory_guard(torch.device('cpu'), 'testing', 'nothing'):
            raise error
    assert raised.value is error


def test_out_of_memory_in_the_models_is_a_resource_error(weights, frames, extracted, monkeypatch):
    """memory_guard wraps SuperPoint and SuperGlue: the call fails with ResourceError, the next one works."""
    matcher = make_matcher(weights)
    forward, match = matcher.superpoint.forward, matcher.superglue.match

    def out_of_memory(*args):
        raise allocation_failure()

    monkeypatch.setattr(matcher.superpoint, 'forward', out_of_memory)
    with pytest.raises(ResourceError, match=r'out of host memory while detecting keypoints in 256x192 images on cpu: '
                                            r'lower the image size \(resize'):
        matcher.extract(frames[0])
    monkeypatch.setattr(matcher.superpoint, 'forward', forward)
    monkeypatch.setattr(matcher.superglue, 'match', out_of_memory)
    frame0, frame1 = (uncached(f) for f in extracted[:2])
    with pytest.raises(ResourceError, match='out of host memory while matching 256 x 256 keypoints on cpu: lower '
                                            'max_keypoints'):
        matcher.match(frame0, frame1)
    monkeypatch.setattr(matcher.superglue, 'match', match)
    assert torch.equal(matcher.extract(frames[0]).keypoints, extracted[0].keypoints)
    assert len(matcher.match(frame0, frame1).pairs()[0]) > 100
