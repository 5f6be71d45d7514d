"""The onnxruntime backend of Matcher (setting backend: 'onnxruntime').

Matcher keeps its API: with this backend, Matcher.detect runs superpoint.onnx for the dense maps and
then SuperPoint.keypoints_from_maps in torch; Matcher.encoded runs superglue_encode.onnx; Matcher
.superglue_match runs superglue_scores.onnx and then SuperGlue.matches_from_scores in torch (Sinkhorn,
mutual check). The files come from export.cached_export: exported once per weights and settings.

Tensors go in and out through IO binding: onnxruntime reads the torch tensors' memory and writes into
torch tensors made here, with no copy through numpy, on the CPU and on CUDA alike.

  CPU    CPUExecutionProvider; intra-op threads = torch.get_num_threads(), so both backends use the
         cores the same way. One set of sessions (onnxruntime's run() may be called from several threads).
  CUDA   (written, not verified: no GPU nor onnxruntime-gpu on the development machine.) Each CUDA stream
         gets its own sessions, made on its first use, with onnxruntime's `user_compute_stream` set to
         that stream: a camera's CameraPipeline enqueues onnxruntime's kernels on its own streams, ordered
         with the torch work around them, as the torch backend does; runs do not wait for the device
         (run option disable_synchronize_execution_providers, with IO binding and that stream).
         TensorrtExecutionProvider first when onnxruntime has it (fp32; shape profiles over the keypoint
         axes up to MAX_PROFILE_KEYPOINTS, so no engine is rebuilt while frames flow; engines cached beside
         the exported files, in a directory named by the onnxruntime version and the GPU, as engines do not
         carry across TensorRT versions or devices), then CUDAExecutionProvider.

Errors (one line each): RuntimeUnavailable when onnxruntime is not installed, lacks the provider the
device needs or cannot load an exported file; export.ExportError when the export fails (Matcher refuses
a precision other than fp32 with a ValueError).
"""
import threading

import numpy as np
import torch
from torch import Tensor

from .export import cached_export
from .models import SuperGlue, SuperPoint
from .static_shapes import padded, padding_mask

MAX_PROFILE_KEYPOINTS = 4096  # TensorRT shape profiles: keypoints per image (beyond: TensorRT builds another engine)
ELEMENT_TYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.bool: np.bool_}


class RuntimeUnavailable(RuntimeError):
    """The onnxruntime backend cannot run here; the message says why and what to do. cause: the
    underlying problem in a few words, without the advice."""

    def __init__(self, message: str, cause: str = ''):
        super().__init__(message)
        self.cause = cause or message


def import_onnxruntime():
    """The onnxruntime module, or RuntimeUnavailable saying how to install it; its cause says what the
    import said (also a broken install's error: a missing shared library, an ABI mismatch, ...)."""
    try:
        import onnxruntime
    except Exception as e:
        first = (str(e).strip().splitlines() or [''])[0]
        cause = f'{type(e).__name__}: {first}'
        if isinstance(e, ImportError):
            raise RuntimeUnavailable("backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime "
                                     "(onnxruntime-gpu for CUDA), or use backend 'torch'", cause) from None
        raise RuntimeUnavailable(f"backend 'onnxruntime': onnxruntime does not import ({cause}): reinstall it, or "
                                 "use backend 'torch'", cause) from None
    return onnxruntime


