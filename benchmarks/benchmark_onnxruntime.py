"""CPU speed of the two backends (setting backend: torch / onnxruntime), per stage, in one run.

    python benchmarks/benchmark_onnxruntime.py [--threads 2] [--runs 3] [--max-keypoints 1024]
        [--sinkhorn-iterations 100] [IMAGE0 IMAGE1]

Both backends are Matchers on the same confident random weights (the speed does not depend on the
values) and settings, on the same two images (default: a 640x480 pair of the synthetic sequence of
demo/synthetic.py; the first is the keyframe). Each round runs every row once, alternately, so that a
change of machine load hits both; figures are medians over the rounds after one warm-up round.

Rows (ms):
  superpoint dense maps    SuperPoint's network, both heads: torch (encode, dense_scores,
                           descriptor_map) against superpoint.onnx
  superpoint (frame)       Matcher.extract: the dense maps, then the keypoint selection in torch
  superglue encode         one image: SuperGlue.encode against superglue_encode.onnx
  superglue scores         the remaining GNN layers and the score matrix: SuperGlue.score_matrix against
                           superglue_scores.onnx
  sinkhorn + mutual        torch (exp-domain Sinkhorn, SuperGlue.matches_from_scores) against the same
                           in onnxruntime's log-space graph: superglue.onnx (the whole SuperGlue, both
                           encodings included) minus superglue_encode.onnx twice and superglue_scores.onnx
  superglue.onnx           the whole SuperGlue in onnxruntime, against torch's encode x2 + match
  frame (backend)          what the node does per frame: Matcher.extract + Matcher.match against the
                           keyframe's cached encoding, as each backend runs it
"""
import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from superglue_ros.demo.synthetic import generate_sequence  # noqa: E402
from superglue_ros.matcher import Matcher  # noqa: E402
from superglue_ros.precision import cpu_description  # noqa: E402
from superglue_ros.random_weights import random_superglue, random_superpoint  # noqa: E402


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--max-keypoints', type=int, default=1024)
    parser.add_argument('--sinkhorn-iterations', type=int, default=100)
    parser.add_argument('images', nargs='*', type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.images:
        paths = args.images
    else:
        paths = generate_sequence(Path(tempfile.mkdtemp()), num_frames=3, size=(640, 480), seed=0).files[::2]
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths[:2]]
    settings = {'max_keypoints': args.max_keypoints, 'sinkhorn_iterations': args.sinkhorn_iterations}
    matchers = {}
    for backend in ('torch', 'onnxruntime'):
        superpoint, superglue = random_superpoint(0), random_superglue(0, {'sinkhorn_iterations': args.sinkhorn_iterations})
        matchers[backend] = Matcher(superpoint, superglue, 'cpu', backend=backend,
                                    log=lambda line: print(f'[{backend}] {line}'))
        matchers[backend].configure(**settings)
    torch_matcher, ort_matcher = matchers['torch'], matchers['onnxruntime']
    runtime = ort_matcher.runtime
    import onnxruntime

    print(f'machine: {cpu_description()}; {torch.get_num_threads()} torch threads = onnxruntime intra-op threads')
    print(f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, python {platform.python_version()}, '
          f'{time.strftime("%Y-%m-%d")}')
    print(f'images: {", ".join(str(p) for p in paths[:2])} ({images[0].shape[1]}x{images[0].shape[0]}); '
          f'max_keypoints {args.max_keypoints}, sinkhorn_iterations {args.sinkhorn_iterations}; '
          f'1 warm-up + {args.runs} timed rounds; export files: {runtime.directory}')

    grey = torch.from_numpy(cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY)).float()[None, None] / 255
    options = onnxruntime.SessionOptions()  # the whole superglue.onnx, which the backend does not run
    options.intra_op_num_threads = torch.get_num_threads()
    whole = onnxruntime.InferenceSession(str(runtime.directory / 'superglue.onnx'), options,
                                         providers=['CPUExecutionProvider'])
    rows = {}
    with torch.inference_mode():
        keyframes = {name: m.extract(images[0]) for name, m in matchers.items()}
        for name, m in matchers.items():
            m.encoded(keyframes[name])
        features = torch_matcher.extract(images[1])
        f0, f1 = keyframes['torch'], features
        e0, e1 = torch_matcher.encoded(f0), torch_matcher.encoded(f1)
        scores = torch_matcher.superglue.score_matrix(e0, e1)
        inputs = {}
        for i, f in enumerate((f0, f1)):
            inputs.update({f'keypoints{i}': f.keypoints[None].numpy(), f'scores{i}': f.scores[None].numpy(),
                           f'descriptors{i}': f.descriptors[None].numpy(),
                           f'image_size{i}': np.array(f.image_size, np.float32)})
        superpoint, superglue = torch_matcher.superpoint, torch_matcher.superglue

        def torch_maps():
            x = superpoint.encode(grey)
            return superpoint.dense_scores(x), superpoint.descriptor_map(x)

        def torch_encode():
            return superglue.encode(f1.keypoints[None], f1.scores[None], f1.descriptors[None], f1.image_size)

        def ort_encode():
            return runtime.encode(f1.keypoints[None], f1.scores[None], f1.descriptors[None], f1.image_size)

        def torch_whole():
            return superglue.match(superglue.encode(f0.keypoints[None], f0.scores[None], f0.descriptors[None],
                                                    f0.image_size), torch_encode())

        for round_index in range(1 + args.runs):
            marks = {
                'superpoint dense maps': (torch_maps, lambda: runtime.superpoint_maps(grey)),
                'superpoint (frame)': (lambda: torch_matcher.extract(images[1]), lambda: ort_matcher.extract(images[1])),
                'superglue encode': (torch_encode, ort_encode),
                'superglue scores': (lambda: superglue.score_matrix(e0, e1), lambda: runtime.score_matrix(e0, e1, e0.shape[2], e1.shape[2])),
                'sinkhorn + mutual (torch)': (lambda: superglue.matches_from_scores(scores), None),
                'superglue.onnx': (torch_whole, lambda: whole.run(None, inputs)),
                'frame (backend)': tuple(
                    (lambda m=m, name=name: m.match(keyframes[name], m.extract(images[1]))) for name, m in matchers.items()),
            }
            for row, (torch_run, ort_run) in marks.items():
                for backend, run in (('torch', torch_run), ('onnxruntime', ort_run)):
                    if run is not None:
                        _, seconds = timed(run)
                        if round_index:  # after the warm-up round
                            rows.setdefault((row, backend), []).append(seconds * 1e3)
    med = {key: statistics.median(values) for key, values in rows.items()}
    sinkhorn_ort = (med[('superglue.onnx', 'onnxruntime')] - 2 * med[('superglue encode', 'onnxruntime')]
                    - med[('superglue scores', 'onnxruntime')])
    print(f'{"ms (median)":28s} {"torch":>9s} {"onnxruntime":>12s} {"torch / ort":>12s}')
    for row in ('superpoint dense maps', 'superpoint (frame)', 'superglue encode', 'superglue scores',
                'superglue.onnx', 'frame (backend)'):
        t, o = med[(row, 'torch')], med[(row, 'onnxruntime')]
        print(f'{row:28s} {t:9.1f} {o:12.1f} {t / o:12.2f}')
    t = med[('sinkhorn + mutual (torch)', 'torch')]
    print(f'{"sinkhorn + mutual":28s} {t:9.1f} {sinkhorn_ort:12.1f} {t / sinkhorn_ort:12.2f}   (onnxruntime: '
          'superglue.onnx - 2 encode - scores)')
    print(f'keypoints: keyframe {len(f0.scores)}, frame {len(f1.scores)}')


if __name__ == '__main__':
    main()
