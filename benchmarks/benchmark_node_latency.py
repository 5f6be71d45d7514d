"""End-to-end latency of the ROS 2 node: image publish to Matches receipt, over DDS, at 30 Hz and at full speed.

    python benchmarks/benchmark_node_latency.py [--device auto] [--params-file config/indoor.yaml]
        [--duration-s 10] [--warmup 5] [--superglue-weights SPEC [--superpoint-weights SPEC]]

The node runs in its own process as deployed (python -m superglue_ros.node) with the parameters
file (default config/indoor.yaml: inference at 640x480, 1024 keypoints, 20 Sinkhorn iterations,
fundamental-matrix verification) and the weights given, else confident random weights written as
.pth files (the speed does not depend on the weight values). This process publishes the 640x480
freiburg frames (bgr8, cycled, reliable QoS) on the node's image topic, each stamped with the wall
clock just before it is published, and subscribes to its Matches: latency = receipt time - stamp
(one host, one clock).

  30 Hz        a frame every 1/30 s for --duration-s; frames arriving while the node is busy replace
               each other in its one-slot mailbox (dropped); latency of the frames it matched
  full speed   the next frame is published as soon as the previous one's Matches arrived: the node's
               latency with nothing waiting, at its highest rate
  overload     frames at --overload-hz (default 300), faster than the node takes them: latency with
               the mailbox always full

Printed per mode: frames published and matched, frames dropped by the node, matched frames/s, latency
median / 90th percentile / max, and the node's own share (Matches.latency_ms: image receipt to
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


def summary(name: str, stamps: list, receipts: Receipts, seconds: float) -> str:
    matched = [receipts.by_stamp[s] for s in stamps if s in receipts.by_stamp]
    if not matched:
        return f'{name:<12}{len(stamps):>10}{0:>9}   no Matches received'
    latency = sorted(latency_ms(s, receipts) for s in stamps if s in receipts.by_stamp)
    node_ms = statistics.median(msg.latency_ms for _, msg in matched)
    # the node's count when the phase began: from the last Matches of a frame published before it
    before = [msg.dropped_frames for stamp, (_, msg) in list(receipts.by_stamp.items())
              if stamp < stamps[0]]
    dropped = matched[-1][1].dropped_frames - max(before, default=matched[0][1].dropped_frames)
    p90 = latency[min(len(latency) - 1, int(0.9 * len(latency)))]
    return (f'{name:<12}{len(stamps):>10}{len(matched):>9}{dropped:>9}{len(matched) / seconds:>10.2f}'
            f'{statistics.median(latency):>10.1f}{p90:>10.1f}{latency[-1]:>10.1f}{node_ms:>10.1f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='auto', help="node parameter 'device' (default auto)")
    parser.add_argument('--params-file', type=Path, default=REPO / 'config' / 'indoor.yaml')
    parser.add_argument('--duration-s', type=float, default=10.0, help='seconds of each mode (default 10)')
    parser.add_argument('--warmup', type=int, default=5, help='frames matched before measuring (default 5)')
    parser.add_argument('--overload-hz', type=float, default=300.0, help='publish rate of the overload mode')
    parser.add_argument('--superglue-weights', help='weights spec (weights.py); default: confident random weights')
    parser.add_argument('--superpoint-weights', help='weights spec; default: from --superglue-weights')
    args = parser.parse_args()
    if args.warmup < 1 or not args.duration_s > 0 or not args.overload_hz > 0:
        parser.error('--warmup must be >= 1, --duration-s and --overload-hz > 0')

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

    paths = sorted(FREIBURG.glob('*.png'))
    if not paths:
        sys.exit(f'benchmark_node_latency: no frames in {FREIBURG} (see ../shared/data/README.md)')
    messages = [numpy_to_image_msg(cv2.imread(str(path), cv2.IMREAD_COLOR), 'bgr8') for path in paths]

    # DDS traffic kept to this run (a domain of its own unless set, this host only); the node inherits it
    os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 100 + 1))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    namespace = f'/latency_{os.getpid()}'
    with tempfile.TemporaryDirectory() as tmp:
        if args.superglue_weights:  # superpoint_weights: the params file's unless given
            weights = {'superglue_weights': args.superglue_weights}
            if args.superpoint_weights:
                weights['superpoint_weights'] = args.superpoint_weights
        else:
            weights = {'superpoint_weights': str(write_original(Path(tmp) / 'superpoint.pth', superpoint_state_dict())),
                       'superglue_weights': str(write_original(Path(tmp) / 'superglue.pth', superglue_state_dict()))}
        overrides = {'device': args.device, **weights}
        command = [sys.executable, '-m', 'superglue_ros.node', '--ros-args', '-r', f'__ns:={namespace}',
                   '--params-file', str(args.params_file)]
        command += [arg for name, value in overrides.items() for arg in ('-p', f'{name}:={value}')]
        log_path = Path(tmp) / 'node.log'
        with open(log_path, 'w') as log:
            node_process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        rclpy.init()
        helper = Node('latency_probe', namespace=namespace)
        receipts = Receipts()
        helper.create_subscription(Matches, 'superglue/matches', receipts, 1000)
        camera = Camera(helper.create_publisher(Image, 'image', 10), messages)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(helper)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()

        def node_output() -> str:
            return log_path.read_text()[-4000:]

        def closed_loop(seconds: float, timeout: float) -> list:
            """Publish a frame once the previous one's Matches arrived, or `timeout` passed (taken as lost)."""
            stamps, start = [], time.monotonic()
            while time.monotonic() - start < seconds:
                stamps.append(camera.publish())
                if not receipts.wait(stamps[-1], timeout) and node_process.poll() is not None:
                    sys.exit(f'the node exited:\n{node_output()}')
            return stamps

        def open_loop(rate_hz: float, seconds: float, until_matched: int = 0) -> list:
            stamps, start = [], time.monotonic()
            while len(stamps) / rate_hz < seconds:
                if until_matched and sum(s in receipts.by_stamp for s in stamps) >= until_matched:
                    return stamps
                time.sleep(max(0.0, start + len(stamps) / rate_hz - time.monotonic()))
                stamps.append(camera.publish())
            receipts.wait(stamps[-1], DRAIN_S)  # the last one may have been dropped: bounded wait
            return stamps

        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not (camera.publisher.get_subscription_count()
                       and helper.count_publishers(f'{namespace}/superglue/matches')):
                if node_process.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f'the node did not come up:\n{node_output()}')
                time.sleep(0.1)
            warm = [s for s in open_loop(WARMUP_HZ, START_TIMEOUT_S, args.warmup) if s in receipts.by_stamp]
            if len(warm) < args.warmup:
                sys.exit(f'{len(warm)} of {args.warmup} warm-up frames matched in {START_TIMEOUT_S} s; '
                         f'node output:\n{node_output()}')
            # a frame lost on the way (best-effort image subscription) is given up after twice the latency
            frame_timeout = 2e-3 * statistics.median(latency_ms(s, receipts) for s in warm)
            print(f'date: {datetime.datetime.now().astimezone().isoformat(timespec="minutes")}')
            gpu = (f'GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}' if torch.cuda.is_available()
                   else 'no GPU')
            print(f'machine: {cpu_model()}, {os.cpu_count()} cores, {gpu}; load average {os.getloadavg()[0]:.1f}')
            print(f'torch {torch.__version__}, python {platform.python_version()}, '
                  f'RMW {rclpy.get_rmw_implementation_identifier()}, ROS_DOMAIN_ID {os.environ["ROS_DOMAIN_ID"]}')
            print(f'node: {args.params_file.name} with device={args.device}, weights '
                  f'{args.superglue_weights or "confident random"}; {len(warm)} warm-up frames matched')

            phases = [('30 Hz', open_loop(30.0, args.duration_s), args.duration_s)]
            start = time.monotonic()
            phases.append(('full speed', closed_loop(args.duration_s, frame_timeout), time.monotonic() - start))
            phases.append(('overload', open_loop(args.overload_hz, args.duration_s), args.duration_s))

            print(f'\n{"mode":<12}{"published":>10}{"matched":>9}{"dropped":>9}{"frames/s":>10}'
                  f'{"median":>10}{"p90":>10}{"max":>10}{"in node":>10}')
            print(f'(latency ms from publish to receipt; in node: median Matches.latency_ms; dropped: by the node '
                  f'while busy; frames neither matched nor dropped were lost on the way. Full speed: the next frame '
                  f'after a frame\'s Matches or {frame_timeout:.2f} s)')
            for name, stamps, seconds in phases:
                print(summary(name, stamps, receipts, seconds))
        finally:
            node_process.send_signal(signal.SIGINT)
            try:
                node_process.wait(30)
            except subprocess.TimeoutExpired:
                node_process.kill()
            executor.shutdown(timeout_sec=5)
            helper.destroy_node()
            rclpy.try_shutdown()


if __name__ == '__main__':
    main()