def providers_for(device: torch.device, available: list[str]) -> list[str]:
    """The execution providers for `device`, best first. RuntimeUnavailable when onnxruntime lacks them."""
    if device.type == 'cpu':
        return ['CPUExecutionProvider']
    if 'CUDAExecutionProvider' not in available:
        raise RuntimeUnavailable(f"backend 'onnxruntime' on {device} needs onnxruntime's CUDAExecutionProvider, but "
                                 f'this onnxruntime has only {", ".join(available)}: pip install onnxruntime-gpu, or '
                                 "use device 'cpu' or backend 'torch'")
    return [p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider') if p in available]


def tensorrt_profiles(name: str, dim: int, image_size: tuple[int, int] | None, static: tuple | None) -> dict:
    """TensorRT provider options with the shape profiles of exported file `name`: the keypoint axes (1 to
    MAX_PROFILE_KEYPOINTS, 1024 the optimum, the presets' max_keypoints) and SuperPoint's image (image_size
    (width, height), one image; unknown without a resize: left to TensorRT, which builds an engine for the
    first size it sees). {} for a static export: its shapes are fixed, one engine each."""
    if static is not None:
        return {}
    shapes = {}
    if name == 'superpoint.onnx' and image_size is not None:
        shapes = {k: f'image:1x1x{image_size[1]}x{image_size[0]}' for k in range(3)}
    elif name == 'superglue_encode.onnx':
        shapes = {k: f'keypoints:1x{k}x2,scores:1x{k},descriptors:1x{dim}x{k}' for k in (1, 1024, MAX_PROFILE_KEYPOINTS)}
    elif name == 'superglue_scores.onnx':
        shapes = {k: f'encoded0:1x{dim}x{k},encoded1:1x{dim}x{k}' for k in (1, 1024, MAX_PROFILE_KEYPOINTS)}
    if not shapes:
        return {}
    low, opt, high = shapes.values()
    return {'trt_profile_min_shapes': low, 'trt_profile_opt_shapes': opt, 'trt_profile_max_shapes': high}


class OnnxRuntimeBackend:
    """Sessions of the exported files for one Matcher (its models on its device). Methods take and return
    torch tensors on the Matcher's device, as the torch models' methods they stand for do."""

    def __init__(self, superpoint: SuperPoint, superglue: SuperGlue, device: torch.device, log=None,
                 static: tuple | None = None, image_size: tuple[int, int] | None = None):
        """static: None (dynamic shapes, what Matcher runs), or (max_keypoints K, (width, height)): the
        static export, each side padded to K keypoints with a mask (export.py), images of that size.
        image_size: (width, height) of every image when known (Matcher's resize): SuperPoint's TensorRT
        shape profile."""
        ort = import_onnxruntime()
        self.device = device
        self.index = device.index if device.index is not None else (
            torch.cuda.current_device() if device.type == 'cuda' else 0)
        self.static = static
        self.image_size = image_size
        self.providers = providers_for(device, ort.get_available_providers())
        self.directory = cached_export(superpoint, superglue, log, static)
        self.dim = superglue.config['descriptor_dim']
        self._ort = ort
        self._sessions = {}  # CUDA stream handle (None on the CPU) -> {file name: InferenceSession}
        self._lock = threading.Lock()
        self._run_options = ort.RunOptions()
        if device.type == 'cuda':  # no host wait at the end of a run: the camera's stream orders what follows
            self._run_options.add_run_config_entry('disable_synchronize_execution_providers', '1')
        self.sessions()  # load now: a file onnxruntime refuses fails at start-up, not at the first frame

    def sessions(self) -> dict:
        """The sessions of the current CUDA stream (of the CPU)."""
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == 'cuda' else None
        with self._lock:
            if stream not in self._sessions:
                self._sessions[stream] = {name: self._load(name, stream) for name in
                                          ('superpoint.onnx', 'superglue_encode.onnx', 'superglue_scores.onnx')}
            return self._sessions[stream]

    def _load(self, name: str, stream: int | None):
        """_session, or RuntimeUnavailable naming the file and what to do when onnxruntime refuses it."""
        try:
            return self._session(name, stream)
        except Exception as e:  # onnxruntime's own exception types (Fail, InvalidProtobuf, ...)
            first = (str(e).strip().splitlines() or [''])[0]
            raise RuntimeUnavailable(f'onnxruntime {self._ort.__version__} cannot load {self.directory / name} '
                                     f'({type(e).__name__}: {first}): delete {self.directory} to export again, or '
                                     "use backend 'torch'") from None

    def _session(self, name: str, stream: int | None):
        ort = self._ort
        options = ort.SessionOptions()
        # fatal only: its warnings about unused initialisers are noise here, and an error of a run (out of memory)
        # comes back as the exception, which the caller turns into its one line
        options.log_severity_level = 4
        if self.device.type == 'cpu':
            options.intra_op_num_threads = torch.get_num_threads()
            # no busy-waiting after a run: spinning threads took the cores from the torch work in between
            # (keypoint selection, Sinkhorn): a frame took 0.75x of torch's time without, 0.81x with
            # (2026-12-03, one alternating run, docs/BENCHMARKS.md)
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
            return ort.InferenceSession(str(self.directory / name), options, providers=self.providers)
        index = self.index
        cuda = {'device_id': index, 'user_compute_stream': str(stream)}
        provider_options = []
        for provider in self.providers:
            if provider == 'TensorrtExecutionProvider':
                engines = self.directory / f'tensorrt-ort{ort.__version__}-{torch.cuda.get_device_name(index)}'
                engines.mkdir(exist_ok=True)
                provider_options.append({**cuda, 'trt_fp16_enable': False, 'trt_engine_cache_enable': True,
                                         'trt_engine_cache_path': str(engines), **tensorrt_profiles(name, self.dim, self.image_size, self.static)})
            else:
                provider_options.append(cuda)
        return ort.InferenceSession(str(self.directory / name), options, providers=self.providers,
                                    provider_options=provider_options)

    def run(self, name: str, inputs: dict[str, Tensor], outputs: dict[str, tuple]) -> list[Tensor]:
        """Run file `name` of the current stream's sessions: inputs {name: tensor}, outputs {name: shape}
        (float32) -> the output tensors, on this device, written by onnxruntime through IO binding."""
        session = self.sessions()[name]
        binding = session.io_binding()
        kind, index = self.device.type, self.index
        inputs = {k: v.contiguous() for k, v in inputs.items()}  # kept alive until run returns
        for key, tensor in inputs.items():
            binding.bind_input(key, kind, index, ELEMENT_TYPES[tensor.dtype], tuple(tensor.shape), tensor.data_ptr())
        results = [torch.empty(shape, dtype=torch.float32, device=self.device) for shape in outputs.values()]
        for key, tensor in zip(outputs, results):
            binding.bind_output(key, kind, index, np.float32, tuple(tensor.shape), tensor.data_ptr())
        session.run_with_iobinding(binding, self._run_options)
        return results

    def superpoint_maps(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """image [B, 1, H, W] float32 -> dense scores before NMS [B, H', W'], descriptor map [B, D, H' / 8,
        W' / 8] (SuperPoint.dense_scores, .descriptor_map)."""
        b, _, h, w = image.shape
        shapes = {'scores': (1, h // 8 * 8, w // 8 * 8), 'descriptors': (1, self.dim, h // 8, w // 8)}
        if self.static is None:
            return tuple(self.run('superpoint.onnx', {'image': image.float()},
                                  {name: (b, *shape[1:]) for name, shape in shapes.items()}))
        if (w, h) != self.static[1]:
            raise ValueError(f'the static ONNX export takes {self.static[1][0]}x{self.static[1][1]} images, got {w}x{h}')
        maps = [self.run('superpoint.onnx', {'image': image[i:i + 1].float()}, shapes) for i in range(b)]
        return tuple(torch.cat(parts) for parts in zip(*maps))

    def encode(self, keypoints: Tensor, scores: Tensor, descriptors: Tensor, image_size: tuple[int, int]) -> Tensor:
        """SuperGlue.encode: keypoints [1, N, 2], scores [1, N], descriptors [1, D, N] -> [1, D, N]."""
        n = scores.shape[1]
        if n == 0:  # as SuperGlue.encode
            return descriptors
        size = torch.tensor(image_size, dtype=torch.float32).to(self.device, non_blocking=True)
        inputs = {'keypoints': keypoints, 'scores': scores, 'descriptors': descriptors, 'image_size': size}
        if self.static is not None:  # padded to K, with the mask: [1, D, K] out, its first N columns the real ones
            count = self.static[0]
            refusal = (f'the static ONNX export takes at most {count} per image: lower max_keypoints to {count}, '
                       'or export for more')
            inputs = {**inputs, **dict(zip(('keypoints', 'scores', 'descriptors', 'mask'),
                                           padded(keypoints, scores, descriptors, count, refusal)))}
        return self.run('superglue_encode.onnx', inputs, {'encoded': (1, self.dim, inputs['scores'].shape[1])})[0]

    def score_matrix(self, encoded0: Tensor, encoded1: Tensor, n: int, m: int) -> Tensor:
        """SuperGlue.score_matrix of n and m keypoints: encode() outputs [1, D, N], [1, D, M] (N, M = n, m;
        K with static shapes) -> [1, n, m] (an empty matrix when n or m is 0)."""
        if n == 0 or m == 0:
            return encoded0.new_zeros((1, n, m))
        inputs = {'encoded0': encoded0, 'encoded1': encoded1}
        if self.static is None:
            return self.run('superglue_scores.onnx', inputs, {'scores': (1, n, m)})[0]
        count = self.static[0]
        scores = self.run('superglue_scores.onnx', {**inputs, 'mask0': padding_mask(n, count, self.device),
                                                     'mask1': padding_mask(m, count, self.device)},
                          {'scores': (1, count, count)})[0]
        return scores[:, :n, :m]  # the real rows and columns: those of the unpadded images

