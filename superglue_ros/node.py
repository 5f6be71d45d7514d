"""ROS 2 node: SuperPoint + SuperGlue keyframe matching on a camera stream (adapter over frontend.py).

    python -m superglue_ros.node --ros-args -r image:=/camera/image_raw \\
        -r camera_info:=/camera/camera_info --params-file config/indoor.yaml
    ros2 run superglue_ros superglue_node --ros-args ...

Subscribes   image (sensor_msgs/Image, sensor-data QoS), camera_info (sensor_msgs/CameraInfo)
Publishes    ~/matches (Matches, every processed frame), ~/keyframe (Keyframe, on each new keyframe),
             ~/match_image (bgr8 keyframe | frame, drawn only while subscribed), /diagnostics (1 Hz)
Services     ~/match_images (MatchImages: two given images), ~/new_keyframe (std_srvs/Trigger)
Parameters   ros/parameters.py (`ros2 param describe`); thresholds can be changed while running.

Threads: the image callback only puts the frame in a one-slot mailbox; a frame still waiting there is
replaced by the newer one and counted as dropped, so latency stays at most about two processing
times however fast images come. One worker thread processes frames; the executor stays free for
the callbacks, services and parameter changes.
"""
import sys
import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from superglue_ros.msg import Keyframe, Matches
from superglue_ros.srv import MatchImages

from .frontend import KeyframeFrontend
from .image import ImageError
from .matcher import Matcher
from .ros import parameters
from .ros.diagnostics import Statistics, diagnostic_status, rejection_kind
from .ros.image_conversion import ImageConversionError, image_msg_to_numpy, numpy_to_image_msg
from .ros.messages import (fill_match_images_response, keyframe_message, match_picture, matches_message,
                           stamp_to_seconds)
from .weights import WeightsError

try:  # not in every distribution (not on PyPI): without it, the latest camera_info is used
    import message_filters
except ImportError:
    message_filters = None

NODE_NAME = 'superglue'
CAMERA_INFO_CACHE = 30  # camera_info messages kept to find the one of an image's stamp


@dataclass
class Frame:
    msg: Image
    received: float                 # time.monotonic() at receipt
    camera_info: CameraInfo | None


class Mailbox:
    """One slot between the subscription callback and the worker: put() replaces an unread frame
    (counted in `dropped`), take() waits for one; None after close()."""

    def __init__(self):
        self._changed = threading.Condition()
        self._frame = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame):
        with self._changed:
            self.dropped += self._frame is not None
            self._frame = frame
            self._changed.notify()

    def take(self) -> Frame | None:
        with self._changed:
            self._changed.wait_for(lambda: self._frame is not None or self._closed)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def close(self):
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class CameraInfoSource:
    """camera_info for an image: the one with the image's stamp (or the newest before it) where
    message_filters is available, else the latest received."""

    def __init__(self, node: Node, qos):
        self._latest = None
        if message_filters is not None:
            subscriber = message_filters.Subscriber(node, CameraInfo, 'camera_info', qos_profile=qos)
            self._cache = message_filters.Cache(subscriber, cache_size=CAMERA_INFO_CACHE)
            self.topic = subscriber.sub.topic_name
        else:
            self._cache = None
            self.topic = node.create_subscription(CameraInfo, 'camera_info', self._store, qos).topic_name

    def _store(self, msg: CameraInfo):
        self._latest = msg

    def for_stamp(self, stamp) -> CameraInfo | None:
        if self._cache is None:
            return self._latest
        return self._cache.getElemBeforeTime(Time.from_msg(stamp)) or self._cache.getLast()


