"""SuperPoint keypoint detector and descriptor, with the behaviour of the original release.

DeTone, Malisiewicz, Rabinovich: "SuperPoint: Self-Supervised Interest Point Detection and
Description", CVPRW 2018. Module names follow magicleap/SuperGluePretrainedNetwork, so its
superpoint_v1.pth loads directly (superglue_ros.weights also reads the Hugging Face layout).

fp32 gives the original's keypoints, scores and descriptors bit for bit on the CPU (the same oneDNN
convolution kernels, run on its blocked layout; test/test_fidelity.py checks against transformers).
set_precision('bf16' / 'fp16') runs the encoder and the heads' 3x3 convolutions in half precision.
"""
from numbers import Integral

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..precision import HalfWeights, check_precision, full_precision
from ..settings import check_all, defaults, names

CELL = 8  # the encoder downsamples by 8; each coarse cell scores its 8x8 pixels


def simple_nms(scores: Tensor, radius: int) -> Tensor:
    """Zero every score that is not the maximum of its (2 * radius + 1)^2 window.

    Two extra rounds recover maxima that were only suppressed by an already suppressed
    neighbour (as in the original release). scores: [B, H, W].
    """
    def max_pool(x):  # separable: a row then a column window, the same maximum at 2 / (2r + 1) of the cost
        x = F.max_pool2d(x, kernel_size=(1, 2 * radius + 1), stride=1, padding=(0, radius))
        return F.max_pool2d(x, kernel_size=(2 * radius + 1, 1), stride=1, padding=(radius, 0))

    zeros = torch.zeros_like(scores)
    max_mask = scores == max_pool(scores)
    for _ in range(2):
        suppressed = max_pool(max_mask.float()) > 0
        remaining = torch.where(suppressed, zeros, scores)
        new_max_mask = remaining == max_pool(remaining)
        max_mask = max_mask | (new_max_mask & ~suppressed)
    return torch.where(max_mask, scores, zeros)


def sample_descriptors(keypoints: Tensor, descriptors: Tensor, cell: int = CELL) -> Tensor:
    """Bilinear interpolation of a coarse descriptor map at pixel keypoints, L2-normalised.

    keypoints [N, 2] (x, y) pixels, descriptors [D, h, w] -> [D, N]. The map is sampled at the
    centres of its cells, as in the original release.
    """
    dim, h, w = descriptors.shape
    grid = keypoints - cell / 2 + 0.5
    # divisor made on the device: new_tensor() would copy from the host and stall it until the stream is idle
    extent = (w * cell - cell / 2 - 0.5, h * cell - cell / 2 - 0.5)
    grid = grid / torch.stack([grid.new_full((), v) for v in extent])
    grid = (grid * 2 - 1).to(descriptors.dtype)  # to [-1, 1]
    sampled = F.grid_sample(descriptors[None], grid.view(1, 1, -1, 2), mode='bilinear', align_corners=True)
    return F.normalize(sampled.reshape(dim, -1), p=2, dim=0)


