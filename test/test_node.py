"""The ROS 2 node in this process with real rclpy and DDS: the real freiburg frames in, Matches /
Keyframe / match images out, both services, live parameters, bad images, diagnostics, and the
worker thread that keeps the executor free.

The node runs confident random weights written as original .pth files (the pretrained ones cannot be
downloaded here), on CPU, with the frames resized to 320x240 for inference and 256 keypoints.
Frames are fed one at a time, each after the previous one's Matches arrived, unless a test says
otherwise. Every wait is bounded; none is a timing assertion.
"""
import itertools
import threading

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from ros_helpers import (Inbox, Spinner, call_service, import_interfaces, random_weight_files,
                          wait_until)
from superglue_ros.ros import diagnostics as diagnostics_module
from superglue_ros.ros.image_conversion import image_msg_to_numpy, numpy_to_image_msg
from superglue_ros.visualization import MARGIN

Matches, Keyframe, MatchImages = import_interfaces()
from superglue_ros import node as node_module  # noqa: E402 (needs the built interfaces)

WIDTH, HEIGHT = 640, 480
SETTINGS = dict(device='cpu', resize=[320, 240], max_keypoints=256, sinkhorn_iterations=20,
                keyframe_min_matches=0, keyframe_min_match_ratio=0.0, keyframe_max_age_s=0.0,
                geometric_verification='fundamental')
WAIT_S = 120
_namespaces = itertools.count()


@pytest.fixture(scope='module')
def weight_files(tmp_path_factory):
    return random_weight_files(tmp_path_factory.getbasetemp() / 'random_weights')


@pytest.fixture(scope='module')
def frames(freiburg_paths):
    return [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in freiburg_paths[:6]]


def image_msg(image, stamp_s: float) -> Image:
    msg = numpy_to_image_msg(image, 'bgr8')
    msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int(round(stamp_s % 1 * 1e9))
    msg.header.frame_id = 'camera'
    return msg


def stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class Rig:
    """The node under test in its own namespace, and a helper node that talks to it over DDS."""

    def __init__(self, context, weight_files, **parameters):
        self.namespace = f'/test_node_{next(_namespaces)}'
        values = {**SETTINGS, **weight_files, **parameters}
        self.node = node_module.SuperGlueNode(context=context, namespace=self.namespace,
                                              parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.helper = Node('helper', namespace=self.namespace, context=context)
        self.matches, self.keyframes = Inbox('~/matches'), Inbox('~/keyframe')
        self.helper.create_subscription(Matches, 'superglue/matches', self.matches, 100)
        self.helper.create_subscription(Keyframe, 'superglue/keyframe', self.keyframes, 100)
        self.image_pub = self.helper.create_publisher(Image, 'image', 10)
        self.camera_info_pub = self.helper.create_publisher(CameraInfo, 'camera_info', 10)
        self.spinner = Spinner(context, self.node, self.helper).__enter__()
        wait_until(lambda: self.image_pub.get_subscription_count() and self.camera_info_pub.get_subscription_count()
                   and self.node.count_subscribers(f'{self.namespace}/superglue/matches')
                   and self.node.count_subscribers(f'{self.namespace}/superglue/keyframe'),
                   'the node and the helper to discover each other', WAIT_S)
        for publisher in (self.image_pub, self.camera_info_pub):  # the node follows these reliable publishers
            wait_until(lambda: all(info.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE for info in
                                   self.helper.get_subscriptions_info_by_topic(publisher.topic_name)),
                       f'the node to subscribe {publisher.topic_name} reliably', WAIT_S)
        self._next_stamp = 1000.0

    def client(self, srv_type, name):
        return self.helper.create_client(srv_type, f'superglue/{name}')

    def publish(self, image, stamp=None) -> float:
        """Publish a bgr8 frame, stamped 1 s after the previous one unless a stamp is given."""
        return self.publish_msg(image_msg(image, 0.0), stamp)

    def publish_msg(self, msg: Image, stamp=None) -> float:
        if stamp is None:
            stamp, self._next_stamp = self._next_stamp, self._next_stamp + 1.0
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp), int(round(stamp % 1 * 1e9))
        self.image_pub.publish(msg)
        return stamp

    def send(self, image, stamp=None) -> 'Matches':
        """Publish a frame and wait for its Matches."""
        stamp = self.publish(image, stamp)
        return self.matches.wait_for(lambda m: stamp_s(m.header) == stamp, f'stamp {stamp}', WAIT_S)

    def set_parameters(self, **values):
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        return call_service(self.client(SetParameters, 'set_parameters'), request, WAIT_S).results

    def close(self):
        self.spinner.__exit__()
        self.node.destroy_node()
        self.helper.destroy_node()


