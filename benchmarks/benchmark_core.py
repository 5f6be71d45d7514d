"""SuperPoint + SuperGlue time per image pair: this core (Matcher) against transformers.

    python benchmarks/benchmark_core.py [--runs 10] [--warmup 2] [--max-keypoints 1024]
        [--sinkhorn-iterations 100] [--device cpu] [--threads N] [IMAGE0 IMAGE1]

Both pipelines run in one process, on the same two images (default: the first two freiburg frames,
640x480), with the same confident random weights (random_weights.py; the speed does not depend on
the weight values), on the same device, with the same settings (max_keypoints, keypoint threshold
0.005, NMS radius 4, no border removal (see BORDER), Sinkhorn iterations, match threshold 0.2).
Runs alternate between the two so that a change of machine load hits both; the figures are
medians after warm-up.

Stages, per pair of images:
  superpoint  both images in one batch: Matcher.extract_batch (incl. its grey float -> tensor copy),
              transformers' keypoint_detector inside SuperGlueForKeypointMatching (timed by hooks)
  superglue   the rest: Matcher.match on fresh Features (both encodings computed), transformers'
              matching part of the same forward
  total       both stages; transformers gets the grey image as a 3-channel tensor, its image
              processor is not timed
The script also checks that both give the same keypoints and matches.
"""
import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'test')]  # the package, and the Hugging Face checkpoint helpers

from model_fixtures import confident_weights, hf_superglue  # noqa: E402
from superglue_ros.image import prepare_image  # noqa: E402
from superglue_ros.matcher import Matcher  # noqa: E402
from superglue_ros.models import SuperGlue, SuperPoint  # noqa: E402

FREIBURG = REPO.parent / 'shared' / 'data' / 'freiburg_sequence'
STAGES = ('superpoint', 'superglue', 'total')
# transformers 5.24 removes keypoints only near the top and left borders (it compares with 8 times the
# image size), so both run without border removal: then they agree keypoint for keypoint.
BORDER = 0


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown CPU'


def load_average() -> str:
    try:
        return ' '.join(Path('/proc/loadavg').read_text().split()[:3])
    except OSError:
        return 'unknown'


class CoreRunner:
    def __init__(self, sp_state, sg_state, settings, device):
        superpoint, superglue = SuperPoint({'remove_borders': BORDER}), SuperGlue()
        superpoint.load_state_dict(sp_state)
        superglue.load_state_dict(sg_state)
        self.matcher = Matcher(superpoint, superglue, device=device)
        self.matcher.configure(**settings)

    def __call__(self, images):
        sync(self.matcher.device)
        start = time.perf_counter()
        features = self.matcher.extract_batch(images)
        extracted = time.perf_counter()  # extract_batch synchronises on CUDA
        result = self.matcher.match(*features)
        end = time.perf_counter()
        times = {'superpoint': extracted - start, 'superglue': end - extracted, 'total': end - start}
        keypoints = [f.keypoints.cpu().numpy() for f in features]
        return times, keypoints, result.matches0


class TransformersRunner:
    def __init__(self, sp_state, sg_state, settings, device):
        detector = {'max_keypoints': settings['max_keypoints'], 'keypoint_threshold': 0.005,
                    'nms_radius': 4, 'border_removal_distance': BORDER}
        self.model = hf_superglue(sg_state, sp_state, keypoint_detector_config=detector,
                                  sinkhorn_iterations=settings['sinkhorn_iterations'],
                                  matching_threshold=settings['match_threshold']).to(device)
        self.device = torch.device(device)
        self.marks = {}
        self.model.keypoint_detector.register_forward_pre_hook(lambda *_: self.mark('detector_start'))
        self.model.keypoint_detector.register_forward_hook(lambda *_: self.mark('detector_end'))

    def mark(self, name):
        sync(self.device)
        self.marks[name] = time.perf_counter()

    @torch.inference_mode()
    def __call__(self, images):
        greys = [prepare_image(image, None)[0] for image in images]  # same grey as the core, untimed
        pixels = torch.from_numpy(np.stack(greys))[None, :, None].expand(-1, -1, 3, -1, -1)  # [1, 2, 3, H, W]
        pixels = pixels.contiguous().to(self.device)
        self.mark('start')
        out = self.model(pixels)
        self.mark('end')
        m = self.marks
        times = {'superpoint': m['detector_end'] - m['detector_start'], 'superglue':
                 (m['end'] - m['start']) - (m['detector_end'] - m['detector_start']), 'total': m['end'] - m['start']}
        height, width = greys[0].shape
        keypoints = [(out.keypoints[0, i][out.mask[0, i] > 0] * torch.tensor([width, height])).cpu().numpy()
                     for i in (0, 1)]
        matches0 = out.matches[0, 0, :len(keypoints[0])].cpu().numpy()
        return times, keypoints, matches0


