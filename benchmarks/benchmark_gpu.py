"""GPU front-end speed: pipeline.CameraPipeline (one and two cameras) against transformers, per stage.

    python benchmarks/benchmark_gpu.py [--device cuda] [--keypoints 512 1024 2048] [--precisions fp32 fp16]
        [--runs sequential pipelined graphs onnxruntime two_cameras transformers] [--frames 200] [--warmup 20]
        [--size 640 480] [--sinkhorn-iterations 20] [--threads N] [--json OUT.json]
        [--superglue-weights SPEC [--superpoint-weights SPEC]]

Everything runs in one process, on one device, with the same weights (confident random weights unless
given: the speed does not depend on the weight values), the same settings (keypoint threshold 0.005,
NMS radius 4, no border removal (benchmark_core.BORDER), match threshold 0.2, --sinkhorn-iterations)
and the same freiburg frames (640x480 bgr8 unless --size), cycled, each one matched against a fixed
keyframe (the first frame; KeyframePolicy with every rule off):

  sequential    CameraPipeline depth 1: a frame's result is collected before the next one is submitted
  pipelined     CameraPipeline depth 2: frame N+1's upload and SuperPoint overlap frame N's SuperGlue
  graphs        pipelined, with static_shapes: SuperGlue padded to the keypoint count and replayed from a
                CUDA graph per camera stream (static_shapes.py), against eager launches above
  onnxruntime   pipelined, with backend onnxruntime (runtime.py: onnxruntime's CUDA / TensorRT provider
                on the camera's stream); not available where onnxruntime has no CUDA provider, nor in fp16
  two_cameras   two CameraPipelines (depth 2) on one shared Matcher, each driven by its own thread with
                its own frames (the sequence, and the sequence started half-way, so the second
                camera's keyframe is the middle frame and its match counts differ): frames/s of each
                camera and of both together (all frames / wall time from a common start)
  transformers  SuperGlueForKeypointMatching on (keyframe, frame): it extracts both images every frame
                (it has no keyframe cache); host grey conversion (the keyframe's once), upload from a
                pinned buffer, the grey image given as its 3-channel input without a copy

frames/s: timed frames / their wall time, from an idle pipeline (the --warmup frames before them all
collected) to the last result out; host work and result downloads included.
Per stage (medians, ms): FrameResult.timings_ms of the pipeline: preprocess (host), upload,
superpoint, superglue, download (CUDA-event spans on the camera's streams: they include waiting for a
GPU shared with other streams), verify (host; off here, so ~0), total (submit to result). transformers:
the same stages timed with CUDA events around its forward and hooks on its keypoint detector.
Precisions: Matcher(..., precision=P) (settings.py: the models in half precision, scores and Sinkhorn in
float32); transformers under torch.autocast with the same dtype. A precision the Matcher refuses is
reported as not available. Peak GPU memory: torch.cuda.max_memory_allocated over each run.

Without CUDA it says so and exits 0 (make benchmark on CPU machines); --device cpu runs it anyway
(stage times from the host clock), e.g. --device cpu --size 160 120 --keypoints 128 --frames 4 --warmup 2
--threads 1 (CPU figures only check that it runs: two threads on a busy 2-core machine are noise).
--json writes the machine, the settings and every row, after each row (a run cut short keeps its rows).
"""
import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import threading
import time
import traceback
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks'), str(REPO / 'test')]

from benchmark_core import BORDER, cpu_model  # noqa: E402
from superglue_ros.image import prepare_image  # noqa: E402
from superglue_ros.matcher import Matcher  # noqa: E402
from superglue_ros.models import SuperGlue, SuperPoint  # noqa: E402
from superglue_ros.pipeline import CameraPipeline  # noqa: E402
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict  # noqa: E402
from superglue_ros.tracking import KeyframePolicy  # noqa: E402
from superglue_ros.weights import load_superglue, load_superpoint  # noqa: E402

FREIBURG = REPO.parent / 'shared' / 'data' / 'freiburg_sequence'
STAGES = ('preprocess', 'upload', 'superpoint', 'superglue', 'download', 'verify', 'total')
RUNS = {'sequential': 1, 'pipelined': 2, 'graphs': 2, 'onnxruntime': 2, 'two_cameras': 2,
        'transformers': None}  # run -> pipeline depth
