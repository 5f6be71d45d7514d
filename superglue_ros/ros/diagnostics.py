"""The node's statistics and its /diagnostics status.

Statistics is updated from the subscription callback and the worker thread; the 1 Hz diagnostics
timer takes a Report (a copy, which also starts the next window of rates and latencies) and
diagnostic_status() turns it into a DiagnosticStatus whose message says what to do when something
is wrong.
"""
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage

from ..image import MIN_SIZE
from .image_conversion import ImageConversionError, compressed_format, layout

STALE_AFTER_S = 3.0     # no image for this long: WARN
LOG_EVERY_S = 10.0      # at most one error log per kind of rejected image in this period
IMAGE_TYPE, COMPRESSED_TYPE = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'  # as the graph names them


def rejection_kind(msg, error: Exception) -> str:
    """Short name of why an image message was rejected: the throttling key and diagnostics counter."""
    if isinstance(msg, CompressedImage):  # no size fields: its format, else its data, was the problem
        if not isinstance(error, ImageConversionError):
            return 'unusable_image'
        try:
            compressed_format(msg.format)
        except ImageConversionError:
            return 'unsupported_format'
        return 'undecodable'
    if isinstance(error, ImageConversionError):
        if layout(msg.encoding) is None:
            return 'unsupported_encoding'
        if msg.width == 0 or msg.height == 0:
            return 'empty_image'
        return 'size_step_data_mismatch'
    if min(msg.width, msg.height) < MIN_SIZE:
        return 'too_small'
    return 'unusable_image'


def wrong_topic_type(topic: str, expected: str, publisher_types, remap: str, base_types=()) -> str | None:
    """Why a camera receives nothing from its image topic's publishers, and what to set; None when their type
    is the one it subscribes (or there is no publisher: the 'no images received' advice holds).

    topic: the resolved topic the camera subscribes; expected: IMAGE_TYPE (image_transport raw) or
    COMPRESSED_TYPE (compressed); publisher_types: the type of each of the topic's publishers, as the ROS graph
    names them (rclpy TopicEndpointInfo.topic_type, `ros2 topic info`); remap: the camera's relative image
    topic that users remap (image, left/image); base_types: with compressed, the publishers' types of the base
    topic (topic without /compressed), where a camera without the compressed plugin publishes raw images.
    Returns one line: the types found, the type subscribed, and the setting or remapping that fits."""
    transport = 'compressed' if expected == COMPRESSED_TYPE else 'raw'
    counts = Counter(publisher_types)
    wrong = {kind: n for kind, n in sorted(counts.items()) if kind != expected}
    base = topic.removesuffix('/compressed')
    if not counts and expected == COMPRESSED_TYPE and IMAGE_TYPE in base_types:
        return (f'nothing publishes {topic}, which this camera subscribes (image_transport: compressed), but {base} '
                f'carries {IMAGE_TYPE}: set image_transport: raw, or republish it compressed '
                f'(ros2 run image_transport republish raw compressed)')
    if not wrong:
        return None
    if expected == IMAGE_TYPE and COMPRESSED_TYPE in wrong and topic != base:
        advice = (f'set image_transport: compressed and remap {remap}:={base} (the node adds /compressed), or remap '
                  f'{remap}:= to the raw topic ({base} where the camera publishes both)')
    elif expected == IMAGE_TYPE and COMPRESSED_TYPE in wrong:
        advice = (f'remap {remap}:= to a topic of {IMAGE_TYPE} (image_transport: compressed reads only topics named '
                  f'<base topic>/compressed)')
    elif expected == COMPRESSED_TYPE and IMAGE_TYPE in wrong:
        advice = f'set image_transport: raw and remap {remap}:={topic}'
    else:
        advice = f'remap {remap}:= to a topic of {expected} (ros2 topic list -t gives each topic\'s type)'
    found = ', '.join(f'{n} publisher{"s" if n > 1 else ""} of {kind}' for kind, n in wrong.items())
    return (f'{topic} has {found}, but this camera subscribes {expected} (image_transport: {transport}) and '
            f'receives nothing from {"them" if sum(wrong.values()) > 1 else "it"}: {advice}')


