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
              ~/match_image (bgr8 keyframe | frame, drawn only while subscribed), ~/loop_candidates
              (LoopCandidates, each new keyframe), with publish_features ~/features (sensor_msgs/PointCloud,
              VINS layout: features.py); ~/left/matches, ...
  service     ~/new_keyframe (std_srvs/Trigger); ~/left/new_keyframe, ...
  runs        its own mailbox, worker thread, CameraPipeline (its own CUDA streams on a GPU), keyframe
              store (keyframes.py), statistics and /diagnostics status.
A stereo rig (parameter `stereo_pairs`, e.g. ['left:right']) is its left camera as above, plus the right
camera's image and camera_info subscriptions: left and right images are paired by stamp (message_filters'
TimeSynchronizer / ApproximateTimeSynchronizer where installed, else stereo.StampPairer) into the rig's one
mailbox of pairs; the left camera's pipeline takes both (pipeline.py). It also publishes
~/left_right/stereo_matches (StereoMatches) and ~/left_right/match_image (left | right, while subscribed).
Shared by all cameras: one copy of the weights (one Matcher), the parameters (ros/parameters.py,
derived from settings.py), the services ~/match_images (MatchImages: two given images) and
~/match_keyframes (MatchKeyframes: two stored keyframes of a camera, by id), and the /diagnostics
publisher (1 Hz).

The path of one image: subscription callback (in a callback group of its own, it waits until the
worker wants a frame, then drains the reader: the newest message goes on, the others taken are counted
as dropped and the gaps in their sequence numbers as lost; a rig's callbacks take each message) -> the
camera's one-slot mailbox (a frame still waiting there is replaced by the newer one and counted as
dropped, so latency stays at most about two processing times however fast images come) -> the camera's
worker thread: message to numpy
(ros/image_conversion.py), CameraPipeline.process (pipeline.py: upload, SuperPoint, SuperGlue,
tracker) -> Matches / Keyframe / match picture (ros/messages.py) -> publish. The executor stays free
for callbacks, services and parameter changes.
"""
import signal
import sys

if __name__ == '__main__':  # a signal during the slow imports below (torch): leave quietly, as after start-up
    for _signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_signum, lambda *_: sys.exit(0))

import ctypes
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from superglue_ros.msg import Keyframe, LoopCandidates, Matches, StereoMatches
from superglue_ros.srv import MatchImages, MatchKeyframes

from .export import ExportError
from .features import FeatureVelocity
from .geometry import Calibration, Verification, reduction, size_problem
from .image import ImageError, read_mask
from .keyframes import KeyframeStore, LoopPolicy
from .matcher import Matcher, ResourceError, release_device_memory
from .pipeline import CameraPipeline, match_keyframes, match_pair
from .ros import parameters
from .ros.diagnostics import (COMPRESSED_TYPE, IMAGE_TYPE, LOG_EVERY_S, SequenceGaps, Statistics,
                              diagnostic_status, rejection_kind, wrong_topic_type)
from .ros.image_conversion import (ImageConversionError, compressed_msg_to_numpy, image_msg_to_numpy,
                                   numpy_to_image_msg)
from .ros.qos import AdaptiveSubscription
from .ros.messages import (features_message, fill_match_images_response, fill_match_keyframes_response,
                           keyframe_message, loop_candidates_message, match_picture, matches_message,
                           stamp_to_seconds, stereo_matches_message, stereo_picture)
from .runtime import RuntimeUnavailable
from .settings import SETTINGS, mask_paths, names, rectified_cameras_of, stereo_pairs_of
from .stereo import LEFT, NO_TRACK, PAIR_QUEUE_SIZE, RIGHT, StampPairer, StereoGeometry, StereoVerification, stamp_ns
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
STOP_GRACE_S = 1.0  # at SIGINT / SIGTERM, how long frames and calls in progress get to end (README: Shutdown)
# what stops a start (the plain node's constructor, a configure transition), said in one line; ParameterError is a ValueError
START_ERRORS = (WeightsError, ValueError, ExportError, RuntimeUnavailable)
LOG_THROTTLE_S = LOG_EVERY_S  # throttled error logs: the period Statistics.rejected counts rejections by


class RightImageError(ImageConversionError):
    """A stereo pair's right image could not be converted (its kind is counted from the right message)."""


@dataclass
class Frame:
    msg: Image | CompressedImage
    received: float                 # time.monotonic() at receipt
    camera_info: CameraInfo | None
    right: 'Frame | None' = None    # a stereo rig's right image of the same stamp

    @property
    def header(self):  # what message_filters' synchronizers read
        return self.msg.header


class Mailbox:
    """One slot between a subscription callback and its worker: put() replaces an unread frame
    (counted in `dropped`, with the `replaced` frames the caller skipped), take() waits for one; None
    after close(). wait_wanted() lets a callback wait until the worker waits in take(). While paused (the
    camera is deactivated) the waiting frame and every frame put are dropped and counted."""

    def __init__(self):
        self._changed = threading.Condition()
        self._frame = None
        self._closed = False
        self._paused = False
        self._waiting = False  # the worker waits in take()
        self.dropped = 0

    def put(self, frame: Frame, replaced: int = 0):
        with self._changed:
            if self._paused:  # a callback that was running when the camera was deactivated
                self.dropped += 1 + replaced
                return
            self.dropped += replaced + (self._frame is not None)
            self._frame = frame
            self._changed.notify_all()

    def wait_wanted(self) -> bool:
        """Blocks until the worker waits for a frame and none is waiting for it (True), or close() or pause()
        (False)."""
        with self._changed:
            self._changed.wait_for(lambda: (self._waiting and self._frame is None) or self._closed or self._paused)
            return not (self._closed or self._paused)

    def pause(self):
        with self._changed:
            self._paused = True
            self.dropped += self._frame is not None
            self._frame = None
            self._changed.notify_all()  # a callback in wait_wanted returns

    def resume(self):
        with self._changed:
            self._paused = False

    def take(self) -> Frame | None:
        with self._changed:
            self._waiting = True
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._frame is not None or self._closed)
            self._waiting = False
            frame, self._frame = self._frame, None
            return None if self._closed else frame

    def close(self):
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class CameraInfoSource:
    """camera_info for an image: the one with the image's stamp (or the newest before it) where
    message_filters is available, else the latest received. The subscription (subscribe(), while the
    camera is active) follows the publisher's QoS (ros/qos.py)."""

    def __init__(self, node: Node, topic: str):
        self._node, self._relative_topic = node, topic
        self.topic = node.resolve_topic_name(topic)
        self.subscription = None
        self._latest = None
        self._cache = None
        if message_filters is not None:  # a Cache fed by our subscription, so that its QoS can adapt
            self._source = message_filters.SimpleFilter()
            self._cache = message_filters.Cache(self._source, cache_size=CAMERA_INFO_CACHE)

    def subscribe(self):
        self.subscription = AdaptiveSubscription(self._node, CameraInfo, self._relative_topic, self._store)

    def unsubscribe(self):
        if self.subscription is not None:
            self.subscription.destroy()
            self.subscription = None

    def _store(self, msg: CameraInfo):
        self._latest = msg
        if self._cache is not None:
            self._source.signalMessage(msg)

    def for_stamp(self, stamp) -> CameraInfo | None:
        if self._cache is None:
            return self._latest
        return self._cache.getElemBeforeTime(Time.from_msg(stamp)) or self._cache.getLast()