class SuperPoint(nn.Module):
    """SuperPoint: shared VGG encoder, a keypoint score head and a descriptor head.

    Config (read at every forward, so live changes take effect):
      descriptor_dim      size of the descriptors (256 for the released weights)
      nms_radius          non-maximum suppression radius in pixels
      keypoint_threshold  minimum detection score of a keypoint
      max_keypoints       keep the best max_keypoints by score, -1 = all
      remove_borders      drop keypoints closer than this many pixels to any image border
    """
    default_config = {
        'descriptor_dim': 256,
        'remove_borders': 4,
        # live settings, defaults and accepted values from settings.py:
        # nms_radius 4, keypoint_threshold 0.005, max_keypoints -1 (all)
        **defaults('superpoint'),
    }

    def __init__(self, config: dict | None = None):
        super().__init__()
        config = dict(config or {})
        unknown = sorted(set(config) - set(self.default_config))
        if unknown:
            raise ValueError(f'unknown SuperPoint config key(s) {unknown}; valid keys: {sorted(self.default_config)}')
        self.config = {**self.default_config, **config}
        check_superpoint_config(self.config)

        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        conv3x3 = lambda cin, cout: nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)  # noqa: E731
        conv1x1 = lambda cin, cout: nn.Conv2d(cin, cout, kernel_size=1, stride=1, padding=0)  # noqa: E731
        self.conv1a, self.conv1b = conv3x3(1, c1), conv3x3(c1, c1)
        self.conv2a, self.conv2b = conv3x3(c1, c2), conv3x3(c2, c2)
        self.conv3a, self.conv3b = conv3x3(c2, c3), conv3x3(c3, c3)
        self.conv4a, self.conv4b = conv3x3(c3, c4), conv3x3(c4, c4)
        self.convPa, self.convPb = conv3x3(c4, c5), conv1x1(c5, CELL * CELL + 1)  # 64 pixels + "no keypoint"
        self.convDa, self.convDb = conv3x3(c4, c5), conv1x1(c5, self.config['descriptor_dim'])
        self.half_weights = None  # HalfWeights of the half-precision part (set_precision), None: all float32
        self._half_by_dtype = {}  # dtype -> HalfWeights: switching precision back does not convert again

    def set_precision(self, name: str, check_hardware: bool = True):
        """'fp32' (the default): the original computation. 'bf16' / 'fp16': the VGG encoder and the
        3x3 convolutions of both heads (convPa, convDa; 98% of the operations) in that dtype, with
        weight copies made once (precision.HalfWeights). In float32: the heads' 1x1 output layers,
        the detection softmax, NMS, threshold and top-k, and the descriptor normalisation and sampling.

        ValueError when the model's device has no fast kernels for `name` (precision.check_precision
        says what is missing and what to use instead). check_hardware=False runs it anyway, in slow
        reference kernels with the same numerics: for numerics checks on any machine."""
        dtype = check_precision(name, self.conv1a.weight.device if check_hardware else None)
        self.half_weights = None if dtype == torch.float32 else self._half_by_dtype.setdefault(dtype, HalfWeights(dtype))

    def conv(self, module: nn.Conv2d, x: Tensor) -> Tensor:
        """module(x) for the convolutions of the half-precision part: in its dtype after set_precision."""
        if self.half_weights is None:
            return module(x)
        return F.conv2d(x, *self.half_weights(module), padding=module.padding)

    def encode(self, image: Tensor) -> Tensor:
        """Shared VGG encoder: [B, 1, H, W] -> [B, 128, H // 8, W // 8], in the half-precision dtype
        (channels-last) after set_precision."""
        x = image
        if self.half_weights:  # channels-last: the layout of the fast half-precision kernels (AMX, tensor cores)
            x = x.to(self.half_weights.dtype, memory_format=torch.channels_last)
        elif x.device.type == 'cpu' and x.dtype == torch.float32 and not torch.onnx.is_in_onnx_export():
            # oneDNN's blocked layout: the kernels that the default layout runs too (the same values bit for
            # bit), without a layout conversion around every convolution, and oneDNN's max-pooling (not in
            # an ONNX export, which records plain convolutions)
            x = x.to_mkldnn()
        for conv_a, conv_b, pool in ((self.conv1a, self.conv1b, True), (self.conv2a, self.conv2b, True),
                                     (self.conv3a, self.conv3b, True), (self.conv4a, self.conv4b, False)):
            x = self.conv(conv_b, self.conv(conv_a, x).relu_())
            if pool:  # max-pooling first, then the ReLU on a quarter of the values: the same result
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x = x.relu_()
        return x.to_dense() if x.is_mkldnn else x

    def keypoint_scores(self, features: Tensor) -> Tensor:
        """Dense detection scores after NMS: [B, 128, h, w] -> [B, 8h, 8w], float32 (or float64)."""
        return simple_nms(self.dense_scores(features), self.config['nms_radius'])

    def dense_scores(self, features: Tensor) -> Tensor:
        """Dense detection scores before NMS: [B, 128, h, w] -> [B, 8h, 8w], float32 (or float64); where
        an ONNX export of SuperPoint stops (export.py)."""
        # convPb, softmax and NMS in (at least) float32: thresholds, NMS and top-k need exact ties and order
        hidden = self.conv(self.convPa, features).relu_()
        scores = full_precision(self.convPb(hidden.to(self.convPb.weight.dtype)))
        scores = scores.softmax(dim=1)[:, :-1]  # [B, 64, h, w], drop the "no keypoint" channel
        b, _, h, w = scores.shape
        # depth to space: channel (r, c) of cell (i, j) is pixel (8i + r, 8j + c)
        scores = scores.permute(0, 2, 3, 1).reshape(b, h, w, CELL, CELL)
        return scores.permute(0, 1, 3, 2, 4).reshape(b, h * CELL, w * CELL)

    def descriptor_map(self, features: Tensor) -> Tensor:
        """Dense descriptors: [B, 128, h, w] -> [B, D, h, w], L2-normalised, float32 (or float64)."""
        hidden = self.conv(self.convDa, features).relu_()
        return F.normalize(full_precision(self.convDb(hidden.to(self.convDb.weight.dtype))), dim=1)

    def forward(self, image: Tensor) -> dict:
        """image [B, 1, H, W] float in [0, 1], H, W >= 16 -> per image: keypoints [N, 2] (x, y) pixels
        (float32), scores [N], descriptors [D, N] (L2-normalised), as lists of B tensors."""
        if image.dim() != 4 or image.shape[1] != 1 or not image.is_floating_point():
            raise ValueError(f'SuperPoint expects a grey float image batch [B, 1, H, W] in [0, 1], '
                             f'got shape {tuple(image.shape)} {image.dtype}')
        if image.shape[2] < 16 or image.shape[3] < 16:
            raise ValueError(f'SuperPoint needs images of at least 16x16 pixels, got {image.shape[3]}x{image.shape[2]}')
        features = self.encode(image)
        return self.keypoints_from_maps(self.dense_scores(features), self.descriptor_map(features))

    def keypoints_from_maps(self, dense_scores: Tensor, descriptor_map: Tensor) -> dict:
        """The keypoints of the dense maps, as forward() returns them: dense_scores [B, H, W] before NMS
        (dense_scores), descriptor_map [B, D, H / 8, W / 8] (descriptor_map) -> NMS, select_keypoints
        and sample_descriptors per image. Every backend's maps go through here (matcher.py: also those
        computed by onnxruntime), so the detection settings and rules live in this one place."""
        config = self.config
        check_superpoint_config(config)
        keypoints, scores = select_keypoints(simple_nms(dense_scores, config['nms_radius']), config)
        descriptors = [sample_descriptors(k, d) for k, d in zip(keypoints, descriptor_map)]
        return {'keypoints': keypoints, 'scores': scores, 'descriptors': descriptors}


