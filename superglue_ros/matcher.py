"""Matcher: SuperPoint + SuperGlue on one device, the extraction and matching code of every path.

    matcher = Matcher.from_weights('superpoint', 'indoor', max_keypoints=1024)
    features0 = matcher.extract(image0)            # Features, tensors on the matcher's device
    features1 = matcher.extract(image1)
    result = matcher.match(features0, features1)   # MatchResult, numpy
    idx0, idx1, confidence = result.pairs()

Two layers:
  the stages    upload() (host), detect() (grey conversion on the device + SuperPoint) and
                superglue_match() (SuperGlue, cached encodings), which enqueue work on the current
                CUDA stream and return device tensors. pipeline.CameraPipeline runs them on a
                camera's own streams; extract() and match() run them on the current stream.
  the calls     extract(), extract_batch(), match(): synchronous, numpy results, the stable API
                (docs/ARCHITECTURE.md) for the CLI, the match service and other tools.

Caching: a Features object keeps its SuperGlue encoding (SuperGlue.encode: keypoint encoding and
the first 'self' layer) from its first match; a keyframe is encoded once. The encoding depends only
on the SuperGlue weights and that image's features, so configure() never makes it stale.
Features belong to the matcher that extracted them (its weights and device).

Timing: stage times come from StageClock marks, CUDA events on a GPU, read only once the host has
the results; nothing here synchronises the device.

Resources: running out of host or GPU memory raises ResourceError (what ran out, what to lower),
and SuperGlue refuses a pair whose estimated memory exceeds max_matching_memory_mb before it starts.
"""
import gc
import importlib.util
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

from .image import Upload, grey_tensor, to_original, to_upload
from .models import SuperGlue, SuperPoint
from .precision import check_precision
from .runtime import OnnxRuntimeBackend, RuntimeUnavailable, import_onnxruntime
from .settings import check, check_all, defaults, names, resize_of
from .static_shapes import StaticSuperGlue
from .weights import load_superglue, load_superpoint


class ResourceError(RuntimeError):
    """Out of host or GPU memory, or a SuperGlue pair over max_matching_memory_mb; the message says
    what ran out and what to lower. Nothing is left half-done: the next frame or request works."""


def is_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, MemoryError, a CPU allocator failure (a RuntimeError of c10's
    DefaultCPUAllocator), OpenCV's (cv2.error with code StsNoMem, e.g. from cv2.resize) or onnxruntime's
    ('Failed to allocate memory' of its arena allocator: its own exception types from run(), a plain
    RuntimeError 'Error in execution: ...' from run_with_iobinding, which the backend calls)."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(error, cv2.error):
        return error.code == cv2.Error.StsNoMem
    if type(error).__module__.startswith('onnxruntime'):
        return 'Failed to allocate memory' in str(error)
    return isinstance(error, RuntimeError) and any(
        text in str(error) for text in ("can't allocate memory", 'DefaultCPUAllocator', 'out of memory',
                                        'Failed to allocate memory'))


@contextmanager
def memory_guard(device: torch.device, doing: str, lower: str):
    """Turns running out of memory inside the block into a ResourceError saying what ran out, while
    `doing` what, and what to `lower`; on a GPU, frees the allocator's cached blocks so that the next
    frame starts clean."""
    try:
        yield
    except Exception as error:
        if isinstance(error, ResourceError) or not is_out_of_memory(error):
            raise
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        raise ResourceError(f'out of {"GPU" if device.type == "cuda" else "host"} memory while {doing} on '
                            f'{device}: lower {lower}') from None


