"""A stereo rig over DDS (issue 15): the node in its own process, fed by a reliable driver in this process
with two 640x480 bgr8 image topics and two camera_infos of a rectified synthetic rig (demo/synthetic.py,
exact depth per pixel), the right stamps jittered by a few ms (software-synchronised cameras).

Checked: every pair gives one StereoMatches (right stamp within stereo_sync_tolerance_s), verified on
image rows with positive disparities; on the correct left-right matches (the right point within
CORRECT_PX of where the ground truth puts the left keypoint: random weights also give confident wrong
ones) the depth fx' B / d is within 2% of the true depth; the left camera's Matches and the
StereoMatches share track ids; a left image without a right partner is never matched with another
time and is counted.
"""
import itertools
import os
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud

from ros_helpers import Inbox, Spinner, random_weight_files, wait_until
from superglue_ros.demo.synthetic import stereo_sequence
from superglue_ros.ros.image_conversion import numpy_to_image_msg
from superglue_ros.stereo import NO_TRACK
from superglue_ros.visualization import MARGIN
from test_node_process import WAIT_S, NodeProcess, driver_publisher, wait_followed

from superglue_ros.msg import Matches, StereoMatches  # noqa: E402  (after ros_helpers: built messages)

SETTINGS = {'device': 'cpu', 'max_keypoints': '256', 'sinkhorn_iterations': '20', 'keyframe_min_matches': '0',
            'keyframe_min_match_ratio': '0.0', 'cameras': "['left','right']", 'stereo_pairs': "['left:right']",
            'stereo_sync_tolerance_s': '0.01', 'geometric_verification': 'essential', 'publish_features': 'true'}
JITTER_NS = [3_000_000, -4_000_000, 2_500_000]  # right stamp - left stamp of each pair: within the 10 ms tolerance
CORRECT_PX = 1.0
_seconds = itertools.count(2000)


@pytest.fixture(scope='module')
def weight_files(tmp_path_factory):
    return random_weight_files(tmp_path_factory.getbasetemp() / 'random_weights')


def camera_info(fields: dict, frame_id: str) -> CameraInfo:
    info = CameraInfo(width=fields['width'], height=fields['height'], distortion_model=fields['distortion_model'],
                      d=fields['d'], k=fields['k'], r=fields['r'], p=fields['p'])
    info.header.frame_id = frame_id
    return info


class StereoDriver:
    """A stereo camera driver (reliable, keep last 10) and readers of the node's outputs."""

    def __init__(self, context, node: NodeProcess):
        self.node, self.helper = node, Node('stereo_driver', namespace=node.namespace, context=context)
        self.images = {side: driver_publisher(self.helper, Image, f'{side}/image') for side in ('left', 'right')}
        self.infos = {side: driver_publisher(self.helper, CameraInfo, f'{side}/camera_info') for side in ('left', 'right')}
        self.matches, self.stereo = Inbox('~/left/matches'), Inbox('~/left_right/stereo_matches')
        self.features = Inbox('~/left/features')
        self.helper.create_subscription(PointCloud, 'superglue/left/features', self.features, 100)
        self.helper.create_subscription(Matches, 'superglue/left/matches', self.matches, 100)
        self.helper.create_subscription(StereoMatches, 'superglue/left_right/stereo_matches', self.stereo, 100)
        self.diagnostics = Inbox('/diagnostics')
        self.pictures = Inbox('~/left_right/match_image')  # subscribed: the node draws left | right
        self.helper.create_subscription(Image, 'superglue/left_right/match_image', self.pictures, 10)
        self.helper.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics, 10)
        self.spinner = Spinner(context, self.helper).__enter__()
        for publisher in (*self.images.values(), *self.infos.values()):
            wait_followed(node, publisher)

    def publish(self, side: str, image: np.ndarray, info: CameraInfo, sec: int, nanosec: int, encoding: str = ''):
        msg = numpy_to_image_msg(image, 'bgr8')
        msg.encoding = encoding or msg.encoding
        msg.header.stamp.sec = info.header.stamp.sec = sec
        msg.header.stamp.nanosec = info.header.stamp.nanosec = nanosec
        msg.header.frame_id = info.header.frame_id
        self.infos[side].publish(info)
        self.images[side].publish(msg)

    def close(self):
        self.spinner.__exit__()
        self.helper.destroy_node()
        self.node.stop()


