"""Export SuperPoint and SuperGlue to ONNX, and the cache of exported files the onnxruntime backend uses.

    python -m superglue_ros.export [--superpoint-weights W] [--superglue-weights W] [--output DIR]
        [--sinkhorn-iterations K] [--match-threshold M] [--opset N]
        [--shape-mode dynamic|static [--max-keypoints N --input-size WIDTH HEIGHT]]

W: any weights spec weights.py reads (preset, .pth, Hugging Face directory or .safetensors, hub id).
Without --output the files go to the export cache (export_cache_dir()), where the node's
`backend: onnxruntime` finds them, so that it starts without exporting. Written into DIR:

  superpoint.onnx          image [B, 1, H, W] float32 in [0, 1] -> scores [B, H', W'] (dense detection
                           scores before NMS; H', W' = H, W rounded down to a multiple of 8), descriptors
                           [B, D, H' / 8, W' / 8] (L2-normalised dense descriptor map)
  superglue.onnx           keypoints0 [1, N, 2] (x, y pixels), scores0 [1, N], descriptors0 [1, D, N],
                           image_size0 [2] (width, height, float32), the same for image 1 with M
                           -> matches0 [1, N] int64 (-1 = none), matches1 [1, M], matching_scores0 [1, N],
                           matching_scores1 [1, M]: the whole of SuperGlue, Sinkhorn (log space, the
                           sidecar's sinkhorn_iterations) and the mutual check (match_threshold) included
  superglue_encode.onnx    keypoints, scores, descriptors, image_size of one image -> encoded [1, D, N]
                           (SuperGlue.encode: what a keyframe caches)
  superglue_scores.onnx    encoded0 [1, D, N], encoded1 [1, D, M] -> scores [1, N, M] (SuperGlue.score_matrix)
  export.json              the sidecar: format, files, opset, exporter and versions, shape mode, input size,
                           the settings baked into the graphs, each model's architecture and the sha256 of
                           its weights (the source file's, when exported from a spec, and the state dict's)

Shape modes. dynamic (the default, what the onnxruntime backend runs): N, M, B, H and W are dynamic axes.
static (--shape-mode static, for runtimes that want fixed shapes, such as TensorRT engines): the image is
[1, 1, HEIGHT, WIDTH] of --input-size, N = M = --max-keypoints, and every SuperGlue file takes a mask
per image as well: mask0 [1, N], mask1 [1, M] (superglue_encode: mask [1, N]), bool, True for a real
keypoint. Pad each side's keypoints, scores and descriptors to N with any finite values: padded
keypoints change nothing for the real ones (SuperGlue's padding masks: attention never reads them,
Sinkhorn gives them zero marginals) and get match -1 and score 0 (test_export.py, test_fidelity.py).

Where the graphs stop, and why (measured on the 2-core development CPU, AMD EPYC, 2026-12-02):
  - SuperPoint stops at the dense maps. Detection (NMS, threshold, border, top-k) and descriptor
    sampling stay in torch, in the same functions the torch model runs
    (SuperPoint.keypoints_from_maps: simple_nms, select_keypoints, sample_descriptors), so there is one
    place for those rules (a detection mask too), and nms_radius, keypoint_threshold and max_keypoints
    stay live settings. The dense network is where the time goes: 640x480, onnxruntime ran it, both
    heads, in 440 ms against torch's 717 ms, max abs difference 3.8e-5 (issue 14; 125 against 173 ms in
    benchmarks/benchmark_onnxruntime.py on a quieter machine); NMS and top-k on a 640x480 map take tens
    of ms in torch (a frame's SuperPoint with selection: 170 ms), and in a graph they would fix
    max_keypoints and the radius.
  - superglue.onnx runs to matches and scores, for runtimes such as TensorRT that take one graph. The
    onnxruntime backend (runtime.py) runs superglue_encode and superglue_scores instead, then torch's
    Sinkhorn and mutual check (SuperGlue.matches_from_scores): a keyframe's encoding is cached,
    sinkhorn_iterations and match_threshold stay live, and on the CPU torch's exp-domain Sinkhorn is
    faster than the log-space graph: 35 against 388 ms for 1024 x 1024 keypoints and 100 iterations, while
    onnxruntime runs the GNN to the score matrix in 311 against torch's 490 ms
    (benchmarks/benchmark_onnxruntime.py, 2026-12-02).

Exporter: torch.onnx.export with dynamo=False (the TorchScript exporter) and dynamic_axes. The dynamo
exporter (dynamic_shapes) exports the same graphs with the same results here, but took 54 s for the two
SuperGlue stages and 116 s for superglue.onnx, against 2 to 3 s (2026-12-02, the 2-core development
machine, separate exploratory runs under load: indicative): too long for a node's first start. The models stay plain PyTorch; two lines in them know about an export
(torch.onnx.is_in_onnx_export: SuperPoint skips its oneDNN layout, Sinkhorn takes the log-space updates,
which need no host read), and SuperGlue's keypoint normalisation takes the image size as a tensor too.

Errors: ExportError (one line: what failed and what to do) for an export that fails or a directory that
cannot be written. An export directory made for other weights or settings, or incomplete, is detected
by its sidecar and exported again (cached_export), with one line saying why. The sidecar is written last
(and an earlier one removed first), so a directory whose export was interrupted is never taken for one.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .models import SuperGlue, SuperPoint
from .settings import SETTINGS, check_all

FORMAT = 1            # of the sidecar and the files; part of the cache key
OPSET = 17            # read by onnxruntime, TensorRT 8.6+ and OpenVINO; the graphs need nothing newer
MIN_OPSET = 14        # the oldest the graphs export to (scaled_dot_product_attention)
SIDECAR = 'export.json'
FILES = ('superpoint.onnx', 'superglue.onnx', 'superglue_encode.onnx', 'superglue_scores.onnx')
BAKED_SETTINGS = ('sinkhorn_iterations', 'match_threshold')  # superglue.onnx fixes them
PROG = 'python -m superglue_ros.export'


class ExportError(RuntimeError):
    """An export that failed or cannot be used; the message says what and what to do."""


def export_cache_dir() -> Path:
    """$SUPERGLUE_ROS_ONNX_DIR, else $XDG_CACHE_HOME/superglue_ros/onnx, else ~/.cache/superglue_ros/onnx
    (beside the weights cache of download.weights_cache_dir, not inside $SUPERGLUE_ROS_WEIGHTS_DIR,
    which may be read-only)."""
    if os.environ.get('SUPERGLUE_ROS_ONNX_DIR'):
        return Path(os.environ['SUPERGLUE_ROS_ONNX_DIR']).expanduser()
    base = Path(os.environ['XDG_CACHE_HOME']).expanduser() if os.environ.get('XDG_CACHE_HOME') else \
        Path.home() / '.cache'
    return base / 'superglue_ros' / 'onnx'


def state_sha256(model: nn.Module) -> str:
    """sha256 of a model's weights as loaded: every state-dict entry in order, its name, dtype, shape and
    bytes. The same weights give the same digest whatever file format they came from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name} {tensor.dtype} {tuple(tensor.shape)}\n'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def describe(superpoint: SuperPoint, superglue: SuperGlue, opset: int = OPSET, sources: dict | None = None,
             static: tuple | None = None) -> dict:
    """The sidecar's content for these models, except 'files' and 'key'. sources: {'superpoint': spec,
    'superglue': spec} -> {'spec', 'file', 'sha256'} of each source file (source_files). static: None
    (dynamic axes) or (max_keypoints, (width, height)) (check_static)."""
    models = {'superpoint': superpoint, 'superglue': superglue}
    return {
        'format': FORMAT,
        'opset': opset,
        'exporter': 'torch.onnx.export(dynamo=False), dynamic_axes',
        'torch': torch.__version__.split('+')[0],
        'shape_mode': 'dynamic' if static is None else 'static',
        'input_size': None if static is None else list(static[1]),  # [width, height] of a static export
        'max_keypoints': None if static is None else static[0],    # keypoints per image of a static export
        'settings': {name: superglue.config[name] for name in BAKED_SETTINGS},
        'architecture': {
            'superpoint': {k: superpoint.config[k] for k in ('descriptor_dim',)},
            'superglue': {k: superglue.config[k] for k in ('descriptor_dim', 'keypoint_encoder', 'gnn_layers',
                                                           'num_heads')}},
        'weights': {name: {**(sources or {}).get(name, {}), 'state_sha256': state_sha256(model)}
                    for name, model in models.items()},
    }