class Camera:
    """One camera of the node (module doc): topics, mailbox, worker thread, pipeline, statistics.
    Made by the node's configure step with its publishers (silent until a frame is processed) and its
    worker; activate() / deactivate() create and destroy its subscriptions and ~/new_keyframe service;
    close() ends the worker and destroys the publishers (cleanup)."""

    def __init__(self, node: 'SuperGlueNode', name: str, matcher: Matcher, policy: KeyframePolicy,
                 verification: Verification, keyframes: KeyframeStore, stereo: StereoVerification | None = None,
                 mask=None, right_mask=None):
        self.node, self.name = node, name
        prefix = f'{name}/' if name else ''
        self.pipeline = CameraPipeline(matcher, policy, verification, mask=mask, right_mask=right_mask, stereo=stereo,
                                       keyframes=keyframes)
        self.stats = Statistics()
        self.mailbox = Mailbox()
        self.lost = SequenceGaps()  # frames lost before _on_image
        self._keyframe = None  # (header, (image, color_order)) of the keyframe; worker thread only

        self.image_topic = self._image_topic(name)
        self.camera_info = CameraInfoSource(node, f'{prefix}camera_info')
        self._image_sub = self._new_keyframe_service = None  # while active
        self._publishers = []
        self._matches_pub = self._publisher(Matches, f'~/{prefix}matches', 10)
        self._keyframe_pub = self._publisher(Keyframe, f'~/{prefix}keyframe', 10)
        self._loop_candidates_pub = self._publisher(LoopCandidates, f'~/{prefix}loop_candidates', 10)
        self._match_image_pub = self._publisher(Image, f'~/{prefix}match_image', 1)
        self._features = self._features_pub = None
        self._said_uncalibrated = False  # publish_features without a calibration: said once
        self._said_model = ''            # the camera model last logged (_say_model)
        self.camera_info_problem = None  # why the last frame's camera_info was ignored (_camera_info_ignored)
        self._said_camera_info_at = -LOG_THROTTLE_S
        self._said_wrong_type = None     # the image topics' wrong publisher types last logged (diagnostics timer)
        if node.values['publish_features']:  # camera_id: the camera's place in `cameras` (0 left, 1 right)
            self._features = FeatureVelocity(node.values['cameras'].index(name))
            self._features_pub = self._publisher(PointCloud, f'~/{prefix}features', 10)
        self._worker = threading.Thread(target=self._work, name=f'superglue_{name or "camera"}', daemon=True)
        self._worker.start()

    def _publisher(self, msg_type, topic: str, depth: int):
        """A publisher of this camera's, destroyed by close()."""
        self._publishers.append(self.node.create_publisher(msg_type, topic, depth))
        return self._publishers[-1]

    def _image_topic(self, name: str) -> str:
        """The resolved topic of camera `name`'s images (image_input)."""
        return self.node.resolve_topic_name(image_input(self.node, name)[1])

    def _subscribe_image(self, name: str, callback, callback_group=None) -> AdaptiveSubscription:
        """The image subscription of camera `name` (image_input)."""
        _, topic, msg_type = image_input(self.node, name)
        return AdaptiveSubscription(self.node, msg_type, topic, callback, callback_group)

    def activate(self):
        """Frames are taken: the image and camera_info subscriptions and ~/new_keyframe."""
        self.mailbox.resume()
        self.camera_info.subscribe()
        # a callback group of its own: _on_image waits for the worker there, holding only this subscription
        self._image_sub = self._subscribe_image(self.name, self._on_image, MutuallyExclusiveCallbackGroup())
        self._new_keyframe_service = self.node.create_service(
            Trigger, f'~/{f"{self.name}/" if self.name else ""}new_keyframe', self._on_new_keyframe)

    def deactivate(self):
        """No frames taken: subscriptions and ~/new_keyframe destroyed, a frame waiting in the mailbox dropped
        (counted). A frame in progress is still published; the keyframes stay."""
        if self._image_sub is not None:
            self._image_sub.destroy()
            self.camera_info.unsubscribe()
            self.node.destroy_service(self._new_keyframe_service)
            self._image_sub = self._new_keyframe_service = None
        self.mailbox.pause()

    @property
    def status_name(self) -> str:
        """Its /diagnostics status name: the node's name, and the camera's."""
        return f'{self.node.get_name()}: {self.name}' if self.name else self.node.get_name()

    def stop(self, timeout_s: float | None) -> bool:
        """Closes the mailbox and waits up to timeout_s (None: as long as it takes) for the frame in progress
        to end; True while it is still running."""
        self.mailbox.close()
        self._worker.join(timeout_s)
        return self._worker.is_alive()

    def close(self):
        """Deactivated, the worker ended after the frame in progress (waited for) and the publishers
        destroyed: nothing refers to the pipeline, its keyframes and their device memory any more."""
        self.deactivate()
        self.stop(None)
        for publisher in self._publishers:
            self.node.destroy_publisher(publisher)
        self._publishers.clear()

    # -- executor threads -------------------------------------------------------------------------

    def _on_image(self, msg, info: dict):
        """Waits until the worker wants a frame, then drains the reader: the newest message goes to the
        mailbox, the others taken are counted as dropped, and gaps in their sequence numbers as lost
        (SequenceGaps). So a flood costs the executor one callback per processed frame, not one per
        message; the reader's keep-last history overwrites the rest meanwhile (README: Large images)."""
        if not self.mailbox.wait_wanted():  # closed, or paused (deactivate)
            return
        subscription = self._image_sub  # None after deactivate
        newest, infos = subscription.take() if subscription is not None else (None, [])
        infos.insert(0, info)
        self.lost.note(infos, self._image_publishers(self.image_topic))
        if newest is not None:
            msg, info = newest, infos[-1]
        camera_info = self.camera_info.for_stamp(msg.header.stamp)
        self.stats.image_received(camera_info is not None, len(infos))
        self.mailbox.put(Frame(msg, received_at(info), camera_info), replaced=len(infos) - 1)

    def _on_new_keyframe(self, request, response):
        self.pipeline.request_new_keyframe()
        response.success, response.message = True, 'the next processed frame becomes the keyframe'
        return response

    # -- worker thread ----------------------------------------------------------------------------

    def _work(self):
        logger = self.node.get_logger()
        try:
            while (frame := self.mailbox.take()) is not None:
                self.stats.frame_started()
                try:
                    self._process(frame)
                except (ImageConversionError, ImageError) as e:
                    kind = rejection_kind(frame.right.msg if isinstance(e, RightImageError) else frame.msg, e)
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
        finally:  # the worker is gone: a callback waiting for it (Mailbox.wait_wanted) returns
            self.mailbox.close()

    def _calibration(self, camera_info: CameraInfo | None, image_size: tuple[int, int]) -> Calibration | None:
        """The frame's calibration, or None: no camera_info, K all zero, or one that cannot be used
        (malformed, or of another image size after its ROI and binning: logged, throttled). A camera in
        rectified_cameras is projected by P, others undistorted with K and D (geometry.Calibration)."""
        problem = camera_info is not None and size_problem(camera_info, image_size, f'the images on {self.image_topic}')
        try:
            calibration = None if problem else Calibration.from_camera_info(
                camera_info, rectified=self.name in self.node.rectified_cameras)
        except ValueError as e:
            problem = str(e)
        self._camera_info_ignored(problem or None)
        if problem:
            return None
        self._say_model(calibration, camera_info)
        return calibration

    def _camera_info_ignored(self, problem: str | None):
        """Why the camera_info of the last frame was ignored (None: it was not), shown on /diagnostics; logged as
        an error each time it changes, and every LOG_THROTTLE_S seconds while it stays."""
        now = time.monotonic()
        if problem is not None and (problem != self.camera_info_problem or now - self._said_camera_info_at
                                    >= LOG_THROTTLE_S):
            self.node.get_logger().error(f'camera_info on {self.camera_info.topic} ignored: {problem}')
            self._said_camera_info_at = now
        self.camera_info_problem = problem

    def _say_model(self, calibration: Calibration | None, camera_info: CameraInfo | None):
        """Log which camera model maps this camera's pixels: once, and again when it changes."""
        if calibration is None:
            return
        how = reduction(camera_info)
        said = f"camera '{self.name}': {calibration.model}" + (f' ({how} of the camera_info applied)' if how else '')
        if said != self._said_model:
            self._said_model = said
            self.node.get_logger().info(said)

    def _process(self, frame: Frame):
        msg = frame.msg
        image = to_numpy(msg)
        right, stereo_geometry = self._stereo_inputs(frame, image)
        calibration = self._frame_calibration(frame, image, stereo_geometry)
        result = self.pipeline.process(image[0], stamp_to_seconds(msg.header.stamp), image[1], calibration,
                                       None if right is None else right[0], stereo_geometry, msg.header.frame_id)
        if self.pipeline.verification.method == 'essential' and result.verified_with == 'fundamental':
            self.node.get_logger().warn(
                f'geometric_verification is essential but a frame of {self.image_topic} has no calibration (no '
                f'camera_info on {self.camera_info.topic}, K all zero, or one ignored as logged): verified with '
                f'the fundamental matrix instead', throttle_duration_sec=LOG_THROTTLE_S)

        current = (msg.header, image)
        if result.keyframe_id == result.new_keyframe_id:  # nothing to match: first frame, frame_id change, time jump
            if result.keyframe_reason == 'frame_changed':
                self.node.get_logger().warn(
                    f"the frame_id of the images on {self.image_topic} changed from {self._keyframe[0].frame_id!r} "
                    f"to {msg.header.frame_id!r}: this frame is the new keyframe {result.keyframe_id} (its pixels do "
                    f"not compare with the old keyframe's); if two cameras publish there, give each its own topic")
            self._keyframe = current
            if result.keyframe_reason == 'time_jump':
                self.node.get_logger().warn(
                    f'image stamps on {self.image_topic} jumped back by more than time_jump_threshold_s (bag or '
                    f'camera restarted?): this frame is the new keyframe {result.keyframe_id}')
        keyframe_header, keyframe_image = self._keyframe

        latency_ms = (time.monotonic() - frame.received) * 1e3
        self._matches_pub.publish(matches_message(result, self.name, msg.header, keyframe_header, frame.camera_info,
                                                  latency_ms, self.mailbox.dropped))
        if self._features is not None:
            self._publish_features(result, calibration, msg.header)
        if result.is_new_keyframe:
            self.pipeline.keyframes.set_header(result.new_keyframe_id, msg.header)
            self._keyframe_pub.publish(keyframe_message(result, self.name, msg.header,
                                                        (image[0].shape[1], image[0].shape[0]), frame.camera_info))
            self._loop_candidates_pub.publish(loop_candidates_message(result.loop_candidates, self.name, msg.header))
        if self._match_image_pub.get_subscription_count() > 0:
            picture = match_picture(keyframe_image, image, result, self.node.values['match_image_max_lines'],
                                    [f'Keyframe {result.keyframe_id}, frame {result.frame_index}',
                                     f'Latency {latency_ms:.0f} ms'])
            self._match_image_pub.publish(numpy_to_image_msg(picture, 'bgr8', header=msg.header))
        if result.is_new_keyframe:
            self._keyframe = current
        if result.stereo is not None:
            self._publish_stereo(frame, image, right, result, latency_ms)
        self.stats.frame_processed(latency_ms, result.timings_ms['total'], result.frame_keypoint_count,
                                   len(result.confidence), result.keyframe_id)

    def _publish_features(self, result, calibration: Calibration | None, header):
        """~/features of this frame (features.py); without a calibration nothing, said once."""
        features = self._features.features(result, calibration)
        if features is not None:
            self._features_pub.publish(features_message(header, [features, *self._other_features(result, features)]))
        elif not self._said_uncalibrated:
            self._said_uncalibrated = True
            self.node.get_logger().warn(
                f'publish_features: no calibration for {self.image_topic} (no camera_info on {self.camera_info.topic}, '
                f'K all zero, or one ignored as logged): ~/features needs normalised points, nothing is published '
                f'on {self._features_pub.topic_name} until a calibrated camera_info arrives')

    def _frame_calibration(self, frame: Frame, image, stereo_geometry) -> Calibration | None:
        """The calibration the frame's points are normalised with (Matches, the pose, ~/features)."""
        return self._calibration(frame.camera_info, (image[0].shape[1], image[0].shape[0]))

    def _stereo_inputs(self, frame: Frame, image) -> tuple:
        """((right image, color_order), StereoGeometry or None) of a rig's pair; a lone camera has none."""
        return None, None

    def _other_features(self, result, features) -> list:
        """The TrackedFeatures of other cameras published with this camera's `features` (a rig's right one)."""
        return []

    def _publish_stereo(self, frame: Frame, image, right, result, latency_ms: float):
        """A rig publishes its pair's StereoMatches and picture (Rig)."""

    def _image_topics(self) -> list[tuple[str, str]]:
        """(camera name, resolved image topic) of each image subscription: a rig adds its right camera's."""
        return [(self.name, self.image_topic)]

    def _image_type(self) -> str:
        """The type this camera subscribes, as the ROS graph names it (image_transport)."""
        return COMPRESSED_TYPE if self.node.values['image_transport'] == 'compressed' else IMAGE_TYPE

    def _image_publishers(self, topic: str) -> int:
        """Publishers of `topic` of the type subscribed (SequenceGaps: those of another type deliver nothing)."""
        return sum(p.topic_type == self._image_type() for p in self.node.get_publishers_info_by_topic(topic))

    def _check_topic_types(self) -> str | None:
        """What wrong_topic_type() says of the image topics' publishers (diagnostics timer), logged as a warning
        once each time it changes; None when their types fit."""
        expected = self._image_type()
        problems = []
        for camera, topic in self._image_topics():
            types = [p.topic_type for p in self.node.get_publishers_info_by_topic(topic)]
            base = topic.removesuffix('/compressed')
            base_types = ([p.topic_type for p in self.node.get_publishers_info_by_topic(base)]
                          if expected == COMPRESSED_TYPE and not types and base != topic else ())
            problems.append(wrong_topic_type(topic, expected, types, image_input(self.node, camera)[0], base_types))
        problem = '; '.join(p for p in problems if p) or None
        if problem is not None and problem != self._said_wrong_type:
            self.node.get_logger().warn(problem)
        self._said_wrong_type = problem
        return problem

    def diagnostics(self, device: str) -> DiagnosticStatus:
        status = diagnostic_status(self.stats.report(), self.status_name, self.image_topic, self.camera_info.topic,
                                   device, self.mailbox.dropped, self._check_topic_types())
        status.values += [KeyValue(key=k, value=v) for k, v in self.lost.figures().items()]
        status.values.append(KeyValue(key='camera_info ignored', value=self.camera_info_problem or 'no'))
        if self.camera_info_problem is not None and status.level == DiagnosticStatus.OK:
            status.level = DiagnosticStatus.WARN
            status.message = f'camera_info ignored: {self.camera_info_problem}'
        keyframes = self.pipeline.keyframes
        status.values += [KeyValue(key='keyframes stored', value=str(len(keyframes))),
                          KeyValue(key='keyframes evicted', value=str(keyframes.evicted)),
                          KeyValue(key='keyframe store memory (bytes)', value=str(keyframes.memory_bytes()))]
        return status