def test_stereo_rig_over_dds(context, weight_files):
    rig = stereo_sequence(len(JITTER_NS))
    infos = {'left': camera_info(rig[0].left_info, 'left_optical'), 'right': camera_info(rig[0].right_info,
                                                                                          'right_optical')}
    node = NodeProcess(f'/test_stereo_{os.getpid()}', {**SETTINGS, **weight_files})
    driver = StereoDriver(context, node)
    try:
        for side, info in infos.items():  # the camera_infos well before the first images (the node takes the
            driver.infos[side].publish(info)  # latest without message_filters): not a check of time
        time.sleep(2.0)
        results, errors, correct_counts, pose_errors = [], [], [], []
        for frame, jitter in zip(rig, JITTER_NS):
            sec, nanosec = next(_seconds), 500_000_000
            driver.publish('left', frame.left, infos['left'], sec, nanosec)
            driver.publish('right', frame.right, infos['right'], sec, nanosec + jitter)
            stereo = driver.stereo.wait_for(lambda m: m.header.stamp.sec == sec, f'stamp {sec}', WAIT_S)
            matches = driver.matches.wait_for(lambda m: m.header.stamp.sec == sec, f'stamp {sec}', WAIT_S)
            assert (stereo.right_header.stamp.sec, stereo.right_header.stamp.nanosec) == (sec, nanosec + jitter)
            assert stereo.frame_index == matches.frame_index and stereo.keyframe_id == matches.keyframe_id
            assert stereo.verified_with == 'rectified', node.output
            assert stereo.baseline_m == pytest.approx(frame.baseline_m)
            assert (stereo.left_camera, stereo.right_camera) == ('left', 'right')

            left = np.asarray(stereo.left_points).reshape(-1, 2)
            right = np.asarray(stereo.right_points).reshape(-1, 2)
            inlier = np.asarray(stereo.inlier, bool)
            disparity, depth = np.asarray(stereo.disparity), np.asarray(stereo.depth)
            assert len(left) == len(inlier) == len(depth) == len(stereo.track_ids) > 0
            np.testing.assert_allclose(disparity, left[:, 0] - right[:, 0], atol=1e-4)
            assert inlier.sum() > 0 and np.all(disparity[inlier] > 0) and np.all(np.isnan(depth[~inlier]))
            assert np.all(np.abs(left[inlier, 1] - right[inlier, 1]) <= 2.0)

            correct = inlier & np.all(np.abs(right - frame.right_points(left)) <= CORRECT_PX, axis=1)
            truth = frame.depth_at(left[correct])
            relative = np.abs(depth[correct] - truth) / truth
            assert correct.sum() >= 20, f'{correct.sum()} correct left-right matches of {len(left)}'
            assert np.all(relative <= 0.02), np.sort(relative)[-5:]
            errors.append(relative)
            correct_counts.append((int(correct.sum()), int(inlier.sum()), len(left)))

            ids = dict(zip(stereo.left_indices, stereo.track_ids))  # left keypoint -> track id in both cameras
            shared = [(ids[i], t) for i, t in zip(matches.frame_indices, matches.track_ids)
                      if i in ids and ids[i] != NO_TRACK]
            assert all(a == b for a, b in shared)
            results.append((stereo, matches, len(shared)))

            # the left keyframe's stereo depth gives the pose of the next frames in metres (PnP)
            if not matches.is_new_keyframe:
                assert matches.pose_source == 'pnp' and matches.pose_inliers >= 6, (matches.pose_source, node.output)
                keyframe = rig[0]  # true T_keyframe_frame: p_keyframe = R_k R_f^T p_frame + R_k (C_f - C_k)
                true_t = keyframe.rotation @ (frame.position - keyframe.position)
                p = matches.relative_pose.position
                pose_errors.append((np.linalg.norm([p.x, p.y, p.z] - true_t), np.linalg.norm(true_t)))
            # one ~/left/features message per pair: the left features (camera_id 0) and the right image's
            # left-right inliers (camera_id 1) with the same track ids, on the z = 1 plane
            cloud = driver.features.wait_for(lambda m: m.header.stamp.sec == sec, f'features of {sec}', WAIT_S)
            channels = {c.name: np.asarray(c.values) for c in cloud.channels}
            camera_id, track_id = channels['camera_id'].astype(int), channels['id'].astype(np.int64)
            assert set(camera_id) == {0, 1} and all(point.z == 1.0 for point in cloud.points)
            assert set(track_id[camera_id == 1]) <= set(track_id[camera_id == 0])
            stereo_ids = np.asarray(stereo.track_ids)
            tracked = (stereo_ids != NO_TRACK) & np.isin(stereo_ids.astype(np.int64), track_id[camera_id == 0])
            assert sorted(track_id[camera_id == 1]) == sorted(stereo_ids[tracked].astype(np.int64)) and tracked.sum() > 20
        assert results[0][1].is_new_keyframe and all(n > 20 for _, _, n in results[1:]), [n for _, _, n in results]

        # a left image whose right partner never comes: counted, never matched with another time
        lone = next(_seconds)
        driver.publish('left', rig[0].left, infos['left'], lone, 0)
        sec = next(_seconds)
        driver.publish('left', rig[1].left, infos['left'], sec, 0)
        driver.publish('right', rig[1].right, infos['right'], sec, 1_000_000)
        last = driver.stereo.wait_for(lambda m: m.header.stamp.sec == sec, f'stamp {sec}', WAIT_S)
        assert last.unpaired_frames == 1 and not [m for m in driver.stereo.messages if m.header.stamp.sec == lone]
        bad = next(_seconds)  # a pair whose right image has an encoding the node does not read: skipped, counted
        driver.publish('left', rig[2].left, infos['left'], bad, 0)
        driver.publish('right', rig[2].right, infos['right'], bad, 0, encoding='nv21')
        wait_until(lambda: 'skipped (unsupported_encoding): right image on' in node.output,
                   'the pair with a bad right image to be skipped', WAIT_S)
        picture = driver.pictures.wait_for(lambda m: m.header.stamp.sec == sec, f'stamp {sec}', WAIT_S)
        assert (picture.width, picture.height, picture.encoding) == (2 * 640 + MARGIN, 480, 'bgr8')  # left | right
        driver.diagnostics.wait_for(lambda m: any(
            s.name.endswith(': left | right') and {'unpaired images': '1', 'pairs': str(len(rig) + 2),
                                                      'rejected: unsupported_encoding': '1'}.items()
            <= {v.key: v.value for v in s.values}.items() for s in m.status), 'the rig counted on /diagnostics', WAIT_S)
        all_errors = np.concatenate(errors)
        print(f'\n[stereo over DDS] 640x480 bgr8, {len(rig)} pairs, right stamps jittered by {JITTER_NS} ns, tolerance '
              f'10 ms: all paired; correct / inliers / matches per pair {correct_counts}; depth error on the correct '
              f'matches: median {np.median(all_errors) * 100:.2f}%, max {all_errors.max() * 100:.2f}%; shared track ids '
              f'with ~/left/matches {[n for _, _, n in results]}; dropped pairs {last.dropped_pairs}, unpaired '
              f'{last.unpaired_frames} (the lone left image); PnP translation error / true translation '
              f'{[f"{e * 100:.1f} / {t * 100:.1f} cm" for e, t in pose_errors]}')
    finally:
        driver.close()