def key_of(content: dict) -> str:
    """sha256 of what decides the exported graphs (the sidecar without provenance: source file names)."""
    decisive = {**content, 'weights': {name: w['state_sha256'] for name, w in content['weights'].items()}}
    decisive.pop('key', None)
    decisive.pop('files', None)
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


# -- the graphs ------------------------------------------------------------------------------------

class SuperPointMaps(nn.Module):
    """image [B, 1, H, W] -> dense scores before NMS [B, H', W'], descriptor map [B, D, H' / 8, W' / 8]."""

    def __init__(self, superpoint: SuperPoint):
        super().__init__()
        self.superpoint = superpoint

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        features = self.superpoint.encode(image)
        return self.superpoint.dense_scores(features), self.superpoint.descriptor_map(features)


class SuperGlueEncode(nn.Module):
    """SuperGlue.encode with the image size as a tensor [2] (width, height); mask [1, N] (static shapes)."""

    def __init__(self, superglue: SuperGlue):
        super().__init__()
        self.superglue = superglue

    def forward(self, keypoints: Tensor, scores: Tensor, descriptors: Tensor, image_size: Tensor,
                mask: Tensor | None = None) -> Tensor:
        return self.superglue.encode(keypoints, scores, descriptors, image_size, mask=mask)


class SuperGlueScores(nn.Module):
    """SuperGlue.score_matrix: encoded0 [1, D, N], encoded1 [1, D, M] (, mask0 [1, N], mask1 [1, M]) -> [1, N, M]."""

    def __init__(self, superglue: SuperGlue):
        super().__init__()
        self.superglue = superglue

    def forward(self, encoded0: Tensor, encoded1: Tensor, mask0: Tensor | None = None,
                mask1: Tensor | None = None) -> Tensor:
        return self.superglue.score_matrix(encoded0, encoded1, mask0, mask1)


