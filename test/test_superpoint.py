"""SuperPoint at model level: odd sizes, blank images, batches, config handling, border removal.

Agreement with an independent implementation (transformers) is in test_superglue_oracle.py."""
import pytest
import torch
import torch.nn.functional as F

from model_fixtures import confident_weights, load_grey
from superglue_ros.models import SuperPoint
from superglue_ros.random_weights import random_superpoint, superpoint_state_dict


def superpoint(**config) -> SuperPoint:
    model = SuperPoint(config)
    model.load_state_dict(confident_weights()[0])
    return model.eval()


@pytest.fixture(scope='module')
def frame(freiburg_paths):
    return load_grey(freiburg_paths[0])


@pytest.fixture(scope='module')
def small_frame(frame):
    return F.interpolate(frame, scale_factor=0.5, mode='area')  # 320 x 240, quicker


def check_features(out, batch, dim=256):
    """Shapes, dtypes and L2-normalised descriptors of one SuperPoint output."""
    assert set(out) == {'keypoints', 'scores', 'descriptors'}
    assert len(out['keypoints']) == len(out['scores']) == len(out['descriptors']) == batch
    for k, s, d in zip(out['keypoints'], out['scores'], out['descriptors']):
        n = len(k)
        assert k.shape == (n, 2) and k.dtype == torch.float32
        assert s.shape == (n,) and d.shape == (dim, n)
        if n:
            assert torch.allclose(d.norm(dim=0), torch.ones(n), atol=1e-5)


@torch.inference_mode()
def test_real_frame_gives_many_keypoints_inside_the_borders(frame):
    out = superpoint()(frame)
    check_features(out, 1)
    k, s = out['keypoints'][0], out['scores'][0]
    assert 500 < len(k) < 20000  # confident weights: hundreds to thousands at threshold 0.005
    assert (s > 0.005).all()
    assert torch.equal(k, k.round())  # keypoints are pixel positions
    assert (k >= 4).all() and (k[:, 0] < 640 - 4).all() and (k[:, 1] < 480 - 4).all()


@torch.inference_mode()
def test_border_removal_drops_exactly_the_keypoints_near_any_border(frame):
    """remove_borders b keeps the keypoints of remove_borders 0 with b <= x < W - b and b <= y < H - b,
    on all four sides (transformers keeps those near the bottom and right edges; the original does not)."""
    # the crop is not a multiple of 8: borders count from the 8-aligned area the scores cover (336 x 232)
    image = frame[..., :237, :341]
    all_points = superpoint(remove_borders=0)(image)
    for border in (4, 11):
        kept = superpoint(remove_borders=border)(image)
        k = all_points['keypoints'][0]
        inside = (k[:, 0] >= border) & (k[:, 0] < 336 - border) & (k[:, 1] >= border) & (k[:, 1] < 232 - border)
        assert (~inside).sum() > 0  # the test data has keypoints near the borders
        assert torch.equal(kept['keypoints'][0], k[inside])
        assert torch.equal(kept['scores'][0], all_points['scores'][0][inside])
        assert torch.allclose(kept['descriptors'][0], all_points['descriptors'][0][:, inside])


@torch.inference_mode()
def test_max_keypoints_keeps_the_best_and_more_than_available_keeps_all(small_frame):
    model = superpoint()
    everything = model(small_frame)
    n = len(everything['keypoints'][0])
    assert n > 200
    model.config['max_keypoints'] = n + 1000  # live change, read at the next forward
    more = model(small_frame)
    assert torch.equal(more['keypoints'][0], everything['keypoints'][0])
    model.config['max_keypoints'] = 100
    best = model(small_frame)
    assert len(best['keypoints'][0]) == 100
    assert torch.allclose(best['scores'][0], everything['scores'][0].sort(descending=True).values[:100])
    assert best['scores'][0][-1] >= everything['scores'][0].sort(descending=True).values[100]


@torch.inference_mode()
def test_one_keypoint(small_frame):
    out = superpoint(max_keypoints=1)(small_frame)
    check_features(out, 1)
    assert len(out['keypoints'][0]) == 1


@torch.inference_mode()
def test_blank_image_gives_no_keypoint():
    out = superpoint()(torch.zeros(1, 1, 120, 160))
    check_features(out, 1)
    assert len(out['keypoints'][0]) == 0 and out['descriptors'][0].shape == (256, 0)