def image_input(node: Node, camera: str) -> tuple[str, str, type]:
    """(relative topic, topic subscribed, message type) of camera `camera`'s images: the relative topic that
    users remap is image (left/image, ...); it is subscribed as sensor_msgs/Image, or with image_transport
    compressed the resolved topic + /compressed as sensor_msgs/CompressedImage (as image_transport names it)."""
    relative = f'{camera}/image' if camera else 'image'
    if node.values['image_transport'] == 'compressed':
        return relative, node.resolve_topic_name(relative) + '/compressed', CompressedImage
    return relative, relative, Image


def received_at(info: dict) -> float:
    """time.monotonic() of a message's receipt by the DDS reader, from its message info's received_timestamp
    (system clock, ns); now where the RMW gives none. A message may wait in the reader while the worker is
    busy: its latency counts from here."""
    now = time.monotonic()
    received_ns = info.get('received_timestamp', 0)
    return now - max(0.0, (time.time_ns() - received_ns) * 1e-9) if received_ns else now


def executor_threads(values: dict) -> int:
    """Threads of the node's executor for parameter values `values`: two for the services, timers and
    camera_info, and one for each single camera, whose image callback waits for its worker (Camera._on_image).
    A stereo rig's callbacks do not wait. ValueError as settings.stereo_pairs_of."""
    rigs = stereo_pairs_of(values['stereo_pairs'], values['cameras'])
    return 2 + len(values['cameras']) - 2 * len(rigs)