class SuperGlueMatches(nn.Module):
    """The whole SuperGlue: both images' keypoints, scores, descriptors and sizes (and masks: static
    shapes) -> matches and scores."""

    def __init__(self, superglue: SuperGlue):
        super().__init__()
        self.superglue = superglue

    def forward(self, keypoints0, scores0, descriptors0, image_size0, keypoints1, scores1, descriptors1, image_size1,
                mask0=None, mask1=None):
        superglue = self.superglue
        out = superglue.match(superglue.encode(keypoints0, scores0, descriptors0, image_size0, mask=mask0),
                              superglue.encode(keypoints1, scores1, descriptors1, image_size1, mask=mask1),
                              mask0, mask1)
        return out['matches0'], out['matches1'], out['matching_scores0'], out['matching_scores1']


def _image_inputs(i: str, n: int, dim: int) -> dict:
    """Example inputs of one image's keypoints (n of them, inside a 640x480 image)."""
    generator = torch.Generator().manual_seed(n)
    keypoints = torch.rand(1, n, 2, generator=generator) * torch.tensor([639.0, 479.0])
    return {f'keypoints{i}': keypoints, f'scores{i}': torch.rand(1, n, generator=generator),
            f'descriptors{i}': nn.functional.normalize(torch.randn(1, dim, n, generator=generator), dim=1),
            f'image_size{i}': torch.tensor([640.0, 480.0])}