@pytest.mark.parametrize('pairs, says', [("['left:rear']", "stereo_pairs names 'rear', not in cameras ['left', 'right']"),
                                         ("['left:left']", 'stereo_pairs must be ')])
def test_a_bad_stereo_pair_stops_the_start_naming_it(weight_files, pairs, says):
    node = NodeProcess('/test_bad_stereo_pair', {**SETTINGS, **weight_files, 'stereo_pairs': pairs})
    assert node.wait() != 0
    assert says in node.output and 'FATAL' in node.output and 'Traceback' not in node.output, node.output


class InProcessRig:
    """The node in this process (no spinning): frames go straight into the rig's frame path
    (Camera._process, what its worker thread runs), its publishers are recorded."""

    def __init__(self, context, weight_files, **parameters):
        from rclpy.parameter import Parameter
        from superglue_ros import node as node_module

        values = {'device': 'cpu', 'resize': [320, 240], 'max_keypoints': 256, 'sinkhorn_iterations': 20,
                  'keyframe_min_matches': 0, 'keyframe_min_match_ratio': 0.0, 'cameras': ['left', 'right'],
                  'stereo_pairs': ['left:right'], 'geometric_verification': 'essential', **weight_files, **parameters}
        self.node_module = node_module
        self.node = node_module.SuperGlueNode(context=context, namespace=f'/test_rig_{next(_seconds)}',
                                              parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.rig = self.node.cameras[0]
        self.published = {}
        for name in ('_matches_pub', '_stereo_pub', '_keyframe_pub', '_loop_candidates_pub'):
            self.published[name] = []
            getattr(self.rig, name).publish = self.published[name].append

    def frame(self, left, right, left_info, right_info, sec: int, nanosec: int = 0, right_nanosec: int | None = None):
        node_module = self.node_module
        msgs = []
        for image, info, ns in ((left, left_info, nanosec), (right, right_info, nanosec if right_nanosec is None
                                                             else right_nanosec)):
            msg = numpy_to_image_msg(image, 'bgr8') if isinstance(image, np.ndarray) else image
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, ns
            if info is not None:
                info.header.stamp = msg.header.stamp
            msgs.append(node_module.Frame(msg, time.monotonic(), info))
        msgs[0].right = msgs[1]
        return msgs[0]

    def process(self, *args, **kwargs):
        self.rig._process(self.frame(*args, **kwargs))

    def close(self):
        self.node.destroy_node()


def test_a_rectified_rig_normalises_left_points_with_p_not_the_raw_k_and_d(context, weight_files):
    """image_rect topics come with the raw camera_info (K and D of the unrectified camera, R the rectification):
    the rectified images' points are mapped with P (README: Rectification), also in ~/left/matches, where the
    keyframe matches, the essential fit and the PnP pose use them."""
    pairs = stereo_sequence(2)
    raw_left = {**pairs[0].left_info, 'k': [480.0, 0, 300.0, 0, 485.0, 250.0, 0, 0, 1],
                'd': [-0.3, 0.1, 0.001, -0.002, 0.0], 'r': [0.9998, -0.01, 0.0174, 0.01, 0.99995, 0.0, -0.0174, 0.0,
                                                              0.99985]}
    raw_right = {**raw_left, 'p': pairs[0].right_info['p']}
    rig = InProcessRig(context, weight_files, rectified_cameras=['left', 'right'])
    try:
        for i, pair in enumerate(pairs):
            rig.process(pair.left, pair.right, camera_info(raw_left, 'left'), camera_info(raw_right, 'right'), 3000 + i)
        matches = rig.published['_matches_pub'][-1]
        assert matches.verified_with == 'essential' and len(matches.confidence) > 10
        p = np.asarray(pairs[0].left_info['p']).reshape(3, 4)
        pixels = np.asarray(matches.frame_points).reshape(-1, 2)
        expected = np.stack([(pixels[:, 0] - p[0, 2]) / p[0, 0], (pixels[:, 1] - p[1, 2]) / p[1, 1]], 1)
        np.testing.assert_allclose(np.asarray(matches.frame_points_normalized).reshape(-1, 2), expected, atol=1e-5)
        stereo = rig.published['_stereo_pub'][-1]
        assert stereo.verified_with == 'rectified'
        np.testing.assert_allclose(np.asarray(stereo.left_points_normalized).reshape(-1, 2),
                                   np.stack([(np.asarray(stereo.left_points[0::2]) - p[0, 2]) / p[0, 0],
                                             (np.asarray(stereo.left_points[1::2]) - p[1, 2]) / p[1, 1]], 1),
                                   atol=1e-5)
    finally:
        rig.close()


def test_a_camera_info_of_another_image_size_gives_no_depth(context, weight_files, capfd):
    """The right camera_info's P was used whatever image size it was for (the left camera's K is checked):
    a 1280x960 calibration on 640x480 images gave wrong depths. Now the pair's geometry is ignored with one
    line naming the sizes, and the pair is verified with the fundamental matrix."""
    pairs = stereo_sequence(2)
    left, right = pairs[0].left_info, pairs[0].right_info
    rig = InProcessRig(context, weight_files)
    try:
        rig.process(pairs[0].left, pairs[0].right, camera_info(left, 'left'), camera_info(right, 'right'), 3100)
        assert rig.published['_stereo_pub'][-1].verified_with == 'rectified'
        rig.process(pairs[1].left, pairs[1].right, camera_info(left, 'left'),
                    camera_info({**right, 'width': 1280, 'height': 960}, 'right'), 3101)
        stereo = rig.published['_stereo_pub'][-1]
        assert stereo.verified_with == 'fundamental' and np.isnan(stereo.depth).all()
        assert 'is for 1280x960 images, the images on' in capfd.readouterr().err
    finally:
        rig.close()


def test_match_keyframes_of_a_rigs_right_camera_says_to_ask_the_left_one(context, weight_files):
    """The right camera of a rig has no keyframes of its own: the answer named it as a camera the node does not
    have (listing only 'left'), which reads as a typo. It now says it is the rig's right camera and which to ask."""
    from superglue_ros.srv import MatchKeyframes

    pairs = stereo_sequence(1)
    rig = InProcessRig(context, weight_files)
    try:
        rig.process(pairs[0].left, pairs[0].right, camera_info(pairs[0].left_info, 'left'),
                    camera_info(pairs[0].right_info, 'right'), 3200)
        response = rig.node._on_match_keyframes(MatchKeyframes.Request(camera='right', keyframe_id0=0, keyframe_id1=0),
                                                MatchKeyframes.Response())
        assert not response.success and "the right camera of the stereo rig 'left:right'" in response.message
        assert "ask for camera 'left'" in response.message and '\n' not in response.message
        response = rig.node._on_match_keyframes(MatchKeyframes.Request(camera='left', keyframe_id0=0, keyframe_id1=0),
                                                MatchKeyframes.Response())
        assert response.success and response.pose_source == 'pnp'  # the rig's keyframe has its stereo depth
    finally:
        rig.close()


@pytest.mark.parametrize('case, says', [
    ('no right camera_info', ('(no camera_info received on /{ns}/right/camera_info)', '; publish both camera_infos')),
    ('right P all zero', ('(a camera_info has no P (all zero)', '; publish both camera_infos')),
    ('Tx = 0', ('(the right P has Tx = 0: no baseline)', 'no depth; check the stereo calibration')),
    ('R not identity', ('(R is not the identity): left-right matches verified with the fundamental matrix, no depth; '
                        "for rectified images (image_rect) list both in rectified_cameras: ['left', 'right']",))])
def test_an_unrectified_pair_says_which_camera_info_is_wrong_and_what_to_do(context, weight_files, capfd, case, says):
    """The warning said 'none with a P, or one ignored as logged' whether a camera_info was missing or had no P,
    named neither, and advised stereo_rectified: true (now rectified_cameras) for every reason (it only helps when R
    is not the identity)."""
    pair = stereo_sequence(1)[0]
    left, right = dict(pair.left_info), dict(pair.right_info)
    if case == 'right P all zero':
        right['p'] = [0.0] * 12
    elif case == 'Tx = 0':
        right['p'] = left['p']
    elif case == 'R not identity':
        left['r'] = [0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    rig = InProcessRig(context, weight_files)
    try:
        rig.process(pair.left, pair.right, camera_info(left, 'left'),
                    None if case == 'no right camera_info' else camera_info(right, 'right'), 3300)
        assert rig.published['_stereo_pub'][-1].verified_with == 'fundamental'
        log = capfd.readouterr().err
        assert all(part.format(ns=rig.node.get_namespace().strip('/')) in log for part in says), log
        assert case == 'R not identity' or 'rectified_cameras' not in log, log
    finally:
        rig.close()
