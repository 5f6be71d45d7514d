"""Publish an image source as a camera driver does: sensor_msgs/Image (bgr8) or CompressedImage, and
CameraInfo, then exit.

    python -m superglue_ros.demo.publisher SOURCE [--rate HZ] [--qos reliable|best_effort] [--depth N]
        [--compressed jpeg|png] [--stamps source|now] [--loop] [--max-frames N] [--topic BAG_TOPIC]
        [--frame-id ID] [--wait-for-subscribers N] [--report FILE] [--ros-args -r image:=/camera/image_raw ...]

SOURCE: image folder, video file, ROS 2 bag or synthetic sequence (sources.py). Topics `image` and
`camera_info` are relative (remap them or set a namespace with --ros-args).

QoS: as REP 2003 asks of a camera driver, the system default: reliable, keep last 10 (rclpy's default
profile). --qos best_effort plays a driver that publishes sensor-data QoS (best effort, keep last 5).
--depth changes the history depth of either.

--compressed jpeg|png publishes sensor_msgs/CompressedImage instead of Image, exactly as image_transport's
compressed plugin does: on the resolved image topic + /compressed (`image/compressed`, or
`/camera/image_raw/compressed` with `-r image:=/camera/image_raw`), format 'bgr8; jpeg compressed bgr8'
(ros/image_conversion.py numpy_to_compressed_msg, the plugin's defaults: JPEG quality 95, PNG level 3).
camera_info is published as with raw images.

--rate 0 publishes as fast as possible. The CameraInfo is the source's calibration (synthetic sequences,
bags with one); without one it carries the image size and zero matrices, the ROS convention for an
uncalibrated camera. Both messages of a frame share one header.

--wait-for-subscribers N waits until N subscriptions listen on the image topic and on camera_info, and,
for a reliable publisher, until they are reliable: a subscriber whose QoS follows its publisher (the
node's, ros/qos.py) starts best effort and recreates itself reliable within a second of seeing this
publisher, and a frame sent during that swap would be lost. After the last frame a reliable
publisher waits until every subscriber has acknowledged every frame (at most ACK_TIMEOUT_S), a
best-effort one LINGER_S, before it leaves the graph.

--report FILE writes a JSON record of what was published (source, QoS, transport, count, each frame's
source index and stamp), for the demo to relate the node's output to the source's ground truth.
"""
import argparse
import itertools
import json
import signal
import sys
import time
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..ros.image_conversion import COMPRESSED_CODECS, numpy_to_compressed_msg, numpy_to_image_msg
from .sources import SourceError, open_source

SETTLE_S = 1.0  # after the subscribers appeared: discovery is two-way, let it finish matching this publisher
QOS_SWAP_S = 5.0  # longest wait for subscribers to turn reliable (ros/qos.py polls the graph every second)
LINGER_S = 1.0  # after the last frame: best-effort subscribers receive it before the publisher goes
ACK_TIMEOUT_S = 10.0  # after the last frame: reliable subscribers acknowledge every frame before it goes
DEPTH = {'reliable': 10, 'best_effort': 5}  # REP 2003's system default / rclpy's sensor-data profile