def graphs(superpoint: SuperPoint, superglue: SuperGlue, static: tuple | None = None) -> dict:
    """file name -> (module, example inputs {name: tensor}, output names, dynamic axes). static: None, or
    (max_keypoints K, (width, height)): every shape fixed, the image [1, 1, height, width], each side's
    keypoints padded to K with a mask [1, K] (bool, True: a real keypoint), as SuperGlue takes it."""
    dim = superglue.config['descriptor_dim']
    if static is None:
        one, other = _image_inputs('0', 48, dim), _image_inputs('1', 40, dim)
        image = torch.rand(1, 1, 120, 160)
    else:
        count, (width, height) = static
        one, other = _image_inputs('0', count, dim), _image_inputs('1', count, dim)
        one['mask0'] = other['mask1'] = torch.arange(count)[None] < max(count - 3, 1)
        image = torch.rand(1, 1, height, width)
    masks = {k: v for k, v in {**one, **other}.items() if k.startswith('mask')}  # the last inputs (forward order)
    pair = {**{k: v for k, v in {**one, **other}.items() if k not in masks}, **masks}
    encode_inputs = {k.rstrip('0'): v for k, v in one.items()}
    scores_inputs = {'encoded0': one['descriptors0'], 'encoded1': other['descriptors1'], **masks}
    keypoint_axes = {f'{kind}{i}': {axis: axis_name} for i, axis_name in (('0', 'N'), ('1', 'M'))
                     for kind, axis in (('keypoints', 1), ('scores', 1), ('descriptors', 2))}
    match_axes = {f'{kind}{i}': {1: axis_name} for i, axis_name in (('0', 'N'), ('1', 'M'))
                  for kind in ('matches', 'matching_scores')}
    dynamic = static is None
    return {
        'superpoint.onnx': (SuperPointMaps(superpoint), {'image': image}, ['scores', 'descriptors'],
                            {'image': {0: 'B', 2: 'H', 3: 'W'}, 'scores': {0: 'B', 1: 'H8', 2: 'W8'},
                             'descriptors': {0: 'B', 2: 'h', 3: 'w'}} if dynamic else None),
        'superglue.onnx': (SuperGlueMatches(superglue), pair,
                           ['matches0', 'matches1', 'matching_scores0', 'matching_scores1'],
                           {**keypoint_axes, **match_axes} if dynamic else None),
        'superglue_encode.onnx': (SuperGlueEncode(superglue), encode_inputs, ['encoded'],
                                  {'keypoints': {1: 'N'}, 'scores': {1: 'N'}, 'descriptors': {2: 'N'},
                                   'encoded': {2: 'N'}} if dynamic else None),
        'superglue_scores.onnx': (SuperGlueScores(superglue), scores_inputs, ['scores'],
                                  {'encoded0': {2: 'N'}, 'encoded1': {2: 'M'}, 'scores': {1: 'N', 2: 'M'}}
                                  if dynamic else None),
    }


def check_opset(opset: int) -> int:
    """opset, or ExportError when the graphs cannot be exported to it (checked before exporting: torch's
    exporter prints its whole graph to stderr when an operator has no export at an opset)."""
    from torch.onnx import _constants
    newest = getattr(_constants, 'ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET', OPSET)
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f'cannot export to opset {opset}: the graphs need opset {MIN_OPSET} or newer, and torch '
                          f'{torch.__version__} exports up to {newest}: give --opset {MIN_OPSET} to {newest} '
                          f'(default {OPSET})')
    return opset


def check_static(max_keypoints, input_size) -> tuple:
    """(max_keypoints, (width, height)) of a static export, or ValueError saying what it needs."""
    from .settings import check, resize_of
    if check('max_keypoints', max_keypoints) < 1:
        raise ValueError('static shapes need a keypoint count: give --max-keypoints N (N >= 1; each image is '
                         'padded to N)')
    size = resize_of(input_size)
    if size is None:
        raise ValueError('static shapes need the image size: give --input-size WIDTH HEIGHT (the node\'s resize)')
    return max_keypoints, size


def export(superpoint: SuperPoint, superglue: SuperGlue, directory: Path, opset: int = OPSET,
           sources: dict | None = None, static: tuple | None = None) -> dict:
    """Write FILES and the sidecar into `directory` (created; files there replaced) from the models on
    their current settings (superglue's sinkhorn_iterations and match_threshold are baked into
    superglue.onnx); static: None (dynamic axes) or (max_keypoints, (width, height)) (graphs()). The models are exported in float32 on the CPU, from copies: the given ones are not
    changed. Each file passes onnx.checker.check_model. Returns the sidecar content. ExportError."""
    try:
        import onnx
    except ImportError:
        raise ExportError('the ONNX export needs the onnx package (pip install onnx onnxscript), or use backend '
                          "'torch'") from None
    content = describe(superpoint, superglue, check_opset(opset), sources, static)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SIDECAR).unlink(missing_ok=True)  # written last: until then the directory is no export
    except OSError as e:
        raise ExportError(f'cannot create the export directory {directory}: {e.strerror or e}') from None
    superpoint, superglue = (_exportable(model) for model in (superpoint, superglue))
    for name, (module, inputs, outputs, axes) in graphs(superpoint, superglue, static).items():
        path = directory / name
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # the TracerWarnings are about `if n == 0` branches, taken alike by every exported size N >= 1;
                # the DeprecationWarning is the TorchScript exporter's, chosen on purpose (module doc)
                warnings.simplefilter('ignore', torch.jit.TracerWarning)
                warnings.simplefilter('ignore', DeprecationWarning)
                torch.onnx.export(module.eval(), tuple(inputs.values()), str(path), dynamo=False, opset_version=opset,
                                  input_names=list(inputs), output_names=outputs, dynamic_axes=axes)
            onnx.checker.check_model(str(path))
        except OSError as e:
            raise ExportError(f'cannot write {path}: {e.strerror or e}') from None
        except Exception as e:  # torch's exporter and onnx's checker raise many kinds
            from .matcher import is_out_of_memory  # not at the top: matcher imports runtime, which imports this
            if is_out_of_memory(e):  # the trace runs the models on example inputs: static ones of max_keypoints
                lower = 'lower --max-keypoints' if static is not None else 'free some memory'
                raise ExportError(f'out of host memory while exporting {name} (the exporter runs the model once on '
                                  f'example inputs{f" of {static[0]} keypoints" if static else ""}): {lower}') from None
            first = (str(e).strip().splitlines() or [''])[0]
            raise ExportError(f'exporting {name} failed ({type(e).__name__}: {first}); torch {torch.__version__}, '
                              f'opset {opset}: try another --opset, or backend torch') from None
    content['files'] = list(FILES)
    content['key'] = key_of(content)
    try:
        (directory / SIDECAR).write_text(json.dumps(content, indent=2) + '\n')
    except OSError as e:
        raise ExportError(f'cannot write {directory / SIDECAR}: {e.strerror or e}') from None
    return content


