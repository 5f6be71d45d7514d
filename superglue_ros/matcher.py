"""Matcher: SuperPoint + SuperGlue on numpy images, for the CLI, the front-end and the node.

    matcher = Matcher.from_weights('superpoint', 'indoor', max_keypoints=1024)
    features0 = matcher.extract(image0)            # Features, tensors on the matcher's device
    features1 = matcher.extract(image1)
    result = matcher.match(features0, features1)   # MatchResult, numpy
    idx0, idx1, confidence = result.pairs()

Caching: a Features object keeps its SuperGlue encoding (SuperGlue.encode: keypoint encoding and
the first 'self' layer) from its first match, and every later match against it reuses it; a
keyframe is encoded once. The encoding depends only on the SuperGlue weights and on that image's
keypoints, scores and descriptors, so configure() never makes it stale: match_threshold and
sinkhorn_iterations act after it, and the SuperPoint settings act on later extractions only.
Features belong to the matcher that extracted them (its weights and device).

Speed options (GPU), each to be measured before it becomes a default (docs/BENCHMARKS.md); the
defaults run exactly the original computation:
  precision      'fp32' | 'fp16' | 'bf16': autocast of SuperPoint and the SuperGlue GNN; keypoint
                 detection scores (softmax) and the Sinkhorn optimal transport stay in float32
  attention      'einsum' | 'sdpa' (SuperGlue.set_attention)
  channels_last  SuperPoint convolutions in channels-last memory layout
attention and channels_last change the models: matchers sharing models share them.
cuda_pipeline.py runs a Matcher on CUDA streams for cameras.
"""
import math
import time
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np
import torch
from torch import Tensor

from .image import MIN_SIZE, prepare_image
from .models import SuperGlue, SuperPoint
from .models.superglue import ATTENTION
from .weights import load_superglue, load_superpoint


@dataclass
class Features:
    """One image's SuperPoint output, on the matcher's device."""
    keypoints: Tensor                 # [N, 2] (x, y) pixels of the processed image, float32
    scores: Tensor                    # [N]
    descriptors: Tensor               # [D, N], L2-normalised
    image_size: tuple[int, int]       # (width, height) of the processed image
    scale: tuple[float, float]        # processed -> original pixel factors (sx, sy)
    encoded: Tensor | None = None     # SuperGlue.encode() output [1, D, N], filled on first match, then reused
    timings_ms: dict = field(default_factory=dict)  # 'preprocess', 'superpoint' (of the whole extract_batch)

    def keypoints_original(self) -> np.ndarray:
        """[N, 2] float32 keypoints in pixels of the image as given (before any resize)."""
        return self.keypoints.cpu().numpy() * np.asarray(self.scale, np.float32)


