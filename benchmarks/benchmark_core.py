"""CPU speed of SuperPoint + SuperGlue: this project in fp32, bf16 and on onnxruntime against transformers, in one run.

    python benchmarks/benchmark_core.py [--threads 2] [--runs 5] [--warmup 1] [--max-keypoints 1024]
        [--sinkhorn-iterations 100] [--resize WIDTH HEIGHT] [--device cpu] [--no-transformers] [--no-bf16]
        [--no-onnxruntime] [--sharp] [--candidates] [IMAGE0 IMAGE1]

Everything runs in one process, on the same two images (default: freiburg frames 0 and 1, 640x480, else
frames 0 and 2 of demo/synthetic.py's 640x480 sequence; the first is the keyframe), with the same confident random weights (random_weights.py; --sharp: with a 19x final projection,
whose couplings span > 10,000 units: Sinkhorn on the CPU must stay fast for them too), the same threads and settings (max_keypoints, keypoint threshold 0.005,
NMS radius 4, no border removal (see BORDER), Sinkhorn iterations, match threshold 0.2). Each round
runs every implementation once, so that a change of machine load hits all of them; figures are
medians over the rounds after warm-up, and the ratios compare figures of this one run.

Measured, for this project (the models called directly, grey [1, 1, H, W] tensors in; in ms):
  per-frame front-end  what the node does for each new frame: SuperPoint on the frame, SuperGlue.encode
                       of it, SuperGlue.match against the keyframe's cached encoding; and the same through
                       the node's own frame path (pipeline.CameraPipeline.process on the uint8 image: upload,
                       grey conversion, SuperPoint, SuperGlue, tracker)
  full pair            nothing cached: SuperPoint and encode on both images, then match
  stages (ms)          superpoint (one image), encode (one image), match (the remaining GNN layers,
                       final projection, Sinkhorn, mutual check), and the Sinkhorn part of that
                       match (log_optimal_transport, timed inside it)
onnxruntime: the same rows for backend 'onnxruntime' (runtime.py) on the same weights and settings in fp32, as
Matcher runs it: superpoint.onnx then the keypoint selection in torch, superglue_encode.onnx,
superglue_scores.onnx then torch's Sinkhorn and mutual check (SuperGlue.matches_from_scores), and
CameraPipeline.process on a Matcher with that backend. onnxruntime's intra-op threads are torch's. The
export goes to a temporary directory of this run unless SUPERGLUE_ROS_ONNX_DIR is set. Its keypoints and
matches are checked against fp32 (keypoints identical, match agreement), and a line names the faster of
torch fp32 and onnxruntime per stage. Where onnxruntime is missing or the export fails, the reason is printed.
(benchmark_onnxruntime.py: the whole superglue.onnx against this split.)
transformers: SuperGlueForKeypointMatching on the pair (it has no keyframe cache: its per-frame cost is
its pair); its superpoint row is half its keypoint detector's time on the two images (forward hooks).

bf16: timed where the CPU has AMX-BF16 or AVX512-BF16 (precision.check_precision); elsewhere the refusal
is printed. Its numerics against fp32 (precision_check.compare: match agreement, per-stage errors) are
printed on every machine; without those instructions they come from torch's slow reference bf16
kernels (same numerics, about a minute).

--candidates times, instead, each speed change of the exact (fp32) mode against the computation it
replaced (the original's, written out here), alternately on the same inputs, per stage: SuperPoint
encoder (and the channels-last candidate), keypoint NMS, one GNN layer, Sinkhorn (and its float32
candidate), with whether each result is identical (or its difference / error against float64).
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
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'test')]  # the package, and the Hugging Face checkpoint helpers

from model_fixtures import confident_weights, hf_superglue  # noqa: E402
from superglue_ros.match import read_image  # noqa: E402
from superglue_ros.matcher import Matcher  # noqa: E402
from superglue_ros.models import SuperGlue, SuperPoint  # noqa: E402
from superglue_ros.pipeline import CameraPipeline  # noqa: E402
from superglue_ros.export import ExportError  # noqa: E402
from superglue_ros.models import superglue as superglue_module  # noqa: E402
from superglue_ros.models import superpoint as superpoint_module  # noqa: E402
from superglue_ros.precision import check_precision, cpu_description  # noqa: E402
from superglue_ros.runtime import RuntimeUnavailable  # noqa: E402
from superglue_ros.precision_check import agreement, compare  # noqa: E402
from superglue_ros.tracking import KeyframePolicy  # noqa: E402

FREIBURG = REPO.parent / 'shared' / 'data' / 'freiburg_sequence'
# transformers 5.24 removes keypoints only near the top and left borders (it compares with 8 times the
# image size), so both run without border removal: then they agree keypoint for keypoint.
BORDER = 0
# --sharp: the final projection this many times larger, as test_fidelity's sharp-weights gate (couplings
# spanning > 10,000 units on freiburg 0-1, where an unstabilised exp-domain Sinkhorn leaves the float64 range)
SHARP_SCALE = 19
ROWS = ('superpoint', 'encode', 'match', 'sinkhorn', 'frame', 'pipeline', 'pair')
LABELS = {'superpoint': 'superpoint (1 image)', 'encode': 'superglue encode (1 image)',
          'match': 'superglue match', 'sinkhorn': '  of which sinkhorn', 'frame': 'per-frame front-end',
          'pipeline': '  as CameraPipeline.process', 'pair': 'full pair'}
STAGES = {'superpoint': 'superpoint', 'encode': 'encode', 'match': 'match', 'sinkhorn': 'sinkhorn',
          'frame': 'per-frame', 'pipeline': 'CameraPipeline.process', 'pair': 'full pair'}


def timed_transport(*args):
    """superglue.log_optimal_transport, timed: its last duration in timed_transport.seconds."""
    start = now(args[0].device)
    result = log_optimal_transport(*args)
    timed_transport.seconds = now(args[0].device) - start
    return result


log_optimal_transport, superglue_module.log_optimal_transport = superglue_module.log_optimal_transport, timed_transport


@torch.inference_mode()
def matmul_rates(runs: int = 3) -> dict:
    """GFLOP/s of a 1024 x 512 x 512 matrix product in fp32 and in bf16, alternately (best of runs)."""
    a, b = torch.randn(1024, 512), torch.randn(512, 512)
    best = {}
    for _ in range(runs):
        for dtype, name in ((torch.float32, 'fp32'), (torch.bfloat16, 'bf16')):
            x, y = a.to(dtype), b.to(dtype)
            start = time.perf_counter()
            x @ y
            best[name] = max(best.get(name, 0.0), 2 * 1024 * 512 * 512 / (time.perf_counter() - start) / 1e9)
    return best


def match_set(keypoints, matches0) -> set:
    """The matches as pixel pairs ((x0, y0), (x1, y1)): comparable also where the keypoints differ."""
    idx = np.flatnonzero(matches0 > -1)
    return {(tuple(keypoints[0][i]), tuple(keypoints[1][j])) for i, j in zip(idx, matches0[idx])}


def default_images() -> list[Path]:
    """Freiburg frames 0 and 1 where ../shared/data has them, else frames 0 and 2 of a synthetic 640x480
    sequence (demo/synthetic.py), written to a temporary directory."""
    paths = sorted(FREIBURG.glob('*.png'))[:2]
    if len(paths) == 2:
        return paths
    from superglue_ros.demo.synthetic import generate_sequence
    return generate_sequence(Path(tempfile.mkdtemp(prefix='benchmark_frames_')), num_frames=3, size=(640, 480),
                             seed=0).files[::2]


def load_images(parser, paths, resize, device) -> tuple[list[Path], list[torch.Tensor]]:
    """The paths of two images (default_images() when none given) and their grey [1, 1, H, W] float
    tensors in [0, 1], resized to resize (width, height) when given; parser.error when unusable."""
    paths = paths or default_images()
    if len(paths) != 2:
        parser.error('give two images')
    try:
        return paths, [(torch.from_numpy(read_image(path, resize)[0]).float() / 255)[None, None].to(device)
                       for path in paths]
    except ValueError as e:
        parser.error(str(e))


def cpu_model() -> str:
    return cpu_description()


def load_average() -> str:
    try:
        return ' '.join(Path('/proc/loadavg').read_text().split()[:3])
    except OSError:
        return 'unknown'


def now(device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Ours:
    """This project's models in one precision, on one backend: torch, or onnxruntime (runtime.py: the
    exported networks in ONNX Runtime, keypoint selection, Sinkhorn and the mutual check in torch)."""

    def __init__(self, sp_state, sg_state, settings, device, precision, backend='torch'):
        self.superpoint = SuperPoint({'remove_borders': BORDER, 'max_keypoints': settings['max_keypoints']})
        self.superglue = SuperGlue({'sinkhorn_iterations': settings['sinkhorn_iterations']})
        self.superpoint.load_state_dict(sp_state)
        self.superglue.load_state_dict(sg_state)
        self.superpoint.eval().to(device)
        self.superglue.eval().to(device)
        for model in (self.superpoint, self.superglue):
            model.set_precision(precision)
        self.device = device
        self.matcher = Matcher(self.superpoint, self.superglue, device, precision=precision, backend=backend)
        self.runtime = self.matcher.runtime  # None with backend torch
        # the node's frame path on the same models: upload, grey conversion, SuperPoint, SuperGlue against
        # the keyframe's cached encoding, verification (off) and the tracker (keyframe never replaced)
        self.pipeline = CameraPipeline(self.matcher, KeyframePolicy(min_matches=0, min_match_ratio=0.0))
        self.stamp = 0.0

    def detect(self, image):
        """SuperPoint on a grey [1, 1, H, W] image, as Matcher.detect runs it on this backend."""
        if self.runtime is None:
            return self.superpoint(image)
        return self.superpoint.keypoints_from_maps(*self.runtime.superpoint_maps(image))

    def encode(self, features, image):
        encode = self.superglue.encode if self.runtime is None else self.runtime.encode
        return encode(features['keypoints'][0][None], features['scores'][0][None], features['descriptors'][0][None],
                      (image.shape[3], image.shape[2]))

    def match(self, encoded0, encoded1):
        """SuperGlue.match of two encodings, as Matcher.superglue_match runs it on this backend."""
        if self.runtime is None:
            return self.superglue.match(encoded0, encoded1)
        return self.superglue.matches_from_scores(
            self.runtime.score_matrix(encoded0, encoded1, encoded0.shape[2], encoded1.shape[2]))

    @torch.inference_mode()
    def __call__(self, images):
        """One full pair, then one per-frame front-end (image 1 against image 0's cached encoding)."""
        t, marks = self.device, {}
        start = now(t)
        features = [self.detect(image) for image in images]
        encoded = [self.encode(f, image) for f, image in zip(features, images)]
        result = self.match(*encoded)
        matches0 = result['matches0'][0].cpu().numpy()
        end = now(t)
        marks['pair'] = end - start

        start = now(t)
        frame_features = self.detect(images[1])
        detected_frame = now(t)
        frame_encoded = self.encode(frame_features, images[1])
        encoded_frame = now(t)
        self.match(encoded[0], frame_encoded)['matches0'].cpu()
        end_frame = now(t)
        marks.update(frame=end_frame - start, superpoint=detected_frame - start, encode=encoded_frame - detected_frame,
                     match=end_frame - encoded_frame, sinkhorn=timed_transport.seconds)

        grey = [(image[0, 0] * 255).round().to(torch.uint8).cpu().numpy() for image in images]  # as a camera sends
        if self.pipeline.tracker.keyframe is None:
            self.pipeline.process(grey[0], self.stamp)
        self.stamp += 1.0
        start = now(t)
        self.pipeline.process(grey[1], self.stamp)
        marks['pipeline'] = now(t) - start
        keypoints = [f['keypoints'][0].cpu().numpy() for f in features]
        return marks, keypoints, matches0


class Transformers:
    def __init__(self, sp_state, sg_state, settings, device):
        detector = {'max_keypoints': settings['max_keypoints'], 'keypoint_threshold': 0.005,
                    'nms_radius': 4, 'border_removal_distance': BORDER}
        self.model = hf_superglue(sg_state, sp_state, keypoint_detector_config=detector,
                                  sinkhorn_iterations=settings['sinkhorn_iterations'],
                                  matching_threshold=settings['match_threshold']).to(device)
        self.device = device
        self.marks = {}
        self.model.keypoint_detector.register_forward_pre_hook(lambda *_: self.mark('detector_start'))
        self.model.keypoint_detector.register_forward_hook(lambda *_: self.mark('detector_end'))

    def mark(self, name):
        self.marks[name] = now(self.device)

    @torch.inference_mode()
    def __call__(self, images):
        pixels = torch.cat(images).expand(-1, 3, -1, -1)[None]  # [1, 2, 3, H, W]: grey as its 3 channels
        self.mark('start')
        out = self.model(pixels)
        self.mark('end')
        m = self.marks
        detector = m['detector_end'] - m['detector_start']
        height, width = images[0].shape[2:]
        keypoints = [(out.keypoints[0, i][out.mask[0, i] > 0] * torch.tensor([width, height])).cpu().numpy()
                     for i in (0, 1)]
        marks = {'superpoint': detector / 2, 'pair': m['end'] - m['start'], 'frame': m['end'] - m['start']}
        return marks, keypoints, out.matches[0, 0, :len(keypoints[0])].cpu().numpy()


# -- --candidates: each speed change of the exact mode against what it replaced, on the same inputs ----

def original_encoder(sp: SuperPoint, image):
    """The original's VGG encoder: default (NCHW) layout, ReLU then max-pooling, new tensors."""
    x = image
    for a, b, pool in ((sp.conv1a, sp.conv1b, True), (sp.conv2a, sp.conv2b, True), (sp.conv3a, sp.conv3b, True),
                       (sp.conv4a, sp.conv4b, False)):
        x = F.relu(b(F.relu(a(x))))
        x = F.max_pool2d(x, 2, 2) if pool else x
    return x


def channels_last_encoder(sp: SuperPoint, image):
    """Candidate: channels-last layout, in-place ReLU, max-pooling before the ReLU."""
    x = image.to(memory_format=torch.channels_last)
    for a, b, pool in ((sp.conv1a, sp.conv1b, True), (sp.conv2a, sp.conv2b, True), (sp.conv3a, sp.conv3b, True),
                       (sp.conv4a, sp.conv4b, False)):
        x = b(a(x).relu_())
        x = (F.max_pool2d(x, 2, 2) if pool else x).relu_()
    return x.contiguous()


def einsum_layer(layer, x, source):
    """The original's GNN layer: Conv1d on [B, D, N], einsum attention."""
    attn, b = layer.attn, x.shape[0]
    q, k, v = (F.conv1d(t, p.weight, p.bias).view(b, attn.head_dim, attn.num_heads, -1)
               for p, t in zip(attn.proj, (x, source, source)))
    prob = torch.einsum('bdhn,bdhm->bhnm', q, k).div(attn.head_dim ** 0.5).softmax(-1)
    message = F.conv1d(torch.einsum('bhnm,bdhm->bdhn', prob, v).reshape(b, -1, x.shape[2]), attn.merge.weight,
                       attn.merge.bias)
    return layer.mlp(torch.cat([x, message], 1))


def log_sinkhorn(couplings, log_mu, log_nu, iters):
    """The original's log-space Sinkhorn (in the couplings' dtype)."""
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1)


