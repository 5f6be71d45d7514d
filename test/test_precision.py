"""Speed options of the Matcher (precision, attention, channels_last) on the real freiburg frames with
confident random weights.

CPU (CI): options are validated; the default runs the original computation (float32, no autocast);
fp16 / bf16 autocast reaches SuperPoint and the SuperGlue GNN while detection scores and the Sinkhorn
optimal transport stay in float32; 'sdpa' attention and channels-last convolutions give the same
matches as the defaults.
CUDA (skipped without a GPU), released model size at 640x480 with 1024 keypoints: fp16 and bf16 give
at least 99% identical matches to fp32 over the test images (the requirement for keeping a half
precision); 'sdpa' and channels-last likewise.
"""
import cv2
import numpy as np
import pytest
import torch

from superglue_ros.matcher import Matcher
from superglue_ros.models import SuperGlue, SuperPoint
from superglue_ros.models import superglue as superglue_module
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict

SMALL = dict(superglue={'gnn_layers': ['self', 'cross'] * 3}, resize=(256, 192),
             settings=dict(max_keypoints=256, sinkhorn_iterations=20))
TINY = dict(superglue={'gnn_layers': ['self', 'cross']}, resize=(64, 48),  # dtypes only: half precision
            settings=dict(max_keypoints=32, sinkhorn_iterations=5))         # is slow on CPUs
RELEASED = dict(superglue={}, resize=None, settings=dict(max_keypoints=1024))  # 9 GNN pairs, 100 iterations
PAIRS = [(0, 1), (0, 3), (2, 6)]
MIN_AGREEMENT = 0.99

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


