"""Match two images with SuperPoint + SuperGlue from the command line.

    python -m superglue_ros.match IMAGE0 IMAGE1 [--superpoint-weights W] [--superglue-weights W]
        [--max-keypoints N] [--keypoint-threshold T] [--nms-radius R] [--match-threshold M]
        [--sinkhorn-iterations K] [--max-matching-memory-mb MIB] [--resize SIZE [SIZE]]
        [--device auto|cpu|cuda|cuda:N] [--precision fp32|bf16|fp16] [--backend torch|onnxruntime|auto]
        [--json OUT.json] [--image OUT.png]

The setting flags are the rows of superglue_ros/settings.py (defaults, accepted values, descriptions),
the same as the node's parameters.

W: a weights file (.pth, .safetensors), a Hugging Face checkpoint directory, a Hugging Face hub id
(owner/name[@revision]) or a preset ('superpoint', 'indoor', 'outdoor'; `python -m superglue_ros.download`),
see weights.py. --superglue-weights defaults to 'indoor', as the original's match_pairs.py;
--superpoint-weights defaults to the SuperPoint of --superglue-weights: the one inside a Hugging Face
SuperGlue checkpoint or hub id, else the preset 'superpoint'. Settings left out keep the models'
defaults (the original release's).

Files are read exactly as the original release reads them (read_image in models/utils.py of
magicleap/SuperGluePretrainedNetwork): cv2.imread(path, cv2.IMREAD_GRAYSCALE), which decodes straight
to grey (a JPEG's luma) and applies the EXIF orientation; with --resize, cv2.resize(image, (w, h)) with
its default interpolation (bilinear) on that uint8 image; then float32 / 255. Images are used at their
own size unless --resize is given (the original's match_pairs.py defaults to --resize 640 480).
--resize takes the original's forms (match_pairs.py, process_resize in models/utils.py): WIDTH HEIGHT;
one number N, the longest side (each image scaled by N / max(w, h), sides rounded); WIDTH -1, the same
as WIDTH alone; -1, the size as given.

--json writes, for the processed images (after the EXIF orientation and --resize: pixels of the resized
images, as the original's match_pairs.py), and prints nothing:
    keypoints0, keypoints1      [[x, y], ...] pixels
    scores0, scores1            detection scores
    matches0                    for each keypoint of image 0: index into keypoints1, or -1
    matching_scores0            for each keypoint of image 0: SuperGlue confidence (0 when unmatched)
    image0_size, image1_size    [width, height]
    timings_ms                  per stage: preprocess, superpoint (both images), the SuperGlue
                                stages of MatchResult.timings_ms, total (reading the files excluded)
--image writes the side-by-side match picture (visualization.draw_matches). Without --json a short
summary is printed. Bad input (unreadable image, bad weights, bad values) and running out of memory
(a pair over --max-matching-memory-mb is refused before SuperGlue runs) exit with code 2 and one line
on stderr.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .export import ExportError
from .image import ImageError
from .matcher import Matcher, ResourceError, memory_guard
from .runtime import RuntimeUnavailable
from .settings import MAX_RESIZE, MIN_IMAGE_SIZE, SETTINGS, check_all, resize_of
from .visualization import draw_matches
from .weights import WeightsError

PROG = 'python -m superglue_ros.match'


class UsageError(Exception):
    """A bad command line, reported like every other error."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, instead of argparse's usage block
        raise UsageError(f'{message} (see --help)')


# flag metavars of the settings; everything else about a flag comes from settings.py
METAVARS = {'superpoint_weights': 'W', 'superglue_weights': 'W', 'device': 'DEVICE', 'precision': 'P',
            'resize': 'SIZE', 'max_keypoints': 'N', 'keypoint_threshold': 'T', 'nms_radius': 'R',
            'match_threshold': 'M', 'sinkhorn_iterations': 'K', 'max_matching_memory_mb': 'MIB',
            'backend': 'B'}


