"""GPU front-end speed per stage: this implementation (cuda_pipeline.CameraPipeline) against transformers.

    python benchmarks/benchmark_gpu.py [--keypoints 512 1024 2048] [--precisions fp32 fp16]
        [--variants default sdpa channels_last sdpa+channels_last] [--frames 300] [--warmup 30]
        [--sinkhorn-iterations 20] [--device cuda] [--superglue-weights SPEC [--superpoint-weights SPEC]]

Everything runs in one process, on one GPU, with the same weights (confident random weights unless
given: the speed does not depend on the weight values), the same settings (keypoint threshold
0.005, NMS radius 4, no border removal (see benchmark_core.BORDER), match threshold 0.2, Sinkhorn
iterations) and the same 640x480 freiburg frames, cycled, each matched against a fixed keyframe
(the first frame):

  ours sequential   CameraPipeline.process: one frame in, its result out, nothing overlapped
  ours pipelined    CameraPipeline.process_stream: frame N+1's upload and SuperPoint overlap frame
                    N's SuperGlue (two frames in flight); the keyframe is extracted and encoded once
  transformers      SuperGlueForKeypointMatching on (keyframe, frame): it extracts both images every
                    time (it has no keyframe cache); same upload from pinned memory, grey image
                    given as its 3-channel input without a copy, keyframe grey image prepared once

frames/s: frames / wall time, host grey conversion and result download included. Stage times
(medians, ms): CUDA event times per frame: upload (grey image to the device), superpoint, superglue,
download (keypoints, matches, scores to the host); latency: host time from a frame's submission to
its result. Precisions run SuperPoint and the GNN under autocast (Matcher precision; transformers:
the same torch.autocast). Variants: attention implementation and channels-last SuperPoint (matcher.py).
Without CUDA the script says so and exits 0 (make benchmark on CPU machines); --device cpu runs it on
the CPU anyway (stage times from the host clock).
"""
import argparse
import datetime
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks'), str(REPO / 'test')]

from benchmark_core import BORDER, cpu_model  # noqa: E402
from model_fixtures import hf_superglue  # noqa: E402
from superglue_ros.cuda_pipeline import CameraPipeline  # noqa: E402
from superglue_ros.frontend import KeyframePolicy  # noqa: E402
from superglue_ros.image import prepare_image  # noqa: E402
from superglue_ros.matcher import PRECISIONS, Matcher  # noqa: E402
from superglue_ros.models import SuperGlue, SuperPoint  # noqa: E402
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict  # noqa: E402
from superglue_ros.weights import load_superglue, load_superpoint  # noqa: E402

FREIBURG = REPO.parent / 'shared' / 'data' / 'freiburg_sequence'
STAGES = ('upload', 'superpoint', 'superglue', 'download')
FIXED_KEYFRAME = KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=0.0)
VARIANTS = {'default': {}, 'sdpa': {'attention': 'sdpa'}, 'channels_last': {'channels_last': True},
            'sdpa+channels_last': {'attention': 'sdpa', 'channels_last': True}}
GOALS = {'frames_per_s': 200.0, 'speedup': 3.0}  # issue 4, H100, 640x480, 1024 keypoints