def to_numpy(msg) -> tuple:
    """(array, color_order) of a sensor_msgs/Image or CompressedImage (ros/image_conversion.py)."""
    return compressed_msg_to_numpy(msg) if isinstance(msg, CompressedImage) else image_msg_to_numpy(msg)


class Rig(Camera):
    """A stereo pair `left:right` (module doc): the left camera's Camera (its topics, pipeline, keyframe,
    mailbox, now of pairs) with the right camera's image and camera_info subscriptions, the pairing by
    stamp, and ~/<left>_<right>/stereo_matches and ~/<left>_<right>/match_image."""

    def __init__(self, node: 'SuperGlueNode', left: str, right: str, matcher: Matcher, policy: KeyframePolicy,
                 verification: Verification, keyframes: KeyframeStore, stereo: StereoVerification, mask=None,
                 right_mask=None):
        self.right_name, self.rig_name = right, f'{left}_{right}'.replace('/', '_')
        tolerance_s = node.values['stereo_sync_tolerance_s']
        self.pairer = StampPairer(tolerance_s)  # without message_filters
        self._pair_lock = threading.Lock()      # the two image callbacks may run on two executor threads
        self._received = [0, 0]                 # images per side (message_filters keeps no unpaired count)
        self._pairs = 0
        self.right_lost = SequenceGaps()        # right images lost before _on_right_image
        self._synchronizer = None
        if message_filters is not None:
            self._sources = (message_filters.SimpleFilter(), message_filters.SimpleFilter())
            self._synchronizer = (
                message_filters.ApproximateTimeSynchronizer(self._sources, PAIR_QUEUE_SIZE, tolerance_s)
                if tolerance_s > 0 else message_filters.TimeSynchronizer(self._sources, PAIR_QUEUE_SIZE))
            self._synchronizer.registerCallback(self._on_pair)
        super().__init__(node, left, matcher, policy, verification, keyframes, stereo, mask, right_mask)
        self.right_camera_info = CameraInfoSource(node, f'{right}/camera_info')
        self._right_sub = None  # while active
        self.right_image_topic = self._image_topic(right)
        if self._features is not None:  # one ~/<left>/features message per pair: camera_id 0 and 1 (VINS-Fusion stereo)
            self._right_features = FeatureVelocity(node.values['cameras'].index(right))
        self._stereo_pub = self._publisher(StereoMatches, f'~/{self.rig_name}/stereo_matches', 10)
        self._stereo_image_pub = self._publisher(Image, f'~/{self.rig_name}/match_image', 1)

    def activate(self):
        super().activate()
        self.right_camera_info.subscribe()
        self._right_sub = self._subscribe_image(self.right_name, self._on_right_image)

    def deactivate(self):
        if self._right_sub is not None:
            self._right_sub.destroy()
            self.right_camera_info.unsubscribe()
            self._right_sub = None
        super().deactivate()

    @property
    def status_name(self) -> str:
        return f'{self.node.get_name()}: {self.name} | {self.right_name}'

    def _image_topics(self) -> list[tuple[str, str]]:
        return [*super()._image_topics(), (self.right_name, self.right_image_topic)]

    @property
    def unpaired(self) -> int:
        """Images of either side dropped without a partner (with message_filters: images not paired, including
        the few still waiting in its queues)."""
        with self._pair_lock:
            if self._synchronizer is None:
                return sum(self.pairer.unpaired)
            return sum(self._received) - 2 * self._pairs

    # -- executor threads: pairing ----------------------------------------------------------------

    # A rig's callbacks take each message as it comes (they do not wait for the worker as Camera._on_image):
    # pairing needs both sides' stamps. So a flood of small images costs a rig a callback per message
    # (README: Large images over Fast DDS).

    def _on_image(self, msg, info: dict):
        self.lost.note([info], self._image_publishers(self.image_topic))
        self._offer(LEFT, msg, self.camera_info)

    def _on_right_image(self, msg, info: dict):
        self.right_lost.note([info], self._image_publishers(self.right_image_topic))
        self._offer(RIGHT, msg, self.right_camera_info)

    def _offer(self, side: int, msg, camera_info: CameraInfoSource):
        info = camera_info.for_stamp(msg.header.stamp)
        if side == LEFT:
            self.stats.image_received(info is not None)
        frame = Frame(msg, time.monotonic(), info)
        with self._pair_lock:
            self._received[side] += 1
            if self._synchronizer is not None:
                self._sources[side].signalMessage(frame)  # calls _on_pair when it completes a pair
                return
            for left, right in self.pairer.add(side, stamp_ns(msg.header.stamp.sec, msg.header.stamp.nanosec), frame):
                self._on_pair(left, right)

    def _on_pair(self, left: Frame, right: Frame):
        """A left and a right image of one stamp (under _pair_lock): into the mailbox as one frame."""
        self._pairs += 1
        left.right = right
        self.mailbox.put(left)

    # -- worker thread ----------------------------------------------------------------------------

    def _stereo_inputs(self, frame: Frame, image) -> tuple:
        try:
            right = to_numpy(frame.right.msg)
        except ImageConversionError as e:
            raise RightImageError(f'right image on {self.right_image_topic}: {e}') from None
        if right[1] != image[1]:
            raise ImageError(f'the right image on {self.right_image_topic} has channel order {right[1]}, the left '
                             f'one {image[1]}: publish both cameras with one encoding')
        ignored = False
        try:
            for info, array, topic, image_topic in (
                    (frame.camera_info, image[0], self.camera_info.topic, self.image_topic),
                    (frame.right.camera_info, right[0], self.right_camera_info.topic, self.right_image_topic)):
                problem = info is not None and size_problem(info, (array.shape[1], array.shape[0]),
                                                            f'the images on {image_topic}')
                if problem:
                    raise ValueError(f'the camera_info on {topic} {problem.removeprefix("it ")}')
            geometry = StereoGeometry.from_camera_infos(frame.camera_info, frame.right.camera_info,
                                                        rectified=self.name in self.node.rectified_cameras)
        except ValueError as e:
            geometry, ignored = None, True
            self.node.get_logger().error(f'camera_infos of {self.rig_name} ignored: {e}',
                                         throttle_duration_sec=LOG_THROTTLE_S)
        why = self.pipeline.stereo.not_rectified_because(geometry)
        if why is not None:
            advice = 'check the stereo calibration'
            missing = [topic for info, topic in ((frame.camera_info, self.camera_info.topic),
                                                 (frame.right.camera_info, self.right_camera_info.topic)) if info is None]
            if geometry is None and not ignored:
                why = (f"no camera_info received on {' and '.join(missing)}" if missing
                       else 'a camera_info has no P (all zero): the rig is not calibrated')
                advice = 'publish both camera_infos with the stereo calibration (P; the right Tx = -fx * B)'
            elif geometry is not None and geometry.baseline_m > 0:  # R is not the identity
                advice = (f"for rectified images (image_rect) list both in rectified_cameras: ['{self.name}', "
                          f"'{self.right_name}']")
            self.node.get_logger().warn(
                f'stereo pair {self.rig_name} is not known to be rectified ({why}): left-right matches verified '
                f'with the fundamental matrix, no depth; {advice}', throttle_duration_sec=LOG_THROTTLE_S)
        return right, geometry

    def _frame_calibration(self, frame: Frame, image, stereo_geometry) -> Calibration | None:
        """A rectified pair's left image is projected by the left P, not by the camera_info's K and D (those
        of the raw camera, with image_rect): its keyframe matches, pose and features use P, as the depth does."""
        if self.pipeline.stereo.is_rectified(stereo_geometry):
            calibration = stereo_geometry.calibration(LEFT)
            self._say_model(calibration, frame.camera_info)
            return calibration
        return super()._frame_calibration(frame, image, stereo_geometry)

    def _other_features(self, result, features) -> list:
        """The right image's features of the pair: its left-right inliers whose left keypoint is among the left
        `features` (same track id), points normalised with the right P; none without a stereo calibration."""
        stereo = result.stereo
        if stereo is None or not len(stereo.correspondences.normalized1):
            return []
        c = stereo.correspondences
        tracked = (stereo.track_ids != NO_TRACK) & np.isin(stereo.track_ids, features.track_ids)
        return [self._right_features.track(result.stamp_s, stereo.track_ids[tracked], c.points1[tracked],
                                           c.normalized1[tracked])]

    def _publish_stereo(self, frame: Frame, image, right, result, latency_ms: float):
        self._stereo_pub.publish(stereo_matches_message(result, self.name, self.right_name, frame.msg.header,
                                                        frame.right.msg.header, latency_ms, self.mailbox.dropped,
                                                        self.unpaired))
        if self._stereo_image_pub.get_subscription_count() > 0:
            inliers = int(result.stereo.correspondences.kept().sum())
            picture = stereo_picture(image, right, result, self.node.values['match_image_max_lines'],
                                     [f'{self.name} | {self.right_name}: {inliers} inliers '
                                      f'({result.stereo.correspondences.verified_with})'])
            self._stereo_image_pub.publish(numpy_to_image_msg(picture, 'bgr8', header=frame.msg.header))

    def diagnostics(self, device: str) -> DiagnosticStatus:
        status = super().diagnostics(device)
        with self._pair_lock:
            received, pairs = list(self._received), self._pairs
        figures = {'right image topic': self.right_image_topic, 'images received (left, right)': str(received),
                   **{f'right {k}': v for k, v in self.right_lost.figures().items()},
                   'pairs': str(pairs), 'unpaired images': str(self.unpaired),
                   'pairing': 'message_filters' if self._synchronizer is not None else 'stereo.StampPairer',
                   'stereo_sync_tolerance_s': str(self.node.values['stereo_sync_tolerance_s'])}
        status.values.extend(KeyValue(key=k, value=v) for k, v in figures.items())
        if status.level == DiagnosticStatus.OK and min(received) > 0 and pairs == 0:
            status.level = DiagnosticStatus.WARN
            status.message = (f'images arrive on {self.image_topic} and {self.right_image_topic} but none pair: their '
                              'stamps differ; raise stereo_sync_tolerance_s for software-synchronised cameras')
        return status


