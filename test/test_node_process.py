"""The node in its own process, as deployed: `python -m superglue_ros.node --ros-args ...`.

A publisher in this process sends the real freiburg frames over DDS. Checked: matches arrive; a
burst far faster than processing keeps the node's latency and memory flat (frames dropped and
counted instead of queued); Ctrl-C (SIGINT) ends it cleanly; missing or corrupt weights and bad
parameters stop it at start-up with a non-zero exit code and a message that says what to do.
The node runs confident random weights written by the test as original .pth files, on CPU.
"""
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import pytest
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image

from ros_helpers import Inbox, Spinner, import_interfaces, isolate_ros_network, random_weight_files, wait_until
from superglue_ros.ros.image_conversion import numpy_to_image_msg

Matches, _, _ = import_interfaces()

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_SETTINGS = {'device': 'cpu', 'max_keypoints': '256', 'sinkhorn_iterations': '20'}
FRAME_SIZE = (320, 240)
BURST = 200
WAIT_S = 120
_stamps = itertools.count(1000)


class NodeProcess:
    """python -m superglue_ros.node in a namespace, its output collected by a thread."""

    def __init__(self, namespace: str, parameters: dict, env: dict | None = None):
        args = ['-r', f'__ns:={namespace}'] + [a for k, v in parameters.items() for a in ('-p', f'{k}:={v}')]
        self.namespace = namespace
        self.process = subprocess.Popen([sys.executable, '-m', 'superglue_ros.node', '--ros-args', *args],
                                        cwd=REPO_ROOT, env={**os.environ, **(env or {})}, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._lines = []
        self._reader = threading.Thread(target=lambda: self._lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return ''.join(self._lines)

    def rss_mib(self) -> float:
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(re.search(r'VmRSS:\s+(\d+) kB', status)[1]) / 1024

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f'node still running after {timeout} s; output:\n{self.output}')
        self._reader.join(5)
        return code

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture(scope='module')
def context():
    isolate_ros_network()
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture(scope='module')
def weight_files(tmp_path_factory):
    return random_weight_files(tmp_path_factory.getbasetemp() / 'random_weights')


@pytest.fixture(scope='module')
def messages(freiburg_paths):
    """bgr8 messages of the first frames at 320x240 (stamps set when sent). Between processes, this
    machine's Fast DDS loses many full 640x480 frames (900 KB) to best-effort readers, also to a plain
    rclpy subscriber; 230 KB frames go through."""
    return [numpy_to_image_msg(cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), FRAME_SIZE,
                                          interpolation=cv2.INTER_AREA), 'bgr8') for path in freiburg_paths[:4]]


@pytest.fixture(scope='module')
def running(context, weight_files):
    """(node process, helper node, Matches inbox, image publisher), the node started once."""
    node = NodeProcess(f'/test_process_{os.getpid()}', {**NODE_SETTINGS, **weight_files})
    helper = Node('helper', namespace=node.namespace, context=context)
    matches = Inbox('~/matches')
    helper.create_subscription(Matches, 'superglue/matches', matches, 1000)
    publisher = helper.create_publisher(Image, 'image', 10)
    spinner = Spinner(context, helper).__enter__()
    wait_until(lambda: node.process.poll() is not None or (
        publisher.get_subscription_count() and helper.count_publishers(f'{node.namespace}/superglue/matches')),
        'the node process to come up', WAIT_S)
    assert node.process.poll() is None, f'the node exited at start-up:\n{node.output}'
    yield node, helper, matches, publisher
    node.stop()
    spinner.__exit__()
    helper.destroy_node()


def publish(publisher, msg, stamp: int):
    msg.header.stamp.sec = stamp
    publisher.publish(msg)


def send(running, msg, timeout: float = WAIT_S / 3, attempts: int = 3):
    """Publish until its Matches arrives: the image subscription is best effort, and a frame right
    after a burst can be lost on the way."""
    node, _, matches, publisher = running
    for _ in range(attempts):
        stamp = next(_stamps)
        publish(publisher, msg, stamp)
        try:
            return matches.wait_for(lambda m: m.header.stamp.sec == stamp, f'stamp {stamp}', timeout)
        except pytest.fail.Exception:
            print(f'[send] attempt lost: stamp {stamp}, {len(matches.messages)} matches so far')
            assert node.process.poll() is None, f'the node exited:\n{node.output}'
    pytest.fail(f'no Matches for {attempts} frames; node output:\n{node.output}')


