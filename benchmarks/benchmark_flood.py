"""A flood of small frames (issue 17 point 7): the node's matched frames/s paced and flooded, side by side.

    python benchmarks/benchmark_flood.py [--node-repo DIR ...] [--rate-hz 500] [--duration-s 10]
        [--size 64x48] [--param NAME:=VALUE ...]

Each --node-repo (default: this checkout) is a checkout whose node runs in its own process, as deployed
(`python -m superglue_ros.node` in that directory, with this environment's built interfaces), with the
default parameters except device cpu, backend torch, confident random weights written as .pth files (the
speed does not depend on the weight values) and the --param overrides. Give two checkouts, e.g. main
and a branch, to measure old and new code in one run. All nodes are started first, then measured one
at a time, each in turn:

  paced    closed loop for --duration-s: the next frame is published once the previous one's Matches
           arrived: the node's unflooded rate
  flooded  --rate-hz for --duration-s, open loop, from the same publisher; then up to 10 s for the
           node to finish

Frames: --size mono8 (default 64x48), a seeded texture shifted by one pixel per frame, stamped with the
wall clock; one publisher, reliable, keep last 10 (a camera driver as REP 2003 describes one).

Printed per node and phase: frames sent and matched, matched frames/s, and for the flood the node's
CPU share (of one core) and its accounting from /diagnostics: images received by the callback, frames
lost before the callback (the node's count, 'not counted' where its /diagnostics has none),
received + lost against sent; then flooded / paced frames/s. Needs the ROS environment (make setup,
then . install/setup.bash).
"""
import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks'), str(REPO / 'test')]

from benchmark_core import cpu_model  # noqa: E402
from model_fixtures import write_original  # noqa: E402
from superglue_ros.random_weights import superglue_state_dict, superpoint_state_dict  # noqa: E402

START_TIMEOUT_S = 180   # weights loading and DDS discovery
FRAME_TIMEOUT_S = 10    # paced: a frame whose Matches has not come by then is taken as lost
DRAIN_S = 10            # after the flood: the node finishes its frame and reports on /diagnostics
LOST_KEY = 'frames lost before the callback'