class SequenceGaps:
    """Frames lost before the subscription callback, counted from gaps in the publication sequence numbers
    of the messages taken (rmw message info: a DDS writer numbers its samples 1, 2, 3, ...). A number
    missing between two taken was overwritten in a keep-last history while the node was slower than the
    publisher (reliable or best effort alike), or lost on the way (best effort). Counted while the topic
    has one publisher: with more, the writers' numbers interleave; a number that does not rise (a new
    publisher) starts the count again. Thread-safe."""

    UNSUPPORTED = 2 ** 64 - 1  # rmw's RMW_MESSAGE_INFO_SEQUENCE_NUMBER_UNSUPPORTED

    def __init__(self):
        self._lock = threading.Lock()
        self._last = None
        self._lost = 0
        self._why_not = 'no image yet'  # why the gaps are not counted now; None while they are

    def note(self, infos: list, publishers: int):
        """infos: rclpy's message info dicts of the messages taken, in the order taken; publishers: the
        topic's publisher count now."""
        with self._lock:
            for info in infos:
                number = info.get('publication_sequence_number', self.UNSUPPORTED)
                if publishers != 1 or number in (0, self.UNSUPPORTED):
                    self._last = None
                    self._why_not = (f'{publishers} publishers' if publishers != 1
                                     else 'the RMW gives no publication sequence numbers')
                    continue
                if self._last is not None and number > self._last + 1:
                    self._lost += number - self._last - 1
                self._last, self._why_not = number, None

    def figures(self) -> dict:
        """The /diagnostics key-values: the count, and how it is counted (or why it is not, now)."""
        with self._lock:
            return {'frames lost before the callback': str(self._lost),
                    'frames lost counted from': ('publication sequence numbers (one publisher)' if self._why_not is None
                                                 else f'nothing now: {self._why_not}')}


@dataclass
class Report:
    """Totals, the last frame's figures, and the window since the previous report."""
    window_s: float
    received: int                    # in the window
    processed: int
    latencies_ms: list
    processing_ms: list
    rejected: int
    failures: int
    received_total: int
    processed_total: int
    rejected_by_kind: dict
    last_rejection: str
    failures_total: int
    last_failure: str
    since_last_image_s: float | None  # None: no image yet
    busy_s: float | None              # how long the frame being processed has taken so far; None: idle
    keypoints: int
    matches: int
    keyframe_id: int | None
    camera_info_received: bool


@dataclass
class _Window:
    start: float = field(default_factory=time.monotonic)
    received: int = 0
    processed: int = 0
    latencies_ms: list = field(default_factory=list)
    processing_ms: list = field(default_factory=list)
    rejected: int = 0
    failures: int = 0


class Statistics:
    """Thread-safe counters of the node."""

    def __init__(self):
        self._lock = threading.Lock()
        self._window = _Window()
        self._received_total = self._processed_total = self._failures_total = 0
        self._rejected_by_kind = Counter()
        self._last_rejection = self._last_failure = ''
        self._last_image_time = None
        self._frame_start = None
        self._keypoints = self._matches = 0
        self._keyframe_id = None
        self._camera_info_received = False
        self._last_logged = {}  # kind -> time.monotonic() of its last error log

    def image_received(self, has_camera_info: bool, count: int = 1):
        """`count` images taken from the subscription (the newest of them has or lacks a camera_info)."""
        with self._lock:
            self._received_total += count
            self._window.received += count
            self._last_image_time = time.monotonic()
            self._camera_info_received |= has_camera_info

    def frame_started(self):
        with self._lock:
            self._frame_start = time.monotonic()

    def frame_ended(self):
        """The frame is done: processed, rejected or failed."""
        with self._lock:
            self._frame_start = None

    def frame_processed(self, latency_ms: float, processing_ms: float, keypoints: int, matches: int,
                        keyframe_id: int):
        with self._lock:
            self._processed_total += 1
            self._window.processed += 1
            self._window.latencies_ms.append(latency_ms)
            self._window.processing_ms.append(processing_ms)
            self._keypoints, self._matches, self._keyframe_id = keypoints, matches, keyframe_id

    def rejected(self, kind: str, reason: str) -> bool:
        """Count a rejected image; True when its kind was not logged in the last LOG_EVERY_S."""
        now = time.monotonic()
        with self._lock:
            self._rejected_by_kind[kind] += 1
            self._window.rejected += 1
            self._last_rejection = reason
            if now - self._last_logged.get(kind, -LOG_EVERY_S) < LOG_EVERY_S:
                return False
            self._last_logged[kind] = now
            return True

    def rejections(self) -> dict:
        """Rejected images so far, by kind."""
        with self._lock:
            return dict(self._rejected_by_kind)

    def failed(self, reason: str):
        with self._lock:
            self._failures_total += 1
            self._window.failures += 1
            self._last_failure = reason

    def report(self) -> Report:
        """A copy of everything; starts the next window."""
        now = time.monotonic()
        with self._lock:
            window, self._window = self._window, _Window(start=now)
            return Report(
                window_s=max(now - window.start, 1e-6), received=window.received, processed=window.processed,
                latencies_ms=window.latencies_ms, processing_ms=window.processing_ms, rejected=window.rejected,
                failures=window.failures, received_total=self._received_total,
                processed_total=self._processed_total, rejected_by_kind=dict(self._rejected_by_kind),
                last_rejection=self._last_rejection, failures_total=self._failures_total,
                last_failure=self._last_failure,
                since_last_image_s=None if self._last_image_time is None else now - self._last_image_time,
                busy_s=None if self._frame_start is None else now - self._frame_start,
                keypoints=self._keypoints, matches=self._matches, keyframe_id=self._keyframe_id,
                camera_info_received=self._camera_info_received)


