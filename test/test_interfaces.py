"""The generated ROS interfaces (msg/Matches, msg/Keyframe, msg/LoopCandidates, srv/MatchImages,
srv/MatchKeyframes) as built by `make setup`.

Every check runs in a child process with the environment of `. .venv/bin/activate && . install/setup.bash`,
the way a user's shell gets it, so this file itself imports no ROS package.
"""
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_SETUP = REPO_ROOT / 'install' / 'setup.bash'
CHILD_TIMEOUT_S = 60

# One DDS domain per test session (the Makefile passes its own; else derived from the pid), discovery
# limited to this host, and a unique topic name per run: parallel sessions never cross-talk.
ROS_DOMAIN_ID = os.environ.get('ROS_DOMAIN_ID') or str(os.getpid() % 100 + 1)

# Runs inside the install environment. Builds each interface with every field set to a non-default value.
CHILD_COMMON = textwrap.dedent('''
    import array, json, sys
    from superglue_ros.msg import Keyframe, LoopCandidates, Matches, StereoMatches
    from superglue_ros.srv import MatchImages, MatchKeyframes

    def header(msg, sec, frame_id):
        msg.stamp.sec, msg.stamp.nanosec, msg.frame_id = sec, 500, frame_id

    def camera_info(msg):
        header(msg.header, 3, 'camera')
        msg.width, msg.height, msg.distortion_model = 640, 480, 'plumb_bob'
        msg.d = [0.1, -0.2, 0.0, 0.0, 0.01]
        msg.k = [525.0, 0.0, 319.5, 0.0, 525.0, 239.5, 0.0, 0.0, 1.0]

    def image(msg, value):
        header(msg.header, 4, 'camera')
        msg.height, msg.width, msg.encoding, msg.step = 2, 3, 'mono8', 3
        msg.is_bigendian = 1
        msg.data = [value] * 6

    def make_matches():
        m = Matches()
        header(m.header, 12, 'camera')
        header(m.keyframe_header, 10, 'camera')
        m.camera, m.keyframe_id, m.frame_index, m.is_new_keyframe = 'left', 7, 42, True
        m.keyframe_points = [10.5, 20.25, 30.0, 40.0]
        m.frame_points = [11.5, 21.25, 31.0, 41.0]
        m.confidence = [0.9, 0.75]
        m.keyframe_indices, m.frame_indices = [0, 5], [2, 3]
        m.track_ids = [2 ** 63 + 5, 17]
        m.inlier, m.verified_with = [1, 0], 'essential'
        m.keyframe_points_normalized = [0.1, -0.2, 0.3, 0.4]
        m.frame_points_normalized = [0.11, -0.21, 0.31, 0.41]
        m.pose_source, m.pose_inliers = 'essential', 2
        m.relative_pose.position.x, m.relative_pose.position.z = 0.6, 0.8
        m.relative_pose.orientation.y, m.relative_pose.orientation.w = 0.6, 0.8
        m.keyframe_keypoint_count, m.frame_keypoint_count = 512, 498
        camera_info(m.camera_info)
        m.latency_ms, m.dropped_frames = 12.5, 3
        return m

    def make_keyframe():
        k = Keyframe()
        header(k.header, 10, 'camera')
        k.camera, k.keyframe_id, k.reason, k.image_width, k.image_height = 'left', 7, 'frame_changed', 640, 480
        k.keypoints, k.scores, k.track_ids = [1.0, 2.0, 3.0, 4.0], [0.5, 0.25], [2 ** 64 - 1, 0]
        k.descriptor_dim = 2
        k.descriptors = [0.6, 0.8, 1.0, 0.0]
        camera_info(k.camera_info)
        return k

    def make_stereo_matches():
        s = StereoMatches()
        header(s.header, 12, 'left_camera')
        header(s.right_header, 12, 'right_camera')
        s.left_camera, s.right_camera, s.frame_index, s.keyframe_id = 'left', 'right', 42, 7
        s.left_points, s.right_points = [100.5, 20.0, 30.0, 40.0], [80.5, 20.5, 10.0, 41.0]
        s.left_points_normalized, s.right_points_normalized = [0.1, -0.2, 0.3, 0.4], [0.05, -0.2, 0.25, 0.4]
        s.disparity, s.depth = [20.0, 20.0], [6.4, 3.2]
        s.confidence, s.left_indices, s.right_indices = [0.9, 0.5], [3, 8], [1, 2]
        s.track_ids, s.inlier, s.verified_with = [17, 2 ** 64 - 1], [1, 0], 'rectified'
        s.baseline_m, s.left_keypoint_count, s.right_keypoint_count = 0.125, 512, 498
        s.latency_ms, s.dropped_pairs, s.unpaired_frames = 12.5, 3, 2
        return s

    def make_request():
        r = MatchImages.Request()
        image(r.image0, 1)
        image(r.image1, 2)
        return r

    def make_response():
        r = MatchImages.Response()
        r.success, r.message = True, 'ok'
        r.points0, r.points1, r.confidence = [1.0, 2.0], [3.0, 4.0], [0.5]
        r.indices0, r.indices1, r.inlier = [4], [9], [1]
        r.keypoint_count0, r.keypoint_count1 = 100, 120
        return r

    def make_loop_candidates():
        c = LoopCandidates()
        header(c.header, 10, 'camera')
        c.camera, c.keyframe_id, c.candidate_ids, c.scores = 'left', 40, [2 ** 63 + 1, 3], [0.5, 0.25]
        return c

    def make_keyframes_request():
        return MatchKeyframes.Request(camera='left', keyframe_id0=3, keyframe_id1=2 ** 64 - 1)

    def make_keyframes_response():
        r = MatchKeyframes.Response()
        r.success, r.message = True, 'ok'
        header(r.header0, 10, 'camera')
        header(r.header1, 11, 'camera')
        r.points0, r.points1, r.confidence = [1.0, 2.0], [3.0, 4.0], [0.5]
        r.indices0, r.indices1, r.track_ids0, r.track_ids1 = [4], [9], [2 ** 63 + 2], [7]
        r.inlier, r.verified_with = [1], 'essential'
        r.points0_normalized, r.points1_normalized = [0.1, 0.2], [0.3, 0.4]
        r.keypoint_count0, r.keypoint_count1 = 100, 120
        r.pose_source, r.pose_inliers = 'pnp', 40
        r.relative_pose.position.x, r.relative_pose.position.z = 0.25, -1.5
        r.relative_pose.orientation.z, r.relative_pose.orientation.w = 0.6, 0.8
        return r

    def to_plain(value):
        """Message -> nested dict of JSON types."""
        if hasattr(value, 'get_fields_and_field_types'):
            return {name: to_plain(getattr(value, name)) for name in value.get_fields_and_field_types()}
        if isinstance(value, (array.array, list, tuple)) or type(value).__name__ == 'ndarray':
            return [to_plain(v) for v in value]
        if isinstance(value, bytes):
            return list(value)
        return value.item() if hasattr(value, 'item') else value
''')

