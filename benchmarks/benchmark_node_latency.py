"""End-to-end latency of the ROS 2 node: image publish to Matches receipt, over DDS, at 30 Hz and at full speed.

    python benchmarks/benchmark_node_latency.py [--device auto] [--params-file config/indoor.yaml ...]
        [--backend torch|onnxruntime ...] [--modes 30hz full overload] [--rounds 1] [--duration-s 10]
        [--warmup 5] [--frames DIR] [--superglue-weights SPEC [--superpoint-weights SPEC]]

The node runs in its own process as deployed (python -m superglue_ros.node) with the parameters
file (default config/indoor.yaml: inference at 640x480, 1024 keypoints, 20 Sinkhorn iterations,
fundamental-matrix verification) and the weights given, else confident random weights written as
.pth files (the speed does not depend on the weight values). This process publishes the 640x480
freiburg frames (bgr8, cycled, reliable QoS; --frames: the PNGs of another directory) on the node's
image topic, each stamped with the wall clock just before it is published, and subscribes to its
Matches: latency = receipt time - stamp (one host, one clock).

Several configurations in one run: each --params-file with each --backend (default: the file's own
backend setting) is a node of its own, all started first (the onnxruntime backend exports the models
once, to a temporary SUPERGLUE_ROS_ONNX_DIR unless set); then each round runs every mode on every node in
turn, one node working at a time, so that a change of machine load hits all of them. Printed per
configuration and mode, over all rounds; with two backends, the onnxruntime / torch ratios per preset.

  30hz         a frame every 1/30 s for --duration-s; frames arriving while the node is busy replace
               each other in its one-slot mailbox (dropped); latency of the frames it matched
  full         the next frame is published as soon as the previous one's Matches arrived: the node's
               latency with nothing waiting, at its highest rate
  overload     frames at --overload-hz (default 300), faster than the node takes them: latency with
               the mailbox always full

Printed per mode: frames published and matched, frames dropped by the node, matched frames/s, latency
median / 90th percentile / max (ms), and the node's own share (Matches.latency_ms: image receipt to
publish). Needs the ROS environment (make setup, then . install/setup.bash).
"""
import argparse
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks'), str(REPO / 'test')]

from benchmark_core import cpu_model  # noqa: E402
from model_fixtures import write_original  # noqa: E402
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict  # noqa: E402

FREIBURG = REPO.parent / 'shared' / 'data' / 'freiburg_sequence'
START_TIMEOUT_S = 180   # weights loading and DDS discovery
WARMUP_HZ = 10          # warm-up publish rate (a stream: isolated large best-effort frames can get lost)
DRAIN_S = 10            # after an open-loop phase: Matches still on their way


