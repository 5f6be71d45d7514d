"""SuperPoint + SuperGlue against an independent implementation (transformers), and SuperGlue at
model level (encode / match split, empty and tiny inputs, batches, config).

The oracle: confident weights are written as a Hugging Face checkpoint with transformers'
save_pretrained, loaded with superglue_ros.weights, and both implementations run on real frames.
Known differences, accounted for exactly:
  - transformers' SuperPoint removes keypoints near the top and left borders only (it passes the
    image size times 8 to its border removal); the original, and we, remove them on all four sides.
    The full comparison uses border removal 0 on both; a separate test checks the difference.
  - transformers' SuperGlue pads both images to the same number of keypoints, so the comparison
    uses max_keypoints below what every frame has; its default matching_threshold is 0.0, set to 0.2.
  - transformers zeroes the matching scores of mutual matches below the threshold; the original
    keeps them (only valid matches' scores are compared).
"""
import pytest
import torch

from model_fixtures import confident_weights, hf_superglue, load_grey, superglue_input
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.random_weights import random_superglue, superglue_state_dict
from superglue_ros.weights import load_superglue, load_superpoint

MAX_KEYPOINTS = 512
PAIRS = [(0, 1), (8, 9)]


@pytest.fixture(scope='module')
def hf_model_dir(tmp_path_factory):
    """transformers' SuperGlue (with its SuperPoint) holding the confident weights, and its saved checkpoint."""
    superpoint_state, superglue_state = confident_weights()
    model = hf_superglue(superglue_state, superpoint_state,
                         keypoint_detector_config={'max_keypoints': MAX_KEYPOINTS, 'border_removal_distance': 0},
                         matching_threshold=0.2)
    directory = tmp_path_factory.mktemp('hf') / 'superglue'
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope='module')
def ours(hf_model_dir):
    _, directory = hf_model_dir
    superpoint = load_superpoint(None, {'max_keypoints': MAX_KEYPOINTS, 'remove_borders': 0}, superglue_spec=directory)
    return superpoint, load_superglue(directory)


def pixel_values(*images):
    """transformers' input: [1, 2, 3, H, W], grey replicated to three channels (it reads channel 0)."""
    return torch.cat(images).expand(-1, 3, -1, -1)[None]


@pytest.mark.parametrize('pair', PAIRS)
@torch.inference_mode()
def test_same_keypoints_descriptors_and_matches_as_transformers(pair, hf_model_dir, ours, freiburg_paths):
    hf_model, _ = hf_model_dir
    superpoint, superglue = ours
    images = [load_grey(freiburg_paths[i]) for i in pair]
    height, width = images[0].shape[-2:]

    theirs = hf_model(pixel_values(*images))
    their_detections = hf_model.keypoint_detector(pixel_values(*images)[0])
    features = [superpoint(image) for image in images]
    mine = superglue(superglue_input(*features, image_size=(width, height)))

    for i in (0, 1):
        keypoints, scores, descriptors = (f[0] for f in (features[i]['keypoints'], features[i]['scores'],
                                                         features[i]['descriptors']))
        assert len(keypoints) == MAX_KEYPOINTS  # no padding on their side
        assert torch.allclose(their_detections.keypoints[i] * torch.tensor([width, height]), keypoints, atol=1e-4)
        assert torch.allclose(their_detections.scores[i], scores, atol=1e-4)
        assert torch.allclose(their_detections.descriptors[i], descriptors.T, atol=1e-4)

    assert torch.equal(theirs.matches[0, 0], mine['matches0'][0])
    assert torch.equal(theirs.matches[0, 1], mine['matches1'][0])
    valid0, valid1 = mine['matches0'][0] > -1, mine['matches1'][0] > -1
    assert valid0.sum() > 200  # hundreds of confident matches
    assert (mine['matching_scores0'][0][valid0] > 0.2).all()
    assert torch.allclose(theirs.matching_scores[0, 0][valid0], mine['matching_scores0'][0][valid0], atol=1e-4)
    assert torch.allclose(theirs.matching_scores[0, 1][valid1], mine['matching_scores1'][0][valid1], atol=1e-4)


