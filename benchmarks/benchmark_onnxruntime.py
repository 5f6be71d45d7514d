"""Why Sinkhorn stays in torch with backend 'onnxruntime': the whole superglue.onnx against the backend's split.

    python benchmarks/benchmark_onnxruntime.py [--threads 2] [--runs 3] [--max-keypoints 1024]
        [--sinkhorn-iterations 100] [IMAGE0 IMAGE1]

benchmark_core.py times the onnxruntime backend per stage beside torch fp32 and transformers (superpoint,
encode, match, Sinkhorn, per frame, CameraPipeline.process, full pair). This script shows only what it
does not: SuperGlue on one pair (features of the two images extracted once, nothing cached), run
  split           as the backend runs it: superglue_encode.onnx on each image, superglue_scores.onnx, then
                  torch's exp-domain Sinkhorn and mutual check (SuperGlue.matches_from_scores)
  superglue.onnx  the whole SuperGlue in one onnxruntime graph: the same networks, then the log-space
                  Sinkhorn and mutual check exported with them (the file a runtime that takes one graph uses)
alternately each round, on benchmark_core's images (freiburg 0 and 1, else two synthetic frames), weights
(confident random) and settings (Ours), onnxruntime's intra-op threads = torch's. Rows (median ms over the
rounds after one warm-up round): encode x2, scores, Sinkhorn + mutual check and the total; superglue.onnx's
Sinkhorn + mutual check is its total minus the split's encode x2 and scores (the same graphs). Printed
with the match agreement of the two (float32 log space against float64 exp domain).
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks')]

from benchmark_core import Ours, confident_weights, cpu_model, load_average, load_images, timed_transport  # noqa: E402
from superglue_ros.precision_check import agreement  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--max-keypoints', type=int, default=1024)
    parser.add_argument('--sinkhorn-iterations', type=int, default=100)
    parser.add_argument('images', nargs='*', type=Path, help='two images (default: as benchmark_core.py)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    paths, images = load_images(parser, args.images, None, torch.device('cpu'))
    settings = {'max_keypoints': args.max_keypoints, 'sinkhorn_iterations': args.sinkhorn_iterations}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault('SUPERGLUE_ROS_ONNX_DIR', tmp)
        ours = Ours(*confident_weights(seed=0), settings, torch.device('cpu'), 'fp32', backend='onnxruntime')
        import onnxruntime
        options = onnxruntime.SessionOptions()  # the whole superglue.onnx, which the backend does not run
        options.intra_op_num_threads = torch.get_num_threads()
        whole = onnxruntime.InferenceSession(str(ours.runtime.directory / 'superglue.onnx'), options,
                                             providers=['CPUExecutionProvider'])
    print(f'machine: {cpu_model()}; {torch.get_num_threads()} torch threads = onnxruntime intra-op threads')
    print(f'torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, python {platform.python_version()}, '
          f'{time.strftime("%Y-%m-%d %H:%M %Z")}; load average before {load_average()}')
    print(f'images: {", ".join(p.name for p in paths)} ({images[0].shape[3]}x{images[0].shape[2]}); max_keypoints '
          f'{args.max_keypoints}, sinkhorn_iterations {args.sinkhorn_iterations}; 1 warm-up + {args.runs} rounds')

    runtime, superglue = ours.runtime, ours.superglue
    times = {}
    with torch.inference_mode():
        features = [ours.detect(image) for image in images]
        inputs = {}
        for i, (f, image) in enumerate(zip(features, images)):
            inputs.update({f'keypoints{i}': f['keypoints'][0][None].numpy(), f'scores{i}': f['scores'][0][None].numpy(),
                           f'descriptors{i}': f['descriptors'][0][None].numpy(),
                           f'image_size{i}': np.array([image.shape[3], image.shape[2]], np.float32)})
        for round_index in range(1 + args.runs):
            marks = [time.perf_counter()]
            encoded = [ours.encode(f, image) for f, image in zip(features, images)]
            marks.append(time.perf_counter())
            scores = runtime.score_matrix(*encoded, encoded[0].shape[2], encoded[1].shape[2])
            marks.append(time.perf_counter())
            split = superglue.matches_from_scores(scores)['matches0'][0].numpy()
            marks.append(time.perf_counter())
            sinkhorn = timed_transport.seconds
            start = time.perf_counter()
            one_graph = whole.run(['matches0'], inputs)[0][0]
            marks.append(time.perf_counter())
            if round_index:  # after the warm-up round
                split_ms = dict(zip(('encode x2', 'scores', 'sinkhorn + mutual'), np.diff(marks[:4]) * 1e3))
                for row, ms in {**split_ms, 'of which sinkhorn': sinkhorn * 1e3, 'total': (marks[3] - marks[0]) * 1e3,
                                'superglue.onnx': (marks[4] - start) * 1e3}.items():
                    times.setdefault(row, []).append(ms)
    print(f'load average after:  {load_average()}')
    med = {row: statistics.median(values) for row, values in times.items()}
    whole_sinkhorn = med['superglue.onnx'] - med['encode x2'] - med['scores']
    print(f'\n{"median ms":<28}{"split (backend)":>16}{"superglue.onnx":>16}')
    print(f'{"superglue encode x2":<28}{med["encode x2"]:>16.1f}{"(same graph)":>16}')
    print(f'{"GNN to the score matrix":<28}{med["scores"]:>16.1f}{"(same graph)":>16}')
    print(f'{"sinkhorn + mutual check":<28}{med["sinkhorn + mutual"]:>16.1f}{whole_sinkhorn:>16.1f}'
          f'   (superglue.onnx: its total - the split\'s encode x2 and scores)')
    print(f'{"  of which sinkhorn":<28}{med["of which sinkhorn"]:>16.1f}{"-":>16}')
    print(f'{"total":<28}{med["total"]:>16.1f}{med["superglue.onnx"]:>16.1f}')
    print(f'sinkhorn + mutual check: superglue.onnx / split {whole_sinkhorn / med["sinkhorn + mutual"]:.1f}x; '
          f'total: superglue.onnx / split {med["superglue.onnx"] / med["total"]:.2f}')
    kp = [f['keypoints'][0].numpy() for f in features]
    sets = [{(i, j) for i, j in enumerate(m) if j > -1} for m in (split, one_graph)]
    print(f'keypoints {len(kp[0])}, {len(kp[1])}; matches split {len(sets[0])}, superglue.onnx {len(sets[1])}, '
          f'agreement {agreement([sets[0]], [sets[1]]):.1%}')


if __name__ == '__main__':
    main()