@pytest.fixture
def make_rig(context, weight_files):
    rigs = []

    def make(**parameters):
        rigs.append(Rig(context, weight_files, **parameters))
        return rigs[-1]
    yield make
    for rig in rigs:
        rig.close()


def check_matches(msg):
    """Consistent arrays, indices into the keypoint lists, points inside the 640x480 images."""
    k = len(msg.confidence)
    assert len(msg.keyframe_points) == len(msg.frame_points) == 2 * k
    assert len(msg.keyframe_indices) == len(msg.frame_indices) == k
    assert len(msg.inlier) == k and set(msg.inlier) <= {0, 1}  # verification is on
    assert np.all(np.asarray(msg.keyframe_indices) < msg.keyframe_keypoint_count)
    assert np.all(np.asarray(msg.frame_indices) < msg.frame_keypoint_count)
    assert len(set(msg.keyframe_indices)) == len(set(msg.frame_indices)) == k  # one-to-one
    assert np.all((np.asarray(msg.confidence) > 0.2) & (np.asarray(msg.confidence) <= 1))
    for points in (msg.keyframe_points, msg.frame_points):
        xy = np.asarray(points).reshape(-1, 2)
        assert np.all((xy >= 0) & (xy <= [WIDTH - 1, HEIGHT - 1])), 'points outside the published image'
    assert msg.latency_ms > 0


def test_frames_in_one_matches_each_out(make_rig, frames):
    rig = make_rig()
    info = CameraInfo(width=WIDTH, height=HEIGHT, k=[525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1])
    rig.camera_info_pub.publish(info)
    wait_until(lambda: rig.node.cameras[0].camera_info.for_stamp(info.header.stamp), 'the camera_info to arrive', WAIT_S)

    sent = [rig.send(image) for image in frames]
    received = rig.matches.wait(len(frames))
    assert len(received) == len(frames)  # one Matches per processed frame, no more
    assert [m.frame_index for m in sent] == list(range(len(frames)))

    first = sent[0]
    assert first.is_new_keyframe and first.keyframe_id == 0 and len(first.confidence) == 0
    for msg in sent:
        check_matches(msg)
        assert msg.keyframe_id == 0 and msg.header.frame_id == 'camera' and msg.dropped_frames == 0
        assert stamp_s(msg.keyframe_header) == stamp_s(first.header)
        np.testing.assert_allclose(msg.camera_info.k, info.k)
    assert not any(m.is_new_keyframe for m in sent[1:])  # every keyframe rule is off
    assert len(sent[1].confidence) > 20, 'neighbouring frames should match well'
    # inference ran at 320x240, the points are pixels of the 640x480 frames
    assert max(max(m.frame_points[0::2], default=0) for m in sent) > 400

    keyframe, = rig.keyframes.wait(1)
    n = first.frame_keypoint_count
    assert (keyframe.keyframe_id, stamp_s(keyframe.header)) == (0, stamp_s(first.header))
    assert (keyframe.image_width, keyframe.image_height, keyframe.descriptor_dim) == (WIDTH, HEIGHT, 256)
    assert len(keyframe.keypoints) == 2 * n and len(keyframe.scores) == n and len(keyframe.descriptors) == 256 * n
    descriptors = np.asarray(keyframe.descriptors).reshape(n, 256)  # keypoint-major
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1, atol=1e-4)
    keypoints = np.asarray(keyframe.keypoints).reshape(-1, 2)
    for msg in sent[1:]:  # the Matches' keyframe points are the Keyframe's keypoints
        np.testing.assert_array_equal(keypoints[np.asarray(msg.keyframe_indices)],
                                      np.asarray(msg.keyframe_points).reshape(-1, 2))
    np.testing.assert_allclose(keyframe.camera_info.k, info.k)