def select_keypoints(dense_scores: Tensor, config: dict) -> tuple[list[Tensor], list[Tensor]]:
    """Keypoints of dense scores after NMS [B, H, W]: above keypoint_threshold, at least remove_borders
    pixels from every border, the best max_keypoints by score (all for -1). Returns B keypoints [N_i, 2]
    (x, y) pixels, float32, and B scores [N_i] (row-major order, or by decreasing score after top-k)."""
    height, width = dense_scores.shape[1:]  # image size rounded down to a multiple of 8
    border = config['remove_borders']
    keypoints, scores = [], []
    for s in dense_scores:
        yx = torch.nonzero(s > config['keypoint_threshold'])  # [N, 2] (y, x), row-major order
        inside = ((yx[:, 0] >= border) & (yx[:, 0] < height - border)
                  & (yx[:, 1] >= border) & (yx[:, 1] < width - border))
        yx = yx[inside]
        s = s[yx[:, 0], yx[:, 1]]
        if 0 <= config['max_keypoints'] < len(yx):
            s, best = torch.topk(s, config['max_keypoints'], dim=0)
            yx = yx[best]
        keypoints.append(yx.flip(1).float())
        scores.append(s)
    return keypoints, scores


def check_superpoint_config(config: dict):
    """ValueError naming the bad SuperPoint setting and what is allowed (live settings: settings.py)."""
    check_all({name: config[name] for name in names('superpoint')})
    for key in ('descriptor_dim', 'remove_borders'):
        low = 1 if key == 'descriptor_dim' else 0
        if not isinstance(config[key], Integral) or isinstance(config[key], bool) or config[key] < low:
            raise ValueError(f'{key} must be an integer >= {low}; got {config[key]!r}')