CHILD_FIELDS = CHILD_COMMON + textwrap.dedent('''
    from rclpy.serialization import deserialize_message, serialize_message

    report = {}
    for name, make in [('Matches', make_matches), ('Keyframe', make_keyframe), ('StereoMatches', make_stereo_matches),
                       ('MatchImages.Request', make_request), ('MatchImages.Response', make_response),
                       ('LoopCandidates', make_loop_candidates), ('MatchKeyframes.Request', make_keyframes_request),
                       ('MatchKeyframes.Response', make_keyframes_response)]:
        msg = make()
        default = to_plain(type(msg)())
        filled = to_plain(msg)
        copy = deserialize_message(serialize_message(msg), type(msg))
        report[name] = {
            'fields': list(type(msg).get_fields_and_field_types()),
            'left_default': [f for f in filled if filled[f] == default[f]],
            'round_trip_equal': copy == msg and to_plain(copy) == filled,
        }
    print(json.dumps(report))
''')

CHILD_SUBSCRIBER = CHILD_COMMON + textwrap.dedent('''
    import time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    topic, timeout_s = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node('superglue_ros_test_subscriber')
    received = []
    node.create_subscription(Matches, topic, received.append,
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    print('READY', flush=True)
    deadline = time.monotonic() + timeout_s
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        sys.exit(f'no Matches message on {topic} within {timeout_s} s')
    print(json.dumps({'received': to_plain(received[0]), 'expected': to_plain(make_matches())}), flush=True)
    node.destroy_node()
    rclpy.shutdown()
''')

CHILD_PUBLISHER = CHILD_COMMON + textwrap.dedent('''
    import time
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    topic, timeout_s = sys.argv[1], float(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node('superglue_ros_test_publisher')
    publisher = node.create_publisher(Matches, topic,
                                      QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            sys.exit(f'no subscriber discovered on {topic} within {timeout_s} s')
        rclpy.spin_once(node, timeout_sec=0.1)
    # Keep publishing until the parent stops us: a message sent before the subscriber's side of the
    # match is complete may be missed, a later one is not.
    while time.monotonic() < deadline:
        publisher.publish(make_matches())
        rclpy.spin_once(node, timeout_sec=0.2)
''')