MATCHER_OPTIONS = {'graphs': {'static_shapes': True}, 'onnxruntime': {'backend': 'onnxruntime'}}  # others: eager torch
FIXED_KEYFRAME = KeyframePolicy(min_matches=0, min_match_ratio=0.0, max_age_s=0.0)
AUTOCAST = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class NotAvailable(Exception):
    """A configuration this machine or this code does not offer (row reported, nothing measured)."""


def frame_stream(images, first: int, count: int, offset: int = 0):
    """(image, stamp_s) of frames first .. first + count - 1 at 30 Hz, the images cycled from `offset`."""
    return [(images[(offset + i) % len(images)], i / 30.0) for i in range(first, first + count)]


def drive(camera: CameraPipeline, images, args, offset: int = 0, started=None):
    """The FrameResults of the timed frames and the (start, end) wall times around them: the warm-up
    frames go through first and are all collected (then `started`, a Barrier, is waited for if given),
    so the timed stream starts from an idle pipeline and ends with every result out."""
    for _ in camera.process_stream(frame_stream(images, 0, args.warmup, offset)):
        pass
    if started is not None:
        started.wait()
    start = time.perf_counter()
    timed = list(camera.process_stream(frame_stream(images, args.warmup, args.frames, offset)))
    return timed, start, time.perf_counter()


def run_pipeline(matcher, images, args, run: str) -> dict:
    """One row of this implementation: 'sequential', 'pipelined' or 'two_cameras'."""
    if run != 'two_cameras':
        timed, start, end = drive(CameraPipeline(matcher, FIXED_KEYFRAME, depth=RUNS[run]), images, args)
        return summarise([timed], [(start, end)])
    cameras = [CameraPipeline(matcher, FIXED_KEYFRAME, depth=RUNS[run]) for _ in range(2)]
    started = threading.Barrier(len(cameras))
    outcomes = [None] * len(cameras)

    def worker(k):
        try:
            outcomes[k] = drive(cameras[k], images, args, k * len(images) // 2, started)
        except BaseException as e:  # re-raised below, in the main thread
            started.abort()
            outcomes[k] = e

    threads = [threading.Thread(target=worker, args=(k,), name=f'camera{k}') for k in range(len(cameras))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, threading.BrokenBarrierError)]
    if errors:
        raise errors[0]
    return summarise([o[0] for o in outcomes], [o[1:] for o in outcomes])


def summarise(results_per_camera, spans) -> dict:
    """Figures of one row from the FrameResults of each camera and its (start, end) wall times."""
    results = [r for results in results_per_camera for r in results]
    per_camera = [len(r) / (end - start) for r, (start, end) in zip(results_per_camera, spans)]
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    totals = sorted(r.timings_ms['total'] for r in results)
    return {'frames_per_s': len(results) / wall, 'frames_per_s_per_camera': per_camera,
            'median_ms': {s: statistics.median(r.timings_ms[s] for r in results) for s in STAGES},
            'p90_total_ms': totals[int(0.9 * (len(totals) - 1))],
            'mean_keypoints': float(np.mean([r.frame_keypoint_count for r in results])),
            'mean_matches': float(np.mean([len(r.confidence) for r in results])), 'frames': len(results)}


