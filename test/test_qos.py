"""Subscriptions whose QoS follows the publisher (superglue_ros.ros.qos), over real DDS.

A camera driver in another process (PUBLISHER below, started with subprocess) publishes 640x480 bgr8
sensor_msgs/Image (900 KB) with the QoS a test gives it. Checked: a reliable publisher gets a reliable
subscription and every frame, a burst included, arrives (Fast DDS's defaults; best effort loses such
frames between processes on this machine); a best-effort publisher gets a best-effort subscription; a
subscription made before any publisher starts with sensor-data QoS and turns reliable when a reliable
publisher appears; qos_overrides parameters fix the QoS.
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from ros_helpers import Inbox, Spinner, isolate_ros_network, wait_until
from superglue_ros.ros.diagnostics import SequenceGaps
from superglue_ros.ros.qos import RELIABLE_DEPTH, AdaptiveSubscription, subscription_qos, user_overrides

REPO_ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 30
RELIABLE, BEST_EFFORT = QoSReliabilityPolicy.RELIABLE, QoSReliabilityPolicy.BEST_EFFORT

# A camera driver: publishes frames when told on stdin, answers on stdout; ends when stdin closes.
#   wait <reliable|best_effort>   until one subscription of that reliability is matched -> 'matched'
#   send <count> <period_s>       frames stamped 1, 2, ... (continuing) -> 'sent <count>'
PUBLISHER = r'''
import sys, time
import numpy as np, rclpy
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from superglue_ros.ros.image_conversion import numpy_to_image_msg
topic, reliability, depth, width, height = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rclpy.init()
node = rclpy.create_node('camera_driver')
publisher = node.create_publisher(Image, topic, QoSProfile(
    depth=depth, reliability=QoSReliabilityPolicy[reliability.upper()]))
msg = numpy_to_image_msg(np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8), 'bgr8')
stamp = 0
print('ready', flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == 'wait':
        wanted = QoSReliabilityPolicy[command[1].upper()]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            readers = node.get_subscriptions_info_by_topic(topic)
            if (publisher.get_subscription_count() == 1 and len(readers) == 1
                    and readers[0].qos_profile.reliability == wanted):
                break
            time.sleep(0.05)
        print('matched' if time.monotonic() < deadline else f'no {command[1]} subscription', flush=True)
    elif command[0] == 'send':
        for _ in range(int(command[1])):
            stamp += 1
            msg.header.stamp.sec = stamp
            publisher.publish(msg)
            time.sleep(float(command[2]))
        print(f'sent {command[1]}', flush=True)
node.destroy_node()  # stdin closed: leave the graph at once (a killed process stays for the lease time)
rclpy.shutdown()
'''


class CameraDriver:
    """PUBLISHER in its own process (the test session's DDS domain, inherited through os.environ)."""

    def __init__(self, topic: str, reliability: str, depth: int = 10, size=(640, 480)):
        self.process = subprocess.Popen(
            [sys.executable, '-c', PUBLISHER, topic, reliability, str(depth), *map(str, size)], cwd=REPO_ROOT,
            env={**os.environ,
                 'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')]))},
            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.expect('ready')

    def expect(self, answer: str, timeout: float = WAIT_S):
        line = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or line[0].strip() != answer:
            self.stop()
            pytest.fail(f'camera driver process: expected {answer!r}, got {line[0] if line else "nothing"!r} '
                        f'within {timeout} s; output: {self.process.stdout.read() if not line else ""}')

    def command(self, command: str, answer: str, timeout: float = WAIT_S):
        self.process.stdin.write(command + '\n')
        self.process.stdin.flush()
        self.expect(answer, timeout)

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def topic(request):
    return f'/test_qos_{os.getpid()}_{request.node.name.split("[")[0]}'


@pytest.fixture
def node(context):
    node = Node('adaptive', context=context)
    with Spinner(context, node):
        yield node
    node.destroy_node()


def stamps(inbox: Inbox) -> list:
    return [m.header.stamp.sec for m in inbox.messages]


def test_reliable_publisher_every_frame_arrives(node, topic):
    """17 frames at a rate a node follows, then a burst of RELIABLE_DEPTH frames sent back to back:
    every one of them arrives, in order."""
    driver = CameraDriver(topic, 'reliable', depth=10)
    try:
        wait_until(lambda: node.count_publishers(topic), 'the camera driver in the graph', WAIT_S)
        frames = Inbox(topic)
        subscription = AdaptiveSubscription(node, Image, topic, frames)
        assert subscription.qos.reliability == RELIABLE and subscription.qos.depth == RELIABLE_DEPTH
        assert not subscription.overridden and subscription.topic_name == topic
        driver.command('wait reliable', 'matched')
        driver.command('send 17 0.25', 'sent 17')
        frames.wait(17, WAIT_S)
        driver.command(f'send {RELIABLE_DEPTH} 0', f'sent {RELIABLE_DEPTH}')
        frames.wait(17 + RELIABLE_DEPTH, WAIT_S)
        assert stamps(frames) == list(range(1, 18 + RELIABLE_DEPTH))
        assert (frames.messages[0].width, frames.messages[0].height, len(frames.messages[0].data)) == (640, 480, 921600)
        subscription.destroy()
        wait_until(lambda: node.count_subscribers(topic) == 0, 'the subscription gone from the graph', WAIT_S)
    finally:
        driver.stop()


