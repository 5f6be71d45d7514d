"""SuperGlue at static shapes (setting static_shapes, torch backend): every image's keypoints padded to
max_keypoints with a padding mask, and on CUDA each camera stream's SuperGlue captured once in a CUDA
graph and then replayed.

Why: on a GPU, eager PyTorch is bound by kernel launches. SuperGlue with 100 Sinkhorn iterations is
over a thousand small kernels (18 GNN layers, 2 x 100 log-space updates), tens of ms of Python and
launch cost per frame at 10-20 us each (issue 14's estimate; not measured here, no GPU). A CUDA graph (torch.cuda.CUDAGraph) launches them all at once,
but only at the shapes and memory addresses it was captured with, hence the padding.

The padding changes nothing: SuperGlue's masks keep padded points out of every attention layer and
give them zero marginals in Sinkhorn (models/superglue.py), so the real keypoints get the matches and
scores of the unpadded images (test_static_shapes.py, within float32 rounding).

  CPU    the padded computation runs eagerly (what the tests check; slower than dynamic shapes for
         images with fewer than max_keypoints keypoints, and no graph: nothing to gain on a CPU).
  CUDA   one graph per (CUDA stream, kind, settings): 'encode' per image size, 'match' per
         sinkhorn_iterations and match_threshold (baked into the graph: a live change captures a new
         graph, once). Each camera's CameraPipeline runs on its own streams, so each camera has its own
         graphs and static buffers and cameras never share them. Capture runs at the first frame of each
         (after two eager warm-up runs on a side stream, as torch.cuda.graphs' documentation asks) and
         is thread-local, so another camera's work may go on meanwhile. Written for and tested on the
         CPU path only here: the capture itself is exercised by benchmarks/gpu_check.sh on a GPU.

Errors: ValueError when max_keypoints is -1 (no static count) or an image has more keypoints than the
static count.
"""
import threading

import torch
from torch import Tensor

from .models import SuperGlue

WARMUP_RUNS = 2  # eager runs on a side stream before a capture (cuBLAS / cuDNN workspaces, lazy init)


def padding_mask(n: int, count: int, device: torch.device) -> Tensor:
    """[1, count] bool, True for the first n (real) keypoints; made on the device, no host copy."""
    return torch.arange(count, device=device)[None] < n


def pad(tensor: Tensor, count: int, axis: int) -> Tensor:
    """`tensor` padded with zeros along `axis` to `count` entries."""
    shape = list(tensor.shape)
    shape[axis] = count - shape[axis]
    return torch.cat([tensor, tensor.new_zeros(shape)], axis)


def padded(keypoints: Tensor, scores: Tensor, descriptors: Tensor, count: int, refusal: str) -> list[Tensor]:
    """keypoints [1, N, 2], scores [1, N], descriptors [1, D, N] padded with zeros to `count` keypoints, and
    their padding_mask [1, count] (the static inputs of SuperGlue.encode here and of superglue_encode.onnx).
    ValueError '{N} keypoints, but {refusal}' when N > count."""
    n = scores.shape[1]
    if n > count:
        raise ValueError(f'{n} keypoints, but {refusal}')
    return [pad(keypoints, count, 1), pad(scores, count, 1), pad(descriptors, count, 2),
            padding_mask(n, count, scores.device)]


class Graph:
    """One captured function: static input buffers, the CUDA graph, its static outputs."""

    def __init__(self, function, inputs: list[Tensor]):
        current = torch.cuda.current_stream(inputs[0].device)
        self.inputs = [x.clone() for x in inputs]
        side = torch.cuda.Stream(inputs[0].device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                function(*self.inputs)
        current.wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode='thread_local'):
            self.outputs = function(*self.inputs)

    def __call__(self, inputs: list[Tensor]):
        """Copy `inputs` into the static buffers, replay on the current stream; outputs cloned (the next
        replay overwrites the static ones), ordered on this stream like eager work."""
        for static, x in zip(self.inputs, inputs):
            static.copy_(x, non_blocking=True)
        self.graph.replay()
        if isinstance(self.outputs, dict):
            return {k: v.clone() for k, v in self.outputs.items()}
        return self.outputs.clone()


class StaticSuperGlue:
    """SuperGlue.encode and .match at `count` keypoints per image: padded, masked, and on CUDA replayed
    from a CUDA graph per stream (module doc)."""

    def __init__(self, superglue: SuperGlue, device: torch.device):
        self.superglue, self.device = superglue, device
        self.graphs = {}  # (CUDA stream, kind, settings) -> Graph
        self._lock = threading.Lock()

    def _run(self, key: tuple, function, inputs: list[Tensor]):
        if self.device.type != 'cuda':
            return function(*inputs)
        key = (torch.cuda.current_stream(self.device).cuda_stream, *key)
        with self._lock:
            graph = self.graphs.get(key)
        if graph is None:  # captured by the one thread that runs this stream: no race on the key
            graph = Graph(function, inputs)
            with self._lock:
                self.graphs[key] = graph
        return graph(inputs)

    def encode(self, keypoints: Tensor, scores: Tensor, descriptors: Tensor, image_size: tuple[int, int],
               count: int) -> Tensor:
        """SuperGlue.encode of one image padded to `count` keypoints: keypoints [1, N, 2] pixels, scores
        [1, N], descriptors [1, D, N], image_size (width, height) -> [1, D, count], its first N columns
        those of the unpadded image. ValueError when N > count."""
        inputs = padded(keypoints, scores, descriptors, count,
                        f'static_shapes pads to max_keypoints = {count}: the keypoints were detected with another '
                        'max_keypoints; extract them again')
        size = tuple(image_size)
        return self._run(('encode', count, size),
                         lambda k, s, d, mask: self.superglue.encode(k, s, d, size, mask), inputs)

    def match(self, encoded0: Tensor, n: int, encoded1: Tensor, m: int) -> dict:
        """SuperGlue.match of two encode() outputs [1, D, count] with n and m real keypoints -> its dict
        cut to the real keypoints: 'matches0' [1, n], 'matching_scores0' [1, n], 'matches1' [1, m],
        'matching_scores1' [1, m], as the unpadded images give them."""
        count = encoded0.shape[2]
        config = self.superglue.config
        inputs = [encoded0, encoded1, padding_mask(n, count, self.device), padding_mask(m, count, self.device)]
        result = self._run(('match', count, config['sinkhorn_iterations'], config['match_threshold']),
                           self.superglue.match, inputs)
        return {key: value[:, :(n if key.endswith('0') else m)] for key, value in result.items()}