class SuperGlueNode(LifecycleNode):
    """The node (module doc), a managed (lifecycle) node.

    managed=False, the plain node: the constructor configures and activates it, and raises
    parameters.ParameterError, WeightsError, ExportError or RuntimeUnavailable (with what to do) when it
    cannot start; it offers no lifecycle services. managed=True: it starts unconfigured and lifecycle_msgs'
    ChangeState drives it (README: Managed (lifecycle) node): configure checks the parameters together,
    loads the weights and makes the cameras with their publishers; activate creates the subscriptions,
    services and the diagnostics timer; deactivate destroys them (weights and keyframes kept); cleanup and
    shutdown release the cameras and the weights. A failed transition logs one line and returns FAILURE:
    the node stays where it was. Parameter overrides are checked at construction in both modes.
    """

    def __init__(self, managed: bool = False, **node_options):
        super().__init__(NODE_NAME, enable_communication_interface=managed, **node_options)
        self.managed = managed
        self.values = parameters.declare(self, managed)
        for name, close in parameters.unknown_overrides(self).items():
            self.get_logger().warn(f"parameter '{name}' ignored: this node has no such parameter"
                                   + (f"; did you mean '{close[0]}'?" if close else '')
                                   + ' (a params file or -p sets it)')
        self.matcher, self.cameras = None, []  # from configure to cleanup
        self._shared_services, self._diagnostics_pub, self._diagnostics_timer = [], None, None  # while active
        self._failure = None                   # the error of the last failed transition
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

        self._service_lock = threading.Lock()
        self._service_counts = {service: {'requests': 0, 'failures': 0, 'last failure': ''}
                                for service in ('match_images', 'match_keyframes')}
        self._running = Counter()              # service calls and transitions in progress, by what they are
        self._served = threading.Condition()
        if managed:
            self._service_change_state.callback = self._guarded(self._service_change_state.callback)
        if not managed:
            for transition in (self.trigger_configure, self.trigger_activate):
                transition()
                if self._failure is not None:
                    raise self._failure

    # -- lifecycle transitions (rclpy.lifecycle calls them on an executor thread) -------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        return self._transition('configure', self._configure, undo=self._release)

    def on_activate(self, state) -> TransitionCallbackReturn:
        return self._transition('activate', self._activate, undo=self._deactivate)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        return self._transition('deactivate', self._deactivate)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        return self._transition('cleanup', self._release)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        return self._transition('shutdown', self._release)

    def _guarded(self, serve):
        """rclpy's ~/change_state handler `serve`, answering a transition that the current state does not have
        with success=false and one warning line: rclpy (Jazzy) raises out of the service there, and the executor
        with it (ros2/rclpy#1209), so a lifecycle manager's call out of order would stop the node."""
        def change_state(request, response):
            transition = request.transition
            state = self._state_machine.current_state[1]
            available = {label: number for number, label, *_ in self._state_machine.available_transitions}
            if (transition.label or transition.id) not in (available if transition.label else available.values()):
                self.get_logger().warn(
                    f'transition {transition.label or transition.id} refused: the node is {state}, where the '
                    f'transitions are {", ".join(f"{label} ({number})" for label, number in available.items())}')
                response.success = False
                return response
            return serve(request, response)
        return change_state

    def _transition(self, name: str, step, undo=None) -> TransitionCallbackReturn:
        """SUCCESS when step() returns; when it raises, undo() and FAILURE (the state stays as it was), with
        one error line saying why (managed) or the error kept for the constructor to raise (plain)."""
        with self._doing(f'the {name} transition'):
            try:
                step()
                return TransitionCallbackReturn.SUCCESS
            except Exception as e:
                self._failure = e
                if undo is not None:
                    undo()
                if self.managed:
                    reason = str(e) if isinstance(e, START_ERRORS) else f'{type(e).__name__}: {e}'
                    self.get_logger().error(f'{name} failed: {reason}')
                return TransitionCallbackReturn.FAILURE

    def _configure(self):
        """The parameters checked together (masks, stereo pairs, the models' settings), the weights loaded onto
        the device, the cameras made (pipelines, keyframe stores, workers and publishers)."""
        v = self.values
        masks = self._read_masks()  # before the slow part: a bad mask fails at once
        rigs = dict(stereo_pairs_of(v['stereo_pairs'], v['cameras']))  # left -> right; ValueError: before the weights
        self.rectified_cameras = rectified_cameras_of(v['rectified_cameras'], v['cameras'], rigs.items())
        self.matcher = Matcher.from_weights(
            v['superpoint_weights'], v['superglue_weights'], device=v['device'], resize=v['resize'],
            precision=v['precision'], backend=v['backend'], log=self.get_logger().info,
            static_shapes=v['static_shapes'],
            **{name: v[name] for name in Matcher.MODEL_SETTINGS})
        self.verification = Verification.from_settings(v)
        self.stereo = StereoVerification.from_settings(v)
        policy, loop = KeyframePolicy.from_settings(v), LoopPolicy.from_settings(v)

        def store():
            return KeyframeStore(v['keyframe_store_size'], loop)

        for name in v['cameras']:
            if name not in rigs.values():
                self.cameras.append(
                    Rig(self, name, rigs[name], self.matcher, policy, self.verification, store(), self.stereo,
                        masks.get(name), masks.get(rigs[name]))
                    if name in rigs else Camera(self, name, self.matcher, policy, self.verification, store(),
                                                mask=masks.get(name)))

        logger = self.get_logger()
        topics = ', '.join(f'{camera.image_topic} | {camera.right_image_topic} (stereo)' if isinstance(camera, Rig)
                           else camera.image_topic for camera in self.cameras)
        logger.info(f'matching {topics} on {self.matcher.device} (superglue_weights={v["superglue_weights"]!r}, '
                    f'superpoint_weights={v["superpoint_weights"] or "from superglue_weights"!r}, '
                    f'resize={self.matcher.resize}, precision={self.matcher.precision}, backend={self.matcher.backend}'
                    + (f' (auto: {self.matcher.backend_why})' if v['backend'] == 'auto' else '')
                    + (', static_shapes' if self.matcher.static_shapes else '')
                    + (f' ({self.matcher.runtime.directory})' if self.matcher.runtime else '')
                    + f', {self.matcher.settings})')
        if message_filters is None:
            logger.info('message_filters is not installed: Matches.camera_info is the latest camera_info '
                        'received, not the one with the image stamp')
        self._warn_shared_image_topics()

    def _warn_shared_image_topics(self):
        """Start-up: cameras whose image topics resolve to one topic would each process every frame of it (twice
        or more, as separate cameras): one warning per such topic, naming the cameras and the remapping."""
        cameras_of = {}
        for camera in self.values['cameras']:
            relative, topic, _ = image_input(self, camera)
            cameras_of.setdefault(self.resolve_topic_name(topic), []).append((camera, relative))
        for topic, cameras in cameras_of.items():
            if len(cameras) > 1:
                self.get_logger().warn(
                    f"cameras {', '.join(repr(camera) for camera, _ in cameras)} all subscribe {topic}: each of its "
                    f"images goes to every one of them (processed {len(cameras)} times, or paired with itself in a "
                    f"stereo rig); give each camera its own topic "
                    f"({', '.join(f'{relative}:=<topic>' for _, relative in cameras)})")

    def _activate(self):
        """Subscriptions, services and the /diagnostics publisher and timer created: frames are taken."""
        for camera in self.cameras:
            camera.activate()
        services = MutuallyExclusiveCallbackGroup()  # they wait for the models: not on the image path
        self._shared_services = [
            self.create_service(MatchImages, '~/match_images',
                                self._counted('a ~/match_images call', self._on_match_images), callback_group=services),
            self.create_service(MatchKeyframes, '~/match_keyframes',
                                self._counted('a ~/match_keyframes call', self._on_match_keyframes),
                                callback_group=services)]
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics,
                                                    clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _deactivate(self):
        """What _activate created destroyed: no frame taken (Camera.deactivate), no service call answered."""
        for camera in self.cameras:
            camera.deactivate()
        while self._shared_services:
            self.destroy_service(self._shared_services.pop())
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_timer = self._diagnostics_pub = None

    def _release(self):
        """Cleanup and shutdown: deactivated, the cameras closed (each after its frame in progress: keyframes and
        pipelines go) and the weights dropped, with the device memory they held; the parameters stay."""
        self._deactivate()
        while self.cameras:
            self.cameras.pop().close()
        if self.matcher is not None:
            self.matcher, device = None, self.matcher.device
            release_device_memory(device)

    def stop(self, grace_s: float) -> list[str]:
        """SIGINT / SIGTERM (main): no frame is taken any more (the mailboxes close), and the frames, service
        calls and transitions in progress get up to grace_s seconds to end. What is still running then, e.g.
        ['a frame of /camera/image', 'a ~/match_images call']: main exits without it."""
        deadline = time.monotonic() + grace_s
        cameras = list(self.cameras)
        for camera in cameras:
            camera.mailbox.close()
        running = [f'a frame of {camera.image_topic}' for camera in cameras
                   if camera.stop(max(0.0, deadline - time.monotonic()))]
        with self._served:
            self._served.wait_for(lambda: not +self._running, timeout=max(0.0, deadline - time.monotonic()))
            return running + list((+self._running).elements())

    @contextmanager
    def _doing(self, what: str):
        """`what` counted as running while the block runs: stop() waits for it, then names it."""
        with self._served:
            self._running[what] += 1
        try:
            yield
        finally:
            with self._served:
                self._running[what] -= 1
                self._served.notify_all()

    def _read_masks(self) -> dict:
        """{camera: [H, W] bool} of the masks parameter; ValueError (one line) for a camera not in cameras or
        a file that is not a readable mono8 image. The image size is checked against each frame (unknown
        before the first one): a frame of another size is skipped with a throttled error."""
        masks = {}
        for camera, path in mask_paths(self.values['masks']).items():
            if camera not in self.values['cameras']:
                raise parameters.ParameterError(
                    f"masks: {'the unnamed camera' if not camera else repr(camera)} is not in cameras "
                    f"{self.values['cameras']}: prefix each path with its camera's name, e.g. 'left:/path/left.png'")
            masks[camera] = read_mask(path)
            self.get_logger().info(f"detection mask of camera {camera!r}: {path} ({masks[camera].shape[1]}x"
                                   f"{masks[camera].shape[0]}, {1 - masks[camera].mean():.0%} masked)")
        return masks

    @property
    def dropped_frames(self) -> int:
        """Frames replaced by a newer one before a worker took them, all cameras, since start."""
        return sum(camera.mailbox.dropped for camera in self.cameras)

    def _counted(self, what: str, handler):
        """`handler` counted in _running (as `what`) while it runs."""
        def serve(request, response):
            with self._doing(what):
                return handler(request, response)
        return serve

    def destroy_node(self):
        self._release()
        super().destroy_node()

    # -- parameters: on-set validates (settings.check), post-set applies (as ros2/demos) ----------

    def _validate_parameters(self, changed) -> SetParametersResult:
        """On-set step: each value (parameters.validate); once configured, no start-up setting (the managed
        node takes them while unconfigured; the plain node's are read-only) and what the Matcher refuses of the
        values together with its start-up settings (Matcher.check_settings: static_shapes' rules)."""
        result = parameters.validate(changed)
        start_up = [p.name for p in changed if p.name in SETTINGS and not SETTINGS[p.name].live]
        if result.successful and start_up and self.matcher is not None:  # the managed node, configured
            return SetParametersResult(successful=False, reason=(
                f'{", ".join(start_up)}: start-up settings, taken while the node is unconfigured: cleanup, set '
                'them, then configure'))
        if result.successful and self.matcher is not None:
            model = {name: value for name, value in parameters.changes(changed).items() if name in Matcher.MODEL_SETTINGS}
            try:
                self.matcher.check_settings(**model)
            except ValueError as e:
                return SetParametersResult(successful=False, reason=str(e))
        return result

    def _after_set_parameters(self, changed):
        values = parameters.changes(changed)  # checked by parameters.validate
        if not values:
            return
        self.values.update(values)
        model = {name: value for name, value in values.items() if name in Matcher.MODEL_SETTINGS}
        if model and self.matcher is not None:  # unconfigured: configure reads self.values
            self.matcher.configure(**model)
        if set(values) & set(names('verification')):
            self.verification = Verification.from_settings(self.values)
        self.stereo = StereoVerification.from_settings(self.values)
        policy, loop = KeyframePolicy.from_settings(self.values), LoopPolicy.from_settings(self.values)
        for camera in self.cameras:
            camera.pipeline.policy, camera.pipeline.verification = policy, self.verification
            camera.pipeline.stereo = self.stereo
            camera.pipeline.keyframes.policy = loop
        self.get_logger().info(f'parameters changed: {values}')

    # -- shared service ---------------------------------------------------------------------------

    def _service_failed(self, service: str, error: Exception, expected: bool, response, doing: str):
        """Count a failed request of `service` and answer it with one line (success=false); an unexpected
        error is also logged, with its type."""
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)  # no repr quotes
        reason = message if expected else f'{type(error).__name__}: {message}'
        with self._service_lock:
            counts = self._service_counts[service]
            counts['failures'] += 1
            counts['last failure'] = reason
            counts['requests'] += 1
        if not expected:
            self.get_logger().error(f'~/{service} failed: {reason}', throttle_duration_sec=LOG_THROTTLE_S)
        response.success, response.message = False, f'{doing}: {reason}'
        return response

    def _service_answered(self, service: str):
        with self._service_lock:
            self._service_counts[service]['requests'] += 1

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
            return self._service_failed('match_images', e, isinstance(e, (ImageConversionError, ImageError,
                                                                          ResourceError)),
                                        response, 'cannot match these images')
        self._service_answered('match_images')
        fill_match_images_response(pair, response)
        response.success = True
        response.message = f'{len(pair.correspondences.confidence)} matches in {pair.timings_ms["total"]:.0f} ms'
        return response

    def _on_match_keyframes(self, request, response):
        """Two stored keyframes of a camera matched on their stored features (pipeline.match_keyframes): the
        camera threads go on meanwhile, sharing the models (no lock is held during SuperGlue)."""
        doing = f'cannot match keyframes {request.keyframe_id0} and {request.keyframe_id1} of camera {request.camera!r}'
        try:
            camera = next((c for c in self.cameras if c.name == request.camera), None)
            rig = next((c for c in self.cameras if isinstance(c, Rig) and c.right_name == request.camera), None)
            if rig is not None:
                raise KeyError(f"camera {request.camera!r} is the right camera of the stereo rig "
                               f"'{rig.name}:{rig.right_name}', which keeps its keyframes under its left camera: "
                               f"ask for camera {rig.name!r}")
            if camera is None:
                raise KeyError(f"this node has no camera {request.camera!r}; its cameras with keyframes: "
                               f"{', '.join(repr(c.name) for c in self.cameras)}")
            keyframes = camera.pipeline.keyframes
            result = match_keyframes(self.matcher, keyframes, request.keyframe_id0, request.keyframe_id1,
                                     self.verification)
            headers = keyframes.header(request.keyframe_id0), keyframes.header(request.keyframe_id1)
        except Exception as e:  # unknown ids and cameras, ResourceError, anything unexpected: an answer
            expected = isinstance(e, (KeyError, ResourceError))
            return self._service_failed('match_keyframes', e, expected, response, doing)
        self._service_answered('match_keyframes')
        fill_match_keyframes_response(result, headers, response)
        response.success = True
        response.message = (f'{len(result.pair.correspondences.confidence)} matches in '
                            f'{result.pair.timings_ms["total"]:.0f} ms')
        return response

    def _publish_diagnostics(self):
        device = str(self.matcher.device)
        statuses = [camera.diagnostics(device) for camera in self.cameras]
        with self._service_lock:
            all_counts = {service: dict(counts) for service, counts in self._service_counts.items()}
        for service, counts in all_counts.items():
            level = DiagnosticStatus.WARN if counts['failures'] else DiagnosticStatus.OK
            message = (f'{counts["failures"]} of {counts["requests"]} requests failed, last: {counts["last failure"]}'
                       if counts['failures'] else f'{counts["requests"]} requests answered')
            statuses.append(DiagnosticStatus(level=level, name=f'{self.get_name()}: {service}', message=message,
                                             hardware_id=device,
                                             values=[KeyValue(key=k, value=str(v)) for k, v in counts.items()]))
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diagnostics_pub.publish(DiagnosticArray(header=header, status=statuses))