@pytest.fixture(scope='module')
def ros_env():
    """os.environ as `. .venv/bin/activate && . install/setup.bash` leaves it, for child processes."""
    if not INSTALL_SETUP.is_file():
        pytest.fail(f'ROS build missing: {INSTALL_SETUP} does not exist. Run `make setup` in {REPO_ROOT} '
                    '(builds the messages with colcon into install/).')
    base = {k: v for k, v in os.environ.items()
            if k not in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'PYTHONPATH',
                         '_ROS_WHEELS_BOOTSTRAP_COMPLETE')}
    activate = Path(sys.prefix) / 'bin' / 'activate'
    script = f'. "{activate}" && . "{INSTALL_SETUP}" && env -0'
    done = subprocess.run(['bash', '-c', script], env=base, capture_output=True, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, f'sourcing {INSTALL_SETUP} failed:\n{done.stderr.decode()}'
    env = dict(item.split('=', 1) for item in done.stdout.decode().split('\0') if '=' in item)
    env.update(ROS_DOMAIN_ID=ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE='LOCALHOST')
    return env


def run_child(code, env, cwd, *args):
    done = subprocess.run([sys.executable, '-u', '-c', code, *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert done.returncode == 0, f'child failed ({done.returncode}):\n{done.stdout}\n{done.stderr}'
    return done.stdout


def msg_field_names(path):
    """Field names declared in a .msg file (or one half of a .srv), in order."""
    names = []
    for line in path.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            names.append(line.split()[1])
    return names


def test_source_and_install_package_merge(ros_env, tmp_path):
    # From the repository root the source package comes first and extend_path adds install/'s copy,
    # which holds the generated msg/srv; from anywhere else install/ alone is the whole package.
    code = ('import json, superglue_ros, superglue_ros.image, superglue_ros.msg\n'
            'print(json.dumps([superglue_ros.__path__, superglue_ros.image.__file__, '
            'superglue_ros.msg.__file__]))')
    install_site = str(REPO_ROOT / 'install' / 'lib')
    path, image_file, msg_file = json.loads(run_child(code, ros_env, REPO_ROOT).splitlines()[-1])
    assert path[0] == str(REPO_ROOT / 'superglue_ros') and path[1].startswith(install_site)
    assert image_file.startswith(str(REPO_ROOT / 'superglue_ros'))
    assert msg_file.startswith(install_site)

    path, image_file, msg_file = json.loads(run_child(code, ros_env, tmp_path).splitlines()[-1])
    assert len(path) == 1 and path[0].startswith(install_site)
    assert image_file.startswith(install_site) and msg_file.startswith(install_site)


def test_interfaces_have_every_declared_field(ros_env, tmp_path):
    report = json.loads(run_child(CHILD_FIELDS, ros_env, tmp_path).splitlines()[-1])
    declared = {name: msg_field_names(REPO_ROOT / 'msg' / f'{name}.msg')
                for name in ('Matches', 'Keyframe', 'StereoMatches', 'LoopCandidates')}
    for service in ('MatchImages', 'MatchKeyframes'):
        for half, text in zip(('Request', 'Response'), (REPO_ROOT / 'srv' / f'{service}.srv').read_text().split('---')):
            path = tmp_path / f'{service}.{half}.msg'
            path.write_text(text)
            declared[f'{service}.{half}'] = msg_field_names(path)
    for name, fields in declared.items():
        assert report[name]['fields'] == fields, f'{name}: generated fields differ from the definition'
        assert report[name]['left_default'] == [], f'{name}: fields the test did not set'
        assert report[name]['round_trip_equal'], f'{name}: serialize/deserialize changed the message'


def test_matches_publish_subscribe_between_processes(ros_env, tmp_path):
    topic = f'/superglue_ros_test_{uuid.uuid4().hex[:12]}/matches'
    timeout = str(CHILD_TIMEOUT_S - 15)
    subscriber = subprocess.Popen([sys.executable, '-u', '-c', CHILD_SUBSCRIBER, topic, timeout],
                                  env=ros_env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen([sys.executable, '-u', '-c', CHILD_PUBLISHER, topic, timeout],
                                 env=ros_env, cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        out, err = subscriber.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        for process in (subscriber, publisher):
            if process.poll() is None:
                process.kill()
        _, publisher_err = publisher.communicate(timeout=CHILD_TIMEOUT_S)
    assert subscriber.returncode == 0, f'subscriber failed:\n{out}\n{err}\npublisher:\n{publisher_err}'
    lines = out.splitlines()
    assert lines[0] == 'READY'
    result = json.loads(lines[-1])
    received, expected = result['received'], result['expected']
    assert received == expected
    assert received['frame_points'] == [11.5, 21.25, 31.0, 41.0]
    assert received['camera_info']['k'][0] == 525.0