@torch.inference_mode()
def test_border_removal_differs_from_transformers_exactly_at_bottom_and_right(hf_model_dir, freiburg_paths):
    """With border removal 4, transformers drops keypoints within 4 px of the top and left edges only;
    we drop those near all four edges."""
    hf_model, _ = hf_model_dir
    image = load_grey(freiburg_paths[3])[..., :200, :264]
    height, width = image.shape[-2:]
    hf_detector = hf_model.keypoint_detector
    hf_detector.keypoint_decoder.max_keypoints = -1
    hf_detector.keypoint_decoder.border_removal_distance = 4
    try:
        their = hf_detector(pixel_values(image)[0])
    finally:
        hf_detector.keypoint_decoder.max_keypoints = MAX_KEYPOINTS
        hf_detector.keypoint_decoder.border_removal_distance = 0
    their_keypoints = their.keypoints[0] * torch.tensor([width, height])

    superpoint = SuperPoint({'remove_borders': 4})
    superpoint.load_state_dict(confident_weights()[0])
    mine = superpoint.eval()(image)['keypoints'][0]

    near_bottom_right = (their_keypoints[:, 0] >= width - 4) | (their_keypoints[:, 1] >= height - 4)
    assert near_bottom_right.sum() > 0
    assert torch.allclose(their_keypoints[~near_bottom_right], mine, atol=1e-4)
    assert (mine[:, 0] < width - 4).all() and (mine[:, 1] < height - 4).all()


# ---------------------------------------------------------------------------------------------
# SuperGlue at model level

@pytest.fixture(scope='module')
def frame_features(freiburg_paths):
    superpoint = SuperPoint({'max_keypoints': 256})
    superpoint.load_state_dict(confident_weights()[0])
    with torch.inference_mode():
        return [superpoint.eval()(load_grey(freiburg_paths[i])[..., :240, :320]) for i in (4, 5)]


@pytest.fixture(scope='module')
def superglue():
    model = SuperGlue()
    model.load_state_dict(confident_weights()[1])
    return model.eval()


@torch.inference_mode()
def test_forward_is_match_of_encodes_and_an_encoding_can_be_reused(frame_features, superglue):
    data = superglue_input(*frame_features, image_size=(320, 240))
    full = superglue(data)
    encoded = [superglue.encode(data[f'keypoints{i}'], data[f'scores{i}'], data[f'descriptors{i}'], (320, 240))
               for i in (0, 1)]
    assert encoded[0].shape == data['descriptors0'].shape
    split = superglue.match(*encoded)
    again = superglue.match(*encoded)  # the model keeps no state between calls
    for key in ('matches0', 'matches1', 'matching_scores0', 'matching_scores1'):
        assert torch.equal(full[key], split[key]) and torch.equal(split[key], again[key])
    assert full['matches0'].dtype == torch.long and full['matches0'].shape == (1, 256)
    valid = full['matches0'][0] > -1
    assert valid.sum() > 50
    # mutual: matches1 points back
    assert torch.equal(full['matches1'][0][full['matches0'][0][valid]], torch.nonzero(valid)[:, 0])


@torch.inference_mode()
def test_encode_applies_the_first_self_layer_only(frame_features, superglue):
    data = superglue_input(*frame_features, image_size=(320, 240))
    args = (data['keypoints0'], data['scores0'], data['descriptors0'], (320, 240))
    first_cross = SuperGlue({'gnn_layers': ['cross', 'self']})
    state = {k: v for k, v in confident_weights()[1].items() if not k.startswith('gnn.layers.') or
             k.split('.')[2] in ('0', '1')}
    first_cross.load_state_dict(state)
    first_cross.eval()
    without_layer = first_cross.encode(*args)  # keypoint encoding only
    with_layer = superglue.encode(*args)
    assert torch.allclose(with_layer, without_layer + superglue.gnn.layers[0](without_layer, without_layer), atol=1e-6)


@torch.inference_mode()
def test_zero_keypoints_on_either_side(frame_features, superglue):
    empty = {'keypoints': [torch.zeros(0, 2)], 'scores': [torch.zeros(0)], 'descriptors': [torch.zeros(256, 0)]}
    for first, second in ((empty, frame_features[1]), (frame_features[0], empty), (empty, empty)):
        n0, n1 = len(first['keypoints'][0]), len(second['keypoints'][0])
        out = superglue(superglue_input(first, second, image_size=(320, 240)))
        assert out['matches0'].shape == (1, n0) and out['matches1'].shape == (1, n1)
        assert (out['matches0'] == -1).all() and (out['matches1'] == -1).all()
        assert (out['matching_scores0'] == 0).all() and (out['matching_scores1'] == 0).all()
        assert out['matches0'].dtype == torch.long and out['matching_scores0'].dtype == torch.float32


@torch.inference_mode()
def test_one_keypoint_each_matches_itself(frame_features, superglue):
    one = {key: [value[0][..., :1]] if key == 'descriptors' else [value[0][:1]]
           for key, value in frame_features[0].items()}
    out = superglue(superglue_input(one, one, image_size=(320, 240)))
    assert out['matches0'].tolist() == [[0]] and out['matches1'].tolist() == [[0]]
    assert 0.2 < out['matching_scores0'].item() <= 1


