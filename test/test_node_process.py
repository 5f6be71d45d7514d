"""The node in its own process, as deployed: `python -m superglue_ros.node --ros-args ...`.

A publisher in this process sends the real freiburg frames over DDS. Checked: matches arrive; a
burst far faster than processing keeps the node's latency and memory flat (frames dropped and
counted instead of queued); Ctrl-C (SIGINT) ends it cleanly; missing or corrupt weights and bad
parameters stop it at start-up with a non-zero exit code and a message that says what to do.
The node runs confident random weights written by the test as original .pth files, on CPU.
"""
import ctypes
import itertools
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from ros_helpers import (Inbox, Spinner, call_service, import_interfaces, random_weight_files,
                         wait_until)
from superglue_ros.ros.image_conversion import numpy_to_compressed_msg, numpy_to_image_msg

Matches, _, MatchImages = import_interfaces()

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_SETTINGS = {'device': 'cpu', 'max_keypoints': '256', 'sinkhorn_iterations': '20'}
FRAME_SIZE = (320, 240)
BURST = 200
WAIT_S = 120
_stamps = itertools.count(1000)


class NodeProcess:
    """python -m superglue_ros.node in a namespace, its output collected by a thread."""

    def __init__(self, namespace: str, parameters: dict, env: dict | None = None, remap: dict | None = None,
                 address_space: int | None = None, options: tuple = ()):
        """address_space: RLIMIT_AS of the process in bytes (resource.setrlimit), or None. options: the node's
        own arguments before --ros-args (('--lifecycle',): the managed node)."""
        args = ['-r', f'__ns:={namespace}'] + [a for k, v in (remap or {}).items() for a in ('-r', f'{k}:={v}')]
        args += [a for k, v in parameters.items() for a in ('-p', f'{k}:={v}')]
        self.namespace = namespace

        def limit():
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the node goes when the test run does
            if address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        self.process = subprocess.Popen([sys.executable, '-m', 'superglue_ros.node', *options, '--ros-args', *args],
                                        cwd=REPO_ROOT, env={**os.environ, **(env or {})}, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=limit)
        self._lines = []
        self._reader = threading.Thread(target=lambda: self._lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return ''.join(self._lines)

    def rss_mib(self) -> float:
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(re.search(r'VmRSS:\s+(\d+) kB', status)[1]) / 1024

    def rss_peak_mib(self) -> float:
        """VmHWM: the highest RSS so far. Unlike the RSS, it does not swing with what the allocator has
        just returned to the system (~35 MiB either way here), and a queue would still raise it."""
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(re.search(r'VmHWM:\s+(\d+) kB', status)[1]) / 1024

    def vm_peak_mib(self) -> float:
        status = Path(f'/proc/{self.process.pid}/status').read_text()
        return int(re.search(r'VmPeak:\s+(\d+) kB', status)[1]) / 1024

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
    publisher, matches = running[3], running[2]
    for i in range(BURST):  # a first burst as large: the allocators' (and DDS's) first growth is not a queue
        publish(publisher, messages[i % len(messages)], next(_stamps))
    send(running, messages[0], timeout=10 + 10 * frame_ms / 1000)
    rss_before = node.rss_peak_mib()

    stamps = [next(_stamps) for _ in range(BURST)]
    for i, stamp in enumerate(stamps):  # as fast as this process can publish
        publish(publisher, messages[i % len(messages)], stamp)
    final = send(running, messages[0], timeout=10 + 10 * frame_ms / 1000)
    rss_after = node.rss_peak_mib()

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


@pytest.mark.parametrize('override, says', [('match_threshold:=1.5', ['match_threshold must be', '[0, 1)']),
                                            ('device:=gpu', ['device must be', "'auto', 'cpu'"])])
def test_bad_parameter_stops_the_start_naming_it(context, weight_files, override, says):
    name, value = override.split(':=')
    node = NodeProcess('/test_bad_parameter', {**NODE_SETTINGS, **weight_files, name: value})
    assert node.wait() != 0
    for text in says:
        assert text in node.output, f'{text!r} not in:\n{node.output}'
    assert 'Traceback' not in node.output


@pytest.mark.parametrize('ros_args, says', [
    (['--params-file', '/nonexistent/params.yaml'], ['/nonexistent/params.yaml']),
    (['-r', 'image'], ['image']),
    (['--bogus'], ["unknown option(s) ['--bogus']"]),
])
def test_bad_ros_args_stop_the_start_in_one_line(ros_args, says):
    done = subprocess.run([sys.executable, '-m', 'superglue_ros.node', '--ros-args', *ros_args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=WAIT_S)
    output = done.stdout + done.stderr
    assert done.returncode == 1 and 'Traceback' not in output
    fatal, = [line for line in output.splitlines() if 'FATAL' in line]
    assert 'cannot start: bad --ros-args: ' in fatal and all(text in fatal for text in says), output


def test_a_parameter_the_node_does_not_have_is_named(context, weight_files):
    """rclpy ignores it; the node warns, with the closest parameter it has, and runs."""
    node = NodeProcess('/test_unknown_parameter', {**NODE_SETTINGS, **weight_files, 'max_keypoint': '100'})
    try:
        wait_until(lambda: 'matching /test_unknown_parameter/image' in node.output, 'the node to start', WAIT_S)
        assert "parameter 'max_keypoint' ignored: this node has no such parameter; did you mean " \
               "'max_keypoints'?" in node.output, node.output
    finally:
        node.process.send_signal(signal.SIGINT)
        node.wait(60)


# -- real sizes over the real transport: 640x480 colour frames between processes ---------------

RELIABLE = QoSProfile(history=QoSHistoryPolicy.KEEP_LAST, depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
FULL_SETTINGS = {'device': 'cpu', 'resize': '[320,240]', 'max_keypoints': '256', 'sinkhorn_iterations': '20',
                 'keyframe_min_matches': '0', 'keyframe_min_match_ratio': '0.0'}


@pytest.fixture(scope='module')
def full_frames(freiburg_paths):
    """The 17 freiburg frames, 640x480 bgr8 (about 900 KB each)."""
    return [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in freiburg_paths]


def driver_publisher(helper: Node, msg_type, topic: str):
    """A publisher as a camera driver makes one (REP 2003: reliable, keep last 10). Its readers_matched: how
    many readers DDS has matched with it, ever (its matched event's total_count)."""
    def matched(status):
        publisher.readers_matched = status.total_count

    publisher = helper.create_publisher(msg_type, topic, RELIABLE,
                                        event_callbacks=PublisherEventCallbacks(matched=matched))
    publisher.readers_matched = 0
    return publisher


def wait_followed(node: NodeProcess, publisher, matched: bool = True):
    """Until the node (another process) subscribes `publisher`'s topic reliably, following our
    driver_publisher, and DDS has matched that subscription with it (matched=False: the node's message type is
    not ours, so they never match). The node subscribes best_effort before a publisher appears, then destroys
    that subscription and subscribes reliable (qos.AdaptiveSubscription). The graph and DDS's matched counts
    each learn of that on their own: a matched count of 1 can still be the old reader, and a frame sent then
    is lost. Each subscription the node makes is a line of its log: our publisher must have matched as many."""
    topic = publisher.topic_name

    def followed():
        made = [line for line in node.output.splitlines() if f'{topic}: ' in line and 'subscribed ' in line]
        return bool(made) and 'subscribed reliable' in made[-1] and (
            not matched or publisher.readers_matched >= len(made) and publisher.get_subscription_count() > 0)

    wait_until(lambda: node.process.poll() is not None or followed(), f'the node to subscribe {topic} reliably',
               WAIT_S)
    assert node.process.poll() is None, f'the node exited:\n{node.output}'


class Driver:
    """A camera driver as REP 2003 describes one, in this process: reliable, keep last 10; and readers of
    the node's outputs. The node runs in its own process (NodeProcess). matched=False: msg_type is not the
    node's (its reader never matches ours); the wait is for its reliable subscription in the graph only."""

    def __init__(self, context, node: NodeProcess, cameras=('',), msg_type=Image, topics=None, matched=True):
        self.node, self.helper = node, Node('driver', namespace=node.namespace, context=context)
        self.matches, self.publishers, readers = {}, {}, []
        self._diagnostics = None  # an Inbox of /diagnostics, subscribed by the first wait_status
        for camera in cameras:
            prefix = f'{camera}/' if camera else ''
            self.matches[camera] = Inbox(f'~/{prefix}matches')
            readers.append(self.helper.create_subscription(Matches, f'superglue/{prefix}matches',
                                                           self.matches[camera], 1000))
            topic = (topics or {}).get(camera, f'{prefix}image')
            self.publishers[camera] = driver_publisher(self.helper, msg_type, topic)
        self.spinner = Spinner(context, self.helper).__enter__()
        try:
            self._wait_matched(node, readers, matched)
        except BaseException:  # the test never gets the driver to close: the node would outlive it
            self.close()
            raise

    def _wait_matched(self, node: NodeProcess, readers: list, matched: bool):
        for publisher in self.publishers.values():
            wait_followed(node, publisher, matched)
        # a Matches published before our reader matched is lost
        wait_until(lambda: node.process.poll() is not None or all(r.get_publisher_count() for r in readers),
                   'the node to match our readers', WAIT_S)
        assert node.process.poll() is None, f'the node exited:\n{node.output}'

    def publish(self, camera, msg, stamp: int, frame_id: str = 'camera'):
        msg.header.stamp.sec, msg.header.frame_id = stamp, frame_id
        self.publishers[camera].publish(msg)

    def send(self, camera, msg, frame_id: str = 'camera') -> 'Matches':
        stamp = next(_stamps)
        self.publish(camera, msg, stamp, frame_id)
        try:
            return self.matches[camera].wait_for(lambda m: m.header.stamp.sec == stamp, f'stamp {stamp}', WAIT_S)
        except pytest.fail.Exception as e:  # what the node said meanwhile
            pytest.fail(f'{e}\nnode output (last 3000 characters):\n{self.node.output[-3000:]}')

    def wait_status(self, wanted, what: str, camera: str = '') -> dict:
        """The key-value pairs of the node's /diagnostics status of `camera` once wanted(values) holds (up to
        WAIT_S; the node publishes it every second)."""
        if self._diagnostics is None:
            from diagnostic_msgs.msg import DiagnosticArray
            self._diagnostics = Inbox('/diagnostics')
            self.helper.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics, 100)
        topic = self.publishers[camera].topic_name

        def ours(array):
            for status in array.status:
                values = {v.key: v.value for v in status.values}
                if values.get('image topic') == topic and wanted(values):
                    return values
            return None
        return ours(self._diagnostics.wait_for(ours, what, WAIT_S))

    def send_with_info(self, camera, info_publisher, info, msg, missed=None) -> 'Matches':
        """Publish the camera_info `info`, then the frame, until a Matches carrying it comes back (for
        up to WAIT_S). Without message_filters the node takes the latest camera_info: it must have arrived before
        the frame. And DDS matches each side of a pair on its own: what we publish after our writer matched the
        node's reader, but before that reader matched our writer, is dropped, and what follows waits for the
        writer's next heartbeat to repair the gap (seconds). missed(): called after each Matches without it."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            info_publisher.publish(info)
            matches = self.send(camera, msg)
            if matches.camera_info == info:
                return matches
            if missed is not None:
                missed()
        pytest.fail(f'the camera_info of {camera!r} never reached the node:\n{self.node.output}')

    def close(self):
        self.spinner.__exit__()
        self.helper.destroy_node()
        self.node.stop()


def test_reliable_640x480_frames_are_all_accounted_for(context, weight_files, full_frames):
    """Issue 8: frames from a reliable publisher in another process, at a rate the node follows and
    then in a burst: matched frames + frames dropped by the mailbox (counted) = frames published."""
    node = NodeProcess(f'/test_qos_{os.getpid()}', {**FULL_SETTINGS, **weight_files})
    driver = Driver(context, node)
    try:
        messages = [numpy_to_image_msg(frame, 'bgr8') for frame in full_frames]
        assert len(messages[0].data) == 640 * 480 * 3
        followed = [driver.send('', msg) for msg in messages]  # each after the previous one's Matches
        assert [m.frame_index for m in followed] == list(range(len(messages)))
        # a burst within the driver's and the node's keep-last 10 histories: nothing may be lost in transport
        burst = [next(_stamps) for _ in range(8)]
        for stamp, msg in zip(burst, messages):
            driver.publish('', msg, stamp)
        last = driver.send('', messages[-1])
        published = len(messages) + len(burst) + 1
        matched = driver.matches[''].messages
        print(f'\n[qos] 640x480 bgr8, reliable: {published} published, {len(matched)} matched, '
              f'{last.dropped_frames} dropped by the mailbox')
        assert len(matched) + last.dropped_frames == published
        assert last.dropped_frames > 0 and len({m.header.stamp.sec for m in matched}) == len(matched)
    finally:
        driver.close()


def test_a_flood_of_small_frames_is_accounted_for_on_diagnostics(context, weight_files):
    """Issue 17 point 7: a reliable keep-last-10 publisher in another process sends 64x48 mono8 frames back to
    back, far faster than the node matches. The frames overwritten before the callback are counted on
    /diagnostics: frames processed + dropped by the mailbox = images received, and images received + frames
    lost before the callback = frames sent; the last frame sent is matched."""
    node = NodeProcess(f'/test_flood_{os.getpid()}', {**NODE_SETTINGS, **weight_files})
    driver = Driver(context, node)
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (64, 80), dtype=np.uint8), (3, 3), 0)
    small = [numpy_to_image_msg(np.ascontiguousarray(texture[i:i + 48, i:i + 64]), 'mono8') for i in range(8)]
    flood = 1000
    try:
        driver.send('', small[0])  # the node counts gaps from the first frame it takes
        for i in range(flood):
            driver.publish('', small[i % len(small)], next(_stamps))
        driver.send('', small[0])
        sent, matched = 1 + flood + 1, len(driver.matches[''].messages)
        values = driver.wait_status(lambda values: int(values['frames processed']) >= matched,
                                    'the status once it has counted every frame matched here')
        received, processed, dropped = (int(values[k]) for k in ('images received', 'frames processed', 'frames dropped'))
        assert 'frames lost before the callback' in values, f'lost frames are not counted: {values}'
        lost = int(values['frames lost before the callback'])
        print(f'\n[flood] {sent} 64x48 frames sent back to back: {received} received ({processed} processed, '
              f'{dropped} dropped by the mailbox), {lost} lost before the callback')
        assert values['frames lost counted from'] == 'publication sequence numbers (one publisher)'
        assert processed == matched and processed + dropped == received
        assert received + lost == sent and lost > 0
    finally:
        driver.close()


def test_two_cameras_in_one_node_process(context, weight_files, full_frames):
    """Issue 7: two cameras over DDS, fed from another process, each matched against its own keyframe on
    its own topics; keyframe ids per camera; bad input on one leaves the other's matching untouched."""
    node = NodeProcess(f'/test_cameras_{os.getpid()}', {**FULL_SETTINGS, **weight_files,
                                                         'cameras': "['left','right']"})
    driver = Driver(context, node, cameras=('left', 'right'))
    try:
        left = [numpy_to_image_msg(frame, 'bgr8') for frame in full_frames[:4]]
        right = [numpy_to_image_msg(frame, 'bgr8') for frame in full_frames[8:12]]
        l0, r0 = driver.send('left', left[0], 'left_camera'), driver.send('right', right[0], 'right_camera')
        for msg, camera, frame_id in ((l0, 'left', 'left_camera'), (r0, 'right', 'right_camera')):
            assert (msg.camera, msg.header.frame_id, msg.keyframe_id, msg.is_new_keyframe) == (
                camera, frame_id, 0, True)
        l1 = driver.send('left', left[1], 'left_camera')
        assert l1.keyframe_id == 0 and len(l1.confidence) > 20 and l1.keyframe_header.frame_id == 'left_camera'

        trigger = driver.helper.create_client(Trigger, 'superglue/left/new_keyframe')
        assert call_service(trigger, Trigger.Request(), WAIT_S).success
        l2 = driver.send('left', left[2], 'left_camera')
        assert l2.is_new_keyframe and driver.send('left', left[3], 'left_camera').keyframe_id == 1
        r1 = driver.send('right', right[1], 'right_camera')  # the right camera's keyframe is still its first
        assert (r1.keyframe_id, r1.frame_index, r1.is_new_keyframe) == (0, 1, False) and len(r1.confidence) > 20

        before = driver.send('left', left[1], 'left_camera')
        bad = numpy_to_image_msg(full_frames[12], 'bgr8')
        bad.encoding = 'nv21'
        truncated = numpy_to_image_msg(full_frames[12], 'bgr8')
        truncated.data = truncated.data[:-7]
        for msg, kind in ((bad, 'unsupported_encoding'), (truncated, 'size_step_data_mismatch')):
            driver.publish('right', msg, next(_stamps), 'right_camera')  # one at a time: no mailbox drop
            wait_until(lambda: f'skipped ({kind})' in node.output, f'the right camera to skip the {kind} image', WAIT_S)
        after = driver.send('left', left[1], 'left_camera')
        assert after.keyframe_id == before.keyframe_id
        for field in ('keyframe_indices', 'frame_indices', 'confidence', 'track_ids'):
            assert list(getattr(before, field)) == list(getattr(after, field)), field
        r2 = driver.send('right', right[2], 'right_camera')  # the right camera goes on after its bad input
        assert r2.frame_index == 2 and r2.keyframe_id == 0 and len(r2.confidence) > 0
    finally:
        driver.close()


@pytest.mark.parametrize('codec, encoding', [('jpeg', 'bgr8'), ('png', 'mono8')])
def test_compressed_images_over_dds(context, weight_files, full_frames, codec, encoding):
    """Issue 8: JPEG and PNG streams on the remapped base topic + /compressed, a bad frame among them:
    it is counted, the frames after it are still matched."""
    namespace = f'/test_compressed_{codec}_{os.getpid()}'
    node = NodeProcess(namespace, {**FULL_SETTINGS, **weight_files, 'image_transport': 'compressed'},
                       remap={'image': '/cam/image_raw'})
    driver = Driver(context, node, msg_type=CompressedImage, topics={'': '/cam/image_raw/compressed'})
    try:
        frames = [frame if encoding == 'bgr8' else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in full_frames[:4]]
        messages = [numpy_to_compressed_msg(frame, encoding, codec) for frame in frames]
        # as image_transport's compressed plugin writes them (a grey PNG names no target encoding)
        assert messages[0].format == {'jpeg': 'bgr8; jpeg compressed bgr8', 'png': 'mono8; png compressed '}[codec]
        first, second = driver.send('', messages[0]), driver.send('', messages[1])
        assert first.is_new_keyframe and len(second.confidence) > 20
        broken = numpy_to_compressed_msg(frames[2], encoding, codec)
        broken.data = broken.data[:len(broken.data) // 3]
        driver.publish('', broken, next(_stamps))
        wait_until(lambda: 'skipped (undecodable)' in node.output, 'the broken frame to be skipped', WAIT_S)
        after = driver.send('', messages[2])
        assert after.frame_index == 2 and len(after.confidence) > 20  # the broken frame was never processed
    finally:
        driver.close()


def test_match_service_under_a_memory_limit(context, weight_files, full_frames):
    """Issue 9: under an address-space limit a little above its normal peak, a ~/match_images call with a
    2560x1920 pair fails with one line (success=false), the node process lives, and the next call works."""
    big = cv2.resize(np.tile(full_frames[0], (2, 2, 1)), (2560, 1920), interpolation=cv2.INTER_NEAREST)
    request = MatchImages.Request(image0=numpy_to_image_msg(full_frames[0], 'bgr8'),
                                  image1=numpy_to_image_msg(full_frames[1], 'bgr8'))
    settings = {**FULL_SETTINGS, **weight_files, 'resize': '[0,0]', 'max_keypoints': '-1'}

    probe = NodeProcess(f'/test_memory_probe_{os.getpid()}', settings)
    driver = Driver(context, probe)
    try:
        assert call_service(driver.helper.create_client(MatchImages, 'superglue/match_images'), request, WAIT_S).success
        peak = probe.vm_peak_mib()
    finally:
        driver.close()
    limit = int((peak + 1024) * 2 ** 20)  # 1 GiB above the peak of a 640x480 pair
    node = NodeProcess(f'/test_memory_{os.getpid()}', settings, address_space=limit)
    driver = Driver(context, node)
    try:
        client = driver.helper.create_client(MatchImages, 'superglue/match_images')
        huge = MatchImages.Request(image0=numpy_to_image_msg(big, 'bgr8'), image1=numpy_to_image_msg(big, 'bgr8'))
        response = call_service(client, huge, WAIT_S)
        print(f'\n[memory] limit {limit / 2 ** 20:.0f} MiB (peak {peak:.0f} MiB): {response.message}')
        assert not response.success and 'memory' in response.message and '\n' not in response.message
        assert 'lower the image size (resize' in response.message
        assert node.process.poll() is None, node.output
        try:
            assert call_service(client, request, WAIT_S).success  # the next request works
        except BaseException:
            print(f'node output:\n{node.output}')
            raise
        assert 'Traceback' not in node.output
    finally:
        driver.close()


# -- issue 15: relative pose, VINS features and a detection mask, over DDS from another process -----------

POSE_FRAMES = 6
MASKED_COLUMNS = 128  # the left 128 pixel columns of the 640x480 frames: no keypoints there


@pytest.fixture(scope='module')
def panel_sequence(tmp_path_factory):
    """640x480 frames of a textured scene with two depths and the true relative poses (demo/synthetic.py)."""
    from superglue_ros.demo.synthetic import generate_sequence

    return generate_sequence(tmp_path_factory.mktemp('panel'), num_frames=POSE_FRAMES, size=(640, 480), seed=3,
                             panel=True)


def test_relative_pose_features_and_mask_over_dds(context, weight_files, panel_sequence, tmp_path):
    """A monocular camera with essential verification, publish_features and a mask: 640x480 bgr8 frames and
    camera_info from a reliable publisher in this process. Each Matches carries T_keyframe_frame with its flag
    (errors against the true pose printed: random weights give confident but mostly wrong matches, so the
    pose is checked for form, not accuracy: test_pose.py checks the arithmetic on true correspondences);
    ~/features decodes as VINS-Fusion reads it and agrees with Matches; no keypoint lies in the masked area."""
    from sensor_msgs.msg import CameraInfo, PointCloud
    from superglue_ros.pose import direction_error_deg, rotation_error_deg
    from test_features import vins_decode

    Keyframe = import_interfaces()[1]
    mask = np.full((480, 640), 255, np.uint8)
    mask[:, :MASKED_COLUMNS] = 0
    cv2.imwrite(str(tmp_path / 'mask.png'), mask)
    namespace = f'/test_pose_{os.getpid()}'
    node = NodeProcess(namespace, {**FULL_SETTINGS, **weight_files, 'geometric_verification': 'essential',
                                   'publish_features': 'true', 'masks': f"['{tmp_path / 'mask.png'}']"})
    driver = Driver(context, node)
    try:
        features, keyframes = Inbox('~/features'), Inbox('~/keyframe')
        driver.helper.create_subscription(PointCloud, 'superglue/features', features, 100)
        driver.helper.create_subscription(Keyframe, 'superglue/keyframe', keyframes, 100)
        info_pub = driver_publisher(driver.helper, CameraInfo, 'camera_info')
        wait_followed(node, info_pub)
        info = CameraInfo(width=640, height=480, distortion_model='plumb_bob', d=[0.0] * 5,
                          k=panel_sequence.camera_info['k'])
        images = [numpy_to_image_msg(panel_sequence.image(i), 'bgr8') for i in range(POSE_FRAMES)]
        trigger = driver.helper.create_client(Trigger, 'superglue/new_keyframe')

        def new_keyframe():  # frame 0 came without a calibration and became a keyframe without one
            assert call_service(trigger, Trigger.Request(), WAIT_S).success
        first = driver.send_with_info('', info_pub, info, images[0], missed=new_keyframe)
        assert first.is_new_keyframe and first.pose_source == 'none'
        keyframe_stamp = first.header.stamp.sec
        # its id: first.keyframe_id is the keyframe frame 0 was matched against when it became one on request
        keyframe = keyframes.wait_for(lambda f: f.header.stamp.sec == keyframe_stamp, 'the first keyframe')
        results = [first]
        for msg in images[1:]:
            info_pub.publish(info)
            results.append(driver.send('', msg))

        print(f'\n[pose over DDS] random weights, 640x480, essential verification, keyframe = frame 0:')
        for k, m in enumerate(results[1:], 1):
            assert m.keyframe_id == keyframe.keyframe_id and m.verified_with == 'essential' and m.pose_source in ('essential', 'none')
            q = m.relative_pose.orientation
            assert np.isclose(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2, 1.0, atol=1e-6)
            t = np.array([m.relative_pose.position.x, m.relative_pose.position.y, m.relative_pose.position.z])
            if m.pose_source == 'none':
                assert m.pose_inliers == 0 and not t.any() and q.w == 1.0
                print(f'  frame {k}: no pose ({sum(m.inlier)} essential inliers of {len(m.inlier)} matches)')
                continue
            assert np.isclose(np.linalg.norm(t), 1.0, atol=1e-5) and 5 <= m.pose_inliers <= sum(m.inlier)
            x, y, z, w = q.x, q.y, q.z, q.w
            rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
            true_rotation, true_translation = panel_sequence.relative_pose(0, k)
            print(f'  frame {k}: pose_source {m.pose_source}, {m.pose_inliers} pose inliers of {len(m.inlier)} '
                  f'matches; rotation error {rotation_error_deg(rotation, true_rotation):.2f} deg, translation '
                  f'direction error {direction_error_deg(t, true_translation):.1f} deg (true motion '
                  f'{np.degrees(np.arccos((np.trace(true_rotation) - 1) / 2)):.1f} deg, '
                  f'{np.linalg.norm(true_translation) * 100:.1f} cm)')

        published = features.wait(POSE_FRAMES)
        by_stamp = {f.header.stamp.sec: f for f in published}
        for k, m in enumerate(results):
            cloud = by_stamp[m.header.stamp.sec]
            assert len(cloud.channels) == 9 and cloud.header.frame_id == 'camera'
            decoded = vins_decode(cloud)
            assert all(observations[0][0] == 0 for observations in decoded.values())   # camera_id 0
            if k == 0:  # the keyframe: all its keypoints, Keyframe.track_ids, velocity 0
                assert sorted(decoded) == sorted(keyframe.track_ids)
                assert len(decoded) == len(keyframe.keypoints) // 2 > 50
                assert all(obs[0][6] == obs[0][7] == 0 for obs in decoded.values())
                assert min(keyframe.keypoints[0::2]) >= MASKED_COLUMNS  # the mask, through the node
                continue
            inliers = np.asarray(m.inlier, bool)
            assert sorted(decoded) == sorted(np.asarray(m.track_ids)[inliers].tolist())
            frame_points = np.asarray(m.frame_points).reshape(-1, 2)[inliers]
            normalized = np.asarray(m.frame_points_normalized).reshape(-1, 2)[inliers]
            for track_id, (u, v), (x, y) in zip(np.asarray(m.track_ids)[inliers].tolist(), frame_points, normalized):
                (camera_id, fx, fy, fz, fu, fv, _, _), = decoded[track_id]
                assert (fu, fv) == pytest.approx((u, v)) and (fx, fy) == pytest.approx((x, y), abs=1e-6)
            assert (frame_points[:, 0] >= MASKED_COLUMNS - 1).all()
    finally:
        driver.close()


@pytest.mark.parametrize('masks, says', [("['/nonexistent/mask.png']", '/nonexistent/mask.png does not exist'),
                                         ("['left:/nonexistent/mask.png']", "'left' is not in cameras")])
def test_an_unusable_mask_stops_the_start_in_one_line(weight_files, masks, says):
    node = NodeProcess('/test_bad_mask', {**NODE_SETTINGS, **weight_files, 'masks': masks})
    assert node.wait() == 1
    fatal, = [line for line in node.output.splitlines() if 'FATAL' in line]
    assert says in fatal and 'Traceback' not in node.output, node.output
    assert 'imread' not in node.output, node.output  # no OpenCV warning line besides ours


def test_the_onnxruntime_backend_over_dds(context, weight_files, full_frames, tmp_path, monkeypatch):
    """Issue 14: `backend: onnxruntime`, 640x480 colour frames from a reliable publisher in another process.
    The node starts from the export cache (made here by a Matcher with the node's weights and settings)
    without exporting, and publishes the matches that the torch backend finds in this process."""
    from superglue_ros.matcher import Matcher
    from superglue_ros.pipeline import match_pair

    pytest.importorskip('onnxruntime')
    monkeypatch.setenv('SUPERGLUE_ROS_ONNX_DIR', str(tmp_path))
    settings = {'resize': [320, 240], 'max_keypoints': 256, 'sinkhorn_iterations': 20}
    specs = (weight_files['superpoint_weights'], weight_files['superglue_weights'])
    exported = Matcher.from_weights(*specs, device='cpu', backend='onnxruntime', **settings).runtime.directory
    reference = Matcher.from_weights(*specs, device='cpu', backend='torch', **settings)
    node = NodeProcess(f'/test_onnxruntime_{os.getpid()}', {**FULL_SETTINGS, **weight_files, 'backend': 'onnxruntime'},
                       env={'SUPERGLUE_ROS_ONNX_DIR': str(tmp_path)})
    driver = Driver(context, node)
    try:
        messages = [numpy_to_image_msg(frame, 'bgr8') for frame in full_frames[:4]]
        assert len(messages[0].data) == 640 * 480 * 3
        received = [driver.send('', msg) for msg in messages]
        assert f'backend=onnxruntime ({exported})' in node.output and 'exporting' not in node.output, node.output
        assert received[0].is_new_keyframe and all(m.keyframe_id == 0 for m in received)
        for frame, msg in zip(full_frames[1:4], received[1:]):
            expected = match_pair(reference, full_frames[0], frame).correspondences
            pairs = set(zip(msg.keyframe_indices, msg.frame_indices))
            expected_pairs = set(zip(expected.indices0.tolist(), expected.indices1.tolist()))
            assert len(pairs) > 20 and len(pairs & expected_pairs) >= 0.95 * len(expected_pairs), (
                len(pairs), len(expected_pairs), len(pairs & expected_pairs))
    finally:
        driver.close()


# -- loop closure: ~/loop_candidates and ~/match_keyframes over DDS (issue 16) ----------------------

def test_match_keyframes_over_dds_equals_the_pipeline_on_the_stored_features(context, weight_files, tmp_path):
    """640x480 frames of the synthetic revisit sequence from a reliable publisher in this process, every one
    a keyframe, to the node in its own process (one torch thread, as here): ~/match_keyframes on two stored
    keyframes gives, bit for bit, the correspondences of match_keyframes on a CameraPipeline fed the same
    frames in this process; an evicted id and an unknown camera are one-line refusals; each keyframe's loop
    candidates arrive; the store's size and memory are on /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from superglue_ros.demo.synthetic import generate_sequence
    from superglue_ros.geometry import Verification
    from superglue_ros.keyframes import KeyframeStore, LoopPolicy
    from superglue_ros.matcher import Matcher
    from superglue_ros.msg import LoopCandidates
    from superglue_ros.pipeline import CameraPipeline, match_keyframes
    from superglue_ros.srv import MatchKeyframes
    from superglue_ros.tracking import KeyframePolicy

    sequence = generate_sequence(tmp_path / 'revisit', num_frames=30, path='revisit')
    images = [sequence.image(i) for i in (0, 3, 6, 9, 12)]
    settings = {**FULL_SETTINGS, 'keyframe_min_matches': '100000', 'geometric_verification': 'fundamental',
                'keyframe_store_size': '3', 'loop_candidates_k': '2', 'loop_exclude_recent': '1'}
    node = NodeProcess(f'/test_loop_{os.getpid()}', {**settings, **weight_files}, env={'OMP_NUM_THREADS': '1'})
    driver = Driver(context, node)
    candidates, diagnostics = Inbox('~/loop_candidates'), Inbox('/diagnostics')
    driver.helper.create_subscription(LoopCandidates, 'superglue/loop_candidates', candidates, 100)
    driver.helper.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
    try:
        sent = [driver.send('', numpy_to_image_msg(image, 'bgr8'), 'revisit_camera') for image in images]
        assert [m.is_new_keyframe for m in sent] == [True] * 5
        client = driver.helper.create_client(MatchKeyframes, 'superglue/match_keyframes')
        response = call_service(client, MatchKeyframes.Request(camera='', keyframe_id0=2, keyframe_id1=4), WAIT_S)
        assert response.success, response.message

        matcher = Matcher.from_weights(weight_files['superpoint_weights'], weight_files['superglue_weights'],
                                       device='cpu', resize=[320, 240], max_keypoints=256, sinkhorn_iterations=20)
        camera = CameraPipeline(matcher, KeyframePolicy(min_matches=100000), Verification('fundamental'),
                                keyframes=KeyframeStore(3, LoopPolicy(candidates_k=2, exclude_recent=1)))
        here = [camera.process(image, float(m.header.stamp.sec)) for image, m in zip(images, sent)]
        reference = match_keyframes(matcher, camera.keyframes, 2, 4, Verification('fundamental'))
        c = reference.pair.correspondences
        print(f'\n[match_keyframes] {response.message}; here: {len(c.confidence)} matches, '
              f'{int(c.inlier.sum())} inliers')
        assert len(c.confidence) > 20
        for field, expected, dtype in (
                ('points0', c.points0.reshape(-1), np.float32), ('points1', c.points1.reshape(-1), np.float32),
                ('confidence', c.confidence, np.float32), ('indices0', c.indices0, np.int32),
                ('indices1', c.indices1, np.int32), ('track_ids0', reference.track_ids[0], np.uint64),
                ('track_ids1', reference.track_ids[1], np.uint64), ('inlier', c.inlier, np.uint8)):
            received = np.asarray(getattr(response, field), dtype)
            assert received.tobytes() == np.asarray(expected, dtype).tobytes(), field
        assert response.verified_with == 'fundamental' and len(response.points0_normalized) == 0
        assert response.pose_source == c.pose.source == 'none' and response.pose_inliers == 0  # no essential here
        assert (response.keypoint_count0, response.keypoint_count1) == reference.pair.keypoint_counts
        assert (response.header0.stamp.sec, response.header0.frame_id) == (sent[2].header.stamp.sec, 'revisit_camera')

        for request, says in (((0, 4, ''), 'keyframe 0 is evicted'), ((2, 4, 'left'), "this node has no camera 'left'")):
            refused = call_service(client, MatchKeyframes.Request(keyframe_id0=request[0], keyframe_id1=request[1],
                                                                  camera=request[2]), WAIT_S)
            assert not refused.success and says in refused.message and '\n' not in refused.message, refused.message

        received = candidates.wait(5, WAIT_S)
        assert [m.keyframe_id for m in received] == [0, 1, 2, 3, 4]
        for m, result in zip(received, here):
            assert list(m.candidate_ids) == result.loop_candidates.ids.tolist()
            assert np.asarray(m.scores, np.float32).tobytes() == result.loop_candidates.scores.tobytes()
            assert m.header.frame_id == 'revisit_camera' and all(i < m.keyframe_id - 1 for i in m.candidate_ids)
        assert set(received[-1].candidate_ids) <= {2}  # 0 and 1 are evicted, 3 is the recent one left out

        def store_status(message):  # this node's camera, once all five keyframes are in
            for status in message.status:
                values = {v.key: v.value for v in status.values}
                if values.get('image topic') == f'{node.namespace}/image' and values.get('keyframes evicted') == '2':
                    return values
            return None
        values = store_status(diagnostics.wait_for(store_status, 'the keyframe store on /diagnostics', WAIT_S))
        assert values['keyframes stored'] == '3'
        assert int(values['keyframe store memory (bytes)']) == camera.keyframes.memory_bytes()
    finally:
        driver.close()
