"""static_shapes (static_shapes.py, Matcher): SuperGlue padded to max_keypoints with padding masks gives the
matches and scores of the unpadded images, at the deployed size (640x480 frames, 18 GNN layers, 100
Sinkhorn iterations, confident random weights), through the torch backend (eager on the CPU; a CUDA
graph per stream on a GPU, tested where there is one) and the onnxruntime backend's static export; the
settings it needs are refused in one line otherwise."""
import cv2
import numpy as np
import pytest
import torch

from model_fixtures import confident_weights
from superglue_ros.matcher import Matcher
from superglue_ros.models import SuperGlue, SuperPoint

COUNT = 1024         # max_keypoints: the presets'
RESIZE = (640, 480)  # the frames' own size; a resize is what the onnxruntime static export needs
SCORE_ATOL = 1e-5    # matching scores in [0, 1]: float32 rounding of a different summation order


def make_matcher(static_shapes=False, device='cpu', backend='torch', **settings):
    sp_state, sg_state = confident_weights(seed=0)
    superpoint, superglue = SuperPoint({'max_keypoints': COUNT}), SuperGlue()
    superpoint.load_state_dict(sp_state)
    superglue.load_state_dict(sg_state)
    matcher = Matcher(superpoint, superglue, device, RESIZE, backend=backend, static_shapes=static_shapes)
    matcher.configure(**settings)
    return matcher


@pytest.fixture(scope='module')
def frames(freiburg_paths):
    return [cv2.imread(str(freiburg_paths[i]), cv2.IMREAD_COLOR) for i in (0, 4)]


def assert_same(result, expected):
    assert np.array_equal(result.matches0, expected.matches0)
    np.testing.assert_allclose(result.matching_scores0, expected.matching_scores0, rtol=0, atol=SCORE_ATOL)
    assert (result.matches0 > -1).sum() > 50  # a real pair, not an empty agreement


def padded_pair(matcher, frames):
    """The frames' features, each with fewer keypoints than COUNT, so that padding happens."""
    features = [matcher.extract(frame) for frame in frames]
    keep = 700  # the frame's best 700 (SuperPoint sorts by score): padded by 324
    f = features[1]
    f.keypoints, f.scores, f.descriptors, f.keypoints_host = f.keypoints[:keep], f.scores[:keep], f.descriptors[:, :keep], None
    return features


def test_padded_superglue_equals_unpadded_on_the_cpu(frames):
    static, dynamic = make_matcher(static_shapes=True), make_matcher()
    f_static, f_dynamic = padded_pair(static, frames), padded_pair(dynamic, frames)
    assert [len(f.scores) for f in f_static] == [len(f.scores) for f in f_dynamic]
    assert len(f_static[1].scores) < COUNT
    result = static.match(*f_static)
    assert f_static[0].encoded.shape[2] == f_static[1].encoded.shape[2] == COUNT  # padded, cached padded
    assert_same(result, dynamic.match(*f_dynamic))
    assert static.match(*f_static).matches0.shape == (len(f_static[0].scores),)  # cached encodings reused


def test_a_keyframe_with_more_keypoints_than_a_lowered_max_keypoints_still_matches(frames):
    static, dynamic = make_matcher(static_shapes=True), make_matcher()
    f_static, f_dynamic = padded_pair(static, frames), padded_pair(dynamic, frames)
    static.match(*f_static)  # encoded at 1024
    for matcher in (static, dynamic):
        matcher.configure(max_keypoints=512)  # the keyframe keeps its 1024 keypoints
    assert_same(static.match(*f_static), dynamic.match(*f_dynamic))
    assert f_static[0].encoded.shape[2] == COUNT  # one count for both sides: the larger side's


def test_an_image_without_keypoints_has_no_matches(frames):
    static = make_matcher(static_shapes=True)
    features = [static.extract(frames[0]), static.extract(np.zeros((480, 640, 3), np.uint8))]
    assert len(features[1].scores) == 0
    for pair in (features, features[::-1]):
        result = static.match(*pair)
        assert result.matches0.shape == (len(pair[0].scores),) and (result.matches0 == -1).all()


def test_settings_static_shapes_needs_are_refused_in_one_line():
    with pytest.raises(ValueError, match='static_shapes pads every image to max_keypoints, which is -1'):
        Matcher(SuperPoint({'max_keypoints': -1}), SuperGlue(), 'cpu', static_shapes=True)
    with pytest.raises(ValueError, match="static_shapes with backend 'onnxruntime' .* set resize"):
        Matcher(SuperPoint({'max_keypoints': 8}), SuperGlue(), 'cpu', backend='onnxruntime', static_shapes=True)
    with pytest.raises(ValueError, match='static_shapes must be true or false'):
        Matcher(SuperPoint({'max_keypoints': 8}), SuperGlue(), 'cpu', static_shapes='yes')
    matcher = Matcher(SuperPoint({'max_keypoints': 8}), SuperGlue(), 'cpu', static_shapes=True)
    with pytest.raises(ValueError, match='max_keypoints must stay >= 1 with static_shapes'):
        matcher.configure(max_keypoints=-1)
    assert matcher.superpoint.config['max_keypoints'] == 8


def test_from_weights_checks_static_shapes_before_loading(tmp_path):
    with pytest.raises(ValueError, match='static_shapes pads every image'):
        Matcher.from_weights(str(tmp_path / 'missing.pth'), str(tmp_path / 'missing.pth'), 'cpu', static_shapes=True)


def test_onnxruntime_static_export_gives_the_dynamic_matches(frames, tmp_path, monkeypatch):
    pytest.importorskip('onnxruntime')
    monkeypatch.setenv('SUPERGLUE_ROS_ONNX_DIR', str(tmp_path))
    static, dynamic = (make_matcher(static_shapes=s, backend='onnxruntime', sinkhorn_iterations=100)
                       for s in (True, False))
    assert static.runtime.static == (COUNT, RESIZE) and dynamic.runtime.static is None
    f_static, f_dynamic = padded_pair(static, frames), padded_pair(dynamic, frames)
    assert_same(static.match(*f_static), dynamic.match(*f_dynamic))
    with pytest.raises(ValueError, match=f'max_keypoints must be at most {COUNT} with static_shapes'):
        static.configure(max_keypoints=COUNT + 1)
    static.configure(max_keypoints=512)  # fewer: padded further
    assert static.match(*padded_pair(static, frames)).matches0.shape == (512,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='CUDA graphs need a CUDA device (none here)')
def test_cuda_graphs_per_stream_give_the_eager_matches(frames):
    graphs, eager = make_matcher(static_shapes=True, device='cuda'), make_matcher(device='cuda')
    f_graphs, f_eager = padded_pair(graphs, frames), padded_pair(eager, frames)
    expected = eager.match(*f_eager)
    assert_same(graphs.match(*f_graphs), expected)
    assert_same(graphs.match(*f_graphs), expected)  # replayed
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # another camera's stream: its own graphs
        for f in f_graphs:
            f.encoded = None
        assert_same(graphs.match(*f_graphs), expected)
    assert len({key[0] for key in graphs.static_superglue.graphs}) == 2
    graphs.configure(sinkhorn_iterations=20)  # baked into the graph: captured again
    eager.configure(sinkhorn_iterations=20)
    assert_same(graphs.match(*f_graphs), eager.match(*f_eager))