def test_take_drains_the_reader_and_every_frame_is_taken_or_counted_lost(node, topic):
    """While the callback holds its callback group (as node.Camera._on_image does while the worker is busy),
    a reliable keep-last-10 driver in another process sends 59 small frames back to back: the reader's
    history overwrites most of them. take() gives the newest (deserialized) and the info of every message
    taken; with the callback's first frame, taken + the gaps in the publication sequence numbers
    (SequenceGaps) = the 60 frames sent."""
    driver = CameraDriver(topic, 'reliable', size=(64, 48))
    held, release, infos = threading.Event(), threading.Event(), []

    def hold(msg, info):
        assert msg.header.stamp.sec == 1
        infos.append(info)
        held.set()
        release.wait(WAIT_S)
    try:
        wait_until(lambda: node.count_publishers(topic), 'the camera driver in the graph', WAIT_S)
        subscription = AdaptiveSubscription(node, Image, topic, hold, MutuallyExclusiveCallbackGroup())
        driver.command('wait reliable', 'matched')
        driver.command('send 1 0', 'sent 1')
        assert held.wait(WAIT_S)
        driver.command('send 59 0', 'sent 59')
        newest = []

        def drained():  # take until the last frame sent is in
            msg, taken = subscription.take()
            infos.extend(taken)
            newest.extend([msg] if msg is not None else [])
            return newest and newest[-1].header.stamp.sec == 60
        wait_until(drained, 'the last frame sent taken', WAIT_S)
        release.set()
        assert (newest[-1].width, newest[-1].height) == (64, 48)
        numbers = [info['publication_sequence_number'] for info in infos]
        assert numbers[0] == 1 and numbers[-1] == 60 and numbers == sorted(set(numbers)), numbers
        gaps = SequenceGaps()
        gaps.note(infos, publishers=1)
        lost = int(gaps.figures()['frames lost before the callback'])
        print(f'\n[take] 60 sent: {len(infos)} taken, {lost} lost before the callback')
        assert len(infos) + lost == 60 and lost >= 60 - 2 * RELIABLE_DEPTH - 1  # the reader keeps 10
        assert subscription.take() == (None, [])
        subscription.destroy()
        assert subscription.take() == (None, [])
    finally:
        release.set()
        driver.stop()


def test_best_effort_publisher_gets_best_effort(node, topic):
    """Best effort matches only a best-effort reader; small frames come through it."""
    driver = CameraDriver(topic, 'best_effort', size=(64, 48))
    try:
        wait_until(lambda: node.count_publishers(topic), 'the camera driver in the graph', WAIT_S)
        frames = Inbox(topic)
        subscription = AdaptiveSubscription(node, Image, topic, frames)
        assert subscription.qos.reliability == BEST_EFFORT
        assert subscription.qos.depth == qos_profile_sensor_data.depth
        driver.command('wait best_effort', 'matched')
        driver.command('send 20 0.02', 'sent 20')
        frames.wait(1, WAIT_S)
        assert set(stamps(frames)) <= set(range(1, 21))
        subscription.destroy()
    finally:
        driver.stop()


def test_no_publisher_then_reliable_publisher(node, topic):
    """Sensor-data QoS until a publisher appears, then reliable (the subscription recreated once, the
    old one gone), and 640x480 frames arrive; the QoS stays when the publisher leaves."""
    frames = Inbox(topic)
    subscription = AdaptiveSubscription(node, Image, topic, frames, poll_s=0.2)
    assert subscription.qos == qos_profile_sensor_data
    first = subscription.subscription
    driver = CameraDriver(topic, 'reliable')
    try:
        wait_until(lambda: subscription.qos.reliability == RELIABLE, 'the subscription to turn reliable', WAIT_S)
        assert subscription.subscription is not first and subscription.qos.depth == RELIABLE_DEPTH
        driver.command('wait reliable', 'matched')
        driver.command('send 5 0.1', 'sent 5')
        frames.wait(5, WAIT_S)
        assert stamps(frames) == [1, 2, 3, 4, 5]
    finally:
        driver.stop()
    wait_until(lambda: node.count_publishers(topic) == 0, 'the camera driver gone from the graph', WAIT_S)
    current = subscription.subscription
    time.sleep(3 * 0.2)  # three polls without a publisher: nothing changes
    assert subscription.subscription is current and subscription.qos.reliability == RELIABLE
    subscription.destroy()


