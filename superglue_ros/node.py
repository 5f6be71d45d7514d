"""ROS 2 node: SuperPoint + SuperGlue keyframe matching for one or more cameras (an adapter over pipeline.py).

    python -m superglue_ros.node --ros-args -r image:=/camera/image_raw \\
        -r camera_info:=/camera/camera_info --params-file config/indoor.yaml
    ros2 run superglue_ros superglue_node --ros-args -p "cameras:=['left', 'right']" ...

Per camera (parameter `cameras`; '' is the unnamed camera, a name such as left prefixes its topics):
  subscribes  image (sensor_msgs/Image) or, with image_transport compressed, the resolved image topic
              + /compressed (sensor_msgs/CompressedImage, JPEG / PNG); camera_info. Relative names: remap
              them. QoS follows the publisher's reliability (ros/qos.py); qos_overrides./<topic>.subscription.*
              parameters fix it instead.
  publishes   ~/matches (Matches, every processed frame), ~/keyframe (Keyframe, each new keyframe),
              ~/match_image (bgr8 keyframe | frame, drawn only while subscribed); ~/left/matches, ...
  service     ~/new_keyframe (std_srvs/Trigger); ~/left/new_keyframe, ...
  runs        its own mailbox, worker thread, CameraPipeline (its own CUDA streams on a GPU), keyframe,
              statistics and /diagnostics status.
Shared by all cameras: one copy of the weights (one Matcher), the parameters (ros/parameters.py,
derived from settings.py), the service ~/match_images (MatchImages: two given images) and the
/diagnostics publisher (1 Hz).

The path of one image: subscription callback -> the camera's one-slot mailbox (a frame still waiting
there is replaced by the newer one and counted as dropped, so latency stays at most about two
processing times however fast images come) -> the camera's worker thread: message to numpy
(ros/image_conversion.py), CameraPipeline.process (pipeline.py: upload, SuperPoint, SuperGlue,
tracker) -> Matches / Keyframe / match picture (ros/messages.py) -> publish. The executor stays free
for callbacks, services and parameter changes.
"""
import signal
import sys

if __name__ == '__main__':  # Ctrl-C during the slow imports below (torch): leave quietly, as after start-up
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))

import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from superglue_ros.msg import Keyframe, Matches
from superglue_ros.srv import MatchImages

from .export import ExportError
from .geometry import Calibration, Verification
from .image import ImageError
from .matcher import Matcher, ResourceError
from .pipeline import CameraPipeline, match_pair
from .ros import parameters
from .ros.diagnostics import LOG_EVERY_S, Statistics, diagnostic_status, rejection_kind
from .ros.image_conversion import (ImageConversionError, compressed_msg_to_numpy, image_msg_to_numpy,
                                   numpy_to_image_msg)
from .ros.qos import AdaptiveSubscription
from .ros.messages import (fill_match_images_response, keyframe_message, match_picture, matches_message,
                           stamp_to_seconds)
from .runtime import RuntimeUnavailable
from .settings import names
from .tracking import KeyframePolicy
from .weights import WeightsError

try:  # not in every distribution (not on PyPI): without it, the latest camera_info is used
    import message_filters
except ImportError:
    message_filters = None

NODE_NAME = 'superglue'
RCLError = _rclpy.RCLError  # what rclpy.init raises for bad --ros-args (rclpy exports no public names)
UnknownROSArgsError = _rclpy.UnknownROSArgsError
CAMERA_INFO_CACHE = 30  # camera_info messages kept to find the one of an image's stamp
LOG_THROTTLE_S = LOG_EVERY_S  # throttled error logs: the period Statistics.rejected counts rejections by


@dataclass
class Frame:
    msg: Image | CompressedImage
    received: float                 # time.monotonic() at receipt
    camera_info: CameraInfo | None


class Mailbox:
    """One slot between a subscription callback and its worker: put() replaces an unread frame
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
    message_filters is available, else the latest received. The subscription's QoS follows the
    publisher (ros/qos.py)."""

    def __init__(self, node: Node, topic: str):
        self._latest = None
        self._cache = None
        if message_filters is not None:  # a Cache fed by our subscription, so that its QoS can adapt
            self._source = message_filters.SimpleFilter()
            self._cache = message_filters.Cache(self._source, cache_size=CAMERA_INFO_CACHE)
        self.subscription = AdaptiveSubscription(node, CameraInfo, topic, self._store)
        self.topic = self.subscription.topic_name

    def _store(self, msg: CameraInfo):
        self._latest = msg
        if self._cache is not None:
            self._source.signalMessage(msg)

    def for_stamp(self, stamp) -> CameraInfo | None:
        if self._cache is None:
            return self._latest
        return self._cache.getElemBeforeTime(Time.from_msg(stamp)) or self._cache.getLast()


