"""Match two images with SuperPoint + SuperGlue from the command line.

    python -m superglue_ros.match IMAGE0 IMAGE1 --superpoint-weights W --superglue-weights W
        [--max-keypoints N] [--keypoint-threshold T] [--nms-radius R] [--match-threshold M]
        [--sinkhorn-iterations K] [--resize WIDTH HEIGHT] [--device auto|cpu|cuda]
        [--json OUT.json] [--image OUT.png]

W: a weights file (.pth, .safetensors), a Hugging Face checkpoint directory or a preset
('superpoint', 'indoor', 'outdoor'; `python -m superglue_ros.download`). --superpoint-weights may be
left out when --superglue-weights is a Hugging Face SuperGlue checkpoint or a preset. Images are
used at their own size unless --resize is given. Settings left out keep the models' defaults (the
original release's).

--json writes, for the processed images (after --resize):
    keypoints0, keypoints1      [[x, y], ...] pixels
    scores0, scores1            detection scores
    matches0                    for each keypoint of image 0: index into keypoints1, or -1
    matching_scores0            for each keypoint of image 0: SuperGlue confidence (0 when unmatched)
    image0_size, image1_size    [width, height]
    timings_ms                  per stage: preprocess, superpoint (both images), superglue_encode,
                                superglue_match, total
--image writes the side-by-side match picture (visualization.draw_matches). Without --json a short
summary is printed. Bad input (unreadable image, bad weights, bad values) exits with code 2 and one
line on stderr.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .image import ImageError, prepare_image
from .matcher import Matcher
from .models import SuperGlue, SuperPoint
from .visualization import draw_matches
from .weights import WeightsError

PROG = 'python -m superglue_ros.match'


class UsageError(Exception):
    """A bad command line, reported like every other error."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, instead of argparse's usage block
        raise UsageError(f'{message} (see --help)')


def build_parser() -> argparse.ArgumentParser:
    sp, sg = SuperPoint.default_config, SuperGlue.default_config
    parser = Parser(prog=PROG, description='Match two images with SuperPoint + SuperGlue.',
                    epilog='Weights: a .pth / .safetensors file, a Hugging Face checkpoint directory or a preset '
                           "('superpoint', 'indoor', 'outdoor'), fetched with python -m superglue_ros.download.")
    parser.add_argument('image0', type=Path, metavar='IMAGE0', help='first image (any file OpenCV reads)')
    parser.add_argument('image1', type=Path, metavar='IMAGE1', help='second image')
    parser.add_argument('--superpoint-weights', metavar='W',
                        help='SuperPoint weights; may be left out when --superglue-weights is a Hugging Face '
                             "SuperGlue checkpoint (it contains SuperPoint) or a preset (-> 'superpoint')")
    parser.add_argument('--superglue-weights', metavar='W', required=True, help='SuperGlue weights')
    parser.add_argument('--max-keypoints', type=int, metavar='N',
                        help=f'keypoints kept per image, best first; -1: all (default {sp["max_keypoints"]})')
    parser.add_argument('--keypoint-threshold', type=float, metavar='T',
                        help=f'SuperPoint detection threshold in (0, 1) (default {sp["keypoint_threshold"]})')
    parser.add_argument('--nms-radius', type=int, metavar='R',
                        help=f'SuperPoint non-maximum suppression radius in pixels (default {sp["nms_radius"]})')
    parser.add_argument('--match-threshold', type=float, metavar='M',
                        help=f'SuperGlue matching score threshold in [0, 1) (default {sg["match_threshold"]})')
    parser.add_argument('--sinkhorn-iterations', type=int, metavar='K',
                        help=f'optimal transport iterations (default {sg["sinkhorn_iterations"]})')
    parser.add_argument('--resize', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                        help='resize both images to WIDTH x HEIGHT (INTER_AREA) first; default: as given')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto',
                        help='auto: CUDA when available, else CPU (default auto)')
    parser.add_argument('--json', type=Path, metavar='OUT.json', help='write keypoints, matches and timings')
    parser.add_argument('--image', type=Path, metavar='OUT.png', help='write the match picture')
    return parser


def read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageError(f'cannot read image {path}: {"it is a directory" if path.is_dir() else "no such file"}')
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # keeps 16-bit and alpha; image.py converts
    if image is None:
        raise ImageError(f'cannot read image {path}: not an image file OpenCV can decode')
    return image