def test_matches_over_dds_and_a_burst_keeps_latency_and_memory_flat(running, messages):
    node = running[0]
    single = [send(running, msg) for msg in messages]
    assert all(len(m.frame_points) == 2 * len(m.confidence) for m in single)
    assert len(single[1].confidence) > 20 and single[-1].dropped_frames == 0
    frame_ms = max(m.latency_ms for m in single[1:])  # one frame, nothing waiting: about one processing time
    rss_before = node.rss_mib()

    publisher, matches = running[3], running[2]
    stamps = [next(_stamps) for _ in range(BURST)]
    for i, stamp in enumerate(stamps):  # as fast as this process can publish
        publish(publisher, messages[i % len(messages)], stamp)
    final = send(running, messages[0], timeout=10 + 10 * frame_ms / 1000)
    rss_after = node.rss_mib()

    burst = [m for m in matches.messages if stamps[0] <= m.header.stamp.sec <= stamps[-1]]
    last = burst[-3:] + [final]
    print(f'\n[burst] {BURST} frames sent at once: {len(burst)} processed, {final.dropped_frames} dropped by the '
          f'node; single-frame latency {frame_ms:.0f} ms; burst latency max {max(m.latency_ms for m in burst):.0f} ms, '
          f'last {[round(m.latency_ms) for m in last]} ms; RSS {rss_before:.0f} -> {rss_after:.0f} MiB')
    assert len(burst) < BURST / 4, 'the node cannot have processed most of the burst'
    assert final.dropped_frames > 0
    # Without dropping, the last frames would wait for all earlier ones: latency ~ len(burst) * frame_ms.
    # With the one-slot mailbox a frame waits at most for the one being processed: ~2 frame times.
    assert all(m.latency_ms < 5 * frame_ms + 1000 for m in last), [m.latency_ms for m in last]
    # 200 queued 320x240 bgr8 frames would hold 44 MiB
    assert rss_after - rss_before < 20, f'RSS grew from {rss_before:.0f} to {rss_after:.0f} MiB'


def test_sigint_stops_the_node_cleanly(running, messages):
    node = running[0]
    send(running, messages[0])
    node.process.send_signal(signal.SIGINT)
    assert node.wait(60) == 0, node.output
    assert 'Traceback' not in node.output, node.output


@pytest.mark.parametrize('case', ['missing_file', 'missing_preset', 'corrupt_file'])
def test_unusable_weights_stop_the_start_with_the_download_command(context, tmp_path, weight_files, case):
    parameters, env = dict(NODE_SETTINGS), {}
    if case == 'missing_file':
        parameters['superglue_weights'] = str(tmp_path / 'missing' / 'superglue_indoor.pth')
        says = [parameters['superglue_weights'], 'does not exist', 'python -m superglue_ros.download']
    elif case == 'missing_preset':  # defaults: the 'indoor' preset, SuperPoint from the 'superpoint' preset
        env['SUPERGLUE_ROS_WEIGHTS_DIR'] = str(tmp_path)
        says = ["'superpoint' is not downloaded", 'python -m superglue_ros.download superpoint']
    else:
        corrupt = tmp_path / 'superglue.pth'
        corrupt.write_bytes(b'\x80\x02 this is not a checkpoint')
        parameters.update(weight_files, superglue_weights=str(corrupt))
        says = [str(corrupt), 'corrupt']
    node = NodeProcess(f'/test_weights_{case}', parameters, env)
    code = node.wait()
    assert code != 0
    for text in says:
        assert text in node.output, f'{text!r} not in:\n{node.output}'
    assert 'Traceback' not in node.output and 'FATAL' in node.output


@pytest.mark.parametrize('override, says', [('match_threshold:=1.5', ["parameter 'match_threshold'", '[0, 1)']),
                                            ('device:=gpu', ["parameter 'device'", "'auto', 'cuda'"])])
def test_bad_parameter_stops_the_start_naming_it(context, weight_files, override, says):
    name, value = override.split(':=')
    node = NodeProcess('/test_bad_parameter', {**NODE_SETTINGS, **weight_files, name: value})
    assert node.wait() != 0
    for text in says:
        assert text in node.output, f'{text!r} not in:\n{node.output}'
    assert 'Traceback' not in node.output
