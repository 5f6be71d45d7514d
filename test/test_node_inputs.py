"""The node's image input as users wire it (issue 17 points 6 and 8), the node in its own process
(test_node_process.NodeProcess) and the publishers in this one over DDS: a topic of another type is
named with what to set, on /diagnostics and in one log line; two cameras on one topic are warned of at
start-up; a frame_id change mid-stream makes a new keyframe, reason frame_changed.
"""
import os

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ros_helpers import Inbox, import_interfaces, wait_until
from superglue_ros.ros.diagnostics import COMPRESSED_TYPE, IMAGE_TYPE, wrong_topic_type
from superglue_ros.ros.image_conversion import numpy_to_compressed_msg, numpy_to_image_msg
from test_node_process import FULL_SETTINGS, WAIT_S, Driver, NodeProcess, full_frames, weight_files  # noqa: F401

Matches, Keyframe, _ = import_interfaces()
DIAGNOSTICS_SEEN = 3  # statuses (1 Hz) that must name the wrong type after its first one: the log line stays one


@pytest.mark.parametrize('transport, topic, published, says', [
    # raw transport remapped to image_transport's compressed topic (the case)
    ('raw', '/cam_{}/image_raw/compressed', CompressedImage,
     'image_transport: compressed and remap image:=/cam_{}/image_raw (the node adds /compressed)'),
    # image_transport compressed, but the topic it reads carries raw images
    ('compressed', '/cam_{}/image_raw/compressed', Image, 'set image_transport: raw and remap image:=/cam_{}/image_raw'),
    ('raw', '/cam_{}/camera_info', CameraInfo, 'remap image:= to a topic of sensor_msgs/msg/Image'),
])
def test_a_topic_of_another_type_is_named_with_what_to_set(context, weight_files, full_frames, transport, topic,
                                                            published, says):
    """Issue 17 point 6: nothing can arrive from publishers of another type; the camera's status (WARN)
    and one warning line name their type, the type subscribed and what to set, instead of 'no images
    received'."""
    topic, says = topic.format(os.getpid()), says.format(os.getpid())
    base = topic.removesuffix('/compressed')
    node = NodeProcess(f'/test_wrong_type_{os.getpid()}', {**FULL_SETTINGS, **weight_files, 'image_transport': transport},
                       remap={'image': base if transport == 'compressed' else topic})
    driver = Driver(context, node, msg_type=published, topics={'': topic}, matched=False)  # the node's subscription
    diagnostics = Inbox('/diagnostics')
    driver.helper.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 100)
    expected = 'sensor_msgs/msg/CompressedImage' if transport == 'compressed' else 'sensor_msgs/msg/Image'
    published_type = f'sensor_msgs/msg/{published.__name__}'
    try:
        msg = {Image: lambda: numpy_to_image_msg(full_frames[0], 'bgr8'),
               CompressedImage: lambda: numpy_to_compressed_msg(full_frames[0], 'bgr8', 'jpeg'),
               CameraInfo: CameraInfo}[published]()
        driver.publish('', msg, 1)

        def named(status):  # the node's status for this topic (the nodes of other tests share the name)
            return (status.name == 'superglue' and status.level == DiagnosticStatus.WARN
                    and status.message.startswith(f'{topic} has 1 publisher of {published_type}'))
        first = diagnostics.wait_for(lambda a: any(named(s) for s in a.status), f'a status naming {published_type}',
                                     WAIT_S)
        status = next(s for s in first.status if named(s))
        assert f'but this camera subscribes {expected} (image_transport: {transport})' in status.message
        assert says in status.message and 'no images received' not in status.message
        wait_until(lambda: sum(any(named(s) for s in a.status) for a in list(diagnostics.messages)) > DIAGNOSTICS_SEEN,
                   f'{DIAGNOSTICS_SEEN} more statuses naming {published_type}', WAIT_S)
        logged = [line for line in node.output.splitlines() if f'{topic} has 1 publisher of' in line]
        assert len(logged) == 1 and '[WARN]' in logged[0] and says in logged[0], node.output
        assert node.process.poll() is None
    finally:
        driver.close()