class SuperGlueNode(Node):
    """Raises parameters.ParameterError or WeightsError (with what to do) when it cannot start."""

    def __init__(self, **node_options):
        super().__init__(NODE_NAME, **node_options)
        self.values = parameters.declare(self)
        matcher = Matcher.from_weights(
            self.values['superpoint_weights'] or None, self.values['superglue_weights'],
            device=self.values['device'], resize=parameters.resize_setting(self.values['resize']),
            precision=self.values['precision'],
            **parameters.model_settings(self.values))
        self.frontend = KeyframeFrontend(matcher, parameters.keyframe_policy(self.values),
                                         parameters.verification(self.values))
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.stats = Statistics()
        self._mailbox = Mailbox()
        self._keyframe = None  # (header, (image, color_order)) of the current keyframe; worker thread only

        self._image_sub = self.create_subscription(Image, 'image', self._on_image, qos_profile_sensor_data)
        self.camera_info = CameraInfoSource(self, qos_profile_sensor_data)
        self._matches_pub = self.create_publisher(Matches, '~/matches', 10)
        self._keyframe_pub = self.create_publisher(Keyframe, '~/keyframe', 10)
        self._match_image_pub = self.create_publisher(Image, '~/match_image', 1)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        services = MutuallyExclusiveCallbackGroup()  # match_images waits for the models: not on the image path
        self.create_service(MatchImages, '~/match_images', self._on_match_images, callback_group=services)
        self.create_service(Trigger, '~/new_keyframe', self._on_new_keyframe)
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

        self._worker = threading.Thread(target=self._work, name='superglue_worker', daemon=True)
        self._worker.start()
        logger = self.get_logger()
        logger.info(f'matching {self._image_sub.topic_name} on {matcher.device} '
                    f'(superglue_weights={self.values["superglue_weights"]!r}, '
                    f'superpoint_weights={self.values["superpoint_weights"] or "from superglue_weights"!r}, '
                    f'resize={matcher.resize}, precision={matcher.precision}, {matcher.settings})')
        if message_filters is None:
            logger.info('message_filters is not installed: Matches.camera_info is the latest camera_info '
                        'received, not the one with the image stamp')
        else:
            logger.info(f'camera_info from {self.camera_info.topic} paired with the images by stamp (message_filters)')

    @property
    def dropped_frames(self) -> int:
        """Frames replaced by a newer one before the worker took them, since start."""
        return self._mailbox.dropped

    def destroy_node(self):
        self._mailbox.close()
        self._worker.join(timeout=30)
        super().destroy_node()

    # -- executor threads ---------------------------------------------------------------------

    def _on_image(self, msg: Image):
        camera_info = self.camera_info.for_stamp(msg.header.stamp)
        self.stats.image_received(camera_info is not None)
        self._mailbox.put(Frame(msg, time.monotonic(), camera_info))

    def _on_new_keyframe(self, request, response):
        self.frontend.request_new_keyframe()
        response.success, response.message = True, 'the next processed frame becomes the keyframe'
        return response

    def _on_match_images(self, request, response):
        try:
            images = [image_msg_to_numpy(image) for image in (request.image0, request.image1)]
            pair = self.frontend.match_pair(images[0][0], images[1][0], images[0][1], images[1][1])
        except (ImageConversionError, ImageError) as e:
            response.success, response.message = False, f'cannot match these images: {e}'
            return response
        fill_match_images_response(pair, response)
        response.success = True
        response.message = f'{len(pair.confidence)} matches in {pair.timings_ms["total"]:.0f} ms'
        return response

    def _on_set_parameters(self, changes) -> SetParametersResult:
        values = {p.name: p.value for p in changes if p.name in parameters.PARAMETERS}
        for name, value in values.items():
            reason = parameters.problem(name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        try:  # everything is checked before anything changes
            policy = parameters.keyframe_policy(values, self.frontend.policy)
            verification = parameters.verification(values, self.frontend.verification)
            settings = parameters.model_settings(values)
            if settings:
                self.frontend.configure(**settings)
        except ValueError as e:
            return SetParametersResult(successful=False, reason=str(e))
        self.frontend.policy, self.frontend.verification = policy, verification
        self.values.update(values)
        if values:
            self.get_logger().info(f'parameters changed: {values}')
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self):
        status = diagnostic_status(self.stats.report(), self.get_name(), self._image_sub.topic_name,
                                   self.camera_info.topic, str(self.frontend.matcher.device),
                                   self._mailbox.dropped)
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics_pub.publish(DiagnosticArray(header=header, status=[status]))

    # -- worker thread ------------------------------------------------------------------------

    def _work(self):
        while (frame := self._mailbox.take()) is not None:
            try:
                self._process(frame)
            except Exception as e:  # e.g. out of GPU memory: report it and go on with the next frame
                self.stats.failed(f'{type(e).__name__}: {e}')
                self.get_logger().error(f'processing a frame failed: {type(e).__name__}: {e}',
                                        throttle_duration_sec=10.0)

    def _process(self, frame: Frame):
        msg = frame.msg
        try:
            image = image_msg_to_numpy(msg)
            result = self.frontend.process(image[0], stamp_to_seconds(msg.header.stamp), image[1])
        except (ImageConversionError, ImageError) as e:
            kind = rejection_kind(msg, e)
            if self.stats.rejected(kind, str(e)):
                self.get_logger().error(f'image on {self._image_sub.topic_name} skipped ({kind}): {e}. '
                                        f'Logged at most every 10 s per kind; counted on /diagnostics')
            return

        current = (msg.header, image)
        if result.keyframe_id == result.new_keyframe_id:  # nothing to match: the first frame or a time jump
            self._keyframe = current
            if result.keyframe_reason == 'time_jump':
                self.get_logger().warn('image stamps jumped backwards (bag restarted?): this frame is the new '
                                       f'keyframe {result.keyframe_id}')
        keyframe_header, keyframe_image = self._keyframe

        latency_ms = (time.monotonic() - frame.received) * 1e3
        self._matches_pub.publish(matches_message(result, msg.header, keyframe_header, frame.camera_info,
                                                  latency_ms, self.dropped_frames))
        if result.is_new_keyframe:
            self._keyframe_pub.publish(keyframe_message(result, msg.header, (msg.width, msg.height),
                                                        frame.camera_info))
        if self._match_image_pub.get_subscription_count() > 0:
            picture = match_picture(keyframe_image, image, result, self.values['match_image_max_lines'],
                                    [f'Keyframe {result.keyframe_id}, frame {result.frame_index}',
                                     f'Latency {latency_ms:.0f} ms'])
            self._match_image_pub.publish(numpy_to_image_msg(picture, 'bgr8', header=msg.header))
        if result.is_new_keyframe:
            self._keyframe = current
        self.stats.frame_processed(latency_ms, result.timings_ms['total'], result.frame_keypoint_count,
                                   len(result.confidence), result.keyframe_id)


def main(args=None) -> int:
    rclpy.init(args=args)
    try:
        node = SuperGlueNode()
    except (WeightsError, ValueError) as e:  # parameters.ParameterError is a ValueError
        rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {e}')
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