class TransformersFrontend:
    """SuperGlueForKeypointMatching on (keyframe, frame) per frame, stages timed with marks (CUDA
    events on a GPU, the host clock on the CPU)."""

    def __init__(self, model, precision: str, device: torch.device, image_shape):
        self.model, self.device, self.cuda = model, device, device.type == 'cuda'
        dtype = AUTOCAST[precision]
        self.autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
        self.pinned = torch.empty((1, 2, 1) + image_shape, pin_memory=self.cuda)  # [1, 2, 1, H, W]
        self.marks = {}
        detector = model.keypoint_detector
        self.hooks = [detector.register_forward_pre_hook(lambda *_: self.mark('sp_start')),
                      detector.register_forward_hook(lambda *_: self.mark('sp_end'))]

    def close(self):
        for hook in self.hooks:
            hook.remove()

    def mark(self, name: str):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks[name] = event
        else:
            self.marks[name] = time.perf_counter()

    def ms(self, start: str, end: str) -> float:
        if self.cuda:
            return self.marks[start].elapsed_time(self.marks[end])
        return (self.marks[end] - self.marks[start]) * 1e3

    @torch.inference_mode()
    def __call__(self, keyframe_grey: np.ndarray, image: np.ndarray) -> dict:
        submitted = time.perf_counter()
        self.pinned[0, 0, 0].numpy()[...] = keyframe_grey
        self.pinned[0, 1, 0].numpy()[...] = prepare_image(image, None)[0]
        preprocess = (time.perf_counter() - submitted) * 1e3
        self.mark('upload_start')
        pixels = self.pinned.to(self.device, non_blocking=True).expand(-1, -1, 3, -1, -1)  # its 3-channel input
        self.mark('uploaded')
        with self.autocast:
            out = self.model(pixels)
        self.mark('forward_end')
        mask, matches = out.mask.cpu(), out.matches.cpu()  # waits for the forward (transformers' own path)
        self.mark('downloaded')
        if self.cuda:
            self.marks['downloaded'].synchronize()  # the events are complete
        superpoint = self.ms('sp_start', 'sp_end')
        timings = {'preprocess': preprocess, 'upload': self.ms('upload_start', 'uploaded'), 'superpoint': superpoint,
                   'superglue': self.ms('uploaded', 'forward_end') - superpoint,
                   'download': self.ms('forward_end', 'downloaded'), 'verify': 0.0,
                   'total': (time.perf_counter() - submitted) * 1e3}
        return {'timings': timings, 'keypoints': int((mask[0, 1] > 0).sum()),
                'matches': int((matches[0, 0] > -1).sum())}


def run_transformers(model, images, args, precision: str, device: torch.device) -> dict:
    keyframe_grey = prepare_image(images[0], None)[0]
    frontend = TransformersFrontend(model, precision, device, keyframe_grey.shape)
    try:
        frames = [image for image, _ in frame_stream(images, 0, args.warmup + args.frames)]
        for image in frames[:args.warmup]:
            frontend(keyframe_grey, image)
        start = time.perf_counter()
        outputs = [frontend(keyframe_grey, image) for image in frames[args.warmup:]]
        end = time.perf_counter()
    finally:
        frontend.close()
    totals = sorted(o['timings']['total'] for o in outputs)
    return {'frames_per_s': len(outputs) / (end - start), 'frames_per_s_per_camera': [len(outputs) / (end - start)],
            'median_ms': {s: statistics.median(o['timings'][s] for o in outputs) for s in STAGES},
            'p90_total_ms': totals[int(0.9 * (len(totals) - 1))],
            'mean_keypoints': float(np.mean([o['keypoints'] for o in outputs])),
            'mean_matches': float(np.mean([o['matches'] for o in outputs])), 'frames': len(outputs)}


def load_models(args):
    """(SuperPoint, SuperGlue) on the CPU in fp32 without border removal, and their state dicts."""
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


def make_matcher(models, device, precision: str, keypoints: int, args, **options) -> Matcher:
    """A Matcher on its own copy of the models (a precision converts them in place), with `options`
    (MATCHER_OPTIONS); NotAvailable when the Matcher refuses the precision or the options."""
    superpoint, superglue = copy.deepcopy(models)
    superpoint.config = {**superpoint.config, 'max_keypoints': keypoints}  # static_shapes reads it at once
    try:
        matcher = Matcher(superpoint, superglue, device=device, precision=precision, **options)
    except Exception as e:
        described = ', '.join([f'precision={precision!r}'] + [f'{k}={v!r}' for k, v in options.items()])
        raise NotAvailable(f'Matcher({described}): {type(e).__name__}: {e}') from None
    matcher.configure(max_keypoints=keypoints, sinkhorn_iterations=args.sinkhorn_iterations)
    return matcher


def make_transformers(states, keypoints: int, args, device):
    try:
        from model_fixtures import hf_superglue
        import transformers  # noqa: F401
    except ImportError as e:
        raise NotAvailable(f'transformers is not installed ({e})') from None
    detector = {'max_keypoints': keypoints, 'keypoint_threshold': 0.005, 'nms_radius': 4,
                'border_removal_distance': BORDER}
    return hf_superglue(states[1], states[0], keypoint_detector_config=detector,
                        sinkhorn_iterations=args.sinkhorn_iterations, matching_threshold=0.2).to(device)