def sync(device):
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='*', type=Path, metavar='IMAGE', help='two images (default: freiburg 0, 1)')
    parser.add_argument('--runs', type=int, default=10, help='timed runs of each pipeline (default 10)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed runs first (default 2)')
    parser.add_argument('--max-keypoints', type=int, default=1024)
    parser.add_argument('--sinkhorn-iterations', type=int, default=100)
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default cpu)")
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch default)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = args.images or sorted(FREIBURG.glob('*.png'))[:2]
    if len(paths) != 2:
        parser.error(f'give two images (or put the freiburg frames in {FREIBURG})')
    images = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            parser.error(f'cannot read image {path}')
        images.append(image)

    settings = {'max_keypoints': args.max_keypoints, 'sinkhorn_iterations': args.sinkhorn_iterations,
                'keypoint_threshold': 0.005, 'nms_radius': 4, 'match_threshold': 0.2}
    sp_state, sg_state = confident_weights(seed=0)
    runners = {'core': CoreRunner(sp_state, sg_state, settings, args.device),
               'transformers': TransformersRunner(sp_state, sg_state, settings, args.device)}

    import transformers
    height, width = images[0].shape[:2]
    print(f'machine: {cpu_model()}, {torch.get_num_threads()} torch threads, device {args.device}'
          + (f' ({torch.cuda.get_device_name(args.device)})' if args.device.startswith('cuda') else ''))
    print(f'torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}')
    print(f'images: {", ".join(p.name for p in paths)} ({width}x{height}); max_keypoints {args.max_keypoints}, '
          f'sinkhorn_iterations {args.sinkhorn_iterations}; {args.warmup} warm-up + {args.runs} timed runs each')
    print(f'load average before: {load_average()}')

    times = {name: {stage: [] for stage in STAGES} for name in runners}
    outputs = {}
    for run in range(args.warmup + args.runs):
        for name, runner in runners.items():  # alternate, so that load changes hit both
            run_times, keypoints, matches0 = runner(images)
            outputs[name] = keypoints, matches0
            if run >= args.warmup:
                for stage in STAGES:
                    times[name][stage].append(run_times[stage] * 1e3)
    print(f'load average after:  {load_average()}')

    (kp_core, m_core), (kp_hf, m_hf) = outputs['core'], outputs['transformers']
    same_keypoints = all(a.shape == b.shape and np.allclose(a, b) for a, b in zip(kp_core, kp_hf))
    print(f'keypoints: core {len(kp_core[0])}, {len(kp_core[1])}; transformers {len(kp_hf[0])}, {len(kp_hf[1])}; '
          f'identical: {"yes" if same_keypoints else "NO"}')
    if same_keypoints:
        print(f'matches: core {(m_core > -1).sum()}, transformers {(m_hf > -1).sum()}; '
              f'same decision for {(m_core == m_hf).sum()} of {len(m_core)} keypoints')

    print(f'\n{"median ms per pair":<20}{"core":>12}{"transformers":>14}{"core / tf":>11}')
    for stage in STAGES:
        core, hf = (statistics.median(times[name][stage]) for name in ('core', 'transformers'))
        print(f'{stage:<20}{core:>12.1f}{hf:>14.1f}{core / hf:>11.2f}')
    spread = {name: (min(t['total']), max(t['total'])) for name, t in times.items()}
    print('total min-max: ' + ', '.join(f'{name} {lo:.0f}-{hi:.0f} ms' for name, (lo, hi) in spread.items()))


if __name__ == '__main__':
    main()