def test_keyframe_switching(make_rig, frames):
    rig = make_rig()
    first = rig.send(frames[0])
    assert rig.send(frames[1]).keyframe_id == 0

    response = call_service(rig.client(Trigger, 'new_keyframe'), Trigger.Request(), WAIT_S)
    assert response.success
    requested = rig.send(frames[2])
    assert requested.is_new_keyframe and requested.keyframe_id == 0 and len(requested.confidence) > 0
    following = rig.send(frames[3])
    assert following.keyframe_id == 1 and not following.is_new_keyframe
    assert stamp_s(following.keyframe_header) == stamp_s(requested.header)

    assert all(r.successful for r in rig.set_parameters(keyframe_max_age_s=1.5))
    aged = rig.send(frames[3])                                 # keyframe 1 is 2 s older (stamps 1 s apart)
    assert aged.is_new_keyframe and aged.keyframe_id == 1
    assert not rig.send(frames[3]).is_new_keyframe             # the new one is 1 s older

    assert all(r.successful for r in rig.set_parameters(keyframe_max_age_s=0.0, keyframe_min_matches=100000))
    few = rig.send(frames[4])
    assert few.is_new_keyframe and few.keyframe_id == 2

    assert all(r.successful for r in rig.set_parameters(keyframe_min_matches=0))
    jump = rig.send(frames[0], stamp=10.0)                     # earlier stamp: a bag restarted
    assert jump.is_new_keyframe and jump.keyframe_id == 4 and len(jump.confidence) == 0
    assert stamp_s(jump.keyframe_header) == 10.0
    after = rig.send(frames[1], stamp=11.0)
    assert after.keyframe_id == 4 and len(after.confidence) > 0

    keyframes = rig.keyframes.wait(5)
    assert [k.keyframe_id for k in keyframes] == [0, 1, 2, 3, 4]
    assert [stamp_s(k.header) for k in keyframes] == [stamp_s(m.header) for m in (
        first, requested, aged, few, jump)]


def test_match_images_service(make_rig, frames):
    rig = make_rig()
    client = rig.client(MatchImages, 'match_images')
    request = MatchImages.Request(image0=image_msg(frames[0], 1.0), image1=image_msg(frames[1], 2.0))
    response = call_service(client, request, WAIT_S)
    assert response.success, response.message
    k = len(response.confidence)
    assert k > 20 and len(response.points0) == len(response.points1) == 2 * k
    assert len(response.indices0) == len(response.indices1) == len(response.inlier) == k
    assert np.all(np.asarray(response.indices0) < response.keypoint_count0)
    assert np.all(np.asarray(response.indices1) < response.keypoint_count1)
    for points in (response.points0, response.points1):
        xy = np.asarray(points).reshape(-1, 2)
        assert np.all((xy >= 0) & (xy <= [WIDTH - 1, HEIGHT - 1]))

    bad = image_msg(frames[1], 2.0)
    bad.encoding = '32FC1'  # a depth image: not read (YUV and Bayer are)
    response = call_service(client, MatchImages.Request(image0=request.image0, image1=bad), WAIT_S)
    assert not response.success and '32FC1' in response.message and len(response.confidence) == 0

    # the keyframe stream is independent of the service
    assert rig.send(frames[0]).keyframe_id == 0 and rig.send(frames[1]).keyframe_id == 0