@pytest.fixture(scope='module', autouse=True)
def one_torch_thread():
    """One intra-op thread: the shared cores stay usable (OpenMP threads spin when cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def images(freiburg_paths):
    return [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in freiburg_paths]


def make_matcher(size: dict, device='cpu', **options) -> Matcher:
    superpoint, superglue = SuperPoint(), SuperGlue(size['superglue'])
    superpoint.load_state_dict(superpoint_state_dict(seed=0))
    superglue.load_state_dict(superglue_state_dict(seed=0, config=size['superglue']))
    matcher = Matcher(superpoint, superglue, device=device, resize=size['resize'], **options)
    matcher.configure(**size['settings'])
    return matcher


def matched_points(matcher: Matcher, images, pairs) -> list[set]:
    """Per image pair, its matches as ((x0, y0), (x1, y1)) keypoint pixels: comparable between runs
    whose keypoint lists differ."""
    features = [matcher.extract(image) for image in images]
    matches = []
    for i, j in pairs:
        idx0, idx1, _ = matcher.match(features[i], features[j]).pairs()
        points0, points1 = features[i].keypoints.cpu().numpy(), features[j].keypoints.cpu().numpy()
        matches.append({(tuple(points0[a]), tuple(points1[b])) for a, b in zip(idx0, idx1)})
    return matches


def agreement(reference: list[set], other: list[set]) -> float:
    """Shared matches over all pairs, as a fraction of the larger of the two match counts: 1 only
    when both find the same matches (a match missing on either side counts)."""
    shared = sum(len(a & b) for a, b in zip(reference, other))
    return shared / max(sum(map(len, reference)), sum(map(len, other)), 1)


# -- CPU ------------------------------------------------------------------------------------------

def test_options_are_validated():
    with pytest.raises(ValueError, match='precision'):
        make_matcher(SMALL, precision='fp8')
    with pytest.raises(ValueError, match='attention'):
        make_matcher(SMALL, attention='flash')
    with pytest.raises(ValueError, match='attention'):
        SuperGlue().set_attention('einsum ')
    with pytest.raises(ValueError, match='precision'):  # before looking for the weights
        Matcher.from_weights('/nonexistent/superpoint.pth', '/nonexistent/superglue.pth', precision='half')


class DtypeProbe:
    """Records the output dtypes of SuperPoint's first convolution, SuperGlue's attention projection
    and final projection, and the dtype of the Sinkhorn couplings and whether autocast was on there."""

    def __init__(self, matcher: Matcher, monkeypatch):
        self.seen = {}

        def recorder(name):
            def hook(module, inputs, output):
                self.seen.setdefault(name, output.dtype)
            return hook

        matcher.superpoint.conv1a.register_forward_hook(recorder('superpoint conv'))
        matcher.superglue.gnn.layers[1].attn.proj[0].register_forward_hook(recorder('gnn'))
        matcher.superglue.final_proj.register_forward_hook(recorder('final projection'))
        sinkhorn = superglue_module.log_sinkhorn_iterations

        def recorded_sinkhorn(couplings, *args):
            self.seen['sinkhorn'] = couplings.dtype
            self.seen['sinkhorn autocast'] = torch.is_autocast_enabled(couplings.device.type)
            return sinkhorn(couplings, *args)

        monkeypatch.setattr(superglue_module, 'log_sinkhorn_iterations', recorded_sinkhorn)


@pytest.mark.parametrize('precision, dtype', [('fp32', torch.float32), ('fp16', torch.float16),
                                              ('bf16', torch.bfloat16)])
def test_precision_reaches_the_networks_and_sinkhorn_stays_fp32(images, monkeypatch, precision, dtype):
    matcher = make_matcher(TINY, precision=precision)
    probe = DtypeProbe(matcher, monkeypatch)
    features0, features1 = matcher.extract(images[0]), matcher.extract(images[1])
    result = matcher.match(features0, features1)
    assert probe.seen == {'superpoint conv': dtype, 'gnn': dtype, 'final projection': dtype,
                          'sinkhorn': torch.float32, 'sinkhorn autocast': False}
    assert features0.keypoints.dtype == features0.scores.dtype == torch.float32  # detection in float32
    assert result.matching_scores0.dtype == np.float32 and len(result.pairs()[0]) > 0


def test_sdpa_attention_equals_einsum():
    torch.manual_seed(0)
    attention = superglue_module.MultiHeadedAttention(num_heads=4, d_model=64).eval()
    query, source = torch.randn(2, 64, 50), torch.randn(2, 64, 70)  # [B, D, N], [B, D, M]
    with torch.inference_mode():
        einsum = attention(query, source, source)
        attention.implementation = 'sdpa'
        sdpa = attention(query, source, source)
    torch.testing.assert_close(sdpa, einsum, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def default_matches(images):
    return matched_points(make_matcher(SMALL), images, PAIRS)


@pytest.mark.parametrize('option', [{'attention': 'sdpa'}, {'channels_last': True}])
def test_option_gives_the_default_matches(images, default_matches, option):
    assert sum(map(len, default_matches)) > 200  # something to compare
    assert agreement(default_matches, matched_points(make_matcher(SMALL, **option), images, PAIRS)) >= MIN_AGREEMENT


def test_default_options_leave_the_models_as_released():
    matcher = make_matcher(SMALL, attention='sdpa', channels_last=True)
    matcher = Matcher(matcher.superpoint, matcher.superglue, device='cpu')  # defaults again
    assert all(layer.attn.implementation == 'einsum' for layer in matcher.superglue.gnn.layers)
    assert matcher.superpoint.conv2a.weight.is_contiguous()
    assert matcher.precision == 'fp32'


# -- CUDA: the requirement, at the released model size -------------------------------------------

@pytest.fixture(scope='module')
def fp32_matches(images):
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA device')
    return matched_points(make_matcher(RELEASED, 'cuda'), images, [(0, k) for k in range(1, len(images))])


@cuda_only
@pytest.mark.parametrize('options', [{'precision': 'fp16'}, {'precision': 'bf16'}, {'attention': 'sdpa'},
                                     {'channels_last': True},
                                     {'precision': 'fp16', 'attention': 'sdpa', 'channels_last': True}],
                         ids=lambda options: '+'.join(f'{k}={v}' for k, v in options.items()))
def test_gpu_option_agrees_with_fp32(images, fp32_matches, options):
    assert sum(map(len, fp32_matches)) > 1000
    matches = matched_points(make_matcher(RELEASED, 'cuda', **options), images,
                             [(0, k) for k in range(1, len(images))])
    share = agreement(fp32_matches, matches)
    assert share >= MIN_AGREEMENT, f'{options}: {share:.2%} identical matches with fp32, {MIN_AGREEMENT:.0%} required'