def _mean(values) -> float:
    return sum(values) / len(values) if values else 0.0


def diagnostic_status(report: Report, name: str, image_topic: str, camera_info_topic: str, device: str,
                      dropped: int, wrong_type: str | None = None) -> DiagnosticStatus:
    """OK / WARN / ERROR with a message a user can act on, and the figures as key-values. wrong_type: what
    wrong_topic_type() says of the image topic, the message while no images arrive."""
    level, message = DiagnosticStatus.OK, f'matching at {report.processed / report.window_s:.1f} Hz'
    if report.failures:
        level, message = DiagnosticStatus.ERROR, (
            f'processing failed for {report.failures} frame(s): {report.last_failure}')
    elif report.busy_s is not None and report.busy_s > STALE_AFTER_S:
        level, message = DiagnosticStatus.WARN, (
            f'one frame of {image_topic} has been processing for {report.busy_s:.0f} s (newer images wait, older '
            'ones are dropped): lower resize, max_keypoints or sinkhorn_iterations')
    elif wrong_type is not None and (report.since_last_image_s is None or report.since_last_image_s > STALE_AFTER_S):
        level, message = DiagnosticStatus.WARN, wrong_type
    elif report.since_last_image_s is None:
        level, message = DiagnosticStatus.WARN, (
            f'no images received on {image_topic}: check that the camera publishes there '
            f"(ros2 topic hz {image_topic}) or remap the node's image topic (image:=<topic>)")
    elif report.since_last_image_s > STALE_AFTER_S:
        level, message = DiagnosticStatus.WARN, (
            f'no images received on {image_topic} for {report.since_last_image_s:.0f} s')
    elif report.rejected:
        level, message = DiagnosticStatus.WARN, (
            f'{report.rejected} image(s) on {image_topic} rejected in the last {report.window_s:.0f} s: '
            f'{report.last_rejection}')

    figures = {
        'input rate (Hz)': f'{report.received / report.window_s:.2f}',
        'output rate (Hz)': f'{report.processed / report.window_s:.2f}',
        'latency mean (ms)': f'{_mean(report.latencies_ms):.1f}',
        'latency max (ms)': f'{max(report.latencies_ms, default=0.0):.1f}',
        'processing mean (ms)': f'{_mean(report.processing_ms):.1f}',
        'images received': str(report.received_total),
        'frames processed': str(report.processed_total),
        'frames dropped': str(dropped),
        'images rejected': str(sum(report.rejected_by_kind.values())),
        **{f'rejected: {kind}': str(count) for kind, count in sorted(report.rejected_by_kind.items())},
        'processing failures': str(report.failures_total),
        'keypoints': str(report.keypoints),
        'matches': str(report.matches),
        'keyframe id': '' if report.keyframe_id is None else str(report.keyframe_id),
        'camera_info': 'received' if report.camera_info_received else f'none yet on {camera_info_topic}',
        'device': device,
        'image topic': image_topic,
    }
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=device,
                            values=[KeyValue(key=k, value=v) for k, v in figures.items()])
