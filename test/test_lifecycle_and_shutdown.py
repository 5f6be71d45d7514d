"""Issue 17, points 2 and 3: the managed (lifecycle) node and shutdown within launch's patience.

The node runs in its own process (test_node_process.NodeProcess); this process drives it over DDS as nav2's
lifecycle manager does (lifecycle_msgs ChangeState and GetState), sends it 640x480 frames as a camera driver
(Driver), and sends SIGINT or SIGTERM, as ros2 launch does, while a frame or a ~/match_images call is running.
"""
import os
import signal
import time

import cv2
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node

from ros_helpers import Spinner, call_service, import_interfaces, wait_until
from superglue_ros.ros.image_conversion import numpy_to_image_msg
from test_node_process import (FULL_SETTINGS, WAIT_S, Driver, NodeProcess, _stamps, full_frames,  # noqa: F401
                               wait_followed, weight_files)

Matches, _, MatchImages = import_interfaces()

LAUNCH_PATIENCE_S = 5.0  # ros2 launch: SIGINT, SIGTERM 5 s later, SIGKILL 5 s after that


class Manager:
    """lifecycle_msgs clients of the node's ~/change_state and ~/get_state, as a lifecycle manager has."""

    def __init__(self, context, node: NodeProcess):
        self.helper = Node('lifecycle_manager', namespace=node.namespace, context=context)
        self._change = self.helper.create_client(ChangeState, 'superglue/change_state')
        self._get = self.helper.create_client(GetState, 'superglue/get_state')
        self._set = self.helper.create_client(SetParameters, 'superglue/set_parameters')
        self.spinner = Spinner(context, self.helper).__enter__()

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return call_service(self._change, request, WAIT_S).success

    def set(self, name: str, value: str):
        """SetParameters of one string parameter: its SetParametersResult."""
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        return call_service(self._set, SetParameters.Request(parameters=[Parameter(name=name, value=value)]),
                            WAIT_S).results[0]

    def state(self) -> str:
        return call_service(self._get, GetState.Request(), WAIT_S, resend_s=5.0).current_state.label

    def close(self):
        self.spinner.__exit__()
        self.helper.destroy_node()


def wait_subscribed(driver: Driver, subscribed: bool = True):
    """Until the node's image subscription matches the driver's reliable publisher (or is gone)."""
    publisher = driver.publishers['']
    if subscribed:
        return wait_followed(driver.node, publisher)
    wait_until(lambda: not driver.helper.get_subscriptions_info_by_topic(publisher.topic_name),
               f'the node to unsubscribe {publisher.topic_name}', WAIT_S)


def test_the_managed_node_through_its_transitions_over_dds(context, weight_files, full_frames):
    """configure, activate (640x480 frames matched), deactivate (a frame sent is not taken), activate (the
    next frame matches the keyframe of before), deactivate, cleanup (keyframes released: after configure and
    activate the first frame is keyframe 0 again), deactivate, shutdown (finalized, the process still answers
    until SIGINT)."""
    node = NodeProcess(f'/test_lifecycle_{os.getpid()}', {**FULL_SETTINGS, **weight_files}, options=('--lifecycle',))
    manager, driver = Manager(context, node), None
    try:
        assert manager.state() == 'unconfigured'
        assert 'matching' not in node.output  # nothing loaded before configure
        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.state() == 'inactive'
        assert f'matching {node.namespace}/image on cpu' in node.output
        assert manager.transition(Transition.TRANSITION_ACTIVATE) and manager.state() == 'active'
        driver = Driver(context, node)  # waits for the node's reliable image subscription
        messages = [numpy_to_image_msg(frame, 'bgr8') for frame in full_frames[:4]]
        assert len(messages[0].data) == 640 * 480 * 3
        first, second = driver.send('', messages[0]), driver.send('', messages[1])
        assert first.is_new_keyframe and (first.keyframe_id, second.keyframe_id) == (0, 0)
        assert len(second.confidence) > 20

        assert manager.transition(Transition.TRANSITION_DEACTIVATE) and manager.state() == 'inactive'
        wait_subscribed(driver, False)
        match_images = driver.helper.create_client(MatchImages, 'superglue/match_images')
        wait_until(lambda: not match_images.service_is_ready(), 'the inactive node to withdraw ~/match_images', WAIT_S)
        ignored = next(_stamps)
        driver.publish('', messages[2], ignored)

        assert manager.transition(Transition.TRANSITION_ACTIVATE) and manager.state() == 'active'
        wait_subscribed(driver)
        third = driver.send('', messages[3])
        assert third.frame_index == 2, 'the frame sent while inactive was processed'
        assert ignored not in {m.header.stamp.sec for m in driver.matches[''].messages}
        assert (third.keyframe_id, third.is_new_keyframe) == (0, False) and len(third.confidence) > 20
        assert third.keyframe_header.stamp == first.header.stamp  # the keyframe kept across deactivate

        assert manager.transition(Transition.TRANSITION_DEACTIVATE)
        assert manager.transition(Transition.TRANSITION_CLEANUP) and manager.state() == 'unconfigured'
        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.transition(Transition.TRANSITION_ACTIVATE)
        wait_subscribed(driver)
        again = driver.send('', messages[3])
        assert again.is_new_keyframe and (again.keyframe_id, again.frame_index) == (0, 0)

        assert manager.transition(Transition.TRANSITION_DEACTIVATE)
        assert manager.transition(Transition.TRANSITION_INACTIVE_SHUTDOWN) and manager.state() == 'finalized'
        assert node.process.poll() is None, node.output
        node.process.send_signal(signal.SIGINT)
        assert node.wait(LAUNCH_PATIENCE_S) == 0, node.output
        assert 'Traceback' not in node.output and 'failed' not in node.output, node.output
    finally:
        manager.close()
        if driver is not None:
            driver.close()
        node.stop()