class Camera:
    """One camera of the node (module doc): topics, mailbox, worker thread, pipeline, statistics."""

    def __init__(self, node: 'SuperGlueNode', name: str, matcher: Matcher, policy: KeyframePolicy,
                 verification: Verification):
        self.node, self.name = node, name
        prefix = f'{name}/' if name else ''
        self.pipeline = CameraPipeline(matcher, policy, verification)
        self.stats = Statistics()
        self.mailbox = Mailbox()
        self._keyframe = None  # (header, (image, color_order)) of the keyframe; worker thread only

        if node.values['image_transport'] == 'compressed':  # the resolved base topic + /compressed, as image_transport
            self._image_sub = AdaptiveSubscription(node, CompressedImage,
                                                   node.resolve_topic_name(f'{prefix}image') + '/compressed',
                                                   self._on_image)
        else:
            self._image_sub = AdaptiveSubscription(node, Image, f'{prefix}image', self._on_image)
        self.image_topic = self._image_sub.topic_name
        self.camera_info = CameraInfoSource(node, f'{prefix}camera_info')
        self._matches_pub = node.create_publisher(Matches, f'~/{prefix}matches', 10)
        self._keyframe_pub = node.create_publisher(Keyframe, f'~/{prefix}keyframe', 10)
        self._match_image_pub = node.create_publisher(Image, f'~/{prefix}match_image', 1)
        node.create_service(Trigger, f'~/{prefix}new_keyframe', self._on_new_keyframe)
        self._worker = threading.Thread(target=self._work, name=f'superglue_{name or "camera"}', daemon=True)
        self._worker.start()

    @property
    def status_name(self) -> str:
        """Its /diagnostics status name: the node's name, and the camera's."""
        return f'{self.node.get_name()}: {self.name}' if self.name else self.node.get_name()

    def close(self):
        self.mailbox.close()
        self._worker.join(timeout=30)

    # -- executor threads -------------------------------------------------------------------------

    def _on_image(self, msg):
        camera_info = self.camera_info.for_stamp(msg.header.stamp)
        self.stats.image_received(camera_info is not None)
        self.mailbox.put(Frame(msg, time.monotonic(), camera_info))

    def _on_new_keyframe(self, request, response):
        self.pipeline.request_new_keyframe()
        response.success, response.message = True, 'the next processed frame becomes the keyframe'
        return response

    # -- worker thread ----------------------------------------------------------------------------

    def _work(self):
        logger = self.node.get_logger()
        while (frame := self.mailbox.take()) is not None:
            self.stats.frame_started()
            try:
                self._process(frame)
            except (ImageConversionError, ImageError) as e:
                kind = rejection_kind(frame.msg, e)
                if self.stats.rejected(kind, str(e)):
                    logger.error(f'image on {self.image_topic} skipped ({kind}): {e}. '
                                 f'Logged at most every {LOG_THROTTLE_S:.0f} s per kind; counted on /diagnostics')
            except Exception as e:  # ResourceError (out of memory) and anything unexpected: next frame
                if not self.node.context.ok():  # Ctrl-C arrived mid-frame: its publishers are gone, so is the node
                    return
                self.stats.failed(f'{type(e).__name__}: {e}')
                logger.error(f'processing a frame of {self.image_topic} failed: {e}' if isinstance(e, ResourceError)
                             else f'processing a frame of {self.image_topic} failed: {type(e).__name__}: {e}',
                             throttle_duration_sec=LOG_THROTTLE_S)
            finally:
                self.stats.frame_ended()

    def _calibration(self, camera_info: CameraInfo | None, image_size: tuple[int, int]) -> Calibration | None:
        """The frame's calibration, or None: no camera_info, K all zero, or one that cannot be used
        (malformed, or of another image size: logged, throttled)."""
        if camera_info is not None and camera_info.width and (camera_info.width, camera_info.height) != image_size:
            self.node.get_logger().error(
                f'camera_info on {self.camera_info.topic} ignored: it is for {camera_info.width}x{camera_info.height} '
                f'images, the images on {self.image_topic} are {image_size[0]}x{image_size[1]}',
                throttle_duration_sec=LOG_THROTTLE_S)
            return None
        try:
            return Calibration.from_camera_info(camera_info)
        except ValueError as e:
            self.node.get_logger().error(f'camera_info on {self.camera_info.topic} ignored: {e}',
                                         throttle_duration_sec=LOG_THROTTLE_S)
            return None

    def _process(self, frame: Frame):
        msg = frame.msg
        image = compressed_msg_to_numpy(msg) if isinstance(msg, CompressedImage) else image_msg_to_numpy(msg)
        result = self.pipeline.process(image[0], stamp_to_seconds(msg.header.stamp), image[1],
                                       self._calibration(frame.camera_info, (image[0].shape[1], image[0].shape[0])))
        if self.pipeline.verification.method == 'essential' and result.verified_with == 'fundamental':
            self.node.get_logger().warn(
                f'geometric_verification is essential but a frame of {self.image_topic} has no calibration (no '
                f'camera_info on {self.camera_info.topic}, K all zero, or one ignored as logged): verified with '
                f'the fundamental matrix instead', throttle_duration_sec=LOG_THROTTLE_S)

        current = (msg.header, image)
        if result.keyframe_id == result.new_keyframe_id:  # nothing to match: the first frame or a time jump
            self._keyframe = current
            if result.keyframe_reason == 'time_jump':
                self.node.get_logger().warn(
                    f'image stamps on {self.image_topic} jumped back by more than time_jump_threshold_s (bag or '
                    f'camera restarted?): this frame is the new keyframe {result.keyframe_id}')
        keyframe_header, keyframe_image = self._keyframe

        latency_ms = (time.monotonic() - frame.received) * 1e3
        self._matches_pub.publish(matches_message(result, self.name, msg.header, keyframe_header, frame.camera_info,
                                                  latency_ms, self.mailbox.dropped))
        if result.is_new_keyframe:
            self._keyframe_pub.publish(keyframe_message(result, self.name, msg.header,
                                                        (image[0].shape[1], image[0].shape[0]), frame.camera_info))
        if self._match_image_pub.get_subscription_count() > 0:
            picture = match_picture(keyframe_image, image, result, self.node.values['match_image_max_lines'],
                                    [f'Keyframe {result.keyframe_id}, frame {result.frame_index}',
                                     f'Latency {latency_ms:.0f} ms'])
            self._match_image_pub.publish(numpy_to_image_msg(picture, 'bgr8', header=msg.header))
        if result.is_new_keyframe:
            self._keyframe = current
        self.stats.frame_processed(latency_ms, result.timings_ms['total'], result.frame_keypoint_count,
                                   len(result.confidence), result.keyframe_id)

    def diagnostics(self, device: str) -> DiagnosticStatus:
        return diagnostic_status(self.stats.report(), self.status_name, self.image_topic, self.camera_info.topic,
                                 device, self.mailbox.dropped)