def exp_sinkhorn_float32(couplings, log_mu, log_nu, iters):
    """Candidate: the exp-domain iterations of log_sinkhorn_iterations, in float32."""
    a = couplings.amax(2, keepdim=True)
    b = (couplings - a).amax(1, keepdim=True)
    kernel, exp_v = (couplings - a - b).exp(), b.exp()
    mu, nu = log_mu.exp().unsqueeze(2), log_nu.exp().unsqueeze(1)
    for _ in range(iters):
        exp_u = mu / (kernel @ exp_v.transpose(1, 2))
        exp_v = nu / (exp_u.transpose(1, 2) @ kernel)
    return couplings + (exp_u.log() - a) + (exp_v.log() - b)


@torch.inference_mode()
def candidates(images, sp_state, sg_state, settings, rounds):
    """Prints median ms of each variant, measured alternately on the same inputs, and whether its
    result is identical to the original's (or its error)."""
    ours = Ours(sp_state, sg_state, settings, torch.device('cpu'), 'fp32')
    sp, sg, image = ours.superpoint, ours.superglue, images[0]
    features = [sp(im) for im in images]
    encoded = [ours.encode(f, im) for f, im in zip(features, images)]
    x, source = encoded[1].transpose(1, 2).contiguous().transpose(1, 2), encoded[0].transpose(1, 2).contiguous().transpose(1, 2)
    x_cols, source_cols = x.contiguous(), source.contiguous()  # [B, D, N] in memory, as the original
    dense = sp.keypoint_scores(sp.encode(image))
    n, m = (len(f['scores'][0]) for f in features)
    desc0, desc1 = sg.gnn(source, x, first=sg.encoded_layers)  # the pair's score matrix, as log_assignment
    mdesc0, mdesc1 = (superglue_module.linear(d.transpose(1, 2), sg.final_proj) for d in (desc0, desc1))
    scores = mdesc0 @ mdesc1.transpose(1, 2) / sg.config['descriptor_dim'] ** 0.5
    b = 1
    alpha = sg.bin_score.detach()
    couplings = torch.cat([torch.cat([scores, alpha.expand(b, n, 1)], -1),
                           torch.cat([alpha.expand(b, 1, m), alpha.expand(b, 1, 1)], -1)], 1)
    norm = -torch.tensor(float(n + m)).log()
    log_mu = torch.cat([norm.expand(n), torch.tensor(float(m)).log()[None] + norm])[None]
    log_nu = torch.cat([norm.expand(m), torch.tensor(float(n)).log()[None] + norm])[None]
    iters = settings['sinkhorn_iterations']
    reference = log_sinkhorn(couplings.double(), log_mu.double(), log_nu.double(), iters).exp()

    def nms9(s):
        pool = lambda t: F.max_pool2d(t, 9, 1, 4)  # noqa: E731
        zeros, mask = torch.zeros_like(s), s == pool(s)
        for _ in range(2):
            suppressed = pool(mask.float()) > 0
            remaining = torch.where(suppressed, zeros, s)
            mask = mask | ((remaining == pool(remaining)) & ~suppressed)
        return torch.where(mask, s, zeros)

    def error(z):
        return f'max error {(z.double().exp() - reference)[0, :-1, :-1].abs().max().item():.1e}'
    groups = {
        'SuperPoint encoder (1 image)': {
            'original (NCHW, ReLU, pool)': (lambda: original_encoder(sp, image), None),
            'channels-last, in-place ReLU': (lambda: channels_last_encoder(sp, image), None),
            'oneDNN blocked layout (kept)': (lambda: sp.encode(image), None)},
        'keypoint NMS (radius 4)': {
            'original 9x9 max-pool': (lambda: nms9(dense), None),
            'separable 1x9 + 9x1 (kept)': (lambda: superpoint_module.simple_nms(dense, 4), None)},
        'GNN cross layer (1 image)': {
            'original (Conv1d, einsum)': (lambda: einsum_layer(sg.gnn.layers[1], x_cols, source_cols), None),
            'points as rows, SDPA (kept)': (lambda: sg.gnn.layers[1](x, source), None)},
        f'Sinkhorn ({iters} iterations)': {
            'original log-space, float32': (lambda: log_sinkhorn(couplings, log_mu, log_nu, iters), error),
            'exp-domain, float32': (lambda: exp_sinkhorn_float32(couplings, log_mu, log_nu, iters), error),
            'exp-domain, float64 (kept)': (
                lambda: superglue_module.sinkhorn(couplings, log_mu, log_nu, iters), error)}}
    print(f'\ncandidates: median ms over {rounds} alternating rounds, {torch.get_num_threads()} threads')
    for group, variants in groups.items():
        results, times = {}, {name: [] for name in variants}
        for _ in range(rounds + 1):
            for name, (run, _) in variants.items():
                start = time.perf_counter()
                results[name] = run()
                times[name].append((time.perf_counter() - start) * 1e3)
        first = next(iter(results.values()))
        print(group)
        for name, (_, check) in variants.items():
            same = check(results[name]) if check else ('identical' if torch.equal(results[name], first)
                                                      else f'max difference {(results[name] - first).abs().max():.1e}')
            print(f'  {name:<34}{statistics.median(times[name][1:]):>10.1f} ms   {same}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', nargs='*', type=Path, metavar='IMAGE',
                        help='two images (default: freiburg 0, 1, else two synthetic frames)')
    parser.add_argument('--runs', type=int, default=5, help='timed rounds (default 5)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds first (default 1)')
    parser.add_argument('--max-keypoints', type=int, default=1024)
    parser.add_argument('--sinkhorn-iterations', type=int, default=100)
    parser.add_argument('--resize', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'), help='resize both images first')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (default cpu)")
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--no-transformers', action='store_true', help='leave transformers out (preset tuning)')
    parser.add_argument('--no-bf16', action='store_true', help='leave bf16 out, timing and numerics (preset tuning)')
    parser.add_argument('--no-onnxruntime', action='store_true', help='leave the onnxruntime backend out')
    parser.add_argument('--sharp', action='store_true',
                        help=f'SuperGlue weights with a {SHARP_SCALE}x final projection (couplings spanning > 10,000 units)')
    parser.add_argument('--candidates', action='store_true',
                        help="only the speed changes of the exact mode against the original's computation, per stage")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paths, images = load_images(parser, args.images, args.resize, device)

    settings = {'max_keypoints': args.max_keypoints, 'sinkhorn_iterations': args.sinkhorn_iterations,
                'match_threshold': 0.2}
    sp_state, sg_state = confident_weights(seed=0)
    if args.sharp:
        sg_state = {**sg_state, 'final_proj.weight': sg_state['final_proj.weight'] * SHARP_SCALE}
    if args.candidates:
        print(f'machine: {cpu_model()}; torch {torch.__version__}; load average {load_average()}')
        candidates(images, sp_state, sg_state, settings, args.runs)
        return
    runners = {'fp32': Ours(sp_state, sg_state, settings, device, 'fp32')}
    bf16_note = 'left out (--no-bf16)' if args.no_bf16 else ''
    try:
        if not args.no_bf16:
            check_precision('bf16', device)
            runners['bf16'] = Ours(sp_state, sg_state, settings, device, 'bf16')
    except ValueError as e:
        bf16_note = str(e)
    onnx_note = 'left out (--no-onnxruntime)' if args.no_onnxruntime else ''
    if not args.no_onnxruntime:
        if not os.environ.get('SUPERGLUE_ROS_ONNX_DIR'):  # these weights' export: in a directory of this run
            export_dir = tempfile.TemporaryDirectory(prefix='benchmark_core_onnx_')  # removed at exit
            os.environ['SUPERGLUE_ROS_ONNX_DIR'] = export_dir.name
        try:
            runners['onnxruntime'] = Ours(sp_state, sg_state, settings, device, 'fp32', backend='onnxruntime')
        except (RuntimeUnavailable, ExportError) as e:
            onnx_note = str(e)
    if not args.no_transformers:
        runners['transformers'] = Transformers(sp_state, sg_state, settings, device)

    import transformers
    height, width = images[0].shape[2:]
    print(f'machine: {cpu_model()}; {torch.get_num_threads()} torch threads'
          + (' = onnxruntime intra-op threads' if 'onnxruntime' in runners else '') + f', device {device}'
          + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''))
    ort_version = f'onnxruntime {sys.modules["onnxruntime"].__version__}, ' if 'onnxruntime' in runners else ''
    print(f'torch {torch.__version__}, transformers {transformers.__version__}, {ort_version}'
          f'python {platform.python_version()}, {time.strftime("%Y-%m-%d %H:%M %Z")}')
    print(f'images: {", ".join(p.name for p in paths)} ({width}x{height}); max_keypoints {args.max_keypoints}, '
          f'sinkhorn_iterations {args.sinkhorn_iterations}; {args.warmup} warm-up + {args.runs} timed rounds; '
          f'weights: {f"sharp ({SHARP_SCALE}x final projection)" if args.sharp else "confident random"}')
    print(f'load average before: {load_average()}')

    times = {name: {row: [] for row in ROWS} for name in runners}
    outputs = {}
    for round_index in range(args.warmup + args.runs):
        for name, runner in runners.items():  # alternate, so that load changes hit every implementation
            marks, keypoints, matches0 = runner(images)
            outputs[name] = keypoints, matches0
            if round_index >= args.warmup:
                for row, seconds in marks.items():
                    times[name][row].append(seconds * 1e3)
    print(f'load average after:  {load_average()}')

    kp, m = outputs['fp32']
    print(f'keypoints: {len(kp[0])}, {len(kp[1])}; matches fp32: {(m > -1).sum()}', end='')
    if 'transformers' in outputs:
        kp_hf, m_hf = outputs['transformers']
        same = all(a.shape == b.shape and np.allclose(a, b, atol=1e-3) for a, b in zip(kp, kp_hf))  # pixels
        print(f'; transformers: keypoints identical: {"yes" if same else "NO"}, matches {(m_hf > -1).sum()}'
              + (f', same decision for {(m == m_hf).sum()} of {len(m)} keypoints' if same else ''), end='')
    if 'bf16' in outputs:
        print(f'; matches bf16: {(outputs["bf16"][1] > -1).sum()}', end='')
    print()
    if 'onnxruntime' in outputs:
        kp_ort, m_ort = outputs['onnxruntime']
        same = all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(kp, kp_ort))
        common = [len(set(map(tuple, a)) & set(map(tuple, b))) for a, b in zip(kp, kp_ort)]  # the same positions
        print(f'onnxruntime against fp32: keypoints {len(kp_ort[0])}, {len(kp_ort[1])} ('
              + ('identical' if same else 'the same positions in another order'
                 if common == [len(k) for k in kp] == [len(k) for k in kp_ort]
                 else f'{common[0]}, {common[1]} at fp32\'s positions') + ')'
              f', matches {(m_ort > -1).sum()}, match agreement '
              f'{agreement([match_set(kp, m)], [match_set(kp_ort, m_ort)]):.1%}'
              + (f', same decision for {(m == m_ort).sum()} of {len(m)} keypoints' if same else ''))
    else:
        print(f'onnxruntime not timed: {onnx_note}')

    medians = {name: {row: statistics.median(v) for row, v in rows.items() if v} for name, rows in times.items()}
    print(f'\n{"median ms":<28}' + ''.join(f'{name:>14}' for name in runners))
    for row in ROWS:
        print(f'{LABELS[row]:<28}' + ''.join(f'{medians[name][row]:>14.1f}' if row in medians[name] else f'{"-":>14}'
                                             for name in runners))
    if 'transformers' in medians:
        pair = medians['transformers']['pair']
        for name in ('fp32', 'onnxruntime', 'bf16'):
            if name in medians:
                print(f'{name}: per-frame / transformers pair {medians[name]["frame"] / pair:.2f} '
                      f'(as CameraPipeline.process {medians[name]["pipeline"] / pair:.2f}), '
                      f'full pair / transformers pair {medians[name]["pair"] / pair:.2f}')
    if 'onnxruntime' in medians:
        ours, ort = medians['fp32'], medians['onnxruntime']
        print(f'onnxruntime / fp32: per-frame {ort["frame"] / ours["frame"]:.2f}, full pair {ort["pair"] / ours["pair"]:.2f}')
        print('fastest per stage on this CPU: ' + ', '.join(
            f'{label} {"onnxruntime" if ort[row] < ours[row] else "torch fp32"} '
            f'{max(ours[row], ort[row]) / min(ours[row], ort[row]):.2f}x' for row, label in STAGES.items())
            + " (x: the other's time / its time; sinkhorn is torch's in both)")
    if 'bf16' in medians:
        print(f'bf16 / fp32: per-frame {medians["bf16"]["frame"] / medians["fp32"]["frame"]:.2f}, '
              f'full pair {medians["bf16"]["pair"] / medians["fp32"]["pair"]:.2f}')
    else:
        print(f'bf16 not timed: {bf16_note}')
        if not args.no_bf16 and device.type == 'cpu':
            rates = matmul_rates()
            print('  a 1024 x 512 x 512 matrix product here: ' + ', '.join(f'{k} {v:.1f} GFLOP/s' for k, v in rates.items()))
    spread = {name: (min(t['frame']), max(t['frame'])) for name, t in times.items()}
    print('per-frame min-max: ' + ', '.join(f'{name} {lo:.0f}-{hi:.0f} ms' for name, (lo, hi) in spread.items()))

    if args.no_bf16:
        return
    print('\nbf16 against fp32' + (' (emulated: slow reference kernels, numerics only)' if bf16_note else '')
          + f', keyframe {paths[0].name}, frame {paths[1].name}:')
    fp32 = runners['fp32']
    report = compare(fp32.superpoint, fp32.superglue, images, 'bf16', check_hardware=not bf16_note)
    print(f'  match agreement {report["agreement"]:.1%} ({report["matches"][0]} fp32 matches, '
          f'{report["matches"][1]} bf16); SuperGlue alone on the fp32 features: {report["superglue_agreement"]:.1%}')
    print(f'  SuperPoint: keypoints kept {report["keypoints_kept"]:.1%}, detection score error '
          f'{report["score_error"]:.2g}, descriptor error {report["descriptor_error"]:.2g}')
    print(f'  SuperGlue: encoding error {report["encoding_error"]:.2g} (relative), assignment error '
          f'{report["assignment_error"]:.2g} (matching score units)')


if __name__ == '__main__':
    main()