class StopSignals:
    """SIGINT and SIGTERM, as ros2 launch sends them (SIGINT, SIGTERM 5 s later, SIGKILL 5 s after that) and
    Ctrl-C. Installed in place of rclpy's handlers (rclpy.init with SignalHandlerOptions.NO), which shut the
    context down under running callbacks. Until `running` is set a signal ends the start at once
    (KeyboardInterrupt, in the main thread); after, it is noted in `received` (its name) for main to stop
    the node."""

    def __init__(self):
        self.received = None
        self.running = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.received = self.received or signal.Signals(signum).name
        if not self.running:
            raise KeyboardInterrupt


def main(args=None) -> int:
    """The node until SIGINT or SIGTERM (exit 0 within STOP_GRACE_S and a moment, README: Shutdown), or one
    FATAL line and exit code 1 when it cannot start. `--lifecycle` before --ros-args: the managed node
    (SuperGlueNode(managed=True), executable superglue_lifecycle_node)."""
    signals = StopSignals()
    logger = rclpy.logging.get_logger(NODE_NAME)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except (RCLError, UnknownROSArgsError) as e:  # a --params-file that does not exist or does not parse, a
        reason = ' '.join(str(e).split())            # malformed remap rule, an option --ros-args does not know
        if isinstance(e, UnknownROSArgsError):
            reason = f"unknown option(s) {reason}: --ros-args takes -p, -r, --params-file, --log-level and the like"
        logger.fatal(f'cannot start: bad --ros-args: {reason}')
        return 1
    except KeyboardInterrupt:
        return 0
    try:
        node = SuperGlueNode(managed='--lifecycle' in remove_ros_args(sys.argv if args is None else args)[1:])
    except START_ERRORS as e:
        logger.fatal(f'cannot start: {e}')
        rclpy.try_shutdown()
        return 1
    except KeyboardInterrupt:  # a signal while the models were loading
        rclpy.try_shutdown()
        return 0
    executor = MultiThreadedExecutor(num_threads=executor_threads(node.values))
    executor.add_node(node)
    failure = []
    spinning = threading.Thread(target=spin, args=(executor, failure), name='executor', daemon=True)
    signals.running = True
    spinning.start()
    while signals.received is None and spinning.is_alive():
        time.sleep(0.1)  # the signal handler runs in this (the main) thread
    if failure:  # a callback raised: as rclpy's spin in the main thread would, with its traceback
        raise failure[0]
    abandoned = node.stop(STOP_GRACE_S)
    if abandoned:
        # Threads inside torch or onnxruntime cannot be interrupted, and the interpreter's exit would wait for a
        # service callback on the executor's thread: exit without them, the logs flushed (rclpy's shutdown
        # closes the log files; C stdio buffers; Python's own streams).
        logger.warn(f'{signals.received}: exiting without waiting for {", ".join(abandoned)}: dropped unfinished')
        rclpy.try_shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        ctypes.CDLL(None).fflush(None)
        os._exit(0)
    executor.shutdown()
    spinning.join()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def spin(executor, failure: list):
    """executor.spin() on its own thread (main); an exception it raises is appended to `failure`."""
    try:
        executor.spin()
    except ExternalShutdownException:
        pass
    except Exception as e:
        failure.append(e)


if __name__ == '__main__':
    sys.exit(main())