def test_live_parameters(make_rig, frames):
    rig = make_rig()
    for values, says in [({'match_threshold': 1.5}, 'match_threshold'),
                         ({'match_threshold': 1.0}, 'match_threshold'),
                         ({'max_keypoints': 0}, 'max_keypoints'),
                         ({'keypoint_threshold': -0.1}, 'keypoint_threshold'),
                         ({'max_keypoints': 1.5}, 'max_keypoints'),               # a type the table refuses
                         ({'time_jump_threshold_s': 0.0}, 'time_jump_threshold_s'),
                         ({'geometric_verification': 'affine'}, 'geometric_verification'),
                         ({'device': 'cpu'}, 'read-only')]:
        result, = rig.set_parameters(**values)
        assert not result.successful and says in result.reason, (values, result.reason)
    assert rig.node.get_parameter('match_threshold').value == 0.2  # nothing changed

    def pair():
        """Matches of frame 1 against a fresh keyframe on frame 0."""
        assert call_service(rig.client(Trigger, 'new_keyframe'), Trigger.Request(), WAIT_S).success
        rig.send(frames[0])
        return rig.send(frames[1])

    loose = pair()
    threshold = float(np.median(loose.confidence))  # cuts about half of the matches, whatever the weights
    result, = rig.set_parameters(match_threshold=threshold)
    assert result.successful and rig.node.get_parameter('match_threshold').value == threshold
    strict = pair()
    assert 0 < len(strict.confidence) < len(loose.confidence)
    assert min(strict.confidence) > threshold >= min(loose.confidence)

    assert rig.set_parameters(max_keypoints=64)[0].successful
    assert rig.send(frames[2]).frame_keypoint_count == 64


def test_static_shapes_node_publishes_the_matches_of_the_dynamic_one(make_rig, frames):
    static, dynamic = make_rig(static_shapes=True), make_rig()
    for rig in (static, dynamic):
        rig.send(frames[0])
    for image in frames[1:3]:
        a, b = static.send(image), dynamic.send(image)
        assert len(a.confidence) > 20
        np.testing.assert_array_equal(a.keyframe_indices, b.keyframe_indices)
        np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
        np.testing.assert_allclose(a.confidence, b.confidence, rtol=0, atol=1e-5)
    result, = static.set_parameters(max_keypoints=-1)
    assert not result.successful and 'static_shapes' in result.reason
    result, = static.set_parameters(static_shapes=False)
    assert not result.successful and 'read-only' in result.reason
    assert static.set_parameters(max_keypoints=128)[0].successful  # padded to 128 now; the keyframe to its 256
    assert len(static.send(frames[3]).confidence) > 0


def test_bad_images_are_skipped_counted_and_logged_once_per_kind(make_rig, frames, capfd, monkeypatch):
    # Once per kind within the throttle period: the period is made longer than this test can take, since on a
    # slow machine the five frames matched between the two 32FC1 images took over the 10 s default (CI).
    monkeypatch.setattr(diagnostics_module, 'LOG_EVERY_S', 3600.0)
    rig = make_rig()
    diagnostics = Inbox('/diagnostics')
    rig.helper.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
    first = rig.send(frames[0])

    unsupported = image_msg(frames[1], 0.0)
    unsupported.encoding = '32FC1'  # a depth image on the image topic
    truncated = image_msg(frames[1], 0.0)
    truncated.data = truncated.data[:-7]
    bad = {'unsupported_encoding': unsupported,
           'empty_image': Image(encoding='bgr8'),
           'size_step_data_mismatch': truncated,
           'too_small': image_msg(frames[1][:8, :8].copy(), 0.0)}
    zero_height = Image(encoding='mono8', width=WIDTH, height=0, step=WIDTH)
    sequence = [*bad.items(), ('empty_image', zero_height), ('unsupported_encoding', unsupported)]
    expected, index = {}, first.frame_index
    for kind, msg in sequence:  # each bad image, then a good one that is still matched
        expected[kind] = expected.get(kind, 0) + 1
        rig.publish_msg(msg)
        wait_until(lambda: rig.node.cameras[0].stats.rejections() == expected, f'the node to reject the {kind} image', WAIT_S)
        matched = rig.send(frames[1])
        index += 1
        assert matched.frame_index == index and len(matched.confidence) > 0  # the bad one was never processed
    assert len(rig.matches) == 1 + len(sequence) and rig.node.dropped_frames == 0

    def counted(status):
        values = {v.key: v.value for v in status.values}
        return all(values.get(f'rejected: {kind}') == str(n) for kind, n in expected.items())
    diagnostics.wait_for(lambda a: any(counted(s) for s in a.status), 'the rejected images counted', WAIT_S)
    assert any(s.level == DiagnosticStatus.WARN and 'rejected' in s.message
               for a in diagnostics.messages for s in a.status if s.name.startswith('superglue'))

    log = capfd.readouterr().err
    for kind in bad:
        assert log.count(f'skipped ({kind})') == 1, kind
    assert "unsupported encoding '32FC1'" in log