@torch.inference_mode()
def test_batch_equals_single_pairs(frame_features, superglue):
    pairs = [superglue_input(*frame_features, image_size=(320, 240)),
             superglue_input(*frame_features[::-1], image_size=(320, 240))]
    batch = {key: torch.cat([p[key] for p in pairs]) if torch.is_tensor(pairs[0][key]) else pairs[0][key]
             for key in pairs[0]}
    together = superglue(batch)
    for i, pair in enumerate(pairs):
        single = superglue(pair)
        assert torch.equal(together['matches0'][i], single['matches0'][0])
        assert torch.allclose(together['matching_scores0'][i], single['matching_scores0'][0], atol=1e-5)
    # the reversed pair gives the same matches the other way round
    assert torch.equal(together['matches0'][1], together['matches1'][0])


@torch.inference_mode()
def test_live_threshold_and_iterations(frame_features, superglue):
    data = superglue_input(*frame_features, image_size=(320, 240))
    default = superglue(data)
    superglue.config.update(match_threshold=0.5)
    strict = superglue(data)
    superglue.config.update(match_threshold=0.2, sinkhorn_iterations=3)
    rough = superglue(data)
    superglue.config.update(sinkhorn_iterations=100)
    assert 0 < (strict['matches0'] > -1).sum() < (default['matches0'] > -1).sum()
    assert (strict['matching_scores0'][strict['matches0'] > -1] > 0.5).all()
    assert not torch.allclose(rough['matching_scores0'], default['matching_scores0'], atol=1e-3)


def test_bad_config_and_inputs_are_refused(superglue):
    with pytest.raises(ValueError, match='unknown SuperGlue config key'):
        SuperGlue({'GNN_layers': ['self']})
    with pytest.raises(ValueError, match='gnn_layers'):
        SuperGlue({'gnn_layers': ['self', 'other']})
    with pytest.raises(ValueError, match='num_heads'):
        SuperGlue({'num_heads': 3})
    with pytest.raises(ValueError, match='match_threshold'):
        SuperGlue({'match_threshold': 1.5})
    with pytest.raises(ValueError, match='descriptors'):
        superglue.encode(torch.zeros(1, 5, 2), torch.zeros(1, 5), torch.zeros(1, 128, 5), (64, 64))


def test_state_dict_has_the_original_keys():
    keys = set(SuperGlue().state_dict())
    assert {'bin_score', 'final_proj.weight', 'final_proj.bias', 'kenc.encoder.0.weight', 'kenc.encoder.1.running_var',
            'kenc.encoder.12.weight', 'gnn.layers.17.attn.merge.weight', 'gnn.layers.0.attn.proj.2.bias',
            'gnn.layers.5.mlp.0.weight', 'gnn.layers.5.mlp.1.running_mean', 'gnn.layers.5.mlp.3.weight'} <= keys
    assert len([k for k in keys if k.startswith('gnn.layers.')]) == 18 * (4 * 2 + 2 + 5 + 2)


def test_confident_weights_are_deterministic():
    a, b = confident_weights()[1], superglue_state_dict(0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = random_superglue(1, {'sinkhorn_iterations': 20})
    assert not model.training and model.config['sinkhorn_iterations'] == 20
    assert not torch.equal(model.final_proj.weight, a['final_proj.weight'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@torch.inference_mode()
def test_half_precision_on_gpu_agrees_with_float32(freiburg_paths):
    """fp16 models on the GPU (optimal transport stays in float32) give nearly the same result."""
    superpoint_state, superglue_state = confident_weights()
    results = {}
    for dtype in (torch.float32, torch.float16):
        superpoint, superglue = SuperPoint({'max_keypoints': 1024}), SuperGlue()
        superpoint.load_state_dict(superpoint_state)
        superglue.load_state_dict(superglue_state)
        superpoint, superglue = superpoint.eval().cuda().to(dtype), superglue.eval().cuda().to(dtype)
        features = [superpoint(load_grey(freiburg_paths[i]).cuda().to(dtype)) for i in (0, 1)]
        out = superglue(superglue_input(*features))
        valid = out['matches0'][0] > -1
        matched = out['matches0'][0][valid]
        pairs = torch.cat([features[0]['keypoints'][0][valid], features[1]['keypoints'][0][matched]], 1)
        results[dtype] = {tuple(p) for p in pairs.cpu().tolist()}
        assert out['matching_scores0'].dtype == torch.float32
    full, half = results[torch.float32], results[torch.float16]
    assert len(full) > 300
    assert len(full & half) > 0.9 * len(full)