def build_parser() -> argparse.ArgumentParser:
    """The CLI's flags: one per settings.py row marked cli (type, description, default from the table),
    plus --json and --image. Values are checked by settings.check in run(), with the table's message."""
    parser = Parser(prog=PROG, description='Match two images with SuperPoint + SuperGlue.',
                    epilog='Weights: a .pth / .safetensors file, a Hugging Face checkpoint directory, a Hugging Face '
                           "hub id (owner/name[@revision]) or a preset ('superpoint', 'indoor', 'outdoor'); presets "
                           'and hub ids are fetched with python -m superglue_ros.download NAME.')
    parser.add_argument('image0', type=Path, metavar='IMAGE0',
                        help='first image (any file OpenCV reads; read as grey with its EXIF orientation applied)')
    parser.add_argument('image1', type=Path, metavar='IMAGE1', help='second image')
    add_setting_flags(parser, [name for name, setting in SETTINGS.items() if setting.cli])
    parser.add_argument('--json', type=Path, metavar='OUT.json', help='write keypoints, matches and timings')
    parser.add_argument('--image', type=Path, metavar='OUT.png', help='write the match picture')
    return parser


def add_setting_flags(parser: argparse.ArgumentParser, setting_names):
    """One flag per settings.py row named (type, description, default from the table); values are
    checked by settings.check, with the table's message (also export.py's flags)."""
    for name in setting_names:
        setting = SETTINGS[name]
        default = setting.default
        kind = int if isinstance(default, list) else type(default)
        help_text = f'{setting.description} (default: {default!r})'
        nargs = 2 if isinstance(default, list) else None
        if name == 'resize':  # the node's description speaks of INTER_AREA and published pixels
            nargs, help_text = '+', (
                'resize both images as the original\'s match_pairs.py: WIDTH HEIGHT; one number, the longest side '
                '(aspect kept); WIDTH -1, the same; -1, as given. cv2.resize with its default (bilinear) '
                'interpolation, as its read_image; the JSON is then in pixels of the resized images, as '
                'match_pairs.py writes them (default: as given)')
        parser.add_argument(f'--{name.replace("_", "-")}', type=kind, nargs=nargs,
                            metavar=METAVARS[name], help=help_text.replace('%', '%%'))


def settings_of(args) -> dict:
    """The settings given on the command line but --resize (resize_request: read_image applies it, not the
    Matcher), checked (settings.check_all: ValueError, one line)."""
    return check_all({name: getattr(args, name) for name, setting in SETTINGS.items()
                      if setting.cli and name != 'resize' and getattr(args, name) is not None})


def resize_request(values) -> int | tuple[int, int] | None:
    """--resize as the original's match_pairs.py takes it: None (not given), [-1] or [-1, -1] -> None (as
    given); [N] or [N, -1] -> N, the longest side (an integer in [MIN_IMAGE_SIZE, MAX_RESIZE]);
    [WIDTH, HEIGHT] -> (WIDTH, HEIGHT) (the resize setting: [0, 0] is as given). UsageError or ValueError,
    one line, for anything else."""
    if values is None:
        return None
    if len(values) > 2:
        raise UsageError(f'--resize takes one or two numbers, got {len(values)}: WIDTH HEIGHT, the longest side N '
                         '(or N -1), or -1 for the size as given')
    if len(values) == 2 and values[1] != -1:
        return resize_of(values)
    side = values[0]
    if side == -1:
        return None
    if not MIN_IMAGE_SIZE <= side <= MAX_RESIZE:
        raise UsageError(f'--resize {" ".join(map(str, values))}: the longest side must be an integer in '
                         f'[{MIN_IMAGE_SIZE}, {MAX_RESIZE}], or -1 for the size as given')
    return side


def resized_size(size: tuple[int, int], resize: int | tuple[int, int] | None) -> tuple[int, int]:
    """(width, height) an image of `size` (width, height) is resized to for `resize` (resize_request): as
    given, the (width, height) given, or scaled so that its longest side is `resize`, each side rounded
    (Python's round, as process_resize in the original's models/utils.py)."""
    if resize is None:
        return size
    if isinstance(resize, tuple):
        return resize
    scale = resize / max(size)
    return int(round(size[0] * scale)), int(round(size[1] * scale))