@dataclass
class MatchResult:
    matches0: np.ndarray              # [N0] int64 index into features1 keypoints, -1 = unmatched
    matching_scores0: np.ndarray      # [N0] float32
    timings_ms: dict[str, float]      # 'superglue_encode' (features not encoded yet), 'superglue_match'

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The matches as idx0 [K], idx1 [K] (int64) and confidence [K] (float32)."""
        idx0 = np.flatnonzero(self.matches0 > -1)
        return idx0, self.matches0[idx0], self.matching_scores0[idx0]


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


# Setting -> (model it configures, test of a value, what is accepted). Defaults: the models' default_config.
SETTINGS = {
    'max_keypoints': ('superpoint', lambda v: _is_int(v) and (v == -1 or v >= 1), 'an integer >= 1, or -1 for all'),
    'keypoint_threshold': ('superpoint', lambda v: _is_number(v) and 0 < v < 1, 'a number in (0, 1)'),
    'nms_radius': ('superpoint', lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    # a matching score is <= 1, so a threshold of 1 would drop every match (the model refuses it)
    'match_threshold': ('superglue', lambda v: _is_number(v) and 0 <= v < 1, 'a number in [0, 1)'),
    'sinkhorn_iterations': ('superglue', lambda v: _is_int(v) and v >= 1, 'an integer >= 1'),
}


def check_settings(settings: dict) -> dict:
    """Validated settings as plain Python numbers; ValueError naming each bad one and what is accepted."""
    problems = [f'unknown setting {name!r} (valid: {", ".join(SETTINGS)})' for name in settings if name not in SETTINGS]
    problems += [f'{name} must be {SETTINGS[name][2]}, got {value!r}' for name, value in settings.items()
                 if name in SETTINGS and not SETTINGS[name][1](value)]
    if problems:
        raise ValueError('; '.join(problems))
    return {name: int(value) if _is_int(value) else float(value) for name, value in settings.items()}


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda', 'cuda:N' as given, if usable."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    if resolved.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'no'}): use device 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f'device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)')
    return resolved


PRECISIONS = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}  # name -> autocast dtype


def check_speed_options(precision: str, attention: str):
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {tuple(PRECISIONS)}, got {precision!r}')
    if attention not in ATTENTION:
        raise ValueError(f'attention must be one of {ATTENTION}, got {attention!r}')


def check_resize(resize) -> tuple[int, int] | None:
    if resize is None:
        return None
    if (not isinstance(resize, (tuple, list)) or len(resize) != 2
            or not all(_is_int(v) and v >= MIN_SIZE for v in resize)):
        raise ValueError(f'resize must be None or (width, height), integers >= {MIN_SIZE}; got {resize!r}')
    return int(resize[0]), int(resize[1])


class Matcher:
    """SuperPoint + SuperGlue in eval mode on one device, with live detection / matching settings.

    device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
    resize: None (images as given) or (width, height) every image is resized to (INTER_AREA) before
    SuperPoint; keypoints are in pixels of the processed image, Features.keypoints_original() maps
    them back.
    precision, attention, channels_last: speed options, see the module doc.
    """
    MODEL_SETTINGS = ('max_keypoints', 'keypoint_threshold', 'nms_radius', 'match_threshold', 'sinkhorn_iterations')

    def __init__(self, superpoint: SuperPoint, superglue: SuperGlue, device='auto', resize=None,
                 precision: str = 'fp32', attention: str = 'einsum', channels_last: bool = False):
        if not isinstance(superpoint, SuperPoint) or not isinstance(superglue, SuperGlue):
            raise TypeError(f'Matcher(superpoint, superglue) takes a models.SuperPoint and a models.SuperGlue, '
                            f'got {type(superpoint).__name__} and {type(superglue).__name__}')
        if superpoint.config['descriptor_dim'] != superglue.config['descriptor_dim']:
            raise ValueError(f'SuperPoint descriptors ({superpoint.config["descriptor_dim"]}) do not fit SuperGlue '
                             f'({superglue.config["descriptor_dim"]}): use weights made for each other')
        check_speed_options(precision, attention)
        self.device = resolve_device(device)
        self.resize = check_resize(resize)
        self.precision = precision
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.superpoint = superpoint.eval().to(self.device, memory_format=memory_format)
        self.superglue = superglue.eval().to(self.device)
        self.superglue.set_attention(attention)
        self._models = {'superpoint': self.superpoint, 'superglue': self.superglue}

    @classmethod
    def from_weights(cls, superpoint_weights, superglue_weights, device='auto', resize=None, precision='fp32',
                     attention='einsum', channels_last=False, **settings) -> 'Matcher':
        """Matcher from weights specs (see weights.py: file, Hugging Face directory or preset).
        superpoint_weights None: SuperPoint from a Hugging Face SuperGlue checkpoint, or the
        'superpoint' preset when superglue_weights is a preset. settings: MODEL_SETTINGS."""
        settings = check_settings(settings)  # before the slow part: bad values fail at once
        device, resize = resolve_device(device), check_resize(resize)
        check_speed_options(precision, attention)
        superpoint = load_superpoint(superpoint_weights, superglue_spec=superglue_weights)
        matcher = cls(superpoint, load_superglue(superglue_weights), device, resize, precision, attention,
                      channels_last)
        matcher.configure(**settings)
        return matcher

    @property
    def settings(self) -> dict:
        """Current MODEL_SETTINGS values."""
        return {name: self._models[SETTINGS[name][0]].config[name] for name in self.MODEL_SETTINGS}

    def configure(self, **settings):
        """Change MODEL_SETTINGS now, without reloading weights; all or nothing (ValueError with the reason).
        Extracted Features and their cached encodings stay valid (see the module doc)."""
        for name, value in check_settings(settings).items():
            self._models[SETTINGS[name][0]].config[name] = value

    def autocast(self):
        """Context that runs the models in the matcher's precision (does nothing for 'fp32')."""
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _now(self) -> float:
        if self.device.type == 'cuda':  # stage timings need the queued kernels finished
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def extract(self, image: np.ndarray, color_order: str = 'bgr') -> Features:
        """SuperPoint on one image (grey or colour numpy array, see image.py); ImageError if unusable."""
        return self.extract_batch([image], color_order)[0]

    @torch.inference_mode()
    def extract_batch(self, images, color_order: str = 'bgr') -> list[Features]:
        """SuperPoint on images of one size (after resize) in one forward pass; same result as extract() each."""
        start = self._now()
        prepared = [prepare_image(image, self.resize, color_order) for image in images]
        if not prepared:
            return []
        sizes = sorted({grey.shape[::-1] for grey, _ in prepared})
        if len(sizes) > 1:
            raise ValueError(f'extract_batch needs images of one size, got (width, height) {sizes}: '
                             f'give a resize or use extract() per image')
        batch = torch.from_numpy(np.stack([grey for grey, _ in prepared]))[:, None].to(self.device)  # [B, 1, H, W]
        preprocessed = self._now()
        with self.autocast():
            pred = self.superpoint(batch)
        end = self._now()
        timings = {'preprocess': (preprocessed - start) * 1e3, 'superpoint': (end - preprocessed) * 1e3}
        width, height = sizes[0]
        return [Features(keypoints, scores, descriptors, (width, height), scale, timings_ms=dict(timings))
                for keypoints, scores, descriptors, (_, scale)
                in zip(pred['keypoints'], pred['scores'], pred['descriptors'], prepared)]

    def _encoded(self, features: Features) -> Tensor:
        """features.encoded, computed on first use: [1, D, N]."""
        if features.encoded is None:
            if features.descriptors.device != self.device:
                raise ValueError(f'features extracted on {features.descriptors.device} cannot be matched on '
                                 f'{self.device}: extract them with this matcher')
            features.encoded = self.superglue.encode(features.keypoints[None], features.scores[None],
                                                     features.descriptors[None], features.image_size)
        return features.encoded

    @torch.inference_mode()
    def match(self, features0: Features, features1: Features) -> MatchResult:
        """SuperGlue between two extracted images; encodes each one only on its first match."""
        start = self._now()
        with self.autocast():
            encoded0, encoded1 = self._encoded(features0), self._encoded(features1)
        encoded = self._now()
        with self.autocast():
            pred = self.superglue.match(encoded0, encoded1)
        matches0 = pred['matches0'][0].cpu().numpy()
        scores0 = pred['matching_scores0'][0].float().cpu().numpy()
        end = time.perf_counter()  # .cpu() waited for the device
        return MatchResult(matches0, scores0, {'superglue_encode': (encoded - start) * 1e3,
                                               'superglue_match': (end - encoded) * 1e3})