class Node:
    """One node process under test, and what this process receives from it."""

    def __init__(self, label: str, repo: Path, namespace: str, parameters: dict, log_path: Path):
        self.label, self.namespace, self.log_path = label, namespace, log_path
        command = [sys.executable, '-m', 'superglue_ros.node', '--ros-args', '-r', f'__ns:={namespace}']
        command += [arg for name, value in parameters.items() for arg in ('-p', f'{name}:={value}')]
        with open(log_path, 'w') as log:
            self.process = subprocess.Popen(command, cwd=repo, stdout=log, stderr=subprocess.STDOUT)
        self.matched = {}        # stamp (sec, nanosec) -> receipt time.monotonic()
        self.diagnostics = None  # {key: value} of its camera's latest /diagnostics status
        self.changed = threading.Condition()

    def on_matches(self, msg):
        with self.changed:
            self.matched[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.monotonic()
            self.changed.notify_all()

    def on_diagnostics(self, array):
        for status in array.status:
            values = {v.key: v.value for v in status.values}
            if values.get('image topic') == f'{self.namespace}/image':
                with self.changed:
                    self.diagnostics = values
                    self.changed.notify_all()

    def wait(self, condition, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(condition, timeout)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (/proc/<pid>/stat)."""
        fields = Path(f'/proc/{self.process.pid}/stat').read_text().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')

    def output(self) -> str:
        return self.log_path.read_text()[-4000:]


def frames(size: tuple[int, int], count: int = 16) -> list:
    """`count` mono8 frames of a seeded blurred texture, each shifted by one pixel from the previous one."""
    import cv2
    width, height = size
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (height + count, width + count),
                                                                  dtype=np.uint8), (3, 3), 0)
    return [np.ascontiguousarray(texture[i:i + height, i:i + width]) for i in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--node-repo', type=Path, nargs='+', default=[REPO],
                        help='checkouts whose node to run, one node each (default: this one)')
    parser.add_argument('--rate-hz', type=float, default=500.0, help='flood publish rate (default 500)')
    parser.add_argument('--duration-s', type=float, default=10.0, help='seconds of each phase (default 10)')
    parser.add_argument('--size', default='64x48', help='frame WIDTHxHEIGHT, mono8 (default 64x48)')
    parser.add_argument('--param', action='append', default=[], metavar='NAME:=VALUE',
                        help='a node parameter (repeatable); defaults: device cpu, backend torch')
    parser.add_argument('--warmup', type=int, default=5, help='frames matched before measuring (default 5)')
    args = parser.parse_args()
    try:
        size = tuple(int(x) for x in args.size.lower().split('x'))
        overrides = dict(p.split(':=', 1) for p in args.param)
    except ValueError:
        parser.error('--size is WIDTHxHEIGHT, --param NAME:=VALUE')
    if len(size) != 2 or not args.rate_hz > 0 or not args.duration_s > 0 or args.warmup < 1:
        parser.error('--size WIDTHxHEIGHT; --rate-hz and --duration-s > 0; --warmup >= 1')

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node as RosNode
    from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
    from sensor_msgs.msg import Image
    try:
        from superglue_ros.msg import Matches
    except ImportError as e:
        sys.exit(f'benchmark_flood: superglue_ros messages not built or not sourced ({e}): run `make setup`, '
                 'then `. .venv/bin/activate && . install/setup.bash`')
    from superglue_ros.ros.image_conversion import numpy_to_image_msg

    messages = [numpy_to_image_msg(frame, 'mono8') for frame in frames(size)]
    reliable = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
    os.environ.setdefault('ROS_DOMAIN_ID', str(os.getpid() % 100 + 1))  # the nodes inherit it
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    with tempfile.TemporaryDirectory() as tmp:
        weights = {'superpoint_weights': str(write_original(Path(tmp) / 'superpoint.pth', superpoint_state_dict())),
                   'superglue_weights': str(write_original(Path(tmp) / 'superglue.pth', superglue_state_dict()))}
        parameters = {'device': 'cpu', 'backend': 'torch', **weights, **overrides}
        rclpy.init()
        helper = RosNode('flood_probe')
        nodes, publishers = [], []
        for i, repo in enumerate(args.node_repo):
            node = Node(f'{repo.resolve().name} ({i})', repo.resolve(), f'/flood_{os.getpid()}_{i}', parameters,
                        Path(tmp) / f'node{i}.log')
            helper.create_subscription(Matches, f'{node.namespace}/superglue/matches', node.on_matches, 1000)
            publishers.append(helper.create_publisher(Image, f'{node.namespace}/image', reliable))
            nodes.append(node)
        helper.create_subscription(DiagnosticArray, '/diagnostics',
                                   lambda a: [node.on_diagnostics(a) for node in nodes], 100)
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(helper)
        threading.Thread(target=executor.spin, daemon=True).start()
        sent = [0] * len(nodes)

        def publish(i: int):
            msg = messages[sent[i] % len(messages)]
            now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = now // 10**9, now % 10**9
            publishers[i].publish(msg)
            sent[i] += 1
            return msg.header.stamp.sec, msg.header.stamp.nanosec

        def paced(i: int, seconds: float) -> list:
            """Frames published one at a time, each after the previous one's Matches (or FRAME_TIMEOUT_S), for
            `seconds`, at least one."""
            stamps, start = [], time.monotonic()
            while not stamps or time.monotonic() - start < seconds:
                stamps.append(publish(i))
                if not nodes[i].wait(lambda: stamps[-1] in nodes[i].matched, FRAME_TIMEOUT_S) \
                        and nodes[i].process.poll() is not None:
                    sys.exit(f'the node {nodes[i].label} exited:\n{nodes[i].output()}')
            return stamps

        def accounting(i: int, total: int) -> tuple:
            """(images received, frames lost or None) from /diagnostics, once they account for `total` frames
            sent or DRAIN_S passed."""
            node = nodes[i]

            def figures():
                values = node.diagnostics or {}
                lost = int(values[LOST_KEY]) if LOST_KEY in values else None
                return int(values.get('images received', 0)), lost
            node.wait(lambda: figures()[0] + (figures()[1] or 0) >= total, DRAIN_S)
            return figures()

        try:
            deadline = time.monotonic() + START_TIMEOUT_S * len(nodes)
            for i, node in enumerate(nodes):
                while not any(info.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE
                              for info in helper.get_subscriptions_info_by_topic(publishers[i].topic_name)):
                    if node.process.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f'the node {node.label} did not come up:\n{node.output()}')
                    time.sleep(0.1)
                warm = []  # one frame at a time, until --warmup of them are matched
                while sum(s in node.matched for s in warm) < args.warmup:
                    if len(warm) >= 10 * args.warmup:
                        sys.exit(f'{node.label}: under {args.warmup} of {len(warm)} warm-up frames matched; '
                                 f'node output:\n{node.output()}')
                    warm += paced(i, 0.0)
            print(f'date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")}')
            print(f'machine: {cpu_model()}, {os.cpu_count()} cores; load average before '
                  f'{" ".join(f"{x:.2f}" for x in os.getloadavg())}')
            print(f'python {platform.python_version()}, RMW {rclpy.get_rmw_implementation_identifier()}, '
                  f'ROS_DOMAIN_ID {os.environ["ROS_DOMAIN_ID"]}')
            print(f'frames {size[0]}x{size[1]} mono8, one publisher, reliable keep last 10; node parameters: '
                  + ', '.join(f'{k} {v}' for k, v in parameters.items() if k not in weights) + ', random weights; '
                  f'paced {args.duration_s:g} s, flooded {args.rate_hz:g} Hz for {args.duration_s:g} s')

            results = []
            for i, node in enumerate(nodes):  # one node working at a time
                start = time.monotonic()
                paced_stamps = paced(i, args.duration_s)
                paced_fps = sum(s in node.matched for s in paced_stamps) / (time.monotonic() - start)
                received0, lost0 = accounting(i, sent[i])
                cpu0, start, flood = node.cpu_s(), time.monotonic(), []
                while len(flood) < args.rate_hz * args.duration_s:
                    time.sleep(max(0.0, start + len(flood) / args.rate_hz - time.monotonic()))
                    flood.append(publish(i))
                seconds = time.monotonic() - start
                cpu = (node.cpu_s() - cpu0) / seconds
                matched = sum(s in node.matched and node.matched[s] - start <= seconds for s in flood)
                received1, lost1 = accounting(i, sent[i])
                results.append((node, len(paced_stamps), paced_fps, len(flood), seconds, matched / seconds, cpu,
                                received1 - received0, None if lost1 is None else lost1 - (lost0 or 0)))
            print(f'load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}\n')

            print(f'{"node":<22}{"paced sent":>11}{"frames/s":>9}{"flood sent":>11}{"in s":>6}{"frames/s":>9}'
                  f'{"CPU":>6}{"received":>9}{"lost":>12}{"rec+lost":>9}{"flooded/paced":>14}')
            for node, paced_sent, paced_fps, flood_sent, seconds, flood_fps, cpu, received, lost in results:
                print(f'{node.label:<22}{paced_sent:>11}{paced_fps:>9.2f}{flood_sent:>11}{seconds:>6.1f}{flood_fps:>9.2f}'
                      f'{cpu:>6.0%}{received:>9}{"not counted" if lost is None else lost:>12}'
                      f'{"-" if lost is None else received + lost:>9}{flood_fps / paced_fps:>14.2f}')
            print('(frames/s: frames whose Matches arrived within the phase; CPU: the node process, of one core, '
                  'during the flood; received: images taken by its callback, from /diagnostics; lost: frames it '
                  'counts as lost before the callback)')
        finally:
            for node in nodes:
                node.process.send_signal(signal.SIGINT)
            for node in nodes:
                try:
                    node.process.wait(30)
                except subprocess.TimeoutExpired:
                    node.process.kill()
            executor.shutdown(timeout_sec=5)
            helper.destroy_node()
            rclpy.try_shutdown()


if __name__ == '__main__':
    main()