def test_a_rejection_kind_is_logged_again_after_the_throttle_period(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(diagnostics_module.time, 'monotonic', lambda: clock[0])
    stats = diagnostics_module.Statistics()
    assert stats.rejected('empty_image', 'a') and not stats.rejected('empty_image', 'b')
    assert stats.rejected('too_small', 'c')  # each kind has its own period
    clock[0] += diagnostics_module.LOG_EVERY_S - 0.1
    assert not stats.rejected('empty_image', 'd')
    clock[0] += 0.2
    assert stats.rejected('empty_image', 'e')
    assert stats.rejections() == {'empty_image': 4, 'too_small': 1}


def test_sequence_gaps_count_lost_frames_of_one_publisher_only():
    gaps = diagnostics_module.SequenceGaps()
    assert gaps.figures() == {'frames lost before the callback': '0',
                              'frames lost counted from': 'nothing now: no image yet'}

    def note(numbers, publishers=1):
        gaps.note([{'publication_sequence_number': n} for n in numbers], publishers)
        return gaps.figures()
    assert note([1, 2, 5, 6, 10])['frames lost before the callback'] == '5'  # 3, 4, 7, 8, 9
    assert note([3, 4])['frames lost counted from'] == 'publication sequence numbers (one publisher)'  # a new writer
    assert note([9, 12], publishers=2) == {'frames lost before the callback': '5',
                                           'frames lost counted from': 'nothing now: 2 publishers'}
    assert note([20, 22])['frames lost before the callback'] == '6'  # counting again from 20
    unsupported = note([diagnostics_module.SequenceGaps.UNSUPPORTED])
    assert unsupported['frames lost counted from'] == 'nothing now: the RMW gives no publication sequence numbers'
    assert note([30, 31])['frames lost before the callback'] == '6'


def test_executor_threads_one_per_single_camera():
    assert node_module.executor_threads({'cameras': [''], 'stereo_pairs': []}) == 3
    assert node_module.executor_threads({'cameras': ['a', 'b', 'c'], 'stereo_pairs': ['a:b']}) == 3
    assert node_module.executor_threads({'cameras': ['a', 'b', 'c', 'd'], 'stereo_pairs': []}) == 6


def test_match_image_drawn_only_while_subscribed(make_rig, frames, monkeypatch):
    rig = make_rig()
    drawn, draw = [], node_module.match_picture

    def counting(*args, **kwargs):
        drawn.append(1)
        return draw(*args, **kwargs)
    monkeypatch.setattr(node_module, 'match_picture', counting)

    rig.send(frames[0])
    rig.send(frames[1])
    assert drawn == []  # nobody subscribed: never computed

    topic = f'{rig.namespace}/superglue/match_image'
    pictures = Inbox('~/match_image')
    subscription = rig.helper.create_subscription(Image, 'superglue/match_image', pictures, 10)
    wait_until(lambda: rig.node.count_subscribers(topic) == 1, 'the node to see the subscriber', WAIT_S)
    stamp = stamp_s(rig.send(frames[2]).header)
    picture, = pictures.wait(1)
    assert len(drawn) == 1 and stamp_s(picture.header) == stamp
    assert (picture.encoding, picture.width, picture.height) == ('bgr8', 2 * WIDTH + MARGIN, HEIGHT)
    array, _ = image_msg_to_numpy(picture)
    left = array[:, :WIDTH].astype(int) - frames[0]  # keyframe on the left, under the drawing
    assert np.median(np.abs(left)) == 0

    rig.helper.destroy_subscription(subscription)
    wait_until(lambda: rig.node.count_subscribers(topic) == 0, 'the node to see the subscriber leave', WAIT_S)
    rig.send(frames[3])
    assert len(drawn) == 1


def test_diagnostics_say_what_is_wrong_and_then_ok(make_rig, frames):
    rig = make_rig()
    diagnostics = Inbox('/diagnostics')
    rig.helper.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
    mine = rig.node.get_name()  # the unnamed camera's status
    image_topic = f'{rig.namespace}/image'

    def ours(s):  # the nodes of earlier tests had the same name: tell them apart by the image topic
        return s.name == mine and any(v.key == 'image topic' and v.value == image_topic for v in s.values)

    def status(predicate, what):
        array = diagnostics.wait_for(lambda a: any(ours(s) and predicate(s) for s in a.status), what, WAIT_S)
        return next(s for s in array.status if ours(s) and predicate(s))

    waiting = status(lambda s: s.level == DiagnosticStatus.WARN, 'a WARN status before any image')
    assert f'no images received on {image_topic}' in waiting.message

    rig.send(frames[0])
    ok = status(lambda s: s.level == DiagnosticStatus.OK, 'an OK status after a frame')
    values = {v.key: v.value for v in ok.values}
    assert (values['frames processed'], values['keyframe id'], values['device']) == ('1', '0', 'cpu')
    assert int(values['keypoints']) > 0 and values['image topic'] == image_topic
    for key in ('input rate (Hz)', 'output rate (Hz)', 'latency mean (ms)', 'latency max (ms)', 'frames dropped'):
        assert key in values


def test_worker_keeps_the_executor_free_and_processes_the_newest_frame(make_rig, frames):
    """While the worker is busy, services answer, new frames wait in the reader, and /diagnostics says that
    a frame is taking long and what to lower; when the worker is free it gets the newest, the others are
    counted as dropped."""
    rig = make_rig()
    diagnostics = Inbox('/diagnostics')
    rig.helper.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
    rig.send(frames[0])
    entered, release = threading.Event(), threading.Event()
    pipeline = rig.node.cameras[0].pipeline
    process = pipeline.process

    def blocking(*args, **kwargs):
        entered.set()
        assert release.wait(WAIT_S), 'test did not release the worker'
        return process(*args, **kwargs)
    pipeline.process = blocking
    try:
        busy = rig.publish(frames[1])
        assert entered.wait(WAIT_S)
        assert call_service(rig.client(Trigger, 'new_keyframe'), Trigger.Request(), WAIT_S).success
        stamps = [rig.publish(frames[i]) for i in (2, 3, 4)]
        busy_message = f'one frame of {rig.namespace}/image has been processing for '
        diagnostics.wait_for(lambda a: any(st.level == DiagnosticStatus.WARN and st.message.startswith(busy_message)
                                           and st.message.endswith('lower resize, max_keypoints or sinkhorn_iterations')
                                           for st in a.status), 'a WARN naming the slow frame', WAIT_S)
    finally:
        release.set()
    rig.matches.wait_for(lambda m: stamp_s(m.header) == busy, 'the busy frame', WAIT_S)
    newest = rig.matches.wait_for(lambda m: stamp_s(m.header) == stamps[-1], 'the newest frame', WAIT_S)
    assert newest.dropped_frames == 2
    assert [stamp_s(m.header) for m in rig.matches.wait(3)] == [1000.0, busy, stamps[-1]]


def test_track_ids_survive_forced_keyframes(make_rig, frames):
    """Issue 8: each new keyframe's track ids at its matched (inlier) keypoints are the track ids the
    Matches that made it a keyframe gave; every other keypoint gets an id never used before."""
    rig = make_rig()
    rig.send(frames[0])
    first, = rig.keyframes.wait(1)
    assert list(first.track_ids) == list(range(len(first.scores)))
    seen = set(first.track_ids)
    for i in (1, 2, 3):
        assert call_service(rig.client(Trigger, 'new_keyframe'), Trigger.Request(), WAIT_S).success
        made = rig.send(frames[i])
        keyframe = rig.keyframes.wait(i + 1)[-1]
        assert made.is_new_keyframe and keyframe.keyframe_id == made.keyframe_id + 1
        for msg_ids in (made.track_ids, keyframe.track_ids):
            assert len(set(msg_ids)) == len(msg_ids), 'track ids must be unique within a message'
        previous = rig.keyframes.messages[-2]
        np.testing.assert_array_equal(np.asarray(made.track_ids),
                                      np.asarray(previous.track_ids)[np.asarray(made.keyframe_indices)])
        inherited = np.asarray(made.inlier, bool)
        assert inherited.sum() > 10 and (~inherited).sum() > 0  # both kinds occur with these frames
        ids = np.asarray(keyframe.track_ids)
        np.testing.assert_array_equal(ids[np.asarray(made.frame_indices)[inherited]],
                                      np.asarray(made.track_ids)[inherited])
        fresh = np.setdiff1d(np.arange(len(ids)), np.asarray(made.frame_indices)[inherited])
        assert not set(ids[fresh]) & seen, 'a new track reused an id'
        seen |= set(ids)


def test_stamp_jitter_is_matched_and_a_large_jump_resets(make_rig, frames):
    rig = make_rig()
    rig.send(frames[0], stamp=100.0)
    rig.send(frames[1], stamp=100.033)
    back = rig.send(frames[2], stamp=100.02)   # 13 ms before the previous frame: jitter
    assert back.keyframe_id == 0 and not back.is_new_keyframe and len(back.confidence) > 20
    assert rig.set_parameters(time_jump_threshold_s=0.005)[0].successful
    jump = rig.send(frames[3], stamp=100.01)   # now beyond the threshold
    assert jump.is_new_keyframe and len(jump.confidence) == 0 and jump.keyframe_id == 1


def test_match_service_out_of_memory_is_an_answer(make_rig, frames, monkeypatch):
    """Issue 9: resource exhaustion in the service is one line, success=false, counted, and the next
    request works (a pair over max_matching_memory_mb, a mocked CUDA out-of-memory error, OpenCV's
    allocation failure in the resize); so is an unexpected error, and a bad image is named."""
    import torch

    rig = make_rig()
    diagnostics = Inbox('/diagnostics')
    rig.helper.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
    client = rig.client(MatchImages, 'match_images')
    request = MatchImages.Request(image0=image_msg(frames[0], 1.0), image1=image_msg(frames[1], 2.0))
    assert rig.set_parameters(max_matching_memory_mb=1)[0].successful
    response = call_service(client, request, WAIT_S)
    assert not response.success and 'max_matching_memory_mb' in response.message and 'x 256' in response.message
    assert '\n' not in response.message
    assert rig.set_parameters(max_matching_memory_mb=4096)[0].successful

    detect = rig.node.matcher.superpoint.forward

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')
    monkeypatch.setattr(rig.node.matcher.superpoint, 'forward', out_of_memory)
    response = call_service(client, request, WAIT_S)
    assert not response.success and 'out of host memory' in response.message and 'resize' in response.message
    monkeypatch.setattr(rig.node.matcher.superpoint, 'forward', detect)
    assert call_service(client, request, WAIT_S).success

    def resize_out_of_memory(*args, **kwargs):  # what cv2.resize raises when its output cannot be allocated
        error = cv2.error('OpenCV(5.0.0) (-4:Insufficient memory) Failed to allocate 10000000000 bytes')
        error.code = cv2.Error.StsNoMem
        raise error
    monkeypatch.setattr(cv2, 'resize', resize_out_of_memory)
    response = call_service(client, request, WAIT_S)
    assert not response.success and 'out of host memory while preparing a 640x480 image at 320x240' in \
        response.message and 'lower the image size (resize' in response.message
    monkeypatch.undo()

    def unexpected(*args, **kwargs):
        raise RuntimeError('an unforeseen bug')
    monkeypatch.setattr(rig.node.matcher.superpoint, 'forward', unexpected)
    response = call_service(client, request, WAIT_S)
    assert not response.success and response.message == 'cannot match these images: RuntimeError: an unforeseen bug'
    monkeypatch.undo()
    tiny = np.ascontiguousarray(frames[1][:8, :8])
    small = MatchImages.Request(image0=image_msg(frames[0], 1.0), image1=image_msg(tiny, 2.0))
    response = call_service(client, small, WAIT_S)
    assert not response.success and response.message.startswith('cannot match these images: image1: '), response.message
    assert call_service(client, request, WAIT_S).success
    name = f'{rig.node.get_name()}: match_images'
    diagnostics.wait_for(lambda a: any(s.name == name and s.level == DiagnosticStatus.WARN and
                                       {v.key: v.value for v in s.values}.get('failures') == '5' for s in a.status),
                         'five service failures counted', WAIT_S)
    assert rig.send(frames[0]).keyframe_id == 0  # the camera is untouched


def test_essential_verification_with_and_without_calibration(make_rig, frames, capfd, monkeypatch):
    monkeypatch.setattr(node_module, 'LOG_THROTTLE_S', 3600.0)  # 'once for both frames' on a machine of any speed
    rig = make_rig(geometric_verification='essential')
    rig.send(frames[0])
    uncalibrated = rig.send(frames[1])
    assert uncalibrated.verified_with == 'fundamental' and len(uncalibrated.inlier) == len(uncalibrated.confidence)
    assert len(uncalibrated.keyframe_points_normalized) == 0 == len(uncalibrated.frame_points_normalized)
    assert rig.send(frames[2]).verified_with == 'fundamental'
    log = capfd.readouterr().err
    assert log.count('the fundamental matrix instead') == 1, log  # one throttled warning for both frames
    info = CameraInfo(width=WIDTH, height=HEIGHT, k=[525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1],
                      distortion_model='plumb_bob', d=[0.05, -0.1, 0.001, 0.0005, 0.0])
    rig.camera_info_pub.publish(info)
    wait_until(lambda: rig.node.cameras[0].camera_info.for_stamp(info.header.stamp), 'the camera_info', WAIT_S)
    calibrated = rig.send(frames[4])  # the keyframe came before the camera_info: it is the same camera
    assert calibrated.verified_with == 'essential' and np.asarray(calibrated.inlier).sum() > 10
    expected = cv2.undistortPoints(np.asarray(calibrated.frame_points, np.float64).reshape(-1, 1, 2),
                                   np.asarray(info.k).reshape(3, 3), np.asarray(info.d),
                                   criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9))
    np.testing.assert_allclose(np.asarray(calibrated.frame_points_normalized).reshape(-1, 2),
                               expected.reshape(-1, 2), atol=1e-4)
    assert len(calibrated.keyframe_points_normalized) == len(calibrated.keyframe_points)

    other_size = CameraInfo(width=2 * WIDTH, height=2 * HEIGHT, k=[1050.0, 0, 639.5, 0, 1050.0, 479.5, 0, 0, 1])
    rig.camera_info_pub.publish(other_size)
    wait_until(lambda: rig.node.cameras[0].camera_info.for_stamp(other_size.header.stamp).width == 2 * WIDTH,
               'the 1280x960 camera_info', WAIT_S)
    assert rig.send(frames[3]).verified_with == 'fundamental'  # a calibration of other images is not used
    assert 'it is for 1280x960 images' in capfd.readouterr().err