def test_wrong_topic_type_rules():
    """No publisher, or all of the type subscribed: nothing to say (the 'no images received' advice holds);
    with image_transport compressed and nothing on <base>/compressed, raw images on the base topic are
    named; a CompressedImage topic not named <base>/compressed cannot be read compressed."""
    assert wrong_topic_type('/cam/image_raw', IMAGE_TYPE, [], 'image') is None
    assert wrong_topic_type('/cam/image_raw', IMAGE_TYPE, [IMAGE_TYPE] * 2, 'image') is None
    assert wrong_topic_type('/cam/image_raw/compressed', COMPRESSED_TYPE, [], 'image', [COMPRESSED_TYPE]) is None
    assert wrong_topic_type('/cam/image_raw/compressed', COMPRESSED_TYPE, [], 'left/image', [IMAGE_TYPE]) == (
        'nothing publishes /cam/image_raw/compressed, which this camera subscribes (image_transport: compressed), but '
        '/cam/image_raw carries sensor_msgs/msg/Image: set image_transport: raw, or republish it compressed '
        '(ros2 run image_transport republish raw compressed)')
    mixed = wrong_topic_type('/cam/jpeg', IMAGE_TYPE, [IMAGE_TYPE, COMPRESSED_TYPE, COMPRESSED_TYPE], 'image')
    assert mixed.startswith('/cam/jpeg has 2 publishers of sensor_msgs/msg/CompressedImage, but this camera '
                            'subscribes sensor_msgs/msg/Image (image_transport: raw) and receives nothing from them')
    assert mixed.endswith('remap image:= to a topic of sensor_msgs/msg/Image (image_transport: compressed reads only '
                          'topics named <base topic>/compressed)')


def test_two_cameras_on_one_topic_are_warned_of_at_start_up(context, weight_files):
    """Issue 17 point 6: two cameras remapped to one topic would each process every image: one warning at
    start-up names the topic, the cameras and the remapping; cameras on their own topics get none."""
    topic = f'/shared_{os.getpid()}/image_raw'
    node = NodeProcess(f'/test_shared_topic_{os.getpid()}', {**FULL_SETTINGS, **weight_files,
                                                             'cameras': "['left','right','third']"},
                       remap={'left/image': topic, 'right/image': topic})
    try:
        wait_until(lambda: node.process.poll() is not None or 'all subscribe' in node.output, 'the warning', WAIT_S)
        assert node.process.poll() is None, node.output
        warnings = [line for line in node.output.splitlines() if 'all subscribe' in line]
        assert len(warnings) == 1 and '[WARN]' in warnings[0], node.output
        assert f"cameras 'left', 'right' all subscribe {topic}: each of its images goes to every one of them " \
               "(processed 2 times" in warnings[0]
        assert '(left/image:=<topic>, right/image:=<topic>)' in warnings[0] and 'third' not in warnings[0]
    finally:
        node.stop()


def test_a_frame_id_change_makes_a_new_keyframe(context, weight_files, full_frames):
    """Issue 17 point 8: 640x480 frames from another process; when their frame_id changes, the frame is
    not matched against the old keyframe but becomes keyframe 1, reason frame_changed, with a warning;
    the next frame of the new frame_id matches it."""
    node = NodeProcess(f'/test_frame_id_{os.getpid()}', {**FULL_SETTINGS, **weight_files})
    driver = Driver(context, node)
    keyframes = Inbox('~/keyframe')
    driver.helper.create_subscription(Keyframe, 'superglue/keyframe', keyframes, 100)
    try:
        messages = [numpy_to_image_msg(frame, 'bgr8') for frame in full_frames[:4]]
        assert (messages[0].width, messages[0].height) == (640, 480)
        first = driver.send('', messages[0], 'camera_a')
        matched = driver.send('', messages[1], 'camera_a')
        assert first.is_new_keyframe and (matched.keyframe_id, matched.is_new_keyframe) == (0, False)
        assert len(matched.confidence) > 20
        changed = driver.send('', messages[2], 'camera_b')
        assert (changed.keyframe_id, changed.is_new_keyframe, len(changed.confidence)) == (1, True, 0)
        assert changed.keyframe_header.frame_id == 'camera_b'
        after = driver.send('', messages[3], 'camera_b')
        assert (after.keyframe_id, after.is_new_keyframe) == (1, False) and len(after.confidence) > 20
        published = keyframes.wait(2, WAIT_S)
        assert [(k.keyframe_id, k.reason, k.header.frame_id) for k in published] == [
            (0, 'first', 'camera_a'), (1, 'frame_changed', 'camera_b')]
        warnings = [line for line in node.output.splitlines() if 'frame_id of the images' in line]
        assert len(warnings) == 1 and '[WARN]' in warnings[0], node.output
        assert "changed from 'camera_a' to 'camera_b': this frame is the new keyframe 1" in warnings[0]
    finally:
        driver.close()