def _exportable(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of the model in eval mode with the same config (the exporter traces float32)."""
    copy = type(model)({k: v for k, v in model.config.items()})
    copy.load_state_dict({k: v.float().cpu() for k, v in model.state_dict().items()})
    return copy.eval()


def read_sidecar(directory: Path) -> dict | None:
    """The sidecar of an export directory, None when there is none or it is unreadable."""
    try:
        content = json.loads((Path(directory) / SIDECAR).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return content if isinstance(content, dict) else None


def mismatch(content: dict | None, expected: dict, directory: Path) -> str | None:
    """Why the export in `directory` (sidecar `content`) is not the one `expected` (describe()), or None
    when it is, with all its files present."""
    if content is None:
        return f'no readable {SIDECAR} in {directory}'
    differences = []
    for field in ('format', 'opset', 'torch', 'shape_mode', 'input_size', 'max_keypoints', 'settings', 'architecture'):
        if content.get(field) != expected[field]:
            differences.append(f'{field} {content.get(field)!r} (wanted {expected[field]!r})')
    found_weights = content.get('weights') if isinstance(content.get('weights'), dict) else {}
    for name, weights in expected['weights'].items():
        found = found_weights.get(name)  # a sidecar of another format or a damaged one: anything may be there
        found = found.get('state_sha256') if isinstance(found, dict) else None
        if found != weights['state_sha256']:
            differences.append(f'{name} weights sha256 {str(found)[:12]}... (wanted {weights["state_sha256"][:12]}...)')
    if differences:
        return f'{directory} was exported for other weights or settings: ' + ', '.join(differences)
    missing = [name for name in FILES if not (Path(directory) / name).is_file()]
    if missing:
        return f'{directory} lacks {", ".join(missing)}'
    return None


def cached_export(superpoint: SuperPoint, superglue: SuperGlue, log=None, static: tuple | None = None) -> Path:
    """The export directory of these models and settings in export_cache_dir(), exported now when there
    is none yet (or the one there is incomplete or for other weights: the sidecar says; it is exported
    again). The directory's name is the first 16 hex digits of the key (key_of), so that other weights
    and settings get their own. Written into a temporary directory and renamed: another process that
    exports at the same time never sees half an export. log: a function that takes one line (the node's
    logger), told when an export starts and why. static: as export(). ExportError."""
    expected = describe(superpoint, superglue, static=static)
    root = export_cache_dir()
    directory = root / key_of(expected)[:16]
    problem = mismatch(read_sidecar(directory), expected, directory)
    if problem is None:
        return directory
    if log is not None:
        log(f'exporting the models to ONNX in {directory} ({problem if directory.exists() else "not exported yet"}); '
            f'this takes a few seconds, once per weights and settings')
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f'.{directory.name}-', dir=root))
    except OSError as e:
        raise ExportError(f'cannot write the ONNX export cache {root}: {e.strerror or e}; set SUPERGLUE_ROS_ONNX_DIR '
                          'to a writable directory') from None
    try:
        export(superpoint, superglue, staging, static=static)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError as e:  # another process renamed its export there first: use it if it is the one
            if mismatch(read_sidecar(directory), expected, directory) is not None:
                raise ExportError(f'cannot put the export in {directory}: {e.strerror or e}; set '
                                  'SUPERGLUE_ROS_ONNX_DIR to a writable directory') from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


# -- the command -----------------------------------------------------------------------------------

def source_files(superpoint_spec, superglue_spec) -> dict:
    """{'superpoint' / 'superglue': {'spec', 'file', 'sha256'}} of the files the specs name (weights.py's
    resolution; SuperPoint from the SuperGlue spec when superpoint_spec is empty)."""
    from .download import sha256_of
    from .weights import resolve, superpoint_source

    specs = {'superpoint': superpoint_spec or superpoint_source(superglue_spec), 'superglue': superglue_spec}
    sources = {}
    for name, spec in specs.items():
        path = resolve(spec, 'SuperPoint' if name == 'superpoint' else 'SuperGlue')
        path = path / 'model.safetensors' if path.is_dir() else path
        sources[name] = {'spec': str(spec), 'file': str(path.resolve()), 'sha256': sha256_of(path)}
    return sources


def build_parser() -> argparse.ArgumentParser:
    from .match import Parser, add_setting_flags

    parser = Parser(prog=PROG, description='Export SuperPoint and SuperGlue to ONNX (superpoint.onnx, superglue.onnx, '
                                           f'the per-stage SuperGlue files and the sidecar {SIDECAR}).')
    add_setting_flags(parser, ('superpoint_weights', 'superglue_weights', 'max_keypoints') + BAKED_SETTINGS)
    parser.add_argument('--shape-mode', choices=('dynamic', 'static'), default='dynamic',
                        help="'dynamic' (default): keypoint counts, image size and batch are dynamic axes; 'static': "
                             'every shape fixed, one image of --input-size, each side padded to --max-keypoints with '
                             'a mask (for runtimes that want fixed shapes, such as TensorRT engines)')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'),
                        help='image size of a static export (the node\'s resize)')
    parser.add_argument('--output', type=Path, metavar='DIR',
                        help='directory to write (default: the export cache the onnxruntime backend reads, '
                             '$SUPERGLUE_ROS_ONNX_DIR, else ~/.cache/superglue_ros/onnx/<key>)')
    parser.add_argument('--opset', type=int, default=OPSET, metavar='N', help=f'ONNX opset (default: {OPSET})')
    return parser


def run(args) -> Path:
    """Export as the command line says; returns the directory written."""
    from .weights import load_superglue, load_superpoint

    settings = check_all({name: getattr(args, name) for name in ('superpoint_weights', 'superglue_weights')
                          + BAKED_SETTINGS if getattr(args, name) is not None})
    check_opset(args.opset)
    static = None
    if args.shape_mode == 'static':
        static = check_static(-1 if args.max_keypoints is None else args.max_keypoints, args.input_size)
    elif args.max_keypoints is not None or args.input_size is not None:
        raise ValueError('--max-keypoints and --input-size fix the shapes of --shape-mode static; a dynamic export '
                         'takes any keypoint count and image size')
    superglue_spec = settings.pop('superglue_weights', SETTINGS['superglue_weights'].default)
    superpoint_spec = settings.pop('superpoint_weights', '') or None
    superpoint = load_superpoint(superpoint_spec, superglue_spec=superglue_spec)
    superglue = load_superglue(superglue_spec, settings)
    sources = source_files(superpoint_spec, superglue_spec)
    if args.output is None:
        directory = export_cache_dir() / key_of(describe(superpoint, superglue, args.opset, static=static))[:16]
    else:
        directory = args.output
    content = export(superpoint, superglue, directory, args.opset, sources, static)
    shapes = 'dynamic shapes' if static is None else f'static shapes: {static[1][0]}x{static[1][1]}, {static[0]} keypoints'
    print(f'wrote {", ".join(content["files"])} and {SIDECAR} to {directory} ({shapes}, opset {content["opset"]}, '
          f'sinkhorn_iterations {content["settings"]["sinkhorn_iterations"]}, match_threshold '
          f'{content["settings"]["match_threshold"]})')
    return directory


def main(argv=None) -> int:
    from .match import UsageError
    from .weights import WeightsError

    try:
        run(build_parser().parse_args(argv))
    except (UsageError, WeightsError, ExportError, ValueError, OSError) as e:
        print(f'{PROG}: error: {" ".join(str(e).split())}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{PROG}: interrupted: the export is incomplete (it has no {SIDECAR}); nothing uses it and the '
              "onnxruntime backend exports again in its place: run the command again to finish it", file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