def release_device_memory(device: torch.device):
    """Gives what torch's caching allocator holds on `device` back to the driver, once nothing refers to the
    models and tensors there any more (the node's lifecycle cleanup); reference cycles are collected first.
    On the CPU freed tensors go back at once: nothing more to do."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def matching_memory_bytes(n: int, m: int, num_heads: int) -> int:
    """Estimated peak memory of SuperGlue on N and M keypoints, in bytes: the larger of one attention
    layer's logits and probabilities (num_heads x N x M, and N x N / M x M for the self layers, float32)
    and Sinkhorn with its temporaries (about 24 bytes per (N + 1) x (M + 1) entry: the float32 couplings,
    the float64 kernel and the float64 result, models/superglue.py)."""
    attention = 4 * 2 * num_heads * max(n * m, n * n, m * m)
    sinkhorn = 24 * (n + 1) * (m + 1)
    return max(attention, sinkhorn)


class StageClock:
    """Stage boundaries of one frame on a stream: CUDA events on a GPU, the host clock on the CPU
    (where enqueued work is already done). ms() waits for the later mark only (event, not device)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'
        self.marks = {}

    def mark(self, name: str, stream=None):
        """Record `name` on `stream` (default: the current stream)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(stream)
            self.marks[name] = event
        else:
            self.marks[name] = time.perf_counter()

    def ms(self, start: str, end: str) -> float:
        """Milliseconds from mark `start` to mark `end`."""
        if self.cuda:
            self.marks[end].synchronize()
            return self.marks[start].elapsed_time(self.marks[end])
        return (self.marks[end] - self.marks[start]) * 1e3

    def wait(self, name: str, stream):
        """Work enqueued on `stream` after this starts once mark `name` is reached (GPU only)."""
        if self.cuda:
            stream.wait_event(self.marks[name])


@dataclass
class Features:
    """One image's SuperPoint output, on the matcher's device."""
    keypoints: Tensor                 # [N, 2] (x, y) pixels of the processed image, float32
    scores: Tensor                    # [N]
    descriptors: Tensor               # [D, N], L2-normalised
    image_size: tuple[int, int]       # (width, height) of the processed image
    scale: tuple[float, float]        # (sx, sy) processed -> given image, see image.to_original
    encoded: Tensor | None = None     # SuperGlue.encode() output [1, D, N], filled on first match, then reused
    timings_ms: dict = field(default_factory=dict)  # 'preprocess', 'superpoint' (of extract / extract_batch)
    keypoints_host: np.ndarray | None = None  # [N, 2] float32 copy of keypoints (filled once, by whoever has it)

    def keypoints_original(self) -> np.ndarray:
        """[N, 2] float32 keypoints in pixels of the image as given (image.to_original)."""
        if self.keypoints_host is None:
            self.keypoints_host = self.keypoints.cpu().numpy()
        return to_original(self.keypoints_host, self.scale)


@dataclass
class MatchResult:
    matches0: np.ndarray              # [N0] int64 index into features1 keypoints, -1 = unmatched
    matching_scores0: np.ndarray      # [N0] float32
    timings_ms: dict[str, float]      # 'superglue' (encodings not cached yet, GNN, Sinkhorn)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The matches as idx0 [K], idx1 [K] (int64) and confidence [K] (float32)."""
        idx0 = np.flatnonzero(self.matches0 > -1)
        return idx0, self.matches0[idx0], self.matching_scores0[idx0]


def resolve_backend(backend: str, device: torch.device, precision: str, static_shapes: bool = False) -> str:
    """The backend setting, checked, with 'auto' resolved (backend_choice). ValueError for a combination it
    does not run."""
    return backend_choice(backend, device, precision, static_shapes)[0]