def check_arguments(args):
    """What can be checked before the slow part."""
    if args.resize is not None and min(args.resize) < 16:
        raise UsageError(f'--resize WIDTH HEIGHT must be at least 16 16, got {args.resize[0]} {args.resize[1]}')
    for flag, path in (('--json', args.json), ('--image', args.image)):
        if path is not None and not path.parent.is_dir():
            raise UsageError(f'{flag} {path}: directory {path.parent} does not exist')
    if args.image is not None and not cv2.haveImageWriter(str(args.image)):
        raise UsageError(f'--image {args.image}: no image format for this extension; use .png or .jpg')


def run(args) -> dict:
    """Match args.image0 with args.image1; returns the JSON content."""
    check_arguments(args)
    images = [read_image(args.image0), read_image(args.image1)]
    settings = {name: getattr(args, name) for name in Matcher.MODEL_SETTINGS if getattr(args, name) is not None}
    matcher = Matcher.from_weights(args.superpoint_weights, args.superglue_weights, device=args.device,
                                   resize=None if args.resize is None else tuple(args.resize), **settings)

    start = time.perf_counter()
    features = []
    for path, image in zip((args.image0, args.image1), images):
        try:
            features.append(matcher.extract(image))
        except ImageError as e:
            raise ImageError(f'{path}: {e}') from None
    result = matcher.match(*features)
    total_ms = (time.perf_counter() - start) * 1e3

    timings = {stage: sum(f.timings_ms[stage] for f in features) for stage in ('preprocess', 'superpoint')}
    timings.update(result.timings_ms, total=total_ms)
    content = {}
    for i, f in enumerate(features):
        content[f'keypoints{i}'] = f.keypoints.cpu().numpy().tolist()
        content[f'scores{i}'] = f.scores.float().cpu().numpy().tolist()
    content.update(matches0=result.matches0.tolist(), matching_scores0=result.matching_scores0.tolist(),
                   image0_size=list(features[0].image_size), image1_size=list(features[1].image_size),
                   timings_ms=timings)

    if args.json is not None:
        try:
            args.json.write_text(json.dumps(content))
        except OSError as e:
            raise OSError(f'cannot write the JSON to {args.json}: {e.strerror or e}') from None
    else:
        print_summary(args, images, content, matcher)
    if args.image is not None:
        write_picture(args, images, content, matcher)
    return content


def print_summary(args, images, content: dict, matcher: Matcher):
    for i, (path, image) in enumerate(zip((args.image0, args.image1), images)):
        size = content[f'image{i}_size']
        resized = '' if matcher.resize is None else f' (resized from {image.shape[1]}x{image.shape[0]})'
        print(f'image{i} {path}: {size[0]}x{size[1]}{resized}, {len(content[f"keypoints{i}"])} keypoints')
    confidence = np.asarray(content['matching_scores0'])[np.asarray(content['matches0']) > -1]
    stats = f' (confidence mean {confidence.mean():.2f}, min {confidence.min():.2f})' if len(confidence) else ''
    print(f'matches: {len(confidence)}{stats}')
    print(f'time on {matcher.device}: ' + ', '.join(f'{k} {v:.1f} ms' for k, v in content['timings_ms'].items()))


def write_picture(args, images, content: dict, matcher: Matcher):
    """The processed (grey, resized) images, so that the picture shows what SuperPoint saw."""
    greys = [prepare_image(image, matcher.resize)[0] for image in images]
    settings = matcher.settings
    picture = draw_matches(greys[0], greys[1], content['keypoints0'], content['keypoints1'], content['matches0'],
                           content['matching_scores0'], text_lines=[
                               f'Keypoint threshold: {settings["keypoint_threshold"]:g}',
                               f'Match threshold: {settings["match_threshold"]:g}',
                               f'{args.image0.name} : {args.image1.name}'])
    if not cv2.imwrite(str(args.image), picture):
        raise OSError(f'cannot write the picture to {args.image}: give a writable path')
    if args.json is None:
        print(f'picture: {args.image}')


def main(argv=None) -> int:
    try:
        run(build_parser().parse_args(argv))
    except (UsageError, ImageError, WeightsError, ValueError, OSError) as e:
        message = ' '.join(str(e).split())  # one line
        print(f'{PROG}: error: {message}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