def to_time(stamp_s: float) -> Time:
    """Seconds -> Time, rounded to the microsecond: a float64 holds an epoch time (~1.7e9 s) to ~0.2 us
    only, so finer digits are noise (1341847980.722988 -> 1341847980 s, 722988000 ns)."""
    microseconds = round(stamp_s * 1e6)
    return Time(sec=microseconds // 10 ** 6, nanosec=microseconds % 10 ** 6 * 1000)


def camera_info_msg(info: dict | None, width: int, height: int, header: Header) -> CameraInfo:
    """CameraInfo from the source's calibration dict, or an uncalibrated one (zero K) of the image size."""
    msg = CameraInfo(header=header, width=width, height=height)
    if info is not None:
        msg.distortion_model = info.get('distortion_model', '')
        msg.d = [float(v) for v in info.get('d', [])]
        msg.k, msg.r, msg.p = ([float(v) for v in info[key]] for key in ('k', 'r', 'p'))
    return msg


def frames_to_publish(source, loop: bool, max_frames: int | None):
    """(source index, source stamp) + image, repeated when looping; later passes are shifted by the
    sequence's duration plus one frame interval, so stamps keep increasing."""
    def passes():
        offset = 0.0
        for _ in itertools.count() if loop else range(1):
            first = last = None
            count = 0
            for index, stamp, image in source.frames():
                first = stamp if first is None else first
                last, count = stamp, count + 1
                yield index, stamp + offset, image
            if count == 0:
                return
            offset += round((last - first) * (1 + 1 / max(count - 1, 1)), 6)  # float noise of epoch stamps
    frames = passes()
    return frames if max_frames is None else itertools.islice(frames, max_frames)


def until_source_error(frames, errors: list):
    """frames until the source as a whole fails (SourceError, e.g. a bag corrupt in the middle; a bad frame
    is skipped), which ends them and is appended to errors: what was published is still delivered."""
    try:
        yield from frames
    except SourceError as e:
        errors.append(e)


def publisher_qos(reliability: str, depth: int | None = None) -> QoSProfile:
    """Keep last `depth` (default DEPTH[reliability]), volatile, with reliability 'reliable' or 'best_effort':
    rclpy's default profile (REP 2003's system default for drivers) or its sensor-data profile."""
    return QoSProfile(depth=depth or DEPTH[reliability], reliability=QoSReliabilityPolicy[reliability.upper()])


def image_topic(node, compressed: str | None) -> str:
    """The topic images go out on: `image` raw; the resolved `image` + /compressed, as image_transport."""
    return node.resolve_topic_name('image') + '/compressed' if compressed else 'image'


def subscribers_ready(node, publisher, count: int, reliable: bool) -> bool:
    """count subscriptions matched to publisher and, when reliable, that many of them reliable."""
    if publisher.get_subscription_count() < count:
        return False
    readers = node.get_subscriptions_info_by_topic(publisher.topic_name)
    return not reliable or sum(r.qos_profile.reliability == QoSReliabilityPolicy.RELIABLE for r in readers) >= count


def wait_for_subscribers(node, publishers, count: int, reliable: bool, timeout_s: float) -> bool:
    """Wait until every publisher has `count` subscriptions (False after timeout_s), then until they are
    reliable when the publishers are (at most QOS_SWAP_S more: a subscriber that stays best effort, e.g.
    one fixed by qos_overrides, still gets what best effort delivers), then SETTLE_S."""
    deadline = time.monotonic() + timeout_s
    while not all(p.get_subscription_count() >= count for p in publishers):
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    deadline = time.monotonic() + QOS_SWAP_S
    while not all(subscribers_ready(node, p, count, reliable) for p in publishers):
        if time.monotonic() > deadline:
            print(f'warning: fewer than {count} reliable subscriptions after {QOS_SWAP_S:g} s; publishing anyway',
                  flush=True)
            break
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(SETTLE_S)
    return True


def publish(args) -> int:
    try:
        source = open_source(args.source, topic=args.topic, rate_hz=args.rate or 10.0)
    except (SourceError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    source.on_skip = lambda index, reason: print(f'warning: skipping source frame {index}: {reason}',
                                                  file=sys.stderr, flush=True)
    node = rclpy.create_node('sequence_publisher')
    qos, reliable = publisher_qos(args.qos, args.depth), args.qos == 'reliable'
    image_publisher = node.create_publisher(CompressedImage if args.compressed else Image,
                                            image_topic(node, args.compressed), qos)
    info_publisher = node.create_publisher(CameraInfo, 'camera_info', qos)
    if args.loop:
        total = args.max_frames
    else:
        total = len(source) if args.max_frames is None else min(len(source), args.max_frames)
    print(f'publishing {source.describe()} on {image_publisher.topic_name} '
          f'({f"CompressedImage, {args.compressed}" if args.compressed else "Image, bgr8"}) and '
          f'{info_publisher.topic_name}, {args.qos.replace("_", " ")} keep last {qos.depth}, '
          f'{f"{args.rate:g} Hz" if args.rate else "as fast as possible"}, {args.stamps} stamps'
          + (', looping' if args.loop else ''), flush=True)
    if args.wait_for_subscribers and not wait_for_subscribers(node, (image_publisher, info_publisher),
                                                              args.wait_for_subscribers, reliable, args.wait_timeout):
        print(f'error: fewer than {args.wait_for_subscribers} subscribers on {image_publisher.topic_name} and '
              f'{info_publisher.topic_name} after {args.wait_timeout:g} s', file=sys.stderr)
        node.destroy_node()
        return 1

    published, errors = [], []
    start = time.monotonic()
    try:
        for n, (index, stamp, image) in enumerate(until_source_error(
                frames_to_publish(source, args.loop, args.max_frames), errors)):
            if args.rate:  # absolute schedule: no drift
                time.sleep(max(0.0, start + n / args.rate - time.monotonic()))
            header = Header(frame_id=args.frame_id,
                            stamp=node.get_clock().now().to_msg() if args.stamps == 'now' else to_time(stamp))
            height, width = image.shape[:2]
            info_publisher.publish(camera_info_msg(source.camera_info, width, height, header))
            image_publisher.publish(numpy_to_compressed_msg(image, 'bgr8', args.compressed, header) if args.compressed
                                    else numpy_to_image_msg(image, 'bgr8', header))
            published.append({'index': index, 'stamp': [header.stamp.sec, header.stamp.nanosec]})
            print(f'published frame {n + 1}{f"/{total}" if total else ""} (source frame {index}, '
                  f'stamp {header.stamp.sec}.{header.stamp.nanosec:09d})', flush=True)
        for e in errors:
            print(f'error: {e}', file=sys.stderr, flush=True)
        if reliable:
            if not image_publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)):
                print(f'warning: not every subscriber acknowledged every frame within {ACK_TIMEOUT_S:g} s',
                      flush=True)
        else:
            time.sleep(LINGER_S)
    except KeyboardInterrupt:
        pass
    finally:
        elapsed = time.monotonic() - start
        if args.report:
            report = {'source': source.describe(), 'topic': image_publisher.topic_name, 'qos': args.qos,
                      'depth': qos.depth, 'compressed': args.compressed, 'published': len(published),
                      'skipped': [{'index': index, 'reason': reason} for index, reason in source.skipped],
                      'duration_s': elapsed, 'frames': published}
            Path(args.report).write_text(json.dumps(report))
        node.destroy_node()
    status = 1 if errors or (source.skipped and not published) else 0  # or nothing but undecodable frames
    print(f'done: published {len(published)} frames in {elapsed:.1f} s'
          + (f', skipped {len(source.skipped)} that could not be decoded' if source.skipped else ''), flush=True)
    return status


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m superglue_ros.demo.publisher',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('source', help='image folder, video file, ROS 2 bag (directory, .db3, .mcap) or '
                                       'synthetic sequence directory')
    parser.add_argument('--rate', type=float, default=10.0, metavar='HZ',
                        help='frames per second; 0: as fast as possible (default: 10)')
    parser.add_argument('--qos', choices=tuple(DEPTH), default='reliable',
                        help='reliable, keep last 10 (a REP 2003 camera driver, default) or best_effort, keep last 5 '
                             '(a sensor-data driver)')
    parser.add_argument('--depth', type=int, default=None, metavar='N', help='history depth (default: as --qos)')
    parser.add_argument('--compressed', choices=COMPRESSED_CODECS, default=None,
                        help='publish sensor_msgs/CompressedImage on image/compressed, as image_transport')
    parser.add_argument('--stamps', choices=('source', 'now'), default='source',
                        help="header stamps: the source's own or the time of publishing (default: source)")
    parser.add_argument('--loop', action='store_true', help='start over at the end (until --max-frames or Ctrl-C)')
    parser.add_argument('--max-frames', type=int, default=None, metavar='N', help='stop after N frames')
    parser.add_argument('--topic', default=None, help='image topic of a bag with several')
    parser.add_argument('--frame-id', default='camera', help='header frame_id (default: camera)')
    parser.add_argument('--wait-for-subscribers', type=int, default=0, metavar='N',
                        help='wait until N subscribers listen on the image topic and camera_info (reliable ones, for a '
                             'reliable publisher) before publishing (default: 0)')
    parser.add_argument('--wait-timeout', type=float, default=60.0, metavar='S',
                        help='give up waiting for subscribers after this many seconds (default: 60)')
    parser.add_argument('--report', type=Path, default=None, metavar='FILE',
                        help='write a JSON record of what was published')
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error(f'--rate must be >= 0 (0: as fast as possible), got {args.rate:g}')
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f'--max-frames must be >= 1, got {args.max_frames}')
    if args.depth is not None and args.depth < 1:
        parser.error(f'--depth must be >= 1, got {args.depth}')
    if args.wait_for_subscribers < 0:
        parser.error(f'--wait-for-subscribers must be >= 0, got {args.wait_for_subscribers}')
    return args


def main(argv=None) -> int:
    argv = sys.argv if argv is None else ['publisher', *argv]
    args = parse_args(remove_ros_args(argv)[1:])
    # Ctrl-C and SIGTERM end the loop through KeyboardInterrupt, so the report is still written
    # (rclpy's own handlers would invalidate the context under a publish() call).
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (a background job)
        signal.signal(sig, signal.default_int_handler)
    try:
        return publish(args)
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