def backend_choice(backend: str, device: torch.device, precision: str, static_shapes: bool = False) -> tuple[str, str]:
    """(backend, why): the backend setting, checked, with 'auto' resolved: 'onnxruntime' on a CPU in fp32,
    without static_shapes, when onnxruntime is installed and imports (it passes the torch backend's fidelity
    gate and ran a frame in 0.79x of torch's time, the node at 1.56x / 2.06x the frame rate with
    config/indoor.yaml / cpu.yaml on the 2-core development CPU, 2026-12-03, docs/BENCHMARKS.md); 'torch'
    everywhere else (GPUs: onnxruntime unmeasured there), also where onnxruntime is installed but does not
    import (a broken install): auto falls back, it never fails. why: for 'auto', the reason in a few words
    (the node's start-up line), else ''. ValueError for a combination it does not run."""
    backend, why = check('backend', backend), ''
    if backend == 'auto':
        if device.type != 'cpu':
            backend, why = 'torch', f'on {device.type}, where onnxruntime is unmeasured'
        elif precision != 'fp32':
            backend, why = 'torch', f'precision {precision}: onnxruntime runs fp32 only'
        elif static_shapes:
            backend, why = 'torch', "static_shapes on a CPU (backend 'onnxruntime' runs the static export)"
        elif importlib.util.find_spec('onnxruntime') is None:
            backend, why = 'torch', 'onnxruntime is not installed'
        else:
            try:
                import_onnxruntime()
                backend, why = 'onnxruntime', 'on a CPU in fp32, onnxruntime installed'
            except RuntimeUnavailable as e:
                backend, why = 'torch', f'onnxruntime is installed but does not import ({e.cause})'
    if backend == 'onnxruntime' and precision != 'fp32':
        raise ValueError(f"backend 'onnxruntime' runs fp32 only (the exported graphs), got precision {precision!r}: "
                         "use precision 'fp32', or backend 'torch' for half precision")
    return backend, why