class SuperGlueNode(Node):
    """Raises parameters.ParameterError or WeightsError (with what to do) when it cannot start."""

    def __init__(self, **node_options):
        super().__init__(NODE_NAME, **node_options)
        self.values = parameters.declare(self)
        for name, close in parameters.unknown_overrides(self).items():
            self.get_logger().warn(f"parameter '{name}' ignored: this node has no such parameter"
                                   + (f"; did you mean '{close[0]}'?" if close else '')
                                   + ' (a params file or -p sets it)')
        v = self.values
        self.matcher = Matcher.from_weights(
            v['superpoint_weights'], v['superglue_weights'], device=v['device'], resize=v['resize'],
            precision=v['precision'], backend=v['backend'], log=self.get_logger().info,
            **{name: v[name] for name in Matcher.MODEL_SETTINGS})
        self.verification = Verification.from_settings(v)
        policy = KeyframePolicy.from_settings(v)
        self.cameras = [Camera(self, name, self.matcher, policy, self.verification) for name in v['cameras']]
        self.add_on_set_parameters_callback(parameters.validate)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._service_lock = threading.Lock()
        self._service_counts = {'requests': 0, 'failures': 0, 'last failure': ''}
        services = MutuallyExclusiveCallbackGroup()  # match_images waits for the models: not on the image path
        self.create_service(MatchImages, '~/match_images', self._on_match_images, callback_group=services)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

        logger = self.get_logger()
        topics = ', '.join(camera.image_topic for camera in self.cameras)
        logger.info(f'matching {topics} on {self.matcher.device} (superglue_weights={v["superglue_weights"]!r}, '
                    f'superpoint_weights={v["superpoint_weights"] or "from superglue_weights"!r}, '
                    f'resize={self.matcher.resize}, precision={self.matcher.precision}, backend={self.matcher.backend}'
                    + (f' ({self.matcher.runtime.directory})' if self.matcher.runtime else '')
                    + f', {self.matcher.settings})')
        if message_filters is None:
            logger.info('message_filters is not installed: Matches.camera_info is the latest camera_info '
                        'received, not the one with the image stamp')

    @property
    def dropped_frames(self) -> int:
        """Frames replaced by a newer one before a worker took them, all cameras, since start."""
        return sum(camera.mailbox.dropped for camera in self.cameras)

    def destroy_node(self):
        for camera in self.cameras:
            camera.close()
        super().destroy_node()

    # -- parameters: on-set validates (settings.check), post-set applies (as ros2/demos) ----------

    def _after_set_parameters(self, changed):
        values = parameters.changes(changed)  # checked by parameters.validate
        if not values:
            return
        self.values.update(values)
        model = {name: value for name, value in values.items() if name in Matcher.MODEL_SETTINGS}
        if model:
            self.matcher.configure(**model)
        if set(values) & set(names('verification')):
            self.verification = Verification.from_settings(self.values)
        policy = KeyframePolicy.from_settings(self.values)
        for camera in self.cameras:
            camera.pipeline.policy, camera.pipeline.verification = policy, self.verification
        self.get_logger().info(f'parameters changed: {values}')

    # -- shared service ---------------------------------------------------------------------------

    def _on_match_images(self, request, response):
        try:
            images = []
            for name in ('image0', 'image1'):
                try:
                    images.append(image_msg_to_numpy(getattr(request, name)))
                except ImageConversionError as e:
                    raise ImageConversionError(f'{name}: {e}') from None
            pair = match_pair(self.matcher, images[0][0], images[1][0], images[0][1], images[1][1], self.verification)
        except Exception as e:  # bad images, ResourceError, anything unexpected: an answer, never a dead node
            expected = isinstance(e, (ImageConversionError, ImageError, ResourceError))
            reason = str(e) if expected else f'{type(e).__name__}: {e}'
            with self._service_lock:
                self._service_counts['failures'] += 1
                self._service_counts['last failure'] = reason
                self._service_counts['requests'] += 1
            if not expected:
                self.get_logger().error(f'~/match_images failed: {reason}', throttle_duration_sec=LOG_THROTTLE_S)
            response.success, response.message = False, f'cannot match these images: {reason}'
            return response
        with self._service_lock:
            self._service_counts['requests'] += 1
        fill_match_images_response(pair, response)
        response.success = True
        response.message = f'{len(pair.correspondences.confidence)} matches in {pair.timings_ms["total"]:.0f} ms'
        return response

    def _publish_diagnostics(self):
        device = str(self.matcher.device)
        statuses = [camera.diagnostics(device) for camera in self.cameras]
        with self._service_lock:
            counts = dict(self._service_counts)
        level = DiagnosticStatus.WARN if counts['failures'] else DiagnosticStatus.OK
        message = (f'{counts["failures"]} of {counts["requests"]} requests failed, last: {counts["last failure"]}'
                   if counts['failures'] else f'{counts["requests"]} requests answered')
        statuses.append(DiagnosticStatus(level=level, name=f'{self.get_name()}: match_images', message=message,
                                         hardware_id=device,
                                         values=[KeyValue(key=k, value=str(v)) for k, v in counts.items()]))
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics_pub.publish(DiagnosticArray(header=header, status=statuses))


def main(args=None) -> int:
    """The node until Ctrl-C (0), or one FATAL line and exit code 1 when it cannot start."""
    # Ctrl-C: rclpy's handler (installed by init, chained to this one) shuts the context down and the
    # executor returns; a KeyboardInterrupt raised at any later bytecode would cut the clean-up short.
    signal.signal(signal.SIGINT, lambda *_: None)
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        rclpy.init(args=args)
    except (RCLError, UnknownROSArgsError) as e:  # a --params-file that does not exist or does not parse, a
        reason = ' '.join(str(e).split())            # malformed remap rule, an option --ros-args does not know
        if isinstance(e, UnknownROSArgsError):
            reason = f"unknown option(s) {reason}: --ros-args takes -p, -r, --params-file, --log-level and the like"
        logger.fatal(f'cannot start: bad --ros-args: {reason}')
        return 1
    try:
        node = SuperGlueNode()
    except (WeightsError, ValueError, ExportError, RuntimeUnavailable) as e:  # ParameterError is a ValueError
        logger.fatal(f'cannot start: {e}')
        rclpy.try_shutdown()
        return 1
    except Exception:
        if not rclpy.ok():  # Ctrl-C while the models were loading
            return 0
        raise
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
