"""Publish an image source as a camera: sensor_msgs/Image (bgr8) + CameraInfo, then exit.

    python -m superglue_ros.demo.publisher SOURCE [--rate HZ] [--stamps source|now] [--loop]
        [--max-frames N] [--topic BAG_TOPIC] [--frame-id ID] [--wait-for-subscribers N]
        [--report FILE] [--ros-args -r image:=/camera/image_raw ...]

SOURCE: image folder, video file, ROS 2 bag or synthetic sequence (sources.py). Topics `image`
and `camera_info` are relative (remap them or set a namespace with --ros-args), with the
sensor-data QoS profile (best effort, depth 5) like camera drivers. --rate 0 publishes as fast as
possible. The CameraInfo is the source's calibration (synthetic sequences, bags with one);
without one it carries the image size and zero matrices, the ROS convention for an uncalibrated
camera. Both messages of a frame share one header.

--report FILE writes a JSON record of what was published (source, count, each frame's source
index and stamp), for the demo to relate the node's output to the source's ground truth.
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
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..ros.image_conversion import numpy_to_image_msg
from .sources import SourceError, open_source

SETTLE_S = 1.0  # after a subscriber appeared: discovery is two-way, let it finish matching this publisher
LINGER_S = 1.0  # after the last frame, so that best-effort subscribers receive it before the publisher goes


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
            for index, (stamp, image) in enumerate(source):
                first = stamp if first is None else first
                last, count = stamp, count + 1
                yield index, stamp + offset, image
            if count == 0:
                return
            offset += round((last - first) * (1 + 1 / max(count - 1, 1)), 6)  # float noise of epoch stamps
    frames = passes()
    return frames if max_frames is None else itertools.islice(frames, max_frames)


def wait_for_subscribers(node, publisher, count: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while publisher.get_subscription_count() < count:
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(SETTLE_S)
    return True


def publish(args) -> int:
    try:
        source = open_source(args.source, topic=args.topic, rate_hz=args.rate or 10.0)
    except (SourceError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    node = rclpy.create_node('sequence_publisher')
    image_publisher = node.create_publisher(Image, 'image', qos_profile_sensor_data)
    info_publisher = node.create_publisher(CameraInfo, 'camera_info', qos_profile_sensor_data)
    if args.loop:
        total = args.max_frames
    else:
        total = len(source) if args.max_frames is None else min(len(source), args.max_frames)
    print(f'publishing {source.describe()} on {image_publisher.topic_name} and {info_publisher.topic_name}, '
          f'{f"{args.rate:g} Hz" if args.rate else "as fast as possible"}, {args.stamps} stamps'
          + (', looping' if args.loop else ''), flush=True)
    if args.wait_for_subscribers and not wait_for_subscribers(node, image_publisher, args.wait_for_subscribers,
                                                              args.wait_timeout):
        print(f'error: no subscriber on {image_publisher.topic_name} after {args.wait_timeout:g} s', file=sys.stderr)
        node.destroy_node()
        return 1

    published, status = [], 0
    start = time.monotonic()
    try:
        for n, (index, stamp, image) in enumerate(frames_to_publish(source, args.loop, args.max_frames)):
            if args.rate:  # absolute schedule: no drift
                time.sleep(max(0.0, start + n / args.rate - time.monotonic()))
            header = Header(frame_id=args.frame_id,
                            stamp=node.get_clock().now().to_msg() if args.stamps == 'now' else to_time(stamp))
            height, width = image.shape[:2]
            info_publisher.publish(camera_info_msg(source.camera_info, width, height, header))
            image_publisher.publish(numpy_to_image_msg(image, 'bgr8', header))
            published.append({'index': index, 'stamp': [header.stamp.sec, header.stamp.nanosec]})
            print(f'published frame {n + 1}{f"/{total}" if total else ""} (source frame {index}, '
                  f'stamp {header.stamp.sec}.{header.stamp.nanosec:09d})', flush=True)
        time.sleep(LINGER_S)
    except KeyboardInterrupt:
        pass
    except SourceError as e:  # e.g. an unreadable file in the middle of a folder
        print(f'error: {e}', file=sys.stderr)
        status = 1
    finally:
        elapsed = time.monotonic() - start
        if args.report:
            report = {'source': source.describe(), 'published': len(published), 'duration_s': elapsed,
                      'frames': published}
            Path(args.report).write_text(json.dumps(report))
        node.destroy_node()
    print(f'done: published {len(published)} frames in {elapsed:.1f} s', flush=True)
    return status


def parse_args(argv):
    parser = argparse.ArgumentParser(prog='python -m superglue_ros.demo.publisher',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('source', help='image folder, video file, ROS 2 bag (directory, .db3, .mcap) or '
                                       'synthetic sequence directory')
    parser.add_argument('--rate', type=float, default=10.0, metavar='HZ',
                        help='frames per second; 0: as fast as possible (default: 10)')
    parser.add_argument('--stamps', choices=('source', 'now'), default='source',
                        help="header stamps: the source's own or the time of publishing (default: source)")
    parser.add_argument('--loop', action='store_true', help='start over at the end (until --max-frames or Ctrl-C)')
    parser.add_argument('--max-frames', type=int, default=None, metavar='N', help='stop after N frames')
    parser.add_argument('--topic', default=None, help='image topic of a bag with several')
    parser.add_argument('--frame-id', default='camera', help='header frame_id (default: camera)')
    parser.add_argument('--wait-for-subscribers', type=int, default=0, metavar='N',
                        help='wait until N subscribers listen on image before publishing (default: 0)')
    parser.add_argument('--wait-timeout', type=float, default=60.0, metavar='S',
                        help='give up waiting for subscribers after this many seconds (default: 60)')
    parser.add_argument('--report', type=Path, default=None, metavar='FILE',
                        help='write a JSON record of what was published')
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error(f'--rate must be >= 0 (0: as fast as possible), got {args.rate:g}')
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f'--max-frames must be >= 1, got {args.max_frames}')
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