class Receipts:
    """Matches by image stamp: (receipt wall time, message)."""

    def __init__(self):
        self.by_stamp = {}
        self._changed = threading.Condition()

    def __call__(self, msg):
        received = time.time()
        with self._changed:
            self.by_stamp[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = (received, msg)
            self._changed.notify_all()

    def wait(self, stamp, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: stamp in self.by_stamp, timeout)


class Camera:
    """Publishes the frames, stamped with the wall clock at publish."""

    def __init__(self, publisher, messages):
        self.publisher, self.messages = publisher, messages
        self.count = 0

    def publish(self):
        msg = self.messages[self.count % len(self.messages)]
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int(now % 1 * 1e9)
        self.publisher.publish(msg)
        self.count += 1
        return msg.header.stamp.sec, msg.header.stamp.nanosec


def latency_ms(stamp, receipts: Receipts) -> float:
    return (receipts.by_stamp[stamp][0] - (stamp[0] + stamp[1] * 1e-9)) * 1e3


MODES = {'30hz': '30 Hz', 'full': 'full speed', 'overload': 'overload'}


def phase_figures(stamps: list, receipts: Receipts) -> tuple[list, list, int]:
    """One phase's matched messages, latencies (ms) and frames dropped by the node."""
    matched = [receipts.by_stamp[s][1] for s in stamps if s in receipts.by_stamp]
    latency = [latency_ms(s, receipts) for s in stamps if s in receipts.by_stamp]
    if not matched:
        return [], [], 0
    # the node's count when the phase began: from the last Matches of a frame published before it
    before = [msg.dropped_frames for stamp, (_, msg) in list(receipts.by_stamp.items()) if stamp < stamps[0]]
    return matched, latency, matched[-1].dropped_frames - max(before, default=matched[0].dropped_frames)


def summary(name: str, phases: list, receipts: Receipts) -> dict:
    """Figures of a mode over its phases [(stamps, seconds)]: published, matched, dropped, fps, latency ms."""
    figures = [phase_figures(stamps, receipts) for stamps, _ in phases]
    matched = [msg for m, _, _ in figures for msg in m]
    latency = sorted(ms for _, lat, _ in figures for ms in lat)
    published, seconds = sum(len(stamps) for stamps, _ in phases), sum(seconds for _, seconds in phases)
    if not matched:
        return {'name': name, 'published': published, 'matched': 0}
    return {'name': name, 'published': published, 'matched': len(matched), 'dropped': sum(d for _, _, d in figures),
            'fps': len(matched) / seconds, 'median': statistics.median(latency),
            'p90': latency[min(len(latency) - 1, int(0.9 * len(latency)))], 'max': latency[-1],
            'node': statistics.median(msg.latency_ms for msg in matched)}


def row(label: str, f: dict) -> str:
    if not f['matched']:
        return f'{label:<36}{f["published"]:>10}{0:>9}   no Matches received'
    return (f'{label:<36}{f["published"]:>10}{f["matched"]:>9}{f["dropped"]:>9}{f["fps"]:>10.2f}{f["median"]:>10.1f}'
            f'{f["p90"]:>10.1f}{f["max"]:>10.1f}{f["node"]:>10.1f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='auto', help="node parameter 'device' (default auto)")
    parser.add_argument('--params-file', type=Path, nargs='+', default=[REPO / 'config' / 'indoor.yaml'],
                        help='one or more parameters files (default config/indoor.yaml)')
    parser.add_argument('--backend', nargs='+', choices=('torch', 'onnxruntime'),
                        help="node parameter 'backend', one node per value and file (default: the file's)")
    parser.add_argument('--modes', nargs='+', choices=tuple(MODES), default=list(MODES), help='(default: all)')
    parser.add_argument('--rounds', type=int, default=1, help='rounds of every mode on every node (default 1)')
    parser.add_argument('--duration-s', type=float, default=10.0, help='seconds of each mode per round (default 10)')
    parser.add_argument('--warmup', type=int, default=5, help='frames matched before measuring (default 5)')
    parser.add_argument('--overload-hz', type=float, default=300.0, help='publish rate of the overload mode')
    parser.add_argument('--frames', type=Path, default=FREIBURG, help='directory of the PNG frames (default: freiburg)')
    parser.add_argument('--superglue-weights', help='weights spec (weights.py); default: confident random weights')
    parser.add_argument('--superpoint-weights', help='weights spec; default: from --superglue-weights')
    args = parser.parse_args()
    if args.warmup < 1 or args.rounds < 1 or not args.duration_s > 0 or not args.overload_hz > 0:
        parser.error('--warmup and --rounds must be >= 1, --duration-s and --overload-hz > 0')

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    try:
        from superglue_ros.msg import Matches
    except ImportError as e:
        sys.exit(f'benchmark_node_latency: superglue_ros messages not built or not sourced ({e}): run `make setup`, '
                 'then `. .venv/bin/activate && . install/setup.bash`')
    from superglue_ros.ros.image_conversion import numpy_to_image_msg

    paths = sorted(args.frames.glob('*.png'))
    if not paths:
        sys.exit(f'benchmark_node_latency: no frames in {args.frames} (see ../shared/data/README.md)')
    messages = [numpy_to_image_msg(cv2.imread(str(path), cv2.IMREAD_COLOR), 'bgr8') for path in paths]

    # DDS traffic kept to this run (a domain of its own unless set, this host only); the nodes inherit it
    os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 100 + 1))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault('SUPERGLUE_ROS_ONNX_DIR', str(Path(tmp) / 'onnx'))  # the onnxruntime nodes' export
        if args.superglue_weights:  # superpoint_weights: the params file's unless given
            weights = {'superglue_weights': args.superglue_weights}
            if args.superpoint_weights:
                weights['superpoint_weights'] = args.superpoint_weights
        else:
            weights = {'superpoint_weights': str(write_original(Path(tmp) / 'superpoint.pth', superpoint_state_dict())),
                       'superglue_weights': str(write_original(Path(tmp) / 'superglue.pth', superglue_state_dict()))}
        rclpy.init()
        helper = Node('latency_probe')
        configs = []  # one node each: label, namespace, process, log, camera, receipts
        for params_file in args.params_file:
            for backend in args.backend or [None]:
                namespace = f'/latency_{os.getpid()}_{len(configs)}'
                overrides = {'device': args.device, **weights, **({'backend': backend} if backend else {})}
                command = [sys.executable, '-m', 'superglue_ros.node', '--ros-args', '-r', f'__ns:={namespace}',
                           '--params-file', str(params_file)]
                command += [arg for name, value in overrides.items() for arg in ('-p', f'{name}:={value}')]
                log_path = Path(tmp) / f'node{len(configs)}.log'
                with open(log_path, 'w') as log:
                    process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
                receipts = Receipts()
                helper.create_subscription(Matches, f'{namespace}/superglue/matches', receipts, 1000)
                configs.append({'label': f'{params_file.name} {backend or "(its backend)"}', 'namespace': namespace,
                                'process': process, 'log': log_path, 'receipts': receipts,
                                'camera': Camera(helper.create_publisher(Image, f'{namespace}/image', 10), messages)})
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(helper)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        def node_output(config) -> str:
            return config['log'].read_text()[-4000:]

        def closed_loop(config, seconds: float) -> list:
            """Publish a frame once the previous one's Matches arrived, or the timeout passed (taken as lost)."""
            stamps, start = [], time.monotonic()
            while time.monotonic() - start < seconds:
                stamps.append(config['camera'].publish())
                if (not config['receipts'].wait(stamps[-1], config['timeout'])
                        and config['process'].poll() is not None):
                    sys.exit(f'the node {config["label"]} exited:\n{node_output(config)}')
            return stamps

        def open_loop(config, rate_hz: float, seconds: float, until_matched: int = 0) -> list:
            stamps, start, receipts = [], time.monotonic(), config['receipts']
            while len(stamps) / rate_hz < seconds:
                if until_matched and sum(s in receipts.by_stamp for s in stamps) >= until_matched:
                    return stamps
                time.sleep(max(0.0, start + len(stamps) / rate_hz - time.monotonic()))
                stamps.append(config['camera'].publish())
            receipts.wait(stamps[-1], DRAIN_S)  # the last one may have been dropped: bounded wait
            return stamps

        try:
            deadline = time.monotonic() + START_TIMEOUT_S * len(configs)  # they start (and export) side by side
            for config in configs:
                while not (config['camera'].publisher.get_subscription_count()
                           and helper.count_publishers(f'{config["namespace"]}/superglue/matches')):
                    if config['process'].poll() is not None or time.monotonic() > deadline:
                        sys.exit(f'the node {config["label"]} did not come up:\n{node_output(config)}')
                    time.sleep(0.1)
            for config in configs:
                receipts = config['receipts']
                warm = [s for s in open_loop(config, WARMUP_HZ, START_TIMEOUT_S, args.warmup) if s in receipts.by_stamp]
                if len(warm) < args.warmup:
                    sys.exit(f'{config["label"]}: {len(warm)} of {args.warmup} warm-up frames matched in '
                             f'{START_TIMEOUT_S} s; node output:\n{node_output(config)}')
                # a frame lost on the way (best-effort image subscription) is given up after twice the latency
                config['timeout'] = 2e-3 * statistics.median(latency_ms(s, receipts) for s in warm)
            print(f'date: {datetime.datetime.now().astimezone().isoformat(timespec="minutes")}')
            gpu = (f'GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}' if torch.cuda.is_available()
                   else 'no GPU')
            print(f'machine: {cpu_model()}, {os.cpu_count()} cores, {gpu}; load average before '
                  f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}')
            print(f'torch {torch.__version__}, python {platform.python_version()}, '
                  f'RMW {rclpy.get_rmw_implementation_identifier()}, ROS_DOMAIN_ID {os.environ["ROS_DOMAIN_ID"]}')
            print(f'nodes: {", ".join(c["label"] for c in configs)}, device={args.device}, weights '
                  f'{args.superglue_weights or "confident random"}; {args.warmup} warm-up frames matched each; '
                  f'{args.rounds} round(s) of {", ".join(args.modes)}, {args.duration_s:g} s each')

            phases = {(c['label'], mode): [] for c in configs for mode in args.modes}
            for _ in range(args.rounds):
                for config in configs:  # one node working at a time, in turn
                    for mode in args.modes:
                        start = time.monotonic()
                        stamps = (open_loop(config, 30.0, args.duration_s) if mode == '30hz' else
                                  closed_loop(config, args.duration_s) if mode == 'full' else
                                  open_loop(config, args.overload_hz, args.duration_s))
                        seconds = time.monotonic() - start if mode == 'full' else args.duration_s
                        phases[(config['label'], mode)].append((stamps, seconds))
            print(f'load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')

            print(f'\n{"node, mode":<36}{"published":>10}{"matched":>9}{"dropped":>9}{"frames/s":>10}'
                  f'{"median":>10}{"p90":>10}{"max":>10}{"in node":>10}')
            print('(latency ms from publish to receipt; in node: median Matches.latency_ms; dropped: by the node '
                  'while busy; frames neither matched nor dropped were lost on the way. Full speed: the next frame '
                  'after a frame\'s Matches or ' + ', '.join(f'{c["timeout"]:.2f}' for c in configs) + ' s)')
            results = {}
            for config in configs:
                for mode in args.modes:
                    key = (config['label'], mode)
                    results[key] = summary(MODES[mode], phases[key], config['receipts'])
                    print(row(f'{config["label"]}, {MODES[mode]}', results[key]))
            if args.backend and set(args.backend) == {'torch', 'onnxruntime'}:
                for params_file in args.params_file:
                    for mode in args.modes:
                        t, o = (results[(f'{params_file.name} {b}', mode)] for b in ('torch', 'onnxruntime'))
                        if t['matched'] and o['matched']:
                            print(f'{params_file.name}, {MODES[mode]}: onnxruntime / torch frames/s '
                                  f'{o["fps"] / t["fps"]:.2f}, latency median {o["median"] / t["median"]:.2f}')
        finally:
            for config in configs:
                config['process'].send_signal(signal.SIGINT)
            for config in configs:
                try:
                    config['process'].wait(30)
                except subprocess.TimeoutExpired:
                    config['process'].kill()
            executor.shutdown(timeout_sec=5)
            helper.destroy_node()
            rclpy.try_shutdown()


if __name__ == '__main__':
    main()