def test_a_configure_that_fails_leaves_the_node_unconfigured_saying_why(context, weight_files, tmp_path):
    missing = tmp_path / 'missing' / 'superglue_indoor.pth'
    node = NodeProcess(f'/test_lifecycle_failure_{os.getpid()}',
                       {**FULL_SETTINGS, **weight_files, 'superglue_weights': str(missing)}, options=('--lifecycle',))
    manager = Manager(context, node)
    try:
        assert manager.state() == 'unconfigured'
        assert not manager.transition(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == 'unconfigured' and node.process.poll() is None, node.output
        line, = [line for line in node.output.splitlines() if 'configure failed' in line]
        assert 'ERROR' in line and str(missing) in line and 'does not exist' in line, line

        # a transition the state does not have: success=false and one line, the node stays (rclpy#1209 raises)
        assert not manager.transition(Transition.TRANSITION_CLEANUP) and manager.state() == 'unconfigured'
        assert 'transition 2 refused: the node is unconfigured, where the transitions are configure (1)' in (
            node.output), node.output
        # the weights set while unconfigured, then configure takes them; once configured they are refused
        assert manager.set('superglue_weights', weight_files['superglue_weights']).successful
        assert manager.transition(Transition.TRANSITION_CONFIGURE) and manager.state() == 'inactive'
        refused = manager.set('superglue_weights', str(missing))
        assert not refused.successful and 'taken while the node is unconfigured: cleanup' in refused.reason
        assert manager.transition(Transition.TRANSITION_CLEANUP) and manager.state() == 'unconfigured'
        assert node.process.poll() is None and 'Traceback' not in node.output, node.output
    finally:
        manager.close()
        node.stop()


# -- shutdown (point 3): default settings, where a 640x480 frame takes seconds on a CPU --------------------

DEFAULT_SETTINGS = {'device': 'cpu', 'backend': 'torch'}  # 'auto' would export ONNX models first on a CPU


def stop_quickly(node, stop_signal, abandoned: str):
    """Sends stop_signal to the node process: it exits 0 within LAUNCH_PATIENCE_S, naming `abandoned` as what it
    did not wait for, with no traceback."""
    start = time.monotonic()
    node.process.send_signal(stop_signal)
    code = node.wait(3 * LAUNCH_PATIENCE_S)
    took = time.monotonic() - start
    print(f'\n[stop] {stop_signal.name} during {abandoned}: exit {code} after {took:.1f} s')
    assert code == 0 and took < LAUNCH_PATIENCE_S, (took, node.output)
    assert f'{stop_signal.name}: exiting without waiting for {abandoned}' in node.output, node.output
    assert 'Traceback' not in node.output, node.output


@pytest.mark.parametrize('stop_signal', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_mid_frame_exits_0_within_launchs_patience(context, weight_files, full_frames, stop_signal):
    node = NodeProcess(f'/test_stop_frame_{stop_signal.name}_{os.getpid()}', {**DEFAULT_SETTINGS, **weight_files})
    driver = Driver(context, node)
    try:
        driver.send('', numpy_to_image_msg(full_frames[0], 'bgr8'))  # the keyframe: SuperPoint only
        stamp = next(_stamps)
        driver.publish('', numpy_to_image_msg(full_frames[1], 'bgr8'), stamp)  # SuperPoint and SuperGlue
        # the frame is in the node, being processed (a fixed second was not always enough for the 900 KB sample
        # to arrive: a clean-clone CI run signalled a node that had nothing to abandon)
        driver.wait_status(lambda values: values['images received'] == '2', 'the second frame received')
        assert stamp not in {m.header.stamp.sec for m in driver.matches[''].messages}, 'too fast: make it slower'
        stop_quickly(node, stop_signal, f'a frame of {node.namespace}/image')
    finally:
        driver.close()


@pytest.mark.parametrize('stop_signal', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_during_a_match_images_call_exits_0_within_launchs_patience(context, weight_files, full_frames,
                                                                             stop_signal):
    """The call in flight is abandoned: its caller gets no answer (rclpy's executor.shutdown() does not wait
    for a running callback, and before, the node made the call finish: 60 s and more with big images)."""
    node = NodeProcess(f'/test_stop_service_{stop_signal.name}_{os.getpid()}', {**DEFAULT_SETTINGS, **weight_files})
    helper = Node('caller', namespace=node.namespace, context=context)
    client = helper.create_client(MatchImages, 'superglue/match_images')
    try:
        with Spinner(context, helper):
            wait_until(lambda: node.process.poll() is not None or client.service_is_ready(), 'the service', WAIT_S)
            assert node.process.poll() is None, node.output
            image = cv2.resize(full_frames[0], (1280, 960), interpolation=cv2.INTER_LINEAR)
            future = client.call_async(MatchImages.Request(image0=numpy_to_image_msg(image, 'bgr8'),
                                                           image1=numpy_to_image_msg(image[:, ::-1].copy(), 'bgr8')))
            time.sleep(1.5)  # the request is in the node (two 3.7 MB images: delivered well within this)
            assert not future.done(), 'the call ended before the signal: make it slower'
            stop_quickly(node, stop_signal, 'a ~/match_images call')
        assert not future.done()
        assert 'never retrieved' not in node.output, node.output
    finally:
        node.stop()
        helper.destroy_node()