def read_image(path: Path, resize=None) -> tuple[np.ndarray, tuple[int, int]]:
    """The image file as the original's read_image (models/utils.py) gives it to SuperPoint.

    cv2.imread(path, cv2.IMREAD_GRAYSCALE): decoded straight to 8-bit grey (a JPEG's luma, without a
    colour round trip), EXIF orientation applied; with a resize (resize_request: (width, height), or the
    longest side): cv2.resize to resized_size() with its default interpolation (bilinear) on the uint8
    image. The Matcher then divides by 255 in float32 (image.grey_tensor), as the original's frame2tensor.
    Returns (grey [h, w] uint8, (width, height) of the file after orientation).
    Raises ImageError naming the file when it cannot be read or a longest side makes it smaller than
    MIN_IMAGE_SIZE, ResourceError when resizing runs out of memory."""
    if not path.is_file():
        reason = 'it is a directory' if path.is_dir() else 'not a regular file' if path.exists() else 'no such file'
        raise ImageError(f'cannot read image {path}: {reason}')
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ImageError(f'cannot read image {path}: not an image file OpenCV can decode')
    size = (image.shape[1], image.shape[0])
    if resize is not None:
        width, height = resized_size(size, resize)
        if min(width, height) < MIN_IMAGE_SIZE:
            raise ImageError(f'{path} is {size[0]}x{size[1]}: --resize {resize} (the longest side) makes it '
                             f'{width}x{height}, below {MIN_IMAGE_SIZE} pixels: give a larger size, or WIDTH HEIGHT')
        with memory_guard(torch.device('cpu'), f'resizing {path} to {width}x{height}', '--resize'):
            image = cv2.resize(image, (width, height))
    return image, size


def check_arguments(args) -> tuple[dict, int | tuple[int, int] | None]:
    """What can be checked before the slow part: the settings given, checked, and the resize_request."""
    resize, settings = resize_request(args.resize), settings_of(args)
    for flag, path in (('--json', args.json), ('--image', args.image)):
        if path is not None and not path.parent.is_dir():
            raise UsageError(f'{flag} {path}: directory {path.parent} does not exist')
    if args.image is not None and not cv2.haveImageWriter(str(args.image)):
        raise UsageError(f'--image {args.image}: no image format for this extension; use .png or .jpg')
    return settings, resize


def run(args) -> dict:
    """Match args.image0 with args.image1; returns the JSON content."""
    settings, resize = check_arguments(args)
    read = [read_image(path, resize) for path in (args.image0, args.image1)]
    images, sizes = [grey for grey, _ in read], [size for _, size in read]
    # The images are read and resized here, as the original does: the matcher takes them as they are.
    matcher = Matcher.from_weights(settings.pop('superpoint_weights', SETTINGS['superpoint_weights'].default),
                                   settings.pop('superglue_weights', SETTINGS['superglue_weights'].default),
                                   **settings)

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
        print_summary(args, sizes, content, matcher)
    if args.image is not None:
        write_picture(args, images, content, matcher)
    return content


def print_summary(args, sizes, content: dict, matcher: Matcher):
    for i, (path, (width, height)) in enumerate(zip((args.image0, args.image1), sizes)):
        size = content[f'image{i}_size']
        resized = '' if (width, height) == tuple(size) else f' (resized from {width}x{height})'
        print(f'image{i} {path}: {size[0]}x{size[1]}{resized}, {len(content[f"keypoints{i}"])} keypoints')
    confidence = np.asarray(content['matching_scores0'])[np.asarray(content['matches0']) > -1]
    stats = f' (confidence mean {confidence.mean():.2f}, min {confidence.min():.2f})' if len(confidence) else ''
    print(f'matches: {len(confidence)}{stats}')
    print(f'time on {matcher.device}: ' + ', '.join(f'{k} {v:.1f} ms' for k, v in content['timings_ms'].items()))


def write_picture(args, images, content: dict, matcher: Matcher):
    """The processed (grey, resized) images, so that the picture shows what SuperPoint saw."""
    settings = matcher.settings
    picture = draw_matches(images[0], images[1], content['keypoints0'], content['keypoints1'], content['matches0'],
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
    except (UsageError, ImageError, WeightsError, ResourceError, ExportError, RuntimeUnavailable, ValueError,
            OSError) as e:
        message = ' '.join(str(e).split())  # one line
        print(f'{PROG}: error: {message}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
