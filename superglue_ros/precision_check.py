"""Check half precision on your own images and weights before enabling it.

    python -m superglue_ros.precision_check IMAGE0 IMAGE1 [IMAGE...] [--precision bf16|fp16]
        [--superpoint-weights W] [--superglue-weights W] [--max-keypoints N] [--sinkhorn-iterations K]
        [--resize WIDTH HEIGHT] [--device auto|cpu|cuda] [--runs R] [--threads T]

IMAGE0 is the keyframe and every other image a frame matched against it, as the node does. Each one
runs in fp32 (the original computation) and in the half precision (SuperPoint.set_precision,
SuperGlue.set_precision), and the command prints:
  - the match agreement: matches found by both (same keypoint pixels in both images) over the larger
    of the two match counts, per pair and over all pairs;
  - the error of each stage against fp32: keypoints kept, detection scores, descriptors (sampled at
    the fp32 keypoints), and SuperGlue on the same fp32 features: encoding, assignment (in matching
    score units, where the match threshold applies) and that pair's agreement;
  - the time of a frame (SuperPoint + SuperGlue against the cached keyframe encoding), median of R
    runs alternating the two precisions, and the speed-up.
Weights default to the presets ('superpoint', 'indoor'); missing weights, unreadable images, bad
values and a precision this device has no fast kernels for (precision.check_precision) exit with
code 2 and one line saying what to do. Decide from the agreement on images like those of your robot:
with random weights, half precision is not informative (their near-ties break either way).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from .image import ImageError
from .match import Parser, UsageError, read_image
from .matcher import resolve_device
from .models import SuperGlue, SuperPoint
from .models.superpoint import sample_descriptors
from .precision import check_precision
from .weights import WeightsError, load_superglue, load_superpoint

PROG = 'python -m superglue_ros.precision_check'


def matched_points(features0: dict, features1: dict, matches0: Tensor) -> set:
    """Matches as ((x0, y0), (x1, y1)) keypoint pixels, comparable between runs whose keypoint
    lists differ. features: SuperPoint outputs of batch size 1; matches0 [N0]."""
    valid = matches0 > -1
    points0 = features0['keypoints'][0][valid].tolist()
    points1 = features1['keypoints'][0][matches0[valid]].tolist()
    return {(tuple(a), tuple(b)) for a, b in zip(points0, points1)}


def agreement(reference: list[set], other: list[set]) -> float:
    """Matches found by both over the larger match count, summed over pairs: 1 only for the same
    matches (a match missing on either side counts against it)."""
    shared = sum(len(a & b) for a, b in zip(reference, other))
    return shared / max(sum(map(len, reference)), sum(map(len, other)), 1)


def set_precision(models, name: str, check_hardware: bool):
    for model in models:
        model.set_precision(name, check_hardware=check_hardware)


def encode(superglue: SuperGlue, features: dict, image_size: tuple[int, int]) -> Tensor:
    return superglue.encode(features['keypoints'][0][None], features['scores'][0][None],
                            features['descriptors'][0][None], image_size)


@torch.inference_mode()
def compare(superpoint: SuperPoint, superglue: SuperGlue, images: list[Tensor], precision: str,
            check_hardware: bool = True) -> dict:
    """fp32 against `precision` on images [1, 1, H, W] (the first the keyframe, each other one
    matched against it). Returns:
      agreement            end-to-end match agreement over all pairs (see agreement())
      pair_agreement       the same per pair
      matches              (fp32, half) match counts over all pairs
      keypoints_kept       share of the fp32 keypoints that half precision finds too
      score_error          largest detection score difference at the keypoints both find
      descriptor_error     largest descriptor component difference at the fp32 keypoints
      encoding_error       largest SuperGlue.encode difference on fp32 features, over the largest value
      assignment_error     largest difference of exp(log assignment) (matching score units) on fp32 features
      superglue_agreement  match agreement of SuperGlue alone, on the same fp32 features
    The models end in fp32. check_hardware: see SuperPoint.set_precision."""
    models = (superpoint, superglue)
    runs = {}
    for name in ('fp32', precision):
        set_precision(models, name, check_hardware)
        feature_maps = [superpoint.encode(image) for image in images]
        runs[name] = {'features': [superpoint(image) for image in images], 'maps': feature_maps}
    set_precision(models, 'fp32', check_hardware)
    full, half = runs['fp32'], runs[precision]
    sizes = [(image.shape[3], image.shape[2]) for image in images]

    kept, found, score_error, descriptor_error = 0, 0, 0.0, 0.0
    for f32, f16, feature_map in zip(full['features'], half['features'], half['maps']):
        k32, k16 = f32['keypoints'][0], f16['keypoints'][0]
        index16 = {tuple(p): i for i, p in enumerate(k16.tolist())}
        common = [(i, index16[tuple(p)]) for i, p in enumerate(k32.tolist()) if tuple(p) in index16]
        kept, found = kept + len(common), found + len(k32)
        if common:
            i32, i16 = torch.tensor(common).T
            score_error = max(score_error, (f32['scores'][0][i32] - f16['scores'][0][i16]).abs().max().item())
        superpoint.set_precision(precision, check_hardware=check_hardware)
        descriptors16 = sample_descriptors(k32, superpoint.descriptor_map(feature_map)[0])
        superpoint.set_precision('fp32')
        descriptor_error = max(descriptor_error, (descriptors16 - f32['descriptors'][0]).abs().max().item())

    def superglue_run(name, features):
        superglue.set_precision(name, check_hardware=check_hardware)
        encoded = [encode(superglue, f, size) for f, size in zip(features, sizes)]
        results = []
        for i in range(1, len(images)):
            z = superglue.log_assignment(encoded[0], encoded[i])
            results.append((z, superglue.match(encoded[0], encoded[i])['matches0'][0]))
        superglue.set_precision('fp32')
        return encoded, results

    enc32, res32 = superglue_run('fp32', full['features'])
    enc16, res16 = superglue_run(precision, full['features'])           # same fp32 features
    _, res_half = superglue_run(precision, half['features'])             # the half-precision pipeline
    encoding_error = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(enc32, enc16))
    assignment_error = max((z32.exp() - z16.exp()).abs().max().item() for (z32, _), (z16, _) in zip(res32, res16))

    def points(features, results):
        return [matched_points(features[0], features[i + 1], m) for i, (_, m) in enumerate(results)]

    ref = points(full['features'], res32)
    same_input, end_to_end = points(full['features'], res16), points(half['features'], res_half)
    return {'agreement': agreement(ref, end_to_end),
            'pair_agreement': [agreement([a], [b]) for a, b in zip(ref, end_to_end)],
            'matches': (sum(map(len, ref)), sum(map(len, end_to_end))),
            'keypoints_kept': kept / max(found, 1), 'score_error': score_error,
            'descriptor_error': descriptor_error, 'encoding_error': encoding_error,
            'assignment_error': assignment_error, 'superglue_agreement': agreement(ref, same_input)}


@torch.inference_mode()
def frame_time_ms(superpoint: SuperPoint, superglue: SuperGlue, encoded_keyframe: Tensor, frame: Tensor) -> float:
    """ms of one front-end frame [1, 1, H, W]: SuperPoint, then SuperGlue against the keyframe's cached
    encoding (SuperGlue.encode output)."""
    if frame.device.type == 'cuda':
        torch.cuda.synchronize(frame.device)
    start = time.perf_counter()
    result = superglue.match(encoded_keyframe, encode(superglue, superpoint(frame), (frame.shape[3], frame.shape[2])))
    result['matches0'].cpu()  # waits for the device
    return (time.perf_counter() - start) * 1e3


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description='Compare fp32 with half precision on your images and weights.')
    parser.add_argument('images', type=Path, nargs='+', metavar='IMAGE',
                        help='the keyframe, then the frames matched against it (at least one)')
    parser.add_argument('--precision', choices=('bf16', 'fp16'), default='bf16',
                        help='half precision to check (default bf16: CPUs with AMX / AVX512-BF16, GPUs)')
    parser.add_argument('--superpoint-weights', metavar='W', default='superpoint',
                        help="SuperPoint weights (default: the preset 'superpoint')")
    parser.add_argument('--superglue-weights', metavar='W', default='indoor',
                        help="SuperGlue weights (default: the preset 'indoor')")
    parser.add_argument('--max-keypoints', type=int, default=1024, metavar='N', help='default 1024')
    parser.add_argument('--sinkhorn-iterations', type=int, default=100, metavar='K', help='default 100')
    parser.add_argument('--resize', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                        help='resize every image first (bilinear, as python -m superglue_ros.match)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    parser.add_argument('--runs', type=int, default=5, metavar='R', help='timed frames per precision (default 5)')
    parser.add_argument('--threads', type=int, metavar='T', help='torch CPU threads (default: torch default)')
    return parser


def run(args) -> dict:
    if len(args.images) < 2:
        raise UsageError('give a keyframe and at least one frame to match against it')
    if args.runs < 1 or (args.threads is not None and args.threads < 1):
        raise UsageError('--runs and --threads must be at least 1')
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        check_precision(args.precision, device)  # refuses, with the reason, where the device has no fast kernels
    except ValueError as e:
        where = ('a CPU with AMX-BF16 / AVX512-BF16, or a CUDA GPU with bf16 (--device cuda)'
                 if args.precision == 'bf16' else 'a CUDA GPU (--device cuda)')
        raise UsageError(f'{e}. This tool measures {args.precision} against fp32, so run it where the node accepts '
                         f'{args.precision}: {where}') from None
    greys = [read_image(path, args.resize)[0] for path in args.images]
    if len({grey.shape for grey in greys}) > 1:
        raise UsageError('the images differ in size: give --resize WIDTH HEIGHT')
    superpoint = load_superpoint(args.superpoint_weights, {'max_keypoints': args.max_keypoints})
    superglue = load_superglue(args.superglue_weights, {'sinkhorn_iterations': args.sinkhorn_iterations})
    superpoint, superglue = superpoint.eval().to(device), superglue.eval().to(device)
    images = [(torch.from_numpy(grey).float() / 255)[None, None].to(device) for grey in greys]  # as frame2tensor

    report = compare(superpoint, superglue, images, args.precision)
    times = {'fp32': [], args.precision: []}
    for run_index in range(args.runs + 1):  # the first round warms up
        frame = images[1 + run_index % (len(images) - 1)]
        for name, measured in times.items():
            set_precision((superpoint, superglue), name, True)
            with torch.inference_mode():
                keyframe = encode(superglue, superpoint(images[0]), (frame.shape[3], frame.shape[2]))
            measured.append(frame_time_ms(superpoint, superglue, keyframe, frame))
    set_precision((superpoint, superglue), 'fp32', True)
    report['frame_ms'] = {name: statistics.median(measured[1:]) for name, measured in times.items()}

    half, frame_ms = args.precision, report['frame_ms']
    print(f'{len(images) - 1} pair(s) against keyframe {args.images[0].name}, {tuple(greys[0].shape[::-1])} '
          f'pixels, on {device}, weights {args.superpoint_weights} + {args.superglue_weights}')
    for path, share in zip(args.images[1:], report['pair_agreement']):
        print(f'  {path.name}: {share:.1%} of the matches agree')
    print(f'match agreement {half} vs fp32: {report["agreement"]:.1%} ({report["matches"][0]} fp32 matches, '
          f'{report["matches"][1]} {half})')
    print(f'per stage: keypoints kept {report["keypoints_kept"]:.1%}, detection score error '
          f'{report["score_error"]:.2g}, descriptor error {report["descriptor_error"]:.2g}; SuperGlue on the fp32 '
          f'features: encoding error {report["encoding_error"]:.2g} (relative), assignment error '
          f'{report["assignment_error"]:.2g}, agreement {report["superglue_agreement"]:.1%}')
    print(f'frame (SuperPoint + SuperGlue against the keyframe): fp32 {frame_ms["fp32"]:.0f} ms, {half} '
          f'{frame_ms[half]:.0f} ms, speed-up {frame_ms["fp32"] / frame_ms[half]:.2f}x')
    return report


def main(argv=None) -> int:
    try:
        run(build_parser().parse_args(argv))
    except (UsageError, ImageError, WeightsError, ValueError, OSError) as e:
        print(f'{PROG}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