@pytest.mark.parametrize('height, width', [(16, 16), (17, 23), (45, 61), (483, 643)])
@torch.inference_mode()
def test_any_size_from_16(frame, height, width):
    image = F.interpolate(frame, size=(height, width), mode='area')  # 483 x 643: larger than the frame
    out = superpoint()(image)
    check_features(out, 1)
    k = out['keypoints'][0]
    if len(k):  # inside the 8-aligned area, minus the border
        assert (k >= 4).all()
        assert (k[:, 0] < width // 8 * 8 - 4).all() and (k[:, 1] < height // 8 * 8 - 4).all()
    if height > 100:
        assert len(k) > 100


@torch.inference_mode()
def test_batch_equals_single_images(freiburg_paths):
    images = torch.cat([load_grey(freiburg_paths[i])[..., :240, :320] for i in (0, 8)])
    model = superpoint(max_keypoints=300)
    batch = model(images)
    check_features(batch, 2)
    for i in range(2):
        single = model(images[i:i + 1])
        assert torch.equal(batch['keypoints'][i], single['keypoints'][0])
        assert torch.allclose(batch['scores'][i], single['scores'][0], atol=1e-6)
        assert torch.allclose(batch['descriptors'][i], single['descriptors'][0], atol=1e-5)
    assert not torch.equal(batch['keypoints'][0], batch['keypoints'][1])


def test_bad_config_and_input_are_refused():
    with pytest.raises(ValueError, match='unknown SuperPoint config key'):
        SuperPoint({'max_keypoint': 10})
    with pytest.raises(ValueError, match='max_keypoints'):
        SuperPoint({'max_keypoints': 0})
    with pytest.raises(ValueError, match='nms_radius'):
        SuperPoint({'nms_radius': -1})
    with pytest.raises(ValueError, match='keypoint_threshold'):
        SuperPoint({'keypoint_threshold': 1.5})
    model = SuperPoint().eval()
    model.config['max_keypoints'] = -5  # live changes are checked too
    with pytest.raises(ValueError, match='max_keypoints'):
        model(torch.zeros(1, 1, 32, 32))
    model.config['max_keypoints'] = -1
    with pytest.raises(ValueError, match='at least 16x16'):
        model(torch.zeros(1, 1, 15, 64))
    with pytest.raises(ValueError, match=r'\[B, 1, H, W\]'):
        model(torch.zeros(1, 3, 32, 32))


def test_state_dict_has_the_original_keys():
    keys = list(SuperPoint().state_dict())
    convs = ('conv1a', 'conv1b', 'conv2a', 'conv2b', 'conv3a', 'conv3b', 'conv4a', 'conv4b',
             'convPa', 'convPb', 'convDa', 'convDb')
    expected = [f'{conv}.{p}' for conv in convs for p in ('weight', 'bias')]
    assert keys == expected


def test_confident_weights_are_deterministic():
    a, b, c = confident_weights()[0], superpoint_state_dict(0), superpoint_state_dict(1)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a['conv1a.weight'], c['conv1a.weight'])
    model = random_superpoint(0, {'max_keypoints': 5})
    assert not model.training and model.config['max_keypoints'] == 5
    assert all(torch.equal(v, a[k]) for k, v in model.state_dict().items())


# -- detection masks (issue 15): applied to the dense scores before the threshold and top-k -------------

def masked_area(height=480, width=640) -> torch.Tensor:
    """[1, H, W] bool: False (no keypoints) in the left third and in a block in the middle, True elsewhere."""
    mask = torch.ones(1, height, width, dtype=torch.bool)
    mask[:, :, :width // 3] = False
    mask[:, 200:300, 300:450] = False
    return mask


@torch.inference_mode()
def test_a_mask_drops_every_keypoint_in_the_masked_area_at_real_size(frame):
    """640x480: the masked run keeps exactly the unmasked run's keypoints outside the masked area."""
    model, mask = superpoint(), masked_area()
    plain, masked = model(frame), model(frame, mask)
    check_features(masked, 1)
    k, x, y = plain['keypoints'][0], masked['keypoints'][0][:, 0].long(), masked['keypoints'][0][:, 1].long()
    assert mask[0, y, x].all() and len(masked['keypoints'][0]) > 100
    outside = mask[0, k[:, 1].long(), k[:, 0].long()]
    assert (~outside).sum() > 100  # the mask did remove keypoints
    assert torch.equal(masked['keypoints'][0], k[outside]) and torch.equal(masked['scores'][0], plain['scores'][0][outside])
    assert torch.equal(masked['descriptors'][0], plain['descriptors'][0][:, outside])


@torch.inference_mode()
def test_the_keypoint_budget_goes_to_the_unmasked_pixels(frame):
    """With max_keypoints, the masked image still gets max_keypoints keypoints, the best ones outside the mask."""
    model, mask = superpoint(max_keypoints=512), masked_area()
    masked = model(frame, mask)['keypoints'][0]
    everything = superpoint()(frame, mask)
    assert len(masked) == 512 < len(everything['keypoints'][0])
    best = everything['keypoints'][0][torch.topk(everything['scores'][0], 512).indices]
    assert torch.equal(masked, best)


def test_a_mask_of_the_wrong_shape_is_refused(small_frame):
    with pytest.raises(ValueError, match=r'detection mask must be \[B, H, W\] = \[1, 240, 320\]'):
        superpoint()(small_frame, torch.ones(1, 480, 640, dtype=torch.bool))