def test_features_need_a_calibration_said_once(make_rig, frames, capfd):
    """Issue 15: publish_features without camera_info publishes nothing on ~/features and says so once; with a
    calibration each frame has its features, and essential verification gives Matches a relative pose."""
    from sensor_msgs.msg import PointCloud

    rig = make_rig(geometric_verification='essential', publish_features=True)
    features = Inbox('~/features')
    rig.helper.create_subscription(PointCloud, 'superglue/features', features, 100)
    wait_until(lambda: rig.node.count_subscribers(f'{rig.namespace}/superglue/features'), 'the features reader', WAIT_S)
    rig.send(frames[0])
    assert rig.send(frames[1]).pose_source == 'none'
    assert capfd.readouterr().err.count('publish_features: no calibration for') == 1
    info = CameraInfo(width=WIDTH, height=HEIGHT, k=[525.0, 0, 319.5, 0, 525.0, 239.5, 0, 0, 1])
    rig.camera_info_pub.publish(info)
    wait_until(lambda: rig.node.cameras[0].camera_info.for_stamp(info.header.stamp), 'the camera_info', WAIT_S)
    calibrated = rig.send(frames[2])
    cloud = features.wait_for(lambda f: stamp_s(f.header) == stamp_s(calibrated.header), 'the calibrated frame')
    assert len(features) == 1 and len(cloud.points) == int(np.asarray(calibrated.inlier).sum())
    assert calibrated.pose_source in ('essential', 'none') and calibrated.verified_with == 'essential'