class Clock:
    """Timing marks on the device's current stream: CUDA events, or the host clock on the CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == 'cuda'

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:  # both marks reached
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


def run_ours(models, images, stamps, args, keypoints, precision, variant, pipelined, device):
    """(frames/s, per-frame timings list, mean keypoints, mean matches) of CameraPipeline."""
    matcher = Matcher(*models, device=device, precision=precision, **VARIANTS[variant])
    matcher.configure(max_keypoints=keypoints, sinkhorn_iterations=args.sinkhorn_iterations)
    camera = CameraPipeline(matcher, FIXED_KEYFRAME, depth=2 if pipelined else 1)
    frames = [(images[i % len(images)], stamps[i]) for i in range(args.warmup + args.frames)]
    results = (camera.process_stream(frames) if pipelined else (camera.process(*frame) for frame in frames))
    timed, start = [], None
    for i, result in enumerate(results):
        if i == args.warmup - 1:  # the clock starts once the warm-up results are out
            start = time.perf_counter()
        elif i >= args.warmup:
            timed.append(result)
    elapsed = time.perf_counter() - start
    timings = [dict(r.timings_ms, latency=r.timings_ms['total']) for r in timed]
    return (len(timed) / elapsed, timings, np.mean([r.frame_keypoint_count for r in timed]),
            np.mean([len(r.confidence) for r in timed]))


class TransformersFrontend:
    """SuperGlueForKeypointMatching on (keyframe, frame) per frame, stages timed with marks."""

    def __init__(self, sp_state, sg_state, keypoints, args, precision, device, image_shape):
        detector = {'max_keypoints': keypoints, 'keypoint_threshold': 0.005, 'nms_radius': 4,
                    'border_removal_distance': BORDER}
        self.model = hf_superglue(sg_state, sp_state, keypoint_detector_config=detector,
                                  sinkhorn_iterations=args.sinkhorn_iterations, matching_threshold=0.2).to(device)
        self.device, self.clock = device, Clock(device)
        dtype = PRECISIONS[precision]  # the autocast of Matcher.autocast()
        self.autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
        self.pinned = torch.empty((1, 2, 1) + image_shape, pin_memory=device.type == 'cuda')  # [1, 2, 1, H, W]
        self.marks = {}
        detector_module = self.model.keypoint_detector
        detector_module.register_forward_pre_hook(lambda *_: self.marks.__setitem__('sp_start', self.clock.mark()))
        detector_module.register_forward_hook(lambda *_: self.marks.__setitem__('sp_end', self.clock.mark()))

    @torch.inference_mode()
    def __call__(self, keyframe_grey: np.ndarray, image: np.ndarray) -> dict:
        submitted = time.perf_counter()
        self.pinned[0, 0, 0].numpy()[...] = keyframe_grey
        self.pinned[0, 1, 0].numpy()[...] = prepare_image(image, None)[0]
        marks = self.marks
        marks['upload_start'] = self.clock.mark()
        pixels = self.pinned.to(self.device, non_blocking=True).expand(-1, -1, 3, -1, -1)  # its 3-channel input
        marks['uploaded'] = self.clock.mark()
        with self.autocast:
            out = self.model(pixels)
        marks['forward_end'] = self.clock.mark()
        host = [t.cpu() for t in (out.keypoints, out.matches, out.matching_scores, out.mask)]
        marks['downloaded'] = self.clock.mark()
        if self.clock.cuda:
            marks['downloaded'].synchronize()  # .cpu() waited already; the events are complete
        ms = self.clock.ms
        superpoint = ms(marks['sp_start'], marks['sp_end'])
        mask = host[3][0, 1] > 0
        return {'upload': ms(marks['upload_start'], marks['uploaded']), 'superpoint': superpoint,
                'superglue': ms(marks['uploaded'], marks['forward_end']) - superpoint,
                'download': ms(marks['forward_end'], marks['downloaded']),
                'latency': (time.perf_counter() - submitted) * 1e3,
                'keypoints': int(mask.sum()), 'matches': int((host[1][0, 0] > -1).sum())}


def run_transformers(states, images, args, keypoints, precision, device):
    keyframe_grey = prepare_image(images[0], None)[0]
    frontend = TransformersFrontend(*states, keypoints, args, precision, device, keyframe_grey.shape)
    for i in range(args.warmup):  # the same frames as run_ours, warm-up and timed
        frontend(keyframe_grey, images[i % len(images)])
    start = time.perf_counter()
    timings = [frontend(keyframe_grey, images[i % len(images)]) for i in range(args.warmup, args.warmup + args.frames)]
    elapsed = time.perf_counter() - start
    return (args.frames / elapsed, timings, np.mean([t['keypoints'] for t in timings]),
            np.mean([t['matches'] for t in timings]))


def load_models(args):
    """(SuperPoint, SuperGlue) without border removal, and their original-layout state dicts."""
    if args.superglue_weights:
        superpoint = load_superpoint(args.superpoint_weights, {'remove_borders': BORDER},
                                     superglue_spec=args.superglue_weights)
        superglue = load_superglue(args.superglue_weights)
    else:
        superpoint, superglue = SuperPoint({'remove_borders': BORDER}), SuperGlue()
        superpoint.load_state_dict(superpoint_state_dict(seed=0))
        superglue.load_state_dict(superglue_state_dict(seed=0))
    states = ({k: v.cpu() for k, v in superpoint.state_dict().items()},
              {k: v.cpu() for k, v in superglue.state_dict().items()})
    return (superpoint, superglue), states


def describe_machine(device: torch.device) -> str:
    import transformers
    lines = [f'date: {datetime.datetime.now().astimezone().isoformat(timespec="minutes")}']
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        lines.append(f'GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; '
                     f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')
    lines.append(f'CPU: {cpu_model()}, {torch.get_num_threads()} torch threads')
    lines.append(f'torch {torch.__version__}, transformers {transformers.__version__}, '
                 f'python {platform.python_version()}')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', help="'cuda', 'cuda:N' or 'cpu' (default cuda)")
    parser.add_argument('--keypoints', type=int, nargs='+', default=[512, 1024, 2048], help='max_keypoints values')
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'fp16'], choices=['fp32', 'fp16', 'bf16'])
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS),
                        help='options of this implementation to measure (default: all)')
    parser.add_argument('--frames', type=int, default=300, help='timed frames per run (default 300)')
    parser.add_argument('--warmup', type=int, default=30, help='untimed frames first (default 30)')
    parser.add_argument('--sinkhorn-iterations', type=int, default=20, help='default 20, as config/*.yaml')
    parser.add_argument('--no-transformers', action='store_true', help='only this implementation')
    parser.add_argument('--superglue-weights', help='weights spec (weights.py); default: confident random weights')
    parser.add_argument('--superpoint-weights', help='weights spec; default: from --superglue-weights')
    args = parser.parse_args()
    if args.frames < 1 or args.warmup < 1:
        parser.error('--frames and --warmup must be >= 1')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print(f'benchmark_gpu: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or "no"}); '
              'nothing measured. It measures the GPU pipeline; --device cpu runs it on the CPU anyway.')
        return
    device = torch.device(args.device)
    paths = sorted(FREIBURG.glob('*.png'))
    if not paths:
        parser.error(f'no frames in {FREIBURG} (see ../shared/data/README.md)')
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]
    stamps = np.arange(args.warmup + args.frames) / 30.0
    models, states = load_models(args)

    height, width = images[0].shape[:2]
    print(describe_machine(device))
    print(f'images: {len(images)} freiburg frames {width}x{height}, cycled; {args.warmup} warm-up + {args.frames} '
          f'timed frames per run; sinkhorn_iterations {args.sinkhorn_iterations}; weights: '
          f'{args.superglue_weights or "confident random"}')
    header = (f'{"keypoints":>9} {"precision":>9}  {"implementation":<38}{"frames/s":>9}{"latency":>9}'
              + ''.join(f'{stage:>11}' for stage in STAGES) + f'{"kpts":>7}{"matches":>8}')
    print(f'\nmedian ms per frame (stages: device time)\n{header}')
    best = {}
    for keypoints in args.keypoints:
        for precision in args.precisions:
            runs = [(f'ours {mode} ({variant})', lambda mode=mode, variant=variant: run_ours(
                models, images, stamps, args, keypoints, precision, variant, mode == 'pipelined', device))
                for variant in args.variants for mode in ('sequential', 'pipelined')]
            if not args.no_transformers:
                runs.append(('transformers', lambda: run_transformers(states, images, args, keypoints, precision,
                                                                      device)))
            for name, run in runs:
                try:
                    fps, timings, mean_keypoints, mean_matches = run()
                except Exception as e:  # one failing configuration must not lose the others' figures
                    print(f'{keypoints:>9} {precision:>9}  {name:<38}failed: {type(e).__name__}: {e}')
                    traceback.print_exc(limit=3)
                    continue
                medians = {key: statistics.median(t[key] for t in timings) for key in STAGES + ('latency',)}
                print(f'{keypoints:>9} {precision:>9}  {name:<38}{fps:>9.1f}{medians["latency"]:>9.2f}'
                      + ''.join(f'{medians[stage]:>11.2f}' for stage in STAGES)
                      + f'{mean_keypoints:>7.0f}{mean_matches:>8.0f}', flush=True)
                key = (keypoints, precision, 'transformers' if name == 'transformers' else 'ours')
                if fps > best.get(key, (0, ''))[0]:
                    best[key] = (fps, name)

    print(f'\nbest of this implementation against transformers (goals on an H100 at 1024 keypoints: '
          f'>= {GOALS["frames_per_s"]:.0f} frames/s, >= {GOALS["speedup"]:.0f}x transformers)')
    for (keypoints, precision, who), (fps, name) in sorted(best.items()):
        if who == 'ours':
            baseline = best.get((keypoints, precision, 'transformers'), (None,))[0]
            ratio = f'{fps / baseline:.1f}x transformers' if baseline else 'transformers not measured'
            goals = ''
            if keypoints == 1024 and baseline:
                goals = (f'; goals: frames/s {"met" if fps >= GOALS["frames_per_s"] else "NOT met"}, '
                         f'speed-up {"met" if fps >= GOALS["speedup"] * baseline else "NOT met"}')
            print(f'{keypoints:>9} {precision:>9}  {fps:8.1f} frames/s ({name}), {ratio}{goals}')


if __name__ == '__main__':
    main()