def describe_machine(device: torch.device) -> dict:
    try:
        import transformers
        transformers_version = transformers.__version__
    except ImportError:
        transformers_version = 'not installed'
    machine = {'date': datetime.datetime.now().astimezone().isoformat(timespec='minutes'),
               'cpu': f'{cpu_model()}, {torch.get_num_threads()} torch threads',
               'software': f'torch {torch.__version__}, transformers {transformers_version}, '
                           f'opencv {cv2.__version__}, python {platform.python_version()}'}
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        machine['gpu'] = (f'{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; '
                          f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')
    return machine


def row_line(row: dict) -> str:
    head = f'{row["keypoints"]:>9} {row["precision"]:>9}  {row["run"]:<13}'
    if row['status'] != 'ok':
        return f'{head}{row["status"]}: {row["error"]}'
    cameras = row['frames_per_s_per_camera']
    rate = f'{row["frames_per_s"]:>9.1f}'
    if len(cameras) > 1:
        rate += f' ({" + ".join(f"{r:.1f}" for r in cameras)})'
    memory = f'{row["peak_gpu_mib"]:>8.0f}' if row.get('peak_gpu_mib') is not None else f'{"-":>8}'
    return (f'{head}{rate:<24}' + ''.join(f'{row["median_ms"][s]:>11.2f}' for s in STAGES)
            + f'{row["p90_total_ms"]:>9.2f}{row["mean_keypoints"]:>7.0f}{row["mean_matches"]:>8.0f}{memory}')


def ratios(rows: list) -> list:
    """Side-by-side ratios of one run's frames/s per (keypoints, precision)."""
    fps = {(r['keypoints'], r['precision'], r['run']): r['frames_per_s'] for r in rows if r['status'] == 'ok'}
    lines = []
    for keypoints, precision in dict.fromkeys((r['keypoints'], r['precision']) for r in rows):
        get = lambda run: fps.get((keypoints, precision, run))  # noqa: E731
        best = max((get(run) or 0, run) for run in ('sequential', 'pipelined'))
        parts = []
        if get('pipelined') and get('sequential'):
            parts.append(f'pipelined / sequential {get("pipelined") / get("sequential"):.2f}')
        if best[0] and get('transformers'):
            parts.append(f'{best[1]} / transformers {best[0] / get("transformers"):.2f}')
        for run in ('graphs', 'onnxruntime'):
            if get(run) and get('pipelined'):
                parts.append(f'{run} / pipelined (eager) {get(run) / get("pipelined"):.2f}')
        if get('two_cameras') and get('pipelined'):
            parts.append(f'two cameras (total) / one camera (pipelined) {get("two_cameras") / get("pipelined"):.2f}')
        if parts:
            lines.append(f'{keypoints:>9} {precision:>9}  ' + '; '.join(parts))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', help="'cuda', 'cuda:N' or 'cpu' (default cuda)")
    parser.add_argument('--keypoints', type=int, nargs='+', default=[512, 1024, 2048], help='max_keypoints values')
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'fp16'], choices=list(AUTOCAST))
    parser.add_argument('--runs', nargs='+', default=list(RUNS), choices=list(RUNS), help='default: all')
    parser.add_argument('--frames', type=int, default=200, help='timed frames per run and camera (default 200)')
    parser.add_argument('--warmup', type=int, default=20, help='untimed frames first (default 20)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('WIDTH', 'HEIGHT'), default=None,
                        help='resize the frames to this size first (INTER_AREA; default: as stored, 640x480)')
    parser.add_argument('--sinkhorn-iterations', type=int, default=20, help='default 20, as config/*.yaml')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch default)')
    parser.add_argument('--json', type=Path, help='write the figures here as JSON')
    parser.add_argument('--superglue-weights', help='weights spec (weights.py); default: confident random weights')
    parser.add_argument('--superpoint-weights', help='weights spec; default: from --superglue-weights')
    args = parser.parse_args()
    if args.frames < 1 or args.warmup < 1:
        parser.error('--frames and --warmup must be >= 1')
    if min(args.keypoints) < 1 or args.sinkhorn_iterations < 1:
        parser.error('--keypoints and --sinkhorn-iterations must be >= 1')
    if args.threads is not None and args.threads < 1:
        parser.error('--threads must be >= 1')
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size and min(args.size) < 16:
        parser.error('--size: width and height must be >= 16 pixels')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print(f'benchmark_gpu: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or "no"}); '
              'nothing measured. It measures the GPU pipeline; --device cpu runs it on the CPU anyway.')
        return
    device = torch.device(args.device)
    paths = sorted(FREIBURG.glob('*.png'))
    if not paths:
        parser.error(f'no frames in {FREIBURG} (see ../shared/data/README.md)')
    images = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in paths]
    if args.size:
        images = [cv2.resize(image, tuple(args.size), interpolation=cv2.INTER_AREA) for image in images]
    models, states = load_models(args)

    height, width = images[0].shape[:2]
    machine = describe_machine(device)
    settings = {'device': str(device), 'image_size': [width, height], 'frames': args.frames, 'warmup': args.warmup,
                'sinkhorn_iterations': args.sinkhorn_iterations, 'keypoint_threshold': 0.005, 'nms_radius': 4,
                'match_threshold': 0.2, 'remove_borders': BORDER,
                'weights': args.superglue_weights or 'confident random',
                'frames_source': f'{len(images)} freiburg frames'}
    print('\n'.join(machine.values()))
    print(f'images: {len(images)} freiburg frames {width}x{height} bgr8, cycled; {args.warmup} warm-up + '
          f'{args.frames} timed frames per run (and camera); sinkhorn_iterations {args.sinkhorn_iterations}; '
          f'weights: {settings["weights"]}; each frame matched against the first')
    print('\nframes/s (two_cameras: both together (each)); median ms per frame and stage; p90 of total; mean '
          'keypoints and matches per frame; peak GPU MiB')
    print(f'{"keypoints":>9} {"precision":>9}  {"run":<13}{"frames/s":<24}' + ''.join(f'{s:>11}' for s in STAGES)
          + f'{"p90":>9}{"kpts":>7}{"matches":>8}{"MiB":>8}', flush=True)

    rows = []

    def write_json():
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({'machine': machine, 'settings': settings, 'rows': rows,
                                             'ratios': ratios(rows)}, indent=1) + '\n')

    for keypoints in args.keypoints:
        hf_model = None
        for precision in args.precisions:
            matchers = {}  # options -> Matcher, made on first use
            for run in args.runs:
                row = {'keypoints': keypoints, 'precision': precision, 'run': run, 'depth': RUNS[run],
                       'cameras': 2 if run == 'two_cameras' else 1,
                       'implementation': 'transformers' if run == 'transformers' else 'superglue_ros'}
                try:
                    if device.type == 'cuda':
                        torch.cuda.reset_peak_memory_stats(device)
                    options = MATCHER_OPTIONS.get(run, {})
                    key = tuple(sorted(options.items()))
                    if key not in matchers and (run != 'transformers' or precision != 'fp32'):
                        # (transformers is compared only where this code runs the precision)
                        matchers[key] = make_matcher(models, device, precision, keypoints, args, **options)
                    if run == 'transformers':
                        if hf_model is None:
                            hf_model = make_transformers(states, keypoints, args, device)
                        figures = run_transformers(hf_model, images, args, precision, device)
                    else:
                        figures = run_pipeline(matchers[key], images, args, run)
                    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == 'cuda' else None
                    row.update(status='ok', peak_gpu_mib=peak, **figures)
                except NotAvailable as e:
                    row.update(status='not available', error=str(e))
                except Exception as e:  # one failing configuration must not lose the others' figures
                    row.update(status='failed', error=f'{type(e).__name__}: {e}')
                    traceback.print_exc(limit=4)
                rows.append(row)
                print(row_line(row), flush=True)
                write_json()
            del matchers
        del hf_model
        if device.type == 'cuda':
            torch.cuda.empty_cache()

    print('\nratios of frames/s, measured side by side in this run:')
    print('\n'.join(ratios(rows)) or '  none (a run of each kind is needed)')
    if args.json:
        print(f'figures written to {args.json}')
    # a failing transformers row is the baseline's problem: reported, not an error of this code
    failed = [r for r in rows if r['status'] == 'failed' and r['implementation'] == 'superglue_ros']
    if failed:
        sys.exit(f'benchmark_gpu: {len(failed)} of {len(rows)} runs of superglue_ros failed (tracebacks above)')


if __name__ == '__main__':
    main()