def check_static_shapes(static_shapes: bool, backend: str, max_keypoints: int, resize) -> bool:
    """The static_shapes setting, checked against the others; ValueError saying what it needs."""
    static_shapes = check('static_shapes', static_shapes)
    if static_shapes and max_keypoints == -1:
        raise ValueError('static_shapes pads every image to max_keypoints, which is -1 (all keypoints): set '
                         'max_keypoints (1024 in the presets), or static_shapes false')
    if static_shapes and backend == 'onnxruntime' and resize_of(resize) is None:
        raise ValueError("static_shapes with backend 'onnxruntime' runs the static export, made for one image size: "
                         'set resize [width, height], or static_shapes false')
    return static_shapes


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu', 'cuda', 'cuda:N' as given, if usable.
    ValueError saying what to use otherwise."""
    device = check('device', str(device))
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    resolved = torch.device(device)
    if resolved.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'no'}): use device 'cpu' or 'auto'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f'device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)')
    return resolved


class Matcher:
    """SuperPoint + SuperGlue in eval mode on one device, with live detection / matching settings.

    device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
    resize: None (images as given) or (width, height) every image is resized to (INTER_AREA) before
    SuperPoint; keypoints are in pixels of the processed image, Features.keypoints_original() maps
    them back. precision: 'fp32' (the original computation), 'bf16' or 'fp16' (settings.py).
    backend: 'torch', 'onnxruntime' (runtime.py: the exported networks in ONNX Runtime, fp32 only;
    `log` takes its one line when it exports them, the first time for these weights and settings) or
    'auto' (backend_choice: onnxruntime on a CPU where it is installed, else torch); self.backend is
    the one that runs, self.backend_why why 'auto' chose it ('' for another setting).
    static_shapes: SuperGlue on every image padded to max_keypoints, with padding masks (the same
    matches): with backend torch, replayed from a CUDA graph per camera stream on a GPU
    (static_shapes.py); with backend onnxruntime, the static export (one shape: no TensorRT engine
    rebuild), which needs a resize and takes at most the max_keypoints it was made for.
    Settings (defaults and accepted values: settings.py) change live with configure().
    """
    MODEL_SETTINGS = names('superpoint') + names('superglue') + ('max_matching_memory_mb',)

    def __init__(self, superpoint: SuperPoint, superglue: SuperGlue, device='auto', resize=None,
                 precision: str = 'fp32', backend: str = 'torch', log=None, static_shapes: bool = False):
        if not isinstance(superpoint, SuperPoint) or not isinstance(superglue, SuperGlue):
            raise TypeError(f'Matcher(superpoint, superglue) takes a models.SuperPoint and a models.SuperGlue, '
                            f'got {type(superpoint).__name__} and {type(superglue).__name__}')
        if superpoint.config['descriptor_dim'] != superglue.config['descriptor_dim']:
            raise ValueError(f'SuperPoint descriptors ({superpoint.config["descriptor_dim"]}) do not fit SuperGlue '
                             f'({superglue.config["descriptor_dim"]}): use weights made for each other')
        self.device = resolve_device(device)
        self.resize = resize_of(resize)
        self.precision = check('precision', precision)
        self.backend, self.backend_why = backend_choice(backend, self.device, self.precision, static_shapes)
        self.superpoint = superpoint.eval().to(self.device)
        self.superglue = superglue.eval().to(self.device)
        for model in (self.superpoint, self.superglue):
            model.set_precision(self.precision)  # ValueError where the device has no fast kernels for it
        self.max_matching_memory_mb = defaults('matcher')['max_matching_memory_mb']
        self.static_shapes = check_static_shapes(static_shapes, self.backend, superpoint.config['max_keypoints'],
                                                 self.resize)
        static = (superpoint.config['max_keypoints'], self.resize) if self.static_shapes else None
        self.runtime = None if self.backend == 'torch' else OnnxRuntimeBackend(
            self.superpoint, self.superglue, self.device, log, static=static, image_size=self.resize)
        self.static_superglue = (StaticSuperGlue(self.superglue, self.device)
                                 if self.static_shapes and self.runtime is None else None)

    @classmethod
    def from_weights(cls, superpoint_weights, superglue_weights, device='auto', resize=None, precision='fp32',
                     backend='torch', log=None, static_shapes=False, **settings) -> 'Matcher':
        """Matcher from weights specs (weights.py: preset, hub id, file or Hugging Face directory).
        superpoint_weights None or '': SuperPoint from superglue_weights (weights.load_superpoint).
        settings: MODEL_SETTINGS. ValueError / WeightsError before anything slow when a value is bad."""
        check_all(settings)  # before the slow part: bad values fail at once
        device, precision = resolve_device(device), check('precision', precision)
        check_precision(precision, device)
        resize = resize_of(resize)
        check_static_shapes(static_shapes, resolve_backend(backend, device, precision, static_shapes),
                            settings.get('max_keypoints', defaults('superpoint')['max_keypoints']), resize)
        superpoint = load_superpoint(superpoint_weights or None, superglue_spec=superglue_weights)
        superglue = load_superglue(superglue_weights, {name: settings[name] for name in names('superglue')
                                                       if name in settings})  # settings baked into an export
        if 'max_keypoints' in settings:  # the static count, read by the constructor
            superpoint.config = {**superpoint.config, 'max_keypoints': settings['max_keypoints']}
        matcher = cls(superpoint, superglue, device, resize, precision, backend, log, static_shapes)
        matcher.configure(**settings)
        return matcher

    @property
    def settings(self) -> dict:
        """Current MODEL_SETTINGS values."""
        config = {**self.superpoint.config, **self.superglue.config,
                  'max_matching_memory_mb': self.max_matching_memory_mb}
        return {name: config[name] for name in self.MODEL_SETTINGS}

    def check_settings(self, **settings) -> dict:
        """The MODEL_SETTINGS values configure() would apply, checked: settings.check_all, and what
        static_shapes needs (max_keypoints >= 1; with onnxruntime, at most the static export's count).
        ValueError naming the bad values; the node's on-set parameters step calls this too."""
        unknown = sorted(set(settings) - set(self.MODEL_SETTINGS))
        if unknown:
            raise ValueError(f'unknown setting(s) {unknown}; Matcher.configure takes {", ".join(self.MODEL_SETTINGS)}')
        settings = check_all(settings)
        if self.static_shapes and 'max_keypoints' in settings:
            count = settings['max_keypoints']
            if count == -1:
                raise ValueError('max_keypoints must stay >= 1 with static_shapes (every image is padded to it); got -1')
            if self.runtime is not None and count > self.runtime.static[0]:
                raise ValueError(f'max_keypoints must be at most {self.runtime.static[0]} with static_shapes and backend '
                                 f"'onnxruntime' (the static export's count); got {count}: restart the node to "
                                 'export for more')
        return settings

    def configure(self, **settings):
        """Change MODEL_SETTINGS now, without reloading weights; all or nothing (ValueError naming
        every bad value: check_settings). Each model's config is replaced as a whole, so a forward
        running in another thread reads either the old or the new settings. Extracted Features and
        their cached encodings stay valid."""
        settings = self.check_settings(**settings)
        for model, scope in ((self.superpoint, 'superpoint'), (self.superglue, 'superglue')):
            changed = {name: value for name, value in settings.items() if name in names(scope)}
            if changed:
                model.config = {**model.config, **changed}
        self.max_matching_memory_mb = settings.get('max_matching_memory_mb', self.max_matching_memory_mb)

    # -- the stages: enqueue on the current stream, device tensors out ---------------------------

    def upload(self, image: np.ndarray, color_order: str = 'bgr') -> Upload:
        """Host half of the image path (image.to_upload with this matcher's resize). ImageError,
        ResourceError when host memory runs out (resizing)."""
        with memory_guard(torch.device('cpu'), f'preparing a {image.shape[1]}x{image.shape[0]} image'
                          + (f' at {self.resize[0]}x{self.resize[1]}' if self.resize else ''),
                          'the image size (resize: [width, height])'):
            return to_upload(image, self.resize, color_order)

    @torch.inference_mode()
    def detect(self, images: Tensor, uploads: list[Upload], masks: Tensor | None = None) -> list[Features]:
        """SuperPoint on uploaded images: images [B, h, w, C] (the uploads' channels_last arrays
        stacked, on this device) -> one Features per image. masks: None, or [B, h, w] bool on this
        device, False where no keypoint may be (image.mask_at). Enqueued on the current stream; the
        keypoint selection waits for this stream's SuperPoint scores (not for the device)."""
        width, height = uploads[0].processed_size
        with memory_guard(self.device, f'detecting keypoints in {width}x{height} images',
                          'the image size (resize: [width, height])'):
            grey = grey_tensor(images, uploads[0].color_order)[:, None]  # [B, 1, h, w] float32
            if self.runtime is None:
                pred = self.superpoint(grey, masks)
            else:  # the same keypoint selection as the torch model, on onnxruntime's dense maps
                pred = self.superpoint.keypoints_from_maps(*self.runtime.superpoint_maps(grey), masks)
        return [Features(keypoints, scores, descriptors, upload.processed_size, upload.scale)
                for keypoints, scores, descriptors, upload
                in zip(pred['keypoints'], pred['scores'], pred['descriptors'], uploads)]

    def encoded(self, features: Features, count: int | None = None) -> Tensor:
        """features.encoded, computed on first use: [1, D, N]; with static_shapes [1, D, K], K = count
        (default: max_keypoints, or N if larger), encoded again when the cached one has another K."""
        if self.static_superglue is not None:
            count = count or max(self.superpoint.config['max_keypoints'], len(features.scores))
            if features.encoded is not None and features.encoded.shape[2] != count:
                features.encoded = None
        if features.encoded is None:
            if features.descriptors.device != self.device:
                raise ValueError(f'features extracted on {features.descriptors.device} cannot be matched on '
                                 f'{self.device}: extract them with this matcher')
            data = features.keypoints[None], features.scores[None], features.descriptors[None], features.image_size
            if self.static_superglue is not None:
                features.encoded = self.static_superglue.encode(*data, count)
            else:
                features.encoded = (self.superglue.encode if self.runtime is None else self.runtime.encode)(*data)
        return features.encoded

    def check_matching_memory(self, n: int, m: int):
        """ResourceError when SuperGlue on n x m keypoints would exceed max_matching_memory_mb."""
        estimate = matching_memory_bytes(n, m, self.superglue.config['num_heads'])
        if estimate > self.max_matching_memory_mb * 2 ** 20:
            raise ResourceError(
                f'SuperGlue on {n} x {m} keypoints would need about {estimate / 2 ** 20:.0f} MiB, over '
                f'max_matching_memory_mb = {self.max_matching_memory_mb}: lower max_keypoints (or set a resize), '
                f'or raise max_matching_memory_mb if the memory is there')

    @torch.inference_mode()
    def superglue_match(self, features0: Features, features1: Features) -> dict:
        """SuperGlue of two extracted images, encoding each on its first match; enqueued on the current
        stream. Returns SuperGlue.match's device tensors (batch of one). ResourceError (module doc)."""
        self.check_matching_memory(len(features0.scores), len(features1.scores))
        n, m = len(features0.scores), len(features1.scores)
        with memory_guard(self.device, f'matching {n} x {m} keypoints',
                          'max_keypoints (or max_matching_memory_mb, which refuses such pairs before they run)'):
            if self.static_superglue is not None:
                if not (n and m):  # nothing to match: SuperGlue.match's result for an empty side
                    return self.superglue.matches_from_scores(torch.zeros((1, n, m), device=self.device))
                # both sides at one count: max_keypoints, or more for a keyframe detected before it was lowered
                count = max(self.superpoint.config['max_keypoints'], n, m)
                return self.static_superglue.match(self.encoded(features0, count), n, self.encoded(features1, count), m)
            if self.runtime is None:
                return self.superglue.match(self.encoded(features0), self.encoded(features1))
            # Sinkhorn and the mutual check of the torch model, on onnxruntime's score matrix
            scores = self.runtime.score_matrix(self.encoded(features0), self.encoded(features1), n, m)
            return self.superglue.matches_from_scores(scores)

    # -- the calls: synchronous, numpy out --------------------------------------------------------

    def extract(self, image: np.ndarray, color_order: str = 'bgr') -> Features:
        """SuperPoint on one image (grey or colour numpy array, see image.py); ImageError if unusable,
        ResourceError when memory runs out."""
        return self.extract_batch([image], color_order)[0]

    def extract_batch(self, images, color_order: str = 'bgr') -> list[Features]:
        """SuperPoint on images of one size (after resize) in one forward pass; same result as
        extract() each. timings_ms: 'preprocess' (host), 'superpoint' (device), of the whole batch."""
        clock = StageClock(self.device)
        clock.mark('start')
        uploads = [self.upload(image, color_order) for image in images]
        if not uploads:
            return []
        kinds = sorted({(u.array.shape, str(u.array.dtype)) for u in uploads})
        if len(kinds) > 1:
            raise ValueError(f'extract_batch needs images of one size and type, got (shape, dtype) {kinds}: '
                             f'give a resize or use extract() per image')
        clock.mark('uploaded')
        batch = torch.from_numpy(np.stack([u.channels_last for u in uploads])).to(self.device)
        features = self.detect(batch, uploads)
        clock.mark('extracted')
        for f in features:
            f.keypoints_host = f.keypoints.cpu().numpy()
        timings = {'preprocess': clock.ms('start', 'uploaded'), 'superpoint': clock.ms('uploaded', 'extracted')}
        for f in features:
            f.timings_ms = dict(timings)
        return features

    def match(self, features0: Features, features1: Features) -> MatchResult:
        """SuperGlue between two extracted images; encodes each one only on its first match.
        ResourceError when the pair is over max_matching_memory_mb or memory runs out."""
        clock = StageClock(self.device)
        clock.mark('start')
        pred = self.superglue_match(features0, features1)
        clock.mark('matched')
        matches0 = pred['matches0'][0].cpu().numpy()
        scores0 = pred['matching_scores0'][0].float().cpu().numpy()
        return MatchResult(matches0, scores0, {'superglue': clock.ms('start', 'matched')})