def test_override_wins(context, topic):
    """qos_overrides given to the node fix the QoS: a reliable publisher does not change it, and the
    parameters are declared (read-only) with the values in use."""
    node = Node('overridden', context=context,
                cli_args=['--ros-args', '-p', f'qos_overrides.{topic}.subscription.reliability:=best_effort'])
    publisher_node = Node('driver', context=context)
    publisher_node.create_publisher(Image, topic, QoSProfile(depth=10, reliability=RELIABLE))
    try:
        with Spinner(context, node):
            wait_until(lambda: node.count_publishers(topic), 'the publisher in the graph', WAIT_S)
            subscription = AdaptiveSubscription(node, Image, topic, lambda msg: None, poll_s=0.1)
            assert subscription.overridden and subscription.qos.reliability == BEST_EFFORT
            current = subscription.subscription
            time.sleep(5 * 0.1)  # five polls' worth: nothing polls at all
            assert subscription.subscription is current and subscription.qos.reliability == BEST_EFFORT
            declared = {name: p.value for name, p in node.get_parameters_by_prefix('qos_overrides').items()}
            assert declared == {f'{topic}.subscription.reliability': 'best_effort',
                                f'{topic}.subscription.history': 'keep_last',
                                f'{topic}.subscription.depth': RELIABLE_DEPTH}  # the rest from the publisher
            assert node.describe_parameter(f'qos_overrides.{topic}.subscription.depth').read_only
            subscription.destroy()
    finally:
        node.destroy_node()
        publisher_node.destroy_node()


def test_without_override_no_parameters_stay_declared(node, topic):
    assert user_overrides(node, topic) == {}
    subscription = AdaptiveSubscription(node, Image, topic, lambda msg: None)
    assert not subscription.overridden and node.get_parameters_by_prefix('qos_overrides') == {}
    subscription.destroy()
    subscription.destroy()  # idempotent


@pytest.mark.parametrize('override, expected', [
    ('reliability:=sometimes', 'Unexpected QoS override for policy `reliability`: `sometimes`'),
    ('depth:=abc', "expecting type 'INTEGER'"),
    ('depth:=-3', 'depth must be an integer >= 1, got -3'),
    ('history:=1', "expecting type 'STRING'"),
])
def test_bad_override_is_refused(context, topic, override, expected):
    node = Node('bad_override', context=context,
                cli_args=['--ros-args', '-p', f'qos_overrides.{topic}.subscription.{override}'])
    try:
        with pytest.raises(ValueError) as error:
            AdaptiveSubscription(node, Image, topic, lambda msg: None)
        message = str(error.value)
        assert message.startswith(f'qos_overrides.{topic}.subscription.*: ') and expected in message
        assert 'accepted: reliability reliable / best_effort' in message and '\n' not in message
    finally:
        node.destroy_node()


def endpoint(reliability):
    return SimpleNamespace(qos_profile=QoSProfile(depth=10, reliability=reliability))


def test_subscription_qos_rule():
    assert subscription_qos([]) is None
    assert subscription_qos([endpoint(RELIABLE)]).reliability == RELIABLE
    assert subscription_qos([endpoint(RELIABLE), endpoint(RELIABLE)]).depth == RELIABLE_DEPTH
    assert subscription_qos([endpoint(BEST_EFFORT)]) == qos_profile_sensor_data
    assert subscription_qos([endpoint(RELIABLE), endpoint(BEST_EFFORT)]) == qos_profile_sensor_data


def measure(runs: int = 2, paced: int = 17, period_s: float = 0.25, burst: int = 3):
    """Frames a best-effort and a reliable subscription receive from the reliable CameraDriver (640x480
    bgr8), side by side, `runs` times: the table in the README's "Large images over Fast DDS".
    `PYTHONPATH=. python test/test_qos.py` in the ROS environment, with and without
    FASTRTPS_DEFAULT_PROFILES_FILE set to compare transports."""
    isolate_ros_network()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node('measure', context=context)
    kinds = {'best effort': qos_profile_sensor_data, 'reliable': QoSProfile(depth=10, reliability=RELIABLE)}
    print(f'FASTRTPS_DEFAULT_PROFILES_FILE={os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")!r}; '
          f'{paced} frames every {period_s} s, then a burst of {burst}')
    with Spinner(context, node):
        for run in range(runs):
            for kind, qos in kinds.items():
                topic = f'/measure_{os.getpid()}_{run}_{kind.replace(" ", "_")}'
                driver = CameraDriver(topic, 'reliable')
                frames = Inbox(topic)
                subscription = node.create_subscription(Image, topic, frames, qos)
                driver.command(f'wait {qos.reliability.name.lower()}', 'matched')
                driver.command(f'send {paced} {period_s}', f'sent {paced}')
                time.sleep(1.0)  # the last frames in flight
                received = len(frames)
                driver.command(f'send {burst} 0', f'sent {burst}')
                time.sleep(2.0)
                print(f'run {run + 1}, {kind} subscription: {received}/{paced} frames, '
                      f'burst {len(frames) - received}/{burst}', flush=True)
                node.destroy_subscription(subscription)
                driver.stop()
    node.destroy_node()
    rclpy.shutdown(context=context)


if __name__ == '__main__':
    measure()
